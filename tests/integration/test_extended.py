"""Extended query protocol under the guardrails (`--extended-protocol allow`), cases 1-20 of
the design brief's table (shared/extended-protocol.md section 7): denials, statement and
portal lifetimes, budgets per portal run, truncation, aborts inside a pipeline and the
per-Execute timeout. Each raw sequence is replayed against PostgreSQL directly as well and must
give the same message types (pgwp.assert_same_types); a text the proxy refuses is replaced
there by a syntax error, which fails at the same message with the same effects, exactly what
the proxy's failing Parse does upstream."""
import pytest

from pgwp import (FLUSH, SYNC, both, errors, execute_message, only_error, proxy_only,
                  recreate, rfq, rows, shape, table_rows, tags, types)

pytestmark = proxy_only

EXT = ("--extended-protocol", "allow")
# What PostgreSQL itself is given in place of a text the proxy refuses: it fails at Parse.
TWIN = "drop tabel ext_denied_twin"


def denied(proxied, text):
    return text if proxied else TWIN


def assert_refused(err, code="42501", rule=None):
    assert (err["S"], err["C"]) == ("ERROR", code), err
    assert err.get("D", "").startswith("rule:"), err
    if rule:
        assert rule in err["D"], err


@pytest.fixture
def ext_t(dconn):
    def setup():
        recreate(dconn, "ext_t", "(id int)")
        recreate(dconn, "ext_drop", "(id int)")
    setup()
    return setup


# -- 1-9: statements, denials, lifetimes


def test_01_parse_bind_describe_execute_sync(start_proxy, direct):
    p = start_proxy(*EXT)

    def script(c, proxied):
        c.parse("select $1::int + 1", types=[23])
        c.bind(params=["41"])
        c.describe_portal()
        c.execute()
        c.sync()
        return c.read_until_rfq()
    got, want = both(p, direct, script)
    assert types(got) == "12TDCZ", got
    assert rows(got) == [("42",)] and tags(got) == ["SELECT 1"] and rfq(got) == "I"


def _insert_then_denied(c, proxied):
    c.parse("insert into ext_t values (1)")
    c.bind()
    c.execute()
    c.parse(denied(proxied, "drop table ext_drop"))
    c.bind()
    c.execute()
    c.sync()
    return c.read_until_rfq()


def test_02_denied_statement_rolls_back_the_segment(start_proxy, direct, dconn, ext_t):
    p = start_proxy(*EXT, "--deny", "drop")
    got, want = both(p, direct, _insert_then_denied, setup=ext_t)
    assert types(got) == "12CEZ", got
    assert_refused(only_error(got), rule="drop")
    assert rfq(got) == "I"
    assert table_rows(dconn, "ext_t") == []  # the insert before the denial rolled back
    assert table_rows(dconn, "ext_drop") == []  # and the table is still there


def test_03_denial_inside_begin_fails_the_block(start_proxy, direct, dconn, ext_t):
    p = start_proxy(*EXT, "--deny", "drop")

    def script(c, proxied):
        out = c.query("begin")
        out += _insert_then_denied(c, proxied)
        out += c.query("commit")
        return out
    got, want = both(p, direct, script, setup=ext_t)
    assert types(got) == "CZ12CEZCZ", got
    assert_refused(only_error(got))
    assert [chr(m.payload[0]) for m in got if m.type == "Z"] == ["T", "E", "I"]
    assert tags(got)[-1] == "ROLLBACK"
    assert table_rows(dconn, "ext_t") == []


def test_04_denied_named_statement_is_never_created(start_proxy, direct, ext_t):
    p = start_proxy(*EXT, "--deny", "drop")

    def script(c, proxied):
        c.parse(denied(proxied, "drop table ext_drop"), name="S_1")
        c.bind(stmt="S_1")
        c.execute()
        c.sync()
        first = c.read_until_rfq()
        c.describe_statement("S_1")
        c.sync()
        second = c.read_until_rfq()
        c.bind(stmt="S_1")
        c.execute()
        c.sync()
        return first + second + c.read_until_rfq()
    got, want = both(p, direct, script, setup=ext_t)
    assert types(got) == "EZEZEZ", got
    errs = errors(got)
    assert_refused(errs[0])
    assert [e["C"] for e in errs[1:]] == ["26000", "26000"], errs
    assert 'prepared statement "S_1" does not exist' in errs[1]["M"]


