"""`make demo` stays true: the script starts PostgreSQL and the proxy, prints the psql line,
and a query goes through (DEMO_NO_WAIT=1 stops right after the self-check)."""
import os
import subprocess

import pytest

from pgwp import BINARY, DIRECT, REPO, clean_env

pytestmark = pytest.mark.skipif(DIRECT, reason="runs the proxy binary")


def test_demo_script_prints_psql_line_and_serves_a_query():
    env = clean_env(DEMO_NO_WAIT="1")
    r = subprocess.run(["bash", os.path.join(REPO, "scripts", "demo.sh"), BINARY], env=env,
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert 'psql "host=127.0.0.1 port=' in out, out
    assert "self-check ok" in out, out
