"""Extended query protocol (`--extended-protocol allow`) and the proxy's configuration: a
reload between Parse and Bind (case 11), read-only mode, the audit of portal runs and denials
with their Bind parameters (case 36), and a client's CancelRequest (case 35)."""
import signal
import threading

import pytest

from pgwp import (BOUND, SYNC, audit_lines, bind_message, both, cancel_request, errors,
                  execute_message, only_error, parse_message, poll, proxy_only, recreate, rfq,
                  rows, table_rows, types, backends_detail, marker)

pytestmark = proxy_only

EXT = ("--extended-protocol", "allow")


def events(proxy, name):
    return sum(1 for line in proxy.log().splitlines() if f" {name}:" in line)


def reload(proxy, path, text):
    seen = events(proxy, "reloaded")
    with open(path, "w") as f:
        f.write(text)
    proxy.signal(signal.SIGHUP)
    poll(lambda: events(proxy, "reloaded") > seen, what="a reloaded log event")


# -- 11: statements prepared before a reload are decided again at their next Bind


def test_11_reload_between_parse_and_bind_refuses_the_prepared_delete(start_proxy, tmp_path,
                                                                      dconn):
    recreate(dconn, "ext_keep", "(id int)")
    with dconn.cursor() as cur:
        cur.execute("insert into ext_keep values (1), (2)")
    ini = str(tmp_path / "proxy.ini")
    audit = str(tmp_path / "audit.jsonl")
    with open(ini, "w") as f:
        f.write("[pgwire-proxy]\nextended_protocol = allow\n")
    p = start_proxy("--config", ini, "--audit-log", audit)
    with p.raw() as c:
        c.parse("delete from ext_keep where id > $1::int", name="S_1")
        c.sync()
        assert types(c.read_until_rfq()) == "1Z"
        reload(p, ini, "[pgwire-proxy]\nextended_protocol = allow\ndeny = delete\n")
        c.bind(stmt="S_1", params=["0"])
        c.execute()
        c.sync()
        got = c.read_until_rfq()
        assert types(got) == "EZ" and rfq(got) == "I", got
        err = only_error(got)
        assert err["C"] == "42501" and "delete" in err["D"], err
        # the statement stays refused, and the session stays usable
        c.bind(stmt="S_1", params=["0"])
        c.execute()
        c.sync()
        assert only_error(c.read_until_rfq())["C"] == "42501"
        assert rows(c.ext_query("select count(*) from ext_keep")) == [("2",)]
    assert table_rows(dconn, "ext_keep") == [(1,), (2,)]
    recs = [r for r in audit_lines(audit, 3) if r["outcome"] == "denied"]
    assert recs and recs[0]["statement"].startswith("delete from ext_keep"), recs
    assert recs[0]["rule"] == "deny:delete" and recs[0]["protocol"] == "extended", recs
    # the denial at Bind is recorded with the parameters the client bound
    assert recs[0].get("params") == ["0"], recs[0]


# -- read-only mode


def test_read_only_blocks_writes_and_the_setting_escape(start_proxy, direct, dconn):
    recreate(dconn, "ext_ro", "(id int)")
    p = start_proxy(*EXT, "--read-only")
    with p.raw() as c:
        got = c.ext_query("insert into ext_ro values (1)")
        assert only_error(got)["C"] == "25006" and rfq(got) == "I", got
        got = c.ext_query("select set_config('default_transaction_read_only', 'off', false)")
        err = only_error(got)
        assert err["C"] in ("25006", "42501") and err["D"].startswith("rule:"), err
        got = c.ext_query("select set_config($1, $2, false)",
                          params=["default_transaction_read_only", "off"])
        assert only_error(got)["C"] in ("25006", "42501"), got
        # a write inside an explicit block: the block fails as after any error
        assert rfq(c.query("begin")) == "T"
        got = c.ext_query("insert into ext_ro values (2)")
        assert only_error(got)["C"] == "25006" and rfq(got) == "E", got
        c.query("rollback")
        assert rows(c.ext_query("show default_transaction_read_only")) == [("on",)]
        assert rows(c.ext_query("select count(*) from ext_ro")) == [("0",)]
    assert table_rows(dconn, "ext_ro") == []


def test_read_only_pipelined_segments_are_answered_in_order(start_proxy, direct, dconn):
    """In read-only mode the proxy reads the next segment only after the previous one's
    ReadyForQuery (the session's access mode is known only then); a client that pipelines
    segments gets every answer, in order, a refused segment in its place."""
    recreate(dconn, "ext_ro2", "(id int)")
    p = start_proxy(*EXT, "--read-only")

    def script(c, proxied):
        texts = ["select 1", "insert into ext_ro2 values (1)" if proxied else "inzert x",
                 "select pg_sleep(0.2)", "select 3"]
        c.send_raw(b"".join(parse_message(t) + bind_message() + execute_message() + SYNC
                            for t in texts))
        out = []
        for _ in texts:
            out += c.read_until_rfq()
        return out
    got, want = both(p, direct, script)
    assert types(got) == "12DCZEZ12DCZ12DCZ", got
    assert only_error(got)["C"] == "25006"
    assert rows(got) == [("1",), ("",), ("3",)]
    assert table_rows(dconn, "ext_ro2") == []


