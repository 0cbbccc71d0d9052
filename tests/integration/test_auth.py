"""Client authentication: SCRAM-SHA-256(-PLUS) with PostgreSQL's messages and SQLSTATEs, mock
exchanges for unknown users, the failure delay, client certificates, pg_hba.conf rules, peer
over the Unix socket, reloads, and secrets that never reach a log, an error or a metric."""
import base64
import json
import os
import signal
import socket
import struct
import subprocess
import threading
import time

import psycopg2
import pytest

import pgwp
from authkit import PLAIN, PLUS, Certs, Sasl, b64, scram_flags, shared_dir, verifier, write_users
from pgwp import (BINARY, BOUND, PSQL, SSL_REQUEST, RawClient, clean_env, errors, free_port,
                  log_events, metric, only_error, poll, proxy_only, psql_env, rows, scalar,
                  scrape)

pytestmark = proxy_only

PW = "correct horse"
DELAY = 0.3  # --auth-failure-delay in these tests


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    c = Certs(str(tmp_path_factory.mktemp("authcerts")))
    c.leaf("alice", "alice")
    c.leaf("mallory", "mallory")
    c.leaf("wild", "x", ext="subjectAltName=DNS:*.corp.example,DNS:alice\n"
                            "extendedKeyUsage=clientAuth\n")
    return c


@pytest.fixture(scope="module")
def alice_verifier():
    return verifier(PW)


def scram_proxy(start_proxy, tmp_path, alice_verifier, *more):
    return start_proxy(*scram_flags(tmp_path, {"alice": alice_verifier, "bob": "bobs-plain-pw"},
                                    "--auth-failure-delay", f"{int(DELAY * 1000)}ms", *more))


def psql(p, user, password=None, check=False, **params):
    dsn = " ".join(f"{k}={v}" for k, v in dict(host=p.host, port=p.port, user=user,
                                                dbname="postgres", **params).items())
    env = psql_env(p.home)
    if password is not None:
        env["PGPASSWORD"] = password
    never_prompt = ["-w"] if password is None else []
    r = subprocess.run([PSQL, "-X", "-At", *never_prompt, "-d", dsn, "-c",
                        "select current_user, 'ok'"],
                       capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL,
                       timeout=BOUND)
    if check:
        assert r.returncode == 0, r.stderr
    return r


def fatal(msgs):
    e = only_error(msgs)
    assert e["S"] == "FATAL", e
    return e


# ---------------------------------------------------------------------------------------------
# SCRAM-SHA-256


def test_psql_right_and_wrong_password(start_proxy, tmp_path, alice_verifier):
    p = scram_proxy(start_proxy, tmp_path, alice_verifier)
    r = psql(p, "alice", PW, check=True)
    assert r.stdout.strip() == "postgres|ok"  # the DSN's role runs; alice is proven
    r = psql(p, "bob", "bobs-plain-pw", check=True)  # a plain entry, derived at load
    r = psql(p, "alice", "wrong")
    assert r.returncode != 0
    assert 'FATAL:  password authentication failed for user "alice"' in r.stderr
    assert any(e.get("user") == "alice" for e in log_events(p, "auth_failed"))
    assert "plain-text password" in p.log()  # the plain entry was warned about at start


def test_wrong_password_is_answered_after_the_delay(start_proxy, tmp_path, alice_verifier):
    p = scram_proxy(start_proxy, tmp_path, alice_verifier)
    with Sasl(p.host, p.port, "alice") as s:
        assert s.mechs == [PLAIN]  # no TLS: no -PLUS
        s.first_round()
        t0 = time.monotonic()
        m = s.final_round("wrong")
        took = time.monotonic() - t0
        assert m.type == "E" and m.fields["C"] == "28P01", m
        assert m.fields["M"] == 'password authentication failed for user "alice"'
        assert took >= DELAY - 0.005, took  # never early; it is a lower bound, not a benchmark
        assert pgwp.wait_peer_closed(s.c.sock) == b""


