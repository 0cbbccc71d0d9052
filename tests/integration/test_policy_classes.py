"""Guardrails that cannot be talked around: each attack of a class, reproduced at the wire, is
refused with its SQLSTATE and its effect did not happen (the backend is alive, read-only is
still on, the table still has its rows). docs/policy.md describes the classes; the unit tables
(tests/unit/test_guard_classes.c) hold every member found."""

import psycopg2
import pytest

from pgwp import (startup_refused, describe, errors, only_error, poll, proxy_only, rfq,
                  rows, table_rows)

pytestmark = proxy_only

TB = "function:pg_terminate_backend"


@pytest.fixture(scope="module", autouse=True)
def schema(direct):
    conn = direct.connect(autocommit=True)
    with conn.cursor() as cur:
        cur.execute("""
            create extension if not exists dblink;
            drop table if exists pc_rows, pc_written;
            create table pc_rows (id int primary key, v text);
            create table pc_written (id int);
            -- writes the guard cannot see, and a flip of the session default it cannot see
            create or replace function pc_writer() returns int language plpgsql as
              $$begin insert into pc_written values (1); return 1; end$$;
            create or replace function pc_flip() returns text language sql as
              $$select set_config('default_transaction_read_only', 'off', false)$$;
        """)
    conn.close()


@pytest.fixture
def reset_tables(dconn):
    with dconn.cursor() as cur:
        cur.execute("truncate pc_rows, pc_written; insert into pc_rows values (1, 'a'), (2, 'b')")


@pytest.fixture
def victim(direct):
    """A backend an attack would terminate; the test checks it survived."""
    conn = direct.connect(autocommit=True)
    with conn.cursor() as cur:
        cur.execute("select pg_backend_pid()")
        pid = cur.fetchone()[0]
    yield pid, conn
    conn.close()


def assert_alive(victim):
    pid, conn = victim
    with conn.cursor() as cur:
        cur.execute("select pg_backend_pid()")
        assert cur.fetchone()[0] == pid


def refused(msgs, code, rule):
    err = only_error(msgs)
    assert (err["S"], err["C"]) == ("ERROR", code), err
    assert err.get("D") == f"rule: {rule}", err
    assert err.get("H"), err
    assert [m for m in msgs if m.type in "CDT"] == [], f"something ran: {describe(msgs)}"
    return err


@pytest.fixture(scope="module")
def ro(module_proxies):
    return module_proxies("--read-only", name="ro")


@pytest.fixture(scope="module")
def deny(module_proxies):
    return module_proxies("--deny", TB, "--deny", "drop", "--deny", "delete", "--deny", "update",
                          name="deny")


@pytest.fixture(scope="module")
def group_deny(module_proxies):
    return module_proxies("--deny", "group:file_access", name="group-deny")


@pytest.fixture(scope="module")
def allow_select(module_proxies):
    return module_proxies("--allow", "select", name="allow-select")


@pytest.fixture(scope="module")
def allow_functions(module_proxies):
    return module_proxies("--allow", "select", "--allow", "function:count", name="allow-fn")


# ---------------------------------------------------------------------------------------------
# B.1 transaction and session access modes: the last option wins, as in PostgreSQL

# (statements before, the statement that would make the transaction read-write, after)
RO_ATTACKS = {
    "begin-list": ([], "BEGIN READ ONLY, READ WRITE", []),
    "start-list": ([], "START TRANSACTION ISOLATION LEVEL READ COMMITTED, READ ONLY, READ WRITE",
                   []),
    "set-transaction-list": (["BEGIN"], "SET TRANSACTION READ ONLY, READ WRITE", []),
    "reset-transaction": (["BEGIN"], "RESET transaction_read_only", []),
    "default-transaction": (["BEGIN"], "SET transaction_read_only TO DEFAULT", []),
    "set-config-transaction": (["BEGIN"],
                               "SELECT set_config('transaction_read_only', 'off', true)", []),
    "session-characteristics": ([], "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY, "
                                "READ WRITE", ["BEGIN"]),
}


