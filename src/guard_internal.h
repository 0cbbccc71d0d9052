/* Shared by guard.c, guard_kinds.c, guard_json.c and guard_cache.c; not for other modules.
 * Every external name keeps the guard_ prefix: libpg_query exports PostgreSQL's own internals
 * (palloc, list_*, lappend, ...) into the same link namespace. */
#ifndef PGWP_GUARD_INTERNAL_H
#define PGWP_GUARD_INTERNAL_H

#include "guard.h"

/* Kind flags. READ: allowed in read-only mode. CLAUSE: when nested, the node is part of its
 * parent's syntax (a subquery, a RETURN in a function body, the SET of ALTER ... SET), so an allow
 * list does not ask for it separately. */
#define GUARD_KF_READ   1u
#define GUARD_KF_CLAUSE 2u
#define GUARD_KF_R      GUARD_KF_READ
#define GUARD_KF_RC     (GUARD_KF_READ | GUARD_KF_CLAUSE)

/* X(ID, name, flags). Names follow the SQL command; create_/alter_/drop_ prefixes are what the
 * family rules "create", "alter" and "drop" match, so keep new names consistent with them. */
#define GUARD_KIND_LIST(X)                                                                         \
    X(ALTER_COLLATION, "alter_collation", 0)                                                       \
    X(ALTER_DATABASE, "alter_database", 0)                                                         \
    X(ALTER_DATABASE_REFRESH_COLLATION, "alter_database_refresh_collation", 0)                     \
    X(ALTER_DATABASE_SET, "alter_database_set", 0)                                                 \
    X(ALTER_DEFAULT_PRIVILEGES, "alter_default_privileges", 0)                                     \
    X(ALTER_DOMAIN, "alter_domain", 0)                                                             \
    X(ALTER_ENUM, "alter_enum", 0)                                                                 \
    X(ALTER_EVENT_TRIGGER, "alter_event_trigger", 0)                                               \
    X(ALTER_EXTENSION, "alter_extension", 0)                                                       \
    X(ALTER_EXTENSION_CONTENTS, "alter_extension_contents", 0)                                     \
    X(ALTER_FOREIGN_DATA_WRAPPER, "alter_foreign_data_wrapper", 0)                                 \
    X(ALTER_FUNCTION, "alter_function", 0)                                                         \
    X(ALTER_OBJECT_DEPENDS, "alter_object_depends", 0)                                             \
    X(ALTER_OBJECT_SCHEMA, "alter_object_schema", 0)                                               \
    X(ALTER_OPERATOR, "alter_operator", 0)                                                         \
    X(ALTER_OPERATOR_FAMILY, "alter_operator_family", 0)                                           \
    X(ALTER_OWNER, "alter_owner", 0)                                                               \
    X(ALTER_POLICY, "alter_policy", 0)                                                             \
    X(ALTER_PUBLICATION, "alter_publication", 0)                                                   \
    X(ALTER_RENAME, "alter_rename", 0)                                                             \
    X(ALTER_ROLE, "alter_role", 0)                                                                 \
    X(ALTER_ROLE_SET, "alter_role_set", 0)                                                         \
    X(ALTER_SEQUENCE, "alter_sequence", 0)                                                         \
    X(ALTER_SERVER, "alter_server", 0)                                                             \
    X(ALTER_STATISTICS, "alter_statistics", 0)                                                     \
    X(ALTER_SUBSCRIPTION, "alter_subscription", 0)                                                 \
    X(ALTER_SYSTEM, "alter_system", 0)                                                             \
    X(ALTER_TABLE, "alter_table", 0)                                                               \
    X(ALTER_TABLE_MOVE_ALL, "alter_table_move_all", 0)                                             \
    X(ALTER_TABLESPACE, "alter_tablespace", 0)                                                     \
    X(ALTER_TEXT_SEARCH_CONFIGURATION, "alter_text_search_configuration", 0)                       \
    X(ALTER_TEXT_SEARCH_DICTIONARY, "alter_text_search_dictionary", 0)                             \
    X(ALTER_TYPE, "alter_type", 0)                                                                 \
    X(ALTER_USER_MAPPING, "alter_user_mapping", 0)                                                 \
    X(ANALYZE, "analyze", 0)                                                                       \
    X(CALL, "call", 0)                                                                             \
    X(CHECKPOINT, "checkpoint", 0)                                                                 \
    X(CLOSE, "close", GUARD_KF_R)                                                                  \
    X(CLUSTER, "cluster", 0)                                                                       \
    X(COMMENT, "comment", 0)                                                                       \
    X(COPY, "copy", 0)                                                                             \
    X(CREATE_ACCESS_METHOD, "create_access_method", 0)                                             \
    X(CREATE_AGGREGATE, "create_aggregate", 0)                                                     \
    X(CREATE_CAST, "create_cast", 0)                                                               \
    X(CREATE_COLLATION, "create_collation", 0)                                                     \
    X(CREATE_CONVERSION, "create_conversion", 0)                                                   \
    X(CREATE_DATABASE, "create_database", 0)                                                       \
    X(CREATE_DOMAIN, "create_domain", 0)                                                           \
    X(CREATE_EVENT_TRIGGER, "create_event_trigger", 0)                                             \
    X(CREATE_EXTENSION, "create_extension", 0)                                                     \
    X(CREATE_FOREIGN_DATA_WRAPPER, "create_foreign_data_wrapper", 0)                               \
    X(CREATE_FOREIGN_TABLE, "create_foreign_table", 0)                                             \
    X(CREATE_FUNCTION, "create_function", 0)                                                       \
    X(CREATE_INDEX, "create_index", 0)                                                             \
    X(CREATE_LANGUAGE, "create_language", 0)                                                       \
    X(CREATE_MATERIALIZED_VIEW, "create_materialized_view", 0)                                     \
    X(CREATE_OPERATOR, "create_operator", 0)                                                       \
    X(CREATE_OPERATOR_CLASS, "create_operator_class", 0)                                           \
    X(CREATE_OPERATOR_FAMILY, "create_operator_family", 0)                                         \
    X(CREATE_POLICY, "create_policy", 0)                                                           \
    X(CREATE_PUBLICATION, "create_publication", 0)                                                 \
    X(CREATE_ROLE, "create_role", 0)                                                               \
    X(CREATE_RULE, "create_rule", 0)                                                               \
    X(CREATE_SCHEMA, "create_schema", 0)                                                           \
    X(CREATE_SEQUENCE, "create_sequence", 0)                                                       \
    X(CREATE_SERVER, "create_server", 0)                                                           \
    X(CREATE_STATISTICS, "create_statistics", 0)                                                   \
    X(CREATE_SUBSCRIPTION, "create_subscription", 0)                                               \
    X(CREATE_TABLE, "create_table", 0)                                                             \
    X(CREATE_TABLE_AS, "create_table_as", 0)                                                       \
    X(CREATE_TABLESPACE, "create_tablespace", 0)                                                   \
    X(CREATE_TEXT_SEARCH, "create_text_search", 0)                                                 \
    X(CREATE_TRANSFORM, "create_transform", 0)                                                     \
    X(CREATE_TRIGGER, "create_trigger", 0)                                                         \
    X(CREATE_TYPE, "create_type", 0)                                                               \
    X(CREATE_USER_MAPPING, "create_user_mapping", 0)                                               \
    X(CREATE_VIEW, "create_view", 0)                                                               \
    X(DEALLOCATE, "deallocate", GUARD_KF_R)                                                        \
    X(DECLARE, "declare", GUARD_KF_R)                                                              \
    X(DELETE, "delete", 0)                                                                         \
    X(DISCARD, "discard", GUARD_KF_R)                                                              \
    X(DO, "do", 0)                                                                                 \
    X(DROP, "drop", 0)                                                                             \
    X(DROP_DATABASE, "drop_database", 0)                                                           \
    X(DROP_OWNED, "drop_owned", 0)                                                                 \
    X(DROP_ROLE, "drop_role", 0)                                                                   \
    X(DROP_SUBSCRIPTION, "drop_subscription", 0)                                                   \
    X(DROP_TABLESPACE, "drop_tablespace", 0)                                                       \
    X(DROP_USER_MAPPING, "drop_user_mapping", 0)                                                   \
    X(EXECUTE, "execute", GUARD_KF_R)                                                              \
    X(EXPLAIN, "explain", GUARD_KF_R)                                                              \
    X(FETCH, "fetch", GUARD_KF_R)                                                                  \
    X(GRANT, "grant", 0)                                                                           \
    X(GRANT_ROLE, "grant_role", 0)                                                                 \
    X(IMPORT_FOREIGN_SCHEMA, "import_foreign_schema", 0)                                           \
    X(INSERT, "insert", 0)                                                                         \
    X(LISTEN, "listen", GUARD_KF_R)                                                                \
    X(LOAD, "load", 0)                                                                             \
    X(LOCK, "lock", 0)                                                                             \
    X(MERGE, "merge", 0)                                                                           \
    X(NOTIFY, "notify", 0)                                                                         \
    X(PREPARE, "prepare", GUARD_KF_R)                                                              \
    X(REASSIGN_OWNED, "reassign_owned", 0)                                                         \
    X(REFRESH_MATERIALIZED_VIEW, "refresh_materialized_view", 0)                                   \
    X(REINDEX, "reindex", 0)                                                                       \
    X(REPLICA_IDENTITY, "replica_identity", GUARD_KF_CLAUSE)                                       \
    X(RETURN, "return", GUARD_KF_RC)                                                               \
    X(SECURITY_LABEL, "security_label", 0)                                                         \
    X(SELECT, "select", GUARD_KF_RC)                                                               \
    X(SET, "set", GUARD_KF_RC)                                                                     \
    X(SET_CONSTRAINTS, "set_constraints", GUARD_KF_R)                                              \
    X(SHOW, "show", GUARD_KF_R)                                                                    \
    X(TRANSACTION, "transaction", GUARD_KF_R)                                                      \
    X(TRUNCATE, "truncate", 0)                                                                     \
    X(UNLISTEN, "unlisten", GUARD_KF_R)                                                            \
    X(UPDATE, "update", 0)                                                                         \
    X(VACUUM, "vacuum", 0)

