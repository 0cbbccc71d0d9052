/* Per-user series and authentication outcomes, rendered after metrics.c's families. Slots are
 * interned once and never removed (names come from configuration, bounded by the table), so a
 * session keeps its slot index for its whole life. */
#include "metrics_user.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PREFIX "pgwire_proxy_"

struct user_slot {
    char name[64]; /* label text: printable ASCII, immutable once published */
    _Atomic int64_t sessions;
    _Atomic uint64_t accepted, rejected;
};

static struct user_slot slots[METRICS_USER_SLOTS];
static struct user_slot other;
static atomic_size_t used;
static pthread_mutex_t insert_lock = PTHREAD_MUTEX_INITIALIZER;

static const char *const methods[] = {"trust", "scram-sha-256", "cert", "peer", "hba"};
#define NMETHODS (sizeof(methods) / sizeof(methods[0]))
static const char *const outcomes[] = {"ok", "failed", "refused", "error"};
static _Atomic uint64_t auths[NMETHODS][METRICS_AUTH_OUTCOME_MAX];

_Static_assert(sizeof(outcomes) / sizeof(outcomes[0]) == METRICS_AUTH_OUTCOME_MAX, "outcomes");

/* Label values must be valid UTF-8 and one line: anything but printable ASCII becomes '_'. */
static void label_of(const char *name, char out[64])
{
    size_t i = 0;
    for (; name[i] && i < 63; i++) {
        unsigned char c = (unsigned char)name[i];
        out[i] = (c < 0x20 || c >= 0x7f) ? '_' : (char)c;
    }
    out[i] = 0;
}

static int find(const char *label, size_t from, size_t to)
{
    for (size_t i = from; i < to; i++)
        if (strcmp(slots[i].name, label) == 0)
            return (int)i;
    return -1;
}

int metrics_user_slot(const char *name, bool configured)
{
    char label[64];
    if (!configured || !name || !*name)
        return METRICS_USER_OTHER;
    label_of(name, label);
    if (strcmp(label, "other") == 0)
        return METRICS_USER_OTHER; /* "other" is the overflow series itself */
    size_t n = atomic_load_explicit(&used, memory_order_acquire);
    int i = find(label, 0, n);
    if (i >= 0)
        return i;
    pthread_mutex_lock(&insert_lock);
    size_t now = atomic_load_explicit(&used, memory_order_relaxed);
    i = find(label, n, now);
    if (i < 0 && now < METRICS_USER_SLOTS) {
        memcpy(slots[now].name, label, sizeof(label));
        atomic_store_explicit(&used, now + 1, memory_order_release);
        i = (int)now;
    }
    pthread_mutex_unlock(&insert_lock);
    return i;
}

static struct user_slot *slot(int i)
{
    return i >= 0 && i < METRICS_USER_SLOTS ? &slots[i] : &other;
}

void metrics_user_session(int i, int delta)
{
    atomic_fetch_add_explicit(&slot(i)->sessions, delta, memory_order_relaxed);
}

void metrics_user_connection(int i, bool accepted)
{
    atomic_fetch_add_explicit(accepted ? &slot(i)->accepted : &slot(i)->rejected, 1,
                              memory_order_relaxed);
}

void metrics_auth(const char *method, enum metrics_auth_outcome o)
{
    for (size_t m = 0; m < NMETHODS; m++)
        if (method && strcmp(method, methods[m]) == 0 && (unsigned)o < METRICS_AUTH_OUTCOME_MAX)
            atomic_fetch_add_explicit(&auths[m][o], 1, memory_order_relaxed);
}

struct text {
    char *buf;
    size_t len, cap;
    bool failed;
};

__attribute__((format(printf, 2, 3))) static void put(struct text *t, const char *fmt, ...)
{
    char line[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    if (t->failed || n < 0 || (size_t)n >= sizeof(line)) {
        t->failed = true;
        return;
    }
    if (t->len + (size_t)n + 1 > t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 4096;
        while (cap < t->len + (size_t)n + 1)
            cap *= 2;
        char *b = realloc(t->buf, cap);
        if (!b) {
            t->failed = true;
            return;
        }
        t->buf = b;
        t->cap = cap;
    }
    memcpy(t->buf + t->len, line, (size_t)n + 1);
    t->len += (size_t)n;
}

/* The label escaped as the exposition format wants: backslash and double quote. */
static void escaped(const char *in, char out[130])
{
    size_t o = 0;
    for (; *in; in++) {
        if (*in == '\\' || *in == '"')
            out[o++] = '\\';
        out[o++] = *in;
    }
    out[o] = 0;
}

static void render_user(struct text *t, const char *label, struct user_slot *s, int part)
{
    char e[130];
    escaped(label, e);
    if (part == 0)
        put(t, PREFIX "user_sessions_active{user=\"%s\"} %" PRId64 "\n", e,
            atomic_load_explicit(&s->sessions, memory_order_relaxed));
    else
        put(t,
            PREFIX "user_connections_total{user=\"%s\",outcome=\"accepted\"} %" PRIu64 "\n" PREFIX
                   "user_connections_total{user=\"%s\",outcome=\"rejected\"} %" PRIu64 "\n",
            e, atomic_load_explicit(&s->accepted, memory_order_relaxed), e,
            atomic_load_explicit(&s->rejected, memory_order_relaxed));
}

char *metrics_user_render(void)
{
    struct text t = {0};
    static const char *const families[][3] = {
        {"user_sessions_active", "gauge",
         "Client sessions currently open, by user (configured users; others as \"other\")."},
        {"user_connections_total", "counter",
         "Authenticated client connections by user and whether they were admitted."},
    };
    size_t n = atomic_load_explicit(&used, memory_order_acquire);
    for (int part = 0; part < 2; part++) {
        put(&t, "# HELP " PREFIX "%s %s\n# TYPE " PREFIX "%s %s\n", families[part][0],
            families[part][2], families[part][0], families[part][1]);
        for (size_t i = 0; i < n; i++)
            render_user(&t, slots[i].name, &slots[i], part);
        render_user(&t, "other", &other, part);
    }
    put(&t, "# HELP " PREFIX "authentications_total Client authentications by method and outcome.\n"
            "# TYPE " PREFIX "authentications_total counter\n");
    for (size_t m = 0; m < NMETHODS; m++)
        for (int o = 0; o < METRICS_AUTH_OUTCOME_MAX; o++)
            put(&t, PREFIX "authentications_total{method=\"%s\",outcome=\"%s\"} %" PRIu64 "\n",
                methods[m], outcomes[o], atomic_load_explicit(&auths[m][o], memory_order_relaxed));
    if (t.failed) {
        free(t.buf);
        return NULL;
    }
    return t.buf;
}
