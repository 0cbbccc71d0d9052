/* The console's commands: the parser (pure, so unit tests drive it with text), and what each
 * command does. SHOW SESSIONS, SHOW STATEMENTS, CANCEL and KILL are questions to every worker
 * (admin.c): the session sends its question and waits for the answers; the other commands are
 * answered at once. */
#include "admin.h"
#include "text_len.h"
#include "config.h"
#include "console_int.h"
#include "log.h"
#include "metrics.h"
#include "netio.h"
#include "session_int.h"

#include <ctype.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

const char console_cmd_hint[] =
    "Commands: SHOW SESSIONS, SHOW STATEMENTS, SHOW STATS, SHOW CONFIG, SHOW POLICY, SHOW "
    "VERSION, CANCEL <id>, KILL <id>, RELOAD, SHUTDOWN.";

static const struct {
    const char *words; /* lower case, one blank between words */
    enum console_cmd_kind kind;
    const char *tag;
} commands[] = {
    {"show sessions", CONSOLE_SHOW_SESSIONS, "SHOW"},
    {"show statements", CONSOLE_SHOW_STATEMENTS, "SHOW"},
    {"show stats", CONSOLE_SHOW_STATS, "SHOW"},
    {"show config", CONSOLE_SHOW_CONFIG, "SHOW"},
    {"show policy", CONSOLE_SHOW_POLICY, "SHOW"},
    {"show version", CONSOLE_SHOW_VERSION, "SHOW"},
    {"cancel", CONSOLE_CANCEL, "CANCEL"},
    {"kill", CONSOLE_KILL, "KILL"},
    {"reload", CONSOLE_RELOAD, "RELOAD"},
    {"shutdown", CONSOLE_SHUTDOWN, "SHUTDOWN"},
    {"begin", CONSOLE_BEGIN, "BEGIN"},
    {"start transaction", CONSOLE_BEGIN, "BEGIN"},
    {"commit", CONSOLE_COMMIT, "COMMIT"},
    {"end", CONSOLE_COMMIT, "COMMIT"},
    {"rollback", CONSOLE_ROLLBACK, "ROLLBACK"},
    {"abort", CONSOLE_ROLLBACK, "ROLLBACK"},
};
#define NCOMMANDS (sizeof(commands) / sizeof(commands[0]))

const char *console_cmd_tag(enum console_cmd_kind k)
{
    for (size_t i = 0; i < NCOMMANDS; i++)
        if (commands[i].kind == k)
            return commands[i].tag;
    return "";
}

static bool blank(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

/* The words of text, lower-cased and joined by one blank; -1 when it does not fit. */
static int words_of(const char *t, size_t len, char *out, size_t cap)
{
    size_t o = 0;
    for (size_t i = 0; i < len;) {
        if (blank(t[i])) {
            i++;
            continue;
        }
        if (o && o + 1 < cap)
            out[o++] = ' ';
        for (; i < len && !blank(t[i]); i++) {
            if (o + 1 >= cap)
                return -1;
            out[o++] = (char)tolower((unsigned char)t[i]);
        }
    }
    out[o] = 0;
    return 0;
}

/* "<command> <id>": a session id, decimal, 1 or more. */
static int parse_id(const char *s, uint64_t *id)
{
    if (!isdigit((unsigned char)*s))
        return -1;
    char *end = NULL;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end || v == 0)
        return -1;
    *id = v;
    return 0;
}

static void unknown(struct console_cmd *out, const char *words)
{
    const char *sp = strchr(words, ' ');
    int n = sp ? (int)(sp - words) : (int)strlen(words);
    out->kind = CONSOLE_UNKNOWN;
    if (strncmp(words, "show ", 5) == 0 || strcmp(words, "show") == 0) {
        snprintf(out->message, sizeof(out->message),
                 "unrecognized console command: SHOW takes SESSIONS, STATEMENTS, STATS, CONFIG, "
                 "POLICY or VERSION");
        return;
    }
    snprintf(out->message, sizeof(out->message), "unrecognized console command \"%.*s\"",
             n > 64 ? 64 : n, words);
}

