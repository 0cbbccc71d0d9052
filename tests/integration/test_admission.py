"""Connections still in startup are capped per client address and in all, so that silent
sockets from one address cannot keep anyone else out; behind a load balancer the PROXY
protocol (v1, v2) names the real client for those caps, the audit and application_name.

Client sockets are bound to 127.0.0.x source addresses (Linux loopback accepts any of them)."""
import json
import shutil
import signal
import socket
import struct

import pytest

from pgwp import (BOUND, Closed, RawClient, describe, only_error, poll, proxy_only, rows,
                  wait_peer_closed)

pytestmark = proxy_only

V2_SIG = b"\r\n\r\n\0\r\nQUIT\n"
FULL_ADDR = "too many connections in startup from this address"
FULL_ALL = "too many connections in startup"


def raw_from(src, p):
    """A RawClient whose socket's source address is `src`."""
    return RawClient(p.host, p.port, source=src)


def silent(src, p, n):
    out = []
    try:
        for _ in range(n):
            out.append(socket.create_connection((p.host, p.port), timeout=BOUND,
                                                source_address=(src, 0)))
    except BaseException:
        for s in out:
            s.close()
        raise
    return out


def refusal(c):
    """The one FATAL a refused connection gets before the close."""
    msgs = c.read_until_closed()
    err = only_error(msgs)
    assert (err["S"], err["C"]) == ("FATAL", "53300"), describe(msgs)
    return err["M"]


def closed_with_53300(socks, expect, timeout=BOUND):
    """Reads the sockets the proxy closes until `expect` have closed; each must have carried
    one FATAL 53300. Returns how many closed."""
    import selectors
    import time
    sel = selectors.DefaultSelector()  # epoll: past select()'s 1024 descriptors
    data = {}
    for s in socks:
        sel.register(s, selectors.EVENT_READ)
        data[s.fileno()] = b""
    closed = 0
    deadline = time.monotonic() + timeout
    try:
        while closed < expect:
            left = deadline - time.monotonic()
            if left <= 0:
                pytest.fail(f"only {closed} of {expect} refused connections closed in {timeout} s")
            for key, _ in sel.select(min(left, 0.5)):
                s = key.fileobj
                try:
                    chunk = s.recv(4096)
                except (ConnectionResetError, BrokenPipeError):
                    chunk = b""
                if chunk:
                    data[s.fileno()] += chunk
                    continue
                got = data.pop(s.fileno())
                sel.unregister(s)
                assert got.startswith(b"E") and b"C53300\0" in got, got[:80]
                closed += 1
    finally:
        sel.close()
    return closed


def admitted(c):
    msgs = c.startup(user="postgres", database="postgres")
    assert msgs and msgs[-1].type == "Z", describe(msgs)
    assert rows(c.query("select 'in'")) == [("in",)]
    return c


def v2_header(src, sport, dst="127.0.0.1", dport=5433, command=0x21):
    body = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!HH", sport, dport)
    return V2_SIG + bytes([command, 0x11]) + struct.pack("!H", len(body)) + body


def v1_header(src, sport, dst="127.0.0.1", dport=5433):
    return f"PROXY TCP4 {src} {dst} {sport} {dport}\r\n".encode()


def upstream_names(dconn, like):
    with dconn.cursor() as cur:
        cur.execute("select application_name from pg_stat_activity where application_name "
                    "like %s and pid <> pg_backend_pid()", (f"%{like}%",))
        return [r[0] for r in cur.fetchall()]


def audit_clients(path, n):
    def read():
        try:
            lines = open(path).read().splitlines()
        except OSError:
            return None
        return [json.loads(x)["client"] for x in lines] if len(lines) >= n else None
    return poll(read, what=f"{n} audit records")


# ---------------------------------------------------------------------------------------------
# Per-address and total caps