def test_unknown_user_gets_the_same_answer(start_proxy, tmp_path, alice_verifier):
    """A wrong password for alice and any password for the unknown alicf: the same messages,
    byte for byte but the name, the same salt length and iteration count, the same delay."""
    p = scram_proxy(start_proxy, tmp_path, alice_verifier)
    seen = {}
    for user in ("alice", "alicf"):
        with Sasl(p.host, p.port, user) as s:
            sf, _ = s.first_round()
            attrs = dict(kv.split("=", 1) for kv in sf.split(","))
            t0 = time.monotonic()
            m = s.final_round("guess")
            seen[user] = (s.first.payload, len(base64.b64decode(attrs["s"])), attrs["i"],
                          m.type, m.payload.replace(user.encode(), b"USER"),
                          time.monotonic() - t0 >= DELAY - 0.005)
    assert seen["alice"] == seen["alicf"], seen
    assert seen["alice"][1:3] == (16, "4096")


def mock_salt(p, user):
    with Sasl(p.host, p.port, user) as s:
        sf, _ = s.first_round()
        return dict(kv.split("=", 1) for kv in sf.split(","))["s"]


def test_unknown_user_salt_is_stable_across_restarts(start_proxy, tmp_path, alice_verifier):
    p = scram_proxy(start_proxy, tmp_path, alice_verifier)
    first = {u: mock_salt(p, u) for u in ("alice", "bob", "nobody")}
    assert mock_salt(p, "nobody") == first["nobody"]
    assert mock_salt(p, "somebody") != first["nobody"]
    secret = tmp_path / "auth.secret"
    assert oct(os.stat(secret).st_mode & 0o777) == "0o600"  # made on first start
    p.stop()
    again = scram_proxy(start_proxy, tmp_path, alice_verifier)
    assert {u: mock_salt(again, u) for u in first} == first


def test_initial_response_without_data(start_proxy, tmp_path, alice_verifier):
    """Length -1: an empty SASLContinue, then client-first in a SASLResponse."""
    p = scram_proxy(start_proxy, tmp_path, alice_verifier)
    with Sasl(p.host, p.port, "alice") as s:
        m = s.send_initial(PLAIN, None)
        assert s.auth_data(m) == (11, b"")
        s.bare, s.gs2 = "n=,r=abcdefghijklmnop", "n,,"
        code, data = s.auth_data(s.send_response(b"n,," + s.bare.encode()))
        assert code == 11
        s.server_first = data.decode()
        m = s.final_round(PW)
        code, data = s.auth_data(m)
        assert code == 12 and data == b"v=" + b64(s.server_sig).encode()
        msgs = s.c.read_until_rfq()
        assert s.auth_data(msgs[0]) == (0, b"")
        assert rows(s.c.query("select 1")) == [("1",)]


def test_psql_first_try_without_password_is_no_failure(start_proxy, tmp_path, alice_verifier):
    """psql connects, sees R10 and leaves to ask for a password: a silent EOF, not a failure."""
    p = scram_proxy(start_proxy, tmp_path, alice_verifier, "--metrics-listen",
                    f"127.0.0.1:{free_port()}")
    port = int(p.flags[p.flags.index("--metrics-listen") + 1].rsplit(":", 1)[1])
    with Sasl(p.host, p.port, "alice") as s:
        assert s.first.type == "R"
    r = psql(p, "alice", None)  # no password, no prompt: psql gives up after R10
    assert r.returncode != 0 and "password" in r.stderr
    psql(p, "alice", PW, check=True)
    m = scrape(port)
    assert metric(m, "pgwire_proxy_authentications_total", method="scram-sha-256",
                  outcome="failed") == 0
    assert metric(m, "pgwire_proxy_authentications_total", method="scram-sha-256",
                  outcome="ok") == 1
    assert log_events(p, "auth_failed") == []


