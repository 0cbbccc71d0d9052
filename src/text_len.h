/* strnlen through memchr. libpg_query exports a strnlen of its own, a byte-at-a-time loop, and
 * being linked before libc it is the one every strnlen call in the process binds to; on the
 * statement path that cost more than the policy cache itself. */
#ifndef PGWP_TEXT_LEN_H
#define PGWP_TEXT_LEN_H

#include <stddef.h>
#include <string.h>

static inline size_t text_len(const char *s, size_t max)
{
    const char *z = max ? memchr(s, 0, max) : NULL;
    return z ? (size_t)(z - s) : max;
}

#endif