enum guard_kind {
#define GUARD_X_ENUM(id, name, flags) GUARD_K_##id,
    GUARD_KIND_LIST(GUARD_X_ENUM)
#undef GUARD_X_ENUM
        GUARD_K_COUNT
};

/* How the scanner must look inside a statement node beyond its kind. */
enum guard_node {
    GUARD_NODE_PLAIN = 0,
    GUARD_NODE_COPY,     /* STDIN/STDOUT vs file/program; FROM inserts, TO reads */
    GUARD_NODE_SET,      /* variable name, value, transaction modes */
    GUARD_NODE_TXN,      /* access modes, chain, transaction end, two-phase commit */
    GUARD_NODE_VACUUM,   /* vacuum or analyze */
    GUARD_NODE_CTAS,     /* create_table_as or create_materialized_view */
    GUARD_NODE_DEFINE,   /* create_aggregate/operator/type/text_search/collation; names functions */
    GUARD_NODE_CALL,     /* CALL's FuncCall is a typed field, not a tagged node */
    GUARD_NODE_INSERT,   /* ON CONFLICT DO UPDATE updates */
    GUARD_NODE_FUNCDEF,  /* DefElems that name functions (SUPPORT, HANDLER, RESTRICT, ...) */
    GUARD_NODE_FUNCLIST, /* a field that is a function name list (trigger, handler, ...) */
    GUARD_NODE_OBJFUNC,  /* an ObjectWithArgs field that names a function (cast, transform) */
    GUARD_NODE_OPCLASS,  /* operator class/family items: FUNCTION n name(...) */
};

