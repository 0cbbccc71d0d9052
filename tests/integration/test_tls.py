"""TLS: clients to the proxy (sslmodes, require mode, client certificates, bad handshakes, key
permissions, direct TLS, certificate reload) and the proxy to an upstream that has TLS on."""
import os
import pwd
import shutil
import signal
import socket
import ssl
import struct
import subprocess

import psycopg2
import pytest

import pgwp
from pgwp import (BINARY, BOUND, SSL_REQUEST, RawClient, clean_env, free_port, metric,
                  only_error, poll, proxy_only, rows, scrape)

pytestmark = proxy_only


def openssl(*args, cwd):
    r = subprocess.run(["openssl"] + list(args), cwd=cwd, stdin=subprocess.DEVNULL,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, f"openssl {args} failed: {r.stderr}"


def new_key_and_csr(d, name, cn):
    openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={cn}", cwd=d)
    os.chmod(os.path.join(d, f"{name}.key"), 0o600)


def new_ca(d, name):
    openssl("req", "-x509", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.crt", "-days", "2",
            "-subj", f"/CN=pgwire-proxy test {name}",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)
    os.chmod(os.path.join(d, f"{name}.key"), 0o600)


def sign(d, name, ca, ext):
    with open(os.path.join(d, f"{name}.ext"), "w") as f:
        f.write(ext)
    openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key",
            "-CAcreateserial", "-out", f"{name}.crt", "-days", "2", "-extfile", f"{name}.ext",
            cwd=d)


class Certs:
    def __init__(self, d):
        self.dir = d

    def __getattr__(self, name):  # certs.server_crt -> <dir>/server.crt
        base, _, ext = name.rpartition("_")
        return os.path.join(self.dir, f"{base}.{ext}")


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    """A throwaway CA, a server cert for localhost/127.0.0.1, a client cert (CN=postgres) and a
    client cert from another CA."""
    d = str(tmp_path_factory.mktemp("certs"))
    new_ca(d, "ca")
    new_ca(d, "otherca")
    new_key_and_csr(d, "server", "localhost")
    sign(d, "server", "ca", "subjectAltName=DNS:localhost,IP:127.0.0.1\n"
                            "extendedKeyUsage=serverAuth\n")
    new_key_and_csr(d, "client", "postgres")
    sign(d, "client", "ca", "extendedKeyUsage=clientAuth\n")
    new_key_and_csr(d, "rogue", "postgres")
    sign(d, "rogue", "otherca", "extendedKeyUsage=clientAuth\n")
    return Certs(d)


def tls_flags(certs, *more):
    return ("--tls-cert", certs.server_crt, "--tls-key", certs.server_key) + more


def ssl_connect(target, **kw):
    kw.setdefault("sslmode", "require")
    conn = psycopg2.connect(target.dsn(**kw))
    conn.autocommit = True
    return conn


def one(conn, sql):
    with conn.cursor() as cur:
        cur.execute(sql)
        return cur.fetchone()[0]


# ---------------------------------------------------------------------------------------------
# Client side


@pytest.mark.parametrize("params", [
    dict(sslmode="require"),
    dict(sslmode="verify-ca", sslrootcert="CA"),
    dict(sslmode="verify-full", sslrootcert="CA", host="localhost"),
    dict(sslmode="verify-full", sslrootcert="CA", host="127.0.0.1"),
], ids=["require", "verify-ca", "verify-full-localhost", "verify-full-ip"])
def test_psycopg2_over_tls(start_proxy, certs, params):
    p = start_proxy(*tls_flags(certs))
    params = {k: (certs.ca_crt if v == "CA" else v) for k, v in params.items()}
    conn = ssl_connect(p, **params)
    try:
        assert conn.info.ssl_in_use
        assert conn.info.ssl_attribute("protocol") in ("TLSv1.2", "TLSv1.3")
        assert one(conn, "select 'over tls'") == "over tls"
    finally:
        conn.close()
    # allow mode still takes plaintext clients
    plain = ssl_connect(p, sslmode="disable")
    try:
        assert not plain.info.ssl_in_use and one(plain, "select 1") == 1
    finally:
        plain.close()


