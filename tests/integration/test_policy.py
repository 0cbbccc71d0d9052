"""Statement policy: deny/allow lists, read-only mode, what a refused statement looks like, and
the settings that change how SQL text reads (standard_conforming_strings, client encodings)."""
import subprocess

import pytest

from pgwp import (BINARY, BOUND, RawClient, clean_env, describe, errors, only_error,
                  parameter_status, proxy_only, recreate, rfq, rows, table_rows, tags)

pytestmark = proxy_only

PREFIX = "statement denied by pgwire-proxy policy: "


def assert_denied(msgs, rule, code="42501"):
    """Exactly one ErrorResponse: the policy's, naming `rule` in DETAIL, with a HINT; nothing
    ran (no CommandComplete, no rows) and the session is ready again."""
    err = only_error(msgs)
    assert err["S"] == "ERROR" and err["C"] == code, err
    if code == "42501":
        assert err["M"].startswith(PREFIX), err
    assert err.get("D", "").startswith("rule: "), err
    assert rule in err["D"], err
    assert err.get("H"), f"no HINT: {err}"
    assert [m for m in msgs if m.type in "CDT"] == [], f"something ran: {msgs}"
    return err




def table_exists(dconn, name):
    with dconn.cursor() as cur:
        cur.execute("select to_regclass(%s) is not null", (name,))
        return cur.fetchone()[0]


@pytest.fixture(scope="module")
def deny_proxy(module_proxies):
    return module_proxies("--deny", "drop", "--deny", "truncate", "--deny", "delete",
                          "--deny", "function:pg_terminate_backend", name="deny")


@pytest.fixture(scope="module")
def allow_proxy(module_proxies):
    return module_proxies("--allow", "select", name="allow")


@pytest.fixture(scope="module")
def ro_proxy(module_proxies):
    return module_proxies("--read-only", name="readonly")


# ---------------------------------------------------------------------------------------------
# Deny list


@pytest.mark.parametrize("sql, target, expected", [
    ("drop table pol_msg", "deny", PREFIX + "deny:drop"),
    ("select pg_terminate_backend(0)", "deny", PREFIX + "deny:function:pg_terminate_backend"),
    ("insert into pol_msg values (1)", "allow", PREFIX + "allow (insert is not in the allow list)"),
], ids=["deny-kind", "deny-function", "allow"])
def test_denial_message_text(deny_proxy, allow_proxy, sql, target, expected):
    """The message is the documented one: the prefix once, then the rule."""
    p = deny_proxy if target == "deny" else allow_proxy
    with p.raw() as c:
        assert only_error(c.query(sql))["M"] == expected


@pytest.mark.parametrize("sql", [
    "drop table pol_t",
    "DrOp /* sneaky */ TaBlE pol_t",
    "  drop\n\ttable\n  if exists pol_t cascade  ",
    "-- comment first\ndrop table pol_t",
    'drop table "pol_t"',
])
def test_deny_drop(deny_proxy, dconn, sql):
    recreate(dconn, "pol_t")
    with deny_proxy.raw() as c:
        err = assert_denied(c.query(sql), "deny:drop")
        assert rfq(c.query("select 1")) == "I"
    assert "drop" in err["M"]
    assert table_exists(dconn, "pol_t")


def test_deny_truncate_keeps_rows(deny_proxy, dconn):
    recreate(dconn, "pol_trunc")
    with dconn.cursor() as cur:
        cur.execute("insert into pol_trunc values (1), (2)")
    with deny_proxy.raw() as c:
        assert_denied(c.query("TRUNCATE pol_trunc"), "deny:truncate")
        assert_denied(c.query("truncate table only pol_trunc restart identity"), "deny:truncate")
    assert table_rows(dconn, "pol_trunc") == [(1,), (2,)]


@pytest.mark.parametrize("sql", [
    "select pg_terminate_backend(pg_backend_pid())",
    "select pg_catalog.PG_TERMINATE_BACKEND(pg_backend_pid())",
    'select "pg_terminate_backend"(pg_backend_pid())',
    "select 1 where exists (select pg_terminate_backend(pid) from pg_stat_activity where false)",
])
def test_deny_function(deny_proxy, sql):
    with deny_proxy.raw() as c:
        pid = rows(c.query("select pg_backend_pid()"))[0][0]
        assert_denied(c.query(sql), "deny:function:pg_terminate_backend")
        # the session (and its upstream backend) is still there
        assert rows(c.query("select pg_backend_pid()")) == [(pid,)]