#define GUARD_KIND_WORDS 2
struct guard_kind_set {
    uint64_t w[GUARD_KIND_WORDS];
};

static inline void guard_kind_set_add(struct guard_kind_set *s, enum guard_kind k)
{
    s->w[(unsigned)k / 64] |= UINT64_C(1) << ((unsigned)k % 64);
}

static inline bool guard_kind_set_has(const struct guard_kind_set *s, enum guard_kind k)
{
    return (s->w[(unsigned)k / 64] >> ((unsigned)k % 64)) & 1u;
}

const char *guard_kind_name(enum guard_kind k);
unsigned guard_kind_flags(enum guard_kind k);
/* Kind by its exact (lowercase) name; -1 when there is none. */
int guard_kind_lookup(const char *name);
/* Maps a JSON node type ("DeleteStmt") to its kind; false for nodes that are not statements. */
bool guard_kind_of_node(const char *node, size_t len, enum guard_kind *kind,
                        enum guard_node *special);
/* "FooBarStmt" -> "foo_bar", for statement nodes this libpg_query version should not have. */
void guard_kind_snake(const char *node, size_t len, char *buf, size_t cap);
/* Test hook: the node table must be strcmp-sorted for the binary search. */
bool guard_kinds_self_check(void);

/* --- functions the policy knows by name (guard_funcs.c) --- */
/* NAMEDATALEN: PostgreSQL truncates longer identifiers, so no call can name more. */
#define FUNC_NAME_MAX 64

