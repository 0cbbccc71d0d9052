/* Result sets as PostgreSQL sends them: every column is text (type oid 25, text format), so
 * psql's \x, --csv and -A -t, and any driver, read them as they read a query's. */
#include "console_rows.h"
#include "config.h"
#include "metrics.h"
#include "runtime.h"
#include "session.h"
#include "stmt_stats.h"
#include "wire.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TEXT_OID 25

void console_out_free(struct console_out *o)
{
    free(o->buf);
    *o = (struct console_out){0};
}

static uint8_t *room(struct console_out *o, size_t n)
{
    if (o->failed)
        return NULL;
    if (o->cap - o->len < n) {
        size_t cap = o->cap ? o->cap : 4096;
        while (cap - o->len < n) {
            if (cap > SIZE_MAX / 2) {
                o->failed = true;
                return NULL;
            }
            cap *= 2;
        }
        uint8_t *b = realloc(o->buf, cap);
        if (!b) {
            o->failed = true;
            return NULL;
        }
        o->buf = b;
        o->cap = cap;
    }
    return o->buf + o->len;
}

static void put(struct console_out *o, const void *p, size_t n)
{
    uint8_t *d = room(o, n);
    if (d) {
        memcpy(d, p, n);
        o->len += n;
    }
}

static void put_u32(struct console_out *o, uint32_t v)
{
    uint8_t b[4];
    wire_put_u32(b, v);
    put(o, b, 4);
}

static void put_u16(struct console_out *o, uint16_t v)
{
    uint8_t b[2] = {(uint8_t)(v >> 8), (uint8_t)v};
    put(o, b, 2);
}

/* A message's start: its length is filled in by end_msg. */
static size_t begin_msg(struct console_out *o, char type)
{
    put(o, &type, 1);
    size_t at = o->len;
    put_u32(o, 0);
    return at;
}

static void end_msg(struct console_out *o, size_t at)
{
    if (!o->failed)
        wire_put_u32(o->buf + at, (uint32_t)(o->len - at));
}

void console_out_columns(struct console_out *o, const char *const *names, size_t ncols)
{
    size_t at = begin_msg(o, 'T');
    put_u16(o, (uint16_t)ncols);
    for (size_t i = 0; i < ncols; i++) {
        put(o, names[i], strlen(names[i]) + 1);
        put_u32(o, 0);           /* table oid */
        put_u16(o, 0);           /* column number */
        put_u32(o, TEXT_OID);    /* type */
        put_u16(o, 0xFFFF);      /* typlen -1 */
        put_u32(o, 0xFFFFFFFFu); /* typmod -1 */
        put_u16(o, 0);           /* text format */
    }
    end_msg(o, at);
}

void console_out_row(struct console_out *o, const char *const *values, size_t ncols)
{
    size_t at = begin_msg(o, 'D');
    put_u16(o, (uint16_t)ncols);
    for (size_t i = 0; i < ncols; i++) {
        if (!values[i]) {
            put_u32(o, 0xFFFFFFFFu);
            continue;
        }
        size_t n = strlen(values[i]);
        put_u32(o, (uint32_t)n);
        put(o, values[i], n);
    }
    end_msg(o, at);
}

void console_out_complete(struct console_out *o, const char *tag)
{
    size_t at = begin_msg(o, 'C');
    put(o, tag, strlen(tag) + 1);
    end_msg(o, at);
}

void console_out_empty_query(struct console_out *o)
{
    end_msg(o, begin_msg(o, 'I'));
}

static void put_fields(struct console_out *o, char type, const struct wire_error_fields *f)
{
    uint8_t buf[2048];
    struct wire_buf b;
    wire_buf_init(&b, buf, sizeof(buf));
    wire_build_error(&b, type, f);
    if (b.overflow)
        o->failed = true;
    else
        put(o, b.data, b.len);
}

void console_out_error(struct console_out *o, const char *code, const char *message,
                       const char *detail, const char *hint)
{
    struct wire_error_fields f = {
        .severity = "ERROR", .code = code, .message = message, .detail = detail, .hint = hint};
    put_fields(o, 'E', &f);
}

