"""Every statement forwarded upstream has an audit record, with its outcome (`client_gone` when
the client left before the result) and what the upstream made of it (`upstream_status`:
committed, rolled_back, error or unknown; `upstream_sqlstate` when there was one).

The attack: a client that sends a Query and closes its socket at once got its INSERT committed
with no audit record (5 of 5)."""
import json
import os

from pgwp import (backends_detail, errors, marker, poll, proxy_only, recreate, table_rows,
                  wait_active)

pytestmark = proxy_only

STATUSES = ("committed", "rolled_back", "error", "unknown")


def records(path, app):
    """The complete audit lines of sessions named `app` (a line being written is skipped)."""
    if not os.path.exists(path):
        return []
    out = []
    with open(path) as f:
        for line in f.read().splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if rec.get("application") == app:
                out.append(rec)
    return out


def wait_records(path, app, n, what):
    """Polls until the audit log holds n records of sessions named `app`; returns them."""
    return poll(lambda: records(path, app)[n - 1:] and records(path, app),
                what=lambda: f"{n} audit records of {what}; have "
                             f"{[r['statement'] for r in records(path, app)]}")


def test_client_that_leaves_at_once_is_audited(start_proxy, dconn, tmp_path):
    recreate(dconn, "aud_t")
    path = str(tmp_path / "audit.jsonl")
    p = start_proxy("--audit-log", path)
    app = marker("audgone")
    sent = {f"insert into aud_t values ({i})": i for i in range(5)}
    for sql in sent:
        c = p.raw(application_name=app)
        c.query_send(sql)
        c.close()  # without reading the answer
    recs = wait_records(path, app, 5, "the inserts")
    assert sorted(r["statement"] for r in recs) == sorted(sent), recs
    poll(lambda: backends_detail(dconn, app) == [], what="the upstream sessions to end")
    present = {r[0] for r in table_rows(dconn, "aud_t")}
    for r in recs:
        i = sent[r["statement"]]
        assert r.get("upstream_status") in STATUSES, r
        assert r.get("outcome") in ("ok", "client_gone"), r
        assert (i in present) == (r["upstream_status"] == "committed"), (
            f"row {i} {'present' if i in present else 'absent'} but the record says {r}")


def test_statement_running_when_the_client_leaves_is_audited(start_proxy, dconn, tmp_path):
    path = str(tmp_path / "audit.jsonl")
    p = start_proxy("--audit-log", path)
    app = marker("audrun")
    c = p.raw(application_name=app)
    c.query_send("select pg_sleep(5)")
    wait_active(dconn, app)
    c.close()
    (rec,) = wait_records(path, app, 1, "the statement the client left running")
    assert rec["statement"] == "select pg_sleep(5)", rec
    assert rec.get("outcome") == "client_gone", rec
    assert rec.get("upstream_status") in STATUSES, rec


def test_upstream_status_of_ordinary_statements(start_proxy, dconn, tmp_path):
    recreate(dconn, "aud_t")
    path = str(tmp_path / "audit.jsonl")
    p = start_proxy("--audit-log", path)
    app = marker("audok")
    with p.raw(application_name=app) as c:
        assert errors(c.query("insert into aud_t values (1)")) == []
        assert errors(c.query("select 1/0"))[0]["C"] == "22012"
    ins, div = wait_records(path, app, 2, "an insert and a division by zero")
    assert (ins["outcome"], ins.get("upstream_status")) == ("ok", "committed"), ins
    assert (div["outcome"], div.get("upstream_status"), div.get("upstream_sqlstate")) == \
        ("error", "error", "22012"), div