/* X(ID, name): function groups, for group:NAME rules. */
#define GUARD_GROUP_LIST(X)                                                                        \
    X(FILE_ACCESS, "file_access")                                                                  \
    X(SIGNAL, "signal")                                                                            \
    X(SLEEP, "sleep")                                                                              \
    X(SQL_TEXT, "sql_text")                                                                        \
    X(LARGE_OBJECT, "large_object")                                                                \
    X(ADVISORY_LOCK, "advisory_lock")                                                              \
    X(REPLICATION, "replication")                                                                  \
    X(ADMIN, "admin")

enum guard_group {
#define GUARD_X_GROUP(id, name) GUARD_G_##id,
    GUARD_GROUP_LIST(GUARD_X_GROUP)
#undef GUARD_X_GROUP
        GUARD_G_COUNT
};
#define GUARD_GBIT(g) (1u << (unsigned)GUARD_G_##g)

/* Function flags. */
#define GUARD_FN_SQL_TEXT_2ARGS 1u /* in sql_text only when called with two arguments */
#define GUARD_FN_IS_SET         2u /* set_config(): SET by another name */
#define GUARD_FN_IS_NOTIFY      4u /* pg_notify(): NOTIFY by another name */

struct guard_fn {
    const char *name;
    unsigned groups;       /* GUARD_GBIT()s */
    unsigned flags;        /* GUARD_FN_* */
    const char *ro_reason; /* non-NULL: a side effect read-only mode refuses (the why) */
};

/* The entry for a lowercase function name, or NULL. */
const struct guard_fn *guard_fn_lookup(const char *name);
/* Group by name; -1 when there is none. */
int guard_group_lookup(const char *name);
const char *guard_group_name(unsigned g);
/* Test/doc hooks: the table in order, and its sortedness. */
const struct guard_fn *guard_fn_table(size_t *n);
bool guard_funcs_self_check(void);

/* --- compiled policy (guard_policy.c) --- */
struct guard_name_list {
    char (*names)[FUNC_NAME_MAX];
    size_t n;
};

struct guard_policy {
    _Atomic int refs;
    uint64_t gen; /* lets a session cache notice it is looking at another policy */
    size_t max_parse;
    bool read_only;
    bool relay_copy;
    bool kind_allow_list;
    bool func_allow_list; /* some allow entry names a function or a group */
    bool has_rules;
    bool permit_do;
    struct guard_kind_set deny, allow;
    const char *deny_rule[GUARD_K_COUNT]; /* rule text (kind or family) that denies the kind */
    struct guard_name_list deny_funcs, allow_funcs, permit_funcs;
    unsigned deny_groups, allow_groups, permit_groups;
    /* the shadow: entries, compiled as a policy of their own (same permit entries, same
     * ceiling, no read-only mode); NULL when there are none */
    struct guard_policy *shadow;
};

bool guard_name_in(const struct guard_name_list *l, const char *name);

/* --- JSON helpers over libpg_query's output (bounds-checked, no allocation) --- */
struct guard_span {
    const char *p;
    size_t n;
};

/* End (one past the closing quote) of the string at s.p[i]=='"'; 0 when malformed. */
size_t guard_json_string_end(struct guard_span s, size_t i);
/* Decodes the JSON string str (with its quotes) into buf, NUL-terminated, optionally
 * ASCII-lowercased. Returns false when it does not fit or is malformed. */
bool guard_json_text(struct guard_span str, char *buf, size_t cap, bool lower);

/* --- one pass over the parse tree (guard_walk.c drives guard_scan.c) --- */

/* What the functions a statement reaches meet in one policy's lists: the enforced policy's,
 * or its shadow's. */
