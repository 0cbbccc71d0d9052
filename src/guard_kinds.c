/* Statement kinds: names, flags, and the map from libpg_query's JSON node types to them (with
 * what else the scanner must look at in each). */
#include "guard_internal.h"

#include <string.h>

struct kind_info {
    const char *name;
    unsigned flags;
};

static const struct kind_info kinds[] = {
#define GUARD_X_INFO(id, name, flags) {name, flags},
    GUARD_KIND_LIST(GUARD_X_INFO)
#undef GUARD_X_INFO
};

/* 128 bits in struct guard_kind_set. */
_Static_assert(GUARD_K_COUNT <= 64 * GUARD_KIND_WORDS, "grow GUARD_KIND_WORDS");

static const char *const kind_names[] = {
#define GUARD_X_NAME(id, name, flags) name,
    GUARD_KIND_LIST(GUARD_X_NAME)
#undef GUARD_X_NAME
        NULL};

struct node_map {
    const char *node;
    enum guard_kind kind;
    enum guard_node special;
};

/* Every statement node of PostgreSQL 15's raw grammar except RawStmt (unwrapped by
 * libpg_query), PLAssignStmt (PL/pgSQL only) and SetOperationStmt (post-analysis). Sorted by
 * strcmp for the binary search; guard_kinds_self_check() keeps it honest. */
