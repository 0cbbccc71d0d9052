/* One audit record as one JSON line, whatever bytes the client sent: the log module's escaper
 * assumes UTF-8, so the audit trail validates and escapes on its own. */
#include "audit_int.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void audit_text_free(struct audit_text *t)
{
    free(t->buf);
    *t = (struct audit_text){0};
}

static bool text_reserve(struct audit_text *t, size_t n)
{
    if (t->failed)
        return false;
    if (t->cap - t->len > n)
        return true;
    size_t cap = t->cap ? t->cap : 1024;
    while (cap - t->len <= n) {
        if (cap > SIZE_MAX / 2) {
            t->failed = true;
            return false;
        }
        cap *= 2;
    }
    char *b = realloc(t->buf, cap);
    if (!b) {
        t->failed = true;
        return false;
    }
    t->buf = b;
    t->cap = cap;
    return true;
}

void audit_text_append(struct audit_text *t, const char *s, size_t n)
{
    if (!text_reserve(t, n))
        return;
    memcpy(t->buf + t->len, s, n);
    t->len += n;
    t->buf[t->len] = 0;
}

static void text_str(struct audit_text *t, const char *s)
{
    audit_text_append(t, s, strlen(s));
}

__attribute__((format(printf, 2, 3))) static void text_printf(struct audit_text *t, const char *fmt,
                                                              ...)
{
    char buf[128];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof(buf)) {
        t->failed = true;
        return;
    }
    audit_text_append(t, buf, (size_t)n);
}

/* Length of the well-formed sequence at p, or 0 with *bad = the length of the maximal
 * subpart of an ill-formed one (the bytes one U+FFFD stands for, per Unicode §3.9). */
static size_t utf8_seq(const unsigned char *p, size_t n, size_t *bad)
{
    unsigned c = p[0], lo = 0x80, hi = 0xBF;
    size_t need;
    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF)
        need = 2;
    else if (c >= 0xE0 && c <= 0xEF)
        need = 3;
    else if (c >= 0xF0 && c <= 0xF4)
        need = 4;
    else {
        *bad = 1; /* continuation byte, C0/C1 (always overlong), F5..FF */
        return 0;
    }
    if (c == 0xE0)
        lo = 0xA0; /* overlong */
    else if (c == 0xED)
        hi = 0x9F; /* UTF-16 surrogates */
    else if (c == 0xF0)
        lo = 0x90; /* overlong */
    else if (c == 0xF4)
        hi = 0x8F; /* above U+10FFFF */
    size_t i = 1;
    for (; i < need && i < n; i++) {
        unsigned b = p[i];
        if (b < (i == 1 ? lo : 0x80) || b > (i == 1 ? hi : 0xBF))
            break;
    }
    if (i == need)
        return need;
    *bad = i;
    return 0;
}

size_t audit_utf8_valid_prefix(const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0, bad;
    while (i < len) {
        size_t n = utf8_seq(p + i, len - i, &bad);
        if (!n)
            break;
        i += n;
    }
    return i;
}

bool audit_json_string(struct audit_text *t, const char *s, size_t len)
{
    static const char replacement[] = "\xEF\xBF\xBD";
    const unsigned char *p = (const unsigned char *)s;
    bool valid = true;
    size_t i = 0, run = 0; /* bytes [i - run, i) are copied as they are */
    audit_text_append(t, "\"", 1);
    while (i < len) {
        unsigned c = p[i];
        size_t bad = 0, n = c >= 0x20 && c != '"' && c != '\\' ? utf8_seq(p + i, len - i, &bad) : 0;
        if (n) {
            i += n;
            run += n;
            continue;
        }
        audit_text_append(t, (const char *)p + i - run, run);
        run = 0;
        if (bad) {
            valid = false;
            audit_text_append(t, replacement, 3);
            i += bad;
            continue;
        }
        if (c == '"' || c == '\\') {
            char esc[2] = {'\\', (char)c};
            audit_text_append(t, esc, 2);
        } else if (c == '\n') {
            audit_text_append(t, "\\n", 2);
        } else if (c == '\r') {
            audit_text_append(t, "\\r", 2);
        } else if (c == '\t') {
            audit_text_append(t, "\\t", 2);
        } else {
            text_printf(t, "\\u%04x", c);
        }
        i++;
    }
    audit_text_append(t, (const char *)p + i - run, run);
    audit_text_append(t, "\"", 1);
    return valid;
}

static void json_hex(struct audit_text *t, const char *s, size_t len)
{
    static const char digits[] = "0123456789abcdef";
    if (len > (SIZE_MAX - 3) / 2 || !text_reserve(t, len * 2 + 2))
        return;
    char *o = t->buf + t->len;
    *o++ = '"';
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        *o++ = digits[c >> 4];
        *o++ = digits[c & 15];
    }
    *o++ = '"';
    t->len = (size_t)(o - t->buf);
    t->buf[t->len] = 0;
}

