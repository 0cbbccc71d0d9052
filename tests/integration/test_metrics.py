"""The Prometheus endpoint: counters that move with traffic, gauges, /healthz (also during a
drain), and no secrets."""
import signal

import psycopg2
import pytest

from pgwp import (BOUND, RawClient, free_port, http_get, metric, only_error, poll, proxy_only,
                  rows, scrape)

pytestmark = proxy_only

Q = "pgwire_proxy_queries_total"


def metrics_proxy(start_proxy, *flags, **kw):
    mport = free_port()
    p = start_proxy("--metrics-listen", f"127.0.0.1:{mport}", *flags, **kw)
    p.mport = mport
    return p


def delta(after, before, name, **labels):
    return metric(after, name, **labels) - metric(before, name, **labels)


def wait_metrics(p, before, expected):
    """Polls /metrics until every (name, labels) in `expected` has moved by at least its
    value; returns that scrape (the caller asserts exact values on it)."""
    def ready():
        m = scrape(p.mport)
        ok = all(delta(m, before, name, **dict(labels)) >= want
                 for (name, labels), want in expected.items())
        return m if ok else None
    return poll(ready, what=f"metrics to reach {expected}")


def test_endpoint_basics(start_proxy):
    p = metrics_proxy(start_proxy)
    status, body = http_get(p.mport, "/metrics")
    assert status == 200
    for name in ("pgwire_proxy_build_info", "pgwire_proxy_sessions_active",
                 "pgwire_proxy_queries_total", "pgwire_proxy_query_duration_seconds",
                 "pgwire_proxy_connections_total", "pgwire_proxy_tls_handshakes_total"):
        assert f"# TYPE {name} " in body, name
        assert f"# HELP {name} " in body, name
    assert http_get(p.mport, "/healthz") == (200, "ok\n")
    assert http_get(p.mport, "/nope")[0] == 404


def test_query_counters(start_proxy):
    p = metrics_proxy(start_proxy, "--deny", "drop", "--max-rows", "5")
    before = scrape(p.mport)
    n = 7
    with p.raw() as c:
        for i in range(n):
            assert rows(c.query(f"select {i}")) == [(str(i),)]
        assert only_error(c.query("select 1/0"))["C"] == "22012"
        assert only_error(c.query("drop table metrics_nothing"))["C"] == "42501"
        assert only_error(c.query("select nope_column"))["C"] == "42703"
        # last: its cancel may outlive it and hit a next statement (a known race)
        assert only_error(c.query("select generate_series(1, 50)"))["C"] == "54000"
        expected = {(Q, (("outcome", "ok"),)): n,
                    (Q, (("outcome", "error"),)): 2,
                    (Q, (("outcome", "denied"),)): 1,
                    (Q, (("outcome", "limited"),)): 1}
        after = wait_metrics(p, before, expected)
        assert delta(after, before, "pgwire_proxy_sessions_active") == 1
    assert delta(after, before, Q, outcome="ok") == n
    assert delta(after, before, Q, outcome="error") == 2
    assert delta(after, before, Q, outcome="denied") == 1
    assert delta(after, before, Q, outcome="limited") == 1
    assert delta(after, before, Q, outcome="rejected") == 0
    assert delta(after, before, "pgwire_proxy_errors_total", **{"class": "22"}) == 1
    assert delta(after, before, "pgwire_proxy_errors_total", **{"class": "42"}) == 2
    assert delta(after, before, "pgwire_proxy_errors_total", **{"class": "54"}) == 1
    assert delta(after, before, "pgwire_proxy_guardrail_violations_total", rule="deny:drop",
                 mode="enforce") == 1
    assert delta(after, before, "pgwire_proxy_guardrail_violations_total", rule="max-rows",
                 mode="enforce") == 1
    assert delta(after, before, "pgwire_proxy_rows_sent_total") >= n
    assert delta(after, before, "pgwire_proxy_bytes_sent_total") > 0
    count = metric(after, "pgwire_proxy_query_duration_seconds_count")
    assert count - metric(before, "pgwire_proxy_query_duration_seconds_count") == n + 4
    assert count == metric(after, "pgwire_proxy_query_duration_seconds_bucket", le="+Inf")


