"""Upstream faults: PostgreSQL restarted under load, backends killed mid-transaction and
mid-result, refused / blackholed / stalled upstreams, and COMMIT racing a kill.

Destructive tests (restart) use their own cluster, never the suite's shared one."""
import os
import random
import select
import socket
import threading
import time

import psycopg2
import pytest

from pgwp import marker, backends_detail as backends
import pgwp
from conftest import upstream_dsn
from pgwp import (BOUND, PG_BIN, RawClient, Usage, describe, errors, free_port, only_error,
                  poll, proxy_only, rows, scalar, tags, wait_usage_back)

pytestmark = proxy_only

HUGE = "select repeat('x',1000) from generate_series(1,2000000)"




def assert_fatal_end(msgs, codes=("57P01", "08006")):
    """The stream ends with a FATAL (and nothing after it but the close)."""
    errs = [m for m in msgs if m.type == "E"]
    assert errs, f"no error before the close: {describe(msgs[-5:])}"
    last = errs[-1].fields
    assert last["S"] == "FATAL" and last["C"] in codes, describe(msgs[-5:])
    assert msgs[-1].type == "E", f"messages after the FATAL: {describe(msgs[-5:])}"


# ---------------------------------------------------------------------------------------------
# PostgreSQL restarted under load (own cluster)


@pytest.fixture(scope="module")
def own_pg():
    cluster = pgwp.PgCluster()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


def restart(cluster):
    cluster._run([os.path.join(PG_BIN, "pg_ctl"), "-D", cluster.data, "-l", cluster.log,
                  "-m", "fast", "-w", "-t", "60", "restart"], timeout=90)