def test_05_denied_parse_drops_the_unnamed_statement(start_proxy, direct, ext_t):
    p = start_proxy(*EXT, "--deny", "drop")

    def script(c, proxied):
        c.parse("select 1")
        c.sync()
        out = c.read_until_rfq()
        c.parse(denied(proxied, "drop table ext_drop"))
        c.sync()
        out += c.read_until_rfq()
        c.bind()
        c.execute()
        c.sync()
        return out + c.read_until_rfq()
    got, want = both(p, direct, script, setup=ext_t)
    assert types(got) == "1ZEZEZ", got
    errs = errors(got)
    assert_refused(errs[0])
    assert errs[1]["C"] == "26000" and "unnamed prepared statement" in errs[1]["M"], errs


def test_06_denial_answered_at_flush_before_any_sync(start_proxy, direct, ext_t):
    p = start_proxy(*EXT, "--deny", "drop")

    def script(c, proxied):
        c.parse(denied(proxied, "drop table ext_drop"))
        c.flush()
        first = [c.read_msg()]  # the error comes now: the client sends no Sync before it
        c.sync()
        return first + c.read_until_rfq()
    got, want = both(p, direct, script, setup=ext_t)
    assert types(got) == "EZ", got
    assert_refused(got[0].fields)


def test_07_earlier_error_wins_over_a_later_denial(start_proxy, direct, ext_t):
    p = start_proxy(*EXT, "--deny", "drop")

    def script(c, proxied):
        c.parse("select 1/0")
        c.bind()
        c.execute()
        c.parse(denied(proxied, "drop table ext_drop"))
        c.bind()
        c.execute()
        c.sync()
        return c.read_until_rfq()
    got, want = both(p, direct, script, setup=ext_t)
    assert types(got) == "1EZ", got  # 1/0 is folded when the portal is planned: at Bind
    assert only_error(got)["C"] == "22012"


def test_07b_denial_after_the_error_was_seen_keeps_the_session_in_step(start_proxy, direct,
                                                                        ext_t):
    """The client reads the error (after a Flush) before it sends the rest of the segment:
    PostgreSQL ignores all of it until Sync. The requests the proxy forwarded after the error
    get no answer, and must not stay in its response FIFO."""
    p = start_proxy(*EXT, "--deny", "drop")

    def script(c, proxied):
        c.parse("select 1/0")
        c.bind()
        c.execute()
        c.flush()
        out = c.read_until("E")
        c.parse(denied(proxied, "drop table ext_drop"))
        c.bind()
        c.execute()
        c.parse("select 2")
        c.bind()
        c.execute()
        c.sync()
        out += c.read_until_rfq()
        out += c.ext_query("select 3")
        out += c.query("select 4")
        return out
    got, want = both(p, direct, script, setup=ext_t)
    assert types(got) == "1EZ12TDCZTDCZ", got
    assert only_error(got)["C"] == "22012"
    assert rows(got) == [("3",), ("4",)]


def test_08_multi_statement_parse(start_proxy, direct, dconn, ext_t):
    p = start_proxy(*EXT, "--deny", "drop")

    def script(c, proxied):
        out = c.ext_query("select 1; select 2")
        return out + c.ext_query(denied(proxied, "select 1; drop table ext_drop"))
    got, want = both(p, direct, script, setup=ext_t)
    assert types(got) == "EZEZ", got
    errs = errors(got)
    assert errs[0]["C"] == "42601", errs
    assert "cannot insert multiple commands into a prepared statement" in errs[0]["M"]
    assert_refused(errs[1])
    assert table_rows(dconn, "ext_drop") == []


def test_09_sql_prepare_shares_the_namespace(start_proxy, direct, dconn, ext_t):
    p = start_proxy(*EXT, "--deny", "delete")
    with dconn.cursor() as cur:
        cur.execute("insert into ext_t values (1), (2)")

    def script(c, proxied):
        out = c.ext_query(denied(proxied, "prepare p as delete from ext_t"))
        out += c.query("prepare p as select 1")
        c.bind(stmt="p")
        c.execute()
        c.sync()
        out += c.read_until_rfq()
        return out + c.query("execute p")
    got, want = both(p, direct, script)
    assert types(got) == "EZCZ2DCZTDCZ", got
    assert_refused(errors(got)[0], rule="delete")
    assert rows(got) == [("1",), ("1",)]
    assert table_rows(dconn, "ext_t") == [(1,), (2,)]


def test_10_sql_execute_of_a_protocol_statement_is_budgeted(start_proxy, direct):
    p = start_proxy(*EXT)

    def script(c, proxied):
        c.parse("select g from generate_series(1, 20000) g", name="S_1")
        c.sync()
        return c.read_until_rfq() + c.query('execute "S_1"')
    got, want = both(p, direct, script)
    assert shape(got) == "1ZTDEZ", shape(got)
    assert_refused(only_error(got), code="54000", rule="max-rows")
    assert len(rows(got)) <= 10000 and len(rows(want)) == 20000


# 11 (a reload between Parse and Bind) is in test_extended_policy.py