void console_cmd_parse(const char *text, size_t len, struct console_cmd *out)
{
    char words[128];
    memset(out, 0, sizeof(*out));
    len = text_len(text, len);
    while (len && (blank(text[len - 1]) || text[len - 1] == ';')) {
        bool semi = text[len - 1] == ';';
        len--;
        if (semi) { /* one ';' and the blanks around it */
            while (len && blank(text[len - 1]))
                len--;
            break;
        }
    }
    if (memchr(text, ';', len)) { /* a ';' left inside: two commands, or a stray one */
        out->kind = CONSOLE_UNKNOWN;
        snprintf(out->message, sizeof(out->message), "the console takes one command at a time");
        return;
    }
    if (words_of(text, len, words, sizeof(words)) != 0) {
        out->kind = CONSOLE_UNKNOWN;
        snprintf(out->message, sizeof(out->message), "unrecognized console command");
        return;
    }
    if (!words[0]) {
        out->kind = CONSOLE_EMPTY;
        return;
    }
    for (size_t i = 0; i < NCOMMANDS; i++) {
        size_t n = strlen(commands[i].words);
        if (strncmp(words, commands[i].words, n) != 0 || (words[n] && words[n] != ' '))
            continue;
        out->kind = commands[i].kind;
        bool takes_id = out->kind == CONSOLE_CANCEL || out->kind == CONSOLE_KILL;
        if (takes_id && words[n] == ' ' && parse_id(words + n + 1, &out->id) == 0)
            return;
        if (!takes_id && !words[n])
            return;
        out->kind = CONSOLE_UNKNOWN;
        snprintf(out->message, sizeof(out->message),
                 takes_id ? "%s takes one session id, as SHOW SESSIONS lists it"
                          : "%s takes no arguments",
                 commands[i].tag);
        return;
    }
    unknown(out, words);
}

/* ---------- what the commands do (on the console session's thread) ---------- */

static const char *const kind_names[] = {
    [CONSOLE_EMPTY] = "empty",
    [CONSOLE_SHOW_SESSIONS] = "show_sessions",
    [CONSOLE_SHOW_STATEMENTS] = "show_statements",
    [CONSOLE_SHOW_STATS] = "show_stats",
    [CONSOLE_SHOW_CONFIG] = "show_config",
    [CONSOLE_SHOW_POLICY] = "show_policy",
    [CONSOLE_SHOW_VERSION] = "show_version",
    [CONSOLE_CANCEL] = "cancel",
    [CONSOLE_KILL] = "kill",
    [CONSOLE_RELOAD] = "reload",
    [CONSOLE_SHUTDOWN] = "shutdown",
    [CONSOLE_BEGIN] = "begin",
    [CONSOLE_COMMIT] = "commit",
    [CONSOLE_ROLLBACK] = "rollback",
    [CONSOLE_UNKNOWN] = "unknown",
};

static void show_stats(struct session *s, struct console_out *o)
{
    struct metrics_total t[METRICS_TOTALS_MAX + 3];
    size_t n = 0;
    const struct session_counts *c = s->env->counts;
    const struct {
        const char *name;
        uint64_t v;
    } own[] = {{"sessions_open", (uint64_t)atomic_load(&c->live)},
               {"sessions_admitted", (uint64_t)atomic_load(&c->admitted)},
               {"console_sessions", (uint64_t)atomic_load(&s->env->admin->consoles)}};
    for (size_t i = 0; i < 3; i++, n++) {
        snprintf(t[n].name, sizeof(t[n].name), "%s", own[i].name);
        t[n].value = own[i].v;
    }
    n += metrics_totals(t + n, METRICS_TOTALS_MAX);
    console_rows_stats(o, t, n);
}

/* As the signal would: the main thread's signalfd reads it (every thread blocks it). */
static void signal_process(struct session *s, int sig, const char *what, struct console_out *o)
{
    LOG_WARN(s->id, "console_signal", "%s requested from the console by %s", what, s->user);
    if (kill(getpid(), sig) != 0)
        console_out_error(o, "58000", "could not signal the pgwire-proxy process", NULL, NULL);
    else
        console_out_complete(o, console_cmd_tag(s->console->cmd.kind));
}

static enum admin_question question_of(enum console_cmd_kind k)
{
    return k == CONSOLE_SHOW_SESSIONS     ? ADMIN_SESSIONS
           : k == CONSOLE_SHOW_STATEMENTS ? ADMIN_STATEMENTS
           : k == CONSOLE_CANCEL          ? ADMIN_CANCEL
                                          : ADMIN_KILL;
}

/* Sends the question to every worker; false when it could not be asked (o has the error). */
static bool ask(struct session *s, struct console_out *o)
{
    struct console *c = s->console;
    struct admin_hub *h = s->env->admin;
    c->q = admin_query_new(question_of(c->cmd.kind), h ? h->nworkers : 0, c->cmd.id, s->user, true,
                           s->loop);
    if (c->q && admin_query_post(h, c->q) == 0) {
        c->deadline_ms = netio_now_ms() + CONSOLE_ANSWER_MS;
        loop_wait_wake(s->loop, &s->waiter);
        return true;
    }
    admin_query_release(c->q);
    c->q = NULL;
    console_out_error(o, "53200", "out of memory asking the workers", NULL, NULL);
    return false;
}

