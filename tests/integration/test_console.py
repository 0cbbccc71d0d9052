"""The operator console: the virtual database pgwire_proxy, for the users in --admin-users. It
answers SHOW SESSIONS / STATEMENTS / STATS / CONFIG / POLICY / VERSION, CANCEL, KILL, RELOAD
and SHUTDOWN itself, never connecting upstream, to psql and drivers alike; the statement
statistics behind SHOW STATEMENTS are exact under concurrency and bounded by --statement-stats."""
import csv
from contextlib import closing
import io
import os
import subprocess
import threading

import psycopg2
import pytest

from pgwp import (BOUND, PSQL, RawClient, backends_detail, errors, free_port, log_events, marker,
                  metric, only_error, poll, port_listening, proxy_only, psql_env, rfq, rows,
                  scrape, tags, terminate_backends)

pytestmark = proxy_only

DB = "pgwire_proxy"
ADMIN = ("--admin-users", "postgres,root", "--admin-trust-loopback")


def console(p, user="postgres", **params):
    """A RawClient logged in to p's console over loopback TCP."""
    c = RawClient(p.host, p.port)
    msgs = c.startup(user=user, database=DB, **params)
    assert msgs[-1].type == "Z", msgs
    return c


def table(msgs):
    """(column names, rows) of a console answer."""
    desc = [m for m in msgs if m.type == "T"]
    assert len(desc) == 1, msgs
    payload, names, pos = desc[0].payload, [], 2
    for _ in range(int.from_bytes(payload[:2], "big")):
        end = payload.index(b"\0", pos)
        names.append(payload[pos:end].decode())
        pos = end + 1 + 18
    return names, rows(msgs)


def as_dicts(msgs):
    names, rs = table(msgs)
    return [dict(zip(names, r)) for r in rs]


def show(p, what):
    with console(p) as c:
        msgs = c.query(f"show {what}")
        assert errors(msgs) == [] and rfq(msgs) == "I", msgs
        return as_dicts(msgs)


def psql_csv(p, sql, user="postgres"):
    r = subprocess.run(
        [PSQL, "-X", "--csv", "-h", p.host, "-p", str(p.port), "-U", user, "-d", DB, "-c", sql],
        capture_output=True, text=True, timeout=BOUND, stdin=subprocess.DEVNULL,
        env=psql_env(p.home))
    assert r.returncode == 0, r.stderr
    return list(csv.DictReader(io.StringIO(r.stdout)))


def statements(p):
    return {r["sample"]: r for r in show(p, "statements")}


@pytest.fixture
def cp(start_proxy):
    return start_proxy(*ADMIN)


# ---------------------------------------------------------------------------------------------
# Every command, from psql and from psycopg2


def test_psql_show_commands(cp, dconn):
    app = marker("cons-psql")
    with closing(cp.connect(autocommit=True, application_name=app)) as conn, conn.cursor() as cur:
        cur.execute("select id, name from items where id = %s", (1,))
        assert cur.fetchall() == [(1, "apple")]
    sessions = psql_csv(cp, "SHOW SESSIONS")
    me = [s for s in sessions if s["database"] == DB]
    assert len(me) == 1 and me[0]["state"] == "console" and me[0]["user"] == "postgres", sessions
    assert me[0]["auth"] == "trust" and me[0]["client"].startswith("127.0.0.1:"), me
    assert me[0]["upstream_pid"] == "" and me[0]["statement"] == "", me
    stmts = psql_csv(cp, "show statements;")
    got = [s for s in stmts if s["sample"] == "select id, name from items where id = $1"]
    assert len(got) == 1, stmts
    assert (got[0]["kind"], got[0]["calls"], got[0]["errors"], got[0]["rows"]) == \
        ("select", "1", "0", "1"), got
    assert len(got[0]["fingerprint"]) == 16, got
    stats = {r["name"]: int(r["value"]) for r in psql_csv(cp, "Show Stats")}
    assert stats["statements_ok"] >= 1 and stats["console_sessions"] == 1, stats
    config = {r["key"]: r for r in psql_csv(cp, "show config")}
    assert config["statement-stats"]["value"] == "5000", config["statement-stats"]
    assert config["admin-users"]["value"] == "postgres,root", config["admin-users"]
    assert "password" not in config["upstream"]["value"] or "***" in config["upstream"]["value"]
    assert [r["version"] for r in psql_csv(cp, "show version")][0].startswith("pgwire-proxy ")
    policy = psql_csv(cp, "show policy")
    assert {"user": "*", "rule": "max-rows", "value": "10000"} in policy, policy
    # nothing of the console went upstream
    assert [b for b in backends_detail(dconn, "psql [") if "pgwire_proxy" in str(b)] == []
    assert backends_detail(dconn, app) == []  # the client's connection was closed