def test_silent_flood_from_one_address_does_not_lock_out_another(start_proxy):
    """1,200 sockets from 127.0.0.1 that never send a startup packet once filled the accept cap
    and locked everyone out (--max-connections 3 by 1,026): now 64 of them wait, the rest get
    FATAL 53300 at once, and a client from 127.0.0.2 connects and queries meanwhile."""
    p = start_proxy("--max-connections", 3, "--startup-timeout", "60s")
    socks = silent("127.0.0.1", p, 1200)
    try:
        with raw_from("127.0.0.2", p) as c:
            admitted(c)
        with raw_from("127.0.0.1", p) as c:
            assert refusal(c) == FULL_ADDR
        # every silent socket past the per-address cap was refused with a FATAL and closed
        assert closed_with_53300(socks, 1200 - 64) == 1200 - 64
    finally:
        for s in socks:
            s.close()


def test_total_startup_cap(start_proxy):
    p = start_proxy("--max-startup-connections", 5, "--max-startup-per-address", 100,
                    "--startup-timeout", "60s")
    socks = silent("127.0.0.1", p, 5)
    try:
        with raw_from("127.0.0.2", p) as c:
            assert refusal(c) == FULL_ALL
        socks.pop().close()  # one leaves the startup count: a slot frees up

        def try_once():
            c = raw_from("127.0.0.2", p)
            msgs = c.startup(user="postgres", database="postgres")
            if msgs and msgs[-1].type == "Z":
                return c
            c.close()
            assert only_error(msgs)["M"] == FULL_ALL, describe(msgs)
            return None
        with poll(try_once, what="the freed startup slot") as c:
            assert rows(c.query("select 1")) == [("1",)]
    finally:
        for s in socks:
            s.close()


def test_admitted_sessions_leave_the_startup_count(start_proxy):
    """Only connections still in startup count: three sessions from one address with a
    per-address cap of two, one after the other, all run."""
    p = start_proxy("--max-startup-per-address", 2)
    sessions = [admitted(raw_from("127.0.0.1", p)) for _ in range(3)]
    try:
        held = silent("127.0.0.1", p, 2)
        try:
            with raw_from("127.0.0.1", p) as c:
                assert refusal(c) == FULL_ADDR
            for c in sessions:  # the admitted sessions are unaffected
                assert rows(c.query("select 2")) == [("2",)]
        finally:
            for s in held:
                s.close()
    finally:
        for c in sessions:
            c.close()


@pytest.mark.parametrize("flag,value", [("--max-startup-connections", "0"),
                                        ("--max-startup-per-address", "x"),
                                        ("--proxy-protocol-from", "10.0.0.0/33"),
                                        ("--proxy-protocol-from", "example.com")])
def test_invalid_values_exit_2(flag, value, pg):
    import subprocess
    from pgwp import BINARY, clean_env
    r = subprocess.run([BINARY, "--upstream", f"host={pg.host} port={pg.port}", flag, value],
                       capture_output=True, text=True, timeout=BOUND, env=clean_env())
    assert r.returncode == 2, r
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and flag in lines[0], r.stderr


# ---------------------------------------------------------------------------------------------
# PROXY protocol, headers written by the test


@pytest.fixture
def lb_proxy(start_proxy, tmp_path):
    audit = str(tmp_path / "audit.jsonl")
    p = start_proxy("--proxy-protocol-from", "127.0.0.1/32,::1", "--max-startup-per-address", 2,
                    "--startup-timeout", "60s", "--audit-log", audit)
    p.audit = audit
    return p


@pytest.mark.parametrize("version", [1, 2])
def test_proxy_header_names_the_client(lb_proxy, dconn, version):
    src, sport = ("203.0.113.9", 40001) if version == 2 else ("198.51.100.7", 40002)
    header = v2_header(src, sport) if version == 2 else v1_header(src, sport)
    with raw_from("127.0.0.1", lb_proxy) as c:
        c.send_raw(header)
        admitted(c)
        assert upstream_names(dconn, f"@{src}:{sport}]"), "application_name lacks the address"
    assert audit_clients(lb_proxy.audit, 1) == [f"{src}:{sport}"]


