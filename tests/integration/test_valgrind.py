"""A short session script under valgrind memcheck: no invalid accesses, no definite leaks."""
import os
import re
import shutil
import signal
import subprocess
import time

import pytest

import pgwp
from pgwp import BINARY, BOUND, DIRECT, SANITIZED, free_port, port_listening

pytestmark = pytest.mark.skipif(
    DIRECT or SANITIZED or shutil.which("valgrind") is None,
    reason="needs the plain (non-sanitized) proxy binary and valgrind")


def test_session_script_is_clean_under_memcheck(pg, tmp_path):
    port = free_port()
    log = tmp_path / "valgrind.log"
    dsn = f"host={pg.host} port={pg.port} dbname=postgres user=postgres"
    argv = ["valgrind", "--leak-check=full", "--errors-for-leak-kinds=definite",
            "--error-exitcode=99", f"--log-file={log}", BINARY,
            "--listen", f"127.0.0.1:{port}", "--upstream", dsn, "--workers", "1",
            "--deny", "drop", "--max-rows", "100", "--audit-log", str(tmp_path / "audit.log")]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=pgwp.clean_env())
    try:
        deadline = time.monotonic() + 6 * BOUND  # valgrind starts slowly
        while not port_listening(port):
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "proxy under valgrind did not start"
            time.sleep(0.1)
        target = pgwp.Target("127.0.0.1", port, home=str(tmp_path))
        with target.raw() as c:
            assert pgwp.rows(c.query("select 1")) == [("1",)]
            assert pgwp.only_error(c.query("drop table nothing"))["C"] == "42501"
            assert pgwp.only_error(c.query("select generate_series(1, 500)"))["C"] == "54000"
            c.query("begin")
            assert pgwp.rfq(c.query("select 1/0")) == "E"
            c.query("rollback")
            c.parse("select 1")
            c.sync()
            assert pgwp.only_error(c.read_until_rfq())["C"] == "0A000"
        # a second session that just vanishes
        c = target.raw()
        c.query_send("select pg_sleep(0.2)")
        c.close()
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(timeout=6 * BOUND)
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = proc.wait()
    report = log.read_text()
    assert rc == 0, report[-4000:]
    assert "Invalid read" not in report and "Invalid write" not in report, report[-4000:]
    lost = re.search(r"definitely lost: ([\d,]+) bytes", report)
    assert lost is None or lost.group(1) == "0", report[-4000:]
