"""Helpers for the integration suite: a throwaway PostgreSQL, proxy processes, psql runs and a
tiny raw protocol-3.0 client."""
import ctypes
import glob
import os
import uuid
import pwd
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time

import psycopg2
import psycopg2.errors
import pytest

DIRECT = os.environ.get("PGWP_DIRECT") == "1"
SANITIZED = os.environ.get("PGWP_SANITIZED") == "1"
# Bounds, not expectations: sanitizer builds are several times slower.
SCALE = 3 if SANITIZED else 1
BOUND = 10 * SCALE

proxy_only = pytest.mark.skipif(DIRECT, reason="PGWP_DIRECT=1: needs the real proxy")

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BINARY = os.path.abspath(os.environ.get("PGWP_BINARY", os.path.join(REPO, "build", "pgwire-proxy")))


def pg_bindir():
    env = os.environ.get("PGWP_PG_BIN")
    if env:
        return env
    dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda d: int(d.split("/")[-2]))
    if not dirs:
        pytest.exit("PostgreSQL server binaries not found (make deps)", returncode=1)
    return dirs[-1]


PG_BIN = pg_bindir()
PSQL = os.path.join(PG_BIN, "psql")
PGBENCH = os.path.join(PG_BIN, "pgbench")


def poll(cond, timeout=BOUND, interval=0.05, what="condition"):
    """Calls cond() until it returns something truthy; fails after timeout seconds. `what` may
    be a callable, called at the failure to describe the state then."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for "
                        f"{what() if callable(what) else what}")
        time.sleep(interval)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_listening(port):
    """True if something listens on 127.0.0.1:port, checked without connecting (a probe
    connection would count against a proxy's connection ceiling)."""
    want = f"0100007F:{port:04X}"
    try:
        with open("/proc/net/tcp") as f:
            next(f)
            for line in f:
                cols = line.split()
                if cols[1] == want and cols[3] == "0A":
                    return True
        return False
    except OSError:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            return False


# ---------------------------------------------------------------------------------------------
# PostgreSQL


def _as_postgres(cmd):
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--"] + cmd
    return cmd


class PgCluster:
    """A throwaway cluster: initdb --nosync, fsync off, 127.0.0.1 on a free port."""

    def __init__(self):
        self.base = tempfile.mkdtemp(prefix="pgwp-it-", dir="/tmp")
        os.chmod(self.base, 0o755)
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            os.chown(self.base, pw.pw_uid, pw.pw_gid)
        self.data = os.path.join(self.base, "data")
        self.log = os.path.join(self.base, "postgresql.log")
        self.port = free_port()
        self.host = "127.0.0.1"
        self.watchdog = None
        self.started = False

    def _run(self, cmd, timeout=120):
        r = subprocess.run(_as_postgres(cmd), cwd=self.base, stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           timeout=timeout)
        if r.returncode != 0:
            raise RuntimeError(f"{cmd[0]} failed ({r.returncode}):\n{r.stdout}\n{self.log_tail()}")
        return r.stdout

    def start(self):
        self._run([os.path.join(PG_BIN, "initdb"), "--nosync", "-D", self.data, "-U", "postgres",
                   "-A", "trust", "--no-locale", "-E", "UTF8"])
        with open(os.path.join(self.data, "postgresql.conf"), "a") as f:
            f.write(f"""
port = {self.port}
listen_addresses = '127.0.0.1'
unix_socket_directories = '{self.base}'
fsync = off
full_page_writes = off
synchronous_commit = off
max_connections = 60
log_connections = on
log_line_prefix = '%m [%p] %q%a '
""")
        with open(os.path.join(self.data, "pg_hba.conf"), "w") as f:
            f.write("local all all trust\n"
                    "host all pwuser 127.0.0.1/32 scram-sha-256\n"
                    "host all all 127.0.0.1/32 trust\n")
        self._run([os.path.join(PG_BIN, "pg_ctl"), "-D", self.data, "-l", self.log, "-w",
                   "-t", "60", "start"])
        self.started = True
        self._start_watchdog()

    def _start_watchdog(self):
        # If pytest itself is killed (e.g. the hard per-test bound), stop the cluster anyway.
        script = (f'while kill -0 {os.getpid()} 2>/dev/null; do sleep 1; done; '
                  f'{" ".join(_as_postgres([os.path.join(PG_BIN, "pg_ctl")]))} -D {self.data} '
                  f'-m immediate stop >/dev/null 2>&1; rm -rf {self.base}')
        self.watchdog = subprocess.Popen(["sh", "-c", script], stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                         start_new_session=True)

    def stop(self):
        if self.watchdog:
            self.watchdog.kill()
            self.watchdog.wait()
        if self.started:
            pg_ctl = os.path.join(PG_BIN, "pg_ctl")
            try:
                self._run([pg_ctl, "-D", self.data, "-m", "fast", "-w", "-t", "30", "stop"])
            except (RuntimeError, subprocess.TimeoutExpired):
                self._run([pg_ctl, "-D", self.data, "-m", "immediate", "-w", "stop"])
            self.started = False
        shutil.rmtree(self.base, ignore_errors=True)

    def log_tail(self, n=30):
        try:
            with open(self.log, errors="replace") as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return ""

    def log_count(self, needle):
        with open(self.log, errors="replace") as f:
            return f.read().count(needle)


# ---------------------------------------------------------------------------------------------
# Targets: something clients connect to (the proxy, or PostgreSQL itself)


def psql_env(home):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "LC_", "PSQL"))}
    env.update(LC_ALL="C.UTF-8", LANG="C.UTF-8", PAGER="", PSQL_PAGER="", COLUMNS="120",
               HOME=home, PGCONNECT_TIMEOUT="10", TZ="UTC")
    return env