def test_12_read_only_refuses_writes_at_parse(start_proxy, direct, dconn, ext_t):
    p = start_proxy(*EXT, "--read-only")
    with dconn.cursor() as cur:
        cur.execute("insert into ext_t values (1)")

    def script(c, proxied):
        out = c.ext_query(denied(proxied, "insert into ext_t values (2)"))
        out += c.ext_query(denied(proxied, "select id from ext_t for update"))
        return out + c.ext_query("select id from ext_t")
    got, want = both(p, direct, script)
    assert types(got) == "EZEZ12TDCZ", got
    for e in errors(got):
        assert_refused(e, code="25006", rule="read-only")
    assert rows(got) == [("1",)]
    assert table_rows(dconn, "ext_t") == [(1,)]


def test_13_set_config_with_bound_values(start_proxy, direct):
    """Values stay invisible to the policy: set_config($1, $2, ...) is refused as a class under
    any policy; without one it runs. standard_conforming_strings may go off (by SET): a text
    with a backslash is decided under both readings, so the hidden DROP is still refused."""
    p = start_proxy(*EXT, "--deny", "drop")
    with p.raw() as c:
        got = c.ext_query("select set_config($1, $2, false)",
                          params=["application_name", "x"])
        assert types(got) == "EZ", got
        assert_refused(only_error(got))
        # a text whose backslash would hide a DROP under standard_conforming_strings=off
        got = c.ext_query("select 'a\\''; drop table ext_drop; --'")
        assert types(got) == "EZ", got
        assert_refused(only_error(got), rule="drop")
        assert rows(c.ext_query("select 'a\\b'")) == [("a\\b",)]
    free = start_proxy(*EXT)
    with free.raw() as c:
        got = c.ext_query("select set_config($1, $2, false)", params=["application_name", "x"])
        # application_name is reported: PostgreSQL sends its ParameterStatus before Z
        assert (types(got), rows(got), rfq(got)) == ("12TDCSZ", [("x",)], "I"), got
    with p.raw() as c:
        got = c.query("set standard_conforming_strings = off")
        assert tags(got) == ["SET"] and rfq(got) == "I", got
        got = c.ext_query("select 'a\\''; drop table ext_drop; --'")
        assert types(got) == "EZ", got
        assert_refused(only_error(got), rule="drop")
        assert rows(c.ext_query("select 1")) == [("1",)]


# -- 14-16: budgets per portal run


def test_14_cursor_fetches_share_one_budget(start_proxy, direct):
    p = start_proxy(*EXT)

    def script(c, proxied):
        out = c.query("begin")
        c.parse("select g from generate_series(1, 20000) g")
        c.bind(portal="C_1")
        for _ in range(11):
            c.execute("C_1", 1000)
            c.sync()
            out += c.read_until_rfq()
        return out
    got, want = both(p, direct, script)
    assert types(got).count("s") == 10, types(got)
    assert_refused(only_error(got), code="54000", rule="max-rows")
    assert types(got).endswith("EZ") and rfq(got) == "E"
    assert len(rows(got)) == 10000 and len(rows(want)) == 11000


def test_15_two_portals_under_the_limit_each(start_proxy, direct):
    p = start_proxy(*EXT)

    def script(c, proxied):
        c.parse("select g from generate_series(1, 6000) g", name="s6k")
        c.bind(portal="p1", stmt="s6k")
        c.bind(portal="p2", stmt="s6k")
        c.execute("p1")
        c.execute("p2")
        c.sync()
        return c.read_until_rfq()
    got, want = both(p, direct, script)
    assert shape(got) == "122DCDCZ", shape(got)
    assert len(rows(got)) == 12000 and tags(got) == ["SELECT 6000"] * 2


@pytest.mark.parametrize("max_rows", [0, 15000])
def test_16_truncate_mode(start_proxy, direct, max_rows):
    p = start_proxy(*EXT, "--on-limit", "truncate")

    def script(c, proxied):
        c.parse("select g from generate_series(1, 20000) g")
        c.bind()
        c.execute(max_rows=max_rows)
        c.sync()
        return c.read_until_rfq()
    got, want = both(p, direct, script, same=max_rows == 0)
    # a suspended portal's PortalSuspended becomes the truncation's CommandComplete as well
    assert shape(want) == ("12DCZ" if max_rows == 0 else "12DsZ"), shape(want)
    assert types(got) == "12" + "D" * 10000 + "NCZ", types(got)[-5:]
    warn = [m.fields for m in got if m.type == "N"]
    assert warn[0]["S"] == "WARNING" and warn[0]["C"] == "01000", warn
    assert tags(got) == ["SELECT 10000"] and rfq(got) == "I"


# -- 17-20: aborts inside a pipeline, timeouts


BIG = "select g from generate_series(1, 20000) g"