MALFORMED = [
    # (mechanism, client-first, client-final or None, SQLSTATE, message, detail)
    (PLAIN, "p=tls-server-end-point,,n=,r=abc", None, "08P01", "malformed SCRAM message",
     "The client selected SCRAM-SHA-256 without channel binding, but the SCRAM message "
     "includes channel binding data."),
    (PLAIN, "x,,n=,r=abc", None, "08P01", "malformed SCRAM message",
     'Unexpected channel-binding flag "x".'),
    (PLAIN, "n,a=bob,n=,r=abc", None, "0A000",
     "client uses authorization identity, but it is not supported", None),
    (PLAIN, "n,,m=ext,n=,r=abc", None, "0A000", "client requires an unsupported SCRAM extension",
     None),
    (PLAIN, "n,,n=,r=ab c", None, "08P01", "non-printable characters in SCRAM nonce", None),
    (PLAIN, "n,,n=,r=ab\x7fc", None, "08P01", "non-printable characters in SCRAM nonce", None),
    (PLAIN, "n,,n=,r=abc", "nonce", "08P01", "invalid SCRAM response", "Nonce does not match."),
    (PLAIN, "n,,n=,r=abc", "proof=!!!", "08P01", "malformed SCRAM message",
     "Malformed proof in client-final-message."),
    (PLAIN, "n,,n=,r=abc", "proof=" + b64(b"x" * 31), "08P01", "malformed SCRAM message",
     "Malformed proof in client-final-message."),
    (PLAIN, "n,,n=,r=abc", "proof=" + b64(b"x" * 16) + " " + b64(b"x" * 15), "08P01",
     "malformed SCRAM message", "Malformed proof in client-final-message."),
    (PLAIN, "n,,n=,r=abc", "garbage", "08P01", "malformed SCRAM message",
     "Garbage found at the end of client-final-message."),
    (PLAIN, "n,,n=,r=abc", "cbind=eSws", "08P01",
     "unexpected SCRAM channel-binding attribute in client-final-message", None),
    ("SCRAM-SHA-1", "n,,n=,r=abc", None, "08P01",
     "client selected an invalid SASL authentication mechanism", None),
    (PLUS, "p=tls-server-end-point,,n=,r=abc", None, "08P01",
     "client selected an invalid SASL authentication mechanism", None),  # not offered here
]


@pytest.mark.parametrize("case", MALFORMED, ids=[f"{c[0]}-{c[1][:12]}-{c[2]}" for c in MALFORMED])
def test_malformed_scram_messages(start_proxy, tmp_path, alice_verifier, case):
    mech, first, final, code, message, detail = case
    p = scram_proxy(start_proxy, tmp_path, alice_verifier)
    with Sasl(p.host, p.port, "alice") as s:
        sf, m = s.first_round(mech, first.split("n=")[0], first.split("r=")[1])
        if final is not None:
            assert sf is not None, m
            kind, _, value = final.partition("=")
            args = {"nonce": dict(nonce="abc" + "x" * 24), "proof": dict(proof=value),
                    "garbage": dict(tail=",x=1"), "cbind": dict(cbind=value)}[kind]
            m = s.final_round(PW, **args)
        assert m.type == "E", m
        assert (m.fields["S"], m.fields["C"], m.fields["M"]) == ("FATAL", code, message), m
        assert m.fields.get("D") == detail, m
        assert pgwp.wait_peer_closed(s.c.sock) == b""


@pytest.mark.parametrize("body", [
    b"SCRAM-SHA-256\0" + struct.pack("!I", 0x7fffffff) + b"n,,n=,r=a",
    b"SCRAM-SHA-256\0" + struct.pack("!i", -2) + b"n,,n=,r=a",
    b"SCRAM-SHA-256\0" + struct.pack("!i", 3) + b"n,,n=,r=a",
    b"SCRAM-SHA-256\0" + struct.pack("!i", 2048) + b"n,,n=,r=" + b"a" * 2040,
    b"SCRAM-SHA-256\0" + struct.pack("!i", 0),
    b"SCRAM-SHA-256\0" + struct.pack("!i", 12) + b"n,,n=\0,r=abc",
    b"SCRAM-SHA-256",
], ids=["len-7fffffff", "len-minus-2", "len-short", "2kB", "empty", "nul", "no-nul"])
def test_malformed_sasl_layout(start_proxy, tmp_path, alice_verifier, body):
    p = scram_proxy(start_proxy, tmp_path, alice_verifier)
    with Sasl(p.host, p.port, "alice") as s:
        s.c.send("p", body)
        msgs, closed = s.c.read_all()
        assert closed and fatal(msgs)["C"] == "08P01", msgs
    assert p.alive()


def test_other_message_during_sasl(start_proxy, tmp_path, alice_verifier):
    p = scram_proxy(start_proxy, tmp_path, alice_verifier)
    with Sasl(p.host, p.port, "alice") as s:
        s.c.query_send("select 1")
        msgs, closed = s.c.read_all()
        e = fatal(msgs)
        assert (e["C"], e["M"]) == ("08P01", "expected SASL response, got message type 81")
    with Sasl(p.host, p.port, "alice") as s:
        s.first_round()
        s.c.send("p", b"x" * 5000)  # past PostgreSQL's 1024-byte SASL bound
        msgs, closed = s.c.read_all()
        assert closed and fatal(msgs)["C"] == "08P01"