def test_denied_statement_in_a_multi_statement_query_rejects_all(deny_proxy, dconn):
    recreate(dconn, "pol_multi")
    with deny_proxy.raw() as c:
        msgs = c.query("insert into pol_multi values (1); select 1; drop table pol_multi")
        assert_denied(msgs, "deny:drop")
        assert rfq(msgs) == "I"
        msgs = c.query("select 1; DROP TABLE pol_multi")
        assert_denied(msgs, "deny:drop")
        # the deny list still lets other statements through
        msgs = c.query("insert into pol_multi values (2); select count(*) from pol_multi")
        assert errors(msgs) == [] and rows(msgs) == [("1",)]
    assert table_rows(dconn, "pol_multi") == [(2,)]
    assert table_exists(dconn, "pol_multi")


@pytest.mark.parametrize("sql", [
    "with d as (delete from pol_del returning *) select * from d",
    "explain analyze delete from pol_del",
    "EXPLAIN (ANALYZE, BUFFERS) DELETE FROM pol_del WHERE id > 0",
    "delete from pol_del",
])
def test_deny_nested_delete(deny_proxy, dconn, sql):
    recreate(dconn, "pol_del")
    with dconn.cursor() as cur:
        cur.execute("insert into pol_del values (1), (2), (3)")
    with deny_proxy.raw() as c:
        assert_denied(c.query(sql), "deny:delete")
    assert table_rows(dconn, "pol_del") == [(1,), (2,), (3,)]


def test_denial_inside_a_transaction_fails_it(deny_proxy, dconn):
    recreate(dconn, "pol_tx")
    with deny_proxy.raw() as c:
        c.query("begin")
        assert tags(c.query("insert into pol_tx values (1)")) == ["INSERT 0 1"]
        msgs = c.query("drop table pol_tx")
        assert_denied(msgs, "deny:drop")
        assert rfq(msgs) == "E"
        msgs = c.query("commit")
        assert (tags(msgs), rfq(msgs)) == (["ROLLBACK"], "I")
    assert table_rows(dconn, "pol_tx") == []


def test_syntax_error_through_a_policy_proxy(deny_proxy):
    with deny_proxy.raw() as c:
        msgs = c.query("selec 1 from")
        err = only_error(msgs)
        assert (err["S"], err["C"]) == ("ERROR", "42601"), err
        assert "syntax error" in err["M"] and "selec" in err["M"], err
        assert err.get("P") == "1", err
        assert rfq(msgs) == "I"
        msgs = c.query("select 1 frm pg_class where")
        err = only_error(msgs)
        assert err["C"] == "42601" and int(err.get("P", 0)) > 1, err
        assert rows(c.query("select 'ok'")) == [("ok",)]


# ---------------------------------------------------------------------------------------------
# Allow list


def test_allow_select_only(allow_proxy, dconn):
    recreate(dconn, "pol_allow")
    with dconn.cursor() as cur:
        cur.execute("insert into pol_allow values (1)")
    with allow_proxy.raw() as c:
        msgs = c.query("select id from pol_allow")
        assert errors(msgs) == [] and rows(msgs) == [("1",)]
        assert rows(c.query("values (7)")) == [("7",)]
        for sql in ("insert into pol_allow values (2)",
                    "update pol_allow set id = 3",
                    "with d as (delete from pol_allow returning *) select * from d",
                    "select 1 into pol_allow_copy",
                    "show work_mem",
                    "create table pol_allow_new (x int)"):
            err = assert_denied(c.query(sql), "allow")
            assert "allow list" in err["M"], err
        assert rfq(c.query("select 1")) == "I"
    assert table_rows(dconn, "pol_allow") == [(1,)]
    assert not table_exists(dconn, "pol_allow_copy")
    assert not table_exists(dconn, "pol_allow_new")


# ---------------------------------------------------------------------------------------------
# Read-only mode


