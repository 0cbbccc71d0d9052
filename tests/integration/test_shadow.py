"""Shadow rules (`--deny shadow:KIND`, `--allow shadow:KIND`, also in the config file and in
[user:NAME] profiles) and `--on-limit warn`: the statement runs as it would directly, and the
audit (`would_deny`, `would_limit`), the log and the guardrail counter (mode="shadow") record
what enforcing would have done."""

import pytest

from pgwp import (startup_refused, audit_lines, both, errors, free_port, log_events,
                  metric, only_error, poll, port_listening, proxy_only, recreate, rows, scrape,
                  table_rows, tags)

pytestmark = proxy_only

V = "pgwire_proxy_guardrail_violations_total"
EXT = ("--extended-protocol", "allow")


def observed(start_proxy, tmp_path, *flags):
    """A proxy with an audit log and a metrics port: (proxy, audit path)."""
    audit = str(tmp_path / "audit.jsonl")
    mport = free_port()
    p = start_proxy("--audit-log", audit, "--metrics-listen", f"127.0.0.1:{mport}", *flags)
    p.mport = mport
    # the metrics port opens after the client port the start waited for
    poll(lambda: port_listening(mport), what=f"the metrics port {mport}")
    return p, audit


def violations(p, rule, mode):
    return metric(scrape(p.mport), V, rule=rule, mode=mode)


def fill(dconn, name, n=3):
    recreate(dconn, name, "(id int)")
    with dconn.cursor() as cur:
        cur.execute(f"insert into {name} select generate_series(1, {n})")


def test_shadow_denied_truncate_runs_and_is_recorded(start_proxy, tmp_path, dconn):
    fill(dconn, "sh_trunc")
    p, audit = observed(start_proxy, tmp_path, "--deny", "shadow:truncate")
    shadow, enforced = violations(p, "deny:truncate", "shadow"), violations(p, "deny:truncate",
                                                                            "enforce")
    with p.raw(user="sh_user") as c:
        msgs = c.query("truncate sh_trunc")
        assert errors(msgs) == [] and tags(msgs) == ["TRUNCATE TABLE"], msgs
        assert rows(c.query("select 1")) == [("1",)]
    assert table_rows(dconn, "sh_trunc") == []
    recs = audit_lines(audit, 2)
    rec = recs[0]
    assert (rec["statement"], rec["outcome"], rec["rule"], rec["sqlstate"]) == \
        ("truncate sh_trunc", "would_deny", "deny:truncate", None), rec
    assert "shadow_rule" not in rec, rec
    assert (recs[1]["outcome"], recs[1]["rule"]) == ("ok", None), recs[1]
    assert violations(p, "deny:truncate", "shadow") == shadow + 1
    assert violations(p, "deny:truncate", "enforce") == enforced
    ev = poll(lambda: log_events(p, "statement_would_deny"), what="a statement_would_deny line")
    assert ev[0]["level"] == "info" and ev[0]["rule"] == "deny:truncate", ev
    assert ev[0]["client"].startswith("127.0.0.1:"), ev
    assert not log_events(p, "statement_denied")


def test_enforced_rule_beats_its_shadow(start_proxy, tmp_path, dconn):
    fill(dconn, "sh_both")
    p, audit = observed(start_proxy, tmp_path, "--deny", "truncate", "--deny", "shadow:truncate",
                        "--deny", "shadow:function:pg_sleep")
    shadow = violations(p, "deny:truncate", "shadow")
    with p.raw() as c:
        err = only_error(c.query("truncate sh_both"))
        assert (err["C"], err["D"]) == ("42501", "rule: deny:truncate"), err
        # a Query with a shadow-denied statement and an enforced one: nothing of it runs
        err = only_error(c.query("select pg_sleep(0); truncate sh_both"))
        assert err["C"] == "42501", err
    assert table_rows(dconn, "sh_both") == [(1,), (2,), (3,)]
    recs = audit_lines(audit, 2)
    assert [(r["outcome"], r["rule"]) for r in recs] == [("denied", "deny:truncate")] * 2, recs
    assert all("shadow_rule" not in r for r in recs), recs
    assert violations(p, "deny:truncate", "shadow") == shadow
    assert violations(p, "deny:function:pg_sleep", "shadow") == 0
    assert not log_events(p, "statement_would_deny")


def test_shadow_allow_list_is_its_own_list(start_proxy, tmp_path, dconn):
    recreate(dconn, "sh_allow", "(id int)")
    p, audit = observed(start_proxy, tmp_path, "--allow", "select", "--allow", "insert",
                        "--allow", "shadow:select")
    with p.raw() as c:
        assert rows(c.query("select 1")) == [("1",)]
        assert tags(c.query("insert into sh_allow values (1)")) == ["INSERT 0 1"]
        err = only_error(c.query("delete from sh_allow"))  # the enforced list still rules
        assert (err["C"], err["D"]) == ("42501", "rule: allow"), err
        # a statement outside the shadow list that fails upstream keeps its own outcome
        assert only_error(c.query("insert into sh_allow values ('x')"))["C"] == "22P02"
    assert table_rows(dconn, "sh_allow") == [(1,)]
    recs = audit_lines(audit, 4)
    got = [(r["outcome"], r["rule"], r.get("shadow_rule")) for r in recs]
    assert got == [("ok", None, None), ("would_deny", "allow", None), ("denied", "allow", None),
                   ("error", None, "allow")], recs
    assert violations(p, "allow", "shadow") == 2
    assert violations(p, "allow", "enforce") == 1