# ---------------------------------------------------------------------------------------------
# Channel binding (SCRAM-SHA-256-PLUS, tls-server-end-point)


def test_channel_binding_required_over_tls(start_proxy, tmp_path, alice_verifier, certs):
    p = scram_proxy(start_proxy, tmp_path, alice_verifier, *certs.tls_flags(ca=False))
    r = psql(p, "alice", PW, sslmode="require", channel_binding="require")
    assert r.returncode == 0 and r.stdout.strip() == "postgres|ok", r.stderr
    with Sasl(p.host, p.port, "alice", tls=True) as s:
        assert s.first.payload == (b"\0\0\0\x0a" + b"SCRAM-SHA-256-PLUS\0SCRAM-SHA-256\0\0")
        assert struct.unpack("!I", s.first.payload[:4])[0] == 10
        msgs = s.login(PW)
        assert [s.auth_data(m)[0] for m in msgs[:2]] == [12, 0]
        assert msgs[-1].type == "Z"
    # channel_binding=disable over TLS: n,, and plain SCRAM
    r = psql(p, "alice", PW, sslmode="require", channel_binding="disable")
    assert r.returncode == 0, r.stderr


def test_channel_binding_required_without_tls_is_refused_by_the_client(start_proxy, tmp_path,
                                                                       alice_verifier, certs):
    p = scram_proxy(start_proxy, tmp_path, alice_verifier, *certs.tls_flags(ca=False))
    r = psql(p, "alice", PW, sslmode="disable", channel_binding="require")
    assert r.returncode != 0
    assert "channel binding required, but SSL not in use" in r.stderr
    assert log_events(p, "auth_failed") == []  # the client left: nothing to count


def test_y_flag_where_plus_was_offered_is_a_downgrade(start_proxy, tmp_path, alice_verifier,
                                                      certs):
    p = scram_proxy(start_proxy, tmp_path, alice_verifier, *certs.tls_flags(ca=False))
    with Sasl(p.host, p.port, "alice", tls=True) as s:
        sf, m = s.first_round(PLAIN, "y,,")
        e = fatal([m])
        assert (e["C"], e["M"]) == ("28000", "SCRAM channel binding negotiation error")
        assert "However, this server does support channel binding." in e["D"]
    # without TLS nothing was offered: y is fine
    with Sasl(p.host, p.port, "alice") as s:
        msgs = s.login(PW, mech=PLAIN, gs2="y,,")
        assert msgs[-1].type == "Z", msgs


def test_plus_with_another_certificate_hash_fails(start_proxy, tmp_path, alice_verifier, certs):
    """A man in the middle terminates TLS with its own certificate: the client binds to that
    one's hash, which the proxy does not have."""
    p = scram_proxy(start_proxy, tmp_path, alice_verifier, *certs.tls_flags(ca=False))
    with Sasl(p.host, p.port, "alice", tls=True) as s:
        s.first_round(PLUS, "p=tls-server-end-point,,")
        other = bytes(32)
        m = s.final_round(PW, cbind=b64(b"p=tls-server-end-point,," + other))
        e = fatal([m])
        assert (e["C"], e["M"]) == ("28000", "SCRAM channel binding check failed")


def test_ed25519_certificate_offers_no_plus(start_proxy, tmp_path, alice_verifier, certs):
    """tls-server-end-point is undefined for a signature without one hash: no -PLUS, and y is
    accepted."""
    certs.leaf("ed", "localhost", ext="subjectAltName=IP:127.0.0.1\n", keytype="ed25519")
    # the leaf is signed by the EC CA, so its signature does have a hash: sign it by itself
    d = certs.dir
    subprocess.run(["openssl", "req", "-x509", "-key", "ed.key", "-out", "ed.crt", "-days", "2",
                    "-subj", "/CN=localhost"], cwd=d, check=True, capture_output=True)
    p = scram_proxy(start_proxy, tmp_path, alice_verifier,
                    *certs.tls_flags(server="ed", ca=False))
    with Sasl(p.host, p.port, "alice", tls=True) as s:
        assert s.mechs == [PLAIN]
        assert s.login(PW, mech=PLAIN, gs2="y,,")[-1].type == "Z"