def test_psql_expanded_and_tuples_only(cp):
    r = subprocess.run([PSQL, "-X", "-A", "-t", "-h", cp.host, "-p", str(cp.port), "-U",
                        "postgres", "-d", DB, "-c", "show version"], capture_output=True,
                       text=True, timeout=BOUND, stdin=subprocess.DEVNULL, env=psql_env(cp.home))
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("pgwire-proxy ") and r.stdout.count("\n") == 1, r.stdout
    r = subprocess.run([PSQL, "-X", "-h", cp.host, "-p", str(cp.port), "-U", "postgres", "-d",
                        DB], input="\\x\nshow version\n", capture_output=True, text=True,
                       timeout=BOUND, env=psql_env(cp.home))
    assert r.returncode == 0, r.stderr
    assert "Expanded display is on." in r.stdout and "version | pgwire-proxy" in r.stdout, r.stdout


def test_psycopg2_every_command(start_proxy, tmp_path):
    p = start_proxy(*ADMIN, "--deny", "truncate")
    with closing(p.connect(autocommit=True)) as conn, conn.cursor() as cur:
        cur.execute("select 42")
    conn = psycopg2.connect(p.dsn(dbname=DB))  # not autocommit: psycopg2 sends BEGIN first
    try:
        cur = conn.cursor()
        cur.execute("SHOW SESSIONS")
        names = [d.name for d in cur.description]
        assert names == ["id", "user", "auth", "client", "application", "database", "state",
                         "upstream_pid", "transaction", "statement", "running_for", "rows",
                         "bytes", "statements"]
        assert [r[6] for r in cur.fetchall() if r[5] == DB] == ["console"]
        cur.execute("show statements")
        assert [d.name for d in cur.description] == [
            "fingerprint", "kind", "calls", "errors", "denied", "limited", "shadow", "total_ms",
            "mean_ms", "max_ms", "rows", "bytes", "sample"]
        assert [(r[1], r[2], r[12]) for r in cur.fetchall()] == [("select", "1", "select $1")]
        cur.execute("show stats")
        assert ("console_sessions", "1") in cur.fetchall()
        cur.execute("show config")
        assert ("deny", "truncate", "yes") in cur.fetchall()
        cur.execute("show policy")
        assert ("*", "deny", "truncate") in cur.fetchall()
        cur.execute("show version")
        assert cur.fetchone()[0].startswith("pgwire-proxy ")
        cur.execute("cancel 999999")
    except psycopg2.Error as e:
        assert e.pgcode == "42704", e
    else:
        pytest.fail("CANCEL of an unknown session succeeded")
    finally:
        conn.close()
    with closing(psycopg2.connect(p.dsn(dbname=DB))) as conn, conn.cursor() as cur:
        with pytest.raises(psycopg2.Error) as ei:
            cur.execute("select 1")
        assert ei.value.pgcode == "42601"
        assert "SHOW SESSIONS" in ei.value.diag.message_hint
        assert "KILL <id>" in ei.value.diag.message_hint


def test_unknown_commands_are_42601_with_the_list(cp):
    with console(cp) as c:
        for sql in ("select version()", "show tables", "kill", "kill x", "reload now",
                    "show sessions; show stats"):
            msgs = c.query(sql)
            e = only_error(msgs)
            assert e["C"] == "42601" and "CANCEL <id>" in e["H"], (sql, e)
            assert rfq(msgs) == "I"
        msgs = c.query(" ; ")
        assert [m.type for m in msgs] == ["I", "Z"], msgs


# ---------------------------------------------------------------------------------------------
# CANCEL and KILL of another session's pg_sleep