static const struct node_map nodes[] = {
    {"AlterCollationStmt", GUARD_K_ALTER_COLLATION, GUARD_NODE_PLAIN},
    {"AlterDatabaseRefreshCollStmt", GUARD_K_ALTER_DATABASE_REFRESH_COLLATION, GUARD_NODE_PLAIN},
    {"AlterDatabaseSetStmt", GUARD_K_ALTER_DATABASE_SET, GUARD_NODE_PLAIN},
    {"AlterDatabaseStmt", GUARD_K_ALTER_DATABASE, GUARD_NODE_PLAIN},
    {"AlterDefaultPrivilegesStmt", GUARD_K_ALTER_DEFAULT_PRIVILEGES, GUARD_NODE_PLAIN},
    {"AlterDomainStmt", GUARD_K_ALTER_DOMAIN, GUARD_NODE_PLAIN},
    {"AlterEnumStmt", GUARD_K_ALTER_ENUM, GUARD_NODE_PLAIN},
    {"AlterEventTrigStmt", GUARD_K_ALTER_EVENT_TRIGGER, GUARD_NODE_PLAIN},
    {"AlterExtensionContentsStmt", GUARD_K_ALTER_EXTENSION_CONTENTS, GUARD_NODE_PLAIN},
    {"AlterExtensionStmt", GUARD_K_ALTER_EXTENSION, GUARD_NODE_PLAIN},
    {"AlterFdwStmt", GUARD_K_ALTER_FOREIGN_DATA_WRAPPER, GUARD_NODE_FUNCDEF},
    {"AlterForeignServerStmt", GUARD_K_ALTER_SERVER, GUARD_NODE_PLAIN},
    {"AlterFunctionStmt", GUARD_K_ALTER_FUNCTION, GUARD_NODE_FUNCDEF},
    {"AlterObjectDependsStmt", GUARD_K_ALTER_OBJECT_DEPENDS, GUARD_NODE_PLAIN},
    {"AlterObjectSchemaStmt", GUARD_K_ALTER_OBJECT_SCHEMA, GUARD_NODE_PLAIN},
    {"AlterOpFamilyStmt", GUARD_K_ALTER_OPERATOR_FAMILY, GUARD_NODE_OPCLASS},
    {"AlterOperatorStmt", GUARD_K_ALTER_OPERATOR, GUARD_NODE_FUNCDEF},
    {"AlterOwnerStmt", GUARD_K_ALTER_OWNER, GUARD_NODE_PLAIN},
    {"AlterPolicyStmt", GUARD_K_ALTER_POLICY, GUARD_NODE_PLAIN},
    {"AlterPublicationStmt", GUARD_K_ALTER_PUBLICATION, GUARD_NODE_PLAIN},
    {"AlterRoleSetStmt", GUARD_K_ALTER_ROLE_SET, GUARD_NODE_PLAIN},
    {"AlterRoleStmt", GUARD_K_ALTER_ROLE, GUARD_NODE_PLAIN},
    {"AlterSeqStmt", GUARD_K_ALTER_SEQUENCE, GUARD_NODE_PLAIN},
    {"AlterStatsStmt", GUARD_K_ALTER_STATISTICS, GUARD_NODE_PLAIN},
    {"AlterSubscriptionStmt", GUARD_K_ALTER_SUBSCRIPTION, GUARD_NODE_PLAIN},
    {"AlterSystemStmt", GUARD_K_ALTER_SYSTEM, GUARD_NODE_PLAIN},
    {"AlterTSConfigurationStmt", GUARD_K_ALTER_TEXT_SEARCH_CONFIGURATION, GUARD_NODE_PLAIN},
    {"AlterTSDictionaryStmt", GUARD_K_ALTER_TEXT_SEARCH_DICTIONARY, GUARD_NODE_PLAIN},
    {"AlterTableMoveAllStmt", GUARD_K_ALTER_TABLE_MOVE_ALL, GUARD_NODE_PLAIN},
    {"AlterTableSpaceOptionsStmt", GUARD_K_ALTER_TABLESPACE, GUARD_NODE_PLAIN},
    {"AlterTableStmt", GUARD_K_ALTER_TABLE, GUARD_NODE_PLAIN},
    {"AlterTypeStmt", GUARD_K_ALTER_TYPE, GUARD_NODE_FUNCDEF},
    {"AlterUserMappingStmt", GUARD_K_ALTER_USER_MAPPING, GUARD_NODE_PLAIN},
    {"CallStmt", GUARD_K_CALL, GUARD_NODE_CALL},
    {"CheckPointStmt", GUARD_K_CHECKPOINT, GUARD_NODE_PLAIN},
    {"ClosePortalStmt", GUARD_K_CLOSE, GUARD_NODE_PLAIN},
    {"ClusterStmt", GUARD_K_CLUSTER, GUARD_NODE_PLAIN},
    {"CommentStmt", GUARD_K_COMMENT, GUARD_NODE_PLAIN},
    {"CompositeTypeStmt", GUARD_K_CREATE_TYPE, GUARD_NODE_PLAIN},
    {"ConstraintsSetStmt", GUARD_K_SET_CONSTRAINTS, GUARD_NODE_PLAIN},
    {"CopyStmt", GUARD_K_COPY, GUARD_NODE_COPY},
    {"CreateAmStmt", GUARD_K_CREATE_ACCESS_METHOD, GUARD_NODE_FUNCLIST},
    {"CreateCastStmt", GUARD_K_CREATE_CAST, GUARD_NODE_OBJFUNC},
    {"CreateConversionStmt", GUARD_K_CREATE_CONVERSION, GUARD_NODE_FUNCLIST},
    {"CreateDomainStmt", GUARD_K_CREATE_DOMAIN, GUARD_NODE_PLAIN},
    {"CreateEnumStmt", GUARD_K_CREATE_TYPE, GUARD_NODE_PLAIN},
    {"CreateEventTrigStmt", GUARD_K_CREATE_EVENT_TRIGGER, GUARD_NODE_FUNCLIST},
    {"CreateExtensionStmt", GUARD_K_CREATE_EXTENSION, GUARD_NODE_PLAIN},
    {"CreateFdwStmt", GUARD_K_CREATE_FOREIGN_DATA_WRAPPER, GUARD_NODE_FUNCDEF},
    {"CreateForeignServerStmt", GUARD_K_CREATE_SERVER, GUARD_NODE_PLAIN},
    {"CreateForeignTableStmt", GUARD_K_CREATE_FOREIGN_TABLE, GUARD_NODE_PLAIN},
    {"CreateFunctionStmt", GUARD_K_CREATE_FUNCTION, GUARD_NODE_FUNCDEF},
    {"CreateOpClassStmt", GUARD_K_CREATE_OPERATOR_CLASS, GUARD_NODE_OPCLASS},
    {"CreateOpFamilyStmt", GUARD_K_CREATE_OPERATOR_FAMILY, GUARD_NODE_PLAIN},
    {"CreatePLangStmt", GUARD_K_CREATE_LANGUAGE, GUARD_NODE_FUNCLIST},
    {"CreatePolicyStmt", GUARD_K_CREATE_POLICY, GUARD_NODE_PLAIN},
    {"CreatePublicationStmt", GUARD_K_CREATE_PUBLICATION, GUARD_NODE_PLAIN},
    {"CreateRangeStmt", GUARD_K_CREATE_TYPE, GUARD_NODE_FUNCDEF},
    {"CreateRoleStmt", GUARD_K_CREATE_ROLE, GUARD_NODE_PLAIN},
    {"CreateSchemaStmt", GUARD_K_CREATE_SCHEMA, GUARD_NODE_PLAIN},
    {"CreateSeqStmt", GUARD_K_CREATE_SEQUENCE, GUARD_NODE_PLAIN},
    {"CreateStatsStmt", GUARD_K_CREATE_STATISTICS, GUARD_NODE_PLAIN},
    {"CreateStmt", GUARD_K_CREATE_TABLE, GUARD_NODE_PLAIN},
    {"CreateSubscriptionStmt", GUARD_K_CREATE_SUBSCRIPTION, GUARD_NODE_PLAIN},
    {"CreateTableAsStmt", GUARD_K_CREATE_TABLE_AS, GUARD_NODE_CTAS},
    {"CreateTableSpaceStmt", GUARD_K_CREATE_TABLESPACE, GUARD_NODE_PLAIN},
    {"CreateTransformStmt", GUARD_K_CREATE_TRANSFORM, GUARD_NODE_OBJFUNC},
    {"CreateTrigStmt", GUARD_K_CREATE_TRIGGER, GUARD_NODE_FUNCLIST},
    {"CreateUserMappingStmt", GUARD_K_CREATE_USER_MAPPING, GUARD_NODE_PLAIN},
    {"CreatedbStmt", GUARD_K_CREATE_DATABASE, GUARD_NODE_PLAIN},
    {"DeallocateStmt", GUARD_K_DEALLOCATE, GUARD_NODE_PLAIN},
    {"DeclareCursorStmt", GUARD_K_DECLARE, GUARD_NODE_PLAIN},
    {"DefineStmt", GUARD_K_CREATE_TYPE, GUARD_NODE_DEFINE},
    {"DeleteStmt", GUARD_K_DELETE, GUARD_NODE_PLAIN},
    {"DiscardStmt", GUARD_K_DISCARD, GUARD_NODE_PLAIN},
    {"DoStmt", GUARD_K_DO, GUARD_NODE_PLAIN},
    {"DropOwnedStmt", GUARD_K_DROP_OWNED, GUARD_NODE_PLAIN},
    {"DropRoleStmt", GUARD_K_DROP_ROLE, GUARD_NODE_PLAIN},
    {"DropStmt", GUARD_K_DROP, GUARD_NODE_PLAIN},
    {"DropSubscriptionStmt", GUARD_K_DROP_SUBSCRIPTION, GUARD_NODE_PLAIN},
    {"DropTableSpaceStmt", GUARD_K_DROP_TABLESPACE, GUARD_NODE_PLAIN},
    {"DropUserMappingStmt", GUARD_K_DROP_USER_MAPPING, GUARD_NODE_PLAIN},
    {"DropdbStmt", GUARD_K_DROP_DATABASE, GUARD_NODE_PLAIN},
    {"ExecuteStmt", GUARD_K_EXECUTE, GUARD_NODE_PLAIN},
    {"ExplainStmt", GUARD_K_EXPLAIN, GUARD_NODE_PLAIN},
    {"FetchStmt", GUARD_K_FETCH, GUARD_NODE_PLAIN},
    {"GrantRoleStmt", GUARD_K_GRANT_ROLE, GUARD_NODE_PLAIN},
    {"GrantStmt", GUARD_K_GRANT, GUARD_NODE_PLAIN},
    {"ImportForeignSchemaStmt", GUARD_K_IMPORT_FOREIGN_SCHEMA, GUARD_NODE_PLAIN},
    {"IndexStmt", GUARD_K_CREATE_INDEX, GUARD_NODE_PLAIN},
    {"InsertStmt", GUARD_K_INSERT, GUARD_NODE_INSERT},
    {"ListenStmt", GUARD_K_LISTEN, GUARD_NODE_PLAIN},
    {"LoadStmt", GUARD_K_LOAD, GUARD_NODE_PLAIN},
    {"LockStmt", GUARD_K_LOCK, GUARD_NODE_PLAIN},
    {"MergeStmt", GUARD_K_MERGE, GUARD_NODE_PLAIN},
    {"NotifyStmt", GUARD_K_NOTIFY, GUARD_NODE_PLAIN},
    {"PrepareStmt", GUARD_K_PREPARE, GUARD_NODE_PLAIN},
    {"ReassignOwnedStmt", GUARD_K_REASSIGN_OWNED, GUARD_NODE_PLAIN},
    {"RefreshMatViewStmt", GUARD_K_REFRESH_MATERIALIZED_VIEW, GUARD_NODE_PLAIN},
    {"ReindexStmt", GUARD_K_REINDEX, GUARD_NODE_PLAIN},
    {"RenameStmt", GUARD_K_ALTER_RENAME, GUARD_NODE_PLAIN},
    {"ReplicaIdentityStmt", GUARD_K_REPLICA_IDENTITY, GUARD_NODE_PLAIN},
    {"ReturnStmt", GUARD_K_RETURN, GUARD_NODE_PLAIN},
    {"RuleStmt", GUARD_K_CREATE_RULE, GUARD_NODE_PLAIN},
    {"SecLabelStmt", GUARD_K_SECURITY_LABEL, GUARD_NODE_PLAIN},
    {"SelectStmt", GUARD_K_SELECT, GUARD_NODE_PLAIN},
    {"TransactionStmt", GUARD_K_TRANSACTION, GUARD_NODE_TXN},
    {"TruncateStmt", GUARD_K_TRUNCATE, GUARD_NODE_PLAIN},
    {"UnlistenStmt", GUARD_K_UNLISTEN, GUARD_NODE_PLAIN},
    {"UpdateStmt", GUARD_K_UPDATE, GUARD_NODE_PLAIN},
    {"VacuumStmt", GUARD_K_VACUUM, GUARD_NODE_VACUUM},
    {"VariableSetStmt", GUARD_K_SET, GUARD_NODE_SET},
    {"VariableShowStmt", GUARD_K_SHOW, GUARD_NODE_PLAIN},
    {"ViewStmt", GUARD_K_CREATE_VIEW, GUARD_NODE_PLAIN},
};

