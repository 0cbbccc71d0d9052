"""What a connection leaves behind and what it can learn: client certificates required of
plaintext clients too, no per-connection resource outliving its connection on any startup
path (RSS and descriptors back to baseline after 2,000 of each; LeakSanitizer at exit under
PGWP_SANITIZED=1), the DSN's password in no FATAL or log line, and no core dumps."""
import os
import pwd
import signal
import socket
import ssl
import struct
import subprocess
import time
import uuid

import pytest

from conftest import upstream_dsn
from pgwp import (BINARY, BOUND, CANCEL_REQUEST, REPO, SANITIZED, SSL_REQUEST, RawClient, Usage,
                  clean_env, describe, free_port, only_error, poll, port_listening, proxy_only,
                  rows, wait_peer_closed, wait_usage_back)
from test_tls import certs, tls_flags  # noqa: F401  (certs is a fixture)

pytestmark = proxy_only

N = 200 if SANITIZED else 2000  # under ASan LeakSanitizer is the check, not the count


def cert_flags(certs):
    return tls_flags(certs, "--tls-ca", certs.ca_crt, "--tls-client-cert", "require")


def client_ctx(certs, with_cert=True):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if with_cert:
        ctx.load_cert_chain(certs.client_crt, certs.client_key)
    return ctx


def tls_socket(p, ctx, src="127.0.0.1"):
    s = socket.create_connection((p.host, p.port), timeout=BOUND, source_address=(src, 0))
    s.sendall(struct.pack("!II", 8, SSL_REQUEST))
    assert s.recv(1) == b"S"
    return ctx.wrap_socket(s)


# ---------------------------------------------------------------------------------------------
# --tls-client-cert require


def test_client_cert_required_refuses_plaintext(start_proxy, certs, pg):
    """It once only applied to TLS clients: a plaintext client without any certificate got a
    session and ran SQL. Now: FATAL 28000 before any upstream connection."""
    p = start_proxy(*cert_flags(certs))
    before = pg.log_count("connection received")
    with RawClient(p.host, p.port) as c:
        msgs = c.startup(user="postgres", database="postgres")
        err = only_error(msgs)
        assert (err["S"], err["C"], err["M"]) == (
            "FATAL", "28000", "connection requires a valid client certificate"), describe(msgs)
        assert c.read_until_closed() == []
    assert pg.log_count("connection received") == before
    served_with_cert(p, certs)  # with its certificate the same client is served


# ---------------------------------------------------------------------------------------------
# Every startup path gives back what it took


@pytest.fixture(scope="module")
def paths_proxy(module_proxies, certs):
    p = module_proxies(*cert_flags(certs), "--startup-timeout", "1s", name="paths")
    ctx = client_ctx(certs)
    for name in PATHS:  # warm up: first-use allocations before any baseline (the tests
        for _ in range(5):  # themselves check what each path answers)
            try:
                PATHS[name](p, ctx, certs)
            except AssertionError:
                pass
    return p


def tls_cancel(p, ctx, certs):
    s = tls_socket(p, ctx)
    s.sendall(struct.pack("!IIII", 16, CANCEL_REQUEST, 4242, 4242))
    _closed(s)


def plain_cancel(p, ctx, certs):
    s = socket.create_connection((p.host, p.port), timeout=BOUND)
    s.sendall(struct.pack("!IIII", 16, CANCEL_REQUEST, 4242, 4242))
    _closed(s)


def tls_no_cert(p, ctx, certs):
    try:
        s = tls_socket(p, client_ctx(certs, with_cert=False))
        s.sendall(b"\0\0\0\x08\x04\xd2\x16\x2f")  # TLS 1.3: the refusal comes with the read
        _closed(s)
    except (ssl.SSLError, ConnectionResetError, BrokenPipeError):
        pass


def tls_then_eof(p, ctx, certs):
    s = tls_socket(p, ctx)
    s.close()


def plain_refused(p, ctx, certs):
    with RawClient(p.host, p.port) as c:
        assert only_error(c.startup(user="postgres"))["C"] == "28000"


def ssl_request_then_eof(p, ctx, certs):
    s = socket.create_connection((p.host, p.port), timeout=BOUND)
    s.sendall(struct.pack("!II", 8, SSL_REQUEST))
    assert s.recv(1) == b"S"
    s.close()


