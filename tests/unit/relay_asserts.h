/* cmocka assertions on what the relay fake recorded, shared by the relay handler tests. */
#ifndef PGWP_TEST_RELAY_ASSERTS_H
#define PGWP_TEST_RELAY_ASSERTS_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "log.h"
#include "relay_fake.h"

static inline int setup(void **state)
{
    log_setup(-1, 0);
    *state = fake_new();
    return 0;
}

static inline int teardown(void **state)
{
    fake_free(*state);
    return 0;
}

/* Hands the upstream's bytes to the relay and empties the builder for the next ones. */
static inline void upstream(struct fake *f, struct fbuf *b)
{
    fake_upstream_buf(f, b);
    b->len = 0;
}

static inline void assert_report(const struct fake *f, int i, char type, const char *sev,
                                 const char *code, const char *message)
{
    struct fmsg m = fake_msg(f, i);
    assert_int_equal(m.type, type);
    assert_string_equal(fmsg_field(&m, 'V'), sev);
    assert_string_equal(fmsg_field(&m, 'C'), code);
    if (message)
        assert_string_equal(fmsg_field(&m, 'M'), message);
}

static inline void assert_detail(const struct fake *f, int i, const char *detail)
{
    struct fmsg m = fake_msg(f, i);
    assert_string_equal(fmsg_field(&m, 'D'), detail);
}

static inline void assert_tag(const struct fake *f, int i, const char *tag)
{
    struct fmsg m = fake_msg(f, i);
    assert_int_equal(m.type, 'C');
    assert_string_equal(fmsg_str(&m), tag);
}

static inline void assert_ready(const struct fake *f, int i, char status)
{
    struct fmsg m = fake_msg(f, i);
    assert_int_equal(m.type, 'Z');
    assert_int_equal(m.body[0], status);
}

static inline void assert_done(const struct fake *f, enum stmt_outcome o, const char *sqlstate,
                               const char *rule, enum stmt_upstream up)
{
    assert_int_equal(f->done, 1);
    assert_int_equal(f->outcome, o);
    assert_string_equal(f->last.sqlstate, sqlstate);
    assert_string_equal(f->last_rule, rule);
    assert_int_equal(f->last.upstream, up);
}

/* wire sizes of the builders' messages */
static inline size_t size_of_row(void)
{
    return 12; /* D, length, 1 column, its length, "v" */
}

static inline size_t size_of_rowdesc(void)
{
    struct fbuf b = {0};
    up_rowdesc(&b, "c");
    size_t n = b.len;
    fb_free(&b);
    return n;
}

#endif