@pytest.mark.parametrize("sql", [
    "insert into pol_ro values (2)",
    "update pol_ro set id = 5",
    "delete from pol_ro",
    "create table pol_ro_new (x int)",
    "alter table pol_ro add column y int",
    "drop table pol_ro",
    "with d as (delete from pol_ro returning *) select * from d",
    "select * from pol_ro for update",
    "set default_transaction_read_only = off",
    "SET SESSION default_transaction_read_only TO false",
    "set transaction_read_only = off",
    "begin read write",
])
def test_read_only_refuses_writes(ro_proxy, dconn, sql):
    recreate(dconn, "pol_ro")
    with dconn.cursor() as cur:
        cur.execute("insert into pol_ro values (1)")
    with ro_proxy.raw() as c:
        err = assert_denied(c.query(sql), "read-only", code="25006")
        assert "read-only" in err["M"], err
        assert rows(c.query("show default_transaction_read_only")) == [("on",)]
    assert table_rows(dconn, "pol_ro") == [(1,)]
    assert not table_exists(dconn, "pol_ro_new")


def test_read_only_allows_reads(ro_proxy, dconn):
    recreate(dconn, "pol_ro_read")
    with dconn.cursor() as cur:
        cur.execute("insert into pol_ro_read values (1), (2)")
    with ro_proxy.raw() as c:
        assert c.params.get("default_transaction_read_only") == "on"
        assert rows(c.query("show default_transaction_read_only")) == [("on",)]
        assert rows(c.query("select count(*) from pol_ro_read")) == [("2",)]
        for sql in ("begin", "select 1", "set work_mem = '8MB'", "explain select 1",
                    "commit"):
            assert errors(c.query(sql)) == [], sql
        assert rows(c.query("show work_mem")) == [("8MB",)]


# ---------------------------------------------------------------------------------------------
# Start-up validation


def test_standard_conforming_strings_off_works_as_in_postgresql(proxy):
    """standard_conforming_strings can be turned off as in PostgreSQL: the guard decides a text
    with a backslash in a string under both readings, so the session neither gets a refusal
    nor ends when the upstream reports the change."""
    with proxy.raw() as c:
        msgs = c.query("set standard_conforming_strings = off")
        assert errors(msgs) == [] and rfq(msgs) == "I", describe(msgs)
        assert parameter_status(msgs).get("standard_conforming_strings") == "off"
        assert rows(c.query("show standard_conforming_strings")) == [("off",)]
        assert rows(c.query("select 'a\\'b' as v")) == [("a'b",)]  # read with escapes
        assert errors(c.query("reset standard_conforming_strings")) == []
        assert rows(c.query("select 'a\\b' as v")) == [("a\\b",)]


def test_backslash_hiding_client_encoding_ends_the_session(proxy):
    """SJIS/BIG5-style encodings can hide a backslash inside a multi-byte character: refused at
    startup and when SET later, with FATAL 0A000 (the session ends)."""
    with RawClient(proxy.host, proxy.port) as c:
        err = only_error(c.startup(user="postgres", database="postgres",
                                   client_encoding="SJIS"))
        assert (err["S"], err["C"]) == ("FATAL", "0A000"), err
        assert "UTF8" in err["M"]
    with proxy.raw() as c:
        c.query_send("set client_encoding = 'SJIS'")
        msgs = c.read_until_closed()
        err = only_error(msgs)
        assert (err["S"], err["C"]) == ("FATAL", "0A000"), describe(msgs)


@pytest.mark.parametrize("flag", ["--deny", "--allow"])
def test_unknown_rule_stops_startup(pg, flag):
    dsn = f"host={pg.host} port={pg.port} dbname=postgres user=postgres"
    r = subprocess.run([BINARY, "--listen", "127.0.0.1:0", "--upstream", dsn, flag, "nonsense"],
                       stdin=subprocess.DEVNULL, capture_output=True, text=True,
                       env=clean_env(), timeout=BOUND)
    assert r.returncode != 0, r.stderr
    assert "nonsense" in r.stderr, r.stderr
    assert "drop" in r.stderr, f"the message should list the kinds: {r.stderr}"
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_unknown_rule_exit_status_is_2(pg):
    """README: invalid values exit with status 2, like every other configuration error."""
    dsn = f"host={pg.host} port={pg.port} dbname=postgres user=postgres"
    r = subprocess.run([BINARY, "--listen", "127.0.0.1:0", "--upstream", dsn, "--deny", "dorp"],
                       stdin=subprocess.DEVNULL, capture_output=True, text=True,
                       env=clean_env(), timeout=BOUND)
    assert r.returncode == 2, (r.returncode, r.stderr)