def test_cleartext_after_ssl_request_is_never_read_as_tls(start_proxy, tmp_path, certs):
    """CVE-2021-3935: bytes sent in plaintext right behind the SSLRequest must not count as
    part of the TLS session (here a StartupMessage an attacker injected)."""
    p = start_proxy("--auth-type", "cert", *certs.tls_flags())
    c = RawClient(p.host, p.port)
    body = struct.pack("!I", pgwp.PROTOCOL_3_0) + b"user\0alice\0database\0postgres\0\0"
    c.send_raw(struct.pack("!II", 8, SSL_REQUEST) + struct.pack("!I", len(body) + 4) + body)
    assert c.read_byte() == b"S"
    data = pgwp.wait_peer_closed(c.sock)
    assert b"R\0\0\0\x08\0\0\0\0" not in data and b"Z\0\0\0\x05" not in data
    c.close()
    assert p.alive()


# ---------------------------------------------------------------------------------------------
# cert


def test_certificate_cn_must_be_the_user(start_proxy, tmp_path, certs):
    audit = tmp_path / "audit.jsonl"
    p = start_proxy("--auth-type", "cert", "--auth-failure-delay", "0", "--audit-log", str(audit),
                    *certs.tls_flags())
    conn = psycopg2.connect(p.dsn(user="alice", sslmode="require", **certs.client_params("alice")))
    conn.autocommit = True
    assert scalar(conn, "select 'cert ok'") == "cert ok"
    conn.close()
    recs = poll(lambda: [json.loads(x) for x in audit.read_text().splitlines()]
                if audit.exists() else [], what="an audit record")
    assert recs[0]["user"] == "alice" and recs[0]["auth"] == "cert"
    assert recs[0]["cert_subject"] == "CN=alice"

    with pytest.raises(psycopg2.OperationalError) as exc:
        psycopg2.connect(p.dsn(user="alice", sslmode="require", **certs.client_params("mallory")))
    assert 'certificate authentication failed for user "alice"' in str(exc.value)
    # SAN names (and wildcards) never count, only the CN
    with pytest.raises(psycopg2.OperationalError) as exc:
        psycopg2.connect(p.dsn(user="alice", sslmode="require", **certs.client_params("wild")))
    assert 'certificate authentication failed for user "alice"' in str(exc.value)
    with pytest.raises(psycopg2.OperationalError) as exc:
        psycopg2.connect(p.dsn(user="alice", sslmode="require"))
    assert "connection requires a valid client certificate" in str(exc.value)
    with pytest.raises(psycopg2.OperationalError) as exc:
        psycopg2.connect(p.dsn(user="alice", sslmode="disable"))
    assert "connection requires a valid client certificate" in str(exc.value)


def test_certificate_cn_with_an_embedded_nul_is_refused(start_proxy, tmp_path, certs):
    certs.leaf("nulcn", "x", subj="/CN=alice\\00evil")
    p = start_proxy("--auth-type", "cert", "--auth-failure-delay", "0", *certs.tls_flags())
    with Sasl(p.host, p.port, "alice", tls=True,
              cert=(certs.path("nulcn", "crt"), certs.path("nulcn", "key"))) as s:
        e = fatal([s.first])
        assert e["C"] == "28000", e


def test_cert_with_channel_binding_required_fails_in_the_client(start_proxy, tmp_path, certs):
    p = start_proxy("--auth-type", "cert", *certs.tls_flags())
    with pytest.raises(psycopg2.OperationalError) as exc:
        psycopg2.connect(p.dsn(user="alice", sslmode="require", channel_binding="require",
                               **certs.client_params("alice")))
    assert "without channel binding" in str(exc.value)


# ---------------------------------------------------------------------------------------------
# hba


HBA = """# first match wins
hostssl all alice 127.0.0.0/8 reject
host    all all   127.0.0.1/32 scram-sha-256
"""


def hba_proxy(start_proxy, tmp_path, text, *more, verifier_=None):
    path = tmp_path / "pg_hba.conf"
    path.write_text(text)
    users = write_users(tmp_path / "users.txt", {"alice": verifier_ or PW, "u": PW})
    return start_proxy("--auth-type", "hba", "--auth-hba-file", str(path), "--auth-file", users,
                       "--auth-secret-file", str(tmp_path / "auth.secret"),
                       "--auth-failure-delay", "0", *more)