@pytest.mark.parametrize("attack", list(RO_ATTACKS))
def test_access_mode_attacks(ro, dconn, reset_tables, attack):
    """The statement that would make the transaction read-write is refused (25006), so the
    write the guard cannot see (inside pc_writer) still meets a read-only transaction."""
    before, mode, after = RO_ATTACKS[attack]
    with ro.raw() as c:
        for sql in before:
            assert errors(c.query(sql)) == []
        refused(c.query(mode), "25006", "read-only")
        c.query("ROLLBACK")
        for sql in after:
            assert errors(c.query(sql)) == []
        msgs = c.query("select pc_writer()")
        assert only_error(msgs)["C"] == "25006", describe(msgs)  # PostgreSQL's own refusal
        c.query("ROLLBACK")
        assert rows(c.query("show default_transaction_read_only")) == [("on",)]
    assert table_rows(dconn, "pc_written") == []


def test_access_modes_postgresql_makes_read_only_are_allowed(ro, dconn, reset_tables):
    with ro.raw() as c:
        assert errors(c.query("BEGIN READ WRITE, READ ONLY")) == []
        assert rows(c.query("show transaction_read_only")) == [("on",)]
        assert only_error(c.query("select pc_writer()"))["C"] == "25006"
        c.query("ROLLBACK")
        # RESET returns to the session's start value, which --read-only sets
        assert errors(c.query("RESET default_transaction_read_only")) == []
        assert rows(c.query("show default_transaction_read_only")) == [("on",)]
        assert errors(c.query("SET default_transaction_read_only TO DEFAULT")) == []
        assert rows(c.query("show default_transaction_read_only")) == [("on",)]
    assert table_rows(dconn, "pc_written") == []


# ---------------------------------------------------------------------------------------------
# B.2 SQL inside strings: functions that run SQL given as text, and DO


def test_sql_text_turning_read_only_off(ro):
    with ro.raw() as c:
        refused(c.query("SELECT query_to_xml('select set_config(''default_transaction_read_only'', "
                        "''off'', false)', true, false, '')"), "42501", "sql-text")
        assert rows(c.query("show default_transaction_read_only")) == [("on",)]


def test_sql_text_running_a_denied_function(deny, victim):
    pid = victim[0]
    with deny.raw() as c:
        refused(c.query(f"SELECT query_to_xml('select pg_terminate_backend({pid})', true, false, "
                        "'')"), "42501", "sql-text")
        refused(c.query(f"SELECT * FROM ts_stat('select to_tsvector(pg_terminate_backend({pid})"
                        "::text)')"), "42501", "sql-text")
    assert_alive(victim)


def test_dblink_and_do_cannot_drop(deny, dconn, pg, reset_tables):
    dsn = f"host={pg.host} port={pg.port} dbname=postgres user=postgres"
    with deny.raw() as c:
        refused(c.query(f"SELECT dblink_exec('{dsn}', 'drop table pc_rows')"), "42501", "sql-text")
        refused(c.query("SELECT * FROM dblink('" + dsn + "', 'delete from pc_rows returning id') "
                        "AS t(id int)"), "42501", "sql-text")
        refused(c.query("DO $$BEGIN EXECUTE 'DROP TABLE pc_rows'; END$$"), "42501", "sql-text")
    assert table_rows(dconn, "pc_rows") == [(1, "a"), (2, "b")]


def test_permit_names_an_exception(start_proxy):
    p = start_proxy("--deny", "drop", "--permit", "function:query_to_xml")
    with p.raw() as c:
        msgs = c.query("SELECT query_to_xml('select 42 as x', true, false, '')")
        assert errors(msgs) == [] and "<x>42</x>" in rows(msgs)[0][0]
        refused(c.query("DO $$BEGIN END$$"), "42501", "sql-text")


# ---------------------------------------------------------------------------------------------
# B.3 nothing follows the end of a transaction in one Query, in read-only mode


def test_nothing_after_commit_in_one_query(ro, dconn, reset_tables):
    """pc_flip() turns the session default off where the guard cannot see; the next
    transaction would be read-write before the relay saw the reported setting at
    ReadyForQuery. So the Query is refused whole."""
    with ro.raw() as c:
        refused(c.query("SELECT pc_flip(); COMMIT; SELECT pc_writer()"), "25006", "read-only")
        refused(c.query("COMMIT; SELECT 1"), "25006", "read-only")
        msgs = c.query("BEGIN; SELECT 1; COMMIT")
        assert errors(msgs) == [] and rfq(msgs) == "I"
        assert rows(c.query("show default_transaction_read_only")) == [("on",)]
    assert table_rows(dconn, "pc_written") == []


# ---------------------------------------------------------------------------------------------
# B.4 writes PostgreSQL allows in read-only transactions


