"""COPY relayed under the guardrails (`--copy allow`), cases 32-34 of the design brief's table
and its COPY requirements (shared/extended-protocol.md section 4): psql's \\copy, budgets on
CopyData both ways, CopyFail, COPY in the extended protocol (libpq's extra Sync), read-only
mode, `--deny copy`, psycopg 3 and asyncpg. With the default `--copy reject` COPY stays
refused with 0A000 (test_unsupported.py)."""
import asyncio

import asyncpg
import psycopg
import pytest

from pgwp import (audit_lines, both, errors, only_error, proxy_only, recreate, rfq, shape,
                  table_rows, tags, types)

pytestmark = proxy_only

COPY = ("--copy", "allow")
EXT = ("--extended-protocol", "allow")
N = 20000


@pytest.fixture
def big(dconn):
    recreate(dconn, "copy_big", "(id int, v text)")
    with dconn.cursor() as cur:
        cur.execute(f"insert into copy_big select g, 'row ' || g from generate_series(1, {N}) g")
    return "copy_big"


@pytest.fixture
def dest(dconn):
    def setup():
        recreate(dconn, "copy_dest", "(id int primary key, v text)")
    setup()
    return setup


def copy_data_rows(msgs):
    return [m.payload for m in msgs if m.type == "d"]


def assert_guardrail(err, code, rule):
    assert (err["S"], err["C"]) == ("ERROR", code), err
    assert err.get("D", "").startswith("rule:") and rule in err["D"], err


# -- psql \copy, compared with a direct psql


@pytest.mark.parametrize("fmt", ["text", "csv"])
def test_psql_backslash_copy_both_ways_same_as_direct(start_proxy, direct, dconn, tmp_path, fmt):
    p = start_proxy(*COPY)
    opts = " with (format csv, header)" if fmt == "csv" else ""
    recreate(dconn, "copy_src", "(id int, v text, n numeric)")
    with dconn.cursor() as cur:
        cur.execute("insert into copy_src select g, case when g % 7 = 0 then null else "
                    "'v,' || g || E'\\t\"q\"' end, g / 3.0 from generate_series(1, 3000) g")
    files = {}
    for name, t in (("direct", direct), ("proxy", p)):
        out = tmp_path / f"{name}.{fmt}"
        r = t.psql("-c", f"\\copy copy_src to '{out}'{opts}")
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() == "COPY 3000", r.stdout
        files[name] = out.read_bytes()
        recreate(dconn, f"copy_back_{name}", "(id int, v text, n numeric)")
        r = t.psql("-c", f"\\copy copy_back_{name} from '{out}'{opts}")
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() == "COPY 3000", r.stdout
    assert files["proxy"] == files["direct"]
    assert table_rows(dconn, "copy_back_proxy") == table_rows(dconn, "copy_back_direct") == \
        table_rows(dconn, "copy_src")


# -- 32: COPY TO STDOUT over the row budget


def test_32_copy_out_over_max_rows_is_54000(start_proxy, direct, big):
    p = start_proxy(*COPY)

    def script(c, proxied):
        return c.query(f"copy {big} to stdout")
    got, want = both(p, direct, script)
    assert_guardrail(only_error(got), "54000", "max-rows")
    assert types(got)[-2:] == "EZ" and rfq(got) == "I", shape(got)
    assert len(copy_data_rows(got)) <= 10000 and len(copy_data_rows(want)) == N
    assert "c" not in types(got)  # no CopyDone: the COPY did not complete for the client
    with p.raw() as c:
        assert tags(c.query("select 1")) == ["SELECT 1"]


def test_32_copy_out_truncated(start_proxy, direct, big):
    p = start_proxy(*COPY, "--on-limit", "truncate")

    def script(c, proxied):
        return c.query(f"copy {big} to stdout")
    got, want = both(p, direct, script, same=False)  # the truncation is the difference
    assert shape(got) == "HdcNCZ", shape(got)
    assert len(copy_data_rows(got)) == 10000
    assert copy_data_rows(got) == copy_data_rows(want)[:10000]
    warn = [m.fields for m in got if m.type == "N"][0]
    assert (warn["S"], warn["C"]) == ("WARNING", "01000"), warn
    assert tags(got) == ["COPY 10000"] and rfq(got) == "I"


def test_32_copy_out_in_the_extended_protocol(start_proxy, direct, big):
    p = start_proxy(*COPY, *EXT)

    def script(c, proxied):
        c.parse(f"copy {big} to stdout")
        c.bind()
        c.execute()
        c.sync()
        return c.read_until_rfq() + c.ext_query("select 'next'")
    got, want = both(p, direct, script)
    assert_guardrail(errors(got)[0], "54000", "max-rows")
    assert shape(got).endswith("EZ12TDCZ") and len(copy_data_rows(got)) <= 10000, shape(got)


