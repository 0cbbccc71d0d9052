"""Per-user guardrails: [user:NAME] profiles in the config file (read-only for one user while
another writes, row limits, connection ceilings, an upstream role of their own), applied by the
proven identity, and reloaded like the top level."""
import signal

import psycopg2
import pytest

from authkit import scram_flags, verifier
from conftest import upstream_dsn
from pgwp import (errors, free_port, log_events, metric, only_error, poll, proxy_only, rows,
                  scalar, scrape)

pytestmark = proxy_only

PROFILES = """
[pgwire-proxy]
max-rows = 1000

[user:alice]
read-only = on
max-rows = 3
max-connections = 2

[user:bob]
deny = drop
"""


def proxy_with(start_proxy, tmp_path, text, *flags):
    path = tmp_path / "proxy.ini"
    path.write_text(text)
    return start_proxy("--config", str(path), *flags), path


def reload(p, path, text, expect="reloaded"):
    seen = len(log_events(p, expect))
    path.write_text(text)
    p.signal(signal.SIGHUP)
    poll(lambda: len(log_events(p, expect)) > seen, what=f"a {expect!r} log event")


def test_alice_read_only_while_bob_writes(start_proxy, tmp_path, dconn):
    with dconn.cursor() as cur:
        cur.execute("drop table if exists prof_w; create table prof_w (who text)")
    p, _ = proxy_with(start_proxy, tmp_path, PROFILES)
    with p.raw(user="alice") as a, p.raw(user="bob") as b:
        e = only_error(a.query("insert into prof_w values ('alice')"))
        assert e["C"] == "25006", e
        assert errors(b.query("insert into prof_w values ('bob')")) == []
        assert only_error(b.query("drop table prof_w"))["C"] == "42501"  # bob's own deny
        assert errors(a.query("select * from prof_w")) == []  # reading is fine
        assert only_error(p.raw(user="carol").query("drop table nothing_here"))["C"] == "42P01"
    assert scalar(dconn, "select string_agg(who, ',') from prof_w") == "bob"


def test_per_user_row_limit(start_proxy, tmp_path):
    p, _ = proxy_with(start_proxy, tmp_path, PROFILES)
    with p.raw(user="alice") as a, p.raw(user="bob") as b:
        e = only_error(a.query("select g from generate_series(1, 5) g"))
        assert e["C"] == "54000" and "rule: max-rows" in e["D"], e
        assert len(rows(b.query("select g from generate_series(1, 5) g"))) == 5
        e = only_error(b.query("select g from generate_series(1, 1001) g"))
        assert e["C"] == "54000"  # the top level's limit: bob's profile did not set one


def test_per_user_connection_ceiling(start_proxy, tmp_path):
    p, _ = proxy_with(start_proxy, tmp_path, PROFILES)
    first, second = p.raw(user="alice"), p.raw(user="alice")
    try:
        from pgwp import RawClient
        with RawClient(p.host, p.port) as c:
            e = only_error(c.startup(user="alice", database="postgres"))
        assert (e["S"], e["C"], e["M"]) == ("FATAL", "53300",
                                            'too many connections for role "alice"')
        with p.raw(user="bob") as b:  # others are not counted against alice
            assert rows(b.query("select 1")) == [("1",)]
        first.close()

        def third():
            with RawClient(p.host, p.port) as c:
                return c.startup(user="alice", database="postgres")[-1].type == "Z"
        poll(third, what="a slot for alice after one of hers closed")
    finally:
        first.close()
        second.close()


@pytest.fixture
def ro_role(dconn):
    with dconn.cursor() as cur:
        cur.execute("drop role if exists prof_ro; create role prof_ro login")
    yield "prof_ro"
    with dconn.cursor() as cur:
        cur.execute("select pg_terminate_backend(pid) from pg_stat_activity "
                    "where usename = 'prof_ro'")
        cur.execute("drop role if exists prof_ro")


def test_upstream_per_user_is_their_role(start_proxy, tmp_path, pg, ro_role, alice_verifier):
    """alice's sessions use an upstream role of their own, so PostgreSQL's GRANTs apply too."""
    text = f"[user:alice]\nupstream = {upstream_dsn(pg, user=ro_role)}\n"
    p, path = proxy_with(start_proxy, tmp_path, text,
                         *scram_flags(tmp_path, {"alice": alice_verifier, "bob": "bob-pw"}))
    a = psycopg2.connect(p.dsn(user="alice", password="alice-pw"))
    a.autocommit = True
    assert scalar(a, "select current_user") == ro_role
    with pytest.raises(psycopg2.errors.InsufficientPrivilege):
        scalar(a, "select * from secret_t")  # PostgreSQL itself refuses the role
    b = psycopg2.connect(p.dsn(user="bob", password="bob-pw"))
    b.autocommit = True
    assert scalar(b, "select current_user") == "postgres"
    # a reload that moves alice upstream applies to her new sessions only
    reload(p, path, "[user:alice]\nmax-rows = 7\n")
    assert scalar(a, "select current_user") == ro_role
    a2 = psycopg2.connect(p.dsn(user="alice", password="alice-pw"))
    assert scalar(a2, "select current_user") == "postgres"
    for c in (a, a2, b):
        c.close()


@pytest.fixture(scope="module")
def alice_verifier():
    return verifier("alice-pw")


def test_profile_reload_applies_to_the_next_statement(start_proxy, tmp_path):
    p, path = proxy_with(start_proxy, tmp_path, PROFILES)
    with p.raw(user="alice") as a:
        assert only_error(a.query("select g from generate_series(1, 5) g"))["C"] == "54000"
        reload(p, path, PROFILES.replace("max-rows = 3", "max-rows = 10"))
        assert len(rows(a.query("select g from generate_series(1, 5) g"))) == 5
        # a mistyped section is refused; the running profiles stay in force
        reload(p, path, PROFILES.replace("[user:alice]", "[usr:alice]")
               .replace("max-rows = 3", "max-rows = 100"), expect="reload_failed")
        failed = log_events(p, "reload_failed")[-1]["line"]
        assert "unknown section [usr:alice]" in failed and "line 5" in failed, failed
        assert len(rows(a.query("select g from generate_series(1, 5) g"))) == 5
        assert only_error(a.query("select g from generate_series(1, 11) g"))["C"] == "54000"
        assert only_error(a.query("create table t_x (x int)"))["C"] == "25006"


def test_user_label_on_session_metrics(start_proxy, tmp_path):
    mport = free_port()
    p, _ = proxy_with(start_proxy, tmp_path, PROFILES, "--metrics-listen", f"127.0.0.1:{mport}")
    with p.raw(user="alice"), p.raw(user="claimed-name-1"), p.raw(user="claimed-name-2"):
        m = scrape(mport)
        assert metric(m, "pgwire_proxy_user_sessions_active", user="alice") == 1
        assert metric(m, "pgwire_proxy_user_sessions_active", user="other") == 2
        assert not [k for k in m if "claimed-name" in k]
        assert metric(m, "pgwire_proxy_sessions_active") == 3
    poll(lambda: metric(scrape(mport), "pgwire_proxy_user_sessions_active", user="alice") == 0,
         what="alice's session to be counted out")
