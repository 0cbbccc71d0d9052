/* Helpers shared by the config unit tests: argv builders, the one-line error check, temp files. */
#ifndef PGWP_TEST_CONFIG_TEST_H
#define PGWP_TEST_CONFIG_TEST_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "config.h"

static char *no_env[] __attribute__((unused)) = {NULL};

#define ARGC(...) ((int)(sizeof((char *[]){"pgwire-proxy", __VA_ARGS__}) / sizeof(char *)))
#define ARGV(...) ((char *[]){"pgwire-proxy", __VA_ARGS__, NULL})
/* config_load with an argv built from the arguments; err must be an array */
#define LOAD(c, envp, err, ...)                                                                    \
    config_load((c), ARGC(__VA_ARGS__), ARGV(__VA_ARGS__), (envp), NULL, (err), sizeof(err))

/* A one-line message that names what was wrong and what is accepted. */
static inline void assert_err_line(const char *err, const char *name, const char *form)
{
    if (!strstr(err, name))
        fail_msg("error does not name '%s': %s", name, err);
    if (form && !strstr(err, form))
        fail_msg("error does not say '%s': %s", form, err);
    if (strchr(err, '\n') || strchr(err, '\r'))
        fail_msg("error is not one line: %s", err);
}

/* Writes text to a new temporary file; returns its path (caller unlinks and frees). */
static inline char *write_temp(const char *text)
{
    const char *dir = getenv("TMPDIR");
    char *path = NULL;
    assert_true(asprintf(&path, "%s/pgwp-test-XXXXXX", dir && *dir ? dir : "/tmp") > 0);
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    size_t n = strlen(text);
    assert_int_equal(write(fd, text, n), (ssize_t)n);
    close(fd);
    return path;
}

static inline void rewrite(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(fputs(text, f) >= 0, 1);
    fclose(f);
}

static inline void drop_temp(char *path)
{
    unlink(path);
    free(path);
}

#endif