# -- 33: COPY FROM STDIN


def copy_in(c, table, chunks, proxied=True):
    c.query_send(f"copy {table} from stdin")
    head = c.read_until("GEZ")
    if head[-1].type != "G":
        return head + (c.read_until_rfq() if head[-1].type != "Z" else [])
    for chunk in chunks:
        c.copy_data(chunk)
    c.copy_done()
    return head + c.read_until_rfq()


def test_33_copy_from_stdin_simple(start_proxy, direct, dconn, dest):
    p = start_proxy(*COPY)
    data = [b"".join(b"%d\tv%d\n" % (i, i) for i in range(k, k + 100)) for k in range(0, 1000, 100)]
    got, want = both(p, direct, lambda c, proxied: copy_in(c, "copy_dest", data), setup=dest)
    assert types(got) == "GCZ" and tags(got) == ["COPY 1000"] and rfq(got) == "I", got
    assert len(table_rows(dconn, "copy_dest")) == 1000


def test_33_copy_from_stdin_extended_with_libpq_syncs(start_proxy, direct, dconn, dest):
    """libpq's PQexecParams of a COPY FROM STDIN, then PQputCopyData/PQputCopyEnd: a Sync
    after Execute and another after CopyDone. Copy-in swallows the first; one Z, no hang."""
    p = start_proxy(*COPY, *EXT)

    def script(c, proxied):
        c.parse("copy copy_dest from stdin")
        c.bind()
        c.describe_portal()
        c.execute()
        c.sync()
        head = c.read_until("GEZ")
        c.copy_data(b"1\tone\n2\ttwo\n")
        c.copy_done()
        c.sync()
        out = head + c.read_until_rfq()
        more, _ = c.read_all(timeout=0.5)  # nothing after the one ReadyForQuery
        return out + more + c.query("select count(*) from copy_dest")
    got, want = both(p, direct, script, setup=dest)
    assert types(got) == "12nGCZTDCZ", got
    assert tags(got)[0] == "COPY 2" and table_rows(dconn, "copy_dest") == [(1, "one"), (2, "two")]


def test_33_copy_to_a_missing_table_in_the_extended_protocol(start_proxy, direct):
    p = start_proxy(*COPY, *EXT)

    def script(c, proxied):
        c.parse("copy copy_missing_table from stdin")
        c.bind()
        c.execute()
        c.sync()
        return c.read_until_rfq() + c.ext_query("select 'next'")
    got, want = both(p, direct, script)
    # PostgreSQL looks the table up when the COPY executes: Parse and Bind succeed
    assert types(got) == "12EZ12TDCZ", got
    assert errors(got)[0]["C"] == "42P01"


# -- 34: copy-in budget and CopyFail


def test_34_copy_in_over_max_bytes(start_proxy, direct, dconn, dest):
    p = start_proxy(*COPY, "--max-bytes", "100kB")
    chunks = [b"".join(b"%d\t%s\n" % (i, b"x" * 90) for i in range(k, k + 1000))
              for k in range(0, 11000, 1000)]  # about 1 MB
    got, want = both(p, direct, lambda c, proxied: copy_in(c, "copy_dest", chunks),
                     setup=dest)
    assert_guardrail(only_error(got), "54000", "max-bytes")
    assert types(got) == "GEZ" and rfq(got) == "I", got
    assert tags(want) == ["COPY 11000"]
    dest()
    with p.raw() as c:
        got = copy_in(c, "copy_dest", chunks)
        assert only_error(got)["C"] == "54000"
        assert tags(c.query("select count(*) from copy_dest")) == ["SELECT 1"]
    assert table_rows(dconn, "copy_dest") == []


def test_34_client_copy_fail(start_proxy, direct, dconn, dest):
    p = start_proxy(*COPY)

    def script(c, proxied):
        c.query_send("copy copy_dest from stdin")
        out = c.read_until("GEZ")
        c.copy_data(b"1\tone\n")
        c.copy_fail("client gave up")
        return out + c.read_until_rfq()
    got, want = both(p, direct, script, setup=dest)
    assert types(got) == "GEZ", got
    err = only_error(got)
    assert err["C"] == "57014" and err["M"].startswith("COPY from stdin failed: client gave up")
    assert err["M"] == only_error(want)["M"]
    assert table_rows(dconn, "copy_dest") == []


# -- policy: read-only, --deny copy


