/* libFuzzer target for DSN redaction and validation: the input picks a password (two marker
 * words around an awkward character), how it is written (keyword form unquoted or quoted, URI
 * user info or query parameter, percent-encoded or raw, escaped or not) and what surrounds it;
 * neither marker word may appear in the redacted DSN or in the validation error, whether the
 * DSN is valid or not. */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "upstream.h"

#include <libpq-fe.h>

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            abort();                                                                               \
    } while (0)

/* characters that break one DSN form or another */
static const char awkward[] = " '\\%@:/?&=#,[]\t\"$+;\n";

static void marker_word(const uint8_t *in, size_t n, char *out)
{
    /* letters that occur in no keyword or host we write, so a hit is a leak */
    static const char alpha[] = "QXZJKVWY";
    for (size_t i = 0; i < 8; i++)
        out[i] = alpha[(i < n ? in[i] : (uint8_t)i) & 7];
    out[8] = 0;
}

static void append_encoded(char *dst, size_t cap, const char *s, int raw)
{
    size_t o = strlen(dst);
    for (const unsigned char *p = (const unsigned char *)s; *p && o + 4 < cap; p++) {
        if (raw || (*p >= 'A' && *p <= 'Z'))
            dst[o++] = (char)*p;
        else
            o += (size_t)snprintf(dst + o, cap - o, "%%%02X", *p);
    }
    dst[o] = 0;
}

static void append_keyword(char *dst, size_t cap, const char *s, int quoted, int escaped)
{
    size_t o = strlen(dst);
    if (quoted && o + 1 < cap)
        dst[o++] = '\'';
    for (const char *p = s; *p && o + 3 < cap; p++) {
        int special = quoted ? (*p == '\'' || *p == '\\')
                             : (*p == ' ' || *p == '\\' || *p == '\'' || *p == '\t' || *p == '\n');
        if (escaped && special)
            dst[o++] = '\\';
        dst[o++] = *p;
    }
    if (quoted && o + 1 < cap)
        dst[o++] = '\'';
    dst[o] = 0;
}

static void check_output(const char *text, const char *w1, const char *w2)
{
    CHECK(!text || (!strstr(text, w1) && !strstr(text, w2)));
}

/* The free text before the password can open another keyword's value that runs on into it
 * ("user=x" glued to "password=..."): libpq then reads the marker words as that value, not
 * as a password, and the redacted DSN rightly shows it. */
static bool markers_read_as_another_value(const char *dsn, const char *w1, const char *w2)
{
    PQconninfoOption *opts = PQconninfoParse(dsn, NULL);
    bool other = false;
    for (PQconninfoOption *o = opts; o && o->keyword; o++)
        if (o->val && strcmp(o->keyword, "password") != 0 &&
            (strstr(o->val, w1) || strstr(o->val, w2)))
            other = true;
    PQconninfoFree(opts);
    return other;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 4)
        return 0;
    uint8_t form = data[0], flags = data[1];
    char w1[9], w2[9];
    marker_word(data + 2, size - 2, w1);
    marker_word(data + (size > 10 ? 10 : 2), size > 10 ? size - 10 : size - 2, w2);
    char pw[64];
    char sep = awkward[data[2] % (sizeof(awkward) - 1)];
    snprintf(pw, sizeof(pw), "%s%c%s", w1, (flags & 0x40) ? sep : 'Q', w2);
    /* the rest of the input is free text around the password (bounded) */
    char extra[64] = "";
    size_t en = size > 18 ? size - 18 : 0;
    if (en > sizeof(extra) - 1)
        en = sizeof(extra) - 1;
    for (size_t i = 0; i < en; i++) {
        char ch = data[18 + i] ? (char)data[18 + i] : ' ';
        extra[i] = strchr("QXZJKVWY", ch) ? (char)(ch + 32) : ch; /* no marker letters */
    }
    extra[en] = 0;

    char dsn[512] = "";
    int raw = flags & 1, quoted = flags & 2, escaped = flags & 4;
    switch (form % 5) {
    case 0: /* keyword form */
        snprintf(dsn, sizeof(dsn), "host=h port=5432 %spassword%s=", (flags & 8) ? extra : "",
                 (flags & 16) ? " " : "");
        append_keyword(dsn, sizeof(dsn), pw, quoted, escaped);
        if (flags & 32)
            strncat(dsn, " user=u", sizeof(dsn) - strlen(dsn) - 1);
        break;
    case 1: /* URI user info */
        snprintf(dsn, sizeof(dsn), "postgresql://u:");
        append_encoded(dsn, sizeof(dsn), pw, raw);
        strncat(dsn, (flags & 8) ? "@h:5432/db?sslmode=disable" : "@h/db",
                sizeof(dsn) - strlen(dsn) - 1);
        break;
    case 2: /* URI query parameter */
        snprintf(dsn, sizeof(dsn), "postgres://u@h/db?%spassword=", (flags & 8) ? "a=b&" : "");
        append_encoded(dsn, sizeof(dsn), pw, raw);
        if (flags & 32)
            strncat(dsn, "&application_name=x", sizeof(dsn) - strlen(dsn) - 1);
        break;
    case 3: /* URI query, the keyword itself percent-encoded */
        snprintf(dsn, sizeof(dsn), "postgresql://h/db?pass%%77ord=");
        append_encoded(dsn, sizeof(dsn), pw, raw);
        break;
    default: /* free text then a keyword password */
        snprintf(dsn, sizeof(dsn), "%s password=", extra);
        append_keyword(dsn, sizeof(dsn), pw, quoted, escaped);
        break;
    }
    char *red = config_redact_dsn(dsn);
    if (!markers_read_as_another_value(dsn, w1, w2))
        check_output(red, w1, w2);
    free(red);
    char err[256] = "";
    upstream_dsn_check(dsn, err, sizeof(err));
    check_output(err, w1, w2);

    /* and through the option loader, whose message names the option */
    char flag[600];
    snprintf(flag, sizeof(flag), "--upstream=%s", dsn);
    char *argv[] = {"pgwire-proxy", flag, NULL};
    char *envp[] = {NULL};
    struct config c;
    char cerr[512] = "";
    if (config_load(&c, 2, argv, envp, NULL, cerr, sizeof(cerr)) == CONFIG_OK)
        config_free(&c);
    else
        check_output(cerr, w1, w2);
    return 0;
}