def test_hba_first_matching_line_decides(start_proxy, tmp_path, certs):
    p = hba_proxy(start_proxy, tmp_path, HBA, *certs.tls_flags(ca=False))
    r = psql(p, "alice", PW, sslmode="require")
    assert r.returncode != 0
    assert ('FATAL:  pg_hba.conf rejects connection for host "127.0.0.1", user "alice", '
            'database "postgres", SSL encryption') in r.stderr
    psql(p, "alice", PW, check=True, sslmode="disable")  # no TLS: the scram line
    r = psql(p, "u", "nope", sslmode="require")
    assert 'password authentication failed for user "u"' in r.stderr


def test_hba_no_matching_line(start_proxy, tmp_path):
    p = hba_proxy(start_proxy, tmp_path, "host all alice 127.0.0.1/32 trust\n")
    with RawClient(p.host, p.port) as c:
        e = fatal(c.startup(user="u", database="d"))
    assert e["C"] == "28000"
    assert e["M"] == ('no pg_hba.conf entry for host "127.0.0.1", user "u", database "d", '
                      'no encryption')
    with RawClient(p.host, p.port) as c:  # trust for alice: no password
        assert c.startup(user="alice", database="postgres")[-1].type == "Z"


def test_hba_reject_and_quoted_all(start_proxy, tmp_path):
    p = hba_proxy(start_proxy, tmp_path,
                  'host "all" all 127.0.0.1/32 reject\n'
                  "host all all 127.0.0.1/32 trust\n")
    with RawClient(p.host, p.port) as c:
        e = fatal(c.startup(user="u", database="all"))  # the database named all
    assert e["M"].startswith("pg_hba.conf rejects connection for host")
    with RawClient(p.host, p.port) as c:
        assert c.startup(user="u", database="postgres")[-1].type == "Z"


def run_proxy(*args):
    return subprocess.run([BINARY, "--listen", f"127.0.0.1:{free_port()}",
                           "--upstream", "host=127.0.0.1 port=1"] + list(args),
                          capture_output=True, text=True, timeout=BOUND, env=clean_env(),
                          stdin=subprocess.DEVNULL)


def test_bad_files_exit_2_naming_file_and_line(tmp_path):
    hba = tmp_path / "pg_hba.conf"
    hba.write_text("host all all 127.0.0.1/32 trust\nhost all all 10.0.0.0/33 reject\n")
    r = run_proxy("--auth-type", "hba", "--auth-hba-file", str(hba))
    assert r.returncode == 2, r.stderr
    assert f"hba file '{hba}' line 2: invalid CIDR mask in address \"10.0.0.0/33\"" in r.stderr
    users = tmp_path / "users.txt"
    users.write_text('"a" "pw"\n"b" "md5a3556571e93b0d20722ba62be61e8c2d"\n')
    os.chmod(users, 0o600)
    r = run_proxy("--auth-type", "scram-sha-256", "--auth-file", str(users),
                  "--auth-secret-file", str(tmp_path / "s"))
    assert r.returncode == 2 and f"auth file '{users}' line 2: MD5 secrets" in r.stderr
    assert "a3556571" not in r.stderr
    os.chmod(users, 0o644)
    r = run_proxy("--auth-type", "scram-sha-256", "--auth-file", str(users),
                  "--auth-secret-file", str(tmp_path / "s"))
    assert r.returncode == 2 and "must not be world-accessible" in r.stderr
    r = run_proxy("--auth-type", "cert")
    assert r.returncode == 2 and "root certificate store" in r.stderr


def test_hba_reload_keeps_the_old_rules_when_the_new_file_is_bad(start_proxy, tmp_path):
    p = hba_proxy(start_proxy, tmp_path, "host all alice 127.0.0.1/32 reject\n"
                                         "host all all 127.0.0.1/32 trust\n")

    def alice():
        with RawClient(p.host, p.port) as c:
            return c.startup(user="alice", database="postgres")[-1]
    assert alice().type == "E"
    seen = len(log_events(p, "reload_failed"))
    (tmp_path / "pg_hba.conf").write_text("host all alice 127.0.0.1/32 trust\nhots all\n")
    p.signal(signal.SIGHUP)
    poll(lambda: len(log_events(p, "reload_failed")) > seen, what="reload_failed")
    assert "line 2: invalid connection type" in log_events(p, "reload_failed")[-1]["line"]
    assert alice().type == "E"  # the old reject still bites
    (tmp_path / "pg_hba.conf").write_text("host all all 127.0.0.1/32 trust\n")
    p.signal(signal.SIGHUP)
    poll(lambda: alice().type == "Z", what="the new rules")


