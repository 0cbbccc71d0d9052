"""Hostile and broken clients: malformed startup packets and messages, stalls, floods of silent
connections and CancelRequests; process hygiene (listen address, children, secrets in argv).

Every case ends with the same checks: the proxy process is alive, a normal psycopg2 query
works, and the proxy's descriptor count and resident memory return to the baseline taken
before the case (polled, bounded)."""
import os
import random
import select
import socket
import struct
import threading
import time
import uuid

import psycopg2
import pytest

from pgwp import (BINARY, BOUND, CANCEL_REQUEST, PROTOCOL_3_0, SYNC, Closed, RawClient, Usage,
                  clean_env, cstr, describe, errors, free_port, metric, frame, only_error, poll,
                  port_listening, proc_children, proc_rss_kb, proxy_only, rows, scrape,
                  wait_active, wait_peer_closed, wait_usage_back)

pytestmark = proxy_only

STARTUP_TIMEOUT_S = 1


@pytest.fixture(scope="module")
def hostile(module_proxies):
    mport = free_port()
    # the floods below come from one address: the per-address startup cap (test_admission.py)
    # is raised so that they reach the startup timeout they are about
    p = module_proxies("--startup-timeout", f"{STARTUP_TIMEOUT_S}s",
                       "--max-startup-per-address", 1000,
                       "--metrics-listen", f"127.0.0.1:{mport}", name="hostile")
    p.metrics_port = mport
    # warm up: first-use allocations (libpq, TLS-free paths, metrics) before any baseline
    for _ in range(3):
        conn = p.connect(autocommit=True)
        with conn.cursor() as cur:
            cur.execute("select 1")
        conn.close()
    with p.raw() as c:
        c.query("select 1")
    scrape(mport)
    return p


@pytest.fixture
def proxy_h(hostile):
    """The module's proxy; checks after the test that it survived, serves, and gave back what
    the test's connections took."""
    assert hostile.alive(), f"proxy died earlier:\n{hostile.log()[-3000:]}"
    pid = hostile.proc.pid
    poll(lambda: sessions_active(hostile) == 0, what="no session left from earlier tests")
    base = Usage(pid)
    yield hostile
    assert hostile.alive(), f"proxy died (exit {hostile.proc.returncode}):\n{hostile.log()[-4000:]}"
    normal_query_works(hostile)
    poll(lambda: sessions_active(hostile) == 0, what="sessions_active to drop back to 0")
    wait_usage_back(pid, base, what="after the hostile client")


def sessions_active(p):
    return metric(scrape(p.metrics_port), "pgwire_proxy_sessions_active")


def normal_query_works(p):
    conn = psycopg2.connect(p.dsn())
    try:
        with conn.cursor() as cur:
            cur.execute("select 41 + 1")
            assert cur.fetchone() == (42,)
    finally:
        conn.close()


def connect_raw(p):
    return RawClient(p.host, p.port)


def send_quietly(c, data):
    """Sends, ignoring a peer that already refused and closed (its answer stays readable)."""
    try:
        c.send_raw(data)
    except (BrokenPipeError, ConnectionResetError):
        pass


def half_close(c):
    try:
        c.sock.shutdown(socket.SHUT_WR)
    except OSError:
        pass  # the proxy closed first


def assert_fatal_or_silent_close(c, message=None):
    """The proxy either closes silently (as PostgreSQL does for garbage startup packets) or
    sends exactly one FATAL 08P01 and closes; either way promptly."""
    msgs = c.read_until_closed()
    if not msgs:
        return
    err = only_error(msgs)
    assert (err["S"], err["C"]) == ("FATAL", "08P01"), describe(msgs)
    if message:
        assert message in err["M"], err


def assert_fatal_08p01(msgs, message):
    err = only_error(msgs)
    assert (err["S"], err["C"]) == ("FATAL", "08P01"), describe(msgs)
    assert message in err["M"], err


def startup_body(version=PROTOCOL_3_0, terminate=True, **params):
    body = struct.pack("!I", version) + b"".join(
        k.encode() + b"\0" + str(v).encode() + b"\0" for k, v in params.items())
    return body + (b"\0" if terminate else b"")


def packet(body):
    return struct.pack("!I", len(body) + 4) + body


