"""Deployment artifacts, checked as far as this machine can: the man page against --help, the
INI example and the docker-compose environment against the real binary, the Dockerfile's build
stage and HEALTHCHECK, the systemd unit (systemd-analyze verify, and its system-call filter
against what the proxy really calls). No container image is built or run here (no Docker
daemon); see docs/deployment.md."""
import json
import os
import re
import shlex
import shutil
import subprocess
import time

import pytest

from conftest import upstream_dsn
from pgwp import (BINARY, BOUND, REPO, SANITIZED, clean_env, free_port, http_get, only_error,
                  poll, port_listening, proxy_only, scrape)

pytestmark = proxy_only
# a sanitizer build links libasan and makes extra system calls: not what ships
release_binary_only = pytest.mark.skipif(SANITIZED, reason="checks the release binary")

DOCKERFILE = os.path.join(REPO, "Dockerfile")
COMPOSE = os.path.join(REPO, "docker-compose.yml")
UNIT = os.path.join(REPO, "deploy", "pgwire-proxy.service")
INI = os.path.join(REPO, "deploy", "pgwire-proxy.ini.example")
MAN = os.path.join(REPO, "docs", "pgwire-proxy.1")


def run(cmd, timeout=120, **kw):
    return subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=timeout, **kw)


def help_options():
    r = run([BINARY, "--help"])
    assert r.returncode == 0
    return sorted(set(re.findall(r"^  (--[a-z][a-z-]*)", r.stdout, re.M)))


# ---------------------------------------------------------------------------------------------
# man page


def test_man_page_documents_every_option():
    text = open(MAN).read()
    opts = help_options()
    assert len(opts) > 25, opts
    missing = [o for o in opts if o.replace("-", "\\-") not in text]
    assert not missing, f"options in --help but not in docs/pgwire-proxy.1: {missing}"
    for section in ("SYNOPSIS", "OPTIONS", "SIGNALS", "EXIT STATUS", "ENVIRONMENT", "FILES"):
        assert f".SH {section}" in text, section
    for sig in ("SIGHUP", "SIGTERM", "SIGINT", "SIGQUIT"):
        assert sig in text


def test_readme_documents_every_option():
    text = open(os.path.join(REPO, "README.md")).read()
    missing = [o for o in help_options() if f"`{o}" not in text]
    assert not missing, f"options in --help but not in the README's tables: {missing}"


def test_man_page_renders_without_warnings():
    if not shutil.which("man"):
        pytest.skip("man not installed")
    r = run(["man", "--warnings", "-l", MAN], env=dict(os.environ, MANWIDTH="100"))
    assert r.returncode == 0, r.stderr
    assert r.stderr.strip() == "", r.stderr
    assert "--max-connections N" in r.stdout and "EXIT STATUS" in r.stdout


# ---------------------------------------------------------------------------------------------
# INI example and compose environment, applied by the real binary


def deny_drop_refused(target):
    with target.raw() as c:
        err = only_error(c.query("drop table if exists no_such_table_deploy"))
    return err["C"] == "42501"


def test_ini_example_is_accepted(pg, start_proxy, tmp_path):
    keys = {ln.split("=")[0].strip() for ln in open(INI)
            if re.match(r"^[a-z-]+\s*=", ln)}
    commented = {ln[1:].split("=")[0].strip() for ln in open(INI)
                 if re.match(r"^;\s?[a-z-]+\s*=", ln)}
    documented = keys | commented
    missing = [o for o in help_options() if o[2:] not in documented
               and o not in ("--config", "--help", "--version", "--hash-password")]
    assert not missing, f"options not in the INI example: {missing}"
    mport = free_port()
    # flags override the file's listen/metrics/upstream; everything else comes from the file
    proxy = start_proxy("--config", INI, "--metrics-listen", f"127.0.0.1:{mport}",
                        dsn=upstream_dsn(pg))
    assert deny_drop_refused(proxy)  # the example's deny list is in force
    assert http_get(mport, "/healthz") == (200, "ok\n")