def test_connection_counters_and_sessions_gauge(start_proxy):
    p = metrics_proxy(start_proxy, "--max-connections", "3")
    before = scrape(p.mport)
    clients = [p.raw() for _ in range(3)]
    try:
        m = poll(lambda: (lambda m: m if metric(m, "pgwire_proxy_sessions_active") == 3
                          else None)(scrape(p.mport)), what="sessions_active == 3")
        assert delta(m, before, "pgwire_proxy_connections_total", outcome="accepted") == 3
        with RawClient(p.host, p.port) as extra:
            err = only_error(extra.startup(user="postgres", database="postgres"))
            assert err["C"] == "53300"
        m = wait_metrics(p, before, {("pgwire_proxy_connections_total",
                                      (("outcome", "rejected_limit"),)): 1})
        assert delta(m, before, "pgwire_proxy_connections_total", outcome="rejected_limit") == 1
        assert metric(m, "pgwire_proxy_sessions_active") == 3
    finally:
        for c in clients[1:]:
            c.close()
    poll(lambda: metric(scrape(p.mport), "pgwire_proxy_sessions_active") == 1,
         what="sessions_active back to 1")
    clients[0].close()
    poll(lambda: metric(scrape(p.mport), "pgwire_proxy_sessions_active") == 0,
         what="sessions_active back to 0")


def test_healthz_when_the_upstream_is_down(start_proxy):
    dead = f"host=127.0.0.1 port={free_port()} dbname=postgres user=postgres connect_timeout=2"
    p = metrics_proxy(start_proxy, dsn=dead)
    status, _ = http_get(p.mport, "/healthz", timeout=BOUND)
    assert status == 503
    with RawClient(p.host, p.port) as c:
        err = only_error(c.startup(user="postgres", database="postgres"))
        assert (err["S"], err["C"]) == ("FATAL", "08001"), err
    m = wait_metrics(p, {}, {("pgwire_proxy_connections_total",
                              (("outcome", "upstream_failed"),)): 1})
    assert metric(m, "pgwire_proxy_upstream_connect_failures_total") >= 1
    assert metric(m, "pgwire_proxy_sessions_active") == 0


def test_healthz_is_503_while_draining(start_proxy):
    proxy = metrics_proxy(start_proxy, "--shutdown-timeout", "20s")
    with proxy.raw() as c:
        c.query("begin")
        assert http_get(proxy.mport, "/healthz") == (200, "ok\n")
        proxy.signal(signal.SIGTERM)
        poll(lambda: http_get(proxy.mport, "/healthz")[0] == 503,
             what="/healthz to answer 503 during the drain (still 200)")
        assert proxy.alive()  # still draining: the open transaction may finish
        assert rows(c.query("select 'still served'")) == [("still served",)]
        c.query("commit")
        assert proxy.wait() == 0


SECRET = "sekrit-pw-XYZ"


@pytest.mark.parametrize("dsn", [
    "host={h} port={p} dbname=postgres user=pwuser password=" + SECRET,
    "host={h} port={p} dbname=postgres user=pwuser password='" + SECRET + " with space'",
    "postgresql://pwuser:" + SECRET + "@{h}:{p}/postgres",
    "postgresql://pwuser@{h}:{p}/postgres?password=" + SECRET + "&connect_timeout=5",
], ids=["keyword", "quoted", "uri", "uri-query"])
def test_dsn_password_never_shown(start_proxy, pg, dsn):
    """pwuser's real password is 'sekrit-pw': these DSNs fail authentication upstream."""
    p = metrics_proxy(start_proxy, "--log-level", "debug", dsn=dsn.format(h=pg.host, p=pg.port),
                      user="pwuser")
    with RawClient(p.host, p.port) as c:
        err = only_error(c.startup(user="pwuser", database="postgres"))
    assert (err["S"], err["C"]) == ("FATAL", "28P01"), err
    assert "could not connect to the upstream server" in err["M"]
    text = " ".join(err.values())
    with pytest.raises(psycopg2.OperationalError) as exc:
        psycopg2.connect(p.dsn(user="pwuser"))
    text += str(exc.value)
    wait_metrics(p, {}, {("pgwire_proxy_connections_total", (("outcome", "upstream_failed"),)): 2})
    text += http_get(p.mport, "/metrics")[1] + http_get(p.mport, "/healthz")[1]
    text += p.log()
    assert "sekrit" not in text and "XYZ" not in text, text


def test_working_password_not_logged(start_proxy, pg):
    dsn = f"host={pg.host} port={pg.port} dbname=postgres user=pwuser password=sekrit-pw"
    p = metrics_proxy(start_proxy, "--log-level", "debug", dsn=dsn, user="pwuser")
    with p.raw(user="pwuser") as c:
        assert rows(c.query("select current_user")) == [("pwuser",)]
    assert http_get(p.mport, "/healthz")[0] == 200
    text = p.log() + http_get(p.mport, "/metrics")[1]
    assert "sekrit" not in text, text
