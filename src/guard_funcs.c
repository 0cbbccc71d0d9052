/* Functions the policy knows by name: their groups (group:NAME rules), the ones that run SQL
 * given as text (always refused unless permitted), and the side effects PostgreSQL allows in
 * a read-only transaction (refused by --read-only), each with its reason. docs/policy.md
 * lists the same table; keep them in step. Names are PostgreSQL 15's (core and contrib). */
#include "guard_internal.h"

#include <string.h>

#define FA GUARD_GBIT(FILE_ACCESS)
#define SG GUARD_GBIT(SIGNAL)
#define SL GUARD_GBIT(SLEEP)
#define SQ GUARD_GBIT(SQL_TEXT)
#define LO GUARD_GBIT(LARGE_OBJECT)
#define AL GUARD_GBIT(ADVISORY_LOCK)
#define RP GUARD_GBIT(REPLICATION)
#define AD GUARD_GBIT(ADMIN)

#define R_LO_NEW "creates a large object"
#define R_LO_PUT "writes into a large object"
#define R_LOCK   "takes an advisory lock that blocks other sessions"
#define R_SLOT   "creates or changes a replication slot"
#define R_ORIGIN "changes replication origin state"
#define R_STATS  "resets statistics other sessions read"
#define R_XID    "assigns a transaction ID (consumes XIDs)"