def sleeping_session(p, app):
    """A RawClient on p running pg_sleep(30), and its id from SHOW SESSIONS once active."""
    c = p.raw(application_name=app)
    c.query_send("select pg_sleep(30)")

    def active():
        for s in show(p, "sessions"):
            if s["application"] == app and s["state"] == "active" and s["statement"]:
                return s
    s = poll(active, what="the sleeping session in SHOW SESSIONS")
    assert s["statement"] == "select pg_sleep($1)", s
    assert s["upstream_pid"] and s["running_for"].startswith("00:00:"), s
    return c, s


def test_cancel_a_running_pg_sleep(cp, dconn):
    app = marker("cons-cancel")
    c, s = sleeping_session(cp, app)
    try:
        with console(cp) as adm:
            msgs = adm.query(f"CANCEL {s['id']}")
            assert errors(msgs) == [] and tags(msgs) == ["CANCEL"], msgs
        msgs = c.read_until_rfq()
        assert only_error(msgs)["C"] == "57014" and rfq(msgs) == "I", msgs
        assert rows(c.query("select 7")) == [("7",)]  # the session goes on
        after = [x for x in show(cp, "sessions") if x["id"] == s["id"]]
        assert after[0]["state"] == "idle" and after[0]["statements"] == "2", after
    finally:
        c.close()
        terminate_backends(dconn, app)


def test_kill_a_running_pg_sleep(cp, dconn):
    app = marker("cons-kill")
    c, s = sleeping_session(cp, app)
    try:
        with console(cp) as adm:
            msgs = adm.query(f"kill {s['id']};")
            assert errors(msgs) == [] and tags(msgs) == ["KILL"], msgs
            msgs = adm.query(f"kill {s['id']}")  # gone now
            assert only_error(msgs)["C"] == "42704", msgs
        msgs, closed = c.read_all()
        e = only_error(msgs)
        assert (e["S"], e["C"], closed) == ("FATAL", "57P01", True), msgs
        poll(lambda: backends_detail(dconn, app) == [], what="the killed session's backend")
        poll(lambda: not [x for x in show(cp, "sessions") if x["id"] == s["id"]],
             what="the killed session to leave SHOW SESSIONS")
    finally:
        c.close()
        terminate_backends(dconn, app)


# ---------------------------------------------------------------------------------------------
# Who may open it


def refused(p, user, unix=None):
    c = RawClient.unix(unix) if unix else RawClient(p.host, p.port)
    with c:
        msgs = c.startup(user=user, database=DB)
        e = only_error(msgs)
        assert e["S"] == "FATAL", msgs
        return e


def test_non_admin_refused_28000(cp, dconn):
    app = marker("cons-refused")
    e = refused(cp, "app")
    assert e["C"] == "28000" and "may not open" in e["M"], e
    assert backends_detail(dconn, app) == []


def test_claimed_name_over_tcp_needs_trust_loopback(start_proxy):
    p = start_proxy("--admin-users", "postgres")
    assert refused(p, "postgres")["C"] == "28000"
    off = start_proxy()
    assert refused(off, "postgres")["C"] == "28000"


def test_unix_socket_checks_the_os_user(start_proxy, tmp_path):
    d = str(tmp_path / "sock")
    os.mkdir(d)
    p = start_proxy("--admin-users", "postgres,root", "--unix-socket-dir", d)
    path = os.path.join(d, f".s.PGSQL.{p.port}")
    # this process runs as root: "postgres" is only claimed
    assert refused(p, "postgres", unix=path)["C"] == "28000"
    with RawClient.unix(path) as c:
        msgs = c.startup(user="root", database=DB)
        assert msgs[-1].type == "Z", msgs
        sess = as_dicts(c.query("show sessions"))
        assert [(s["user"], s["auth"], s["client"]) for s in sess] == [("root", "peer",
                                                                         "[local]")]


# ---------------------------------------------------------------------------------------------
# Malformed input, the extended protocol