def compose_env():
    yaml = pytest.importorskip("yaml")
    doc = yaml.safe_load(open(COMPOSE))
    svc = doc["services"]["pgwire-proxy"]
    env = {k: str(v) for k, v in svc["environment"].items()}
    # compose interpolation of ${VAR:-default}
    return svc, {k: re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", v) for k, v in env.items()}


def test_compose_environment_is_accepted(pg, start_proxy):
    svc, env = compose_env()
    assert env["PGWIRE_PROXY_LISTEN"] == "0.0.0.0:5433"
    assert env["PGWIRE_PROXY_METRICS_LISTEN"] == "0.0.0.0:9187"
    assert "127.0.0.1:5433:5433" in svc["ports"] and "127.0.0.1:9187:9187" in svc["ports"]
    assert svc["depends_on"]["postgres"]["condition"] == "service_healthy"
    dsn = dict(p.split("=", 1) for p in shlex.split(env["PGWIRE_PROXY_UPSTREAM"]))
    assert dsn["host"] == "postgres" and dsn["port"] == "5432"

    mport = free_port()
    env.update(PGWIRE_PROXY_UPSTREAM=upstream_dsn(pg),
               PGWIRE_PROXY_METRICS_LISTEN=f"127.0.0.1:{mport}")
    proxy = start_proxy(upstream=False, env=clean_env(**env))  # --listen flag: a free port
    assert deny_drop_refused(proxy)
    assert scrape(mport)["pgwire_proxy_queries_total{outcome=\"denied\"}"] == 1
    # json logs and the audit trail on stderr, as configured
    line = poll(lambda: [ln for ln in proxy.log().splitlines() if '"statement"' in ln
                         or "drop table" in ln], what="an audit line")[0]
    json.loads(line)


def test_compose_file_validates():
    if shutil.which("docker") and run(["docker", "compose", "version"]).returncode == 0:
        cmd = ["docker", "compose"]
    elif shutil.which("docker-compose"):
        cmd = ["docker-compose"]
    else:
        pytest.skip("neither `docker compose` nor docker-compose is installed")
    r = run(cmd + ["-f", COMPOSE, "config", "-q"], cwd=REPO)
    assert r.returncode == 0, r.stderr


def test_metrics_port_is_never_published_on_every_interface():
    """The metrics port has no authentication, yet the Dockerfile's example published it with a
    bare `-p 9187:9187` (every host interface). Every example in the deployment files and
    docs now binds it to an address: loopback or one the reader picks."""
    files = [DOCKERFILE, COMPOSE, os.path.join(REPO, "README.md")] + \
        [os.path.join(REPO, "docs", f) for f in ("deployment.md", "metrics.md", "scale-out.md")]
    bare = []
    for path in files:
        text = open(path).read()
        # docker run -p / compose ports entries without a host address
        for m in re.finditer(r'(?:-p\s+|-\s+"?)9187:9187\b', text):
            if "never" not in text[max(0, m.start() - 40):m.start()]:  # the warnings say never
                bare.append(f"{os.path.basename(path)}: {m.group(0)}")
    assert not bare, bare
    svc, _ = compose_env()
    assert all(str(p).startswith("127.0.0.1:") for p in svc["ports"]), svc["ports"]


# ---------------------------------------------------------------------------------------------
# Dockerfile: the build stage's commands, the runtime packages, the HEALTHCHECK


def dockerfile_stages():
    """[(stage name, [instruction lines with continuations joined])]."""
    text = open(DOCKERFILE).read().replace("\\\n", " ")
    stages = []
    for ln in text.splitlines():
        ln = ln.strip()
        if not ln or ln.startswith("#"):
            continue
        if ln.startswith("FROM "):
            stages.append((ln.split()[-1], []))
        if stages:
            stages[-1][1].append(ln)
    return dict(stages)


@pytest.mark.time_bound(330)
def test_dockerfile_build_stage_runs_here(tmp_path):
    """Runs the build stage's COPY and cmake RUN lines in a scratch directory: proves the copied
    subset of the tree builds, passes its unit tests and installs what the runtime stage
    copies."""
    stages = dockerfile_stages()
    src, out = tmp_path / "src", tmp_path / "out"
    src.mkdir()
    for ln in stages["build"]:
        if ln.startswith("COPY "):
            *froms, dest = ln.split()[1:]
            for f in froms:
                s, d = os.path.join(REPO, f), src / dest
                if os.path.isdir(s):
                    shutil.copytree(s, d, dirs_exist_ok=True)
                else:
                    shutil.copy(s, d if dest.endswith("/") else src)
    cmd = [ln[4:] for ln in stages["build"] if ln.startswith("RUN cmake ")]
    assert len(cmd) == 1, stages["build"]
    script = cmd[0].replace("DESTDIR=/out ", f"DESTDIR={out} ").replace(" /out/", f" {out}/")
    r = run(["bash", "-ec", script], cwd=src, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "100% tests passed" in r.stdout
    for ln in stages["runtime"]:
        if ln.startswith("COPY --from=build "):
            path = ln.split()[2]
            assert (out / path.lstrip("/").removeprefix("out/")).exists(), ln
    r = run([str(out / "usr/bin/pgwire-proxy"), "--version"])
    assert r.returncode == 0 and r.stdout.startswith("pgwire-proxy ")


@release_binary_only
def test_dockerfile_runtime_stage_installs_every_needed_library():
    if not shutil.which("readelf") or not shutil.which("dpkg"):
        pytest.skip("needs readelf and dpkg")
    needed = re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]",
                        run(["readelf", "-d", BINARY]).stdout)
    assert needed
    apt = " ".join(ln for ln in dockerfile_stages()["runtime"] if "apt-get install" in ln)
    missing = []
    for lib in needed:
        path = run(["sh", "-c", f"ldconfig -p | awk '/{re.escape(lib)} /{{print $NF; exit}}'"]
                   ).stdout.strip()
        owner = run(["dpkg", "-S", os.path.realpath(path)]).stdout.split(":")[0] if path else ""
        if owner and owner != "libc6" and not re.search(rf"\b{re.escape(owner)}\b", apt):
            missing.append(f"{lib} ({owner})")
    assert not missing, f"runtime stage lacks: {missing}"