def test_proxy_local_command_keeps_the_socket_address(lb_proxy, dconn):
    """HAProxy's own health checks send LOCAL: the connection is its own client."""
    with raw_from("127.0.0.1", lb_proxy) as c:
        c.send_raw(v2_header("0.0.0.0", 0, command=0x20))
        admitted(c)
        local = "%s:%d" % c.sock.getsockname()
        assert upstream_names(dconn, f"@{local}]")


def test_per_address_cap_counts_the_header_address(lb_proxy):
    """Every socket comes from 127.0.0.1 (the balancer); the cap applies to the addresses in
    the headers."""
    held = []
    try:
        for _ in range(2):
            c = raw_from("127.0.0.1", lb_proxy)
            held.append(c)
            c.send_raw(v2_header("192.0.2.1", 1000 + len(held)))
        with raw_from("127.0.0.1", lb_proxy) as c:
            c.send_raw(v2_header("192.0.2.1", 1010))
            assert refusal(c) == FULL_ADDR
        with raw_from("127.0.0.1", lb_proxy) as c:
            c.send_raw(v1_header("192.0.2.2", 1011))
            admitted(c)
    finally:
        for c in held:
            c.close()


def test_a_burst_is_counted_in_arrival_order(start_proxy):
    """Connections accepted in one batch were handed to their worker newest first: under load
    the third header of an address was counted before the first two, and the first connection
    got the refusal meant for the third. The proxy is stopped while the burst arrives, so that
    it accepts all of it at once."""
    p = start_proxy("--proxy-protocol-from", "127.0.0.1/32", "--max-startup-per-address", 2,
                    "--startup-timeout", "60s", "--workers", 1)
    held = []
    try:
        p.signal(signal.SIGSTOP)
        try:
            for i in range(3):
                held.append(raw_from("127.0.0.1", p))
                held[-1].send_raw(v2_header("192.0.2.9", 2000 + i))
        finally:
            p.signal(signal.SIGCONT)
        assert refusal(held[2]) == FULL_ADDR
        for c in held[:2]:
            admitted(c)
    finally:
        for c in held:
            c.close()


@pytest.mark.parametrize("what", ["plain startup", "garbage", "bad v2 version", "half header"])
def test_listed_source_without_a_valid_header_is_refused(lb_proxy, what):
    data = {"plain startup": None,
            "garbage": b"PROXY TCP4 1.2.3.4\r\n",
            "bad v2 version": V2_SIG + b"\x11\x11\x00\x0c" + b"\0" * 12,
            "half header": v1_header("192.0.2.3", 1)[:20]}[what]
    with raw_from("127.0.0.1", lb_proxy) as c:
        if data is None:
            msgs = c.startup(user="postgres", database="postgres")
            assert not [m for m in msgs if m.type in "RZ"], describe(msgs)
        else:
            c.send_raw(data)
            if what == "half header":
                c.sock.shutdown(socket.SHUT_WR)
            assert c.read_until_closed() == []
    assert "proxy_header_invalid" in lb_proxy.log() or what == "half header"


def test_header_from_an_unlisted_source_is_a_protocol_error(start_proxy):
    """Only --proxy-protocol-from may speak for others: from anywhere else a header could
    claim any address, so it ends the connection."""
    p = start_proxy("--proxy-protocol-from", "127.0.0.9/32")
    for header in (v2_header("10.9.9.9", 9), v1_header("10.9.9.9", 9)):
        with raw_from("127.0.0.1", p) as c:
            try:
                c.send_raw(header + b"\0\0\0\x08\x04\xd2\x16\x2f")
            except (BrokenPipeError, ConnectionResetError):
                pass
            msgs = c.read_until_closed()
            assert not [m for m in msgs if m.type in "RZN"], describe(msgs)
    poll(lambda: p.log().count("proxy_header_refused") >= 2, what="two refusals logged")
    with raw_from("127.0.0.1", p) as c:  # a client without a header is served as before
        admitted(c)