# ---------------------------------------------------------------------------------------------
# Malformed startup packets


def test_truncated_startup_then_close(proxy_h):
    pkt = packet(startup_body(user="postgres", database="postgres"))
    for cut in (1, 3, 4, 7, len(pkt) - 1):
        c = connect_raw(proxy_h)
        c.send_raw(pkt[:cut])
        c.close()


@pytest.mark.parametrize("length", [0, 3, 7, 2 ** 31, 0xFFFFFFFF, 10001])
def test_bad_startup_length_word(proxy_h, length):
    with connect_raw(proxy_h) as c:
        send_quietly(c, struct.pack("!I", length) + struct.pack("!I", PROTOCOL_3_0))
        assert_fatal_or_silent_close(c, "invalid length of startup packet")


def test_startup_longer_than_10k(proxy_h):
    body = startup_body(user="postgres", database="postgres", options="x" * 20000)
    with connect_raw(proxy_h) as c:
        send_quietly(c, packet(body))
        assert_fatal_or_silent_close(c)


def test_unknown_protocol_major_version(proxy_h):
    with connect_raw(proxy_h) as c:
        send_quietly(c, packet(startup_body(version=4 << 16, user="postgres")))
        msgs = c.read_until_closed()
    assert_fatal_08p01(msgs, "unsupported frontend protocol 4.0")


def test_startup_without_final_nul(proxy_h):
    with connect_raw(proxy_h) as c:
        send_quietly(c, packet(startup_body(terminate=False, user="postgres",
                                            database="postgres")))
        msgs = c.read_until_closed()
    err = only_error(msgs)
    assert (err["S"], err["C"]) == ("FATAL", "08P01"), describe(msgs)


def test_startup_odd_parameter_list(proxy_h):
    """A name without a value: the packet ends in the middle of a pair."""
    body = struct.pack("!I", PROTOCOL_3_0) + b"user\0postgres\0database\0\0"
    with connect_raw(proxy_h) as c:
        send_quietly(c, packet(body))
        msgs = c.read_until_closed()
    err = only_error(msgs)
    assert (err["S"], err["C"]) == ("FATAL", "08P01"), describe(msgs)