const char *const *guard_kind_names(void)
{
    return kind_names;
}

const char *guard_kind_name(enum guard_kind k)
{
    return (unsigned)k < GUARD_K_COUNT ? kinds[k].name : "?";
}

unsigned guard_kind_flags(enum guard_kind k)
{
    return (unsigned)k < GUARD_K_COUNT ? kinds[k].flags : 0;
}

int guard_kind_lookup(const char *name)
{
    for (int k = 0; k < GUARD_K_COUNT; k++)
        if (strcmp(kinds[k].name, name) == 0)
            return k;
    return -1;
}

/* strcmp() order between a NUL-terminated table entry and a length-delimited JSON key. */
static int node_cmp(const char *entry, const char *key, size_t len)
{
    int c = strncmp(entry, key, len);
    if (c != 0)
        return c;
    return entry[len] == '\0' ? 0 : 1;
}

bool guard_kind_of_node(const char *node, size_t len, enum guard_kind *kind,
                        enum guard_node *special)
{
    /* Most keys in a tree are expression nodes; the suffix test keeps them off the search. */
    if (len < 5 || memcmp(node + len - 4, "Stmt", 4) != 0)
        return false;
    size_t lo = 0, hi = sizeof nodes / sizeof nodes[0];
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = node_cmp(nodes[mid].node, node, len);
        if (c == 0) {
            *kind = nodes[mid].kind;
            *special = nodes[mid].special;
            return true;
        }
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return false;
}

void guard_kind_snake(const char *node, size_t len, char *buf, size_t cap)
{
    size_t o = 0;
    if (cap == 0)
        return;
    if (len >= 4 && memcmp(node + len - 4, "Stmt", 4) == 0)
        len -= 4;
    for (size_t i = 0; i < len && o + 2 < cap; i++) {
        char c = node[i];
        if (c >= 'A' && c <= 'Z') {
            if (o > 0)
                buf[o++] = '_';
            c = (char)(c - 'A' + 'a');
        }
        buf[o++] = c;
    }
    buf[o] = '\0';
}

bool guard_kinds_self_check(void)
{
    size_t n = sizeof nodes / sizeof nodes[0];
    for (size_t i = 1; i < n; i++)
        if (strcmp(nodes[i - 1].node, nodes[i].node) >= 0)
            return false;
    for (size_t i = 0; i < n; i++)
        if ((unsigned)nodes[i].kind >= GUARD_K_COUNT)
            return false;
    return true;
}
