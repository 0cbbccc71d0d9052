/* Redaction of audited statements: literals replaced by $n (libpg_query normalize). Runs on
 * the audit writer thread, never on an event loop. */
#include "guard.h"

#include <pg_query.h>
#include <stdlib.h>
#include <string.h>

size_t guard_parse_stack_bytes(size_t max_parse)
{
    (void)max_parse;
    return (size_t)64 << 20;
}

char *guard_redact(const char *sql, size_t len, size_t max_parse)
{
    static const char unparsable[] = "<unparsable statement redacted>";
    char *copy = strndup(sql ? sql : "", sql ? len : 0);
    if (!copy)
        return NULL;
    if (max_parse && strlen(copy) > max_parse) {
        free(copy);
        return strdup("<statement larger than --max-parse-size redacted>");
    }
    PgQueryNormalizeResult norm = pg_query_normalize(copy);
    free(copy);
    char *out = strdup(!norm.error && norm.normalized_query ? norm.normalized_query : unparsable);
    pg_query_free_normalize_result(norm);
    return out;
}
