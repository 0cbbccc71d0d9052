"""pgjdbc and node-postgres at their default settings against `--extended-protocol allow`
(case 29 and part of 31 of the design brief's table): the compatibility script of
test_clients.py, then driver-specific flows (tests/clients/JdbcExtended.java,
tests/clients/node/ext.js) whose output must equal a direct connection's, and the proxy's
guardrails where the drivers send them (a denied statement in a multi-statement string, a row
limit across fetches)."""
import os
import shutil

import pytest

from pgwp import recreate, table_rows
from test_clients import (CLIENTS, JDBC_JAR, NODE_DIR, check_cancel, check_script_output,  # noqa: F401
                          jdbc_url, lines, node_client, run)

EXT = ("--extended-protocol", "allow")


@pytest.fixture(scope="module")
def jdbc_ext_classes(tmp_path_factory):
    for tool in ("java", "javac"):
        if not shutil.which(tool):
            pytest.skip(f"{tool} not installed (default-jdk-headless)")
    if not os.path.exists(JDBC_JAR):
        pytest.skip(f"{JDBC_JAR} missing (Debian package libpostgresql-jdbc-java)")
    out = tmp_path_factory.mktemp("jdbc_ext")
    r = run(["javac", "-d", str(out), "-cp", JDBC_JAR, os.path.join(CLIENTS, "JdbcClient.java"),
             os.path.join(CLIENTS, "JdbcExtended.java")], timeout=180)
    assert r.returncode == 0, f"javac failed:\n{r.stderr}"
    return str(out)


def java(classes, main, *args):
    return run(["java", "-Xshare:auto", "-XX:TieredStopAtLevel=1", "-cp",
                f"{JDBC_JAR}:{classes}", main] + list(args), timeout=120)


def test_29_jdbc_default_mode_compatibility_script(start_proxy, jdbc_ext_classes):
    p = start_proxy(*EXT)
    r = java(jdbc_ext_classes, "JdbcClient", jdbc_url(p))
    got = check_script_output(r, extra=[("tx_error_then", "25P02")])
    check_cancel(got, r.stdout)


def test_29_jdbc_default_mode_same_as_direct(start_proxy, direct, dconn, jdbc_ext_classes):
    p = start_proxy(*EXT, "--deny", "drop", "--max-rows", "1000")
    outs = {}
    for name, target, second in (("direct", direct, "drop tabel jdbc_ext"),
                                 ("proxy", p, "drop table jdbc_ext")):
        recreate(dconn, "jdbc_ext", "(id int primary key, v text)")
        r = java(jdbc_ext_classes, "JdbcExtended", jdbc_url(target), second)
        assert r.returncode == 0, f"{r.stdout}\n{r.stderr}"
        assert r.stdout.splitlines()[-1] == "done", r.stdout
        outs[name] = lines(r.stdout)
        if name == "proxy":
            assert table_rows(dconn, "jdbc_ext")[-1] == (499, "v499")
    want, got = outs["direct"], outs["proxy"]
    same = ("prepared", "server_prepared", "batch", "error", "multi_after", "tables", "columns")
    assert {k: got[k] for k in same} == {k: want[k] for k in same}, (got, want)
    assert got["prepared"] == " ".join(str(3 * i) for i in range(1, 8))
    assert got["server_prepared"] == "true" and got["batch"] == "500 500"
    assert got["error"] == "22012" and got["multi_after"] == "0"
    assert got["tables"] == "jdbc_ext" and got["columns"] == "id:int4 v:text"
    # a guardrail where PostgreSQL had its own error or none
    assert (want["multi_error"], got["multi_error"]) == ("42601", "42501")
    assert (want["fetch"], got["fetch"]) == ("2500 none", "1000 54000")


def node_env(target, app):
    env = dict(os.environ, PGHOST=target.host, PGPORT=str(target.port), PGUSER=target.user,
               PGDATABASE=target.dbname, PGAPPNAME=app)
    env.pop("PGPASSWORD", None)
    return env


def test_31_node_pg_compatibility_script(start_proxy, node_client):  # noqa: F811
    p = start_proxy(*EXT)
    r = run(["node", node_client], env=node_env(p, "node-ext"))
    got = check_script_output(r, extra=[("tx_error_then", "25P02"),
                                        ("commit_command", "ROLLBACK"),
                                        ("after_extended", "7")])
    assert got["extended_error"] == "none", r.stdout  # the query with values now runs


def test_31_node_pg_values_and_pages_same_as_direct(start_proxy, direct, node_client):  # noqa: F811
    p = start_proxy(*EXT, "--max-rows", "1000")
    ext_js = os.path.join(NODE_DIR, "ext.js")
    outs = []
    for t in (direct, p):
        r = run(["node", ext_js], env=node_env(t, "node-ext"))
        assert r.returncode == 0, f"{r.stdout}\n{r.stderr}"
        assert r.stdout.splitlines()[-1] == "done", r.stdout
        outs.append(lines(r.stdout))
    want, got = outs
    for k in ("values", "named", "error", "tx_error_then", "commit_command", "after"):
        assert got[k] == want[k], (k, got, want)
    assert got["values"] == "42 it's null" and got["named"] == "10 20 30"
    assert (got["error"], got["tx_error_then"], got["commit_command"]) == \
        ("22012", "25P02", "ROLLBACK")
    # pages of 100 share the portal run's budget: the limit trips after 1,000 rows
    assert want["pages"] == "2500 3126250 none"
    assert got["pages"] == "0 0 54000", got
