"""standard_conforming_strings works through the proxy exactly as against PostgreSQL: a psql
script that turns it off and on, with backslashes, quotes, escapes and PL/pgSQL bodies, gives
the same output via the proxy (with and without a policy) as straight to PostgreSQL.

PGWP_PG_REGRESS_SQL may name a directory holding PostgreSQL's own regression scripts
(strings.sql, plpgsql.sql from src/test/regress/sql): they are compared through the proxy
without rules, their COPY FROM STDIN blocks taken out first (the proxy does not relay COPY).
Under a policy the guard reports syntax errors itself, from libpg_query's PostgreSQL 15
grammar and without PostgreSQL's HINT and DETAIL, so those scripts, which test error
messages, are not compared there."""
import difflib
import os

import pytest

from pgwp import proxy_only

pytestmark = proxy_only

HERE = os.path.dirname(__file__)
POLICY = ["--deny", "function:pg_terminate_backend", "--deny", "alter_system", "--permit", "do"]
REGRESS = os.environ.get("PGWP_PG_REGRESS_SQL")


def fresh_db(dconn, name):
    with dconn.cursor() as cur:
        cur.execute(f"drop database if exists {name}")
        cur.execute(f"create database {name}")


def run_script(target, path):
    r = target.psql("-a", "-f", path, timeout=120)
    return r.returncode, r.stdout, r.stderr


def compare(script, direct, start_proxy, pg, dconn, tag, policies=([], POLICY)):
    """Runs script in a fresh database each: straight, and via a proxy for each of policies
    (the database comes from the proxy's DSN). Returns PostgreSQL's output."""
    fresh_db(dconn, f"scs_{tag}_direct")
    direct.dbname = f"scs_{tag}_direct"
    try:
        ref = run_script(direct, script)
    finally:
        direct.dbname = "postgres"
    for i, flags in enumerate(policies):
        db = f"scs_{tag}_{i}"
        fresh_db(dconn, db)
        p = start_proxy(*flags, dsn=f"host={pg.host} port={pg.port} dbname={db} user=postgres")
        p.dbname = db
        got = run_script(p, script)
        if got != ref:
            diff = "".join(difflib.unified_diff(
                (ref[1] + ref[2]).splitlines(True), (got[1] + got[2]).splitlines(True),
                "direct", "proxy", n=2))
            pytest.fail(f"{os.path.basename(script)} via the proxy {flags}: exit {got[0]} "
                        f"(direct {ref[0]}), output differs:\n{diff[:6000]}")
    return ref


def test_own_strings_script_same_as_direct(direct, start_proxy, pg, dconn):
    code, out, err = compare(os.path.join(HERE, "data", "scs_strings.sql"), direct, start_proxy,
                             pg, dconn, "own")
    assert code == 0, err
    assert "it's" in out and "three\\four" in out and "<x'y>" in out  # read with escapes
    assert "unsafe use of string constant with Unicode escapes" in err  # PostgreSQL's error


def without_copy(src, dst):
    """The script without its COPY ... FROM stdin blocks (data up to the \\. line)."""
    out, in_copy = [], False
    with open(src) as f:
        for line in f:
            if in_copy:
                in_copy = line.strip() != "\\."
                continue
            if line.lower().startswith("copy ") and "from stdin" in line.lower():
                in_copy = True
                continue
            out.append(line)
    dst.write_text("".join(out))
    return str(dst)


# PostgreSQL's own strings.sql and plpgsql.sql are not shipped by Debian's packages: an opt-in
# run (PGWP_PG_REGRESS_SQL=<dir holding them>) compares them through the proxy, with no rules.
if REGRESS:
    @pytest.mark.parametrize("name", ["strings", "plpgsql"])
    def test_postgresql_regression_script_same_as_direct(direct, start_proxy, pg, dconn, name,
                                                         tmp_path):
        script = without_copy(os.path.join(REGRESS, f"{name}.sql"), tmp_path / f"{name}.sql")
        compare(script, direct, start_proxy, pg, dconn, name, policies=([],))
