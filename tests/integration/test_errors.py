"""Errors arrive exactly as PostgreSQL sends them: SQLSTATE, position, every field; a FATAL ends
the connection."""
import psycopg2
import pytest

from pgwp import describe, only_error, proxy_only, rfq, rows


def error_via(target, sql, **startup):
    with target.raw(**startup) as c:
        msgs = c.query(sql)
        assert rfq(msgs) == "I", msgs
        err = only_error(msgs)
        # the session stays usable after an error
        assert rows(c.query("select 'ok'")) == [("ok",)]
    return err


def test_syntax_error_with_position(proxy, direct):
    err = error_via(proxy, "select * fro items")
    assert (err["S"], err["V"], err["C"]) == ("ERROR", "ERROR", "42601")
    assert err["M"] == 'syntax error at or near "fro"' and err["P"] == "10"
    assert err == error_via(direct, "select * fro items")


def test_division_by_zero(proxy, direct):
    err = error_via(proxy, "select 1/0")
    assert (err["C"], err["M"]) == ("22012", "division by zero")
    assert err == error_via(direct, "select 1/0")


def test_permission_denied_as_dsn_role(app_proxy):
    # Through the proxy the client may claim any user: the DSN's role (app) is what counts.
    user = "postgres" if app_proxy.is_proxy else "app"
    with app_proxy.raw(user=user) as c:
        assert rows(c.query("select current_user, session_user")) == [("app", "app")]
        msgs = c.query("select * from secret_t")
        err = only_error(msgs)
        assert (err["C"], err["M"]) == ("42501", "permission denied for table secret_t")
        assert rfq(msgs) == "I"
        err = only_error(c.query("create role sneaky superuser"))
        assert err["C"] == "42501"


@pytest.mark.parametrize("sql, code, fields", [
    ("insert into items (name) values ('apple')", "23505", "stnD"),
    ("update items set qty = -1 where name = 'apple'", "23514", "stnD"),
    ("insert into items (id, name) values (100, null)", "23502", "stcD"),
    ("insert into sales.orders (id, item_id) values (1, 999)", "23503", "stnD"),
])
def test_constraint_violation_fields_identical(proxy, direct, sql, code, fields):
    err = error_via(proxy, sql)
    assert err["C"] == code
    assert set(fields) <= set(err), err
    assert err == error_via(direct, sql)


@pytest.mark.parametrize("sql", [
    "do $$ begin perform 1/0; end $$",  # CONTEXT (W)
    "do $$ begin raise exception using message = 'custom', detail = 'd', hint = 'h', "
    "errcode = 'P1234', schema = 's', table = 't', column = 'c', constraint = 'k', "
    "datatype = 'dt'; end $$",
    "select 'été'::int",  # non-ASCII text in the message
    "select * from items where nope = 1",  # undefined column with position
    "select ('x' || repeat('y', 5000))::int",  # a long message
])
def test_error_fields_identical(proxy, direct, sql):
    assert error_via(proxy, sql) == error_via(direct, sql)


def test_psycopg2_sees_sqlstate_and_diagnostics(proxy):
    conn = proxy.connect()
    try:
        with conn.cursor() as cur:
            with pytest.raises(psycopg2.errors.UniqueViolation) as exc:
                cur.execute("insert into items (name) values (%s)", ("apple",))
        diag = exc.value.diag
        assert (diag.sqlstate, diag.constraint_name, diag.table_name, diag.schema_name) == (
            "23505", "items_name_key", "items", "public")
        assert diag.message_detail == "Key (name)=(apple) already exists."
        conn.rollback()
        with conn.cursor() as cur:
            cur.execute("select count(*) from items where name = 'apple'")
            assert cur.fetchone() == (1,)
    finally:
        conn.close()


@proxy_only  # PostgreSQL itself accepts SJIS: the proxy's refusal is the FATAL here
def test_no_ready_for_query_after_a_fatal(proxy):
    """PostgreSQL never sends ReadyForQuery after a FATAL ErrorResponse: the connection ends."""
    with proxy.raw() as c:
        c.query_send("set client_encoding = 'SJIS'")
        msgs = c.read_until_closed()
        fatal = [i for i, m in enumerate(msgs) if m.type == "E" and m.fields["S"] == "FATAL"]
        assert fatal
        assert "Z" not in [m.type for m in msgs[fatal[0]:]], describe(msgs)
