"""What a client's startup values can do upstream: exactly the one setting each names, with the
value PostgreSQL itself would see (every byte 0x00-0xFF, compared with PostgreSQL directly),
nothing outside the allowlist;
what the upstream's application_name, the audit trail and the JSON log make of hostile user
names."""
import json
import struct

import pytest

from pgwp import Closed, RawClient, describe, only_error, poll, proxy_only, rows

pytestmark = proxy_only

# the client values the proxy forwards, and a valid base value for each
FORWARDED = {
    "TimeZone": b"UTC",
    "DateStyle": b"ISO, DMY",
    "IntervalStyle": b"postgres",
    "extra_float_digits": b"1",
    "client_encoding": b"UTF8",
}
# settings a smuggled "-c name=value" would change; none may move
WATCHED = ["TimeZone", "DateStyle", "IntervalStyle", "extra_float_digits", "client_encoding",
           "work_mem", "default_transaction_read_only", "statement_timeout", "role",
           "search_path", "session_preload_libraries", "lock_timeout"]
PROBE = "select " + ", ".join(f"current_setting('{n}')" for n in WATCHED)


def startup_packet(params):
    body = struct.pack("!I", 196608) + b"".join(k + b"\0" + v + b"\0" for k, v in params) + b"\0"
    return struct.pack("!I", len(body) + 4) + body


def raw_row(msgs):
    """The first DataRow's columns as bytes (values may be any bytes the client sent)."""
    for m in msgs:
        if m.type == "D":
            n, pos, out = struct.unpack("!H", m.payload[:2])[0], 2, []
            for _ in range(n):
                ln = struct.unpack("!i", m.payload[pos:pos + 4])[0]
                out.append(m.payload[pos + 4:pos + 4 + ln])
                pos += 4 + ln
            return out
    raise AssertionError(f"no row: {describe(msgs)}")


def outcome(target, name, value, user=b"postgres"):
    """("ok", {setting: bytes}) or ("error", sqlstate, message) for a startup with name=value."""
    params = [(b"user", user), (b"database", b"postgres"), (name.encode(), value)]
    with RawClient(target.host, target.port) as c:
        c.send_raw(startup_packet(params))
        msgs = []
        while not msgs or msgs[-1].type not in "EZ":
            try:
                msgs.append(c.read_msg())
            except Closed:
                break
        if msgs and msgs[-1].type == "E":
            f = msgs[-1].fields
            return ("error", f["C"], f["M"])
        assert msgs and msgs[-1].type == "Z", describe(msgs)
        return ("ok", dict(zip(WATCHED, raw_row(c.query(PROBE)))))


def same_outcome(name, value, via_proxy, direct, baseline):
    """The proxy's outcome is PostgreSQL's own, and no other setting moved."""
    if direct[0] == "error":
        assert via_proxy[:2] == direct[:2], (name, value, via_proxy, direct)
        assert f'"{name}"' in via_proxy[2], (name, value, via_proxy)
        return
    assert via_proxy[0] == "ok", (name, value, via_proxy, direct)
    got = via_proxy[1]
    assert got[name] == direct[1][name], (name, value, got[name], direct[1][name])
    moved = {k: got[k] for k in WATCHED if k != name and got[k] != baseline[k]}
    assert not moved, (name, value, moved)


def test_startup_parameters_outside_the_allowlist_are_not_applied(proxy, direct):
    """Only the documented allowlist reaches the upstream; `options` (-c ...), arbitrary GUCs and
    search_path (off by default) are ignored, so a client cannot loosen the operator's
    settings."""
    with direct.raw() as d:
        defaults = {g: rows(d.query(f"show {g}"))[0][0]
                    for g in ("work_mem", "search_path", "default_transaction_read_only")}
    with proxy.raw(work_mem="77kB", search_path="evil",
                   options="-c statement_timeout=5 -c default_transaction_read_only=on") as c:
        for guc, value in defaults.items():
            assert rows(c.query(f"show {guc}")) == [(value,)], guc
        # the proxy's own statement_timeout (query timeout + 1 s), not the client's 5 ms
        assert rows(c.query("show statement_timeout")) == [("31s",)]
        assert rows(c.query("select pg_sleep(0.05), 'slept'"))[0][1] == "slept"