struct guard_fn_hits {
    char deny_rule[96]; /* "function:NAME" or "group:NAME" of the first denied function */
    char deny_func[FUNC_NAME_MAX];
    char sql_text[FUNC_NAME_MAX];    /* first function that runs SQL given as text */
    char not_allowed[FUNC_NAME_MAX]; /* first function outside a function allow list */
    bool not_allowed_field;          /* ... seen as a field selection */
};

/* Per statement: what its tree contains and what the policy found in it. */
struct guard_stmt {
    int top;                       /* enum guard_kind; -1 = a statement node we do not know */
    struct guard_kind_set nested;  /* kinds below the top node (subqueries, CTEs, ...) */
    struct guard_kind_set implied; /* kinds it performs without their node (MERGE ... DELETE,
                                      ON CONFLICT DO UPDATE, set_config, COPY FROM) */
    bool unknown_nested;
    bool copy_protocol;    /* COPY FROM STDIN / TO STDOUT */
    bool copy_out;         /* of those, COPY TO STDOUT: reads, like the query it runs */
    bool select_into;      /* SELECT ... INTO: creates a table */
    bool locking;          /* FOR UPDATE/SHARE */
    bool computed_setting; /* set_config() whose setting name is not a literal */
    bool txn_end;          /* COMMIT, ROLLBACK, PREPARE TRANSACTION */
    bool malformed;
    char unknown[48];
    char ro_what[96];            /* read-only violation found by inspecting a node */
    char ro_func[FUNC_NAME_MAX]; /* first side-effect function (read-only mode) */
    const char *ro_reason;
    struct guard_fn_hits fn;        /* in the enforced policy */
    struct guard_fn_hits shadow_fn; /* in its shadow policy (when it has one) */
};

/* A growing byte string: the dual-reading summary. */
struct guard_buf {
    char *p;
    size_t n, cap;
    bool oom;
};
void guard_buf_add(struct guard_buf *b, const void *data, size_t n);

/* String literals passed to functions that run SQL given as text, for the audit redaction:
 * where each starts in the text and its (JSON-escaped) value. */
struct guard_sqlarg {
    long loc;
    struct guard_span val;
};
struct guard_sqlargs {
    struct guard_sqlarg *v;
    size_t n, cap;
    bool oom;
};

struct guard_scan;
/* Called once per statement when its walk is complete: false stops the walk. */
typedef bool (*guard_stmt_fn)(struct guard_scan *sc);

struct guard_scan {
    const struct guard_policy *p;
    struct guard_stmt st;
    bool in_stmt, top_seen;
    bool literal;   /* a decision read a literal: never cache it by shape */
    bool malformed; /* the JSON itself */
    bool oom;
    struct guard_buf *sum;         /* statements, kinds and functions in order; NULL = not kept */
    struct guard_sqlargs *sqlargs; /* NULL = not collected */
    guard_stmt_fn on_stmt;
    void *arg;
    size_t visits; /* bytes examined: the linear-time test reads it */
    /* the walk's own stacks (heap, bounded by the JSON size) */
    struct guard_frame *fr;
    size_t nfr, capfr;
    struct guard_slot *sl;
    size_t nsl, capsl;
};

/* Walks json once, calling sc->on_stmt after each statement. Returns 0, or -ENOMEM. Frees
 * nothing of sc: call guard_scan_done(). */
int guard_walk(struct guard_scan *sc, const char *json, size_t len);
/* Test hook: the key and node tables are sorted for their binary searches. */
bool guard_walk_self_check(void);
void guard_scan_done(struct guard_scan *sc);

/* Frames and slots are guard_walk.c's; guard_scan.c reads and annotates them. */
#define GUARD_NONE UINT32_MAX

