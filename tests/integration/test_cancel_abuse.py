"""CancelRequests as an attack, with nothing but network access: sweeping the secret of a known
pid, re-sending a valid key to hoard descriptors, starving cross-instance cancels with forged
keys for a dead peer, holding up local cancels behind forwards to an unresponsive peer, making a
cancel circulate between instances, and holding SIGTERM up with queued peer forwards. Each test
reproduces the attack and asserts what must hold."""
import random
import select
import signal
import socket
import struct
import threading
import time

import psycopg2
import psycopg2.errors
import pytest

from conftest import upstream_dsn
from pgwp import (BOUND, CANCEL_REQUEST, Proxy, Usage, errors, free_port, marker, metric,
                  only_error, poll, port_listening, proxy_only, rows, scrape, wait_active,
                  wait_peer_closed, wait_usage_back)

pytestmark = proxy_only

OUTCOMES = ("forwarded", "unknown_key", "failed", "rate_limited", "dropped", "coalesced")
CANCEL_MAX_HELD_FDS = 256  # src/cancel.h


def cancel_packet(pid, secret):
    return struct.pack("!IIII", 16, CANCEL_REQUEST, pid, secret)


def open_cancel(port, pid, secret, src="127.0.0.1"):
    """Sends a CancelRequest from `src` and returns the socket, without waiting for the close."""
    s = socket.socket()
    s.settimeout(BOUND)
    s.bind((src, 0))
    s.connect(("127.0.0.1", port))
    s.sendall(cancel_packet(pid, secret))
    return s


def cancel_and_wait(port, pid, secret, src="127.0.0.1"):
    """A well-behaved client's cancel: send, then wait for the server to close (bounded)."""
    with open_cancel(port, pid, secret, src) as s:
        assert wait_peer_closed(s) == b"", "the server answers a CancelRequest only by closing"


def cancel_counts(mport):
    m = scrape(mport)
    return {o: metric(m, "pgwire_proxy_cancel_requests_total", outcome=o) for o in OUTCOMES}


def delta(after, before):
    return {o: after[o] - before[o] for o in after}


STARTUP_PER_ADDRESS = 64  # --max-startup-per-address default


def requests_counted(mport):
    """Cancel outcomes, and the connections the startup cap refused at accept (a flood from
    one address meets that cap first)."""
    m = scrape(mport)
    out = {o: metric(m, "pgwire_proxy_cancel_requests_total", outcome=o) for o in OUTCOMES}
    out["refused_at_startup"] = metric(m, "pgwire_proxy_connections_total",
                                       outcome="rejected_limit")
    return out


def counted(mport, before, n):
    """Polls until n more cancels are counted (any outcome); returns the deltas."""
    def ready():
        d = delta(cancel_counts(mport), before)
        return d if sum(d.values()) >= n else None
    return poll(ready, what=f"{n} cancels to be counted")


def metrics_proxy(start_proxy, *flags):
    mport = free_port()
    p = start_proxy("--metrics-listen", f"127.0.0.1:{mport}", *flags)
    p.mport = mport
    return p


