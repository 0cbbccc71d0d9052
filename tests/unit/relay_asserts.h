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

/* The client sends b and the relay takes all of it at once (nothing waits in its buffer). */
static inline void assert_client_taken(struct fake *f, const struct fbuf *b)
{
    fake_client_buf(f, b);
    assert_int_equal(f->cli_len, 0);
}

/* The upstream sends b and the relay reads all of it. */
static inline void assert_upstream_taken(struct fake *f, const struct fbuf *b)
{
    fake_upstream_buf(f, b);
    assert_int_equal(f->up_wire.len, 0);
    assert_int_equal(f->up_len, 0);
}

/* The types of the messages the upstream received, as a string. */
static inline void assert_up_types(const struct fake *f, const char *types)
{
    struct fmsg m[64];
    char got[65];
    int n = fmsg_split(f->up_out.p, f->up_out.len, m, 64);
    assert_true(n >= 0 && n <= 64);
    for (int i = 0; i < n; i++)
        got[i] = m[i].type;
    got[n] = 0;
    assert_string_equal(got, types);
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
