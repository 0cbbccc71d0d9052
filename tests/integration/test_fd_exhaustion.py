"""At the open-file limit (EMFILE) the accept loop must back off, not spin: it ran at 100% CPU and
logged ~400k lines a second while connections waited in the listen backlog."""
import os
import socket
import time

from conftest import upstream_dsn
from pgwp import (BOUND, LimitedProxy, RawClient, log_records, poll, proc_fds, proxy_only,
                  rows)

pytestmark = proxy_only

NOFILE = 96
HOLD_S = 2  # the window over which the proxy's CPU time is measured
FLOOD = 150  # more connections than the proxy has descriptors


def cpu_seconds(pid):
    """utime + stime of process `pid` (all its threads), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def accept_failures(p):
    """Log lines about failing to accept (main logs `accept_failed: Too many open files`)."""
    return [r for r in log_records(p.log())
            if "accept" in r.get("event", "") or "Too many open files" in r["line"]]


def served(p):
    try:
        with RawClient(p.host, p.port) as c:
            msgs = c.startup(user="postgres", database="postgres")
            return bool(msgs) and msgs[-1].type == "Z" and \
                rows(c.query("select 'served'")) == [("served",)]
    except OSError:
        return False


def test_accept_at_the_descriptor_limit_does_not_spin(pg, tmp_path):
    p = LimitedProxy(f"{NOFILE}:{NOFILE}",
                     ["--upstream", upstream_dsn(pg), "--max-connections", "20",
                      "--startup-timeout", "60s",
                      # the flood comes from one address: let it reach the descriptor limit
                      "--max-startup-per-address", "1000"], str(tmp_path)).start()
    try:
        flood_at_the_limit(p)
        poll(lambda: served(p), what="a new session to be accepted once the flood is gone")
    finally:
        problems = p.stop()
    assert problems == [], problems


def flood_at_the_limit(p):
    pid = p.proc.pid
    flood = []
    try:
        keep = p.raw()
        assert rows(keep.query("select 'kept'")) == [("kept",)]
        for _ in range(FLOOD):  # no startup: each holds one descriptor of the proxy
            flood.append(socket.create_connection((p.host, p.port), timeout=BOUND))
        # the proxy took what its limit allows; the rest wait in the listen backlog
        poll(lambda: accept_failures(p) or proc_fds(pid) >= NOFILE - 2,
             what=lambda: f"the proxy to reach its descriptor limit ({proc_fds(pid)} open)")
        cpu0, t0 = cpu_seconds(pid), time.monotonic()
        time.sleep(HOLD_S)  # a measurement window, not a wait for a condition
        cpu, wall = cpu_seconds(pid) - cpu0, time.monotonic() - t0
        lines = accept_failures(p)
        n, first = len(lines), lines[0]["line"] if lines else None
        del lines  # a failing assert would print them all
        seen = f"{cpu:.2f} s of CPU and {n} accept-failure log lines (e.g. {first!r})"
        assert n <= 10, f"in {wall:.1f} s at EMFILE the proxy used {seen}"
        assert cpu < 0.2 * wall, f"in {wall:.1f} s at EMFILE the proxy used {seen}"
        assert rows(keep.query("select 'still served'")) == [("still served",)]
        keep.close()
    finally:
        for s in flood:
            s.close()