struct guard_frame {
    uint32_t count; /* members or elements so far */
    uint32_t slot;  /* state slot of this body or list; GUARD_NONE */
    uint32_t body;  /* index of the nearest body frame at or above this one */
    uint32_t cap;   /* slot*2+which that an A_Const here fills; GUARD_NONE */
    uint32_t aux;   /* per node: a String's role, a COPY's fields, an item's type */
    uint16_t node;  /* node id (guard_scan.c) when this object is a node body */
    uint16_t key;   /* objects: the current key; arrays: the key holding the array */
    int16_t kind;   /* statement bodies: enum guard_kind, refined as fields arrive */
    uint8_t special;
    uint8_t type;  /* '{' or '[' */
    uint8_t flags; /* GUARD_FR_* */
};
#define GUARD_FR_KEY     1u  /* object: a key is expected next */
#define GUARD_FR_NAME    2u  /* a String here names a function for its slot */
#define GUARD_FR_TOP     4u  /* the top statement body */
#define GUARD_FR_FUNCREF 8u  /* DefElem/ObjectWithArgs/item: names a function */
#define GUARD_FR_OWNS    16u /* slot was pushed for this frame: popped with it */

#define GUARD_VAL_MAX 64
enum guard_cap {
    GUARD_CAP_NONE = 0,
    GUARD_CAP_STR,
    GUARD_CAP_NUM,
    GUARD_CAP_BOOL,
    GUARD_CAP_OTHER
};

struct guard_slot {
    char name[FUNC_NAME_MAX]; /* function name, setting name or DefElem name */
    uint32_t nargs;
    uint8_t cap[2]; /* enum guard_cap of the captured arguments */
    bool long_val[2];
    char val[2][GUARD_VAL_MAX]; /* lowercased */
    uint32_t txn_ro; /* transaction_read_only DefElems: 0 none, 1 last READ ONLY, 2 READ WRITE */
    uint32_t misc;   /* per node: SET kind, transaction kind, opclass item type, ... */
};

/* Node and key ids for the scanner (guard_walk.c interns them). */
enum guard_key {
    GK_OTHER = 0,
#define GUARD_KEY_LIST(X)                                                                          \
    X(ACTION, "action")                                                                            \
    X(ACTIONS, "actions")                                                                          \
    X(ARG, "arg")                                                                                  \
    X(ARGS, "args")                                                                                \
    X(BOOLVAL, "boolval")                                                                          \
    X(BSVAL, "bsval")                                                                              \
    X(COMMANDTYPE, "commandType")                                                                  \
    X(DEFINITION, "definition")                                                                    \
    X(DEFNAME, "defname")                                                                          \
    X(FIELDS, "fields")                                                                            \
    X(FILENAME, "filename")                                                                        \
    X(FROMSQL, "fromsql")                                                                          \
    X(FUNC, "func")                                                                                \
    X(FUNC_NAME, "func_name")                                                                      \
    X(FUNC_OPTIONS, "func_options")                                                                \
    X(FUNCCALL, "funccall")                                                                        \
    X(FUNCNAME, "funcname")                                                                        \
    X(FVAL, "fval")                                                                                \
    X(HANDLER_NAME, "handler_name")                                                                \
    X(INDIRECTION, "indirection")                                                                  \
    X(INTOCLAUSE, "intoClause")                                                                    \
    X(IS_FROM, "is_from")                                                                          \
    X(IS_VACUUMCMD, "is_vacuumcmd")                                                                \
    X(ITEMS, "items")                                                                              \
    X(ITEMTYPE, "itemtype")                                                                        \
    X(IVAL, "ival")                                                                                \
    X(KIND, "kind")                                                                                \
    X(LOCATION, "location")                                                                        \
    X(NAME, "name")                                                                                \
    X(OBJNAME, "objname")                                                                          \
    X(OBJTYPE, "objtype")                                                                          \
    X(ONCONFLICTCLAUSE, "onConflictClause")                                                        \
    X(OPTIONS, "options")                                                                          \
    X(PARAMS, "params")                                                                            \
    X(PLHANDLER, "plhandler")                                                                      \
    X(PLINLINE, "plinline")                                                                        \
    X(PLVALIDATOR, "plvalidator")                                                                  \
    X(STMT, "stmt")                                                                                \
    X(STMTS, "stmts")                                                                              \
    X(SVAL, "sval")                                                                                \
    X(TOSQL, "tosql")
#define GUARD_X_KEY(id, s) GK_##id,
    GUARD_KEY_LIST(GUARD_X_KEY)
#undef GUARD_X_KEY
        GK_COUNT
};

