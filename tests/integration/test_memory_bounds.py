"""Memory: what the proxy takes for one large message it gives back, and all sessions together
hold a bounded amount of buffered client messages (--max-client-memory).

The attacks: an upstream ErrorResponse was buffered whole in a buffer that never shrank, and a
slow client got a second copy (60 sessions that each received one 15 MB error held 1.5 GB); a
Query was buffered whole up to --max-message-size, so 30 sessions each sending 60 MB of an
unfinished Query took 1.7 GiB."""
import select
import socket
import struct
import subprocess

from pgwp import (BINARY, BOUND, SANITIZED, Usage, backends_detail, describe, errors, marker,
                  notices, only_error, poll, proc_rss_kb, proxy_only, rfq, rows,
                  wait_usage_back)

pytestmark = proxy_only

BIG = 10_000_000
ERROR_SQL = f"select repeat('x', {BIG})::int"  # 22P02 whose message quotes the 10 MB value
NOTICE_SQL = f"do $$ begin raise notice '%', repeat('x', {BIG}); end $$"
GIVEN_BACK_KB = 2 * 1024  # what a session may keep of a large message once it is delivered
MB = 1_000_000


def warm(p):
    """First-use allocations (libpq, TLS-free paths, the log) before any baseline."""
    for _ in range(3):
        with p.raw() as c:
            assert rows(c.query("select 1")) == [("1",)]


def quiet_server_log(c):
    """The server would log each 10 MB error: the DSN role is a superuser, so switch it off."""
    assert errors(c.query("set log_min_messages = fatal")) == []


def get_big_error(c):
    msgs = c.query(ERROR_SQL)
    err = only_error(msgs)
    assert err["C"] == "22P02" and len(err["M"]) >= BIG, (err["C"], len(err["M"]))
    assert rfq(msgs) == "I"


def get_big_notice(c):
    msgs = c.query(NOTICE_SQL)
    assert errors(msgs) == [], describe(msgs)[:300]
    (n,) = notices(msgs)
    assert n["S"] == "NOTICE" and len(n["M"]) == BIG, (n["S"], len(n["M"]))
    assert rfq(msgs) == "I"


# ---------------------------------------------------------------------------------------------
# Large upstream messages: given back once delivered


def test_large_errors_and_notices_are_given_back(start_proxy):
    """20 open sessions each receive a 10 MB error and a 10 MB notice: once delivered, the
    proxy's resident memory is back within 2 MiB of what it was before, sessions still open."""
    p = start_proxy("--max-bytes", 0)
    warm(p)
    sessions = [p.raw() for _ in range(20)]
    try:
        for c in sessions:
            quiet_server_log(c)
        base = Usage(p.proc.pid)
        for c in sessions:
            get_big_error(c)
            get_big_notice(c)
        wait_usage_back(p.proc.pid, base, rss_margin_kb=GIVEN_BACK_KB,
                        what="20 open sessions after a 10 MB error and a 10 MB notice each")
        for c in sessions:
            assert rows(c.query("select 'still open'")) == [("still open",)]
    finally:
        for c in sessions:
            c.close()


def test_large_error_to_a_slow_client_is_given_back(start_proxy, dconn):
    """The client reads the 10 MB error only after the upstream has sent it (the proxy holds
    what the client's socket did not take): once read, the memory is given back."""
    p = start_proxy("--max-bytes", 0)
    warm(p)
    app = marker("slowerr")
    with p.raw(application_name=app) as c:
        quiet_server_log(c)
        base = Usage(p.proc.pid)
        c.query_send(ERROR_SQL)
        # the upstream is done (idle again) or blocked writing to the proxy: either way the
        # proxy has taken what it will take before the client reads
        poll(lambda: any(b[3] == ERROR_SQL and (b[1] == "idle" or b[2] == "ClientWrite")
                         for b in backends_detail(dconn, app)),
             what="the upstream to have produced the 10 MB error")
        msgs = c.read_until_rfq()
        err = only_error(msgs)
        assert err["C"] == "22P02" and len(err["M"]) >= BIG, (err["C"], len(err["M"]))
        assert rfq(msgs) == "I"
        wait_usage_back(p.proc.pid, base, rss_margin_kb=GIVEN_BACK_KB,
                        what="a slow client after it read a 10 MB error")
        assert rows(c.query("select 'still open'")) == [("still open",)]


# ---------------------------------------------------------------------------------------------
# Buffered client messages: one bound for all sessions together


