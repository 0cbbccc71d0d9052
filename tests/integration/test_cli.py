"""Command line, environment and config file."""
import re
import subprocess

import pytest

from pgwp import BINARY, clean_env, only_error, proxy_only, rfq, rows

pytestmark = proxy_only

# --listen 127.0.0.1:0 first: should a bad value be accepted, the proxy binds nothing in use
UPSTREAM = ["--listen", "127.0.0.1:0",
            "--upstream", "host=127.0.0.1 port=1 dbname=postgres user=postgres"]


def run(*args, **env):
    return subprocess.run([BINARY, *args], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, timeout=5, env=clean_env(**env))


def test_help():
    r = run("--help")
    assert r.returncode == 0, r.stderr
    assert "--upstream" in r.stdout and "--max-rows" in r.stdout


def test_version():
    r = run("--version")
    assert r.returncode == 0, r.stderr
    assert re.fullmatch(r"pgwire-proxy \S*\d\S*\n", r.stdout), r.stdout


def one_line_error(r, *words):
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr
    for w in words:
        assert w in lines[0], lines[0]


@pytest.mark.parametrize("args, flag", [
    (["--max-rows", "abc"], "--max-rows"),
    (["--query-timeout", "5x"], "--query-timeout"),
    (["--listen", "nope"], "--listen"),
    (["--frobnicate"], "--frobnicate"),
    (["--frobnicate", "value"], "--frobnicate"),
    (["--max-connections", "0"], "--max-connections"),
    (["--max-bytes", "12 parsecs"], "--max-bytes"),
    (["--on-limit", "explode"], "--on-limit"),
    (["--max-rows"], "--max-rows"),  # value missing
])
def test_invalid_flag_exits_2_naming_it(args, flag):
    one_line_error(run(*UPSTREAM, *args), flag)


def test_missing_upstream_exits_2():
    one_line_error(run("--listen", "127.0.0.1:0"), "--upstream")


def test_invalid_env_value_names_the_variable():
    one_line_error(run(*UPSTREAM, PGWIRE_PROXY_MAX_ROWS="lots"), "PGWIRE_PROXY_MAX_ROWS")


def test_upstream_from_environment(start_proxy):
    dsn = f"host=127.0.0.1 port={start_proxy.pg.port} dbname=postgres user=postgres"
    p = start_proxy(upstream=False, env=clean_env(PGWIRE_PROXY_UPSTREAM=dsn))
    with p.raw() as c:
        assert rows(c.query("select 'via env'")) == [("via env",)]


def ten_rows(p):
    with p.raw() as c:
        msgs = c.query("select generate_series(1, 10)")
        assert rfq(msgs) == "I"
        return msgs


@pytest.fixture
def config_file(tmp_path, start_proxy):
    path = tmp_path / "pgwire-proxy.ini"
    path.write_text(
        "# keys are the flag names\n"
        f"upstream = host=127.0.0.1 port={start_proxy.pg.port} dbname=postgres user=postgres\n"
        "listen = 127.0.0.1:1\n"  # overridden by the --listen flag every started proxy gets
        "max-rows = 5\n")
    return str(path)


def test_config_file_applies(start_proxy, config_file):
    p = start_proxy("--config", config_file, upstream=False)
    err = only_error(ten_rows(p))
    assert err["C"] == "54000" and "row limit of 5" in err["M"], err


def test_flags_override_config_file(start_proxy, config_file):
    p = start_proxy("--config", config_file, "--max-rows", "0", upstream=False)
    assert len(rows(ten_rows(p))) == 10


def test_environment_overrides_config_file(start_proxy, config_file):
    p = start_proxy("--config", config_file, upstream=False,
                    env=clean_env(PGWIRE_PROXY_MAX_ROWS="20"))
    assert len(rows(ten_rows(p))) == 10


def test_config_file_unknown_key(tmp_path):
    path = tmp_path / "bad.ini"
    path.write_text("upstream = host=127.0.0.1\nmax-rowz = 5\n")
    one_line_error(run("--config", str(path)), "max-rowz")


def test_config_file_missing(tmp_path):
    one_line_error(run("--config", str(tmp_path / "nope.ini")), "nope.ini")