# ---------------------------------------------------------------------------------------------
# Through HAProxy (send-proxy-v2 and send-proxy), as the scale-out setup runs it

HAPROXY_CFG = """\
global
    maxconn 2048

defaults
    mode tcp
    timeout connect 5s
    timeout client 1h
    timeout server 1h

frontend v2
    bind 127.0.0.1:{v2}
    default_backend via_v2

frontend v1
    bind 127.0.0.1:{v1}
    default_backend via_v1

backend via_v2
    server proxy 127.0.0.1:{port} send-proxy-v2

backend via_v1
    server proxy 127.0.0.1:{port} send-proxy
"""


@pytest.fixture
def behind_haproxy(start_proxy, tmp_path):
    if not shutil.which("haproxy"):
        pytest.skip("haproxy not installed (Debian package haproxy)")
    from test_haproxy import Haproxy
    from pgwp import free_port
    audit = str(tmp_path / "audit.jsonl")
    p = start_proxy("--proxy-protocol-from", "127.0.0.1", "--max-startup-per-address", 3,
                    "--startup-timeout", "60s", "--audit-log", audit)
    p.audit = audit
    ha = Haproxy(tmp_path, [(p.port, 0), (p.port, 0)])
    ports = {"v2": free_port(), "v1": free_port()}
    ha.cfg.write_text(HAPROXY_CFG.format(port=p.port, **ports))
    ha.start()

    class Front:
        def __init__(self, port):
            self.host, self.port = "127.0.0.1", port
    fronts = {k: Front(v) for k, v in ports.items()}
    try:
        for f in fronts.values():  # listening once a connection through it is served
            poll(lambda: _served(f), what=f"HAProxy frontend {f.port}")
        yield p, fronts
    finally:
        ha.stop()


def _served(front):
    try:
        with raw_from("127.0.0.1", front) as c:
            return c.startup(user="postgres", database="postgres")[-1].type == "Z"
    except (OSError, Closed, IndexError):
        return False


@pytest.mark.parametrize("version", ["v2", "v1"])
def test_haproxy_send_proxy_names_the_real_client(behind_haproxy, dconn, version):
    p, fronts = behind_haproxy
    src = "127.0.0.2" if version == "v2" else "127.0.0.3"
    with raw_from(src, fronts[version]) as c:
        admitted(c)
        local = "%s:%d" % c.sock.getsockname()
        (name,) = upstream_names(dconn, f"@{local}]")
        assert name.endswith(f"[postgres@{local}]"), name
    clients = audit_clients(p.audit, 1)
    assert f"{src}:" in clients[-1] and clients[-1] == local, clients


def test_haproxy_per_address_cap_sees_the_real_client(behind_haproxy):
    """Every connection reaches the proxy from HAProxy's 127.0.0.1; clients from 127.0.0.4
    that never finish their startup fill only 127.0.0.4's share: its next one is refused (the
    FATAL travels back through HAProxy), while 127.0.0.5 is served."""
    p, fronts = behind_haproxy
    held = silent("127.0.0.4", fronts["v2"], 3)
    try:
        for s in held:  # the first bytes of a startup packet: HAProxy connects for them at once
            s.sendall(b"\x00\x00\x00\x30")
        last = []

        def fourth_refused():
            with raw_from("127.0.0.4", fronts["v2"]) as c:
                msgs = c.startup(user="postgres", database="postgres")
                last[:] = [describe(msgs)]
                if msgs and msgs[-1].type == "Z":
                    return False  # HAProxy has not delivered all three headers yet
                return only_error(msgs)["M"] == FULL_ADDR
        poll(fourth_refused, timeout=30,
             what=lambda: f"127.0.0.4 to hit its per-address cap (last answer: {last})")
        with raw_from("127.0.0.5", fronts["v1"]) as c:
            admitted(c)
    finally:
        for s in held:
            s.close()
