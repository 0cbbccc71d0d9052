/* String helpers for the JSON that pg_query_parse() prints: finding a string's end and decoding
 * it. They never allocate and never recurse. The input is trusted to be well-formed, but every
 * index is still checked so a surprise costs a "malformed" answer, never an out-of-bounds read. */
#include "guard_internal.h"

#include <string.h>

size_t guard_json_string_end(struct guard_span s, size_t i)
{
    if (i >= s.n || s.p[i] != '"')
        return 0;
    for (i++; i < s.n; i++) {
        if (s.p[i] == '\\')
            i++; /* the escaped char cannot end the string; the loop bound checks i */
        else if (s.p[i] == '"')
            return i + 1;
    }
    return 0;
}

static int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* \uXXXX at s[i] (i at the 'u'); returns the code unit or -1. */
static long read_u4(struct guard_span s, size_t i)
{
    long v = 0;
    if (i + 4 >= s.n)
        return -1;
    for (size_t k = 1; k <= 4; k++) {
        int h = hex_value(s.p[i + k]);
        if (h < 0)
            return -1;
        v = v * 16 + h;
    }
    return v;
}

static bool put_utf8(char *buf, size_t cap, size_t *o, unsigned long cp)
{
    unsigned char tmp[4];
    size_t n;

    if (cp < 0x80) {
        tmp[0] = (unsigned char)cp;
        n = 1;
    } else if (cp < 0x800) {
        tmp[0] = (unsigned char)(0xC0 | (cp >> 6));
        tmp[1] = (unsigned char)(0x80 | (cp & 0x3F));
        n = 2;
    } else if (cp < 0x10000) {
        tmp[0] = (unsigned char)(0xE0 | (cp >> 12));
        tmp[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        tmp[2] = (unsigned char)(0x80 | (cp & 0x3F));
        n = 3;
    } else {
        tmp[0] = (unsigned char)(0xF0 | (cp >> 18));
        tmp[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
        tmp[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        tmp[3] = (unsigned char)(0x80 | (cp & 0x3F));
        n = 4;
    }
    if (*o + n >= cap)
        return false;
    memcpy(buf + *o, tmp, n);
    *o += n;
    return true;
}

bool guard_json_text(struct guard_span str, char *buf, size_t cap, bool lower)
{
    size_t o = 0;

    if (cap == 0 || str.n < 2 || str.p[0] != '"' || str.p[str.n - 1] != '"')
        return false;
    struct guard_span s = {str.p, str.n - 1}; /* the closing quote is not content */
    for (size_t i = 1; i < s.n; i++) {
        unsigned long cp = (unsigned char)s.p[i];
        if (cp == '\\') {
            if (++i >= s.n)
                return false;
            switch (s.p[i]) {
            case 'b':
                cp = '\b';
                break;
            case 'f':
                cp = '\f';
                break;
            case 'n':
                cp = '\n';
                break;
            case 'r':
                cp = '\r';
                break;
            case 't':
                cp = '\t';
                break;
            case 'u': {
                long u = read_u4(s, i);
                if (u < 0)
                    return false;
                i += 4;
                cp = (unsigned long)u;
                if (u >= 0xD800 && u <= 0xDBFF && i + 2 < s.n && s.p[i + 1] == '\\' &&
                    s.p[i + 2] == 'u') {
                    long lo = read_u4(s, i + 2);
                    if (lo >= 0xDC00 && lo <= 0xDFFF) {
                        cp = 0x10000 + (((unsigned long)u - 0xD800) << 10) +
                             ((unsigned long)lo - 0xDC00);
                        i += 6;
                    }
                }
                if (!put_utf8(buf, cap, &o, cp))
                    return false;
                continue;
            }
            default:
                cp = (unsigned char)s.p[i];
                break; /* \" \\ \/ */
            }
        }
        if (lower && cp >= 'A' && cp <= 'Z')
            cp += 'a' - 'A';
        if (o + 1 >= cap)
            return false;
        buf[o++] = (char)cp;
    }
    buf[o] = '\0';
    return true;
}
