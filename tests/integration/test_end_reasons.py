"""The session_end log line's reason names the side that failed: a failed write to the upstream is
`upstream_lost` (it was reported as `client_error`), a client that resets is `client_error` or
`client_eof`, an upstream that closes mid-result is `upstream_lost`."""
import socket
import threading

from pgwp import (BOUND, backends_detail, describe, errors, log_events, marker, poll,
                  proxy_only, rfq, rows, scalar)

pytestmark = proxy_only

HUGE = "select repeat('x', 1000) from generate_series(1, 2000000)"


def session_end(p, port):
    """The session_end record of the session whose client used local port `port`."""
    def find():
        ends = [r for r in log_events(p, "session_end")
                if r.get("client", "").endswith(f":{port}")]
        return ends and ends[0]
    return poll(find, what=f"the session_end line of the client on port {port}")


def blocked_on_proxy(dconn, app):
    return any(b[2] == "ClientWrite" for b in backends_detail(dconn, app))


def test_failed_write_to_the_upstream_is_upstream_lost(start_proxy, dconn):
    """The proxy cannot know the upstream is gone before it writes: the backend dies while
    blocked sending to the proxy (which stopped reading because its own client does not read),
    so neither its FATAL nor its close reach the proxy; then the client sends a 5 MB Query."""
    p = start_proxy("--log-format", "json")
    app = marker("endwrite")
    c = p.raw(application_name=app)
    with c:
        port = c.sock.getsockname()[1]
        pid = int(rows(c.query("select pg_backend_pid()"))[0][0])
        assert rfq(c.query("listen endr")) == "I"
        with dconn.cursor() as cur:  # ~16 MB of notifications the client does not read
            cur.execute("select count(pg_notify('endr', g || repeat('x', 7900))) "
                        "from generate_series(1, 2000) g")
        poll(lambda: blocked_on_proxy(dconn, app),
             what="the upstream to block writing notifications to the proxy")
        assert scalar(dconn, "select pg_terminate_backend(%s)", pid) is True
        poll(lambda: backends_detail(dconn, app) == [], what="the backend to exit")

        def send():
            try:
                c.query_send("select '" + "x" * 5_000_000 + "'")
            except OSError:
                pass  # the proxy closed first
        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        sender.join(2)  # the proxy takes the Query (or does not read it before ours drain)
        msgs, closed = c.read_all(timeout=BOUND)
        sender.join(BOUND)
    assert closed, "the session is still open"
    end = session_end(p, port)
    errs = errors(msgs)
    assert end["reason"] == "upstream_lost", (end["line"], describe(msgs[-1:]))
    assert errs, f"closed without an error ({len(msgs)} messages, the last: {msgs[-1:]})"
    assert (errs[-1]["S"], errs[-1]["C"]) == ("FATAL", "08006"), describe(msgs[-3:])


def test_client_reset_mid_result_is_the_client(start_proxy, dconn):
    """Kept behaviour."""
    p = start_proxy("--log-format", "json", "--max-rows", 0, "--max-bytes", 0)
    app = marker("endreset")
    c = p.raw(application_name=app)
    port = c.sock.getsockname()[1]
    c.query_send(HUGE)
    for _ in range(100):
        assert c.read_msg().type in "TD"
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")  # RST
    c.close()
    assert session_end(p, port)["reason"] in ("client_error", "client_eof")
    poll(lambda: backends_detail(dconn, app) == [], what="the upstream session to end")


def test_upstream_closed_mid_result_is_upstream_lost(start_proxy, dconn):
    """Kept behaviour."""
    p = start_proxy("--log-format", "json", "--max-rows", 0, "--max-bytes", 0)
    app = marker("endup")
    with p.raw(application_name=app) as c:
        port = c.sock.getsockname()[1]
        c.query_send(HUGE)
        poll(lambda: blocked_on_proxy(dconn, app), timeout=15,
             what="the upstream to block writing the result")
        pid = backends_detail(dconn, app)[0][0]
        assert scalar(dconn, "select pg_terminate_backend(%s)", pid) is True
        msgs = c.read_until_closed()
    assert any(m.type == "D" for m in msgs)
    assert not any(m.type in "CZ" for m in msgs), "the cut result looked complete"
    errs = errors(msgs)
    assert errs and errs[-1]["S"] == "FATAL" and errs[-1]["C"] in ("08006", "57P01"), \
        describe(msgs[-3:])
    assert session_end(p, port)["reason"] == "upstream_lost"
