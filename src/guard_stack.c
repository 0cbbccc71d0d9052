/* How much stack a parse needs, and giving back what a big parse touched.
 *
 * libpg_query's tree output, normalization and fingerprinting recurse once per nesting level of
 * the parse tree and check no stack depth of their own. The cheapest nesting costs 2 bytes of
 * text per level (1+1+1...), so the stack a parse can need is linear in the text: measured on
 * PostgreSQL 15's grammar (libpg_query 15-4.0.0, x86-64) the worst shapes take 64 bytes of stack
 * per byte of text for pg_query_parse, 192 for pg_query_normalize and 4.3 for
 * pg_query_fingerprint, plus at most 7 MB for the shapes bison itself caps at 10,000 levels
 * (NOT NOT ..., f(f(...)), nested subqueries). docs/policy.md has the table; the unit test
 * test_stack_bound runs the worst shapes at the ceiling on a thread with exactly this stack. */
#include "guard_internal.h"

#include <malloc.h>
#include <pthread.h>
#include <stdint.h>
#include <sys/mman.h>
#include <unistd.h>

#define STACK_FIXED    ((size_t)16 << 20) /* bison-capped shapes (7 MB measured) and the rest */
#define STACK_PER_BYTE 256                /* normalize's 192 with a third more */
#define RELEASE_FROM   ((size_t)64 << 10) /* smaller parses touch too little to matter */
#define STACK_KEEP     ((size_t)256 << 10)

size_t guard_parse_stack_bytes(size_t max_parse)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    if (max_parse == 0)
        max_parse = GUARD_DEFAULT_MAX_PARSE;
    if (max_parse > (SIZE_MAX - STACK_FIXED - page) / STACK_PER_BYTE)
        return SIZE_MAX;
    size_t n = STACK_FIXED + STACK_PER_BYTE * max_parse;
    return (n + page - 1) / page * page;
}

/* This thread's stack: [lo, lo + size). */
static __thread uintptr_t stack_lo;
static __thread bool stack_known;

static bool stack_low_end(uintptr_t *lo)
{
    /* The main thread's "stack" is its rlimit, which may be unlimited and hold other
     * mappings below what it really uses: only threads with their own stacks are trimmed. */
    if (gettid() == getpid())
        return false;
    if (!stack_known) {
        pthread_attr_t attr;
        void *addr;
        size_t size;
        if (pthread_getattr_np(pthread_self(), &attr) != 0)
            return false;
        int rc = pthread_attr_getstack(&attr, &addr, &size);
        pthread_attr_destroy(&attr);
        if (rc != 0)
            return false;
        stack_lo = (uintptr_t)addr;
        stack_known = true;
    }
    *lo = stack_lo;
    return true;
}

void guard_parse_release(size_t len)
{
    uintptr_t lo;
    volatile char here = 0;

    if (len < RELEASE_FROM)
        return;
    /* The stack grows down: everything well below this frame is dead, but its pages stay
     * resident until they are given back. */
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    uintptr_t sp = (uintptr_t)&here;
    if (stack_low_end(&lo) && sp > lo + STACK_KEEP + page) {
        uintptr_t start = (lo + page - 1) / page * page;
        uintptr_t end = (sp - STACK_KEEP) / page * page;
        if (end > start)
            (void)madvise((void *)start, end - start, MADV_DONTNEED);
    }
    /* A parse of a big text allocates ~100x its size; hand the free heap back. */
    malloc_trim(0);
    (void)here;
}
