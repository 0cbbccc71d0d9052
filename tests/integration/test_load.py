"""Load and back-pressure: the connection ceiling under use, many short sessions (leak check),
floods of silent connections, and clients that stop reading a huge result."""
import resource
import socket
import threading
import time

import pytest

from pgwp import marker, backends_detail as backends
from pgwp import (BOUND, LimitedProxy, RawClient, Usage, describe, only_error, poll, proc_rss_kb,
                  proxy_only, rows, scalar, startup_or_53300, wait_peer_closed, wait_usage_back)

pytestmark = proxy_only

HUGE = "select repeat('x',1000) from generate_series(1,2000000)"  # ~2 GB of DataRows




def session(p, **params):
    """Startup, one query, Terminate."""
    with RawClient(p.host, p.port) as c:
        msgs = c.startup(user=p.user, database=p.dbname, **params)
        assert msgs and msgs[-1].type == "Z", describe(msgs)
        assert rows(c.query("select 1")) == [("1",)]
        c.terminate()
        c.read_until_closed()


def run_sessions(p, total, parallel):
    errs = []

    def worker(n):
        try:
            for _ in range(n):
                session(p)
        except BaseException as e:  # noqa: BLE001 - reported below
            errs.append(repr(e))

    per = [total // parallel + (1 if i < total % parallel else 0) for i in range(parallel)]
    threads = [threading.Thread(target=worker, args=(n,), daemon=True) for n in per]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "session threads hung"
    assert errs == [], errs[:5]


def warm(p):
    run_sessions(p, 40, 10)


# ---------------------------------------------------------------------------------------------
# Connection ceiling


def test_max_connections_5(start_proxy, dconn):
    p = start_proxy("--max-connections", 5)
    clients = [p.raw() for _ in range(5)]
    try:
        for i, c in enumerate(clients):
            assert rows(c.query(f"select {i}")) == [(str(i),)]
        for _ in range(3):
            with RawClient(p.host, p.port) as sixth:
                err = only_error(sixth.startup(user="postgres", database="postgres"))
                assert (err["S"], err["C"]) == ("FATAL", "53300"), err
                assert sixth.read_until_closed() == []
            for i, c in enumerate(clients):  # the five keep working
                assert rows(c.query(f"select {i} + 10")) == [(str(i + 10),)]
        clients.pop().close()

        clients.append(poll(lambda: startup_or_53300(p), what="the freed slot"))
        assert rows(clients[-1].query("select 'in'")) == [("in",)]
    finally:
        for c in clients:
            c.close()


def test_upstream_out_of_connection_slots(start_proxy, dconn):
    """PostgreSQL's max_connections reached behind a proxy that would admit more: the excess
    clients get PostgreSQL's FATAL 53300 relayed, the open sessions keep working, and nothing
    stays behind."""
    p = start_proxy("--max-connections", 200)
    warm(p)
    base = Usage(p.proc.pid)
    max_conn = int(scalar(dconn, "show max_connections"))
    clients, refused = [], []
    try:
        for _ in range(max_conn + 5):
            c = RawClient(p.host, p.port)
            msgs = c.startup(user="postgres", database="postgres")
            if msgs and msgs[-1].type == "Z":
                clients.append(c)
                continue
            c.close()
            refused.append(only_error(msgs))
            if len(refused) == 3:
                break
        assert refused, f"{len(clients)} sessions opened, none refused"
        for err in refused:
            assert (err["S"], err["C"]) == ("FATAL", "53300"), err
        for i, c in enumerate(clients):
            assert rows(c.query(f"select {i}")) == [(str(i),)]
    finally:
        for c in clients:
            c.close()
    poll(lambda: not backends(dconn, "[postgres@127.0.0.1"), what="upstream backends to go")
    session(p)
    wait_usage_back(p.proc.pid, base, what="after running out of upstream slots")


# ---------------------------------------------------------------------------------------------
# Many sessions: nothing may accumulate


def test_1000_sessions_leak_nothing(start_proxy, dconn):
    p = start_proxy()
    pid = p.proc.pid
    warm(p)
    poll(lambda: not backends(dconn, "[postgres@127.0.0.1"), what="warm-up backends to go")
    base = Usage(pid)
    run_sessions(p, 1000, 20)
    after = wait_usage_back(pid, base, fd_margin=0, rss_margin_kb=8 * 1024,
                            what="after 1,000 sessions")
    poll(lambda: not backends(dconn, "[postgres@127.0.0.1"), what="upstream backends to go")
    print(f"1000 sessions: before {base}, after {after}")


# ---------------------------------------------------------------------------------------------
# Open-file limit: two descriptors per session


def open_files_limit(pid):
    """(soft, hard) "Max open files" of a process, as the kernel reports them."""
    with open(f"/proc/{pid}/limits") as f:
        for line in f:
            if line.startswith("Max open files"):
                soft, hard = line.split()[3:5]
                return int(soft), int(hard) if hard != "unlimited" else resource.RLIM_INFINITY
    raise AssertionError(f"no open-file limit for {pid}")


def limited_proxy(pg, tmp_path, nofile, max_connections):
    dsn = f"host=127.0.0.1 port={pg.port} dbname=postgres user=postgres"
    return LimitedProxy(nofile, ["--upstream", dsn, "--max-connections", str(max_connections)],
                        str(tmp_path)).start()


def test_open_file_limit_raised_for_max_connections(start_proxy, tmp_path):
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    want = 1000 * 2 + 1200  # two per session, plus room for libpq, logs and listeners
    if hard != resource.RLIM_INFINITY and hard < want:
        pytest.skip(f"hard open-file limit {hard} is below {want}")
    hard_arg = "unlimited" if hard == resource.RLIM_INFINITY else hard
    p = limited_proxy(start_proxy.pg, tmp_path, f"256:{hard_arg}", 1000)
    try:
        assert open_files_limit(p.proc.pid) == (want, hard)
        with p.raw() as c:
            assert rows(c.query("select 'served'")) == [("served",)]
        assert "fd_limit" not in p.log()
    finally:
        problems = p.stop()
    assert problems == []


def test_open_file_limit_too_low_is_reported(start_proxy, tmp_path):
    p = limited_proxy(start_proxy.pg, tmp_path, "1024:1024", 1000)
    try:
        assert open_files_limit(p.proc.pid) == (1024, 1024)
        log = p.log()
        assert "fd_limit" in log and "1024" in log and "3200" in log, log
        assert "--max-connections 1000" in log, log
        with p.raw() as c:  # a warning, not a refusal to run
            assert rows(c.query("select 'served'")) == [("served",)]
    finally:
        problems = p.stop()
    assert problems == []


def open_silent(p, n):
    socks = []
    try:
        for _ in range(n):
            socks.append(socket.create_connection((p.host, p.port), timeout=BOUND))
    except BaseException:
        for s in socks:
            s.close()
        raise
    return socks


def test_flood_of_200_silent_connections(start_proxy):
    # from one address: past the per-address startup cap (test_admission.py), raised here
    p = start_proxy("--startup-timeout", "1s", "--max-startup-per-address", 1000)
    warm(p)
    base = Usage(p.proc.pid)
    socks = open_silent(p, 200)
    try:
        with p.raw() as c:  # served during the flood
            assert rows(c.query("select 'served'")) == [("served",)]
        for s in socks:
            assert wait_peer_closed(s, timeout=10) == b""
        with p.raw() as c:
            assert rows(c.query("select 'after'")) == [("after",)]
    finally:
        for s in socks:
            s.close()
    wait_usage_back(p.proc.pid, base, rss_margin_kb=8 * 1024, what="after the flood")


# ---------------------------------------------------------------------------------------------
# Back-pressure: a client that stops reading a huge result


def test_non_reading_client_bounds_memory_and_stops_upstream(start_proxy, dconn):
    p = start_proxy("--max-rows", 0, "--max-bytes", 0)
    warm(p)
    pid = p.proc.pid
    base_rss = proc_rss_kb(pid)
    app = marker("noread")
    c = p.raw(application_name=app)
    try:
        c.query_send(HUGE)
        # PostgreSQL itself ends up blocked writing to the proxy: the proxy stopped reading
        poll(lambda: any(b[2] == "ClientWrite" for b in backends(dconn, app)), timeout=15,
             what="the upstream backend to block in ClientWrite")
        peak = 0
        for _ in range(20):  # watch a while: memory must not creep up
            peak = max(peak, proc_rss_kb(pid) - base_rss)
            time.sleep(0.05)
        assert peak < 64 * 1024, f"proxy RSS grew by {peak} kB behind a non-reading client"
        assert any(b[1] == "active" and b[3] == HUGE for b in backends(dconn, app))
    finally:
        c.close()
    poll(lambda: not any(b[3] == HUGE and b[1] == "active" for b in backends(dconn, app)),
         timeout=15, what="the huge query to stop upstream after the client closed")
    poll(lambda: backends(dconn, app) == [], timeout=15, what="the upstream session to end")


def test_client_write_timeout_closes_non_reading_client(start_proxy, dconn):
    p = start_proxy("--max-rows", 0, "--max-bytes", 0, "--client-write-timeout", "2s")
    app = marker("stall")
    c = p.raw(application_name=app)
    try:
        c.query_send(HUGE)
        t0 = time.monotonic()
        poll(lambda: backends(dconn, app) == [], timeout=20,
             what="the proxy to close the stalled session (upstream backend gone)")
        assert time.monotonic() - t0 >= 1  # not before the client stalled for a while
        data = wait_peer_closed(c.sock, timeout=30)  # drain what was in flight, then EOF
        assert len(data) < 2 ** 31
    finally:
        c.close()
    assert "client_stalled" in p.log()
    with p.raw() as c2:
        assert rows(c2.query("select 'next'")) == [("next",)]
    assert scalar(dconn, "select count(*) from pg_stat_activity where query = %s "
                  "and state = 'active'", HUGE) == 0