def healthcheck_cmd(port):
    line = next(ln for ln in dockerfile_stages()["runtime"] if ln.startswith("HEALTHCHECK "))
    argv = json.loads(line[line.index("CMD ") + 4:])
    return [a.replace("9187", str(port)) for a in argv]


def test_dockerfile_healthcheck(pg, start_proxy):
    mport = free_port()
    start_proxy("--metrics-listen", f"127.0.0.1:{mport}")
    assert run(healthcheck_cmd(mport), timeout=10).returncode == 0
    # /healthz is 503 when the upstream does not answer: the check fails
    dead = free_port()
    mport2 = free_port()
    start_proxy("--metrics-listen", f"127.0.0.1:{mport2}",
                dsn=f"host=127.0.0.1 port={dead} dbname=postgres user=postgres")
    assert http_get(mport2, "/healthz")[0] == 503
    assert run(healthcheck_cmd(mport2), timeout=10).returncode != 0
    # nothing listening: fails too
    assert run(healthcheck_cmd(free_port()), timeout=10).returncode != 0


# ---------------------------------------------------------------------------------------------
# systemd unit


def unit_for_here(tmp_path):
    text = open(UNIT).read().replace("/usr/local/bin/pgwire-proxy", BINARY)
    path = tmp_path / "pgwire-proxy.service"
    path.write_text(text)
    man = tmp_path / "man" / "man1"
    man.mkdir(parents=True)
    shutil.copy(MAN, man)
    return path, dict(os.environ, MANPATH=str(tmp_path / "man"))


def test_systemd_unit_verifies(tmp_path):
    if not shutil.which("systemd-analyze"):
        pytest.skip("systemd-analyze not installed")
    text = open(UNIT).read()
    for want in ("Type=simple", "NoNewPrivileges=yes", "ProtectSystem=strict",
                 "ProtectHome=yes", "PrivateTmp=yes", "DynamicUser=yes",
                 "CapabilityBoundingSet=\n", "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
                 "SystemCallFilter=@system-service", "ExecReload=/bin/kill -HUP $MAINPID",
                 "EnvironmentFile=-/etc/pgwire-proxy/env", "KillSignal=SIGTERM",
                 "TimeoutStopSec=45"):
        assert want in text, want
    path, env = unit_for_here(tmp_path)
    r = run(["systemd-analyze", "verify", str(path)], env=env)
    assert r.returncode == 0, r.stdout + r.stderr


def _expand_syscalls(group, cache):
    if group not in cache:
        out = run(["systemd-analyze", "syscall-filter", group]).stdout
        names = set()
        for ln in out.splitlines()[1:]:
            ln = ln.strip()
            if ln and not ln.startswith("#"):
                names |= _expand_syscalls(ln, cache) if ln.startswith("@") else {ln}
        cache[group] = names
    return cache[group]


def unit_allowed_syscalls():
    cache, allowed = {}, set()
    for ln in open(UNIT):
        if not ln.startswith("SystemCallFilter="):
            continue
        spec = ln.split("=", 1)[1].split()
        deny = spec[0].startswith("~")
        spec[0] = spec[0].lstrip("~")
        names = set().union(*(_expand_syscalls(s, cache) if s.startswith("@") else {s}
                              for s in spec))
        allowed = allowed - names if deny else allowed | names
    return allowed