def stall_partial_queries(p, n, declared, body):
    """n sessions, one after the other, each send the header of a Query of `declared` bytes and
    the first `body` bytes of it, then stop. Returns the clients and, per client, how its send
    ended: None (all sent), 'closed' (the proxy closed while we sent), 'blocked' (the proxy
    stopped reading for BOUND seconds)."""
    clients, sent = [], []
    try:
        for _ in range(n):
            c = p.raw()
            clients.append(c)
            data = b"Q" + struct.pack("!I", declared) + b"select '" + b"x" * (body - 8)
            try:
                c.sock.sendall(data)
                sent.append(None)
            except (BrokenPipeError, ConnectionResetError):
                sent.append("closed")
            except socket.timeout:
                sent.append("blocked")
    except BaseException:
        for c in clients:
            c.close()
        raise
    return clients, sent


def answered(c):
    """The messages the proxy sent a stalled client and closed it with, or None while it is
    neither answered nor closed."""
    r, _, _ = select.select([c.sock], [], [], 0)
    if not r:
        return None
    msgs, closed = c.read_all(timeout=BOUND)
    assert closed, f"the proxy answered a client whose Query is incomplete: {describe(msgs)}"
    return msgs


def check_bounded(p, base_kb, n, declared, body, limit, flag_named):
    """The sessions of stall_partial_queries: those whose message would take the total over
    `limit` got FATAL 53200 and were closed, the others stay open, and what the open ones hold
    fits in the limit; a new session is served; the proxy's memory stays bounded."""
    clients, sent = stall_partial_queries(p, n, declared, body)
    try:
        outcome = {}

        def settle():
            """True once a session was refused and the open ones fit in the bound (a refusal
            may come after our send returned: the proxy reads what the kernel buffered)."""
            for i, c in enumerate(clients):
                if i not in outcome:
                    msgs = answered(c)
                    if msgs is not None:
                        outcome[i] = msgs
            return outcome and (n - len(outcome)) * body <= limit

        def what():
            return (f"sessions over the bound to be refused for --max-client-memory (sends: "
                    f"{sent}, refused: {sorted(outcome)}, proxy RSS "
                    f"+{proc_rss_kb(p.proc.pid) - base_kb} kB)")
        poll(settle, what=what)
        for i, msgs in outcome.items():
            err = only_error(msgs)
            assert (err["S"], err["C"]) == ("FATAL", "53200"), describe(msgs)
            assert flag_named in err["M"] + err.get("D", "") + err.get("H", ""), err
        still_open = [c for i, c in enumerate(clients) if i not in outcome]
        assert still_open, "every stalled session was closed; only the one over the bound may be"
        assert len(still_open) * body <= limit, (
            f"{len(still_open)} sessions hold {body} bytes each, over the {limit} byte bound")
        grown = proc_rss_kb(p.proc.pid) - base_kb
        if not SANITIZED:  # ASan keeps freed buffers resident in its quarantine
            assert grown < (limit + 16 * MB) // 1024, f"proxy RSS grew by {grown} kB"
        with p.raw() as fresh:
            assert rows(fresh.query("select 1")) == [("1",)]
        for c in still_open:
            assert answered(c) is None, "a session under the bound was answered or closed"
    finally:
        for c in clients:
            c.close()


def test_max_client_memory_refuses_the_session_over_the_bound(start_proxy):
    p = start_proxy("--max-client-memory", "64MB", "--max-message-size", "64MB")
    warm(p)
    base = Usage(p.proc.pid)
    check_bounded(p, base.rss_kb, n=4, declared=40 * MB, body=30 * MB, limit=64 << 20,
                  flag_named="--max-client-memory")
    wait_usage_back(p.proc.pid, base, rss_margin_kb=4096,
                    what="after the stalled sessions closed")


def test_default_bound_on_buffered_client_messages(start_proxy):
    """Without the option: 256MB for all sessions together; five sessions each stalled in a
    60 MB Query (under the default 64MB --max-message-size) would hold 275 MB."""
    p = start_proxy()
    warm(p)
    base = Usage(p.proc.pid)
    check_bounded(p, base.rss_kb, n=5, declared=60 * MB, body=55 * MB, limit=256 << 20,
                  flag_named="--max-client-memory")
    wait_usage_back(p.proc.pid, base, rss_margin_kb=4096,
                    what="after the stalled sessions closed")


def test_max_client_memory_is_an_option():
    out = subprocess.run([BINARY, "--help"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True, timeout=BOUND).stdout
    line = [ln for ln in out.splitlines() if "--max-client-memory" in ln]
    assert line, f"--max-client-memory missing from --help:\n{out}"
    assert "256MB" in line[0], line[0]
