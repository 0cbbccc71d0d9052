"""The audit writer behind its queue: a stalled audit file holds only the sessions whose
records wait (never the event loop), no record is lost or doubled, every line is valid JSON
whatever bytes the client sent, an unwritable file drops and counts, rotation and shutdown."""
import fcntl
import json
import os
import select
import signal
import struct
import termios
import threading
import uuid

from pgwp import (BOUND, PROTOCOL_3_0, RawClient, errors, free_port, metric, poll, proxy_only,
                  rows, scrape)

pytestmark = proxy_only

PAGE = 4096
PADDING = 900 * 1024  # per statement: about 18 records fill the queue's 16 MiB
INVALID = (b"\x80|\xbf|\xc0\xaf|\xe0\x80\xaf|\xed\xa0\x80|\xf4\x90\x80\x80|\xff|\xfe|"
           b"\xe2\x82x|\xf0\x9f\x98")  # lone continuations, overlongs, a surrogate, > U+10FFFF


class FifoReader:
    """A FIFO for --audit-log with a one-page pipe, opened for reading before the proxy opens
    it; nothing is read until start(), then a thread reads until EOF."""

    def __init__(self, path):
        self.path = path
        os.mkfifo(path)
        self.fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        fcntl.fcntl(self.fd, fcntl.F_SETPIPE_SZ, PAGE)
        self.data = bytearray()
        self.lock = threading.Lock()
        self.eof = threading.Event()
        self.stop = threading.Event()
        self.thread = None

    def start(self):
        def run():
            while not self.stop.is_set():
                ready, _, _ = select.select([self.fd], [], [], 0.1)
                if not ready:
                    continue
                try:
                    chunk = os.read(self.fd, 1 << 20)
                except BlockingIOError:
                    continue
                if not chunk:
                    self.eof.set()
                    return
                with self.lock:
                    self.data += chunk
        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def full(self):
        """True when the pipe holds a whole page: its writer is blocked in write()."""
        return struct.unpack("i", fcntl.ioctl(self.fd, termios.FIONREAD, b"\0" * 4))[0] >= PAGE

    def lines(self):
        with self.lock:
            return bytes(self.data).split(b"\n")[:-1]

    def close(self):
        self.stop.set()
        if self.thread:
            self.thread.join(BOUND)
        os.close(self.fd)


def statement(seq, i):
    return f"select nextval('{seq}') /* stmt {i} */ -- " + "x" * PADDING


def send_in_thread(c, sqls):
    """Pipelines every Query at once (the proxy stops reading while a record waits)."""
    def go():
        try:
            c.send_raw(b"".join(b"Q" + struct.pack("!I", len(s) + 5) + s.encode() + b"\0"
                                for s in sqls))
        except OSError:
            pass  # the proxy closed the session (shutdown)
    t = threading.Thread(target=go, daemon=True)
    t.start()
    return t


def sequence(dconn):
    name = f"audit_seq_{uuid.uuid4().hex[:8]}"
    with dconn.cursor() as cur:
        cur.execute(f"create sequence {name}")
    return name


def ran(dconn, seq):
    """How many statements of this test's session ran upstream (nextval calls)."""
    with dconn.cursor() as cur:
        cur.execute(f"select case when is_called then last_value else 0 end from {seq}")
        return cur.fetchone()[0]


def stalled_proxy(start_proxy, tmp_path, *flags):
    reader = FifoReader(str(tmp_path / "audit.fifo"))
    mport = free_port()
    p = start_proxy("--audit-log", reader.path, "--workers", "1",
                    "--metrics-listen", f"127.0.0.1:{mport}", *flags)
    return p, mport, reader


def queue_full(mport):
    return metric(scrape(mport), "pgwire_proxy_audit_queue_full_total") >= 1


def marks(lines):
    """The `stmt N` markers of the records (raw lines or parsed), in order."""
    out = []
    for line in lines:
        text = (line if isinstance(line, dict) else json.loads(line.decode()))["statement"]
        if "/* stmt " in text:
            out.append(int(text.split("/* stmt ", 1)[1].split(" ", 1)[0]))
    return out


