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

/* How guard.c must look inside a node beyond its kind. */
enum guard_node {
    GUARD_NODE_PLAIN = 0,
    GUARD_NODE_COPY,   /* STDIN/STDOUT vs file/program */
    GUARD_NODE_SET,    /* variable name, transaction modes */
    GUARD_NODE_TXN,    /* READ WRITE, two-phase commit */
    GUARD_NODE_VACUUM, /* vacuum or analyze */
    GUARD_NODE_CTAS,   /* create_table_as or create_materialized_view */
    GUARD_NODE_DEFINE, /* create_aggregate/operator/type/text_search/collation */
    GUARD_NODE_CALL,   /* CALL's FuncCall is a typed field, not a tagged node */
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

/* --- compiled policy (guard_policy.c); read by guard.c --- */
/* NAMEDATALEN: PostgreSQL truncates longer identifiers, so no call can name more. */
#define FUNC_NAME_MAX 64

struct guard_policy {
    uint64_t gen; /* lets a session cache notice it is looking at another policy */
    bool read_only;
    bool copy_allowed; /* --copy allow: COPY is a statement like any other */
    bool kind_allow_list;
    bool has_rules;
    struct guard_kind_set deny, allow;
    const char *deny_rule[GUARD_K_COUNT]; /* rule text (kind or family) that denies the kind */
    char (*deny_funcs)[FUNC_NAME_MAX];
    size_t ndeny_funcs;
    char (*allow_funcs)[FUNC_NAME_MAX];
    size_t nallow_funcs;
};

/* --- JSON walker over libpg_query's output (bounds-checked, no allocation) --- */
struct guard_span {
    const char *p;
    size_t n;
};

size_t guard_json_ws(struct guard_span s, size_t i);
/* End (one past the closing quote) of the string at s.p[i]=='"'; 0 when malformed. */
size_t guard_json_string_end(struct guard_span s, size_t i);
/* End of the value starting at s.p[i]; 0 when malformed. */
size_t guard_json_value_end(struct guard_span s, size_t i);
/* Value of key in the object obj (obj.p[0] == '{'). */
bool guard_json_get(struct guard_span obj, const char *key, struct guard_span *val);
/* First key (without quotes) and its value: how a node {"Type":{...}} is read. */
bool guard_json_first(struct guard_span obj, struct guard_span *key, struct guard_span *val);
/* Iterates the array arr; *pos starts at 0. */
bool guard_json_next(struct guard_span arr, size_t *pos, struct guard_span *elem);
/* Decodes the JSON string str (with its quotes) into buf, NUL-terminated, optionally
 * ASCII-lowercased. Returns false when it does not fit or is malformed. */
bool guard_json_text(struct guard_span str, char *buf, size_t cap, bool lower);
/* True when the JSON string str (with quotes, no escapes) equals lit. */
bool guard_json_is(struct guard_span str, const char *lit);

/* --- decision cache --- */
#define GUARD_CACHE_SLOTS   16
#define GUARD_CACHE_KEY_MAX 4096

/* Writes the cache key for sql into key (cap bytes); returns its length, 0 = do not cache. */
size_t guard_cache_key(const char *sql, size_t len, char *key, size_t cap);
bool guard_cache_get(struct guard_cache *c, uint64_t gen, const char *key, size_t klen,
                     struct guard_decision *out);
void guard_cache_put(struct guard_cache *c, uint64_t gen, const char *key, size_t klen,
                     const struct guard_decision *d);
/* Test/metrics hook. */
uint64_t guard_cache_hits(const struct guard_cache *c);

/* Statements whose estimated parse-tree depth exceeds this are refused before parsing
 * (PostgreSQL itself rejects expressions a few thousand levels deep with 54001). */
#define GUARD_MAX_DEPTH 10000
size_t guard_depth_estimate(const char *sql, size_t len);

#endif
