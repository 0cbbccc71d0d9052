"""The audit trail: one JSON line per statement, literal redaction, and the upstream's
application_name naming the real client."""
import uuid


from pgwp import marker
from pgwp import audit_lines, errors, only_error, proxy_only, rows

pytestmark = proxy_only

FIELDS = {"session", "client", "user", "database", "application", "statement", "duration_ms",
          "rows", "bytes", "outcome"}



def test_one_json_line_per_statement(start_proxy, tmp_path):
    path = str(tmp_path / "audit.jsonl")
    p = start_proxy("--audit-log", path, "--deny", "drop", "--max-rows", "5")
    app = marker("auditapp")
    statements = [
        "select 1 as one",
        "select 1/0",
        "drop table audit_nothing",
        "select 'two', 2",
        "select generate_series(1, 10)",  # last: its cancel may outlive it (a known race)
    ]
    with p.raw(user="audit_carol", application_name=app) as c:
        results = [c.query(sql) for sql in statements]
        with p.raw(user="audit_dave", application_name=app) as other:
            other.query("select 3")
    assert [errors(r) != [] for r in results] == [False, True, True, False, True]
    recs = audit_lines(path, len(statements) + 1)
    assert len(recs) == len(statements) + 1, recs
    mine = [r for r in recs if r["user"] == "audit_carol"]
    theirs = [r for r in recs if r["user"] == "audit_dave"]
    assert [r["statement"] for r in mine] == statements
    assert len(theirs) == 1 and theirs[0]["statement"] == "select 3"
    for r in recs:
        assert FIELDS <= set(r), f"missing {FIELDS - set(r)} in {r}"
        assert r["client"].startswith("127.0.0.1"), r
        assert r["database"] == "postgres" and r["application"] == app, r
        assert isinstance(r["duration_ms"], (int, float)) and r["duration_ms"] >= 0, r
    assert len({r["session"] for r in mine}) == 1
    assert theirs[0]["session"] != mine[0]["session"]

    ok, err, denied, ok2, limited = mine
    assert (ok["outcome"], ok["rows"], ok.get("sqlstate"), ok.get("rule")) == ("ok", 1, None, None)
    assert ok["bytes"] > 0
    assert (err["outcome"], err["sqlstate"]) == ("error", "22012"), err
    assert (denied["outcome"], denied["sqlstate"], denied["rule"]) == \
        ("denied", "42501", "deny:drop"), denied
    assert denied["rows"] == 0
    assert (limited["outcome"], limited["sqlstate"], limited["rule"]) == \
        ("limit", "54000", "max-rows"), limited
    assert limited["rows"] <= 5
    assert (ok2["outcome"], ok2["rows"]) == ("ok", 1)


def test_redaction_replaces_literals(start_proxy, tmp_path):
    path = str(tmp_path / "audit.jsonl")
    p = start_proxy("--audit-log", path, "--audit-redact", "--deny", "drop")
    with p.raw() as c:
        assert rows(c.query("select 'secret-literal' as x, 4242")) == [("secret-literal", "4242")]
        only_error(c.query("select 'secret-in-error'::int"))
        only_error(c.query("drop table \"t\" -- secret-in-comment"))
        only_error(c.query("selec 'secret-in-syntax-error'"))
    recs = audit_lines(path, 4)
    with open(path) as f:
        text = f.read()
    for secret in ("secret-literal", "4242", "secret-in-error", "secret-in-syntax-error"):
        assert secret not in text, f"{secret!r} in the redacted audit log:\n{text}"
    assert "$1" in recs[0]["statement"] and "$2" in recs[0]["statement"], recs[0]
    assert recs[0]["statement"].lower().startswith("select"), recs[0]
    assert [r["outcome"] for r in recs] == ["ok", "error", "denied", "error"], recs


def test_audit_log_without_redaction_keeps_the_text(start_proxy, tmp_path):
    path = str(tmp_path / "audit.jsonl")
    p = start_proxy("--audit-log", path)
    sql = "select 'multi\nline \"quoted\" \\ text' as x"
    with p.raw() as c:
        assert errors(c.query(sql)) == []
    (rec,) = audit_lines(path, 1)
    assert rec["statement"] == sql


def _upstream_names(dconn, like):
    with dconn.cursor() as cur:
        cur.execute("select application_name, client_addr::text from pg_stat_activity "
                    "where application_name like %s", (f"%{like}%",))
        return cur.fetchall()


def test_upstream_application_name_carries_the_client(proxy, dconn):
    app = marker("psa")
    with proxy.raw(user="audit_erin", application_name=app) as c:
        local_port = c.sock.getsockname()[1]
        assert rows(c.query("select 1")) == [("1",)]
        (name, _addr), = _upstream_names(dconn, app)
    assert app in name, name
    assert f"audit_erin@127.0.0.1:{local_port}" in name, name
    assert len(name.encode()) <= 63, name


def test_upstream_application_name_is_truncated_keeping_the_client(proxy, dconn):
    tag = f"long{uuid.uuid4().hex[:6]}-"
    app = tag + "x" * 60
    with proxy.raw(user="audit_frank", application_name=app) as c:
        local_port = c.sock.getsockname()[1]
        assert rows(c.query("select 1")) == [("1",)]
        (name, _addr), = _upstream_names(dconn, tag)
    assert len(name.encode()) <= 63, name
    assert name.startswith(tag + "xxx"), name
    assert f"audit_frank@127.0.0.1:{local_port}" in name, name