@pytest.fixture(scope="module")
def values_proxy(module_proxies):
    return module_proxies("--read-only", name="values")


@pytest.mark.parametrize("name", list(FORWARDED))
def test_every_byte_in_every_forwarded_parameter(values_proxy, direct, name):
    """Each byte 0x01-0xFF alone after a valid value, and as a separator before a smuggled
    "-c work_mem=..." (a TAB once split TimeZone and injected settings): the proxy gives what
    PostgreSQL gives for the same startup packet, and nothing else changes upstream."""
    base = FORWARDED[name]
    baseline = outcome(values_proxy, "application_name", b"baseline")[1]
    assert baseline["default_transaction_read_only"] == b"on"
    for b in range(1, 256):
        ch = bytes([b])
        for value in (base + ch, base + ch + b"-c" + ch + b"work_mem=1234kB" + ch):
            same_outcome(name, value, outcome(values_proxy, name, value), outcome(direct, name, value),
                         baseline)


def test_a_nul_cannot_carry_a_second_setting(values_proxy):
    """A NUL ends the value in the packet itself: what follows is another (ignored) name."""
    baseline = outcome(values_proxy, "application_name", b"baseline")[1]
    got = outcome(values_proxy, "TimeZone", b"UTC\0-c\0work_mem=1234kB")
    if got[0] == "ok":
        assert got[1]["TimeZone"] == b"UTC"
        assert {k: v for k, v in got[1].items() if k != "TimeZone"} == \
            {k: v for k, v in baseline.items() if k != "TimeZone"}
    else:
        assert got[1] == "08P01", got


@pytest.mark.parametrize("sep", [b"\t", b"\n", b"\r", b"\x0b", b"\x0c", b"\xa0", b"\x85"],
                         ids=["tab", "newline", "cr", "vt", "ff", "nbsp", "nel"])
def test_whitespace_does_not_inject_settings(values_proxy, sep):
    """The attacks as they were: a read-only proxy's session turned writable, given a role, its
    statement timeout lifted and a library preloaded, each from one TimeZone value."""
    baseline = outcome(values_proxy, "application_name", b"baseline")[1]
    for smuggled in (b"default_transaction_read_only=off", b"role=pg_write_all_data",
                     b"statement_timeout=0", b"session_preload_libraries=auto_explain",
                     b"lock_timeout=4242"):
        value = b"UTC" + sep + b"-c" + sep + smuggled
        got = outcome(values_proxy, "TimeZone", value)
        if got[0] == "error":  # PostgreSQL judged the whole value: not a time zone
            assert got[1] == "22023" and '"TimeZone"' in got[2], got
            continue
        assert got[1]["TimeZone"] != b"UTC", got  # never just "UTC" plus a second setting
        assert {k: v for k, v in got[1].items() if k != "TimeZone"} == \
            {k: v for k, v in baseline.items() if k != "TimeZone"}, (value, got)


def test_value_too_long_to_carry_is_refused_before_connecting(values_proxy, pg):
    """Escaped, a long value of spaces cannot fit the upstream startup packet: FATAL 22023
    naming the parameter, before any upstream connection (no silent truncation)."""
    before = pg.log_count("connection received")
    got = outcome(values_proxy, "DateStyle", b"ISO," + b" " * 3000)
    assert got[:2] == ("error", "22023"), got
    assert '"DateStyle"' in got[2] and "too long" in got[2], got
    assert pg.log_count("connection received") == before
    # a long value that fits arrives whole (PostgreSQL then judges it)
    got = outcome(values_proxy, "DateStyle", b"ISO," + b" " * 1000 + b"DMY")
    assert got[0] == "ok" and got[1]["DateStyle"] == b"ISO, DMY", got


# ---------------------------------------------------------------------------------------------
# Hostile user names: the audit name upstream, the audit trail, JSON logs


