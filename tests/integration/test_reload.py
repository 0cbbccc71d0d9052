"""SIGHUP: a rewritten --config file applies to the next statement of running sessions; an
invalid one is refused and the old configuration stays in force."""
import signal

import pytest

from pgwp import errors, only_error, poll, proxy_only, rows

pytestmark = proxy_only


class Reloadable:
    """A proxy started with --config FILE, and a way to rewrite FILE and SIGHUP it."""

    def __init__(self, start_proxy, path, text, *flags):
        self.path = path
        self.write(text)
        self.proxy = start_proxy("--config", path, *flags)

    def write(self, text):
        with open(self.path, "w") as f:
            f.write(text)

    def events(self, name):
        return sum(1 for line in self.proxy.log().splitlines()
                   if f" {name}:" in line or f'"event":"{name}"' in line)

    def reload(self, text, expect="reloaded"):
        """Rewrites the file, sends SIGHUP and waits for the log to report `expect`."""
        seen = self.events(expect)
        self.write(text)
        self.proxy.signal(signal.SIGHUP)
        poll(lambda: self.events(expect) > seen, what=f"a {expect!r} log event")


# Queries over a limit return many rows, so that the proxy's cancel finds the statement still
# running upstream (a cancel for a statement that had completed can hit the next one).
BIG = 200000


def row_count(c, n):
    """Runs a query returning n rows; returns (rows, error or None)."""
    msgs = c.query(f"select g from generate_series(1, {n}) g")
    errs = errors(msgs)
    return len(rows(msgs)), (errs[0] if errs else None)


@pytest.fixture
def reloadable(start_proxy, tmp_path):
    def make(text, *flags):
        return Reloadable(start_proxy, str(tmp_path / "proxy.ini"), text, *flags)
    return make


def test_reload_raises_the_row_limit_for_running_sessions(reloadable):
    r = reloadable("[pgwire-proxy]\nmax_rows = 5\n")
    with r.proxy.raw() as c:
        n, err = row_count(c, BIG)
        assert err and err["C"] == "54000" and err["M"].startswith("row limit of 5 exceeded")
        r.reload("[pgwire-proxy]\nmax_rows = 50\n")
        # the same session, no reconnect: the next statement obeys the new limit
        assert row_count(c, 10) == (10, None)
        n, err = row_count(c, BIG)
        assert err and err["M"].startswith("row limit of 50 exceeded"), err
        assert rows(c.query("select 'survived'")) == [("survived",)]
    with r.proxy.raw() as fresh:
        assert row_count(fresh, 50) == (50, None)


def test_invalid_file_keeps_the_running_configuration(reloadable):
    r = reloadable("max_rows = 50\n")
    with r.proxy.raw() as c:
        assert row_count(c, 50) == (50, None)
        r.reload("max_rows = abc\n", expect="reload_failed")
        log = r.proxy.log()
        failure = [line for line in log.splitlines() if "reload_failed" in line][-1]
        assert "max" in failure and "abc" in failure, failure
        assert row_count(c, 50) == (50, None)
        n, err = row_count(c, BIG)
        assert err and err["M"].startswith("row limit of 50 exceeded"), err
        r.reload("max_rows = 50\ndeny = nonsense_kind\n", expect="reload_failed")
        assert row_count(c, 50) == (50, None)
        assert r.proxy.alive()
    with r.proxy.raw() as fresh:
        assert row_count(fresh, 50) == (50, None)


def test_reload_changes_the_policy(reloadable, dconn):
    with dconn.cursor() as cur:
        cur.execute("drop table if exists reload_t; create table reload_t (id int)")
    r = reloadable("deny = truncate\n")
    with r.proxy.raw() as c:
        assert only_error(c.query("truncate reload_t"))["C"] == "42501"
        r.reload("deny = drop, function:pg_sleep\n")
        assert errors(c.query("truncate reload_t")) == []
        err = only_error(c.query("select pg_sleep(0)"))
        assert err["C"] == "42501" and "pg_sleep" in err["D"], err
        err = only_error(c.query("drop table reload_t"))
        assert err["C"] == "42501" and "drop" in err["D"], err
        r.reload("read_only = true\n")
        err = only_error(c.query("insert into reload_t values (1)"))
        assert err["C"] == "25006", err
        err = only_error(c.query("drop table reload_t"))  # the deny list is gone: read-only
        assert (err["C"], err["D"]) == ("25006", "rule: read-only"), err
        assert errors(c.query("select pg_sleep(0)")) == []


def test_flags_still_beat_the_file_after_reload(reloadable):
    r = reloadable("max_rows = 5\n", "--max-rows", "20")
    with r.proxy.raw() as c:
        assert row_count(c, 20) == (20, None)
        r.reload("max_rows = 3\n")
        assert row_count(c, 20) == (20, None)
        n, err = row_count(c, BIG)
        assert err and err["M"].startswith("row limit of 20 exceeded"), err