def test_stalled_audit_file_holds_only_the_waiting_session(start_proxy, tmp_path, dconn):
    p, mport, reader = stalled_proxy(start_proxy, tmp_path)
    seq, n = sequence(dconn), 30
    try:
        with RawClient(p.host, p.port) as a:
            assert a.startup(user="writer_a", database="postgres")[-1].type == "Z"
            sender = send_in_thread(a, [statement(seq, i) for i in range(n)])
            poll(reader.full, what="the audit file to stall")
            # the worker's only event loop still serves a session whose record is not waiting:
            # once while the queue fills, once while it is full
            with p.raw(user="writer_b") as b:
                assert rows(b.query("select 41")) == [("41",)]
            poll(lambda: queue_full(mport), what="the audit queue to be full")
            with p.raw(user="writer_b") as b:
                assert rows(b.query("select 42")) == [("42",)]
            held = ran(dconn, seq)
            assert 0 < held < n, f"{held} of {n} statements ran while the audit file stalled"
            assert ran(dconn, seq) == held  # still held: no new statement started upstream
            reader.start()
            replies = [a.read_until_rfq() for _ in range(n)]
            sender.join(BOUND)
        assert all(m[-1].type == "Z" and not errors(m) for m in replies)
        assert ran(dconn, seq) == n
        poll(lambda: len(reader.lines()) >= n + 2, what=f"{n + 2} audit records")
        poll(lambda: metric(scrape(mport), "pgwire_proxy_audit_records_total") == n + 2,
             what="the written-records counter")
        p.signal(signal.SIGTERM)
        assert p.wait() == 0
        assert reader.eof.wait(BOUND)
        lines = reader.lines()
        assert len(lines) == n + 2, len(lines)
        assert marks(lines) == list(range(n)), "each statement exactly once, in order"
        users = [json.loads(ln.decode())["user"] for ln in lines]
        assert users.count("writer_b") == 2 and users.count("writer_a") == n
        assert "audit_records_dropped" not in p.log()
    finally:
        reader.close()


def test_shutdown_writes_every_queued_record(start_proxy, tmp_path, dconn):
    p, mport, reader = stalled_proxy(start_proxy, tmp_path)
    seq = sequence(dconn)
    try:
        with RawClient(p.host, p.port) as a:
            assert a.startup(user="writer_c", database="postgres")[-1].type == "Z"
            sender = send_in_thread(a, [statement(seq, i) for i in range(30)])
            poll(lambda: queue_full(mport), what="the audit queue to be full")
            p.signal(signal.SIGTERM)
            reader.start()  # the proxy waits for its audit writer before it exits
            assert p.wait() == 0
            sender.join(BOUND)
        assert reader.eof.wait(BOUND)
        held = ran(dconn, seq)
        assert marks(reader.lines()) == list(range(held)), "a record per statement that ran"
        assert "audit_unwritten" not in p.log() and "audit_records_dropped" not in p.log()
    finally:
        reader.close()


def test_reload_away_from_a_stalled_file(start_proxy, tmp_path, dconn):
    """A reload to another file is not held by the stalled one: new statements are audited in
    the new file at once; the old generation writes everything it holds, then closes (EOF on
    the FIFO while the proxy runs); each statement has one record across the two files."""
    reader = FifoReader(str(tmp_path / "audit.fifo"))
    ini, new_path = str(tmp_path / "proxy.ini"), str(tmp_path / "audit.jsonl")
    with open(ini, "w") as f:
        f.write(f"[pgwire-proxy]\naudit-log = {reader.path}\n")
    mport = free_port()
    p = start_proxy("--config", ini, "--workers", "1", "--metrics-listen", f"127.0.0.1:{mport}")
    seq, n = sequence(dconn), 30
    try:
        with RawClient(p.host, p.port) as a:
            assert a.startup(user="writer_d", database="postgres")[-1].type == "Z"
            sender = send_in_thread(a, [statement(seq, i) for i in range(n)])
            poll(lambda: queue_full(mport), what="the audit queue to be full")
            with open(ini, "w") as f:
                f.write(f"[pgwire-proxy]\naudit-log = {new_path}\n")
            p.signal(signal.SIGHUP)
            poll(lambda: "reloaded" in p.log(), what="the reload")
            with p.raw(user="writer_e") as c:
                assert rows(c.query("select 'new file'")) == [("new file",)]
            records(new_path, 1)
            reader.start()
            replies = [a.read_until_rfq() for _ in range(n)]
            sender.join(BOUND)
            assert all(m[-1].type == "Z" and not errors(m) for m in replies)
            assert reader.eof.wait(BOUND), "the old generation's file was not closed"
        old = reader.lines()
        new = records(new_path, n - len(old) + 1)
        assert new[0]["user"] == "writer_e"
        later = marks(new[1:])
        assert marks(old) + later == list(range(n)), "each statement once, across both files"
        assert len(old) > 0 and later, (len(old), later)
    finally:
        reader.close()


def raw_startup(p, params):
    """A session whose startup parameters are raw bytes (not necessarily UTF-8)."""
    c = RawClient(p.host, p.port)
    body = struct.pack("!I", PROTOCOL_3_0) + b"".join(k + b"\0" + v + b"\0"
                                                     for k, v in params) + b"\0"
    c.send_raw(struct.pack("!I", len(body) + 4) + body)
    while c.read_msg().type != "Z":
        pass
    return c


def raw_query(c, sql):
    c.send("Q", sql + b"\0")
    return c.read_until_rfq()


def strict_json_lines(path):
    """The complete lines of the file (a line being written is left out), each parsed as strict
    UTF-8 JSON; [] while the file does not exist."""
    if not os.path.exists(path):
        return []
    with open(path, "rb") as f:
        data = f.read()
    return [json.loads(line.decode("utf-8")) for line in data.split(b"\n")[:-1]]