void console_run(struct session *s, const char *sql, size_t len, struct console_out *o)
{
    struct console *c = s->console;
    console_cmd_parse(sql, len, &c->cmd);
    enum console_cmd_kind k = c->cmd.kind;
    if (k != CONSOLE_EMPTY && k != CONSOLE_UNKNOWN) {
        char id[32] = "";
        if (c->cmd.id)
            snprintf(id, sizeof(id), " id=%llu", (unsigned long long)c->cmd.id);
        LOG_INFO(s->id, "console_command", "user=%s command=%s%s", s->user, kind_names[k], id);
    }
    switch (k) {
    case CONSOLE_EMPTY:
        console_out_empty_query(o);
        break;
    case CONSOLE_UNKNOWN:
        console_out_error(o, "42601", c->cmd.message, NULL, console_cmd_hint);
        break;
    case CONSOLE_SHOW_SESSIONS:
    case CONSOLE_SHOW_STATEMENTS:
    case CONSOLE_CANCEL:
    case CONSOLE_KILL:
        if (ask(s, o))
            return; /* the answer and ReadyForQuery come from console_finish */
        break;
    case CONSOLE_SHOW_STATS:
        show_stats(s, o);
        break;
    case CONSOLE_SHOW_CONFIG:
        console_rows_config(o, &s->rt->cfg);
        break;
    case CONSOLE_SHOW_POLICY:
        console_rows_policy(o, s->rt);
        break;
    case CONSOLE_SHOW_VERSION:
        console_rows_version(o);
        break;
    case CONSOLE_RELOAD:
        signal_process(s, SIGHUP, "reload", o);
        break;
    case CONSOLE_SHUTDOWN:
        signal_process(s, SIGTERM, "shutdown", o);
        break;
    case CONSOLE_BEGIN:
    case CONSOLE_COMMIT:
    case CONSOLE_ROLLBACK:
        console_out_complete(o, console_cmd_tag(k));
        break;
    }
    console_out_rfq(o);
}

static void finish_statements(struct session *s, struct admin_query *q, struct console_out *o)
{
    size_t cap = (size_t)s->rt->cfg.statement_stats, n = 0;
    bool oom = false;
    struct stmt_stats_row *rows = admin_query_statements(q, cap, &n, &oom);
    if (!cap)
        console_out_notice(o, "statement statistics are off (--statement-stats 0)");
    if (oom)
        console_out_error(o, "53200", "out of memory merging the statement statistics", NULL, NULL);
    else
        console_rows_statements(o, rows, n);
    stmt_stats_rows_free(rows, n);
}

static void finish_sessions(struct admin_query *q, struct console_out *o)
{
    size_t n = 0;
    bool oom = false;
    struct session_snapshot *snap = admin_query_sessions(q, &n, &oom);
    if (oom)
        console_out_notice(o, "out of memory: some sessions or statements are not shown");
    console_rows_sessions(o, snap, n);
    for (size_t i = 0; i < n; i++)
        free(snap[i].statement);
    free(snap);
}

static void finish_target(struct session *s, struct admin_query *q, struct console_out *o)
{
    const struct console_cmd *cmd = &s->console->cmd;
    bool running = false;
    char msg[96];
    if (!admin_query_found(q, &running)) {
        snprintf(msg, sizeof(msg), "no session with id %llu", (unsigned long long)cmd->id);
        console_out_error(o, "42704", msg, NULL, "SHOW SESSIONS lists the sessions and their ids.");
        return;
    }
    if (cmd->kind == CONSOLE_CANCEL && !running) {
        snprintf(msg, sizeof(msg), "session %llu has no statement running",
                 (unsigned long long)cmd->id);
        console_out_notice(o, msg);
    }
    console_out_complete(o, console_cmd_tag(cmd->kind));
}

void console_finish(struct session *s, bool timed_out, struct console_out *o)
{
    struct console *c = s->console;
    struct admin_query *q = c->q;
    c->q = NULL;
    if (timed_out) {
        console_out_error(o, "57014",
                          "canceling console command: the workers did not answer in time", NULL,
                          NULL);
    } else if (c->cmd.kind == CONSOLE_SHOW_SESSIONS) {
        finish_sessions(q, o);
    } else if (c->cmd.kind == CONSOLE_SHOW_STATEMENTS) {
        finish_statements(s, q, o);
    } else {
        finish_target(s, q, o);
    }
    admin_query_release(q);
    console_out_rfq(o);
}
