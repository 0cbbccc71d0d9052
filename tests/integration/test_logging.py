"""Logs on stderr: JSON and text formats, levels, and what a hostile client name can do."""
import json
import re
import signal

from pgwp import RawClient, errors, only_error, poll, proxy_only, rows

pytestmark = proxy_only

TEXT_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (error|warn |info |debug) "
                       r"(\[\d+\] )?[a-z_]+: ")


def traffic(p, user="postgres", app="logtest"):
    """A bit of everything: a session, a query, an error, a denial, a rejected connection."""
    with p.raw(user=user, application_name=app) as c:
        assert rows(c.query("select 1")) == [("1",)]
        assert errors(c.query("select 1/0"))
        assert only_error(c.query("drop table log_nothing"))["C"] == "42501"
        with p.raw() as second:
            with RawClient(p.host, p.port) as third:  # over --max-connections 2
                assert only_error(third.startup(user="x", database="y"))["C"] == "53300"
            second.query("select 2")


def stop(p):
    p.signal(signal.SIGTERM)
    assert p.wait() == 0


def json_events(text):
    out = []
    for line in text.splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            raise AssertionError(f"not a JSON line: {line!r}")
        assert isinstance(rec, dict), line
        assert {"time", "level", "event"} <= set(rec), line
        assert rec["level"] in ("error", "warn", "info", "debug"), line
        assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$", rec["time"]), line
        out.append(rec)
    return out


def test_json_log_lines(start_proxy):
    p = start_proxy("--log-format", "json", "--max-connections", "2", "--deny", "drop")
    traffic(p, app='we"ird\\app\ttab')
    stop(p)
    recs = json_events(p.log())
    events = [r["event"] for r in recs]
    for e in ("listening", "session_start", "statement_denied", "connection_rejected",
              "session_end", "shutdown_complete"):
        assert e in events, f"{e} not logged: {events}"
    start = [r for r in recs if r["event"] == "session_start"]
    # key=value words of a message are JSON fields; the client address is one of them
    assert any(r.get("application") == 'we"ird\\app\ttab' and r.get("client", "").startswith(
        "127.0.0.1:") for r in start), start


def test_text_log_lines(start_proxy):
    p = start_proxy("--max-connections", "2", "--deny", "drop")
    traffic(p)
    stop(p)
    lines = p.log().splitlines()
    assert lines
    for line in lines:
        assert TEXT_LINE.match(line), f"unexpected log line: {line!r}"
    assert any(" session_start: " in line for line in lines)


def test_client_names_cannot_forge_log_lines(start_proxy):
    """A user or application name with a newline must not start a line of its own."""
    p = start_proxy()
    forged = "evil\nFORGED 2024-01-01T00:00:00.000Z error fake_event: injected"
    with p.raw(user=forged, application_name=forged) as c:
        assert rows(c.query("select 1")) == [("1",)]
    stop(p)
    for line in p.log().splitlines():
        assert TEXT_LINE.match(line), f"forged or broken log line: {line!r}"


def test_log_level_warn_hides_info(start_proxy):
    p = start_proxy("--log-level", "warn", "--max-connections", "2", "--deny", "drop")
    traffic(p)
    poll(lambda: "connection_rejected" in p.log(), what="the rejected connection's warning")
    stop(p)
    text = p.log()
    assert "session_start" not in text and "statement_denied" not in text, text
    for line in text.splitlines():
        assert TEXT_LINE.match(line) and (" warn " in line or " error " in line), line


def test_reload_switches_the_log_format(start_proxy, tmp_path):
    path = str(tmp_path / "proxy.ini")
    with open(path, "w") as f:
        f.write("log_format = text\n")
    p = start_proxy("--config", path)
    with p.raw() as c:
        c.query("select 1")
    poll(lambda: " session_end: " in p.log(), what="the first session's end in the log")
    before = len(p.log().splitlines())
    with open(path, "w") as f:
        f.write("log_format = json\n")
    p.signal(signal.SIGHUP)
    poll(lambda: '"event":"reloaded"' in p.log(), what="a JSON 'reloaded' event")
    with p.raw() as c:
        c.query("select 1")
    stop(p)
    lines = p.log().splitlines()
    assert all(TEXT_LINE.match(line) for line in lines[:before]), lines[:before]
    json_events("\n".join(lines[before:]))