def test_verify_full_rejects_a_wrong_host_name(start_proxy, certs, tmp_path):
    p = start_proxy(*tls_flags(certs))
    # the certificate names localhost and 127.0.0.1, not this name
    with pytest.raises(psycopg2.OperationalError) as exc:
        ssl_connect(p, sslmode="verify-full", sslrootcert=certs.ca_crt, host="db.example",
                    hostaddr="127.0.0.1")
    assert "does not match" in str(exc.value), exc.value
    with pytest.raises(psycopg2.OperationalError) as exc:  # a CA that did not sign it
        ssl_connect(p, sslmode="verify-ca", sslrootcert=certs.otherca_crt)
    assert "certificate verify failed" in str(exc.value), exc.value


def test_psql_conninfo_reports_tls(start_proxy, certs):
    p = start_proxy(*tls_flags(certs))
    r = p.psql("-c", "\\conninfo", "-c", "select 'psql over tls' as probe",
               PGSSLMODE="verify-full", PGSSLROOTCERT=certs.ca_crt, check=True)
    assert "SSL connection" in r.stdout, r.stdout
    assert "psql over tls" in r.stdout


def test_tls_mode_require_refuses_plaintext(start_proxy, certs):
    p = start_proxy(*tls_flags(certs, "--tls-mode", "require"))
    with RawClient(p.host, p.port) as c:
        msgs = c.startup(user="postgres", database="postgres")
        err = only_error(msgs)
        assert (err["S"], err["C"]) == ("FATAL", "28000"), err
        assert "TLS" in err["M"], err
        assert c.read_until_closed() == []
    with pytest.raises(psycopg2.OperationalError) as exc:
        ssl_connect(p, sslmode="disable")
    assert "TLS" in str(exc.value), exc.value
    conn = ssl_connect(p, sslmode="require")
    try:
        assert conn.info.ssl_in_use and one(conn, "select 1") == 1
    finally:
        conn.close()


def test_world_readable_key_is_refused(pg, certs, tmp_path):
    key = str(tmp_path / "open.key")
    shutil.copy(certs.server_key, key)
    os.chmod(key, 0o644)
    dsn = f"host={pg.host} port={pg.port} dbname=postgres user=postgres"
    try:
        r = subprocess.run([BINARY, "--listen", f"127.0.0.1:{free_port()}", "--upstream", dsn,
                            "--tls-cert", certs.server_crt, "--tls-key", key],
                           stdin=subprocess.DEVNULL, capture_output=True, text=True,
                           env=clean_env(), timeout=BOUND)
    except subprocess.TimeoutExpired:
        pytest.fail("the proxy started with a world-readable TLS key")
    assert r.returncode != 0
    assert "open.key" in r.stderr and ("mode" in r.stderr or "0644" in r.stderr), r.stderr


@pytest.mark.parametrize("garbage", [
    b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    bytes(range(256)) * 4,
    b"\x16\x03\x01\x00\x08" + b"\x01\x00\x00\x04" + b"\xff" * 4,  # a bogus ClientHello
], ids=["http", "bytes", "bad-hello"])
def test_garbage_handshake(start_proxy, certs, garbage):
    mport = free_port()
    p = start_proxy(*tls_flags(certs, "--metrics-listen", f"127.0.0.1:{mport}"))
    before = scrape(mport)
    with socket.create_connection((p.host, p.port), timeout=BOUND) as s:
        s.sendall(struct.pack("!II", 8, SSL_REQUEST))
        assert s.recv(1) == b"S"
        s.sendall(garbage)
        s.settimeout(BOUND)
        while True:  # maybe a TLS alert, then the proxy closes the connection
            try:
                if not s.recv(4096):
                    break
            except ConnectionResetError:
                break
    poll(lambda: "tls_handshake_failed" in p.log(), what="a TLS failure in the log")
    failed = poll(lambda: metric(scrape(mport), "pgwire_proxy_tls_handshakes_total",
                                 outcome="failed") -
                  metric(before, "pgwire_proxy_tls_handshakes_total", outcome="failed"),
                  what="tls_handshakes_total{outcome=failed} to move")
    assert failed == 1
    assert p.alive()
    conn = ssl_connect(p, sslmode="require")
    try:
        assert one(conn, "select 1") == 1
    finally:
        conn.close()
    assert metric(scrape(mport), "pgwire_proxy_tls_handshakes_total", outcome="ok") == \
        metric(before, "pgwire_proxy_tls_handshakes_total", outcome="ok") + 1