class Target:
    """Where clients connect; `user` is the user clients name in their startup packet."""

    is_proxy = False

    def __init__(self, host, port, user="postgres", dbname="postgres", home="/tmp"):
        self.host, self.port, self.user, self.dbname, self.home = host, port, user, dbname, home

    def dsn(self, **kw):
        parts = dict(host=self.host, port=self.port, user=self.user, dbname=self.dbname,
                     connect_timeout=10)
        parts.update(kw)
        return " ".join(f"{k}={v}" for k, v in parts.items() if v is not None)

    def connect(self, autocommit=False, **kw):
        conn = psycopg2.connect(self.dsn(**kw))
        conn.autocommit = autocommit
        return conn

    def raw(self, user=None, **params):
        """A RawClient that has completed startup (asserts ReadyForQuery)."""
        c = RawClient(self.host, self.port)
        msgs = c.startup(user=user or self.user, database=self.dbname, **params)
        if msgs[-1].type != "Z":
            c.close()
            raise AssertionError(f"startup failed: {describe(msgs)}")
        return c

    def psql(self, *args, input=None, user=None, check=False, timeout=60, **env):
        cmd = [PSQL, "-X", "-P", "pager=off", "-d",
               self.dsn(user=user or self.user, connect_timeout=None)] + list(args)
        e = psql_env(self.home)
        e.update(env)
        stdin = None if input is not None else subprocess.DEVNULL
        r = subprocess.run(cmd, input=input, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=e,
                           timeout=timeout)
        if check and r.returncode != 0:
            raise AssertionError(f"psql {args} failed ({r.returncode}): {r.stderr}")
        return r


class Proxy(Target):
    """A pgwire-proxy process started by the suite."""

    is_proxy = True
    live = set()  # every running proxy, so the per-test watchdog can unblock hung clients

    def __init__(self, flags, logdir, user="postgres", env=None, name="proxy"):
        super().__init__("127.0.0.1", free_port(), user=user, home=logdir)
        self.flags = list(flags)
        self.log_path = os.path.join(logdir, f"{name}-{self.port}.log")
        self.env = env
        self.proc = None
        self.killed = False
        self.exit_ok = (0,)  # exit codes that are fine at teardown; None = any

    @property
    def argv(self):
        return [BINARY, "--listen", f"127.0.0.1:{self.port}"] + self.flags

    def start(self):
        if not os.access(BINARY, os.X_OK):
            pytest.fail(f"proxy binary {BINARY} not found: run `make build`, set PGWP_BINARY, "
                        "or PGWP_DIRECT=1 to run the suite against PostgreSQL directly")
        env = clean_env() if self.env is None else dict(self.env)
        self.logf = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=self.logf,
                                     stderr=subprocess.STDOUT, env=env, cwd=self.home,
                                     preexec_fn=_die_with_parent)
        Proxy.live.add(self)
        deadline = time.monotonic() + BOUND
        while not port_listening(self.port):
            if self.proc.poll() is not None:
                self._forget()
                pytest.fail(f"proxy exited with {self.proc.returncode} during start-up:\n"
                            f"{self.log()}")
            if time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"proxy did not listen on {self.port} within {BOUND} s:\n{self.log()}")
            time.sleep(0.02)
        return self

    def log(self):
        if not self.logf.closed:
            self.logf.flush()
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig):
        self.proc.send_signal(sig)

    def wait(self, timeout=BOUND):
        """Waits for the process to exit; returns its exit code (fails the test on timeout)."""
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"proxy still running {timeout} s later:\n{self.log()[-3000:]}")
        self._forget()
        return rc

    def _forget(self):
        Proxy.live.discard(self)

    def kill(self):
        if self.alive():
            self.killed = True
            self.proc.kill()

    def stop(self):
        """SIGTERM, SIGKILL after a bound. Returns a list of problems seen (empty if clean)."""
        problems = []
        if self.proc is None:
            return problems
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5 * SCALE)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                problems.append(f"proxy on {self.port} ignored SIGTERM for {5 * SCALE} s (idle)")
        rc = self.proc.returncode
        if self.exit_ok is not None and rc not in self.exit_ok and not self.killed and not problems:
            problems.append(f"proxy on {self.port} exited with {rc}")
        self._forget()
        self.logf.close()
        text = self.log()
        for needle in ("AddressSanitizer", "LeakSanitizer", "runtime error:"):
            if needle in text:
                problems.append(f"proxy on {self.port}: {needle} report in its log")
        if problems:
            problems.append(f"--- log of proxy on {self.port} ---\n{text[-4000:]}")
        return problems