def test_postgres_restart_under_load(start_proxy, own_pg):
    p = start_proxy(dsn=upstream_dsn(own_pg))
    with p.raw() as c:
        assert rows(c.query("select 1")) == [("1",)]
    base = Usage(p.proc.pid)
    n = 4
    started = threading.Barrier(n + 1, timeout=BOUND)
    outcomes = [None] * n
    stop = threading.Event()

    def load(i):
        conn = None
        try:
            conn = p.connect(autocommit=True)
            cur = conn.cursor()
            cur.execute("select 1")
            started.wait()
            while not stop.is_set():
                cur.execute("select count(*) from generate_series(1, 20000)")
                cur.fetchone()
            outcomes[i] = ("no error", None, None)
        except psycopg2.Error as e:
            outcomes[i] = (type(e).__name__, e.pgcode, time.monotonic())
        except BaseException as e:  # noqa: BLE001 - reported below
            outcomes[i] = (repr(e), None, time.monotonic())
        finally:
            if conn is not None:
                conn.close()

    threads = [threading.Thread(target=load, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    idle, busy = p.raw(), p.raw()  # raw clients see exactly what the proxy sends
    try:
        busy.query_send("select pg_sleep(60)")
        started.wait()
        t0 = time.monotonic()
        restart(own_pg)
        back = time.monotonic()
        for c in (idle, busy):
            assert_fatal_end(c.read_until_closed())
        for t in threads:
            t.join(timeout=max(1, t0 + 30 - time.monotonic()))
        hung = [i for i, t in enumerate(threads) if t.is_alive()]
        assert not hung, f"clients {hung} still waiting 30 s after the restart began"
    finally:
        idle.close()
        busy.close()
        stop.set()
        if any(t.is_alive() for t in threads):
            p.kill()  # unblocks psycopg2 stuck in libpq
    print(f"restart: {outcomes} t0={t0:.2f} back={back:.2f}")
    for i, (what, code, when) in enumerate(outcomes):
        assert what in ("OperationalError", "AdminShutdown", "DatabaseError",
                        "InterfaceError"), (i, what, code)
        assert code in (None, "57P01", "08006", "08001", "57P03"), (i, what, code)
        assert when - t0 < back - t0 + BOUND, (i, what, when - t0)

    def works():
        try:
            conn = p.connect(autocommit=True, connect_timeout=5)
        except psycopg2.OperationalError:
            return False
        try:
            return scalar(conn, "select 'back'") == "back"
        finally:
            conn.close()

    poll(works, timeout=30, what="new clients to be served once PostgreSQL is back")
    for _ in range(3):
        assert works()
    assert p.alive()
    wait_usage_back(p.proc.pid, base, what="after the restart")


# ---------------------------------------------------------------------------------------------
# Backends killed (shared cluster: only our own backends are touched)


@pytest.fixture
def race_table(dconn):
    with dconn.cursor() as cur:
        cur.execute("create table if not exists fault_rows (id text primary key)")
    return "fault_rows"


def test_backend_killed_mid_transaction(start_proxy, dconn, race_table):
    p = start_proxy()
    key = marker("midtx")
    with p.raw() as c:
        pid = int(rows(c.query("select pg_backend_pid()"))[0][0])
        assert rows(c.query("begin")) == []
        msgs = c.query(f"insert into {race_table} values ('{key}')")
        assert tags(msgs) == ["INSERT 0 1"] and msgs[-1].payload == b"T"
        assert scalar(dconn, "select pg_terminate_backend(%s)", pid) is True
        msgs = c.read_until_closed()
        assert_fatal_end(msgs)
    assert scalar(dconn, f"select count(*) from {race_table} where id = %s", key) == 0
    with p.raw() as c:
        assert rows(c.query("select 'fine'")) == [("fine",)]


def test_backend_killed_mid_result(start_proxy, dconn):
    p = start_proxy("--max-rows", 0, "--max-bytes", 0)
    app = marker("midres")
    with p.raw(application_name=app) as c:
        c.query_send(HUGE)
        poll(lambda: any(b[2] == "ClientWrite" for b in backends(dconn, app)), timeout=15,
             what="the upstream to block writing the result")
        pid = backends(dconn, app)[0][0]
        assert scalar(dconn, "select pg_terminate_backend(%s)", pid) is True
        msgs = c.read_until_closed()
    assert any(m.type == "D" for m in msgs)
    assert not any(m.type in "CZ" for m in msgs), "the cut result looked complete"
    assert_fatal_end(msgs)
    poll(lambda: backends(dconn, app) == [], what="the upstream session to end")


def test_commit_racing_a_kill(start_proxy, dconn, race_table, direct):
    """Never: COMMIT reported success and the row is absent. (Killed before COMMIT: error and no
    row; killed after: success and the row; either is fine.)"""
    p = start_proxy()
    killer_conn = direct.connect(autocommit=True)
    outcomes = {"committed": 0, "failed": 0}
    rnd = random.Random(99)
    try:
        for i in range(20):
            key = marker(f"race{i}")
            c = p.raw()
            try:
                pid = int(rows(c.query("select pg_backend_pid()"))[0][0])
                c.query("begin")
                assert tags(c.query(f"insert into {race_table} values ('{key}')")) == \
                    ["INSERT 0 1"]
                go = threading.Barrier(2, timeout=BOUND)
                # jitter: the kill lands before, during or after the COMMIT
                delay = rnd.uniform(-0.003, 0.003)

                def kill():
                    go.wait()
                    if delay > 0:
                        time.sleep(delay)
                    with killer_conn.cursor() as cur:
                        cur.execute("select pg_terminate_backend(%s)", (pid,))

                t = threading.Thread(target=kill, daemon=True)
                t.start()
                go.wait()
                if delay < 0:
                    time.sleep(-delay)
                c.query_send("commit")
                msgs = c.read_until_rfq()
                t.join(timeout=BOUND)
            finally:
                c.close()
            success = (msgs and msgs[-1].type == "Z" and tags(msgs) == ["COMMIT"]
                       and not errors(msgs))
            poll(lambda: scalar(dconn, "select count(*) from pg_stat_activity where pid = %s",
                                pid) == 0, what="the killed backend to exit")
            present = scalar(dconn, f"select count(*) from {race_table} where id = %s", key)
            assert not (success and present == 0), \
                f"iteration {i}: COMMIT reported success but the row is absent: {describe(msgs)}"
            if not success:
                for e in errors(msgs):
                    assert e["S"] == "FATAL" and e["C"] in ("57P01", "08006"), describe(msgs)
            outcomes["committed" if success else "failed"] += 1
    finally:
        killer_conn.close()
    print(f"COMMIT vs kill: {outcomes}")


# ---------------------------------------------------------------------------------------------
# Upstream unreachable


def test_upstream_refused_is_quick(start_proxy):
    port = free_port()  # nothing listens there
    p = start_proxy(dsn=f"host=127.0.0.1 port={port} dbname=postgres user=postgres")
    for _ in range(3):
        t0 = time.monotonic()
        with RawClient(p.host, p.port) as c:
            err = only_error(c.startup(user="postgres", database="postgres"))
            assert c.read_until_closed() == []
        assert (err["S"], err["C"]) == ("FATAL", "08001"), err
        assert "refused" in err["M"], err
        assert time.monotonic() - t0 < 5
    assert p.alive()


class Blackhole:
    """A TCP port on 127.0.0.1 that never answers: a listening socket nobody accepts from
    (backlog=None), or one whose accept queue is full, so SYNs go unanswered (backlog=0)."""

    def __init__(self, backlog=None):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.fillers = []
        if backlog is None:
            self.sock.listen(16)
        else:
            self.sock.listen(backlog)
            for _ in range(4):  # fill the accept queue
                s = socket.socket()
                s.setblocking(False)
                s.connect_ex(("127.0.0.1", self.port))
                self.fillers.append(s)

    def close(self):
        for s in self.fillers:
            s.close()
        self.sock.close()


@pytest.mark.parametrize("backlog", [None, 0], ids=["accepts-never-answers", "syn-dropped"])
def test_blackholed_upstream_times_out(start_proxy, backlog):
    hole = Blackhole(backlog)
    try:
        p = start_proxy(dsn=f"host=127.0.0.1 port={hole.port} dbname=postgres user=postgres "
                            "connect_timeout=2")
        base = Usage(p.proc.pid)
        with RawClient(p.host, p.port, timeout=30) as c:
            t0 = time.monotonic()
            err = only_error(c.startup(user="postgres", database="postgres"))
            elapsed = time.monotonic() - t0
            assert c.read_until_closed() == []
        assert (err["S"], err["C"]) == ("FATAL", "08001"), err
        assert "timeout" in err["M"], err
        assert 1.5 <= elapsed < 10, elapsed  # connect_timeout=2: about 2 s
        with RawClient(p.host, p.port) as c:  # the proxy serves on (the next one waits too)
            c.send_startup(user="postgres", database="postgres")
        assert p.alive()
        wait_usage_back(p.proc.pid, base, fd_margin=0, timeout=15,
                        what="after the upstream timeouts")
    finally:
        hole.close()


# ---------------------------------------------------------------------------------------------
# Upstream that stalls mid-session


class Relay:
    """A TCP relay 127.0.0.1:port -> upstream that can be frozen: while frozen it moves no byte
    in either direction (and answers nothing on new connections), like a hung server or a
    network partition without resets."""

    def __init__(self, host, port):
        self.target = (host, port)
        self.lsock = socket.socket()
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(64)
        self.port = self.lsock.getsockname()[1]
        self.running = threading.Event()
        self.running.set()  # cleared = frozen
        self.closing = False
        self.socks = []
        self.threads = [threading.Thread(target=self._accept, daemon=True)]
        self.threads[0].start()

    def freeze(self):
        self.running.clear()

    def thaw(self):
        self.running.set()

    def _accept(self):
        while not self.closing:
            try:
                c, _ = self.lsock.accept()
            except OSError:
                return
            try:
                u = socket.create_connection(self.target, timeout=BOUND)
            except OSError:
                c.close()
                continue
            self.socks += [c, u]
            t = threading.Thread(target=self._pump, args=(c, u), daemon=True)
            t.start()
            self.threads.append(t)

    def _pump(self, a, b):
        peers = {a: b, b: a}
        try:
            while not self.closing:
                if not self.running.wait(0.1):
                    continue
                r, _, _ = select.select([a, b], [], [], 0.1)
                for s in r:
                    if not self.running.is_set():
                        break
                    data = s.recv(65536)
                    if not data:
                        return
                    peers[s].sendall(data)
        except OSError:
            return
        finally:
            a.close()
            b.close()

    def close(self):
        self.closing = True
        self.running.set()
        self.lsock.close()
        for s in self.socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for t in self.threads:
            t.join(timeout=5)


def test_upstream_stalls_mid_session(start_proxy, pg):
    relay = Relay(pg.host, pg.port)
    try:
        p = start_proxy("--query-timeout", "2s",
                        dsn=f"host=127.0.0.1 port={relay.port} dbname=postgres user=postgres")
        with p.raw() as c:
            assert rows(c.query("select 'before'")) == [("before",)]
            c.sock.settimeout(40)  # query timeout + the proxy's drain grace, with room
            relay.freeze()
            t0 = time.monotonic()
            c.query_send("select 'during'")
            msgs = c.read_until_rfq()
            elapsed = time.monotonic() - t0
            errs = errors(msgs)
            assert errs, f"no error from a stalled upstream: {describe(msgs)}"
            e = errs[-1]
            assert e["C"] == "57014" or e["S"] == "FATAL", describe(msgs)
            assert elapsed < 30, elapsed
            print(f"stalled upstream: {describe(msgs)} after {elapsed:.1f} s")
            if msgs[-1].type != "Z":  # FATAL: the session is over
                assert c.read_until_closed() == []
        relay.thaw()
        # after the stall the proxy still serves, and its cancels work again
        with p.raw() as c:
            assert rows(c.query("select 'after'")) == [("after",)]
            t0 = time.monotonic()
            err = only_error(c.query("select pg_sleep(30)"))
            assert err["C"] == "57014", err
            assert time.monotonic() - t0 < 20
        assert p.alive()
    finally:
        relay.close()