enum guard_nid {
    GN_NONE = 0,
    GN_STMT, /* a statement node: frame kind/special say which */
#define GUARD_NID_LIST(X)                                                                          \
    X(A_CONST, "A_Const")                                                                          \
    X(A_INDIRECTION, "A_Indirection")                                                              \
    X(COLUMNREF, "ColumnRef")                                                                      \
    X(CREATEOPCLASSITEM, "CreateOpClassItem")                                                      \
    X(DEFELEM, "DefElem")                                                                          \
    X(FUNCCALL, "FuncCall")                                                                        \
    X(INTOCLAUSE, "IntoClause")                                                                    \
    X(LIST, "List")                                                                                \
    X(LOCKINGCLAUSE, "LockingClause")                                                              \
    X(MERGEWHENCLAUSE, "MergeWhenClause")                                                          \
    X(OBJECTWITHARGS, "ObjectWithArgs")                                                            \
    X(ONCONFLICTCLAUSE, "OnConflictClause")                                                        \
    X(STRING, "String")                                                                            \
    X(TYPECAST, "TypeCast")                                                                        \
    X(TYPENAME, "TypeName")
#define GUARD_X_NID(id, s) GN_##id,
    GUARD_NID_LIST(GUARD_X_NID)
#undef GUARD_X_NID
        GN_VALUE, /* A_Const's value: {"sval":"x"}, {"ival":1}, {} */
    GN_OTHER,     /* a node the scanner does not look into */
};

/* guard_scan.c: the events of the walk. f is the frame the event is about. */
void guard_scan_body(struct guard_scan *sc, size_t f);
void guard_scan_body_end(struct guard_scan *sc, size_t f);
void guard_scan_list(struct guard_scan *sc, size_t f);
void guard_scan_elem(struct guard_scan *sc, size_t f);
void guard_scan_list_end(struct guard_scan *sc, size_t f);
void guard_scan_scalar(struct guard_scan *sc, size_t f, struct guard_span val);
/* The statement element of "stmts" begins / ends. */
void guard_scan_stmt_begin(struct guard_scan *sc);
bool guard_scan_stmt_end(struct guard_scan *sc);
/* Pushes a zeroed slot; GUARD_NONE when out of memory (sc->oom is then set). */
uint32_t guard_scan_slot(struct guard_scan *sc);

/* --- one statement's verdict (guard_eval.c) --- */
/* Returns true when the statement is not allowed (out filled). hits: what its functions met in
 * p's lists (st->fn, or st->shadow_fn when p is a shadow policy). after_txn_end: an earlier
 * statement of the same Query ended a transaction. */
bool guard_eval_stmt(const struct guard_policy *p, const struct guard_stmt *st,
                     const struct guard_fn_hits *hits, bool after_txn_end,
                     struct guard_decision *out);
void guard_decide_fill(struct guard_decision *out, enum guard_verdict v, const char *rule,
                       const char *message);
/* Copies src into dst (cap bytes) without splitting a UTF-8 sequence. */
void guard_copy_text(char *dst, size_t cap, const char *src);

/* --- decision cache --- */
#define GUARD_CACHE_SLOTS 16

/* Writes the cache key for sql into key (cap bytes) and guard_key_hash of it into hash;
 * returns its length, 0 = do not cache (hash 0). */
size_t guard_cache_key_hashed(const char *sql, size_t len, char *key, size_t cap, uint64_t *hash);
/* The same key, for a text nobody on this thread keyed lately nor will: the memo of recent
 * texts is neither read nor written (texts with literals of their own would only churn it). */
size_t guard_cache_key_once(const char *sql, size_t len, char *key, size_t cap, uint64_t *hash);
/* The hash the caches pick candidates with (a hit always compares the whole key). */
uint64_t guard_key_hash(const char *k, size_t n);
/* hash: guard_key_hash(key, klen), as guard_cache_key_hashed() gave it. */
bool guard_cache_get(struct guard_cache *c, uint64_t gen, const char *key, size_t klen,
                     uint64_t hash, struct guard_decision *out);
void guard_cache_put(struct guard_cache *c, uint64_t gen, const char *key, size_t klen,
                     uint64_t hash, const struct guard_decision *d);
/* Test/metrics hook. */
uint64_t guard_cache_hits(const struct guard_cache *c);

/* --- test hooks (guard.c) --- */
/* Bytes the walk examined while deciding sql (both readings). */
size_t guard_decide_visits(const struct guard_policy *p, const char *sql, size_t len);

#endif
