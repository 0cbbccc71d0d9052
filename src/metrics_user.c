/* Per-user series and authentication outcomes, rendered after metrics.c's families. Slots are
 * interned once and never removed (names come from configuration, bounded by the table), so a
 * session keeps its slot index for its whole life. */
#include "metrics_user.h"
#include "metrics_text.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PREFIX METRICS_TEXT_PREFIX

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

static void render_user(struct metrics_text *t, const char *label, struct user_slot *s, int part)
{
    if (part == 0) {
        metrics_text_printf(t, PREFIX "user_sessions_active{user=\"");
        metrics_text_label(t, label);
        metrics_text_printf(t, "\"} %" PRId64 "\n",
                            atomic_load_explicit(&s->sessions, memory_order_relaxed));
        return;
    }
    static const char *const outcomes_of[] = {"accepted", "rejected"};
    uint64_t v[] = {atomic_load_explicit(&s->accepted, memory_order_relaxed),
                    atomic_load_explicit(&s->rejected, memory_order_relaxed)};
    for (int i = 0; i < 2; i++) {
        metrics_text_printf(t, PREFIX "user_connections_total{user=\"");
        metrics_text_label(t, label);
        metrics_text_printf(t, "\",outcome=\"%s\"} %" PRIu64 "\n", outcomes_of[i], v[i]);
    }
}

char *metrics_user_render(void)
{
    struct metrics_text t = {0};
    static const char *const families[][3] = {
        {"user_sessions_active", "gauge",
         "Client sessions currently open, by user (configured users; others as \"other\")."},
        {"user_connections_total", "counter",
         "Authenticated client connections by user and whether they were admitted."},
    };
    size_t n = atomic_load_explicit(&used, memory_order_acquire);
    for (int part = 0; part < 2; part++) {
        metrics_text_family(&t, families[part][0], families[part][1], families[part][2]);
        for (size_t i = 0; i < n; i++)
            render_user(&t, slots[i].name, &slots[i], part);
        render_user(&t, "other", &other, part);
    }
    metrics_text_family(&t, "authentications_total", "counter",
                        "Client authentications by method and outcome.");
    for (size_t m = 0; m < NMETHODS; m++)
        for (int o = 0; o < METRICS_AUTH_OUTCOME_MAX; o++)
            metrics_text_printf(
                &t, PREFIX "authentications_total{method=\"%s\",outcome=\"%s\"} %" PRIu64 "\n",
                methods[m], outcomes[o], atomic_load_explicit(&auths[m][o], memory_order_relaxed));
    return metrics_text_take(&t, NULL);
}
