"""The policy parse is bounded: no text of any size or shape crashes the proxy, takes its
memory or stalls its other sessions; over --max-parse-size a rule that needs the parse refuses
with 54001, and without rules nothing is parsed at all."""
import pytest

from pgwp import (BOUND, SANITIZED, SCALE, describe, errors, only_error, poll, proxy_only, rfq,
                  rows)

pytestmark = proxy_only

# ~10 MB: hundreds of thousands of nested joins. libpg_query's recursive JSON output of this
# overflowed the worker stack; without rules, the word "copy" in the text forced that parse.
CROSS_JOIN = "SELECT 1 FROM copy_t" + " CROSS JOIN copy_t" * 560_000


@pytest.fixture(scope="module", autouse=True)
def copy_t(direct):
    conn = direct.connect(autocommit=True)
    with conn.cursor() as cur:
        cur.execute("drop table if exists copy_t; create table copy_t (a int)")
    conn.close()


def vm_hwm_kb(pid):
    """Peak resident memory of a process since it started (VmHWM)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmHWM for pid {pid}")


def assert_max_parse_size(msgs, ceiling):
    err = only_error(msgs)
    assert (err["S"], err["C"]) == ("ERROR", "54001"), err
    assert f"--max-parse-size of {ceiling} bytes" in err["M"], err
    assert err["D"] == "rule: max-parse-size", err
    assert err.get("H"), err
    assert [m for m in msgs if m.type in "CDT"] == [], f"something ran: {describe(msgs)}"
    assert rfq(msgs) == "I"


def test_cross_join_chain_without_policy_goes_to_postgresql(start_proxy):
    """Without rules the text is not parsed: PostgreSQL answers (its own stack limit)."""
    p = start_proxy()
    with p.raw() as c, p.raw() as other:
        msgs = c.query(CROSS_JOIN)
        err = only_error(msgs)
        assert (err["C"], err["M"]) == ("54001", "stack depth limit exceeded"), err
        assert rfq(msgs) == "I"
        assert rows(c.query("select 'alive'")) == [("alive",)]
        assert rows(other.query("select 'other'")) == [("other",)]
    assert p.alive()


def test_cross_join_chain_with_a_rule_is_refused_by_the_ceiling(start_proxy):
    p = start_proxy("--deny", "drop")
    with p.raw() as c, p.raw() as other:
        assert_max_parse_size(c.query(CROSS_JOIN), 1000000)
        assert rows(c.query("select 'alive'")) == [("alive",)]
        assert rows(other.query("select 'other'")) == [("other",)]
    assert p.alive()


# Every construct that nests without bound, as deep as the default ceiling allows: the guard
# parses each (stacks are sized for it) and PostgreSQL gives its own answer.
AT_CEILING = {
    "plus-chain": "select 1" + "+1" * 499_000,
    "cast-chain": "select 1" + "::int" * 199_000,
    "cross-join": "select 1 from copy_t" + " cross join copy_t" * 55_000,
    "union-chain": "select 1" + " union select 1" * 66_000,
    "at-time-zone": "select now()" + " at time zone 'utc'" * 52_000,
    "not-then-chain": "select " + "not " * 9_000 + "true" + " and true" * 100_000,
}


@pytest.mark.parametrize("shape", list(AT_CEILING))
def test_deep_statement_at_the_ceiling(start_proxy, shape):
    sql = AT_CEILING[shape]
    assert len(sql) <= 1_000_000
    p = start_proxy("--deny", "drop")
    with p.raw() as c:
        msgs = c.query(sql)
        assert msgs and msgs[-1].type == "Z", f"session ended: {describe(msgs)}"
        for e in errors(msgs):  # PostgreSQL's own answer, never the guard's ceiling
            assert e["S"] == "ERROR" and e.get("D") != "rule: max-parse-size", e
        assert rows(c.query("select 'still here'")) == [("still here",)]
    assert p.alive()


def test_max_parse_size_option(start_proxy):
    p = start_proxy("--deny", "drop", "--max-parse-size", "2kB")
    under = "select '" + "x" * 1900 + "' = '' as v"
    over = "select '" + "x" * 2100 + "' = '' as v"
    with p.raw() as c:
        assert rows(c.query(under)) == [("f",)]
        assert_max_parse_size(c.query(over), 2000)
        assert rows(c.query("select 'alive'")) == [("alive",)]
    # without a rule nothing is parsed: the ceiling does not apply
    q = start_proxy("--max-parse-size", "2kB")
    with q.raw() as c:
        assert rows(c.query(over)) == [("f",)]


def test_nested_set_config_is_decided_in_linear_time(start_proxy):
    """set_config(set_config(...)) once cost two seconds per 69 kB; ten pipelined copies froze
    every other session on the worker for twenty. The decisions are linear now: another
    session on the same worker is answered within a few seconds (a bound, not a timing)."""
    p = start_proxy("--read-only", "--workers", "1")
    sql = "select " + "set_config(" * 3000 + "'a'" + ",'b',false)" * 3000
    assert len(sql) > 40_000
    with p.raw() as attacker, p.raw() as other:
        for _ in range(10):
            attacker.query_send(sql)
        other.sock.settimeout(5 * SCALE)
        assert rows(other.query("select 'served'")) == [("served",)]
        for _ in range(10):
            msgs = attacker.read_until_rfq()
            err = only_error(msgs)
            assert (err["C"], err["D"]) == ("42501", "rule: set-config"), err
    assert p.alive()


def test_a_large_text_is_parsed_off_the_worker(start_proxy):
    """Texts over 16 kB are parsed by the parser threads: while one session's texts near the
    ceiling are parsed, another session on the same worker is answered first (an order, not a
    timing: on the worker's thread the first parse would hold it)."""
    p = start_proxy("--deny", "function:pg_sleep", "--workers", "1")
    big = "select " + "1," * 450_000 + "pg_sleep(0)"  # about half a second to parse
    with p.raw() as attacker, p.raw() as other:
        for _ in range(3):
            attacker.query_send(big)
        other.query_send("select 'served'")
        got = other.read_until_rfq()
        attacker.sock.setblocking(False)
        try:
            early = attacker.sock.recv(1)
        except BlockingIOError:
            early = b""
        attacker.sock.setblocking(True)
        assert rows(got) == [("served",)] and early == b"", (got, early)
        for _ in range(3):
            err = only_error(attacker.read_until_rfq())
            assert (err["C"], err["D"]) == ("42501", "rule: deny:function:pg_sleep"), err
    assert p.alive()


@pytest.mark.skipif(SANITIZED, reason="the sanitizer's allocator is not the proxy's")
def test_memory_of_a_decision_is_bounded_by_the_ceiling(start_proxy):
    """A 5 MB SELECT 1,1,1,... took the proxy to 763 MB while it parsed. Over the ceiling it is
    refused unparsed; under it, one parse costs at most ~270 bytes per byte of text (the
    factor in docs/policy.md)."""
    p = start_proxy("--deny", "drop")
    pid = p.proc.pid
    with p.raw() as c:
        assert_max_parse_size(c.query("select 1" + ",1" * 2_500_000), 1000000)
        assert vm_hwm_kb(pid) < 100_000, vm_hwm_kb(pid)
        # a million bytes: parsed and allowed; PostgreSQL then refuses that many columns
        msgs = c.query("select 1" + ",1" * 499_000)
        assert only_error(msgs)["C"] == "54011", describe(msgs)
        assert vm_hwm_kb(pid) < 100_000 + 320_000 + 64_000, vm_hwm_kb(pid)
        assert rows(c.query("select 'alive'")) == [("alive",)]


def test_audit_redaction_is_bounded_too(start_proxy, tmp_path):
    path = tmp_path / "audit.jsonl"
    p = start_proxy("--audit-log", str(path), "--audit-redact", "--max-parse-size", "2kB")
    with p.raw() as c:
        assert rows(c.query("select '" + "s" * 3000 + "' = '' as v")) == [("f",)]
        assert rows(c.query("select 'small secret' = '' as v")) == [("f",)]
    # the audit writer is a thread of its own: wait for both records
    text = poll(lambda: (lambda t: t if t.count("\n") >= 2 else None)(path.read_text()),
                what="two audit records")
    assert "<statement larger than --max-parse-size redacted>" in text
    assert "select $1 = $2 as v" in text
    assert "secret" not in text and "sss" not in text


def test_proxy_survives_every_shape_pipelined(start_proxy):
    """All of the shapes above back to back in one pipeline, twice, on one worker."""
    p = start_proxy("--deny", "drop", "--workers", "1")
    with p.raw() as c:
        for sql in list(AT_CEILING.values()) * 2:
            c.query_send(sql)
        for _ in range(len(AT_CEILING) * 2):
            c.sock.settimeout(BOUND * 6)
            msgs = c.read_until_rfq()
            assert msgs and msgs[-1].type == "Z", describe(msgs)
        assert rows(c.query("select 'alive'")) == [("alive",)]
    assert p.alive()
