"""Fixtures: one throwaway PostgreSQL per session, proxies in front of it, per-test bounds.

PGWP_DIRECT=1 points every "proxy" at PostgreSQL itself (flags ignored, proxy_only tests
skipped), to debug the tests without the proxy."""
import faulthandler
import os
import signal
import sys
import threading

import psycopg2
import pytest

import pgwp
from pgwp import DIRECT, Proxy, Target

TEST_TIMEOUT = int(os.environ.get("PGWP_TEST_TIMEOUT", 60)) * pgwp.SCALE

SCHEMA = """
create role app login;
create role pwuser login password 'sekrit-pw';
create table secret_t (id int primary key, v text);
create table items (
    id serial primary key,
    name text not null constraint items_name_key unique,
    qty int not null default 0 constraint items_qty_check check (qty >= 0)
);
comment on table items is 'sample items';
insert into items (name, qty) values ('apple', 3), ('pear', 0), ('plum', 7);
create index items_qty_idx on items (qty);
create view items_in_stock as select id, name, qty from items where qty > 0;
create function add_one(int) returns int language sql immutable as 'select $1 + 1';
create schema sales;
create table sales.orders (
    id int primary key,
    item_id int not null references items (id),
    ordered_at timestamptz not null default '2024-01-01 00:00:00+00'
);
grant usage on schema sales to app;
"""


# ---------------------------------------------------------------------------------------------
# Bounds: every test ends within TEST_TIMEOUT (+ a little), whatever hangs.


def _on_alarm(bound):
    raise TimeoutError(f"test exceeded {bound} s")


@pytest.fixture(autouse=True)
def _test_time_bound(request):
    """SIGALRM interrupts Python-level waits (sockets, subprocess, psycopg 3). A client stuck in
    C (psycopg2 inside libpq) does not see it, so a watchdog thread kills the proxies a bit
    later, which makes such a call return. faulthandler is the last resort. A test that builds
    the tree says how long it may take with @pytest.mark.time_bound(SECONDS)."""
    mark = request.node.get_closest_marker("time_bound")
    bound = int(mark.args[0]) * pgwp.SCALE if mark else TEST_TIMEOUT
    old = signal.signal(signal.SIGALRM, lambda signum, frame: _on_alarm(bound))
    signal.alarm(bound)
    watchdog = threading.Timer(bound + 5, lambda: [p.kill() for p in list(Proxy.live)])
    watchdog.daemon = True
    watchdog.start()
    faulthandler.dump_traceback_later(bound + 60, exit=True, file=sys.stderr)
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()
        watchdog.cancel()
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


# ---------------------------------------------------------------------------------------------
# PostgreSQL


@pytest.fixture(scope="session")
def pg():
    cluster = pgwp.PgCluster()
    try:
        cluster.start()
        conn = psycopg2.connect(host=cluster.host, port=cluster.port, user="postgres",
                                dbname="postgres", connect_timeout=10)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(SCHEMA)
        conn.close()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def direct(pg, tmp_path_factory):
    """PostgreSQL itself, as superuser postgres."""
    return Target(pg.host, pg.port, user="postgres", home=str(tmp_path_factory.mktemp("home")))


@pytest.fixture
def dconn(direct):
    """An autocommit psycopg2 connection straight to PostgreSQL, for setup and checks."""
    conn = direct.connect(autocommit=True)
    yield conn
    conn.close()


# ---------------------------------------------------------------------------------------------
# Proxies


def upstream_dsn(pg, user="postgres", **kw):
    parts = dict(host=pg.host, port=pg.port, dbname="postgres", user=user)
    parts.update(kw)
    return " ".join(f"{k}={v}" for k, v in parts.items())


class ProxyFactory:
    """Starts proxies; `stop_all()` terminates them and returns the problems seen."""

    def __init__(self, pg, logdir):
        self.pg, self.logdir, self.started = pg, logdir, []

    def __call__(self, *flags, dsn=None, user="postgres", upstream=True, env=None,
                 name="proxy"):
        """Starts a proxy with `--listen 127.0.0.1:<free> [--upstream DSN] *flags`. `user` is
        the DSN's user (and what clients name: in direct mode they log in as it)."""
        if DIRECT:
            return Target(self.pg.host, self.pg.port, user=user, home=self.logdir)
        if dsn is None:
            dsn = upstream_dsn(self.pg, user=user)
        args = (["--upstream", dsn] if upstream else []) + [str(f) for f in flags]
        proxy = Proxy(args, self.logdir, user=user, env=env, name=name)
        self.started.append(proxy)
        return proxy.start()

    def stop_all(self):
        problems = []
        for p in self.started:
            problems += p.stop()
        self.started = []
        return problems


@pytest.fixture
def start_proxy(pg, tmp_path):
    """Factory: start_proxy('--max-connections', 2, dsn=..., user=...) -> started Target."""
    factory = ProxyFactory(pg, str(tmp_path))
    yield factory
    problems = factory.stop_all()
    if problems:
        pytest.fail("\n".join(problems))


@pytest.fixture(scope="module")
def module_proxies(pg, tmp_path_factory):
    factory = ProxyFactory(pg, str(tmp_path_factory.mktemp("proxies")))
    yield factory
    problems = factory.stop_all()
    if problems:
        pytest.fail("\n".join(problems))


def _guarded(target):
    """Restarts a module proxy that died in an earlier test; fails the test it dies in."""
    if target.is_proxy and not target.alive():
        target.stop()
        target.killed = False
        target.start()
    yield target
    if target.is_proxy and not target.alive() and not target.killed:
        pytest.fail(f"proxy died during the test (exit {target.proc.returncode}):\n"
                    f"{target.log()[-4000:]}")


@pytest.fixture(scope="module")
def _default_proxy(module_proxies):
    return module_proxies(name="default")


@pytest.fixture
def proxy(_default_proxy):
    """The module's default proxy (default flags), DSN user postgres."""
    yield from _guarded(_default_proxy)


@pytest.fixture(scope="module")
def _unlimited_proxy(module_proxies):
    return module_proxies("--max-rows", 0, "--max-bytes", 0, name="unlimited")


@pytest.fixture
def unlimited_proxy(_unlimited_proxy):
    """A proxy without row/byte budgets, for large results."""
    yield from _guarded(_unlimited_proxy)


@pytest.fixture(scope="module")
def _app_proxy(module_proxies):
    return module_proxies(user="app", name="app")


@pytest.fixture
def app_proxy(_app_proxy):
    """A proxy whose DSN logs in as the non-superuser role `app`."""
    yield from _guarded(_app_proxy)