void console_out_notice(struct console_out *o, const char *message)
{
    struct wire_error_fields f = {.severity = "NOTICE", .code = "00000", .message = message};
    put_fields(o, 'N', &f);
}

void console_out_rfq(struct console_out *o)
{
    uint8_t buf[8];
    struct wire_buf b;
    wire_buf_init(&b, buf, sizeof(buf));
    wire_build_rfq(&b, 'I');
    put(o, b.data, b.len);
}

static void complete_show(struct console_out *o, size_t n)
{
    char tag[32];
    snprintf(tag, sizeof(tag), "SHOW %zu", n);
    console_out_complete(o, tag);
}

/* ---------- the result sets ---------- */

/* Decimal digits without snprintf: SHOW STATEMENTS formats tens of thousands of numbers, and
 * snprintf was most of its time. buf has room for 20 digits and the NUL. */
static const char *u64_text(char *buf, size_t len, uint64_t v)
{
    char tmp[24];
    size_t n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    if (n >= len)
        n = len - 1; /* cannot happen with the buffers below: cut rather than overflow */
    for (size_t i = 0; i < n; i++)
        buf[i] = tmp[n - 1 - i];
    buf[n] = 0;
    return buf;
}

#define U64(buf, v) u64_text(buf, sizeof(buf), (uint64_t)(v))

/* As PostgreSQL prints an interval under 24 hours ("00:00:01.500"): what psql users read from
 * now() - query_start. */
static const char *duration_text(char *buf, size_t len, int64_t ms)
{
    snprintf(buf, len, "%02" PRId64 ":%02" PRId64 ":%02" PRId64 ".%03" PRId64, ms / 3600000,
             ms / 60000 % 60, ms / 1000 % 60, ms % 1000);
    return buf;
}

void console_rows_sessions(struct console_out *o, const struct session_snapshot *s, size_t n)
{
    static const char *const cols[] = {"id",          "user",      "auth",        "client",
                                       "application", "database",  "state",       "upstream_pid",
                                       "transaction", "statement", "running_for", "rows",
                                       "bytes",       "statements"};
    console_out_columns(o, cols, 14);
    for (size_t i = 0; i < n; i++) {
        char id[24], pid[16], tx[2] = {s[i].tx, 0}, ms[24], rows[24], bytes[24], stmts[24];
        const char *v[14] = {U64(id, s[i].id),
                             s[i].user[0] ? s[i].user : NULL,
                             s[i].auth,
                             s[i].client,
                             s[i].application,
                             s[i].database[0] ? s[i].database : NULL,
                             s[i].state,
                             s[i].upstream_pid ? U64(pid, s[i].upstream_pid) : NULL,
                             s[i].tx ? tx : NULL,
                             s[i].statement,
                             s[i].running_ms >= 0 ? duration_text(ms, sizeof(ms), s[i].running_ms)
                                                  : NULL,
                             U64(rows, s[i].rows),
                             U64(bytes, s[i].bytes),
                             U64(stmts, s[i].statements)};
        console_out_row(o, v, 14);
    }
    complete_show(o, n);
}

/* Milliseconds with three decimals, from microseconds. */
static const char *ms_text(char *buf, size_t len, uint64_t us)
{
    u64_text(buf, len - 4, us / 1000);
    size_t n = strlen(buf);
    uint64_t frac = us % 1000;
    buf[n] = '.';
    buf[n + 1] = (char)('0' + frac / 100);
    buf[n + 2] = (char)('0' + frac / 10 % 10);
    buf[n + 3] = (char)('0' + frac % 10);
    buf[n + 4] = 0;
    return buf;
}