def test_peer_over_the_unix_socket(start_proxy, tmp_path):
    d = shared_dir("pgwp-peer-")
    try:
        p = hba_proxy(start_proxy, tmp_path, "local all all peer\n"
                                             "host all all 127.0.0.1/32 reject\n",
                      "--unix-socket-dir", d)
        me = __import__("pwd").getpwuid(os.geteuid()).pw_name
        path = os.path.join(d, f".s.PGSQL.{p.port}")
        with RawClient.unix(path) as c:
            assert c.startup(user=me, database="postgres")[-1].type == "Z"
        with RawClient.unix(path) as c:
            e = fatal(c.startup(user="somebody_else", database="postgres"))
        assert (e["C"], e["M"]) == ("28000", 'Peer authentication failed for user '
                                             '"somebody_else"')
        if os.geteuid() == 0:  # another OS user: postgres is who it is, and only that
            base = ["runuser", "-u", "postgres", "--", PSQL, "-X", "-At", "-h", d, "-p",
                    str(p.port), "-d", "postgres", "-c", "select 'peer'"]
            r = subprocess.run(base + ["-U", "postgres"], capture_output=True, text=True,
                               timeout=BOUND, env=psql_env("/tmp"), stdin=subprocess.DEVNULL)
            assert r.returncode == 0 and r.stdout.strip() == "peer", r.stderr
            r = subprocess.run(base + ["-U", "root"], capture_output=True, text=True,
                               timeout=BOUND, env=psql_env("/tmp"), stdin=subprocess.DEVNULL)
            assert 'Peer authentication failed for user "root"' in r.stderr
        with RawClient(p.host, p.port) as c:  # TCP: the reject line
            assert fatal(c.startup(user=me, database="postgres"))["C"] == "28000"
    finally:
        __import__("shutil").rmtree(d, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# Reload of the auth file; the delay never holds other sessions


def test_auth_file_reload(start_proxy, tmp_path, alice_verifier):
    p = scram_proxy(start_proxy, tmp_path, alice_verifier)
    assert psql(p, "carol", "carols-pw").returncode != 0
    users = tmp_path / "users.txt"
    write_users(users, {"alice": verifier("new pw"), "carol": verifier("carols-pw")})
    p.signal(signal.SIGHUP)
    poll(lambda: psql(p, "carol", "carols-pw").returncode == 0, what="carol after the reload")
    assert psql(p, "alice", PW).returncode != 0  # her old password no longer works
    psql(p, "alice", "new pw", check=True)
    seen = len(log_events(p, "reload_failed"))
    users.write_text('"alice" "pw"\n"carol" ""\n')
    p.signal(signal.SIGHUP)
    poll(lambda: len(log_events(p, "reload_failed")) > seen, what="reload_failed")
    psql(p, "carol", "carols-pw", check=True)  # the old file stays


def test_failure_delay_does_not_hold_other_sessions(start_proxy, tmp_path, alice_verifier):
    p = start_proxy(*scram_flags(tmp_path, {"alice": alice_verifier}, "--workers", "1",
                                 "--auth-failure-delay", "30s"))
    with Sasl(p.host, p.port, "alice") as s:
        s.first_round()
        done = []

        def wrong():
            try:
                done.append(s.final_round("wrong"))
            except (OSError, pgwp.Closed):
                pass  # closed below, once the others were served
        t = threading.Thread(target=wrong, daemon=True)
        t.start()
        poll(lambda: log_events(p, "auth_failed"), what="the failure to be pending")
        for _ in range(3):  # the same (only) worker serves others meanwhile
            assert psql(p, "alice", PW, check=True).stdout.strip() == "postgres|ok"
        assert not done  # still waiting for its delay
        s.close()
    t.join(BOUND)


# ---------------------------------------------------------------------------------------------
# Identity: audit, application_name, metrics; secrets nowhere


def test_identity_in_audit_app_name_and_metrics(start_proxy, tmp_path, alice_verifier, dconn):
    audit = tmp_path / "audit.jsonl"
    mport = free_port()
    p = scram_proxy(start_proxy, tmp_path, alice_verifier, "--audit-log", str(audit),
                    "--metrics-listen", f"127.0.0.1:{mport}")
    conn = psycopg2.connect(p.dsn(user="alice", application_name="idapp"), password=PW)
    conn.autocommit = True
    name = scalar(conn, "select application_name from pg_stat_activity "
                        "where pid = pg_backend_pid()")
    assert name.startswith("idapp [alice@127.0.0.1:") and name.endswith(" scram]"), name
    m = scrape(mport)
    assert metric(m, "pgwire_proxy_user_sessions_active", user="alice") == 1
    for who in ("x1", "x2", "x3"):
        assert psql(p, who, "pw").returncode != 0
    m = scrape(mport)
    assert not [k for k in m if 'user="x' in k]  # claimed names make no series
    assert metric(m, "pgwire_proxy_authentications_total", method="scram-sha-256",
                  outcome="failed") == 3
    conn.close()
    rec = poll(lambda: [json.loads(x) for x in audit.read_text().splitlines()]
               if audit.exists() else [], what="an audit record")[0]
    assert (rec["user"], rec["auth"]) == ("alice", "scram-sha-256")
    assert "cert_subject" not in rec
    start = log_events(p, "session_start")[0]
    assert (start["user"], start["auth"]) == ("alice", "scram-sha-256")


def test_trust_marks_the_user_as_claimed(start_proxy, tmp_path):
    audit = tmp_path / "audit.jsonl"
    p = start_proxy("--audit-log", str(audit))
    with p.raw(user="whoever") as c:
        c.query("select 1")
    rec = poll(lambda: [json.loads(x) for x in audit.read_text().splitlines()]
               if audit.exists() else [], what="an audit record")[0]
    assert (rec["user"], rec["auth"]) == ("whoever", "trust")


def test_no_secret_reaches_a_log_an_error_or_a_metric(start_proxy, tmp_path, alice_verifier):
    audit = tmp_path / "audit.jsonl"
    mport = free_port()
    p = start_proxy(*scram_flags(tmp_path, {"alice": alice_verifier, "bob": "bobs-plain-pw"},
                                 "--log-level", "debug", "--audit-log", str(audit),
                                 "--metrics-listen", f"127.0.0.1:{mport}",
                                 "--auth-failure-delay", "0"))
    nonces = []
    for user, pw in (("alice", PW), ("alice", "wrong-guess"), ("bob", "bobs-plain-pw"),
                     ("nobody", "x")):
        with Sasl(p.host, p.port, user) as s:
            sf, _ = s.first_round(nonce=f"NONCE{len(nonces)}zzzzzzzzzzzzzzzz")
            m = s.final_round(pw)
            nonces.append(s.bare.split("r=")[1])
            nonces.append(sf.split(",")[0][2:])  # the combined nonce
            if m.type == "E":
                assert PW not in m.fields["M"] and "r=" not in m.fields["M"]
            else:
                s.c.read_until_rfq()
                s.c.query("select 1")
    _, body = pgwp.http_get(mport, "/metrics")
    text = p.log() + audit.read_text() + body
    salt = alice_verifier.split("$")[1].split(":")[1]
    keys = alice_verifier.split("$")[2]
    for secret in [PW, "wrong-guess", "bobs-plain-pw", salt, *keys.split(":"), *nonces,
                   "SCRAM-SHA-256$", "p=", "c=biws"]:
        assert secret not in text, f"{secret!r} appears in the log, audit or metrics"


def test_hash_password_output_works_with_psql(start_proxy, tmp_path):
    r = subprocess.run([BINARY, "--hash-password"], input="s3cr3t \u00e4\n", capture_output=True,
                       text=True, timeout=BOUND)
    assert r.returncode == 0 and r.stderr == "", r.stderr  # no prompt: stdin is no terminal
    users = write_users(tmp_path / "users.txt", {"dave": r.stdout.strip()})
    p = start_proxy("--auth-type", "scram-sha-256", "--auth-file", users,
                    "--auth-secret-file", str(tmp_path / "auth.secret"))
    psql(p, "dave", "s3cr3t \u00e4", check=True)
    r = subprocess.run([BINARY, "--hash-password"], input="", capture_output=True, text=True,
                       timeout=BOUND)
    assert r.returncode == 1 and "no password" in r.stderr