def test_stalled_handshake_is_bounded(start_proxy, certs):
    """A client that sends half a ClientHello and waits is closed by --startup-timeout."""
    p = start_proxy(*tls_flags(certs, "--startup-timeout", "1s"))
    with socket.create_connection((p.host, p.port), timeout=BOUND) as s:
        s.sendall(struct.pack("!II", 8, SSL_REQUEST))
        assert s.recv(1) == b"S"
        s.sendall(b"\x16\x03\x01\x02\x00" + b"\x01" * 40)  # the record promises 512 bytes
        s.settimeout(BOUND)
        while True:
            try:
                if not s.recv(4096):
                    break
            except ConnectionResetError:
                break
    assert p.alive()
    conn = ssl_connect(p, sslmode="require")
    try:
        assert one(conn, "select 1") == 1
    finally:
        conn.close()


def test_client_certificate_required(start_proxy, certs, tmp_path):
    p = start_proxy(*tls_flags(certs, "--tls-ca", certs.ca_crt, "--tls-client-cert", "require"))
    missing = str(tmp_path / "none.crt")
    with pytest.raises(psycopg2.OperationalError):
        conn = ssl_connect(p, sslcert=missing, sslkey=missing)
        one(conn, "select 1")  # TLS 1.3: the refusal may arrive with the first read
    with pytest.raises(psycopg2.OperationalError):
        conn = ssl_connect(p, sslcert=certs.rogue_crt, sslkey=certs.rogue_key)
        one(conn, "select 1")
    conn = ssl_connect(p, sslmode="verify-full", sslrootcert=certs.ca_crt,
                       sslcert=certs.client_crt, sslkey=certs.client_key)
    try:
        assert conn.info.ssl_in_use and one(conn, "select 'with cert'") == "with cert"
    finally:
        conn.close()
    assert p.alive()


def test_tls_min_version_1_3(start_proxy, certs):
    p = start_proxy(*tls_flags(certs, "--tls-min-version", "1.3"))
    conn = ssl_connect(p, ssl_max_protocol_version="TLSv1.3")
    try:
        assert conn.info.ssl_attribute("protocol") == "TLSv1.3"
    finally:
        conn.close()
    with pytest.raises(psycopg2.OperationalError):
        ssl_connect(p, ssl_max_protocol_version="TLSv1.2")


# ---------------------------------------------------------------------------------------------
# Upstream side: a second PostgreSQL with ssl = on


# -- direct TLS (PostgreSQL 17's sslnegotiation=direct) and certificate reload


def make_cert(dirpath, name):
    """A self-signed certificate and its key (mode 0600): one the certs fixture did not sign."""
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={name}",
            "-keyout", f"{name}.key", "-out", f"{name}.crt", cwd=dirpath)
    key = os.path.join(dirpath, f"{name}.key")
    os.chmod(key, 0o600)
    return os.path.join(dirpath, f"{name}.crt"), key


