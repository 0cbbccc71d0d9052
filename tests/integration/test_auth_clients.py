"""Drivers authenticate unchanged: psql, libpq, psycopg2, psycopg 3, asyncpg, pgjdbc and
node-postgres log in with SCRAM-SHA-256 against --auth-file, over TLS with channel binding
(SCRAM-SHA-256-PLUS) where the driver supports it, and get PostgreSQL's 28P01 for a wrong
password. Which exchange ran is checked in the proxy's log, not taken from the driver."""
import asyncio
import os
import ssl
import subprocess

import psycopg2
import pytest

from authkit import Certs, scram_flags, verifier
from pgwp import PSQL, log_events, proxy_only, psql_env
from test_clients import (JDBC_JAR, NODE_DIR, check_script_output, jdbc_classes,  # noqa: F401
                          jdbc_url, libpq_client, node_client, run, run_jdbc)

pytestmark = proxy_only

PW = "Tr0ub4dor&3 with spaces"


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return Certs(str(tmp_path_factory.mktemp("clientcerts")))


@pytest.fixture(scope="module")
def scram_proxy(module_proxies, tmp_path_factory, certs):
    d = tmp_path_factory.mktemp("clientauth")
    return module_proxies(*scram_flags(d, {"postgres": verifier(PW), "plainuser": "plain-pw"},
                                       "--auth-failure-delay", "0", *certs.tls_flags(ca=False)),
                          name="scram")


@pytest.fixture
def p(scram_proxy):
    if not scram_proxy.alive():
        pytest.fail(f"the SCRAM proxy died:\n{scram_proxy.log()[-3000:]}")
    return scram_proxy


def last_auth(p, n_before):
    """The 'authenticated' log record that came after the first n_before ones."""
    recs = log_events(p, "authenticated")
    assert len(recs) > n_before, "no new authentication was logged"
    return recs[-1]


def bound(rec):
    return rec.get("channel_binding") == "tls-server-end-point"


def test_psql_scram_and_channel_binding(p):
    for extra, want_bound in (("sslmode=disable", False),
                              ("sslmode=require channel_binding=require", True)):
        n = len(log_events(p, "authenticated"))
        r = subprocess.run([PSQL, "-X", "-At", "-d", p.dsn(connect_timeout=None) + " " + extra,
                            "-c", "select 'ok'"], capture_output=True, text=True,
                           env=dict(psql_env(p.home), PGPASSWORD=PW), stdin=subprocess.DEVNULL,
                           timeout=60)
        assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr
        assert bound(last_auth(p, n)) == want_bound
    r = p.psql("-c", "select 1", PGPASSWORD="wrong")
    assert 'FATAL:  password authentication failed for user "postgres"' in r.stderr


def test_libpq_scram_with_channel_binding(p, libpq_client):  # noqa: F811
    n = len(log_events(p, "authenticated"))
    dsn = p.dsn(application_name="libpq_client") + \
        f" password='{PW}' sslmode=require channel_binding=require"
    r = run([libpq_client, dsn], env=psql_env(p.home))
    check_script_output(r, extra=[("tx_status_after_error", "E")])
    assert bound(last_auth(p, n))


def test_psycopg2_scram_with_channel_binding(p):
    n = len(log_events(p, "authenticated"))
    conn = psycopg2.connect(p.dsn(sslmode="require", channel_binding="require"), password=PW)
    try:
        with conn.cursor() as cur:
            cur.execute("select 'psycopg2 ok'")
            assert cur.fetchone() == ("psycopg2 ok",)
    finally:
        conn.close()
    assert bound(last_auth(p, n))
    with pytest.raises(psycopg2.OperationalError) as exc:
        psycopg2.connect(p.dsn(), password="wrong")
    assert 'password authentication failed for user "postgres"' in str(exc.value)
    # a plain entry of the auth file, derived into a verifier at load
    conn = psycopg2.connect(p.dsn(user="plainuser"), password="plain-pw")
    conn.close()


try:
    import psycopg