def test_malformed_message_closes_the_console_proxy_survives(cp):
    with console(cp) as c:
        c.send_raw(b"Q\xff\xff\xff\xff")
        msgs, closed = c.read_all()
        e = only_error(msgs)
        assert (e["S"], e["C"], closed) == ("FATAL", "08P01", True), msgs
    with console(cp) as c:
        c.send("?", b"junk")
        msgs, closed = c.read_all()
        assert only_error(msgs)["C"] == "08P01" and closed, msgs
    with console(cp) as c:
        c.send("Q", b"show version")  # no terminating NUL
        msgs, closed = c.read_all()
        assert only_error(msgs)["C"] == "08P01" and closed, msgs
    with console(cp) as c:
        c.parse("select 1")
        c.bind()
        c.execute()
        c.sync()
        msgs = c.read_until_rfq()
        assert only_error(msgs)["C"] == "0A000" and rfq(msgs) == "I", msgs
        assert rows(c.query("show version"))[0][0].startswith("pgwire-proxy ")
    assert cp.alive()


# ---------------------------------------------------------------------------------------------
# Statement statistics


def test_counts_exact_under_four_concurrent_clients(start_proxy):
    p = start_proxy(*ADMIN, "--workers", "2", "--deny", "truncate")
    per_client, failures = 50, []

    def client(k):
        try:
            with closing(p.connect(autocommit=True)) as conn, conn.cursor() as cur:
                for i in range(per_client):
                    cur.execute(f"select {k * 1000 + i} as n")
                    assert cur.fetchone() == (k * 1000 + i,)
                    try:
                        cur.execute("truncate items")
                    except psycopg2.Error as e:
                        assert e.pgcode == "42501"
                    try:
                        cur.execute("select 1 / (0 * %s)" % i)
                    except psycopg2.Error as e:
                        assert e.pgcode == "22012"
        except BaseException as e:
            failures.append(e)
    threads = [threading.Thread(target=client, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(BOUND * 6)
    assert not failures and not any(t.is_alive() for t in threads), failures
    st = statements(p)
    sel = st["select $1 as n"]
    assert (sel["calls"], sel["errors"], sel["denied"], sel["rows"]) == ("200", "0", "0", "200")
    tr = st["truncate items"]
    assert (tr["kind"], tr["calls"], tr["denied"]) == ("truncate", "200", "200"), tr
    div = st["select $1 / ($2 * $3)"]
    assert (div["calls"], div["errors"]) == ("200", "200"), div
    assert float(sel["max_ms"]) >= float(sel["mean_ms"]) > 0


def test_prepared_and_unnamed_statements_each_counted(start_proxy):
    """A prepared statement's runs and the unnamed statement parsed again count one call each,
    under the fingerprint of their text, however often the text was seen before."""
    import psycopg
    p = start_proxy(*ADMIN, "--extended-protocol", "allow")
    with psycopg.connect(p.dsn(), autocommit=True) as conn, conn.cursor() as cur:
        for i in range(5):
            cur.execute("select %s::int as prep_a", (i,), prepare=True)
            assert cur.fetchone() == (i,)
        for i in range(3):
            cur.execute("select %s::int as prep_a", (i,), prepare=False)
            assert cur.fetchone() == (i,)
        for i in range(2):  # another shape (aliases and casts do not count)
            cur.execute("select abs(%s::int) as prep_b", (i,), prepare=True)
            assert cur.fetchone() == (i,)
    st = {r["sample"]: r for r in show(p, "statements") if "prep_" in r["sample"]}
    assert sorted(st) == ["select $1::int as prep_a", "select abs($1::int) as prep_b"], st
    a, b = st["select $1::int as prep_a"], st["select abs($1::int) as prep_b"]
    assert (a["kind"], a["calls"], a["rows"], a["errors"]) == ("select", "8", "8", "0"), a
    assert (b["kind"], b["calls"], b["rows"]) == ("select", "2", "2"), b


def test_eviction_bounded_and_metrics_top(start_proxy):
    mport = free_port()
    p = start_proxy(*ADMIN, "--statement-stats", "10", "--metrics-listen", f"127.0.0.1:{mport}")
    poll(lambda: port_listening(mport), what="the metrics port")
    with closing(p.connect(autocommit=True)) as conn, conn.cursor() as cur:
        for k in range(30):
            for _ in range(k + 1):
                cur.execute(f"select c{k} from (select 1 as c{k}) t")
    st = statements(p)
    assert len(st) == 10, sorted(st)
    assert set(st) == {f"select c{k} from (select $1 as c{k}) t" for k in range(20, 30)}
    assert st["select c29 from (select $1 as c29) t"]["calls"] == "30"
    m = scrape(mport)
    series = [k for k in m if k.startswith("pgwire_proxy_statement_calls_total{")]
    assert len(series) == 10, series
    assert sorted(int(m[k]) for k in series) == list(range(21, 31))
    assert all('kind="select"' in k for k in series), series
    rows_series = [k for k in m if k.startswith("pgwire_proxy_statement_rows_total{")]
    assert len(rows_series) == 10


def test_statistics_off(start_proxy):
    p = start_proxy(*ADMIN, "--statement-stats", "0")
    with closing(p.connect(autocommit=True)) as conn, conn.cursor() as cur:
        cur.execute("select 1")
    with console(p) as c:
        msgs = c.query("show statements")
        assert table(msgs)[1] == [] and rfq(msgs) == "I", msgs
        assert any("off" in n["M"] for n in (m.fields for m in msgs if m.type == "N")), msgs


# ---------------------------------------------------------------------------------------------
# RELOAD, SHUTDOWN


def test_reload_and_shutdown(start_proxy):
    p = start_proxy(*ADMIN)
    with console(p) as c:
        msgs = c.query("RELOAD")
        assert tags(msgs) == ["RELOAD"] and rfq(msgs) == "I", msgs
        poll(lambda: log_events(p, "reloaded"),
             what="the reload in the log")
        msgs = c.query("shutdown")
        assert tags(msgs) == ["SHUTDOWN"], msgs
        rest, closed = c.read_all()
        assert only_error(rest)["C"] == "57P01" and closed, rest
    assert p.wait() == 0


def test_shadow_hits_counted_while_the_statements_succeed(start_proxy, dconn):
    with dconn.cursor() as cur:
        cur.execute("drop table if exists cons_shadow; create table cons_shadow (id int);"
                    "insert into cons_shadow select generate_series(1, 5)")
    p = start_proxy(*ADMIN, "--deny", "shadow:truncate", "--on-limit", "warn", "--max-rows", "2")
    with closing(p.connect(autocommit=True)) as conn, conn.cursor() as cur:
        cur.execute("select id from cons_shadow order by id")
        assert len(cur.fetchall()) == 5  # past --max-rows 2, warned only
        cur.execute("select 1")
        cur.execute("truncate cons_shadow")
    with dconn.cursor() as cur:
        cur.execute("select count(*) from cons_shadow")
        assert cur.fetchone()[0] == 0  # the shadow-denied TRUNCATE ran
    st = statements(p)
    sel, tr, one = (st["select id from cons_shadow order by id"], st["truncate cons_shadow"],
                    st["select $1"])
    assert (sel["calls"], sel["shadow"], sel["limited"], sel["rows"]) == ("1", "1", "0", "5")
    assert (tr["calls"], tr["shadow"], tr["denied"], tr["errors"]) == ("1", "1", "0", "0")
    assert (one["calls"], one["shadow"]) == ("1", "0")


def test_show_policy_lists_the_profiles(start_proxy, tmp_path):
    ini = tmp_path / "proxy.ini"
    ini.write_text("deny = drop, shadow:truncate\n[user:alice]\nread-only = on\nmax-rows = 7\n"
                   "max-connections = 3\n")
    p = start_proxy("--config", str(ini), *ADMIN)
    policy = {(r["user"], r["rule"]): r["value"] for r in psql_csv(p, "show policy")}
    assert policy[("*", "deny")] == "drop,shadow:truncate", policy
    assert policy[("*", "read-only")] == "off"
    assert policy[("alice", "read-only")] == "on"
    assert policy[("alice", "max-rows")] == "7"
    assert policy[("alice", "max-connections")] == "3"
    assert policy[("alice", "deny")] == "drop,shadow:truncate"  # inherited


def test_console_opens_when_the_proxy_is_full(start_proxy):
    p = start_proxy(*ADMIN, "--max-connections", "1")
    with p.raw() as held:
        with RawClient(p.host, p.port) as c:
            assert only_error(c.startup(user="postgres", database="postgres"))["C"] == "53300"
        sess = show(p, "sessions")  # the console is no client of the ceiling
        assert sorted(s["state"] for s in sess) == ["console", "idle"], sess
        assert rows(held.query("select 1")) == [("1",)]
