"""Extended query protocol (`--extended-protocol allow`): how requests are answered, cases 21-28
of the design brief's table, plus pipelines, clients that Flush without Sync, messages the
backend sends unasked in the middle of a pipeline, and FATAL 08P01 for malformed messages.
Each raw sequence is replayed against PostgreSQL directly too (pgwp.both)."""
import struct

import pytest

from pgwp import (FLUSH, SYNC, bind_message, both, cstr, errors, execute_message, frame,
                  only_error, parse_message, proxy_only, recreate, rfq, rows, scalar,
                  send_in_thread, shape, table_rows, tags, types, BOUND)

pytestmark = proxy_only

EXT = ("--extended-protocol", "allow")


@pytest.fixture
def ext(start_proxy):
    return start_proxy(*EXT)


# -- 21-25: clients that flush, describe, close, run nothing


def test_21_prepare_with_flush_and_no_sync(ext, direct):
    """asyncpg's prepare: Parse + Describe(S) + Flush, the answers before any Sync."""
    def script(c, proxied):
        c.parse("select $1::int as a, $2::text as b", name="__asyncpg_stmt_1__")
        c.describe_statement("__asyncpg_stmt_1__")
        c.flush()
        out = c.read_until("Tn")
        c.bind(stmt="__asyncpg_stmt_1__", params=["7", "x"])
        c.execute()
        c.sync()
        return out + c.read_until_rfq()
    got, want = both(ext, direct, script)
    assert types(got) == "1tT2DCZ", got
    assert rows(got) == [("7", "x")] and rfq(got) == "I"


def test_22_cursor_pages_with_flush(ext, direct):
    """node pg-cursor / `rows`: Execute(n) + Flush until CommandComplete, no Sync between."""
    def script(c, proxied):
        c.parse("select g from generate_series(1, 1000) g")
        c.bind()
        out = []
        for _ in range(20):
            c.execute(max_rows=100)
            c.flush()
            out += c.read_until("sCE")
            if out[-1].type != "s":
                break
        c.sync()
        return out + c.read_until_rfq()
    got, want = both(ext, direct, script)
    assert shape(got) == "12" + "Ds" * 10 + "CZ", shape(got)
    assert [int(r[0]) for r in rows(got)] == list(range(1, 1001))


def test_23_describe_of_ddl_and_of_a_statement_without_parameters(ext, direct):
    def script(c, proxied):
        c.parse("create temp table ext_ddl (id int)")
        c.bind()
        c.describe_portal()
        c.execute()
        c.sync()
        out = c.read_until_rfq()
        c.parse("create temp table ext_ddl2 (id int)", name="ddl")
        c.describe_statement("ddl")
        c.sync()
        return out + c.read_until_rfq()
    got, want = both(ext, direct, script)
    assert types(got) == "12nCZ1tnZ", got
    t = [m for m in got if m.type == "t"][0]
    assert struct.unpack("!H", t.payload[:2])[0] == 0  # ParameterDescription of 0 parameters


def test_24_close_of_a_denied_or_unknown_name(start_proxy, direct):
    p = start_proxy(*EXT, "--deny", "drop")

    def script(c, proxied):
        c.parse("drop table items" if proxied else "drop tabel items", name="S_d")
        c.sync()
        out = c.read_until_rfq()
        c.close_statement("S_d")
        c.close_statement("never_prepared")
        c.close_portal("no_portal")
        c.sync()
        return out + c.read_until_rfq()
    got, want = both(p, direct, script)
    assert types(got) == "EZ333Z", got
    assert only_error(got)["C"] == "42501"


def test_25_empty_query(ext, direct):
    def script(c, proxied):
        c.parse("")
        c.bind()
        c.execute()
        c.sync()
        return c.read_until_rfq()
    got, want = both(ext, direct, script)
    assert types(got) == "12IZ", got


# -- 26: strict parsing, as PostgreSQL's own complaints (PostgreSQL answers ERROR and skips to
# Sync; the proxy ends the session: it cannot tell what else such a client sends)