def test_shadow_only_policy_changes_nothing_a_client_sees(start_proxy, tmp_path, direct):
    """Rules that are all shadow refuse nothing: SQL held in a string runs (and would be
    denied), a syntax error is PostgreSQL's own."""
    p, audit = observed(start_proxy, tmp_path, "--deny", "shadow:drop")
    script = lambda c, proxied: (c.query("select query_to_xml('select 1 as x', true, true, '')")
                                 + c.query("selec 1"))
    got, want = both(p, direct, script)
    assert got == want
    recs = audit_lines(audit, 2)
    assert [(r["outcome"], r["rule"]) for r in recs] == [("would_deny", "sql-text"),
                                                         ("error", None)], recs
    assert recs[1]["sqlstate"] == "42601"


PROFILES = """
[pgwire-proxy]
deny = shadow:drop

[user:alice]
deny = shadow:truncate, shadow:function:pg_sleep
"""


def test_shadow_rules_in_a_user_profile(start_proxy, tmp_path, dconn):
    fill(dconn, "sh_alice")
    fill(dconn, "sh_bob")
    ini = tmp_path / "proxy.ini"
    ini.write_text(PROFILES)
    p, audit = observed(start_proxy, tmp_path, "--config", str(ini))
    with p.raw(user="alice") as a, p.raw(user="bob") as b:
        assert tags(a.query("truncate sh_alice")) == ["TRUNCATE TABLE"]
        assert tags(b.query("truncate sh_bob")) == ["TRUNCATE TABLE"]
        assert errors(a.query("select pg_sleep(0)")) == []
        assert errors(b.query("select pg_sleep(0)")) == []
        assert errors(a.query("drop table if exists sh_none_a")) == []  # alice's list replaced
        assert errors(b.query("drop table if exists sh_none_b")) == []
    assert table_rows(dconn, "sh_alice") == [] and table_rows(dconn, "sh_bob") == []
    recs = audit_lines(audit, 6)
    by = lambda user: [(r["outcome"], r["rule"]) for r in recs if r["user"] == user]
    assert by("alice") == [("would_deny", "deny:truncate"), ("would_deny", "deny:function:pg_sleep"),
                           ("ok", None)], recs
    assert by("bob") == [("ok", None), ("ok", None), ("would_deny", "deny:drop")], recs


def test_on_limit_warn_delivers_all_rows_as_directly(start_proxy, tmp_path, direct):
    p, audit = observed(start_proxy, tmp_path, "--max-rows", "10000", "--on-limit", "warn")
    before = violations(p, "max-rows", "shadow"), violations(p, "max-rows", "enforce")
    sql = "select g, repeat('x', 20) from generate_series(1, 20000) g"
    got, want = both(p, direct, lambda c, proxied: c.query(sql))
    assert got == want  # every message, byte for byte: no notice, nothing cut
    assert len(rows(got)) == 20000 and tags(got) == ["SELECT 20000"]
    rec = audit_lines(audit, 1)[0]
    assert (rec["outcome"], rec["rule"], rec["rows"], rec["sqlstate"]) == \
        ("would_limit", "max-rows", 20000, None), rec
    assert violations(p, "max-rows", "shadow") == before[0] + 1
    assert violations(p, "max-rows", "enforce") == before[1]
    ev = poll(lambda: log_events(p, "statement_would_limit"), what="a statement_would_limit line")
    assert (ev[0]["level"], ev[0]["rule"], ev[0]["limit"]) == ("info", "max-rows", "10000"), ev


def test_on_limit_warn_leaves_the_query_timeout_enforced(start_proxy, tmp_path):
    p, audit = observed(start_proxy, tmp_path, "--on-limit", "warn", "--max-bytes", "1kB",
                        "--query-timeout", "500ms")
    with p.raw() as c:
        assert len(rows(c.query("select repeat('y', 5000)"))) == 1  # past --max-bytes
        err = only_error(c.query("select pg_sleep(10)"))
        assert (err["C"], err["D"].split(" (")[0]) == ("57014", "rule: query-timeout"), err
    recs = audit_lines(audit, 2)
    assert [(r["outcome"], r["rule"]) for r in recs] == [("would_limit", "max-bytes"),
                                                         ("limit", "query-timeout")], recs


def test_extended_protocol_shadow_denied_statement_runs(start_proxy, tmp_path, dconn, direct):
    fill(dconn, "sh_ext", 5)
    p, audit = observed(start_proxy, tmp_path, *EXT, "--deny", "shadow:delete")
    shadow = violations(p, "deny:delete", "shadow")
    script = lambda c, proxied: c.ext_query("delete from sh_ext where id > $1::int",
                                            params=["3" if proxied else "4"])
    got, want = both(p, direct, script)
    assert tags(want) == ["DELETE 1"] and tags(got) == ["DELETE 1"], (got, want)
    assert errors(got) == []
    assert table_rows(dconn, "sh_ext") == [(1,), (2,), (3,)]
    rec = audit_lines(audit, 1)[0]
    assert (rec["protocol"], rec["outcome"], rec["rule"], rec["params"]) == \
        ("extended", "would_deny", "deny:delete", ["3"]), rec
    assert violations(p, "deny:delete", "shadow") == shadow + 1


@pytest.mark.parametrize("flags, needle", [
    (["--deny", "shadow:"], 'empty shadow rule "shadow:" in deny list'),
    (["--allow", "shadow:shadow:select"], "shadow: is given twice"),
    (["--deny", "shadow:trunc"], '"shadow:trunc": unknown statement kind "trunc" in deny list'),
    (["--permit", "shadow:do"], 'invalid permit rule "shadow:do"'),
    (["--on-limit", "shadow"], "--on-limit"),
])
def test_shadow_grammar_errors_exit_2(pg, flags, needle):
    stderr = startup_refused(pg, flags)
    assert needle in stderr, stderr