@release_binary_only
def test_systemd_syscall_filter_allows_what_the_proxy_calls(pg, tmp_path):
    """Runs the proxy under strace through start-up, sessions, every guardrail, a cancel, the
    metrics endpoint, an audit file, a reload and a graceful shutdown, and checks each system
    call it made is allowed by the unit's SystemCallFilter= lines (a disallowed one would be
    EPERM under systemd). TLS is not exercised here."""
    for tool in ("strace", "systemd-analyze"):
        if not shutil.which(tool):
            pytest.skip(f"{tool} not installed")
    import psycopg2
    port, mport = free_port(), free_port()
    trace = tmp_path / "strace.out"
    cfg = tmp_path / "p.ini"
    cfg.write_text("deny = drop\n")
    cmd = ["strace", "-f", "-qq", "-o", str(trace), BINARY, "--listen", f"127.0.0.1:{port}",
           "--upstream", upstream_dsn(pg), "--config", str(cfg), "--metrics-listen",
           f"127.0.0.1:{mport}", "--max-rows", "5", "--query-timeout", "1s",
           "--audit-log", str(tmp_path / "audit.jsonl")]
    tracer = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        poll(lambda: port_listening(port), what="the traced proxy to listen")
        child = int(open(f"/proc/{tracer.pid}/task/{tracer.pid}/children").read().split()[0])
        conn = psycopg2.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres",
                                connect_timeout=10)
        conn.autocommit = True
        states = []
        with conn.cursor() as cur:
            for sql in ("select 1", "drop table x", "select generate_series(1, 10)",
                        "select pg_sleep(3)"):
                try:
                    cur.execute(sql)
                    states.append("ok")
                except psycopg2.Error as e:
                    states.append(e.pgcode)
            import threading
            t = threading.Timer(0.3, conn.cancel)
            t.start()
            try:
                cur.execute("select pg_sleep(0.9)")
            except psycopg2.Error as e:
                states.append(e.pgcode)
            t.join()
        assert states == ["ok", "42501", "54000", "57014", "57014"], states
        assert http_get(mport, "/healthz")[0] == 200
        assert http_get(mport, "/metrics")[0] == 200
        os.kill(child, 1)  # SIGHUP: reload
        time.sleep(0.3)
        conn.close()
        os.kill(child, 15)
        tracer.wait(timeout=BOUND)
    finally:
        if tracer.poll() is None:
            tracer.kill()
            tracer.wait()
    used = set(re.findall(r"^\d+\s+([a-z0-9_]+)\(", trace.read_text(), re.M))
    used -= {"execve"}  # strace's exec of the binary, before any filter would apply
    assert {"accept4", "epoll_wait", "connect"} <= used, used
    disallowed = sorted(used - unit_allowed_syscalls())
    assert not disallowed, f"system calls the unit's SystemCallFilter= would refuse: {disallowed}"


def test_sigterm_as_pid_1_drains_and_exits_0(pg, tmp_path):
    """In a container the proxy is PID 1 of its PID namespace, where the kernel drops signals
    whose disposition is the default; `docker stop` must still start the graceful shutdown.
    Runs the proxy as PID 1 of a new PID namespace (unshare) and sends SIGTERM from outside."""
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("needs root and unshare(1) for a PID namespace")
    port = free_port()
    log = open(tmp_path / "pid1.log", "wb")
    outer = subprocess.Popen(["unshare", "--pid", "--fork", "--kill-child", BINARY, "--listen",
                              f"127.0.0.1:{port}", "--upstream", upstream_dsn(pg)],
                             stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    try:
        poll(lambda: port_listening(port), what="the proxy in the PID namespace to listen")
        child = int(open(f"/proc/{outer.pid}/task/{outer.pid}/children").read().split()[0])
        nspid = next(ln for ln in open(f"/proc/{child}/status") if ln.startswith("NSpid:"))
        assert nspid.split()[-1] == "1", nspid
        from pgwp import RawClient
        with RawClient("127.0.0.1", port) as c:
            assert c.startup(user="postgres", database="postgres")[-1].type == "Z"
            os.kill(child, 15)
            fatal = [m.fields for m in c.read_until_closed() if m.type == "E"]
        assert fatal and fatal[0]["C"] == "57P01", fatal
        assert outer.wait(timeout=BOUND) == 0
    finally:
        if outer.poll() is None:
            outer.kill()
            outer.wait()
        log.close()
