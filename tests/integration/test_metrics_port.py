"""The metrics port as an attack surface, and what /healthz means: slow clients must not lock
the health check out, a check must not cost an upstream session, /healthz must say 503 when
the upstream refuses the DSN's login or is full, and clients must not be able to create or fake
error-class series."""
import socket

import pytest

from pgwp import (RawClient, Slowloris, free_port, http_get, metric, only_error, poll,
                  proxy_only, scrape)

pytestmark = proxy_only


def metrics_proxy(start_proxy, *flags, **kw):
    mport = free_port()
    p = start_proxy("--metrics-listen", f"127.0.0.1:{mport}", *flags, **kw)
    p.mport = mport
    return p


def check(mport, timeout=2):
    """GET /healthz with a load balancer's check timeout: (status, body), (0, why) if none."""
    try:
        return http_get(mport, "/healthz", timeout=timeout)
    except OSError as e:  # urllib's URLError and socket timeouts are OSErrors
        return 0, repr(e)


def test_slowloris_does_not_lock_out_healthz(start_proxy):
    """64 slow connections from 4 addresses once kept /healthz unreachable (every slot taken,
    each kept alive by a byte now and then): a load balancer marked the instance DOWN. Now an
    address gets a few slots, every request has an absolute deadline, and checks are answered
    throughout the attack."""
    p = metrics_proxy(start_proxy)
    assert check(p.mport) == (200, "ok\n")
    addrs = ["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"]
    with Slowloris(p.mport, addrs, 16) as attack:
        for _ in range(5):
            seen = attack.connects
            assert check(p.mport) == (200, "ok\n")
            poll(lambda: attack.connects > seen, what="the attack to go on")
        m = scrape(p.mport)
    closed = {r: metric(m, "pgwire_proxy_http_connections_closed_total", reason=r)
              for r in ("deadline", "evicted", "address_limit")}
    assert closed["address_limit"] > 0, closed


def test_healthz_probes_the_upstream_once_per_interval(start_proxy, pg):
    """Every /healthz once opened a full authenticated upstream session (100 probes, 100
    sessions; ~157/s from one client). Checks now share one probe per interval."""
    p = metrics_proxy(start_proxy)
    poll(lambda: check(p.mport)[0] == 200, what="a first healthy answer")
    before = pg.log_count("connection authorized")
    for _ in range(100):
        assert check(p.mport) == (200, "ok\n")
    sessions = pg.log_count("connection authorized") - before
    assert sessions <= 5, f"{sessions} upstream sessions for 100 health checks"
    m = scrape(p.mport)
    assert metric(m, "pgwire_proxy_upstream_up") == 1
    assert metric(m, "pgwire_proxy_upstream_probes_total", result="ok") >= 1


def test_healthz_is_503_when_the_upstream_refuses_the_login(start_proxy, pg):
    """/healthz once answered 200 while PostgreSQL rejected the DSN's password: a ping only
    asks whether the server answers, and every client session failed meanwhile."""
    dsn = f"host={pg.host} port={pg.port} dbname=postgres user=pwuser password=wrong-pw"
    p = metrics_proxy(start_proxy, dsn=dsn, user="pwuser")
    assert check(p.mport) == (503, "unavailable: upstream authentication failed\n")
    m = scrape(p.mport)
    assert metric(m, "pgwire_proxy_upstream_probes_total", result="auth_failed") >= 1
    assert metric(m, "pgwire_proxy_upstream_up") == 0
    with RawClient(p.host, p.port) as c:
        assert only_error(c.startup(user="pwuser", database="postgres"))["C"] == "28P01"


@pytest.fixture
def full_role(dconn):
    with dconn.cursor() as cur:
        cur.execute("drop role if exists hc_full; create role hc_full login connection limit 0")
    yield "hc_full"
    with dconn.cursor() as cur:
        cur.execute("drop role if exists hc_full")


def test_healthz_is_503_when_the_upstream_is_full(start_proxy, pg, full_role):
    """A role (or server) with no connection slot left refuses every session with 53300, yet
    /healthz said 200. It is unhealthy, and clients get PostgreSQL's own 53300."""
    dsn = f"host={pg.host} port={pg.port} dbname=postgres user={full_role}"
    p = metrics_proxy(start_proxy, dsn=dsn, user=full_role)
    assert check(p.mport) == (503, "unavailable: upstream has too many connections\n")
    m = scrape(p.mport)
    assert metric(m, "pgwire_proxy_upstream_probes_total", result="too_many_connections") >= 1
    with RawClient(p.host, p.port) as c:
        err = only_error(c.startup(user=full_role, database="postgres"))
        assert (err["S"], err["C"]) == ("FATAL", "53300"), err


def test_healthz_answers_while_the_upstream_hangs(start_proxy):
    """An upstream that takes the TCP connection and never answers once held every /healthz
    for the whole connect timeout, longer than a load balancer waits. The check answers
    within its timeout (503: nothing known yet), whatever PostgreSQL does."""
    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(64)
    try:
        dsn = f"host=127.0.0.1 port={hole.getsockname()[1]} dbname=postgres user=postgres"
        p = metrics_proxy(start_proxy, dsn=dsn)
        for _ in range(3):
            status, body = check(p.mport, timeout=2)
            assert status == 503, body
            assert body.startswith("unavailable: upstream"), body
    finally:
        hole.close()


def test_client_chosen_sqlstates_do_not_create_series(start_proxy):
    """RAISE ... USING ERRCODE once created any two-character class as a label (all 1,296 in
    0.3 s) and let a client invent the classes operators alert on. Labels are PostgreSQL's
    defined classes; everything else is counted as `other`."""
    p = metrics_proxy(start_proxy)
    before = scrape(p.mport)
    invented = ["QQ001", "ZZ999", "9Z000", "A1B2C", "YY000", "1A000", "ZA123", "Q0000"]
    with p.raw() as c:
        for code in invented + ["22012"]:
            msgs = c.query(f"do $$ begin raise exception 'x' using errcode = '{code}'; end $$")
            assert only_error(msgs)["C"] == code  # relayed unchanged to the client
    n = len(invented) + 1

    def settled():
        m = scrape(p.mport)
        total = sum(v for k, v in m.items() if k.startswith("pgwire_proxy_errors_total{")) - \
            sum(v for k, v in before.items() if k.startswith("pgwire_proxy_errors_total{"))
        return m if total >= n else None
    m = poll(settled, what="the errors to be counted")
    labels = {k for k in m if k.startswith("pgwire_proxy_errors_total{")}
    for code in invented:
        assert f'pgwire_proxy_errors_total{{class="{code[:2]}"}}' not in labels, labels
    assert metric(m, "pgwire_proxy_errors_total", **{"class": "other"}) - \
        metric(before, "pgwire_proxy_errors_total", **{"class": "other"}) == len(invented)
    assert metric(m, "pgwire_proxy_errors_total", **{"class": "22"}) - \
        metric(before, "pgwire_proxy_errors_total", **{"class": "22"}) == 1