void audit_json_text_field(struct audit_text *t, const char *key, const char *s, size_t len)
{
    text_printf(t, ",\"%s\":", key);
    if (audit_json_string(t, s ? s : "", s ? len : 0))
        return;
    text_printf(t, ",\"%s_hex\":", key);
    json_hex(t, s, len);
}

static void text_field(struct audit_text *t, const char *key, const char *s)
{
    audit_json_text_field(t, key, s, s ? strlen(s) : 0);
}

/* `,"key":"value"` or `,"key":null`: keys every record has. */
static void nullable_field(struct audit_text *t, const char *key, const char *s)
{
    if (s)
        text_field(t, key, s);
    else
        text_printf(t, ",\"%s\":null", key);
}

/* `,"key":"value"`, or nothing: keys only the relay's extended paths fill. */
static void optional_field(struct audit_text *t, const char *key, const char *s)
{
    if (s)
        text_field(t, key, s);
}

/* A complete, valid text value is a string; a cut or invalid one an object that says so. */
static void json_param(struct audit_text *t, const struct audit_param *p)
{
    if (p->kind == AUDIT_PARAM_NULL) {
        text_str(t, "null");
        return;
    }
    if (p->kind == AUDIT_PARAM_BINARY) {
        text_printf(t, "{\"binary\":%" PRIu64 "}", p->size);
        return;
    }
    bool valid = audit_utf8_valid_prefix(p->text, p->len) == p->len;
    if (valid && p->size <= p->len) {
        audit_json_string(t, p->text, p->len);
        return;
    }
    text_str(t, "{\"text\":");
    audit_json_string(t, p->text, p->len);
    text_printf(t, ",\"bytes\":%" PRIu64, p->size > p->len ? p->size : (uint64_t)p->len);
    if (!valid) {
        text_str(t, ",\"hex\":");
        json_hex(t, p->text, p->len);
    }
    text_str(t, "}");
}

static void json_params(struct audit_text *t, const struct audit_entry *e)
{
    const struct audit_record *r = &e->rec;
    if (!r->params && !e->params_omitted)
        return;
    text_str(t, ",\"params\":[");
    for (size_t i = 0; i < r->nparams; i++) {
        if (i)
            text_str(t, ",");
        json_param(t, &r->params[i]);
    }
    text_str(t, "]");
    if (e->params_omitted)
        text_printf(t, ",\"params_omitted\":%zu", e->params_omitted);
}

static void json_when(struct audit_text *t, const struct timespec *ts)
{
    struct tm tm;
    char buf[40];
    gmtime_r(&ts->tv_sec, &tm);
    size_t n = strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf + n, sizeof(buf) - n, ".%03ldZ", ts->tv_nsec / 1000000);
    text_printf(t, "{\"time\":\"%s\"", buf);
}

void audit_format(struct audit_text *t, const struct audit_entry *e, const char *statement,
                  size_t statement_len, bool redacted)
{
    const struct audit_record *r = &e->rec;
    json_when(t, &e->when);
    text_printf(t, ",\"session\":%" PRIu64, r->session_id);
    text_field(t, "client", r->client_addr);
    text_field(t, "user", r->user);
    text_field(t, "auth", r->auth ? r->auth : "trust");
    optional_field(t, "cert_subject", r->cert_subject);
    text_field(t, "database", r->database);
    text_field(t, "application", r->application);
    audit_json_text_field(t, "statement", statement, statement_len);
    if (e->sql_size > r->sql_len)
        text_printf(t, ",\"statement_truncated\":true,\"statement_bytes\":%" PRIu64, e->sql_size);
    text_printf(t, ",\"duration_ms\":%.3f", (double)r->duration_us / 1000.0);
    text_printf(t, ",\"rows\":%" PRIu64 ",\"bytes\":%" PRIu64, r->rows, r->bytes);
    text_field(t, "outcome", r->outcome);
    nullable_field(t, "sqlstate", r->sqlstate);
    nullable_field(t, "rule", r->rule);
    optional_field(t, "shadow_rule", r->shadow_rule);
    text_field(t, "protocol", r->protocol ? r->protocol : "simple");
    optional_field(t, "upstream_sqlstate", r->upstream_sqlstate);
    optional_field(t, "upstream_status", r->upstream_status);
    optional_field(t, "portal", r->portal);
    optional_field(t, "statement_name", r->statement_name);
    if (!redacted)
        json_params(t, e);
    if (r->protocol && strcmp(r->protocol, "extended") == 0)
        text_printf(t, ",\"executes\":%" PRIu64, r->executes);
    text_str(t, "}\n");
}