/* strcmp-sorted: guard_funcs_self_check() keeps it so for the binary search. */
static const struct guard_fn fns[] = {
    {"brin_desummarize_range", AD, 0, "changes a BRIN index"},
    {"brin_summarize_new_values", AD, 0, "writes BRIN index summaries"},
    {"brin_summarize_range", AD, 0, "writes BRIN index summaries"},
    {"connectby", SQ, 0, NULL},
    {"crosstab", SQ, 0, NULL},
    {"crosstab2", SQ, 0, NULL},
    {"crosstab3", SQ, 0, NULL},
    {"crosstab4", SQ, 0, NULL},
    {"dblink", SQ, 0, NULL},
    {"dblink_build_sql_delete", SQ, 0, NULL},
    {"dblink_build_sql_insert", SQ, 0, NULL},
    {"dblink_build_sql_update", SQ, 0, NULL},
    {"dblink_cancel_query", SQ, 0, NULL},
    {"dblink_close", SQ, 0, NULL},
    {"dblink_connect", SQ, 0, NULL},
    {"dblink_connect_u", SQ, 0, NULL},
    {"dblink_current_query", SQ, 0, NULL},
    {"dblink_disconnect", SQ, 0, NULL},
    {"dblink_error_message", SQ, 0, NULL},
    {"dblink_exec", SQ, 0, NULL},
    {"dblink_fdw_validator", SQ, 0, NULL},
    {"dblink_fetch", SQ, 0, NULL},
    {"dblink_get_connections", SQ, 0, NULL},
    {"dblink_get_notify", SQ, 0, NULL},
    {"dblink_get_pkey", SQ, 0, NULL},
    {"dblink_get_result", SQ, 0, NULL},
    {"dblink_is_busy", SQ, 0, NULL},
    {"dblink_open", SQ, 0, NULL},
    {"dblink_send_query", SQ, 0, NULL},
    {"gin_clean_pending_list", AD, 0, "moves GIN pending entries into the index"},
    {"heap_force_freeze", AD, 0, "rewrites heap tuples (pg_surgery)"},
    {"heap_force_kill", AD, 0, "deletes heap tuples (pg_surgery)"},
    {"lo_close", LO, 0, NULL},
    {"lo_creat", LO, 0, R_LO_NEW},
    {"lo_create", LO, 0, R_LO_NEW},
    {"lo_export", LO | FA, 0, "writes a file on the database server"},
    {"lo_from_bytea", LO, 0, R_LO_NEW},
    {"lo_get", LO, 0, NULL},
    {"lo_import", LO | FA, 0, "creates a large object from a server file"},
    {"lo_lseek", LO, 0, NULL},
    {"lo_lseek64", LO, 0, NULL},
    {"lo_manage", LO, 0, "unlinks large objects (contrib lo trigger)"},
    {"lo_open", LO, 0, "can open a large object for writing (read with lo_get)"},
    {"lo_put", LO, 0, R_LO_PUT},
    {"lo_tell", LO, 0, NULL},
    {"lo_tell64", LO, 0, NULL},
    {"lo_truncate", LO, 0, R_LO_PUT},
    {"lo_truncate64", LO, 0, R_LO_PUT},
    {"lo_unlink", LO, 0, "deletes a large object"},
    {"loread", LO, 0, NULL},
    {"lowrite", LO, 0, R_LO_PUT},
    {"pg_advisory_lock", AL, 0, R_LOCK},
    {"pg_advisory_lock_shared", AL, 0, R_LOCK},
    {"pg_advisory_unlock", AL, 0, NULL},
    {"pg_advisory_unlock_all", AL, 0, NULL},
    {"pg_advisory_unlock_shared", AL, 0, NULL},
    {"pg_advisory_xact_lock", AL, 0, R_LOCK},
    {"pg_advisory_xact_lock_shared", AL, 0, R_LOCK},
    {"pg_background_launch", SQ, 0, NULL},
    {"pg_backup_start", AD, 0, "starts a base backup (forces a checkpoint)"},
    {"pg_backup_stop", AD, 0, "ends a base backup (writes WAL)"},
    {"pg_cancel_backend", SG, 0, "cancels another session's statement"},
    {"pg_copy_logical_replication_slot", RP, 0, R_SLOT},
    {"pg_copy_physical_replication_slot", RP, 0, R_SLOT},
    {"pg_create_logical_replication_slot", RP, 0, R_SLOT},
    {"pg_create_physical_replication_slot", RP, 0, R_SLOT},
    {"pg_create_restore_point", AD, 0, "writes a WAL restore point"},
    {"pg_current_xact_id", 0, 0, R_XID},
    {"pg_drop_replication_slot", RP, 0, R_SLOT},
    {"pg_file_length", FA, 0, NULL},
    {"pg_file_read", FA, 0, NULL},
    {"pg_file_rename", FA, 0, "renames a server file (adminpack)"},
    {"pg_file_sync", FA, 0, "flushes a server file (adminpack)"},
    {"pg_file_unlink", FA, 0, "deletes a server file (adminpack)"},
    {"pg_file_write", FA, 0, "writes a server file (adminpack)"},
    {"pg_hba_file_rules", FA, 0, NULL},
    {"pg_ident_file_mappings", FA, 0, NULL},
    {"pg_import_system_collations", AD, 0, "creates collations"},
    {"pg_log_backend_memory_contexts", SG, 0, "signals a backend to write to the server log"},
    {"pg_logdir_ls", FA, 0, NULL},
    {"pg_logfile_rotate", SG, 0, "rotates the server log (adminpack)"},
    {"pg_logical_emit_message", RP, 0, "writes a message into the WAL"},
    {"pg_logical_slot_get_binary_changes", RP, 0, "consumes changes from a replication slot"},
    {"pg_logical_slot_get_changes", RP, 0, "consumes changes from a replication slot"},
    {"pg_logical_slot_peek_binary_changes", RP, 0, NULL},
    {"pg_logical_slot_peek_changes", RP, 0, NULL},
    {"pg_ls_archive_statusdir", FA, 0, NULL},
    {"pg_ls_dir", FA, 0, NULL},
    {"pg_ls_logdir", FA, 0, NULL},
    {"pg_ls_logicalmapdir", FA, 0, NULL},
    {"pg_ls_logicalsnapdir", FA, 0, NULL},
    {"pg_ls_replslotdir", FA, 0, NULL},
    {"pg_ls_tmpdir", FA, 0, NULL},
    {"pg_ls_waldir", FA, 0, NULL},
    {"pg_nextoid", AD, 0, "advances the OID counter"},
    {"pg_notify", 0, GUARD_FN_IS_NOTIFY, "sends a notification (NOTIFY)"},
    {"pg_promote", SG | AD, 0, "promotes a standby"},
    {"pg_read_binary_file", FA, 0, NULL},
    {"pg_read_file", FA, 0, NULL},
    {"pg_read_file_old", FA, 0, NULL},
    {"pg_reload_conf", SG, 0, "reloads the server configuration"},
    {"pg_replication_origin_advance", RP, 0, R_ORIGIN},
    {"pg_replication_origin_create", RP, 0, R_ORIGIN},
    {"pg_replication_origin_drop", RP, 0, R_ORIGIN},
    {"pg_replication_origin_oid", RP, 0, NULL},
    {"pg_replication_origin_progress", RP, 0, NULL},
    {"pg_replication_origin_session_is_setup", RP, 0, NULL},
    {"pg_replication_origin_session_progress", RP, 0, NULL},
    {"pg_replication_origin_session_reset", RP, 0, R_ORIGIN},
    {"pg_replication_origin_session_setup", RP, 0, R_ORIGIN},
    {"pg_replication_origin_xact_reset", RP, 0, R_ORIGIN},
    {"pg_replication_origin_xact_setup", RP, 0, R_ORIGIN},
    {"pg_replication_slot_advance", RP, 0, R_SLOT},
    {"pg_rotate_logfile", SG, 0, "rotates the server log"},
    {"pg_rotate_logfile_old", SG, 0, "rotates the server log"},
    {"pg_show_all_file_settings", FA, 0, NULL},
    {"pg_sleep", SL, 0, NULL},
    {"pg_sleep_for", SL, 0, NULL},
    {"pg_sleep_until", SL, 0, NULL},
    {"pg_stat_file", FA, 0, NULL},
    {"pg_stat_reset", AD, 0, R_STATS},
    {"pg_stat_reset_replication_slot", AD, 0, R_STATS},
    {"pg_stat_reset_shared", AD, 0, R_STATS},
    {"pg_stat_reset_single_function_counters", AD, 0, R_STATS},
    {"pg_stat_reset_single_table_counters", AD, 0, R_STATS},
    {"pg_stat_reset_slru", AD, 0, R_STATS},
    {"pg_stat_reset_subscription_stats", AD, 0, R_STATS},
    {"pg_stat_statements_reset", AD, 0, R_STATS},
    {"pg_stop_making_pinned_objects", AD, 0, "changes OID assignment (initdb only)"},
    {"pg_switch_wal", AD, 0, "switches to a new WAL file"},
    {"pg_terminate_backend", SG, 0, "terminates another session"},
    {"pg_truncate_visibility_map", AD, 0, "truncates a visibility map (pg_visibility)"},
    {"pg_try_advisory_lock", AL, 0, R_LOCK},
    {"pg_try_advisory_lock_shared", AL, 0, R_LOCK},
    {"pg_try_advisory_xact_lock", AL, 0, R_LOCK},
    {"pg_try_advisory_xact_lock_shared", AL, 0, R_LOCK},
    {"pg_wal_replay_pause", AD, 0, "pauses WAL replay"},
    {"pg_wal_replay_resume", AD, 0, "resumes WAL replay"},
    {"query_to_xml", SQ, 0, NULL},
    {"query_to_xml_and_xmlschema", SQ, 0, NULL},
    {"query_to_xmlschema", SQ, 0, NULL},
    {"set_config", 0, GUARD_FN_IS_SET, NULL},
    {"ts_rewrite", SQ, GUARD_FN_SQL_TEXT_2ARGS, NULL},
    {"ts_stat", SQ, 0, NULL},
    {"txid_current", 0, 0, R_XID},
};