def test_garbage_instead_of_startup(proxy_h):
    rnd = random.Random(20240601)
    blobs = [bytes(rnd.randrange(256) for _ in range(n)) for n in (8, 64, 4096)]
    blobs.append(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    blobs.append(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\0" * 64)  # TLS hello
    for blob in blobs:
        with connect_raw(proxy_h) as c:
            send_quietly(c, blob)
            half_close(c)  # nothing more is coming: no stall possible
            msgs = c.read_until_closed()
            for e in errors(msgs):
                assert (e["S"], e["C"]) == ("FATAL", "08P01"), (blob[:16], describe(msgs))


# ---------------------------------------------------------------------------------------------
# Malformed messages after a successful startup


def test_typed_message_length_3(proxy_h):
    with proxy_h.raw() as c:
        send_quietly(c, b"Q" + struct.pack("!I", 3))
        msgs = c.read_until_closed()
    assert_fatal_08p01(msgs, "invalid message length")


def test_query_without_nul_terminator(proxy_h):
    with proxy_h.raw() as c:
        sql = b"select 1"
        send_quietly(c, b"Q" + struct.pack("!I", len(sql) + 4) + sql)
        msgs = c.read_until_closed()
    err = only_error(msgs)
    assert (err["S"], err["C"]) == ("FATAL", "08P01"), describe(msgs)


def test_query_with_embedded_nul(proxy_h):
    with proxy_h.raw() as c:
        sql = b"select 1\0; drop table secret_t\0"
        send_quietly(c, b"Q" + struct.pack("!I", len(sql) + 4) + sql)
        msgs = c.read_until_closed()
    err = only_error(msgs)
    assert (err["S"], err["C"]) == ("FATAL", "08P01"), describe(msgs)


# A NUL ends a text for PostgreSQL, and for the policy: whatever follows it is refused with
# the message, never judged apart from it or run. The policy's precheck counts on this.
def _query(sql):
    return b"Q" + struct.pack("!I", len(sql) + 4) + sql


NUL_HIDDEN = {
    "query_nul_then_drop": _query(b"select 1\0drop table nul_hidden_t\0"),
    "query_semicolon_nul_drop": _query(b"select 1;\0;drop table nul_hidden_t;\0"),
    "query_comment_nul_drop": _query(b"select 1 --\0\ndrop table nul_hidden_t\0"),
    "parse_nul_then_drop": frame("P", cstr("") + b"select 1\0drop table nul_hidden_t\0" +
                                 struct.pack("!H", 0)) + SYNC,
}


@pytest.mark.parametrize("case", sorted(NUL_HIDDEN))
def test_nul_cannot_hide_a_denied_statement(start_proxy, dconn, case):
    with dconn.cursor() as cur:
        cur.execute("drop table if exists nul_hidden_t; create table nul_hidden_t (a int)")
    p = start_proxy("--deny", "drop", "--extended-protocol", "allow")
    with p.raw() as c:
        send_quietly(c, NUL_HIDDEN[case])
        msgs = c.read_until_closed()
    err = errors(msgs)[-1]
    assert (err["S"], err["C"]) == ("FATAL", "08P01"), describe(msgs)
    with dconn.cursor() as cur:
        cur.execute("select to_regclass('nul_hidden_t') is not null")
        assert cur.fetchone() == (True,), "the table was dropped"


def test_unknown_message_type(proxy_h):
    with proxy_h.raw() as c:
        send_quietly(c, b"\x01" + struct.pack("!I", 8) + b"abcd")
        msgs = c.read_until_closed()
    assert_fatal_08p01(msgs, "invalid frontend message type 1")


def test_garbage_after_startup(proxy_h):
    rnd = random.Random(77)
    for blob in (b"\xff" * 4096, bytes(rnd.randrange(256) for _ in range(4096))):
        with proxy_h.raw() as c:
            send_quietly(c, blob)
            half_close(c)
            msgs = c.read_until_closed()
            for e in errors(msgs):
                assert e["S"] in ("FATAL", "ERROR"), describe(msgs)
                if e["S"] == "FATAL":
                    assert e["C"] == "08P01", describe(msgs)


def test_huge_typed_length_rejected_without_allocation(proxy_h):
    pid = proxy_h.proc.pid
    rss_before = proc_rss_kb(pid)
    with proxy_h.raw() as c:
        t0 = time.monotonic()
        send_quietly(c, b"Q" + struct.pack("!I", 2 ** 31 - 1) + b"select ")
        msgs = c.read_until_closed()
        elapsed = time.monotonic() - t0
    assert_fatal_08p01(msgs, "invalid message length")
    assert elapsed < BOUND, elapsed
    assert proc_rss_kb(pid) < rss_before + 16 * 1024


def test_declared_large_messages_do_not_commit_memory(proxy_h):
    """20 clients each announce a 60 MB Query (under the 64 MB default limit) and send only its
    first bytes: the proxy may reserve address space, but resident memory must stay small and
    other sessions must be served."""
    pid = proxy_h.proc.pid
    rss_before = proc_rss_kb(pid)
    clients = []
    try:
        for _ in range(20):
            c = proxy_h.raw()
            c.send_raw(b"Q" + struct.pack("!I", 60_000_000) + b"select '" + b"x" * 1000)
            clients.append(c)
        normal_query_works(proxy_h)
        assert proc_rss_kb(pid) < rss_before + 32 * 1024, (rss_before, proc_rss_kb(pid))
        for c in clients:
            r, _, _ = select.select([c.sock], [], [], 0)
            assert not r, "the proxy answered or closed a session whose message is incomplete"
    finally:
        for c in clients:
            c.close()


# ---------------------------------------------------------------------------------------------
# Statements that are hard to parse: with a policy on, the proxy runs PostgreSQL's grammar over
# client text itself; nothing a client sends may take the process down.

DEEP = {
    "plus-chain": "select 1 " + "+ 1 " * 200_000,  # left-deep A_Expr tree, 800 kB
    "concat-chain": "select 'a' " + "|| 'a' " * 200_000,
    "and-chain": "select true " + "and true " * 200_000,
    "not-prefix": "select " + "not " * 200_000 + "true",
    "union-chain": "select 1 " + "union all select 1 " * 100_000,
}


@pytest.mark.parametrize("shape", list(DEEP))
def test_deeply_nested_statement_with_policy(start_proxy, shape):
    p = start_proxy("--deny", "drop")
    with p.raw() as c:
        msgs = c.query(DEEP[shape])
        for e in errors(msgs):  # PostgreSQL's own answer (54001, 42601) or the proxy's
            assert e["S"] == "ERROR", describe(msgs)
        assert msgs and msgs[-1].type == "Z", f"session ended: {describe(msgs)}"
        assert rows(c.query("select 'still here'")) == [("still here",)]
    try:
        served = served_quickly(p)
    except Exception as e:  # noqa: BLE001
        served = repr(e)
    assert served is None and p.alive(), (
        f"proxy gone after a deeply nested statement (exit {p.proc.poll()}): {served}")


# ---------------------------------------------------------------------------------------------
# Stalls


def test_half_message_stall_keeps_session(proxy_h):
    """A session stalled in the middle of a message is not a startup: it stays (no timeout
    applies to an idle session), and others are served meanwhile."""
    stalled = proxy_h.raw()
    try:
        sql = b"select 'resumed'\0"
        msg = b"Q" + struct.pack("!I", len(sql) + 4) + sql
        stalled.send_raw(msg[:9])
        # let more than the startup timeout pass, measured by a half startup being closed
        with connect_raw(proxy_h) as half:
            half.send_raw(packet(startup_body(user="postgres"))[:10])
            wait_peer_closed(half.sock, timeout=BOUND)
        with proxy_h.raw() as other:
            assert rows(other.query("select 'other'")) == [("other",)]
        normal_query_works(proxy_h)
        r, _, _ = select.select([stalled.sock], [], [], 0)
        assert not r, "the stalled session was answered or closed"
        stalled.send_raw(msg[9:])
        assert rows(stalled.read_until_rfq()) == [("resumed",)]
    finally:
        stalled.close()


def test_half_startup_closed_after_startup_timeout(proxy_h):
    with connect_raw(proxy_h) as c:
        c.send_raw(packet(startup_body(user="postgres", database="postgres"))[:12])
        t0 = time.monotonic()
        wait_peer_closed(c.sock, timeout=10)
        assert time.monotonic() - t0 >= STARTUP_TIMEOUT_S * 0.5


def test_ssl_request_then_stall_closed_after_startup_timeout(proxy_h):
    with connect_raw(proxy_h) as c:
        c.send_request_code(80877103)  # SSLRequest
        assert c.read_byte() == b"N"
        wait_peer_closed(c.sock, timeout=10)


def open_silent(p, n):
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.settimeout(BOUND)
            s.connect((p.host, p.port))
            socks.append(s)
    except BaseException:
        for s in socks:
            s.close()
        raise
    return socks


def wait_all_closed(socks, timeout):
    """Polls until the proxy closed every socket; returns how many sent data before."""
    open_ = {s.fileno(): s for s in socks}
    talked = 0
    deadline = time.monotonic() + timeout
    while open_:
        left = deadline - time.monotonic()
        if left <= 0:
            pytest.fail(f"{len(open_)} of {len(socks)} silent connections still open "
                        f"{timeout} s later")
        r, _, _ = select.select(list(open_.values()), [], [], min(left, 0.5))
        for s in r:
            try:
                data = s.recv(4096)
            except (ConnectionResetError, BrokenPipeError):
                data = b""
            if data:
                talked += 1
            else:
                del open_[s.fileno()]
    return talked


def test_500_silent_connections(proxy_h):
    socks = open_silent(proxy_h, 500)
    try:
        t0 = time.monotonic()
        normal_query_works(proxy_h)  # served while 500 connections wait in startup
        with proxy_h.raw() as c:
            assert rows(c.query("select 'during flood'")) == [("during flood",)]
        talked = wait_all_closed(socks, timeout=10)
        assert talked == 0, "the proxy sent something to a client that never sent a startup"
        assert time.monotonic() - t0 >= STARTUP_TIMEOUT_S * 0.5
    finally:
        for s in socks:
            s.close()


# ---------------------------------------------------------------------------------------------
# Clients that talk without listening: the proxy must stop reading them (TCP back-pressure, as
# PostgreSQL does by blocking in send) instead of queueing answers without bound, and one
# chatty client must not monopolise a worker thread.

FLOOD_SECONDS = 3
FLOOD_RSS_LIMIT_KB = 64 * 1024


class Flooder(threading.Thread):
    """Sends `chunk` over `sock` again and again, never reading, until stopped; notes when a
    send blocks (the proxy stopped reading) or the peer closes."""

    def __init__(self, sock, chunk):
        super().__init__(daemon=True)
        self.sock, self.chunk = sock, chunk
        self.sent = 0
        self.blocked = 0
        self.closed = False
        self.stop = threading.Event()
        sock.settimeout(0.2)

    def run(self):
        view = memoryview(self.chunk)
        while not self.stop.is_set():
            try:
                n = self.sock.send(view)
                self.sent += n
            except socket.timeout:
                self.blocked += 1
            except OSError:
                self.closed = True
                return


def served_quickly(p):
    """None if a new session is served within BOUND seconds (raw socket: never hangs), else
    what went wrong."""
    t0 = time.monotonic()
    try:
        with RawClient(p.host, p.port, timeout=BOUND) as c:
            msgs = c.startup(user=p.user, database=p.dbname)
            if not msgs or msgs[-1].type != "Z":
                return f"startup failed: {describe(msgs)}"
            if rows(c.query("select 'served'")) != [("served",)]:
                return "wrong answer"
    except (OSError, Closed) as e:
        return f"{e!r} after {time.monotonic() - t0:.1f} s"
    return None


def run_flood(p, sock, chunk):
    """Floods for FLOOD_SECONDS while checking that two new sessions - one per worker of a
    two-worker proxy - are served; a watcher stops the flood at once if the proxy's memory runs
    away. Returns (flooder, peak RSS growth in kB, [problems serving others])."""
    pid = p.proc.pid
    base = proc_rss_kb(pid)
    f = Flooder(sock, chunk)
    peak = [0]

    def watch():
        while not f.stop.is_set() and not f.closed:
            try:
                peak[0] = max(peak[0], proc_rss_kb(pid) - base)
            except (OSError, AssertionError):
                break
            if peak[0] > 4 * FLOOD_RSS_LIMIT_KB:
                f.stop.set()  # clearly unbounded: stop before the machine suffers
            time.sleep(0.02)

    watcher = threading.Thread(target=watch, daemon=True)
    f.start()
    watcher.start()
    starved = []
    try:
        for _ in range(2):
            problem = served_quickly(p)
            if problem:
                starved.append(problem)
        deadline = time.monotonic() + FLOOD_SECONDS
        while time.monotonic() < deadline and not f.closed and not f.stop.is_set():
            time.sleep(0.05)
    finally:
        f.stop.set()
        f.join(timeout=BOUND)
        watcher.join(timeout=BOUND)
    return f, peak[0], starved


def check_flood(f, peak, starved, what):
    problems = []
    if starved:
        problems.append(f"new sessions not served during the flood: {starved}")
    if peak >= FLOOD_RSS_LIMIT_KB:
        problems.append(f"proxy RSS grew by {peak} kB while the client sent {f.sent} bytes of "
                        f"{what} without reading (its sends blocked {f.blocked} times)")
    assert not problems, "; ".join(problems)


def test_pipelined_errors_without_reading_stay_bounded(proxy_h):
    """Parse+Sync pairs answered locally (0A000 + ReadyForQuery, ~20x the input) by a client
    that never reads."""
    parse = b"P" + struct.pack("!I", 4 + 4) + b"\0\0\0\0"
    with proxy_h.raw() as c:
        check_flood(*run_flood(proxy_h, c.sock, (parse + b"S\0\0\0\4") * 4096), "Parse/Sync")


def test_pipelined_function_calls_without_reading_stay_bounded(proxy_h):
    """FunctionCall messages, each answered locally with an error and ReadyForQuery."""
    fcall = b"F" + struct.pack("!I", 4 + 4 + 2 + 2 + 2) + struct.pack("!IHHH", 1, 0, 0, 0)
    with proxy_h.raw() as c:
        check_flood(*run_flood(proxy_h, c.sock, fcall * 4096), "FunctionCall")


def test_burst_of_tiny_messages_does_not_pin_a_worker(start_proxy):
    """One 8 MB message grows the session's input buffer; 8 MB of 5-byte messages (CopyData
    outside COPY, ignored as PostgreSQL does) follow in one burst. Handling them must cost
    time linear in their size: a session on the same (only) worker is served meanwhile."""
    p = start_proxy("--workers", 1)
    big = 8 << 20
    payload = (b"d" + struct.pack("!I", 4 + big) + b"x" * big +
               (b"d" + struct.pack("!I", 5) + b"x") * (big // 6))
    a = p.raw()
    a.sock.settimeout(60)
    sent = threading.Event()

    def burst():
        try:
            a.send_raw(payload)
            sent.set()
        except OSError:
            pass

    t = threading.Thread(target=burst, daemon=True)
    t.start()
    try:
        t0 = time.monotonic()
        problem = served_quickly(p)
        assert problem is None, (
            f"a session on the same worker was not served while it handled the burst "
            f"({problem}; burst {'fully' if sent.is_set() else 'not yet'} sent after "
            f"{time.monotonic() - t0:.1f} s)")
        poll(sent.is_set, timeout=BOUND, what="the proxy to take the whole burst")
        a.sync()
        assert a.read_until_rfq()[-1].type == "Z"
    finally:
        a.close()
        t.join(timeout=BOUND)


def test_ssl_request_flood_still_times_out(proxy_h):
    """SSLRequest after SSLRequest, each answered 'N', never read: other sessions served,
    bounded memory, and the startup timeout still ends the connection."""
    s = socket.create_connection((proxy_h.host, proxy_h.port), timeout=BOUND)
    try:
        t0 = time.monotonic()
        f = None
        f, peak, starved = run_flood(proxy_h, s, struct.pack("!II", 8, 80877103) * 8192)
        # the startup timeout (1 s) must have ended it during the flood, or right after
        s.settimeout(BOUND)
        wait_peer_closed(s, timeout=10)
        closed_after = time.monotonic() - t0
        check_flood(f, peak, starved, "SSLRequests")
        assert f.closed, (f"the startup timeout did not end a chatty client during a "
                          f"{FLOOD_SECONDS} s flood (closed {closed_after:.1f} s after start)")
    finally:
        s.close()


# ---------------------------------------------------------------------------------------------
# CancelRequest flood


def test_cancel_request_flood_cancels_nothing(proxy_h, dconn):
    app = f"cflood-{uuid.uuid4().hex[:8]}"
    before = scrape(proxy_h.metrics_port)
    victim = proxy_h.raw(application_name=app)
    real_pid, real_secret = victim.backend_key
    victim.query_send("select pg_sleep(3)")
    wait_active(dconn, app)
    rnd = random.Random(4242)
    keys = []
    for i in range(2000):
        pid = real_pid if i % 2 else rnd.randrange(1, 2 ** 31)  # half aim at the real pid
        secret = rnd.randrange(2 ** 32)
        if secret == real_secret:
            secret ^= 1
        keys.append((pid, secret))
    failures = []

    def flood(part):
        for pid, secret in part:
            try:
                with socket.create_connection((proxy_h.host, proxy_h.port), timeout=BOUND) as s:
                    s.sendall(struct.pack("!IIII", 16, CANCEL_REQUEST, pid, secret))
                    # the server answers a CancelRequest by closing, never with data
                    if wait_peer_closed(s, timeout=BOUND):
                        failures.append("data in answer to a CancelRequest")
            except OSError as e:
                failures.append(repr(e))

    threads = [threading.Thread(target=flood, args=(keys[i::4],)) for i in range(4)]
    for t in threads:
        t.start()
    try:
        msgs = victim.read_until_rfq()
    finally:
        for t in threads:
            t.join(timeout=60)
        victim.close()
    assert not any(t.is_alive() for t in threads), "flood threads hung"
    assert failures == [], failures[:5]
    assert errors(msgs) == [], describe(msgs)
    assert rows(msgs) == [("",)]
    # each one is counted: a wrong key, or refused by the per-address rate limit (all of
    # them come from 127.0.0.1, far above --cancel-rate-limit)
    def refused(m):
        return sum(metric(m, "pgwire_proxy_cancel_requests_total", outcome=o)
                   - metric(before, "pgwire_proxy_cancel_requests_total", outcome=o)
                   for o in ("unknown_key", "rate_limited"))
    poll(lambda: refused(scrape(proxy_h.metrics_port)) >= 2000,
         what="2000 refused cancels counted")
    after = scrape(proxy_h.metrics_port)
    assert refused(after) == 2000
    assert metric(after, "pgwire_proxy_cancel_requests_total", outcome="rate_limited") > \
        metric(before, "pgwire_proxy_cancel_requests_total", outcome="rate_limited")
    assert metric(after, "pgwire_proxy_cancel_requests_total", outcome="forwarded") == \
        metric(before, "pgwire_proxy_cancel_requests_total", outcome="forwarded")


# ---------------------------------------------------------------------------------------------
# Process hygiene


def listening_inodes(family_file):
    out = {}
    with open(family_file) as f:
        next(f)
        for line in f:
            cols = line.split()
            if cols[3] == "0A":
                out[cols[9]] = cols[1]
    return out


def socket_inodes(pid):
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return inodes


def cmdline(pid):
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return f.read()


def all_cmdlines():
    out = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                out[int(entry)] = cmdline(int(entry))
            except OSError:
                pass
    return out


def test_default_listen_is_loopback_only_and_no_children(pg, tmp_path):
    """Without --listen the proxy listens on 127.0.0.1:5433 only; it never forks."""
    if port_listening(5433) or any(a.endswith(":1539")
                                   for f in ("/proc/net/tcp", "/proc/net/tcp6")
                                   for a in listening_inodes(f).values()):
        pytest.skip("port 5433 is in use on this machine")
    import subprocess
    env = clean_env(PGWIRE_PROXY_UPSTREAM=f"host={pg.host} port={pg.port} dbname=postgres "
                                          "user=postgres")
    log = open(tmp_path / "default-listen.log", "wb")
    proc = subprocess.Popen([BINARY], stdin=subprocess.DEVNULL, stdout=log,
                            stderr=subprocess.STDOUT, env=env)
    try:
        poll(lambda: proc.poll() is not None or port_listening(5433),
             what="the proxy to listen on 5433")
        if proc.poll() is not None:
            pytest.skip(f"proxy could not start on the default port (exit {proc.returncode})")
        conn = psycopg2.connect(host="127.0.0.1", port=5433, user="postgres",
                                dbname="postgres", connect_timeout=10)
        with conn.cursor() as cur:
            cur.execute("select 1")
        mine = socket_inodes(proc.pid)
        listening = {}
        for f in ("/proc/net/tcp", "/proc/net/tcp6"):
            for inode, addr in listening_inodes(f).items():
                if inode in mine:
                    listening[inode] = addr
        assert listening, "no listening socket found for the proxy"
        assert set(listening.values()) == {"0100007F:1539"}, listening
        assert proc_children(proc.pid) == []
        conn.close()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def test_dsn_password_in_argv_vs_environment(start_proxy, pg):
    """A password given with --upstream is visible in /proc/PID/cmdline (to every local user);
    given through PGWIRE_PROXY_UPSTREAM it is not (environ is readable by the owner and root
    only). Nothing else on the machine carries it, and the proxy has no children. (The
    cluster trusts local connections, so a unique made-up password is enough here.)"""
    secret = f"pw-{uuid.uuid4().hex}"
    dsn = f"host={pg.host} port={pg.port} dbname=postgres user=postgres password={secret}"
    via_argv = start_proxy(dsn=dsn, name="argv")
    via_env = start_proxy(upstream=False, name="env", env=clean_env(PGWIRE_PROXY_UPSTREAM=dsn))
    for p in (via_argv, via_env):
        with p.raw() as c:
            assert rows(c.query("select current_user")) == [("postgres",)]
        assert proc_children(p.proc.pid) == []
    assert secret.encode() in cmdline(via_argv.proc.pid)  # documented, not desired
    assert secret.encode() not in cmdline(via_env.proc.pid)
    holders = [pid for pid, cl in all_cmdlines().items() if secret.encode() in cl]
    assert holders == [via_argv.proc.pid], holders
    with open(f"/proc/{via_env.proc.pid}/environ", "rb") as f:
        assert secret.encode() in f.read()  # where it lives instead: owner/root only
    assert os.stat(f"/proc/{via_env.proc.pid}/environ").st_mode & 0o077 == 0