MALFORMED = {
    "parse_trailing_bytes": (frame("P", cstr("") + cstr("select 1") + struct.pack("!H", 0) +
                                   b"x"), "invalid message format"),
    "parse_missing_nul": (frame("P", cstr("") + b"select 1"), "invalid string in message"),
    "bind_format_count_mismatch": (
        frame("B", cstr("") + cstr("") + struct.pack("!HHHH", 2, 0, 0, 1) +
              struct.pack("!I", 1) + b"1" + struct.pack("!H", 0)), "bind message has"),
    "bind_trailing_bytes": (bind_message() + b"", None),  # replaced below
    "describe_bad_subtype": (frame("D", b"X" + cstr("")), "invalid DESCRIBE message subtype"),
    "close_bad_subtype": (frame("C", b"X" + cstr("")), "invalid CLOSE message subtype"),
    "execute_trailing_bytes": (frame("E", cstr("") + struct.pack("!I", 0) + b"z"),
                               "invalid message format"),
    "sync_with_a_body": (frame("S", b"x"), "invalid message format"),
    "flush_with_a_body": (frame("H", b"x"), "invalid message format"),
}
MALFORMED["bind_trailing_bytes"] = (frame("B", bind_message()[5:] + b"zz"),
                                    "invalid message format")


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_26_malformed_messages_are_fatal_08p01(ext, direct, case):
    data, complaint = MALFORMED[case]
    prefix = parse_message("select 1") if case.startswith("bind") else b""
    with direct.raw() as d:
        d.send_raw(prefix + data + SYNC)
        want = [e for e in errors(d.read_until_rfq())]
    assert want[-1]["C"] == "08P01" and want[-1]["M"].startswith(complaint), want
    with ext.raw() as c:
        c.send_raw(prefix + data + SYNC)
        msgs, closed = c.read_all()
    assert closed, msgs
    err = errors(msgs)[-1]
    assert (err["S"], err["C"]) == ("FATAL", "08P01"), msgs
    assert err["M"].startswith(complaint), (err, want[-1])
    # a ParseComplete still in the backend's buffer may or may not have come out before
    assert types(msgs) in (("E", "1E") if prefix else ("E",)), msgs


def test_26_oversized_bind_is_fatal(start_proxy):
    p = start_proxy(*EXT, "--max-message-size", "1kB")
    with p.raw() as c:
        c.parse("select $1::text")
        c.bind(params=["x" * 4096])
        c.sync()
        msgs, closed = c.read_all()
    assert closed, msgs
    err = errors(msgs)[-1]
    assert (err["S"], err["C"]) == ("FATAL", "08P01"), msgs
    assert "--max-message-size" in err["M"], err


# -- 27-28


def test_27_query_after_a_denial_gets_no_reply(start_proxy, direct, dconn):
    recreate(dconn, "ext_q", "(id int)")
    p = start_proxy(*EXT, "--deny", "drop")

    def script(c, proxied):
        c.parse("drop table ext_q" if proxied else "drop tabel ext_q")
        c.bind()
        c.execute()
        c.query_send("insert into ext_q values (1)")
        c.sync()
        out = c.read_until_rfq()
        more, _ = c.read_all(timeout=0.5)  # nothing after the one ReadyForQuery
        return out + more + c.query("select count(*) from ext_q")
    got, want = both(p, direct, script)
    assert types(got) == "EZTDCZ", got
    assert only_error(got)["C"] == "42501"
    assert rows(got) == [("0",)]


def test_28_deferred_constraint_fails_at_sync(ext, direct, dconn):
    with dconn.cursor() as cur:
        cur.execute("drop table if exists ext_child, ext_parent;"
                    "create table ext_parent (id int primary key);"
                    "create table ext_child (pid int references ext_parent "
                    "deferrable initially deferred)")

    def script(c, proxied):
        c.parse("insert into ext_child values (99)")
        c.bind()
        c.execute()
        c.sync()
        return c.read_until_rfq() + c.ext_query("select 'in step'")
    got, want = both(ext, direct, script)
    assert types(got) == "12CEZ12TDCZ", got
    assert errors(got)[0]["C"] == "23503"
    assert rows(got) == [("in step",)] and rfq(got) == "I"
    assert table_rows(dconn, "ext_child") == []


# -- pipelines


def test_query_inside_an_open_segment_commits_it(ext, direct, dconn):
    """As in PostgreSQL: a simple Query runs in the segment's implicit transaction and commits
    it (the proxy never sends one of its own there)."""
    def setup():
        recreate(dconn, "ext_seg", "(id int)")

    def script(c, proxied):
        c.parse("insert into ext_seg values (1)")
        c.bind()
        c.execute()
        c.flush()
        out = c.read_until("C")
        seen_before = scalar(dconn, "select count(*) from ext_seg")
        out += c.query("select 'q'")
        return out, seen_before, scalar(dconn, "select count(*) from ext_seg")
    (got, before, after), (want, dbefore, dafter) = both(ext, direct, script, setup=setup,
                                                        same=False)
    assert types(got) == types(want) == "12CTDCZ", (got, want)
    assert (before, after) == (dbefore, dafter) == (0, 1)