# -- 36: audit


def _run_audited(p):
    with p.raw() as c:
        got = c.ext_query("select $1::text, $2::int, $3::text", params=["secret-val", "7", None])
        assert rows(got) == [("secret-val", "7", None)]
        c.parse("select $1::bytea")
        c.send("B", b"\0\0" + b"\0\x01\0\x01" + b"\0\x01" + b"\0\0\0\x03abc" + b"\0\0")
        c.execute()
        c.sync()
        assert types(c.read_until_rfq()) == "12DCZ"
        c.parse("drop table items")
        c.sync()
        assert only_error(c.read_until_rfq())["C"] == "42501"
        c.parse("select g from generate_series(1, 30) g", name="s30")
        c.bind(portal="cur", stmt="s30")
        for _ in range(3):
            c.execute("cur", 10)
        c.execute("cur", 10)
        c.sync()
        assert types(c.read_until_rfq()).count("s") == 3


def test_36_audit_of_runs_denials_and_parameters(start_proxy, tmp_path):
    path = str(tmp_path / "audit.jsonl")
    p = start_proxy(*EXT, "--audit-log", path, "--deny", "drop")
    _run_audited(p)
    recs = audit_lines(path, 4)
    assert len(recs) == 4, recs
    run, binary, denied, cursor = recs
    assert run["protocol"] == "extended" and run["outcome"] == "ok", run
    assert run["statement"] == "select $1::text, $2::int, $3::text" and run["rows"] == 1
    assert run["params"] == ["secret-val", "7", None] and run["executes"] == 1, run
    assert binary["params"] == [{"binary": 3}], binary
    assert (denied["outcome"], denied["sqlstate"], denied["rule"]) == \
        ("denied", "42501", "deny:drop"), denied
    assert denied["statement"] == "drop table items" and denied["protocol"] == "extended"
    # one record for the whole portal run, its four Executes counted
    assert (cursor["portal"], cursor["executes"], cursor["rows"]) == ("cur", 4, 30), cursor
    assert cursor["outcome"] == "ok"


def test_36_audit_redact_omits_parameters(start_proxy, tmp_path):
    path = str(tmp_path / "audit.jsonl")
    p = start_proxy(*EXT, "--audit-log", path, "--audit-redact", "--deny", "drop")
    _run_audited(p)
    recs = audit_lines(path, 4)
    with open(path) as f:
        text = f.read()
    assert "secret-val" not in text, text
    assert all("params" not in r for r in recs), recs
    assert recs[0]["statement"] == "select $1::text, $2::int, $3::text"


# -- 35: a client's CancelRequest


def wait_sleeping(dconn, app):
    """Polls until the backend named like app sleeps in pg_sleep: in the extended protocol the
    backend is 'active' from its Parse on, and a cancel that lands between two messages is
    dropped by PostgreSQL (the same race as on a direct connection)."""
    poll(lambda: any(w == "PgSleep" for _pid, _st, w, _q in backends_detail(dconn, app)),
         what=f"a backend named like {app!r} in pg_sleep")


def test_35_cancel_request_during_an_extended_pg_sleep(start_proxy, dconn):
    p = start_proxy(*EXT)
    app = marker("ext-cancel")
    with p.raw(application_name=app) as c:
        c.parse("select pg_sleep(30)")
        c.bind()
        c.execute()
        c.sync()
        wait_sleeping(dconn, app)
        cancel_request(p, c.backend_key)
        got = c.read_until_rfq()
        assert types(got) == "12EZ" and rfq(got) == "I", got
        err = only_error(got)
        assert err["C"] == "57014" and "user request" in err["M"], err
        assert rows(c.ext_query("select 'next segment'")) == [("next segment",)]
        assert rows(c.query("select 'and a query'")) == [("and a query",)]


def test_35_cancel_inside_a_block_fails_it(start_proxy, dconn):
    recreate(dconn, "ext_cancel", "(id int)")
    p = start_proxy(*EXT)
    app = marker("ext-cancel-tx")
    with p.raw(application_name=app) as c:
        c.query("begin")
        c.ext_query("insert into ext_cancel values (1)")
        c.parse("select pg_sleep(30)")
        c.bind()
        c.execute()
        c.sync()
        wait_sleeping(dconn, app)
        cancel_request(p, c.backend_key)
        got = c.read_until_rfq()
        assert only_error(got)["C"] == "57014" and rfq(got) == "E", got
        assert c.query("commit")[0].payload.rstrip(b"\0") == b"ROLLBACK"
    assert table_rows(dconn, "ext_cancel") == []