class LimitedProxy(Proxy):
    """A proxy started under `prlimit --nofile=SOFT:HARD` (prlimit execs it: same PID)."""

    def __init__(self, nofile, *args, **kw):
        super().__init__(*args, **kw)
        self.nofile = nofile

    @property
    def argv(self):
        return ["prlimit", f"--nofile={self.nofile}", "--"] + super().argv


def clean_env(**extra):
    """os.environ without PGWIRE_PROXY_* settings (they would change the proxy's config)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PGWIRE_PROXY_")}
    env.update(extra)
    return env


def startup_refused(pg, flags):
    """Starts the proxy with flags against pg and returns its stderr, after asserting that it
    exited 2 with exactly one line: how a bad option must stop it."""
    dsn = f"host={pg.host} port={pg.port} dbname=postgres user=postgres"
    r = subprocess.run([BINARY, "--listen", "127.0.0.1:0", "--upstream", dsn] + flags,
                       stdin=subprocess.DEVNULL, capture_output=True, text=True,
                       env=clean_env(), timeout=BOUND)
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    return r.stderr


try:
    _prctl = ctypes.CDLL("libc.so.6", use_errno=True).prctl
except OSError:
    _prctl = None


def _die_with_parent():
    """In the child before exec: die with the test run (loaded beforehand: no import here)."""
    if _prctl:
        _prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


# ---------------------------------------------------------------------------------------------
# Raw protocol client

PROTOCOL_3_0 = 196608
CANCEL_REQUEST = 80877102
SSL_REQUEST = 80877103
GSSENC_REQUEST = 80877104


class Msg(tuple):
    """(type, payload) of one backend message."""

    def __new__(cls, type_, payload):
        return super().__new__(cls, (type_, payload))

    type = property(lambda self: self[0])
    payload = property(lambda self: self[1])

    @property
    def fields(self):
        return error_fields(self.payload)

    def __repr__(self):
        if self.type in "EN":
            return f"Msg({self.type} {self.fields})"
        return f"Msg({self.type} {self.payload[:60]!r})"


def cstr(s):
    return s.encode() + b"\0"


def error_fields(payload):
    """ErrorResponse/NoticeResponse payload -> {field code: value}."""
    out = {}
    for part in payload.split(b"\0"):
        if part:
            out[chr(part[0])] = part[1:].decode(errors="replace")
    return out


def describe(msgs):
    return ", ".join(repr(m) for m in msgs)


class Closed(Exception):
    pass


class RawClient:
    def __init__(self, host, port, timeout=BOUND, source=None):
        """source: the local address to connect from (e.g. 127.0.0.2), None = any."""
        self.sock = socket.create_connection((host, port), timeout=timeout,
                                             source_address=(source, 0) if source else None)
        self._init_state()

    def _init_state(self):
        self.buf = b""  # received bytes; those before self.pos are consumed
        self.pos = 0
        self.params = {}
        self.backend_key = None

    @classmethod
    def unix(cls, path, timeout=BOUND):
        """A RawClient connected to a Unix-domain socket."""
        c = cls.__new__(cls)
        c.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        c.sock.settimeout(timeout)
        c.sock.connect(path)
        c._init_state()
        return c

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- sending
    def send_raw(self, data):
        self.sock.sendall(data)

    def send(self, type_, payload=b""):
        self.send_raw(type_.encode() + struct.pack("!I", len(payload) + 4) + payload)

    def send_startup(self, version=PROTOCOL_3_0, **params):
        body = struct.pack("!I", version) + b"".join(cstr(k) + cstr(str(v))
                                                     for k, v in params.items()) + b"\0"
        self.send_raw(struct.pack("!I", len(body) + 4) + body)

    def send_request_code(self, code, extra=b""):
        self.send_raw(struct.pack("!II", 8 + len(extra), code) + extra)

    def query_send(self, sql):
        self.send("Q", cstr(sql))

    def parse(self, sql, name="", types=()):
        self.send("P", cstr(name) + cstr(sql) + struct.pack("!H", len(types)) +
                  b"".join(struct.pack("!I", t) for t in types))

    def bind(self, portal="", stmt="", params=(), formats=(), result_formats=()):
        """Bind; params are str/int (sent as text), bytes (as given) or None (NULL); formats
        and result_formats are the format-code lists (0 text, 1 binary), sent as given."""
        self.send("B", bind_body(portal, stmt, params, formats, result_formats))

    def describe_portal(self, portal=""):
        self.send("D", b"P" + cstr(portal))

    def describe_statement(self, name=""):
        self.send("D", b"S" + cstr(name))

    def close_portal(self, name=""):
        self.send("C", b"P" + cstr(name))

    def close_statement(self, name=""):
        self.send("C", b"S" + cstr(name))

    def execute(self, portal="", max_rows=0):
        self.send("E", cstr(portal) + struct.pack("!I", max_rows))

    def flush(self):
        self.send("H")

    def sync(self):
        self.send("S")

    def copy_data(self, data):
        self.send("d", data)

    def copy_done(self):
        self.send("c")

    def copy_fail(self, message):
        self.send("f", cstr(message))

    def ext_query(self, sql, params=(), name="", max_rows=0):
        """Parse/Bind/Describe(P)/Execute/Sync of one statement; returns the answers up to
        ReadyForQuery (libpq's PQexecParams sends the same)."""
        self.parse(sql, name=name)
        self.bind(stmt=name, params=params)
        self.describe_portal()
        self.execute(max_rows=max_rows)
        self.sync()
        return self.read_until_rfq()

    def read_until(self, types):
        """Messages up to and including the first whose type is in `types` (a string), or up
        to a connection close."""
        msgs = []
        while True:
            try:
                m = self.read_msg()
            except Closed:
                return msgs
            msgs.append(m)
            if m.type in types:
                return msgs

    def terminate(self):
        self.send("X")

    # -- receiving
    def _fill(self, n):
        """Makes n unconsumed bytes available. Chunks are joined once (a 10 MB message is not
        copied once per recv) and consumed bytes are skipped by offset, not sliced away."""
        have = len(self.buf) - self.pos
        if have >= n:
            return
        parts = [self.buf[self.pos:]]
        self.pos = 0
        try:
            while have < n:
                try:
                    chunk = self.sock.recv(max(65536, min(n - have, 1 << 22)))
                except ConnectionResetError:
                    chunk = b""
                if not chunk:
                    raise Closed(f"connection closed ({have} bytes pending)")
                parts.append(chunk)
                have += len(chunk)
        finally:
            self.buf = b"".join(parts)

    def read_byte(self):
        self._fill(1)
        b = self.buf[self.pos:self.pos + 1]
        self.pos += 1
        return b

    def read_msg(self):
        self._fill(5)
        type_ = chr(self.buf[self.pos])
        length = struct.unpack_from("!I", self.buf, self.pos + 1)[0]
        self._fill(1 + length)
        msg = Msg(type_, self.buf[self.pos + 5:self.pos + 1 + length])
        self.pos += 1 + length
        return msg

    def read_all(self, timeout=BOUND):
        """Messages until the connection closes or `timeout` seconds pass without one; returns
        (messages, closed). For answers that come unasked (a FATAL from a timeout, shutdown) or
        that must not come (then closed is False and the caller says what was expected)."""
        old = self.sock.gettimeout()
        self.sock.settimeout(timeout)
        msgs = []
        try:
            while True:
                msgs.append(self.read_msg())
        except Closed:
            return msgs, True
        except TimeoutError as e:  # socket.timeout is TimeoutError
            if "test exceeded" in str(e):
                raise  # the per-test bound (conftest's SIGALRM), not ours
            return msgs, False
        finally:
            self.sock.settimeout(old)

    def read_until_rfq(self):
        """Messages up to and including ReadyForQuery, or up to a connection close (then the
        list simply ends without a 'Z')."""
        return self.read_until("Z")

    def read_until_closed(self):
        msgs = []
        while True:
            try:
                msgs.append(self.read_msg())
            except Closed:
                return msgs

    def query(self, sql):
        self.query_send(sql)
        return self.read_until_rfq()

    def startup(self, version=PROTOCOL_3_0, **params):
        """Sends a StartupMessage; returns the messages up to ReadyForQuery or an error."""
        try:
            self.send_startup(version, **params)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server may refuse before reading; its error is still in our buffer
        msgs = []
        while True:
            try:
                m = self.read_msg()
            except Closed:
                return msgs
            msgs.append(m)
            if m.type == "R":
                code = struct.unpack("!I", m.payload[:4])[0]
                if code != 0:
                    raise AssertionError(f"server asks for authentication (code {code})")
            elif m.type == "S":
                k, v = m.payload.split(b"\0")[:2]
                self.params[k.decode()] = v.decode()
            elif m.type == "K":
                self.backend_key = struct.unpack("!II", m.payload)
            elif m.type in "EZ":
                return msgs


# -- message helpers


def rfq(msgs):
    assert msgs and msgs[-1].type == "Z", f"no ReadyForQuery at the end: {describe(msgs)}"
    return chr(msgs[-1].payload[0])


def errors(msgs):
    return [m.fields for m in msgs if m.type == "E"]


def notices(msgs):
    return [m.fields for m in msgs if m.type == "N"]


def startup_or_53300(p):
    """A RawClient session on p if it is admitted; None if refused with 53300 (anything else
    fails): for polling until a freed connection slot is seen."""
    c = RawClient(p.host, p.port)
    msgs = c.startup(user="postgres", database="postgres")
    if msgs and msgs[-1].type == "Z":
        return c
    c.close()
    assert only_error(msgs)["C"] == "53300", describe(msgs)
    return None


def only_error(msgs):
    errs = errors(msgs)
    assert len(errs) == 1, f"expected exactly one ErrorResponse: {describe(msgs)}"
    return errs[0]


def wire_bytes(msgs):
    """Bytes the messages took on the wire (type byte and length word included)."""
    return sum(5 + len(m.payload) for m in msgs)


def query_message(sql):
    """The bytes of a Query message: for pipelining several before reading any answer."""
    body = cstr(sql) if isinstance(sql, str) else sql + b"\0"
    return b"Q" + struct.pack("!I", len(body) + 4) + body


def bind_body(portal="", stmt="", params=(), formats=(), result_formats=()):
    """The body of a Bind message (see RawClient.bind)."""
    vals = [x if x is None or isinstance(x, bytes) else str(x).encode() for x in params]
    p = b"".join(struct.pack("!i", -1) if v is None else struct.pack("!I", len(v)) + v
                 for v in vals)
    return (cstr(portal) + cstr(stmt) + struct.pack("!H", len(formats)) +
            b"".join(struct.pack("!H", f) for f in formats) + struct.pack("!H", len(vals)) + p +
            struct.pack("!H", len(result_formats)) +
            b"".join(struct.pack("!H", f) for f in result_formats))


def frame(type_, payload=b""):
    """The bytes of one frontend message: for pipelines built before any is sent."""
    return type_.encode() + struct.pack("!I", len(payload) + 4) + payload


def parse_message(sql, name="", types=()):
    return frame("P", cstr(name) + cstr(sql) + struct.pack("!H", len(types)) +
                 b"".join(struct.pack("!I", t) for t in types))


def bind_message(portal="", stmt="", params=()):
    return frame("B", bind_body(portal, stmt, params))


def execute_message(portal="", max_rows=0):
    return frame("E", cstr(portal) + struct.pack("!I", max_rows))


SYNC = frame("S")
FLUSH = frame("H")


def send_in_thread(c, data, chunk=1 << 16):
    """Sends `data` on RawClient c from a thread, so the caller can read the answers while a
    long pipeline is still going out (neither side then blocks on a full socket buffer).
    Returns the thread; join it (bounded) after reading."""
    def go():
        try:
            for i in range(0, len(data), chunk):
                c.sock.sendall(data[i:i + chunk])
        except OSError:
            pass  # the reader sees what the server made of it
    t = threading.Thread(target=go, daemon=True)
    t.start()
    return t


def types(msgs):
    """The message types of msgs as one string, e.g. '12TDCZ'."""
    return "".join(m.type for m in msgs)


def shape(msgs):
    """types(msgs) with each run of DataRows (or of CopyData) as one 'D' (one 'd'), e.g.
    '12TDCZ' for 10,000 rows."""
    out = []
    for m in msgs:
        if not (m.type in "Dd" and out and out[-1] == m.type):
            out.append(m.type)
    return "".join(out)


def is_proxy_message(m):
    """An ErrorResponse or NoticeResponse the proxy made: a guardrail's, with `rule: <id>` in
    DETAIL (PostgreSQL's own messages never carry one)."""
    return m.type in "EN" and m.fields.get("D", "").startswith("rule:")


def assert_same_types(got, want):
    """Asserts that the proxy's answers `got` have the message-type sequence of PostgreSQL's
    answers `want` to the same client messages, proxy errors aside:

    * a run of DataRows counts as one 'D' (row counts are asserted by the caller: a limit ends
      a result early, truncation shortens it);
    * a guardrail NoticeResponse of the proxy (DETAIL `rule: ...`, e.g. truncation's WARNING)
      is skipped;
    * a guardrail ErrorResponse of the proxy may stand where PostgreSQL had a different
      ErrorResponse (then both move on) or none: PostgreSQL's messages are then skipped up to
      the next ReadyForQuery (or, when the proxy's error was FATAL, to the end), because after
      an error the backend skips the rest of the segment, and a FATAL ends the session.

    Everything else must match type for type, in order, including how many ReadyForQuery."""
    def squeeze(msgs):
        out = []
        for m in msgs:
            if m.type == "D" and out and out[-1].type == "D":
                continue
            out.append(m)
        return out
    g, w = squeeze(got), squeeze(want)
    i = j = 0
    where = lambda: (f"\nproxy:  {types(g)}\ndirect: {types(w)}\nat proxy #{i}, direct #{j}:"
                     f" {g[i:i + 3]} vs {w[j:j + 3]}")
    while i < len(g):
        m = g[i]
        if m.type == "N" and is_proxy_message(m):
            i += 1
            continue
        if m.type == "E" and is_proxy_message(m):
            fatal = m.fields.get("S") == "FATAL"
            if j < len(w) and w[j].type == "E":
                j += 1
            elif fatal:
                j = len(w)
            else:
                while j < len(w) and w[j].type != "Z":
                    j += 1
            i += 1
            continue
        assert j < len(w) and w[j].type == m.type, "message types differ" + where()
        i += 1
        j += 1
    assert j == len(w), "PostgreSQL sent more" + where()


def both(target, direct, script, setup=None, same=True):
    """Runs script(c, proxied) on a RawClient of `target` and on one of PostgreSQL itself
    (`direct`), PostgreSQL first; setup() (if given) runs before each. Returns (got, want), what
    script returned on each, after assert_same_types(got, want). `proxied` tells the script
    which side it talks to, so that a text the proxy refuses can be replaced by one PostgreSQL
    itself fails at the same message (a syntax error at Parse, as the proxy's own failing Parse
    does), or a guardrail's side effect be left out. same=False: the caller compares (for a
    documented difference)."""
    out = []
    for t, proxied in ((direct, False), (target, True)):
        if setup:
            setup()
        with t.raw() as c:
            out.append(script(c, proxied))
    want, got = out
    if same:
        assert_same_types(got, want)
    return got, want


def cancel_request(target, key):
    """Sends a CancelRequest with key (pid, secret) to target on a new connection and waits
    until the server closes it (it answers nothing)."""
    s = socket.create_connection((target.host, target.port), timeout=BOUND)
    try:
        s.sendall(struct.pack("!III", 16, CANCEL_REQUEST, key[0]) + struct.pack("!I", key[1]))
        wait_peer_closed(s)
    finally:
        s.close()


def audit_lines(path, n):
    """Polls until the audit file holds at least n lines; returns them parsed."""
    import json

    def ready():
        if not os.path.exists(path):
            return None
        with open(path) as f:
            lines = f.read().splitlines()
        return lines if len(lines) >= n else None
    lines = poll(ready, what=f"{n} audit lines in {path}")
    return [json.loads(line) for line in lines]


def tags(msgs):
    return [m.payload.rstrip(b"\0").decode() for m in msgs if m.type == "C"]


def rows(msgs):
    out = []
    for m in msgs:
        if m.type != "D":
            continue
        n = struct.unpack("!H", m.payload[:2])[0]
        pos, row = 2, []
        for _ in range(n):
            ln = struct.unpack("!i", m.payload[pos:pos + 4])[0]
            pos += 4
            if ln < 0:
                row.append(None)
            else:
                row.append(m.payload[pos:pos + ln].decode())
                pos += ln
        out.append(tuple(row))
    return out


def parameter_status(msgs):
    out = {}
    for m in msgs:
        if m.type == "S":
            k, v = m.payload.split(b"\0")[:2]
            out[k.decode()] = v.decode()
    return out


def scalar(target_or_conn, sql, *args):
    """One value from a query, on a psycopg2 connection or a Target (own connection)."""
    if isinstance(target_or_conn, Target):
        conn = target_or_conn.connect(autocommit=True)
        try:
            return scalar(conn, sql, *args)
        finally:
            conn.close()
    with target_or_conn.cursor() as cur:
        cur.execute(sql, args or None)
        return cur.fetchone()[0]


# ---------------------------------------------------------------------------------------------
# Observability helpers (metrics endpoint, pg_stat_activity, logs)


def log_records(text):
    """The proxy's log lines (text or JSON format) -> [{'level', 'event', 'session', fields...,
    'line'}]. Text lines are `TIME LEVEL [SID] event: msg` with leading key=value words as
    fields, as the JSON format has them."""
    import json
    out = []
    for line in text.splitlines():
        if line.startswith("{"):
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            rec["line"] = line
            out.append(rec)
            continue
        parts = line.split(" ", 2)
        if len(parts) < 3:
            continue
        rest = parts[2].lstrip()
        rec = {"level": parts[1], "line": line}
        if rest.startswith("["):
            sid, _, rest = rest.partition("] ")
            rec["session"] = sid[1:]
        event, sep, msg = rest.partition(": ")
        if not sep and rest.endswith(":"):
            event, msg = rest[:-1], ""
        elif not sep:
            continue
        rec["event"] = event
        words = msg.split(" ")
        while words and "=" in words[0] and words[0].split("=", 1)[0].replace("_", "").isalpha():
            k, v = words.pop(0).split("=", 1)
            rec[k] = v
        if words:
            rec["msg"] = " ".join(words)
        out.append(rec)
    return out


def log_events(p, event):
    """The log records of proxy `p` whose event is `event`."""
    return [r for r in log_records(p.log()) if r.get("event") == event]


def http_get(port, path, host="127.0.0.1", timeout=BOUND):
    """(status, body) of GET http://host:port/path; HTTP errors are returned, not raised."""
    import urllib.error
    import urllib.request
    try:
        with urllib.request.urlopen(f"http://{host}:{port}{path}", timeout=timeout) as r:
            return r.status, r.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")


def parse_metrics(text):
    """Prometheus text -> {'name{a="x",b="y"}' or 'name': float}, labels in exposition order."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        out[key] = float(value)
    return out


def scrape(port):
    status, body = http_get(port, "/metrics")
    assert status == 200, f"/metrics answered {status}: {body[:300]}"
    return parse_metrics(body)


def metric(values, name, **labels):
    """One sample from parse_metrics() output; 0 when the series is absent."""
    if labels:
        name += "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}"
    return values.get(name, 0.0)


def wait_active(dconn, needle, timeout=BOUND):
    """Polls pg_stat_activity until a backend whose application_name contains `needle` is
    active; returns its pid."""
    def probe():
        with dconn.cursor() as cur:
            cur.execute("select pid from pg_stat_activity where state = 'active' "
                        "and application_name like %s and pid <> pg_backend_pid()",
                        (f"%{needle}%",))
            r = cur.fetchone()
            return r and r[0]
    return poll(probe, timeout=timeout, what=f"an active backend named like {needle!r}")


def cancel_in_thread(conn, dconn, app):
    """Cancels conn's statement from another thread once a backend named like `app` runs it
    upstream (watched over a connection of its own to dconn's DSN); returns (thread, fired):
    fired gets the monotonic time of the cancel, or the exception that stopped it."""
    fired = []
    other = psycopg2.connect(dconn.dsn)
    other.autocommit = True

    def go():
        try:
            wait_active(other, app)
            fired.append(time.monotonic())
            conn.cancel()
        except BaseException as e:  # reported by the caller
            fired.append(e)
        finally:
            other.close()
    t = threading.Thread(target=go, daemon=True)
    t.start()
    return t, fired


def cancel_took(t, fired, done):
    """Joins a cancel_in_thread thread, fails if it did not cancel; returns the seconds from
    its cancel to `done` (when the client saw the error)."""
    t.join(BOUND)
    assert fired and not isinstance(fired[0], BaseException), fired
    return done - fired[0]


def run_canceled(conn, dconn, app, sql="select pg_sleep(30)"):
    """Runs sql on a psycopg2 connection named `app`, canceled from another thread; returns
    (QueryCanceled exception, seconds from the cancel to the error)."""
    t, fired = cancel_in_thread(conn, dconn, app)
    with conn.cursor() as cur:
        with pytest.raises(psycopg2.errors.QueryCanceled) as exc:
            cur.execute(sql)
    return exc.value, cancel_took(t, fired, time.monotonic())


# ---------------------------------------------------------------------------------------------
# Process resources (robustness tests: test_hostile, test_faults, test_load)


def proc_fds(pid):
    """Number of open file descriptors of process `pid`."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def proc_rss_kb(pid):
    """Resident set size of process `pid` in kB (VmRSS)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


def proc_children(pid):
    """PIDs whose parent is `pid`."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        # the command name may contain spaces/parentheses: fields follow the last ')'
        if int(stat.rpartition(")")[2].split()[1]) == pid:
            out.append(int(entry))
    return out


class Usage(tuple):
    """(fds, rss_kb) of a process at one moment."""

    def __new__(cls, pid):
        return super().__new__(cls, (proc_fds(pid), proc_rss_kb(pid)))

    fds = property(lambda self: self[0])
    rss_kb = property(lambda self: self[1])

    def __repr__(self):
        return f"Usage(fds={self.fds}, rss={self.rss_kb} kB)"


def wait_usage_back(pid, base, fd_margin=0, rss_margin_kb=8192, timeout=BOUND, what=""):
    """Polls until process `pid` holds at most base.fds + fd_margin descriptors and at most
    base.rss_kb + rss_margin_kb resident kB; fails naming both when it does not. Under ASan
    freed memory sits in the sanitizer's quarantine, so only descriptors are checked there
    (the release build's run checks memory; LeakSanitizer checks leaks at exit)."""
    seen = []
    if SANITIZED:
        rss_margin_kb = 1 << 40

    def ok():
        u = Usage(pid)
        seen[:] = [u]
        return u.fds <= base.fds + fd_margin and u.rss_kb <= base.rss_kb + rss_margin_kb

    deadline = time.monotonic() + timeout
    while not ok():
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: resources did not return to baseline within {timeout} s: "
                        f"baseline {base}, now {seen[0]} (margins: {fd_margin} fds, "
                        f"{rss_margin_kb} kB)")
        time.sleep(0.05)
    return seen[0]


def wait_peer_closed(sock, timeout=BOUND):
    """Reads (and discards) from `sock` until the peer closes or resets it; returns the bytes
    read. Fails after `timeout` seconds."""
    import select
    data = b""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            pytest.fail(f"socket still open {timeout} s later ({len(data)} bytes read)")
        r, _, _ = select.select([sock], [], [], min(left, 0.5))
        if not r:
            continue
        try:
            chunk = sock.recv(1 << 20)
        except (ConnectionResetError, BrokenPipeError):
            return data
        if not chunk:
            return data
        data += chunk


def marker(prefix):
    """A unique application_name, to find this test's upstream backends."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def backends_detail(dconn, app):
    """[(pid, state, wait_event, query)] of upstream backends whose application_name holds
    `app` (the proxy puts the client's name first in it)."""
    with dconn.cursor() as cur:
        cur.execute("select pid, state, wait_event, query from pg_stat_activity "
                    "where application_name like %s", (f"%{app}%",))
        return cur.fetchall()


def terminate_backends(dconn, app, timeout=BOUND):
    """Terminates every upstream backend whose application_name holds `app` and waits until
    they are gone: teardown for tests whose failure leaves a statement running upstream."""
    with dconn.cursor() as cur:
        cur.execute("select pg_terminate_backend(pid) from pg_stat_activity "
                    "where application_name like %s and pid <> pg_backend_pid()", (f"%{app}%",))
    poll(lambda: backends_detail(dconn, app) == [], timeout=timeout,
         what=f"backends named like {app!r} to exit after pg_terminate_backend")


def recreate(dconn, name, ddl="(id int)"):
    """Drops (with dependants) and creates table `name` directly on PostgreSQL."""
    with dconn.cursor() as cur:
        cur.execute(f"drop table if exists {name} cascade; create table {name} {ddl}")


def table_rows(dconn, name):
    """Every row of `name`, read directly on PostgreSQL, ordered by the first column."""
    with dconn.cursor() as cur:
        cur.execute(f"select * from {name} order by 1")
        return cur.fetchall()


class Slowloris:
    """Slow HTTP clients from several local addresses (127.0.0.x are all this host): each slot
    connects, sends a partial request, then one more header line a second (well inside a 10 s
    idle timeout), and reconnects when the server closes it, as an attacker would. A context
    manager: entered once every slot has connected at least once."""

    PARTIAL = b"GET /healthz HTTP/1.1\r\nHost: x\r\n"  # headers never finished

    def __init__(self, port, addresses, per_address):
        self.port = port
        self.stop = threading.Event()
        self.connects = 0
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.slot, args=(a,), daemon=True)
                        for a in addresses for _ in range(per_address)]

    def slot(self, src):
        while not self.stop.is_set():
            s = socket.socket()
            s.settimeout(2)
            try:
                s.bind((src, 0))
                s.connect(("127.0.0.1", self.port))
                s.sendall(self.PARTIAL)
                with self.lock:
                    self.connects += 1
                while not self.stop.wait(1.0):  # the attack's own pace, and its stop signal
                    s.sendall(b"X-Slow: 1\r\n")
            except OSError:
                self.stop.wait(0.2)  # closed or refused: come back
            finally:
                s.close()

    def __enter__(self):
        for t in self.threads:
            t.start()
        poll(lambda: self.connects >= len(self.threads), what="the slow clients to connect")
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(BOUND)
