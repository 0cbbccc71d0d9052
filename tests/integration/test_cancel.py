"""CancelRequest through the proxy: drivers, psql's Ctrl-C, wrong keys, the key itself."""
import shutil
import socket
import struct
import subprocess
import time
import uuid

import psycopg2
import psycopg2.errors
import psycopg2.extensions
import pytest

from pgwp import marker
from pgwp import (BOUND, CANCEL_REQUEST, PSQL, metric, poll, proxy_only, psql_env,
                  rfq, rows, run_canceled, scrape, tags, wait_active, free_port)


def test_driver_cancel_outside_transaction(proxy, dconn):
    app = marker("cancel-auto")
    conn = proxy.connect(autocommit=True, application_name=app)
    try:
        err, took = run_canceled(conn, dconn, app)
        assert err.pgcode == "57014"
        assert "canceling statement due to user request" in str(err)
        assert took < 5, f"cancel took {took:.1f} s"
        assert conn.info.transaction_status == psycopg2.extensions.TRANSACTION_STATUS_IDLE
        with conn.cursor() as cur:
            cur.execute("select 'still usable'")
            assert cur.fetchall() == [("still usable",)]
    finally:
        conn.close()


def test_driver_cancel_inside_transaction(proxy, dconn):
    with dconn.cursor() as cur:
        cur.execute("drop table if exists cancel_tx; create table cancel_tx (id int)")
    app = marker("cancel-tx")
    conn = proxy.connect(autocommit=False, application_name=app)
    try:
        with conn.cursor() as cur:
            cur.execute("insert into cancel_tx values (1)")
        err, took = run_canceled(conn, dconn, app)
        assert err.pgcode == "57014" and took < 5, (err.pgcode, took)
        assert conn.info.transaction_status == psycopg2.extensions.TRANSACTION_STATUS_INERROR
        with conn.cursor() as cur:
            with pytest.raises(psycopg2.errors.InFailedSqlTransaction):
                cur.execute("select 1")
        conn.rollback()
        with conn.cursor() as cur:
            cur.execute("select 2")
            assert cur.fetchall() == [(2,)]
        conn.commit()
    finally:
        conn.close()
    with dconn.cursor() as cur:
        cur.execute("select count(*) from cancel_tx")
        assert cur.fetchone()[0] == 0


def test_cancel_request_carries_the_upstream_pid(proxy):
    with proxy.raw() as c:
        pid, _secret = c.backend_key
        assert rows(c.query("select pg_backend_pid()")) == [(str(pid),)]


@pytest.fixture
def tmux(tmp_path):
    """A private tmux server (own socket), killed at the end."""
    if not shutil.which("tmux"):
        pytest.skip("tmux not installed")
    sock = f"pgwp-{uuid.uuid4().hex[:8]}"
    env = psql_env(str(tmp_path))
    env["TERM"] = "xterm"

    def run(*args, check=True):
        return subprocess.run(["tmux", "-L", sock] + list(args), env=env, text=True,
                              stdin=subprocess.DEVNULL, capture_output=True, check=check,
                              timeout=BOUND)
    yield run
    run("kill-server", check=False)


def test_psql_ctrl_c_cancels(proxy, dconn, tmux):
    app = marker("psql-cancel")
    dsn = proxy.dsn(application_name=app, connect_timeout=None)
    tmux("new-session", "-d", "-s", "t", "-x", "160", "-y", "40", f"{PSQL} -X '{dsn}'")

    def pane():
        return tmux("capture-pane", "-p", "-t", "t", "-S", "-200").stdout

    poll(lambda: "=#" in pane(), what="the psql prompt")
    # \g, not ';': tmux reads an argument ending in ';' as its own command separator
    tmux("send-keys", "-t", "t", "select pg_sleep(30) \\g", "Enter")
    wait_active(dconn, app)
    start = time.monotonic()
    tmux("send-keys", "-t", "t", "C-c")
    poll(lambda: "canceling statement due to user request" in pane(), what="the cancel error")
    assert time.monotonic() - start < 5
    tmux("send-keys", "-t", "t", "select 'after' || 'cancel' as probe \\g", "Enter")
    poll(lambda: "aftercancel" in pane(), what="the next query's result")
    assert "(1 row)" in pane()


@proxy_only
def test_cancel_with_wrong_secret_cancels_nothing(start_proxy, dconn):
    mport = free_port()
    p = start_proxy("--metrics-listen", f"127.0.0.1:{mport}")
    app = marker("wrong-key")
    before = scrape(mport)
    with p.raw(application_name=app) as c:
        pid, secret = c.backend_key
        c.query_send("select pg_sleep(2)")
        wait_active(dconn, app)
        with socket.create_connection((p.host, p.port), timeout=BOUND) as cs:
            cs.sendall(struct.pack("!IIII", 16, CANCEL_REQUEST, pid, secret ^ 0x5a5a5a5a))
            assert cs.recv(1) == b"", "the proxy must close a cancel connection without a reply"
        msgs = c.read_until_rfq()
        assert [m for m in msgs if m.type == "E"] == [], msgs
        assert tags(msgs) == ["SELECT 1"] and rfq(msgs) == "I"
        # a wrong pid with the right secret is no better
        with socket.create_connection((p.host, p.port), timeout=BOUND) as cs:
            cs.sendall(struct.pack("!IIII", 16, CANCEL_REQUEST, pid + 1, secret))
            assert cs.recv(1) == b""
        assert rows(c.query("select 'alive'")) == [("alive",)]
    after = poll(lambda: (lambda m: m if metric(m, "pgwire_proxy_cancel_requests_total",
                                                outcome="unknown_key") -
                          metric(before, "pgwire_proxy_cancel_requests_total",
                                 outcome="unknown_key") >= 2 else None)(scrape(mport)),
                 what="cancel_requests_total{outcome=unknown_key} to move")
    assert metric(after, "pgwire_proxy_cancel_requests_total", outcome="forwarded") == \
        metric(before, "pgwire_proxy_cancel_requests_total", outcome="forwarded")