def test_read_only_refuses_copy_from_and_allows_copy_to(start_proxy, direct, dconn, dest):
    with dconn.cursor() as cur:
        cur.execute("insert into copy_dest values (1, 'one')")
    p = start_proxy(*COPY, "--read-only")
    with p.raw() as c:
        got = c.query("copy copy_dest from stdin")
        assert types(got) == "EZ", got
        assert_guardrail(only_error(got), "25006", "read-only")
        got = c.query("copy copy_dest to stdout")
        assert (types(got), copy_data_rows(got), tags(got)) == ("HdcCZ", [b"1\tone\n"],
                                                                ["COPY 1"]), got
    assert table_rows(dconn, "copy_dest") == [(1, "one")]


@pytest.mark.parametrize("sql", ["copy copy_dest from stdin", "copy copy_dest to stdout",
                                 "copy (select 1) to stdout"])
def test_deny_copy_refuses_both_directions(start_proxy, dest, sql):
    p = start_proxy(*COPY, "--deny", "copy")
    with p.raw() as c:
        got = c.query(sql)
        assert types(got) == "EZ", got
        assert_guardrail(only_error(got), "42501", "copy")
        assert tags(c.query("select 1")) == ["SELECT 1"]


def test_copy_does_not_let_later_statements_past_the_policy(start_proxy, dconn):
    """A COPY's own verdict must not decide the whole Query: the DROP after it is refused."""
    recreate(dconn, "copy_victim", "(id int)")
    p = start_proxy(*COPY, "--deny", "drop")
    with p.raw() as c:
        got = c.query("copy (select 1) to stdout; drop table copy_victim")
        assert types(got) == "EZ", got
        assert_guardrail(only_error(got), "42501", "drop")
    assert table_rows(dconn, "copy_victim") == []


# -- drivers


def test_psycopg3_copy_both_ways(start_proxy, dconn, dest):
    p = start_proxy(*COPY, *EXT)
    with psycopg.connect(p.dsn(), autocommit=True) as conn:
        with conn.cursor() as cur:
            with cur.copy("copy copy_dest (id, v) from stdin") as cp:
                for i in range(500):
                    cp.write_row((i, f"v{i}"))
            assert cur.rowcount == 500
            out = bytearray()
            with cur.copy("copy copy_dest to stdout") as cp:
                for block in cp:
                    out += block
    assert out.count(b"\n") == 500 and out.startswith(b"0\tv0\n")
    assert len(table_rows(dconn, "copy_dest")) == 500


async def asyncpg_copy(target):
    conn = await asyncpg.connect(host=target.host, port=target.port, user=target.user,
                                 database=target.dbname, timeout=10)
    try:
        done = await conn.copy_records_to_table("copy_dest", records=[(i, f"r{i}")
                                                                      for i in range(300)])
        chunks = []

        async def sink(data):
            chunks.append(bytes(data))
        out = await conn.copy_from_table("copy_dest", output=sink)
        return done, out, b"".join(chunks)
    finally:
        await conn.close()


def test_asyncpg_copy_records_and_copy_from_table(start_proxy, direct, dconn, dest):
    p = start_proxy(*COPY, *EXT)
    want = asyncio.run(asyncpg_copy(direct))
    dest()
    got = asyncio.run(asyncpg_copy(p))
    assert got == want
    assert got[0] == "COPY 300" and got[1] == "COPY 300" and got[2].count(b"\n") == 300
    assert len(table_rows(dconn, "copy_dest")) == 300


def test_copy_default_reject_is_unchanged(start_proxy, dest):
    """The contract of test_unsupported.py, through a proxy that allows the extended
    protocol but not COPY."""
    p = start_proxy(*EXT)
    with p.raw() as c:
        got = c.query("copy copy_dest from stdin")
        assert types(got) == "EZ" and only_error(got)["C"] == "0A000", got
        got = c.ext_query("copy copy_dest to stdout")
        assert only_error(got)["C"] == "0A000" and rfq(got) == "I", got
        assert tags(c.query("select 1")) == ["SELECT 1"]


def test_copy_is_audited_with_protocol_copy(start_proxy, dconn, dest, tmp_path):
    path = tmp_path / "audit.jsonl"
    p = start_proxy(*COPY, "--audit-log", str(path))
    with p.raw() as c:
        got = copy_in(c, "copy_dest", [b"1\tone\n2\ttwo\n"])
        assert tags(got) == ["COPY 2"], got
        got = c.query("copy copy_dest to stdout")
        assert tags(got) == ["COPY 2"] and len(copy_data_rows(got)) == 2, got
        c.query("select 1")
    recs = audit_lines(path, 3)
    assert [(r["protocol"], r["outcome"], r["statement"]) for r in recs] == [
        ("copy", "ok", "copy copy_dest from stdin"),
        ("copy", "ok", "copy copy_dest to stdout"),
        ("simple", "ok", "select 1")], recs
    assert recs[1]["rows"] == 2