def records(path, n):
    """Polls until the file holds at least n complete lines; returns them all, parsed."""
    return poll(lambda: len(strict_json_lines(path)) >= n and strict_json_lines(path),
                what=f"{n} audit records in {path}")


def test_invalid_utf8_from_the_client_gives_valid_json(start_proxy, tmp_path):
    path = str(tmp_path / "audit.jsonl")
    p = start_proxy("--audit-log", path)
    user, db, app = b"u" + INVALID, b"db\xff", b"app\xc3"
    bad_sql = b"select 1 /* " + INVALID + b" */"
    c = raw_startup(p, [(b"user", user), (b"database", db), (b"application_name", app)])
    with c:
        assert errors(raw_query(c, bad_sql))[0]["C"] == "22021"  # PostgreSQL refuses it
        assert rows(raw_query(c, b"select 'fine'")) == [("fine",)]
    recs = records(path, 2)
    assert len(recs) == 2
    for r in recs:
        for key, raw in (("user", user), ("database", db), ("application", app)):
            assert r[key] == raw.decode("utf-8", "replace"), (key, r)
            assert bytes.fromhex(r[key + "_hex"]) == raw, (key, r)
    bad, fine = recs
    assert bad["statement"] == bad_sql.decode("utf-8", "replace")
    assert bytes.fromhex(bad["statement_hex"]) == bad_sql
    assert (bad["outcome"], bad["sqlstate"]) == ("error", "22021")
    assert fine["statement"] == "select 'fine'" and "statement_hex" not in fine
    assert fine["outcome"] == "ok" and fine["protocol"] == "simple"


def test_long_names_are_cut_at_a_character(start_proxy, tmp_path):
    """Names are kept to 63 bytes, as PostgreSQL keeps them: a valid name cut there stays
    valid (no `_hex`), so `_hex` only ever means the client sent invalid bytes."""
    path = str(tmp_path / "audit.jsonl")
    p = start_proxy("--audit-log", path)
    with p.raw(user="é" * 40, application_name="x" + "€" * 30) as c:
        assert rows(c.query("select 1")) == [("1",)]
    (rec,) = records(path, 1)
    assert rec["user"] == "é" * 31 and "user_hex" not in rec, rec
    assert rec["application"] == "x" + "€" * 20 and "application_hex" not in rec, rec


def test_redaction_with_invalid_utf8_keeps_literals_out(start_proxy, tmp_path):
    path = str(tmp_path / "audit.jsonl")
    p = start_proxy("--audit-log", path, "--audit-redact")
    c = raw_startup(p, [(b"user", b"redactor"), (b"application_name", b"app\xff")])
    with c:
        assert errors(raw_query(c, b"select 'sekrit\xff\xfe', 4242"))[0]["C"] == "22021"
        assert rows(raw_query(c, b"select 'visible-literal' as x")) == [("visible-literal",)]
    recs = records(path, 2)
    with open(path, "rb") as f:
        text = f.read()
    for secret in (b"sekrit", b"4242", b"visible-literal", b"sekrit".hex().encode()):
        assert secret not in text, f"{secret!r} in the redacted audit log"
    assert [r["statement"] for r in recs] == ["select $1, $2", "select $1 as x"]
    assert all("statement_hex" not in r for r in recs)
    assert bytes.fromhex(recs[0]["application_hex"]) == b"app\xff"


def test_unwritable_audit_file_drops_counts_and_serves(start_proxy):
    mport = free_port()
    p = start_proxy("--audit-log", "/dev/full", "--metrics-listen", f"127.0.0.1:{mport}")
    n = 20
    with p.raw() as c:
        for i in range(n):
            assert rows(c.query(f"select {i}")) == [(str(i),)]
    poll(lambda: metric(scrape(mport), "pgwire_proxy_audit_records_dropped_total") >= n,
         what=f"{n} dropped audit records", timeout=BOUND + 5)
    values = scrape(mport)
    assert metric(values, "pgwire_proxy_audit_records_dropped_total") == n
    assert metric(values, "pgwire_proxy_audit_records_total") == 0
    log = p.log()
    assert log.count("audit_write_failed") == 1, log
    assert 1 <= log.count("audit_records_dropped") < n, "reported once an interval, not per record"


def test_sighup_reopens_a_rotated_audit_file(start_proxy, tmp_path):
    path = str(tmp_path / "audit.jsonl")
    p = start_proxy("--audit-log", path)
    with p.raw(user="rotator") as old:
        assert rows(old.query("select 'before'")) == [("before",)]
        records(path, 1)
        os.rename(path, path + ".1")
        p.signal(signal.SIGHUP)
        poll(lambda: "reloaded" in p.log(), what="the reload")
        assert rows(old.query("select 'after, same session'")) == [("after, same session",)]
        with p.raw(user="rotator") as new:
            assert rows(new.query("select 'after, new session'")) == [("after, new session",)]
    recs = records(path, 2)
    assert [r["statement"] for r in recs] == ["select 'after, same session'",
                                              "select 'after, new session'"]
    assert [r["statement"] for r in strict_json_lines(path + ".1")] == ["select 'before'"]
