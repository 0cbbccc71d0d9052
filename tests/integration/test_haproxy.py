"""Scale-out: two pgwire-proxy instances behind HAProxy (TCP mode, round robin, health checks
on /healthz). A CancelRequest goes through HAProxy too, so it lands on either instance; the
instance id in the cancel key's top byte lets the wrong one forward it to its peer. The setup
is documented in docs/scale-out.md."""
import os
import shutil
import socket
import subprocess
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import psycopg2
import psycopg2.errors
import pytest

from conftest import upstream_dsn
from pgwp import (BOUND, REPO, Proxy, RawClient, Slowloris, _die_with_parent, free_port, metric,
                  poll, proxy_only, rows, scrape, wait_active)

pytestmark = [proxy_only,
              pytest.mark.skipif(not shutil.which("haproxy"),
                                 reason="haproxy not installed (Debian package haproxy)")]

ITERATIONS = 50
PARALLEL = 5          # sessions canceled at the same time
CANCEL_BOUND = 5      # seconds from conn.cancel() to the client seeing 57014

HAPROXY_CFG = """\
global
    maxconn 512
    stats socket {sock} mode 600 level admin

defaults
    mode tcp
    timeout connect 5s
    timeout client 1h
    timeout server 1h
    timeout check 2s

frontend pgwire
    bind 127.0.0.1:{port}
    default_backend pgwire_proxies

backend pgwire_proxies
    balance roundrobin
    option httpchk GET /healthz
    http-check expect status 200
    default-server inter 500ms fall 2 rise 1 on-marked-down shutdown-sessions
    server proxy1 127.0.0.1:{p1} check port {m1}
    server proxy2 127.0.0.1:{p2} check port {m2}
"""


class Haproxy:
    def __init__(self, tmp_path, servers):
        self.port = free_port()
        self.sock = str(tmp_path / "haproxy.sock")
        self.cfg = tmp_path / "haproxy.cfg"
        (a, ma), (b, mb) = servers
        self.cfg.write_text(HAPROXY_CFG.format(sock=self.sock, port=self.port, p1=a, m1=ma,
                                               p2=b, m2=mb))
        self.log_path = tmp_path / "haproxy.log"
        self.proc = None

    def start(self):
        check = subprocess.run(["haproxy", "-c", "-f", str(self.cfg)], capture_output=True,
                               text=True, timeout=BOUND)
        assert check.returncode == 0, f"haproxy rejects its config:\n{check.stderr}"
        self.logf = open(self.log_path, "wb")
        self.proc = subprocess.Popen(["haproxy", "-f", str(self.cfg), "-db"],
                                     stdin=subprocess.DEVNULL, stdout=self.logf,
                                     stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)
        return self

    def admin(self, command):
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(BOUND)
            s.connect(self.sock)
            s.sendall(command.encode() + b"\n")
            out = b""
            while chunk := s.recv(65536):
                out += chunk
        return out.decode()

    def server_states(self):
        """{server name: (status, check status)} from `show stat`, {} while starting."""
        if self.proc.poll() is not None:
            pytest.fail(f"haproxy exited with {self.proc.returncode}:\n{self.log()}")
        try:
            text = self.admin("show stat")
        except OSError:
            return {}
        lines = [ln for ln in text.splitlines() if ln]
        if not lines or not lines[0].startswith("# "):
            return {}
        cols = lines[0][2:].split(",")
        out = {}
        for ln in lines[1:]:
            row = dict(zip(cols, ln.split(",")))
            if row.get("pxname") == "pgwire_proxies" and row.get("svname") not in (
                    "FRONTEND", "BACKEND"):
                out[row["svname"]] = (row["status"], row["check_status"])
        return out

    def log(self):
        self.logf.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc:
            self.logf.close()


@pytest.fixture
def cluster(pg, start_proxy, tmp_path):
    """Two peered proxies (ids 1 and 2) with metrics, and HAProxy in front of them."""
    dsn = upstream_dsn(pg)
    metrics = [free_port(), free_port()]
    proxies = [Proxy(["--upstream", dsn, "--metrics-listen", f"127.0.0.1:{m}"], str(tmp_path),
                     name=f"peer{i + 1}") for i, m in enumerate(metrics)]
    for i, p in enumerate(proxies):
        other = proxies[1 - i]
        p.flags += ["--peer-id", str(i + 1), "--peer", f"{2 - i}=127.0.0.1:{other.port}"]
    for p in proxies:
        start_proxy.started.append(p)  # the factory stops them (and reports problems)
        p.start()
    ha = Haproxy(tmp_path, [(p.port, m) for p, m in zip(proxies, metrics)]).start()
    try:
        poll(lambda: ha.server_states() == {"proxy1": ("UP", "L7OK"),
                                            "proxy2": ("UP", "L7OK")},
             what="both proxies UP with a passing /healthz check in HAProxy")
        yield ha, proxies, metrics
    finally:
        ha.stop()


def test_haproxy_config_is_valid(tmp_path):
    """The tests' configuration and the example in docs/scale-out.md both pass `haproxy -c`."""
    ha = Haproxy(tmp_path, [(free_port(), free_port()), (free_port(), free_port())])
    doc = open(os.path.join(REPO, "docs", "scale-out.md")).read()
    example = doc.split("```haproxy\n", 1)[1].split("```", 1)[0]
    (tmp_path / "doc.cfg").write_text(example)
    for cfg in (ha.cfg, tmp_path / "doc.cfg"):
        r = subprocess.run(["haproxy", "-c", "-f", str(cfg)], capture_output=True, text=True,
                           timeout=BOUND)
        assert r.returncode == 0, f"{cfg}: {r.stderr}"