static const char *const group_names[] = {
#define GUARD_X_GNAME(id, name) name,
    GUARD_GROUP_LIST(GUARD_X_GNAME)
#undef GUARD_X_GNAME
};

const struct guard_fn *guard_fn_lookup(const char *name)
{
    size_t lo = 0, hi = sizeof fns / sizeof fns[0];
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(fns[mid].name, name);
        if (c == 0)
            return &fns[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

int guard_group_lookup(const char *name)
{
    for (unsigned g = 0; g < GUARD_G_COUNT; g++)
        if (strcmp(group_names[g], name) == 0)
            return (int)g;
    return -1;
}

const char *guard_group_name(unsigned g)
{
    return g < GUARD_G_COUNT ? group_names[g] : "?";
}

const struct guard_fn *guard_fn_table(size_t *n)
{
    *n = sizeof fns / sizeof fns[0];
    return fns;
}

bool guard_funcs_self_check(void)
{
    size_t n = sizeof fns / sizeof fns[0];
    for (size_t i = 1; i < n; i++)
        if (strcmp(fns[i - 1].name, fns[i].name) >= 0)
            return false;
    for (size_t i = 0; i < n; i++) {
        /* a function that runs SQL text is refused for that; it needs no read-only reason */
        if ((fns[i].groups & SQ) && fns[i].ro_reason)
            return false;
        if (strlen(fns[i].name) >= FUNC_NAME_MAX)
            return false;
    }
    return true;
}