except ImportError:
    psycopg = None


@pytest.mark.skipif(psycopg is None, reason="psycopg 3 not installed (python3-psycopg)")
def test_psycopg3_scram_with_channel_binding(p):
    n = len(log_events(p, "authenticated"))
    with psycopg.connect(p.dsn(sslmode="require", channel_binding="require"), password=PW,
                         autocommit=True, cursor_factory=psycopg.ClientCursor) as conn:
        assert conn.execute("select 'psycopg3 ok'").fetchone() == ("psycopg3 ok",)
    assert bound(last_auth(p, n))
    with pytest.raises(psycopg.OperationalError) as exc:
        psycopg.connect(p.dsn(), password="wrong")
    assert exc.value.sqlstate == "28P01" or "password authentication failed" in str(exc.value)


try:
    import asyncpg
except ImportError:
    asyncpg = None


@pytest.mark.skipif(asyncpg is None, reason="asyncpg not installed (python3-asyncpg)")
def test_asyncpg_scram(p):
    """asyncpg has no channel binding: over TLS it answers the -PLUS offer with "n", which is
    allowed (only "y" would mean a downgrade)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE

    async def go(**kw):
        conn = await asyncpg.connect(host=p.host, port=p.port, user="postgres",
                                     database="postgres", password=kw.pop("password", PW),
                                     statement_cache_size=0, timeout=10, **kw)
        try:
            return await conn.fetchval("select 'asyncpg ok'")
        finally:
            await conn.close()
    n = len(log_events(p, "authenticated"))
    # asyncpg's fetchval uses the extended protocol: the proxy refuses it by default, after
    # the login that is under test here
    for kw in ({"ssl": False}, {"ssl": ctx}):
        with pytest.raises(asyncpg.exceptions.FeatureNotSupportedError):
            asyncio.run(go(**kw))
        rec = last_auth(p, n)
        n += 1
        assert rec["method"] == "scram-sha-256" and not bound(rec)
    with pytest.raises(asyncpg.exceptions.InvalidPasswordError):
        asyncio.run(go(password="wrong", ssl=False))


def test_pgjdbc_scram(p, jdbc_classes):  # noqa: F811
    """pgjdbc 42.5 has no channelBinding option: over TLS it answers the -PLUS offer with "n"."""
    for ssl_mode in ("disable", "require"):
        n = len(log_events(p, "authenticated"))
        url = jdbc_url(p, preferQueryMode="simple", sslmode=ssl_mode,
                       password=PW.replace(" ", "%20").replace("&", "%26"))
        r = run_jdbc(jdbc_classes, url)
        check_script_output(r, extra=[("tx_error_then", "25P02")])
        assert last_auth(p, n)["method"] == "scram-sha-256"
    r = run_jdbc(jdbc_classes, jdbc_url(p, preferQueryMode="simple", password="wrong"))
    assert r.returncode != 0 and "28P01" in r.stdout + r.stderr or \
        "password authentication failed" in r.stdout + r.stderr


def test_node_pg_scram_with_channel_binding(p, node_client):  # noqa: F811
    for binding, sslmode in (("0", "disable"), ("1", "no-verify")):
        n = len(log_events(p, "authenticated"))
        env = dict(os.environ, PGHOST=p.host, PGPORT=str(p.port), PGUSER=p.user,
                   PGDATABASE=p.dbname, PGAPPNAME="node-scram", PGPASSWORD=PW,
                   PGSSLMODE=sslmode, PGWP_CHANNEL_BINDING=binding)
        r = run(["node", node_client], env=env)
        check_script_output(r, extra=[("tx_error_then", "25P02")])
        assert bound(last_auth(p, n)) == (binding == "1")
    env = dict(os.environ, PGHOST=p.host, PGPORT=str(p.port), PGUSER=p.user,
               PGDATABASE=p.dbname, PGPASSWORD="wrong", PGSSLMODE="disable")
    r = run(["node", node_client], env=env)
    assert r.returncode != 0 and "password authentication failed" in r.stdout + r.stderr