def upstream_app_names(dconn, like):
    with dconn.cursor() as cur:
        cur.execute("select application_name from pg_stat_activity where application_name "
                    "like %s and pid <> pg_backend_pid()", (f"%{like}%",))
        return [r[0] for r in cur.fetchall()]


def test_forged_suffix_cannot_hide_the_real_address(values_proxy, dconn):
    """A user named like an address plus spaces once pushed the real address out of the
    upstream application_name: the real [user@addr] suffix is always whole and last."""
    forged = b"dba@10.20.30.40:5432]" + b" " * 40
    params = [(b"user", forged), (b"database", b"postgres"), (b"application_name", b"forge-t")]
    with RawClient(values_proxy.host, values_proxy.port) as c:
        c.send_raw(startup_packet(params))
        assert c.read_until_rfq()[-1].type == "Z"
        local = "%s:%d" % c.sock.getsockname()
        (name,) = upstream_app_names(dconn, f"@{local}]")
    assert name.startswith("forge-t [") and name.endswith(f"@{local}]"), name
    suffix = name[name.rindex("["):]
    assert suffix.count("@") == 1 and suffix.count("]") == 1, name
    assert "10.20.30.40" in suffix and " " not in suffix, name  # the user, encoded


def test_invalid_utf8_user_keeps_every_record_valid_json(start_proxy, tmp_path):
    """Invalid UTF-8 in a user name once made every audit record of its session invalid JSON:
    each record and log line parses, with U+FFFD in the text and the raw bytes in user_hex."""
    audit = tmp_path / "audit.jsonl"
    p = start_proxy("--audit-log", str(audit), "--log-format", "json")
    user = b"\xff\xfe" + "é".encode("latin-1") + b"]root"
    params = [(b"user", user), (b"database", b"\xc3("), (b"application_name", b"app\x80")]
    with RawClient(p.host, p.port) as c:
        c.send_raw(startup_packet(params))
        assert c.read_until_rfq()[-1].type == "Z"
        assert c.query("select 1")[-1].type == "Z"
        c.send("Q", b"select 'caf\xe9'\0")  # LATIN1 bytes in a UTF8 session: 22021
        assert c.read_until_rfq()[-1].type == "Z"
    recs = poll(lambda: [json.loads(line) for line in audit.read_bytes().decode().splitlines()]
                if audit.exists() and audit.read_bytes().count(b"\n") >= 2 else None,
                what="two audit records")
    assert "statement_hex" not in recs[0], recs[0]
    assert recs[1]["statement"] == "select 'caf\ufffd'", recs[1]
    assert bytes.fromhex(recs[1]["statement_hex"]) == b"select 'caf\xe9'", recs[1]
    for r in recs:
        assert r["user"] == "\ufffd\ufffd\ufffd]root" and bytes.fromhex(r["user_hex"]) == user, r
        assert bytes.fromhex(r["database_hex"]) == b"\xc3(", r
        assert bytes.fromhex(r["application_hex"]) == b"app\x80", r
    p.stop()
    lines = [ln for ln in open(p.log_path, "rb").read().splitlines() if ln.startswith(b"{")]
    events = [json.loads(ln.decode("utf-8")) for ln in lines]  # strict: every line is UTF-8
    start = [e for e in events if e["event"] == "session_start"]
    assert start and bytes.fromhex(start[0]["user_hex"]) == user, start
    # valid names carry no *_hex field
    assert all("client_hex" not in e for e in events)


def test_valid_names_have_no_hex_fields(start_proxy, tmp_path):
    audit = tmp_path / "audit.jsonl"
    p = start_proxy("--audit-log", str(audit))
    with p.raw(user="rené", application_name="naïve") as c:
        assert c.query("select 1")[-1].type == "Z"
    (rec,) = poll(lambda: [json.loads(x) for x in audit.read_text().splitlines()]
                  if audit.exists() and audit.read_text() else None, what="an audit record")
    assert rec["user"] == "rené" and rec["application"] == "naïve"
    assert not [k for k in rec if k.endswith("_hex")], rec