def _closed(s):
    try:
        wait_peer_closed(s, timeout=BOUND)
    except (ssl.SSLError, OSError):
        pass
    s.close()


PATHS = {f.__name__: f for f in (tls_cancel, plain_cancel, tls_no_cert, tls_then_eof,
                                 plain_refused, ssl_request_then_eof)}


@pytest.mark.parametrize("path", list(PATHS))
def test_startup_path_gives_back_its_resources(paths_proxy, certs, path):
    """A CancelRequest inside TLS once leaked its SSL object (2,000 of them: +46 MB RSS)."""
    pid = paths_proxy.proc.pid
    base = Usage(pid)
    ctx = client_ctx(certs)
    for _ in range(N):
        PATHS[path](paths_proxy, ctx, certs)
    after = wait_usage_back(pid, base, fd_margin=2, rss_margin_kb=8192, what=f"{N} x {path}")
    print(f"{N} x {path}: {base} -> {after}")
    served_with_cert(paths_proxy, certs)


def served_with_cert(p, certs):
    import psycopg2
    conn = psycopg2.connect(p.dsn(sslmode="require", sslcert=certs.client_crt,
                                  sslkey=certs.client_key))
    try:
        with conn.cursor() as cur:
            cur.execute("select 'with a certificate'")
            assert cur.fetchone() == ("with a certificate",)
    finally:
        conn.close()


def proxy_in_use(start_proxy, startup_timeout):
    """A proxy with the startup caps these tests fill, its PID, and its usage once a session
    has run (the baseline what they take must come back to)."""
    p = start_proxy("--startup-timeout", startup_timeout, "--max-startup-per-address", 64,
                    "--max-startup-connections", 1000)
    with p.raw() as c:
        assert rows(c.query("select 1")) == [("1",)]
    return p, p.proc.pid, Usage(p.proc.pid)


def test_refused_connections_give_back_their_resources(start_proxy):
    """Refused at accept (53300), 2,000 of them. The 64 connections that fill the address's
    slots must outlive the loop: with a short startup timeout they would time out under a slow
    machine, and the connections after them would be admitted instead of refused."""
    p, pid, base = proxy_in_use(start_proxy, "60s")
    held = [socket.create_connection((p.host, p.port), timeout=BOUND,
                                     source_address=("127.0.0.3", 0)) for _ in range(64)]
    try:
        for _ in range(N):  # the 65th from 127.0.0.3 onward: refused at once
            s = socket.create_connection((p.host, p.port), timeout=BOUND,
                                         source_address=("127.0.0.3", 0))
            assert wait_peer_closed(s).startswith(b"E")
            s.close()
    finally:
        for s in held:
            s.close()
    wait_usage_back(pid, base, fd_margin=2, rss_margin_kb=8192,
                    what=f"{N} refused connections")


def test_timed_out_connections_give_back_their_resources(start_proxy):
    """Ended by the startup timeout, 2,000 of them."""
    p, pid, base = proxy_in_use(start_proxy, "1s")
    left = N
    while left > 0:  # silent connections ended by the timeout, in batches under the caps
        batch = []
        for i in range(min(left, 8 * 60)):
            batch.append(socket.create_connection((p.host, p.port), timeout=BOUND,
                                                  source_address=(f"127.0.1.{i % 8 + 1}", 0)))
        for s in batch:
            assert wait_peer_closed(s, timeout=BOUND) == b""  # closed without a word
            s.close()
        left -= len(batch)
    wait_usage_back(pid, base, fd_margin=2, rss_margin_kb=8192,
                    what=f"{N} timed-out connections")


# ---------------------------------------------------------------------------------------------
# The DSN's password


def marker():
    return f"Pw{uuid.uuid4().hex[:12]}"


MALFORMED = {
    "keyword-unquoted-space": "host={h} port={p} dbname=postgres user=postgres password={m} {m}",
    "keyword-unterminated-quote": "host={h} port={p} user=postgres password='{m}",
    "uri-bad-percent": "postgresql://postgres:{m}%zz@{h}:{p}/postgres",
    "uri-slash-in-password": "postgresql://postgres:{m}/{m}@{h}:{p}/postgres",
    "uri-at-in-password": "postgresql://postgres:{m}@{m}@{h}:{p}/postgres",
    "uri-query-bad-percent": "postgresql://postgres@{h}:{p}/postgres?password={m}%2",
}


