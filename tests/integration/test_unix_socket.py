"""--unix-socket-dir: a PostgreSQL-style Unix socket DIR/.s.PGSQL.<port> with a lock file, so
psql -h DIR connects without TCP and a second instance never steals a live socket."""
import json
import os
import socket
import stat
import subprocess

from pgwp import (BINARY, BOUND, PSQL, Proxy, RawClient, clean_env, free_port, marker, poll,
                  proxy_only, psql_env, rows, scalar)

pytestmark = proxy_only


def socket_path(d, port):
    return os.path.join(d, f".s.PGSQL.{port}")


def socket_dir(tmp_path):
    d = str(tmp_path / "sock")
    os.mkdir(d)
    return d


def test_psql_over_the_unix_socket(start_proxy, tmp_path):
    d = socket_dir(tmp_path)
    audit = tmp_path / "audit.jsonl"
    p = start_proxy("--unix-socket-dir", d, "--audit-log", str(audit))
    path = socket_path(d, p.port)
    assert stat.S_ISSOCK(os.stat(path).st_mode)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o777
    with open(path + ".lock") as f:
        assert int(f.readline()) == p.proc.pid
    r = subprocess.run([PSQL, "-X", "-At", "-h", d, "-p", str(p.port), "-U", "postgres",
                        "-d", "postgres", "-c", "select 'over the socket'"],
                       capture_output=True, text=True, timeout=BOUND, stdin=subprocess.DEVNULL,
                       env=psql_env(str(tmp_path)))
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "over the socket"
    recs = poll(lambda: [json.loads(line) for line in audit.read_text().splitlines()]
                if audit.exists() else [], what="audit records")
    assert {rec["client"] for rec in recs} == {"[local]"}, recs


def test_upstream_names_the_local_client(start_proxy, tmp_path, dconn):
    d = socket_dir(tmp_path)
    p = start_proxy("--unix-socket-dir", d, "--unix-socket-mode", "0770")
    assert stat.S_IMODE(os.stat(socket_path(d, p.port)).st_mode) == 0o770
    app = marker("unixapp")
    with RawClient.unix(socket_path(d, p.port)) as c:
        msgs = c.startup(user="someone", database="postgres", application_name=app)
        assert msgs[-1].type == "Z", msgs
        assert rows(c.query("select 1")) == [("1",)]
        name = scalar(dconn, "select application_name from pg_stat_activity "
                             "where application_name like %s", f"{app}%")
        assert name == f"{app} [someone@[local]]"


def test_second_instance_does_not_steal_a_live_socket(start_proxy, tmp_path):
    d = socket_dir(tmp_path)
    p = start_proxy("--unix-socket-dir", d)
    # same port (the socket's name) on another address, so only the socket can conflict
    other = subprocess.run([BINARY, "--listen", f"127.0.0.2:{p.port}", "--unix-socket-dir", d,
                            "--upstream", "host=127.0.0.1 dbname=postgres"],
                           capture_output=True, text=True, timeout=BOUND,
                           stdin=subprocess.DEVNULL, env=clean_env())
    assert other.returncode != 0
    assert f"held by process {p.proc.pid}" in other.stderr, other.stderr
    with RawClient.unix(socket_path(d, p.port)) as c:  # the live one still serves
        assert c.startup(user="postgres", database="postgres")[-1].type == "Z"
    assert p.stop() == []
    assert not os.path.exists(socket_path(d, p.port))
    assert not os.path.exists(socket_path(d, p.port) + ".lock")


def test_stale_socket_and_lock_are_replaced(tmp_path):
    d = socket_dir(tmp_path)
    port = free_port()
    dead = subprocess.Popen(["true"])
    dead.wait()
    with open(socket_path(d, port) + ".lock", "w") as f:
        f.write(f"{dead.pid}\n")
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(socket_path(d, port))
    stale.close()  # a socket file nobody listens on
    p = Proxy(["--upstream", "host=127.0.0.1 port=1 dbname=postgres", "--unix-socket-dir", d],
              str(tmp_path), name="stale")
    p.port = port
    p.start()
    try:
        with open(socket_path(d, port) + ".lock") as f:
            assert int(f.readline()) == p.proc.pid
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(socket_path(d, port))
        s.close()
    finally:
        assert p.stop() == []


def test_unix_socket_mode_is_validated():
    r = subprocess.run([BINARY, "--upstream", "dbname=x", "--unix-socket-mode", "0999"],
                       capture_output=True, text=True, timeout=BOUND, stdin=subprocess.DEVNULL,
                       env=clean_env())
    assert r.returncode == 2
    assert "--unix-socket-mode" in r.stderr and len(r.stderr.strip().splitlines()) == 1