@pytest.fixture
def large_object(dconn):
    with dconn.cursor() as cur:
        cur.execute("select lo_unlink(oid) from pg_largeobject_metadata")
        cur.execute("select lo_from_bytea(4200, 'original')")
    yield 4200
    with dconn.cursor() as cur:
        cur.execute("select lo_unlink(oid) from pg_largeobject_metadata")


def large_objects(dconn):
    with dconn.cursor() as cur:
        cur.execute("select oid::int, convert_from(lo_get(oid), 'UTF8') "
                    "from pg_largeobject_metadata order by 1")
        return cur.fetchall()


@pytest.mark.parametrize("sql", [
    "select lo_create(4243)",
    "select lo_creat(-1)",
    "select lo_from_bytea(4244, 'x')",
    "select lo_put(4200, 0, 'XX')",
    "select lo_unlink(4200)",
    "select lo_truncate(lo_open(4200, 131072), 0)",
    "select lo_import('/etc/hostname', 4245)",
    "select (4200).lo_unlink",
])
def test_large_objects_in_read_only_mode(ro, dconn, large_object, sql):
    with ro.raw() as c:
        refused(c.query(sql), "25006", "read-only")
    assert large_objects(dconn) == [(4200, "original")]


def test_lo_export_writes_no_file(ro, large_object, tmp_path):
    tmp_path.chmod(0o777)
    target = tmp_path / "exported"
    with ro.raw() as c:
        refused(c.query(f"select lo_export(4200, '{target}')"), "25006", "read-only")
    assert not target.exists()


def test_side_effect_functions_in_read_only_mode(ro, dconn, direct):
    listener = direct.connect(autocommit=True)
    try:
        with listener.cursor() as cur:
            cur.execute("listen pc_chan")
        with ro.raw() as c:
            for sql in ("select pg_notify('pc_chan', 'from-the-proxy')",
                        "select pg_advisory_lock(4711)",
                        "select pg_try_advisory_lock(4711)",
                        "select pg_create_physical_replication_slot('pc_slot')",
                        "select pg_reload_conf()", "select pg_switch_wal()",
                        "select pg_stat_reset()", "select txid_current()",
                        "select pg_replication_origin_create('pc_origin')"):
                refused(c.query(sql), "25006", "read-only")
            assert rows(c.query("select pg_advisory_unlock_all()::text")) == [("",)]
        with dconn.cursor() as cur:
            cur.execute("select count(*) from pg_locks where locktype = 'advisory'")
            assert cur.fetchone()[0] == 0
            cur.execute("select count(*) from pg_replication_slots where slot_name = 'pc_slot'")
            assert cur.fetchone()[0] == 0
            cur.execute("select count(*) from pg_replication_origin where roname = 'pc_origin'")
            assert cur.fetchone()[0] == 0
            cur.execute("notify pc_chan, 'marker'")
        # notifications of one listener arrive in commit order: the marker comes after any
        # the proxy's session had sent
        def marker():
            listener.poll()
            return any(n.payload == "marker" for n in listener.notifies)
        poll(marker, what="the marker notification")
        assert [n.payload for n in listener.notifies] == ["marker"]
    finally:
        listener.close()


# ---------------------------------------------------------------------------------------------
# B.5 calls without call syntax


@pytest.mark.parametrize("sql", [
    "select (pid).pg_terminate_backend from pg_stat_activity where pid = {pid}",
    "select a.pid.pg_terminate_backend from pg_stat_activity a where a.pid = {pid}",
    "select ({pid}).pg_terminate_backend",
])
def test_attribute_notation_under_a_deny_rule(deny, victim, sql):
    with deny.raw() as c:
        refused(c.query(sql.format(pid=victim[0])), "42501", f"deny:{TB}")
    assert_alive(victim)


def test_attribute_notation_under_a_function_allow_list(allow_functions, victim):
    with allow_functions.raw() as c:
        err = refused(c.query(f"select ({victim[0]}).pg_terminate_backend"), "42501", "allow")
        assert "pg_terminate_backend" in err["M"]
        assert rows(c.query("select count(*) from pg_class c where c.relname = 'pg_class'")) == \
            [("1",)]
    assert_alive(victim)


# ---------------------------------------------------------------------------------------------
# B.6 indirection through DDL, and function groups


