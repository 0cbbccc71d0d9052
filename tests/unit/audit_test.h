/* What the audit unit tests share: a complete record of one statement, for the writer's tests
 * and the JSON encoder's alike. */
#ifndef PGWP_TEST_AUDIT_TEST_H
#define PGWP_TEST_AUDIT_TEST_H

#include <stdint.h>
#include <string.h>

#include "audit.h"

/* Statement sql of session id by alice on app from psql, outcome ok. */
static inline struct audit_record audit_test_record(uint64_t id, const char *sql)
{
    return (struct audit_record){.session_id = id,
                                 .client_addr = "127.0.0.1:5000",
                                 .user = "alice",
                                 .database = "app",
                                 .application = "psql",
                                 .sql = sql,
                                 .sql_len = strlen(sql),
                                 .outcome = "ok"};
}

#endif