@pytest.mark.parametrize("form", list(MALFORMED))
def test_malformed_dsn_exits_2_without_the_password(pg, form):
    """A '%' in a random password once put the password into every client's FATAL and the log
    (libpq quotes the bad token). The DSN is parsed at start: exit 2, a message that names
    --upstream and shows nothing of the DSN."""
    m = marker()
    dsn = MALFORMED[form].format(h=pg.host, p=pg.port, m=m)
    port = free_port()
    proc = subprocess.Popen([BINARY, "--listen", f"127.0.0.1:{port}", "--upstream", dsn],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=clean_env())
    try:
        out, err = proc.communicate(timeout=BOUND)
    except subprocess.TimeoutExpired:  # it started: see what a client gets
        fatal = ""
        if port_listening(port):
            with RawClient("127.0.0.1", port) as c:
                fatal = describe(c.startup(user="postgres"))
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"started with a malformed DSN; a client got: {fatal}; leaked: "
                    f"{m in fatal or m.encode() in err}")
    assert proc.returncode == 2, (proc.returncode, err)
    lines = err.decode().strip().splitlines()
    assert len(lines) == 1 and "--upstream" in lines[0], err
    assert m.encode() not in out + err, err


def test_reload_refuses_a_malformed_dsn(start_proxy, pg, tmp_path):
    cfg = tmp_path / "proxy.ini"
    cfg.write_text(f"upstream = {upstream_dsn(pg)}\n")
    p = start_proxy("--config", str(cfg), upstream=False)
    m = marker()
    cfg.write_text(f"upstream = postgresql://postgres:{m}%@{pg.host}:{pg.port}/postgres\n")
    p.signal(signal.SIGHUP)
    poll(lambda: "reload_failed" in p.log(), what="reload_failed in the log")
    assert "--upstream" in p.log().split("reload_failed", 1)[1].splitlines()[0]
    with p.raw() as c:  # the running configuration stays
        assert rows(c.query("select 'kept'")) == [("kept",)]
    p.stop()
    assert m not in p.log()


def test_connect_failures_are_classified(start_proxy, pg):
    """What libpq says is never relayed: the client's FATAL is a fixed message per class."""
    m = marker()
    p = start_proxy(dsn=f"postgresql://pwuser:{m}@{pg.host}:{pg.port}/postgres", user="pwuser")
    q = start_proxy(dsn=f"host=127.0.0.1 port=1 user=postgres password={m}", name="refused")
    for target, code, text in ((p, "28P01", "password authentication failed"),
                               (q, "08001", "Connection refused")):
        with RawClient(target.host, target.port) as c:
            err = only_error(c.startup(user="postgres"))
        assert (err["S"], err["C"]) == ("FATAL", code), err
        assert err["M"].startswith("could not connect to the upstream server: " + text), err
        assert not any(m in v for v in err.values())
    for target in (p, q):
        target.stop()
        assert m not in target.log()


# ---------------------------------------------------------------------------------------------
# Core dumps


def run_as_postgres(pg, *flags):
    pw = pwd.getpwnam("postgres")

    def drop():
        os.setgid(pw.pw_gid)
        os.setuid(pw.pw_uid)
    port = free_port()
    proc = subprocess.Popen([BINARY, "--listen", f"127.0.0.1:{port}", "--upstream",
                             upstream_dsn(pg)] + list(flags), stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=clean_env(), preexec_fn=drop)
    poll(lambda: proc.poll() is not None or port_listening(port), what="the proxy to listen")
    assert proc.poll() is None, f"exited with {proc.returncode}"
    return proc, pw.pw_uid


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to start the proxy as another user")
@pytest.mark.parametrize("allow", [False, True], ids=["default", "allow-core-dumps"])
def test_process_is_not_dumpable(pg, allow):
    """A core would hold the DSN and its password. The kernel gives a non-dumpable process's
    /proc files to root: that is how an unprivileged proxy's setting shows from outside."""
    proc, uid = run_as_postgres(pg, *(["--allow-core-dumps"] if allow else []))
    try:
        owner = os.stat(f"/proc/{proc.pid}/environ").st_uid
        assert owner == (uid if allow else 0), (allow, owner)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=BOUND)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_systemd_unit_disables_core_dumps():
    with open(os.path.join(REPO, "deploy", "pgwire-proxy.service")) as f:
        lines = [ln.strip() for ln in f]
    assert "LimitCORE=0" in lines