def cancel_one(ha, direct_dsn, i):
    """A session through HAProxy runs pg_sleep(30); psycopg2's conn.cancel() sends the
    CancelRequest to the same host:port, i.e. HAProxy, which may pick the other instance.
    Returns (sqlstate, seconds from the cancel to the error, upstream pid)."""
    app = f"ha-{i}-{uuid.uuid4().hex[:6]}"
    conn = psycopg2.connect(host="127.0.0.1", port=ha.port, user="postgres", dbname="postgres",
                            application_name=app, connect_timeout=10)
    watcher = psycopg2.connect(direct_dsn)
    watcher.autocommit = True
    fired = []

    def canceller():
        try:
            wait_active(watcher, app)
            fired.append(time.monotonic())
            conn.cancel()
        except BaseException as e:  # reported below
            fired.append(e)
    t = threading.Thread(target=canceller, daemon=True)
    try:
        t.start()
        state = None
        with conn.cursor() as cur:
            try:
                cur.execute("select pg_sleep(30)")
            except psycopg2.Error as e:
                state = e.pgcode
        done = time.monotonic()
        t.join(BOUND)
        assert fired and not isinstance(fired[0], BaseException), fired
        conn.rollback()
        with conn.cursor() as cur:  # the session survives the cancel
            cur.execute("select 1")
        return state, done - fired[0], conn.info.backend_pid
    finally:
        conn.close()
        watcher.close()


def cancel_counts(port):
    m = scrape(port)
    return {o: metric(m, "pgwire_proxy_cancel_requests_total", outcome=o)
            for o in ("forwarded", "unknown_key", "failed")}


def test_cancel_through_haproxy_reaches_the_right_instance(cluster, direct):
    ha, proxies, metrics = cluster
    direct_dsn = direct.dsn()
    start = time.monotonic()
    with ThreadPoolExecutor(PARALLEL) as pool:
        results = list(pool.map(lambda i: cancel_one(ha, direct_dsn, i), range(ITERATIONS)))
    elapsed = time.monotonic() - start

    states = [r[0] for r in results]
    assert states == ["57014"] * ITERATIONS, states
    slow = [round(r[1], 2) for r in results if r[1] >= CANCEL_BOUND]
    assert not slow, f"cancels slower than {CANCEL_BOUND} s: {slow}"

    # Every CancelRequest was counted where HAProxy delivered it; one that landed on the wrong
    # instance was forwarded to the peer, which counts it again when it cancels locally.
    def to_peer():
        return sum(p.log().count("(to peer)") for p in proxies)

    def settled():
        counts = [cancel_counts(m) for m in metrics]
        total = sum(c["forwarded"] for c in counts)
        return counts if total == ITERATIONS + to_peer() else None
    counts = poll(settled, what="cancel counters to settle")
    assert all(c["unknown_key"] == 0 and c["failed"] == 0 for c in counts), counts
    assert all(c["forwarded"] > 0 for c in counts), counts  # sessions on both instances
    assert 0 < to_peer() < ITERATIONS + 1, "some cancels must have crossed instances"
    print(f"{ITERATIONS} cancels in {elapsed:.1f} s; {to_peer()} routed to the peer; "
          f"counters {counts}")


def test_instance_id_is_the_top_byte_of_the_cancel_key(cluster):
    ha, proxies, _ = cluster
    from pgwp import RawClient
    seen = set()
    for _ in range(4):  # round robin: both instances within a few connections
        with RawClient("127.0.0.1", ha.port) as c:
            msgs = c.startup(user="postgres", database="postgres")
            assert msgs[-1].type == "Z"
            pid, secret = c.backend_key
            seen.add(secret >> 24)
    assert seen == {1, 2}


def test_haproxy_marks_a_stopped_instance_down(cluster):
    ha, proxies, _ = cluster
    proxies[1].stop()
    poll(lambda: ha.server_states().get("proxy2", ("",))[0] == "DOWN",
         what="HAProxy to mark proxy2 DOWN")
    for _ in range(4):  # every new session goes to the remaining instance
        conn = psycopg2.connect(host="127.0.0.1", port=ha.port, user="postgres",
                                dbname="postgres", connect_timeout=10)
        try:
            with conn.cursor() as cur:
                cur.execute("select 1")
                assert cur.fetchone() == (1,)
        finally:
            conn.close()


def test_slowloris_on_the_metrics_port_keeps_the_instance_up(cluster):
    """64 slow connections from 4 addresses on an instance's metrics port once made its
    /healthz unreachable: HAProxy (checks as in docs/scale-out.md, with on-marked-down
    shutdown-sessions) marked it DOWN and cut its sessions. Under the same attack the
    instance stays UP and a session on it runs a statement through many check intervals."""
    ha, proxies, metrics = cluster
    session = None
    for _ in range(4):  # round robin: instance 1 within a few connections
        c = RawClient("127.0.0.1", ha.port)
        assert c.startup(user="postgres", database="postgres")[-1].type == "Z"
        if c.backend_key[1] >> 24 == 1:
            session = c
            break
        c.close()
    assert session, "no session landed on instance 1"
    with session, Slowloris(metrics[0], ["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"], 16):
        # 8 s: 16 check intervals, and four times HAProxy's check timeout
        assert rows(session.query("select pg_sleep(8), 'kept'")) == [("", "kept")]
        assert ha.server_states()["proxy1"] == ("UP", "L7OK")
