"""Cases of docs/pgwire_test_plan.md that no other file covered: startup parameters outside the
allowlist, settings that change how SQL text reads, --max-message-size, /healthz during a
drain, SIGQUIT, TLS certificate reload, direct TLS."""
import os
import signal
import socket
import ssl
import struct
import subprocess
import time

import pytest

from pgwp import (BOUND, SSL_REQUEST, RawClient, describe, errors, free_port, http_get,
                  only_error, parameter_status, proxy_only, rfq, rows)

pytestmark = proxy_only


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


def test_standard_conforming_strings_off_works_as_in_postgresql(proxy):
    """standard_conforming_strings can be turned off as in PostgreSQL: the guard decides a text
    with a backslash in a string under both readings, so the session neither gets a refusal
    nor ends when the upstream reports the change."""
    with proxy.raw() as c:
        msgs = c.query("set standard_conforming_strings = off")
        assert errors(msgs) == [] and rfq(msgs) == "I", describe(msgs)
        assert parameter_status(msgs).get("standard_conforming_strings") == "off"
        assert rows(c.query("show standard_conforming_strings")) == [("off",)]
        assert rows(c.query("select 'a\\'b' as v")) == [("a'b",)]  # read with escapes
        assert errors(c.query("reset standard_conforming_strings")) == []
        assert rows(c.query("select 'a\\b' as v")) == [("a\\b",)]


def test_backslash_hiding_client_encoding_ends_the_session(proxy):
    """SJIS/BIG5-style encodings can hide a backslash inside a multi-byte character: refused at
    startup and when SET later, with FATAL 0A000 (the session ends)."""
    with RawClient(proxy.host, proxy.port) as c:
        err = only_error(c.startup(user="postgres", database="postgres",
                                   client_encoding="SJIS"))
        assert (err["S"], err["C"]) == ("FATAL", "0A000"), err
        assert "UTF8" in err["M"]
    with proxy.raw() as c:
        c.query_send("set client_encoding = 'SJIS'")
        msgs = c.read_until_closed()
        err = only_error(msgs)
        assert (err["S"], err["C"]) == ("FATAL", "0A000"), describe(msgs)


def test_no_ready_for_query_after_a_fatal(proxy):
    """PostgreSQL never sends ReadyForQuery after a FATAL ErrorResponse: the connection ends."""
    with proxy.raw() as c:
        c.query_send("set client_encoding = 'SJIS'")
        msgs = c.read_until_closed()
        fatal = [i for i, m in enumerate(msgs) if m.type == "E" and m.fields["S"] == "FATAL"]
        assert fatal
        assert "Z" not in [m.type for m in msgs[fatal[0]:]], describe(msgs)


def test_message_larger_than_max_message_size(start_proxy):
    proxy = start_proxy("--max-message-size", "1kB")
    with proxy.raw() as other, proxy.raw() as c:
        assert rows(c.query("select '" + "x" * 900 + "' = '' as ok")) == [("f",)]  # under 1 kB
        c.query_send("select '" + "x" * 2000 + "'")
        msgs = c.read_until_closed()
        err = only_error(msgs)
        assert (err["S"], err["C"]) == ("FATAL", "08P01"), describe(msgs)
        assert "max-message-size" in err["M"]
        assert rows(other.query("select 1")) == [("1",)]  # other sessions unaffected


def test_healthz_is_503_while_draining(start_proxy):
    mport = free_port()
    proxy = start_proxy("--metrics-listen", f"127.0.0.1:{mport}", "--shutdown-timeout", "20s")
    with proxy.raw() as c:
        c.query("begin")
        assert http_get(mport, "/healthz") == (200, "ok\n")
        proxy.signal(signal.SIGTERM)
        deadline = time.monotonic() + BOUND
        while http_get(mport, "/healthz")[0] != 503:
            assert time.monotonic() < deadline, "/healthz still 200 during the drain"
            time.sleep(0.05)
        assert proxy.alive()  # still draining: the open transaction may finish
        assert rows(c.query("select 'still served'")) == [("still served",)]
        c.query("commit")
        assert proxy.wait() == 0


def test_sigquit_closes_everything_at_once(start_proxy):
    proxy = start_proxy("--shutdown-timeout", "30s")
    with proxy.raw() as c:
        c.query("begin")
        c.query_send("select pg_sleep(20)")
        time.sleep(0.2)
        start = time.monotonic()
        proxy.signal(signal.SIGQUIT)
        msgs = c.read_until_closed()
        assert proxy.wait() == 0
        assert time.monotonic() - start < 5
    err = only_error(msgs)
    assert (err["S"], err["C"]) == ("FATAL", "57P01"), describe(msgs)


# -- TLS certificate reload


def make_cert(dirpath, name):
    crt, key = os.path.join(dirpath, f"{name}.crt"), os.path.join(dirpath, f"{name}.key")
    r = subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                        "-subj", f"/CN={name}", "-keyout", key, "-out", crt],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    os.chmod(key, 0o600)
    return crt, key


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
        deadline = time.monotonic() + BOUND
        while tls_peer_cert(proxy.port) != der(b_crt):
            assert time.monotonic() < deadline, "new connections still get the old certificate"
            time.sleep(0.1)
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


def test_unresponsive_peer_does_not_delay_local_cancels(start_proxy, dconn):
    import threading
    import psycopg2
    from pgwp import CANCEL_REQUEST, wait_active
    hole = socket.socket()  # listens, never accepts: a peer that is down but not refusing
    hole.bind(("127.0.0.1", 0))
    hole.listen(16)
    try:
        proxy = start_proxy("--peer-id", "1", "--peer", f"2=127.0.0.1:{hole.getsockname()[1]}")
        for i in range(2):  # keys with peer 2's id: forwarded to the dead peer
            with socket.create_connection(("127.0.0.1", proxy.port), timeout=BOUND) as s:
                s.sendall(struct.pack("!IIII", 16, CANCEL_REQUEST, 4242, (2 << 24) | i))
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
    finally:
        hole.close()