void console_rows_statements(struct console_out *o, const struct stmt_stats_row *r, size_t n)
{
    static const char *const cols[] = {"fingerprint", "kind",   "calls",    "errors",  "denied",
                                       "limited",     "shadow", "total_ms", "mean_ms", "max_ms",
                                       "rows",        "bytes",  "sample"};
    console_out_columns(o, cols, 13);
    for (size_t i = 0; i < n; i++) {
        char fp[32], calls[24], errs[24], den[24], lim[24], sh[24], tot[32], mean[32], max[32],
            rows[24], bytes[24];
        const char *v[13] = {
            stmt_stats_fp_text(r[i].fp, fp, sizeof(fp)),
            r[i].kind,
            U64(calls, r[i].calls),
            U64(errs, r[i].errors),
            U64(den, r[i].denied),
            U64(lim, r[i].limited),
            U64(sh, r[i].shadow),
            ms_text(tot, sizeof(tot), r[i].total_us),
            ms_text(mean, sizeof(mean), r[i].calls ? r[i].total_us / r[i].calls : 0),
            ms_text(max, sizeof(max), r[i].max_us),
            U64(rows, r[i].rows),
            U64(bytes, r[i].bytes),
            r[i].sample};
        console_out_row(o, v, 13);
    }
    complete_show(o, n);
}

void console_rows_stats(struct console_out *o, const struct metrics_total *t, size_t n)
{
    static const char *const cols[] = {"name", "value"};
    console_out_columns(o, cols, 2);
    for (size_t i = 0; i < n; i++) {
        char v[24];
        const char *row[2] = {t[i].name, U64(v, t[i].value)};
        console_out_row(o, row, 2);
    }
    complete_show(o, n);
}

void console_rows_config(struct console_out *o, const struct config *c)
{
    static const char *const cols[] = {"key", "value", "reload"};
    console_out_columns(o, cols, 3);
    struct config_option opt;
    size_t n = 0;
    for (size_t i = 0; config_option_at(c, i, &opt); i++, n++) {
        char value[4096];
        const char *row[3] = {opt.name, config_option_text(c, &opt, value, sizeof(value)),
                              config_option_reload(opt.name)};
        console_out_row(o, row, 3);
    }
    complete_show(o, n);
}

/* The keys a [user:NAME] profile may set, as SHOW POLICY lists them for every profile. */
static const char *const policy_keys[] = {"deny",          "allow",
                                          "permit",        "read-only",
                                          "max-rows",      "max-bytes",
                                          "query-timeout", "idle-in-transaction-timeout",
                                          "on-limit",      "extended-protocol",
                                          "copy",          "upstream"};

static size_t policy_rows(struct console_out *o, const char *who, const struct config *c,
                          int max_connections)
{
    size_t n = 0;
    struct config_option opt;
    for (size_t k = 0; k < sizeof(policy_keys) / sizeof(policy_keys[0]); k++)
        for (size_t i = 0; config_option_at(c, i, &opt); i++) {
            if (strcmp(opt.name, policy_keys[k]) != 0)
                continue;
            char value[4096];
            const char *row[3] = {who, opt.name, config_option_text(c, &opt, value, sizeof(value))};
            console_out_row(o, row, 3);
            n++;
        }
    if (max_connections) {
        char v[24];
        const char *row[3] = {who, "max-connections", U64(v, max_connections)};
        console_out_row(o, row, 3);
        n++;
    }
    return n;
}

void console_rows_policy(struct console_out *o, const struct runtime *rt)
{
    static const char *const cols[] = {"user", "rule", "value"};
    console_out_columns(o, cols, 3);
    size_t n = policy_rows(o, "*", &rt->cfg, 0);
    for (size_t i = 0; i < rt->nprofiles; i++)
        n += policy_rows(o, rt->profiles[i].name, rt->profiles[i].cfg,
                         rt->profiles[i].max_connections);
    complete_show(o, n);
}

void console_rows_version(struct console_out *o)
{
    static const char *const cols[] = {"version"};
    const char *row[1] = {"pgwire-proxy " PGWP_VERSION};
    console_out_columns(o, cols, 1);
    console_out_row(o, row, 1);
    complete_show(o, 1);
}