class SilentPeer:
    """A listener that takes connections (kernel backlog) and never reads or closes them: a
    peer instance that is up at the TCP level and dead above it."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]

    def has_connection(self):
        return bool(select.select([self.sock], [], [], 0)[0])

    def close(self):
        self.sock.close()


@pytest.fixture
def silent_peer():
    peer = SilentPeer()
    yield peer
    peer.close()


def test_cancel_key_sweep_is_rate_limited(start_proxy, dconn):
    """7,800 guesses a second from one client once went through: a 24-bit secret (`--peer-id`)
    fell in under an hour. Beyond its burst an address is refused and counted, and another
    address's cancel is unaffected."""
    p = metrics_proxy(start_proxy)
    app = marker("sweep")
    before = cancel_counts(p.mport)
    n = 600
    with p.raw(application_name=app) as victim:
        pid, secret = victim.backend_key
        victim.query_send("select pg_sleep(1), 'survived'")
        wait_active(dconn, app)
        guesses = [g for g in random.Random(11).sample(range(1 << 32), n + 1) if g != secret][:n]
        failures = []

        def sweep(part):
            for g in part:
                try:
                    cancel_and_wait(p.port, pid, g)
                except (OSError, AssertionError) as e:
                    failures.append(repr(e))
        threads = [threading.Thread(target=sweep, args=(guesses[i::4],)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(BOUND * 3)
        assert not any(t.is_alive() for t in threads) and failures == [], failures[:3]
        msgs = victim.read_until_rfq()
        assert errors(msgs) == [] and rows(msgs) == [("", "survived")]
    d = counted(p.mport, before, n)
    assert d["rate_limited"] + d["unknown_key"] == n, d
    # the burst is 5 s worth of --cancel-rate-limit (20/s): most of the sweep was refused
    assert d["rate_limited"] >= n // 2, d
    assert d["forwarded"] == 0, d
    assert "cancel_rate_limited" in p.log()
    # the limit is per client address: another client cancels its own statement at once
    app2 = marker("sweep-other")
    with p.raw(application_name=app2) as other:
        pid2, secret2 = other.backend_key
        other.query_send("select pg_sleep(30)")
        wait_active(dconn, app2)
        cancel_and_wait(p.port, pid2, secret2, src="127.0.0.2")
        assert only_error(other.read_until_rfq())["C"] == "57014"


def test_resending_a_valid_key_holds_no_descriptors(start_proxy, pg):
    """One client re-sending its own valid key once made the proxy hold 14,641 descriptors after
    6 s and open ~900 upstream cancel connections a second, until new sessions failed with
    EMFILE. Repeats of a key are coalesced and limited: descriptors stay bounded, few cancels
    reach PostgreSQL, and the proxy keeps serving."""
    # one address sends all of them: what the startup cap (--max-startup-per-address, 64 by
    # default) refuses at accept is counted with the cancels the cancel module refuses
    p = metrics_proxy(start_proxy)
    pid_proc = p.proc.pid
    with p.raw(application_name=marker("resend")) as victim:
        pid, secret = victim.backend_key
        base = Usage(pid_proc)
        upstream_before = pg.log_count("connection received")
        before = requests_counted(p.mport)
        n, held, peak = 1500, [], [0]
        lock = threading.Lock()

        def flood(count):
            for i in range(count):
                try:
                    s = open_cancel(p.port, pid, secret)
                except OSError:
                    continue
                with lock:
                    held.append(s)
                if i % 25 == 0:
                    peak[0] = max(peak[0], Usage(pid_proc).fds)
        threads = [threading.Thread(target=flood, args=(n // 4,)) for _ in range(4)]
        try:
            for t in threads:
                t.start()
            for t in threads:
                t.join(BOUND * 3)
            d = poll(lambda: (lambda d: d if sum(d.values()) >= n else None)(
                         delta(requests_counted(p.mport), before)),
                     what=f"{n} cancel requests to be counted")
            peak[0] = max(peak[0], Usage(pid_proc).fds)
        finally:
            for s in held:
                s.close()
        upstream = pg.log_count("connection received") - upstream_before
        assert not any(t.is_alive() for t in threads)
        assert peak[0] - base.fds <= CANCEL_MAX_HELD_FDS + STARTUP_PER_ADDRESS + 64, \
            (peak[0], base, d)
        assert upstream <= n // 5, f"{upstream} upstream cancel connections for {n} cancels"
        assert d["coalesced"] + d["rate_limited"] + d["refused_at_startup"] >= n // 2, d
        assert rows(victim.query("select 'still serving'")) == [("still serving",)]
    wait_usage_back(pid_proc, base, fd_margin=4, what="after the resend flood")


def peered_pair(pg, start_proxy, tmp_path, extra_peer_a=()):
    """Instances A (id 1) and B (id 2) with metrics (.mport), each peered with the other; A
    gets extra peers."""
    dsn = upstream_dsn(pg)
    a = Proxy(["--upstream", dsn], str(tmp_path), name="peer-a")
    b = Proxy(["--upstream", dsn], str(tmp_path), name="peer-b")
    for proxy in (a, b):
        proxy.mport = free_port()
        proxy.flags += ["--metrics-listen", f"127.0.0.1:{proxy.mport}"]
    a.flags += ["--peer-id", "1", "--peer", f"2=127.0.0.1:{b.port}"] + list(extra_peer_a)
    b.flags += ["--peer-id", "2", "--peer", f"1=127.0.0.1:{a.port}"]
    for proxy in (a, b):
        start_proxy.started.append(proxy)
        proxy.start()
    return a, b


def test_dead_peer_does_not_starve_cross_instance_cancels(pg, start_proxy, tmp_path, dconn,
                                                          silent_peer):
    """~70 forged cancels for a blackholed peer once filled the single peer queue and every
    legitimate cross-instance cancel was dropped for ~100 s. Each peer has its own queue: a
    cancel for a live peer lands while the dead peer's queue is full."""
    a, b = peered_pair(pg, start_proxy, tmp_path,
                       extra_peer_a=["--peer", f"3=127.0.0.1:{silent_peer.port}"])
    app = marker("xpeer")
    forged = []
    try:
        with b.raw(application_name=app) as c:
            pid, secret = c.backend_key
            assert secret >> 24 == 2
            c.query_send("select pg_sleep(30)")
            wait_active(dconn, app)
            for i in range(70):
                forged.append(open_cancel(a.port, 10000 + i, (3 << 24) | i))
            poll(silent_peer.has_connection, what="a forward to the dead peer in flight")
            # lands on A, owned by B; from another address than the 70 forged ones, which may
            # still fill 127.0.0.1's startup slots (--max-startup-per-address 64) while a slow
            # build hands them to the cancel module
            cancel_and_wait(a.port, pid, secret, src="127.0.0.2")
            msgs = c.read_until_rfq()
            assert only_error(msgs)["C"] == "57014", msgs
    finally:
        for s in forged:
            s.close()
    assert "(to peer)" in a.log()


def test_unresponsive_peer_does_not_delay_local_cancels(start_proxy, dconn, silent_peer):
    proxy = start_proxy("--peer-id", "1", "--peer", f"2=127.0.0.1:{silent_peer.port}")
    for i in range(2):  # keys with peer 2's id: forwarded to the dead peer
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=BOUND) as s:
            s.sendall(cancel_packet(4242, (2 << 24) | i))
    app = "peer-hol"
    conn = proxy.connect(autocommit=True, application_name=app)
    watcher = psycopg2.connect(dconn.dsn)
    watcher.autocommit = True  # else pg_stat_activity is one snapshot per transaction
    fired = []

    def cancel():
        wait_active(watcher, app)
        fired.append(time.monotonic())
        conn.cancel()
    t = threading.Thread(target=cancel, daemon=True)
    t.start()
    try:
        with conn.cursor() as cur, pytest.raises(psycopg2.errors.QueryCanceled):
            cur.execute("select pg_sleep(20)")
        delay = time.monotonic() - fired[0]
    finally:
        t.join(BOUND)
        conn.close()
        watcher.close()
    assert delay < 2, f"a local cancel took {delay:.1f} s behind cancels for a dead peer"


def test_cancel_routed_to_own_address_does_not_circulate(pg, start_proxy, tmp_path):
    """`--peer 2=<own address>` once made one 16-byte cancel circulate for ever, one hop every
    few seconds. A forwarded cancel is only matched locally: one hop, then unknown_key."""
    mport = free_port()
    p = Proxy(["--upstream", upstream_dsn(pg), "--metrics-listen", f"127.0.0.1:{mport}",
               "--peer-id", "1"], str(tmp_path), name="self-peer")
    p.flags += ["--peer", f"2=127.0.0.1:{p.port}"]
    start_proxy.started.append(p)
    p.start()
    before = cancel_counts(mport)
    cancel_and_wait(p.port, 4242, (2 << 24) | 0x5a5a)
    d = poll(lambda: (lambda d: d if d["unknown_key"] >= 1 else None)(
        delta(cancel_counts(mport), before)), what="the looped cancel to end as unknown_key")
    assert d["unknown_key"] == 1 and d["forwarded"] == 1, d
    assert p.log().count("(to peer)") == 1, p.log()[-2000:]


@pytest.mark.parametrize("signals", [1, 2], ids=["one_sigterm", "second_sigterm"])
def test_sigterm_does_not_wait_for_queued_peer_forwards(start_proxy, silent_peer, signals):
    """SIGTERM once hung 85-96 s past --shutdown-timeout while queued forwards to a dead peer
    timed out one by one, and a second SIGTERM was ignored. Queued forwards are dropped and the
    one in flight is interrupted: the process exits within the bound either way."""
    p = start_proxy("--peer-id", "1", "--peer", f"2=127.0.0.1:{silent_peer.port}",
                    "--shutdown-timeout", "1s")
    forged = []
    try:
        for i in range(70):
            forged.append(open_cancel(p.port, 20000 + i, (2 << 24) | i))
        poll(silent_peer.has_connection, what="a forward to the dead peer in flight")
        p.signal(signal.SIGTERM)
        if signals == 2:
            poll(lambda: not port_listening(p.port), what="the first SIGTERM to take effect")
            p.signal(signal.SIGTERM)
        assert p.wait(timeout=BOUND) == 0
    finally:
        for s in forged:
            s.close()


def test_peer_forwards_are_not_rate_limited(pg, start_proxy, tmp_path):
    """Every cancel an instance forwards arrives from its address: the owner must not count
    them against that address. 150 cancels from three clients (each within its burst) cross
    from B to A, and A refuses none of them."""
    a, b = peered_pair(pg, start_proxy, tmp_path)
    ma, mb = a.mport, b.mport
    before_a, before_b = cancel_counts(ma), cancel_counts(mb)
    failures = []

    def client(src):
        for i in range(50):
            try:
                cancel_and_wait(b.port, 30000 + i, (1 << 24) | i, src=src)
            except (OSError, AssertionError) as e:
                failures.append(repr(e))
    threads = [threading.Thread(target=client, args=(f"127.0.0.{k}",)) for k in (2, 3, 4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(BOUND * 3)
    assert failures == [], failures[:3]
    da = counted(ma, before_a, 150)
    db = counted(mb, before_b, 150)
    assert da["unknown_key"] == 150 and da["rate_limited"] == 0, da
    assert db["forwarded"] == 150 and db["rate_limited"] == 0, db