def test_17_limit_tripped_before_sync_rolls_back_what_follows(start_proxy, direct, dconn,
                                                              ext_t):
    p = start_proxy(*EXT)

    def script(c, proxied):
        c.parse(BIG)
        c.bind()
        c.execute()
        c.flush()
        out = c.read_until("EC")  # the proxy's 54000, PostgreSQL's CommandComplete
        c.parse("insert into ext_t values (1)")
        c.bind()
        c.execute()
        c.sync()
        return out + c.read_until_rfq()
    got, want = both(p, direct, script, setup=ext_t)
    assert_refused(only_error(got), code="54000", rule="max-rows")
    assert shape(got) == "12DEZ" and rfq(got) == "I", shape(got)
    assert table_rows(dconn, "ext_t") == []


def test_17b_trip_then_a_client_slow_to_sync_keeps_its_session(start_proxy, direct):
    """After the tripped run's terminator the statement is over upstream: a client that reads
    the 54000 and sends its Sync only later (pg 8 `rows`, pg-cursor) is not ended by the
    cancel grace, which is for a statement still running. PostgreSQL's own error at the same
    row (a division by zero there) is what the direct replay gets."""
    p = start_proxy(*EXT, "--max-rows", "100", "--cancel-grace", "1s")

    def script(c, proxied):
        c.parse("select g from generate_series(1, 1000) g" if proxied else
                "select 1 / (g - 101) from generate_series(1, 1000) g")
        c.bind()
        c.execute(max_rows=50)
        c.flush()
        out = c.read_until("sE")
        c.execute(max_rows=50)
        c.flush()
        out += c.read_until("sE")
        c.execute(max_rows=50)
        c.flush()
        out += c.read_until("sE")
        more, closed = c.read_all(timeout=3)  # three cancel graces: nothing may come
        assert (more, closed) == ([], False), more
        c.sync()
        return out + c.read_until_rfq() + c.query("select 'still here'")
    got, want = both(p, direct, script)
    assert shape(got) == "12DsDsEZTDCZ", shape(got)
    assert_refused(only_error(got), code="54000", rule="max-rows")
    assert rows(got)[-1] == ("still here",) and len(rows(got)) == 101


def test_18_limit_tripped_after_an_insert_rolls_it_back(start_proxy, direct, dconn, ext_t):
    p = start_proxy(*EXT)

    def script(c, proxied):
        c.parse("insert into ext_t values (1)")
        c.bind()
        c.execute()
        c.parse(BIG)
        c.bind()
        c.execute()
        c.flush()
        out = c.read_until("E" if proxied else "C")
        if not proxied:
            out += c.read_until("C")
        c.sync()
        return out + c.read_until_rfq()
    got, want = both(p, direct, script, setup=ext_t)
    assert_refused(only_error(got), code="54000")
    assert shape(got) == "12C12DEZ", shape(got)
    assert rfq(got) == "I"
    assert table_rows(dconn, "ext_t") == []


def test_19_query_timeout_per_execute(start_proxy, direct, dconn, ext_t):
    p = start_proxy(*EXT, "--query-timeout", "1s")

    def script(c, proxied):
        c.parse("select pg_sleep(5)" if proxied else "select pg_sleep(0)")
        c.bind()
        c.execute()
        c.parse("insert into ext_t values (1)")
        c.bind()
        c.execute()
        c.sync()
        return c.read_until_rfq()
    got, want = both(p, direct, script, setup=ext_t)
    err = only_error(got)
    assert err["C"] == "57014", err
    assert err.get("D", "").startswith("rule: query-timeout"), err  # the proxy's, not the backstop's
    assert types(got) == "12EZ" and rfq(got) == "I", got
    assert table_rows(dconn, "ext_t") == []


def test_20_idle_open_segment_is_not_a_running_statement(start_proxy, direct):
    p = start_proxy(*EXT, "--query-timeout", "1s")
    with p.raw() as c:
        c.parse("select 1")
        c.bind()
        c.execute()
        c.flush()
        got = c.read_until("C")
        more, closed = c.read_all(timeout=3)  # idle for three timeouts: nothing may come
        assert (more, closed) == ([], False), more
        c.sync()
        got += c.read_until_rfq()
        assert types(got) == "12DCZ" and not errors(got), got
        assert rows(c.query("select 'next'")) == [("next",)]


def test_pipelined_execute_then_flush_frames(start_proxy):
    """An Execute followed by another message gets a Flush of the proxy's after it; the
    answers are the same as for a client that flushes itself."""
    p = start_proxy(*EXT)
    with p.raw() as c:
        c.parse("select 5")
        c.bind()
        c.send_raw(execute_message() + FLUSH + SYNC)
        assert types(c.read_until_rfq()) == "12DCZ"