def test_operator_bound_to_a_denied_function(deny, dconn, victim):
    with deny.raw() as c:
        refused(c.query("CREATE OPERATOR ### (FUNCTION = pg_terminate_backend, RIGHTARG = int)"),
                "42501", f"deny:{TB}")
        assert only_error(c.query(f"select ### {victim[0]}"))["C"] == "42883"  # no operator
    with dconn.cursor() as cur:
        cur.execute("select count(*) from pg_operator where oprname = '###'")
        assert cur.fetchone()[0] == 0
    assert_alive(victim)


@pytest.mark.parametrize("fn", ["pg_read_file", "pg_read_binary_file", "pg_stat_file"])
def test_function_group_covers_siblings(group_deny, fn):
    with group_deny.raw() as c:
        err = refused(c.query(f"select {fn}('/etc/hostname')"), "42501",
                      "deny:group:file_access")
        assert fn in err["M"]


# ---------------------------------------------------------------------------------------------
# B.7 kinds nested in other kinds


def test_merge_delete_under_deny_delete(deny, dconn, reset_tables):
    with deny.raw() as c:
        refused(c.query("MERGE INTO pc_rows t USING (SELECT 1 AS id) s ON t.id = s.id "
                        "WHEN MATCHED THEN DELETE"), "42501", "deny:delete")
        refused(c.query("INSERT INTO pc_rows VALUES (1, 'z') ON CONFLICT (id) DO UPDATE "
                        "SET v = 'z'"), "42501", "deny:update")
    assert table_rows(dconn, "pc_rows") == [(1, "a"), (2, "b")]


# ---------------------------------------------------------------------------------------------
# B.8 settings by function


def test_set_config_is_set(allow_select):
    with allow_select.raw() as c:
        refused(c.query("SELECT set_config('role', 'app', false)"), "42501", "allow")
        refused(c.query("SELECT pg_catalog.set_config('search_path', 'evil', false)"), "42501",
                "allow")
        assert rows(c.query("select current_user, current_setting('search_path')")) == \
            [("postgres", '"$user", public')]


# ---------------------------------------------------------------------------------------------
# B.9 the rule grammar


@pytest.mark.parametrize("flags, needle", [
    (["--deny", "shadow:shadow:drop"], "shadow: is given twice"),
    (["--permit", "select"], "invalid permit rule"),
    (["--deny", "group:nope"], "group:nope"),
    (["--max-parse-size", "20MB"], "--max-parse-size"),
])
def test_rule_grammar_errors_exit_2(pg, flags, needle):
    stderr = startup_refused(pg, flags)
    assert needle in stderr, stderr


# ---------------------------------------------------------------------------------------------
# B.10 standard_conforming_strings: both readings instead of a refusal


def test_backslash_decided_under_both_readings(deny, victim):
    pid = victim[0]
    with deny.raw() as c:
        assert errors(c.query("set standard_conforming_strings = off")) == []
        # with it off, PostgreSQL would read a call after the first literal
        refused(c.query(f"select 'a\\'' , pg_terminate_backend({pid}) --'"), "42501", f"deny:{TB}")
        assert errors(c.query("reset standard_conforming_strings")) == []
        refused(c.query(f"select 'a\\'' , pg_terminate_backend({pid}) --'"), "42501", f"deny:{TB}")
        # what reads alike both ways runs, whatever the setting
        assert rows(c.query("select 'C:\\temp' as p")) == [("C:\\temp",)]
        assert errors(c.query("set standard_conforming_strings = off")) == []
        assert rows(c.query("select 'it\\'s' as p")) == [("it's",)]
    assert_alive(victim)


def test_readings_that_differ_are_refused(deny, dconn, reset_tables):
    with deny.raw() as c:
        # one statement with it on, a SELECT and an INSERT with it off
        err = refused(c.query("select 'x\\'' ; insert into pc_rows values (3, null) --'"),
                      "42501", "standard_conforming_strings")
        assert "standard_conforming_strings" in err["M"]
    assert table_rows(dconn, "pc_rows") == [(1, "a"), (2, "b")]


def test_psycopg2_with_standard_conforming_strings_off(deny, dconn, reset_tables):
    """A driver that quotes for the session's setting (psycopg2 reads it from the server)."""
    conn = psycopg2.connect(deny.dsn())
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute("set standard_conforming_strings = off")
            cur.execute("insert into pc_rows values (%s, %s)", (3, "back\\slash 'quote'"))
            cur.execute("select v from pc_rows where id = 3")
            assert cur.fetchone()[0] == "back\\slash 'quote'"
    finally:
        conn.close()