def tls_peer_cert(port):
    """DER certificate the proxy presents after SSLRequest; the socket is closed after."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=BOUND)
    try:
        sock.sendall(struct.pack("!II", 8, SSL_REQUEST))
        assert sock.recv(1) == b"S"
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        with ctx.wrap_socket(sock) as tls:
            return tls.getpeercert(binary_form=True)
    finally:
        sock.close()


def der(crt):
    return ssl.PEM_cert_to_DER_cert(open(crt).read())


def test_tls_certificate_reload_applies_to_new_connections(start_proxy, tmp_path):
    a_crt, a_key = make_cert(str(tmp_path), "cert-a")
    b_crt, b_key = make_cert(str(tmp_path), "cert-b")
    live_crt, live_key = str(tmp_path / "live.crt"), str(tmp_path / "live.key")
    for src, dst in ((a_crt, live_crt), (a_key, live_key)):
        open(dst, "wb").write(open(src, "rb").read())
    os.chmod(live_key, 0o600)
    cfg = tmp_path / "tls.ini"
    cfg.write_text(f"tls-cert = {live_crt}\ntls-key = {live_key}\n")
    proxy = start_proxy("--config", str(cfg))
    assert tls_peer_cert(proxy.port) == der(a_crt)
    # a session opened before the reload keeps working
    with RawClient("127.0.0.1", proxy.port) as before:
        assert before.startup(user="postgres", database="postgres")[-1].type == "Z"
        for src, dst in ((b_crt, live_crt), (b_key, live_key)):
            open(dst, "wb").write(open(src, "rb").read())
        proxy.signal(signal.SIGHUP)
        poll(lambda: tls_peer_cert(proxy.port) == der(b_crt), interval=0.1,
             what="new connections to get the new certificate (still the old one)")
        assert rows(before.query("select 1")) == [("1",)]


def test_direct_tls_without_ssl_request(start_proxy, tmp_path):
    """PostgreSQL 17's sslnegotiation=direct: the client starts the TLS handshake at once (ALPN
    "postgresql") instead of sending SSLRequest; a client offering another ALPN protocol is
    refused in the handshake."""
    crt, key = make_cert(str(tmp_path), "direct")
    proxy = start_proxy("--tls-cert", crt, "--tls-key", key)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["postgresql"])
    c = RawClient("127.0.0.1", proxy.port)
    try:
        c.sock = ctx.wrap_socket(c.sock)
        assert c.sock.selected_alpn_protocol() == "postgresql"
        assert c.startup(user="postgres", database="postgres")[-1].type == "Z"
        assert rows(c.query("select 'direct tls'")) == [("direct tls",)]
    finally:
        c.close()
    ctx.set_alpn_protocols(["http/1.1"])
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=BOUND) as s:
        with pytest.raises((ssl.SSLError, ConnectionResetError)):
            ctx.wrap_socket(s)


def test_direct_tls_without_alpn_is_refused(start_proxy, tmp_path):
    crt, key = make_cert(str(tmp_path), "noalpn")
    proxy = start_proxy("--tls-cert", crt, "--tls-key", key)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    c = RawClient("127.0.0.1", proxy.port)
    try:
        try:
            c.sock = ctx.wrap_socket(c.sock)
            msgs = c.startup(user="postgres", database="postgres")
        except (ssl.SSLError, ConnectionResetError):
            return  # refused in the handshake
        assert msgs[-1].type != "Z", "a direct TLS session without ALPN was accepted"
    finally:
        c.close()


@pytest.fixture(scope="module")
def tls_pg(certs):
    cluster = pgwp.PgCluster()
    try:
        cluster.start()
        pw = pwd.getpwnam("postgres") if os.geteuid() == 0 else None
        for name in ("server.crt", "server.key"):
            dst = os.path.join(cluster.data, name)
            shutil.copy(os.path.join(certs.dir, name), dst)
            os.chmod(dst, 0o600)
            if pw:
                os.chown(dst, pw.pw_uid, pw.pw_gid)
        conn = psycopg2.connect(host=cluster.host, port=cluster.port, user="postgres",
                                dbname="postgres", sslmode="disable", connect_timeout=10)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("alter system set ssl = on")
            cur.execute("alter system set ssl_cert_file = 'server.crt'")
            cur.execute("alter system set ssl_key_file = 'server.key'")
            cur.execute("select pg_reload_conf()")
        conn.close()

        def ssl_works():
            try:
                c = psycopg2.connect(host=cluster.host, port=cluster.port, user="postgres",
                                     dbname="postgres", sslmode="require", connect_timeout=5)
            except psycopg2.OperationalError:
                return False
            c.close()
            return True
        poll(ssl_works, what="the second PostgreSQL to accept TLS")
        yield cluster
    finally:
        cluster.stop()


@pytest.mark.parametrize("sslparams", ["sslmode=require",
                                       "sslmode=verify-full sslrootcert={ca}"],
                         ids=["require", "verify-full"])
def test_upstream_tls(start_proxy, tls_pg, certs, sslparams):
    dsn = (f"host={tls_pg.host} port={tls_pg.port} dbname=postgres user=postgres "
           + sslparams.format(ca=certs.ca_crt))
    p = start_proxy(dsn=dsn)
    with p.raw() as c:
        pid = rows(c.query("select pg_backend_pid()"))[0][0]
        assert rows(c.query("select g from generate_series(1, 3) g")) == [("1",), ("2",), ("3",)]
        big = rows(c.query("select repeat('y', 100000)"))
        assert big == [("y" * 100000,)]
        direct = psycopg2.connect(host=tls_pg.host, port=tls_pg.port, user="postgres",
                                  dbname="postgres", sslmode="disable", connect_timeout=10)
        try:
            with direct.cursor() as cur:
                cur.execute("select ssl from pg_stat_ssl where pid = %s", (int(pid),))
                assert cur.fetchall() == [(True,)]
        finally:
            direct.close()
        assert rows(c.query("select 'still there'")) == [("still there",)]