def test_untracked_messages_in_the_middle_of_a_pipeline(ext, direct):
    """ParameterStatus, NoticeResponse and NotificationResponse belong to no request: they are
    relayed where they come and the answers around them stay matched."""
    def script(c, proxied):
        out = c.query("listen ext_chan")
        data = (parse_message("set application_name = 'ext_pipe'") + bind_message() +
                execute_message() +
                parse_message("do $$begin raise notice 'hello'; end$$") + bind_message() +
                execute_message() +
                parse_message("select pg_notify('ext_chan', 'ping')") + bind_message() +
                execute_message() +
                parse_message("select 42") + bind_message() + execute_message() + SYNC)
        c.send_raw(data)
        return out + c.read_until_rfq() + c.ext_query("select 43")
    got, want = both(ext, direct, script)
    assert types(got) == types(want), (types(got), types(want))
    assert "S" in types(got) and "N" in types(got) and "A" in types(got), types(got)
    assert rows(got) == [("",), ("42",), ("43",)]
    assert [n["M"] for n in (m.fields for m in got if m.type == "N")] == ["hello"]


def test_executemany_pipeline_of_10000_binds(start_proxy, direct, dconn):
    """One Parse, 10,000 Bind/Execute pairs, one Sync: the FIFO (20,002 entries) and the
    unnamed portal, replaced at every Bind while earlier Executes are in flight, take it."""
    p = start_proxy(*EXT, "--max-rows", "100")
    n = 10000
    data = parse_message("insert into ext_many values ($1::int)") + b"".join(
        bind_message(params=[str(i)]) + execute_message() for i in range(n)) + SYNC

    def setup():
        recreate(dconn, "ext_many", "(id int)")

    def script(c, proxied):
        t = send_in_thread(c, data)
        out = c.read_until_rfq()
        t.join(BOUND)
        return out, table_rows(dconn, "ext_many")
    (got, stored), (want, dstored) = both(p, direct, script, setup=setup, same=False)
    assert types(got) == types(want) == "1" + "2C" * n + "Z"
    assert stored == dstored == [(i,) for i in range(n)]


def test_unnamed_portal_rebound_while_executes_are_in_flight(start_proxy, direct):
    """Each Bind to "" starts a new portal and a new run: three runs of 4 rows under
    --max-rows 5 all complete, in order."""
    p = start_proxy(*EXT, "--max-rows", "5")

    def script(c, proxied):
        c.parse("select g + $1::int from generate_series(1, 4) g")
        for base in (0, 10, 20):
            c.bind(params=[str(base)])
            c.execute()
        c.sync()
        return c.read_until_rfq()
    got, want = both(p, direct, script)
    assert shape(got) == "12DC2DC2DCZ", shape(got)
    assert [int(r[0]) for r in rows(got)] == [1, 2, 3, 4, 11, 12, 13, 14, 21, 22, 23, 24]


def test_insert_then_failing_then_insert_commits_nothing(ext, direct, dconn):
    def setup():
        recreate(dconn, "ext_three", "(id int)")

    def script(c, proxied):
        for sql in ("insert into ext_three values (1)", "insert into ext_three values (1/0)",
                    "insert into ext_three values (3)"):
            c.parse(sql)
            c.bind()
            c.execute()
        c.sync()
        return c.read_until_rfq()
    got, want = both(ext, direct, script, setup=setup)
    assert types(got) == "12C1EZ" and only_error(got)["C"] == "22012", got
    assert table_rows(dconn, "ext_three") == []


def test_many_segments_pipelined_before_reading(ext, direct):
    def script(c, proxied):
        data = b"".join(parse_message(f"select {i}") + bind_message() + execute_message() + SYNC
                        for i in range(200))
        t = send_in_thread(c, data)
        out = []
        for _ in range(200):
            out += c.read_until_rfq()
        t.join(BOUND)
        return out
    got, want = both(ext, direct, script)
    assert rows(got) == [(str(i),) for i in range(200)]
    assert tags(got) == ["SELECT 1"] * 200
