"""Start-up, protocol negotiation, cancel and odd messages, checked at the byte level."""
import struct
import uuid

import pytest

from pgwp import (CANCEL_REQUEST, GSSENC_REQUEST, PROTOCOL_3_0, SSL_REQUEST, RawClient,
                  describe, only_error, parameter_status, poll, proxy_only, rfq, rows, scalar)


def test_startup_sequence_and_parameters_same_as_direct(proxy, direct):
    got = []
    for target in (proxy, direct):
        with RawClient(target.host, target.port) as c:
            msgs = c.startup(user=target.user, database="postgres")
            got.append(msgs)
    via, ref = got
    types = [m.type for m in via]
    assert types[0] == "R" and via[0].payload == b"\0\0\0\0"  # AuthenticationOk
    assert types[-2:] == ["K", "Z"] and rfq(via) == "I"
    assert set(types[1:-2]) == {"S"}
    # application_name differs by design: upstream it names the client plus user and address
    pv, pr = parameter_status(via), parameter_status(ref)
    pv.pop("application_name", None)
    pr.pop("application_name", None)
    assert pv == pr
    assert {"server_version", "server_encoding", "client_encoding", "DateStyle", "TimeZone",
            "integer_datetimes", "standard_conforming_strings", "is_superuser",
            "session_authorization", "IntervalStyle"} <= set(pv)


def test_ssl_request_refused_then_plain_startup(proxy, direct):
    for target in (proxy, direct):
        with RawClient(target.host, target.port) as c:
            c.send_request_code(SSL_REQUEST)
            assert c.read_byte() == b"N"
            msgs = c.startup(user=target.user, database="postgres")
            assert rfq(msgs) == "I"
            assert rows(c.query("select 1")) == [("1",)]


@proxy_only
def test_gssenc_request_refused_then_ssl_request_then_startup(proxy):
    # PostgreSQL built with GSSAPI answers 'G' here; the proxy has no GSS and says 'N'.
    with RawClient(proxy.host, proxy.port) as c:
        c.send_request_code(GSSENC_REQUEST)
        assert c.read_byte() == b"N"
        c.send_request_code(SSL_REQUEST)
        assert c.read_byte() == b"N"
        assert rfq(c.startup(user="postgres", database="postgres")) == "I"


@pytest.mark.parametrize("version, options", [
    (PROTOCOL_3_0 + 2, {}),  # libpq 18 asks for 3.2
    (PROTOCOL_3_0 + 9999, {"_pq_.test_protocol_negotiation": ""}),  # libpq 19's "grease"
    (PROTOCOL_3_0, {"_pq_.pgwp_unknown": "1", "_pq_.other": "x"}),
])
def test_negotiate_protocol_version(proxy, direct, version, options):
    got = []
    for target in (proxy, direct):
        with RawClient(target.host, target.port) as c:
            msgs = c.startup(version, user=target.user, database="postgres", **options)
            assert msgs[0].type == "v", msgs
            assert rfq(msgs) == "I"
            assert rows(c.query("select 'after negotiation'")) == [("after negotiation",)]
            got.append(msgs[0])
    newest, count = struct.unpack("!II", got[0].payload[:8])
    names = [n.decode() for n in got[0].payload[8:].split(b"\0") if n]
    # PostgreSQL (and libpq) put the whole version number here, 3.0 = 196608
    assert newest == PROTOCOL_3_0 and count == len(options) and names == list(options)
    assert got[0] == got[1]


def test_unsupported_major_version_is_fatal(proxy):
    with RawClient(proxy.host, proxy.port) as c:
        msgs = c.startup(4 << 16, user=proxy.user, database="postgres")
        err = only_error(msgs)
        assert err["S"] == "FATAL" and err["C"] in ("08P01", "0A000")
        assert c.read_until_closed() == []


def test_cancel_request(proxy, dconn):
    marker = uuid.uuid4().hex
    sql = f"select pg_sleep(60) -- {marker}"
    with proxy.raw() as c:
        pid, key = c.backend_key
        c.query_send(sql)
        active = f"select count(*) from pg_stat_activity where state = 'active' and query = '{sql}'"
        poll(lambda: scalar(dconn, active) == 1, what="the query to run upstream")
        # a wrong key is ignored silently: no answer, and the statement keeps running
        with RawClient(proxy.host, proxy.port) as bad:
            bad.send_request_code(CANCEL_REQUEST, struct.pack("!II", pid, key ^ 1))
            assert bad.read_until_closed() == []
        assert scalar(dconn, active) == 1
        with RawClient(proxy.host, proxy.port) as good:
            good.send_request_code(CANCEL_REQUEST, struct.pack("!II", pid, key))
            assert good.read_until_closed() == []
        msgs = c.read_until_rfq()
        err = only_error(msgs)
        assert (err["C"], err["M"]) == ("57014", "canceling statement due to user request")
        assert rfq(msgs) == "I"
        assert rows(c.query("select 'alive'")) == [("alive",)]


def test_function_call_message(proxy):
    with proxy.raw() as c:
        # FunctionCall: pg_backend_pid() (oid 2026), no arguments, text result
        c.send("F", struct.pack("!IHHH", 2026, 0, 0, 0))
        msgs = c.read_until_rfq()
        if not proxy.is_proxy:
            assert [m.type for m in msgs] == ["V", "Z"]  # PostgreSQL runs it
            return
        err = only_error(msgs)
        assert err["S"] == "ERROR" and err["C"] in ("0A000", "08P01"), err
        assert rfq(msgs) == "I"
        assert rows(c.query("select 'usable'")) == [("usable",)]


def test_unknown_message_type_same_as_direct(proxy, direct):
    got = []
    for target in (proxy, direct):
        with target.raw() as c:
            c.send("y", b"junk")
            msgs = c.read_until_closed()
            err = only_error(msgs)
            got.append({k: err[k] for k in "SVCM"})  # F/L/R name PostgreSQL's source
    assert got[0] == got[1]
    assert got[1] == {"S": "FATAL", "V": "FATAL", "C": "08P01",
                      "M": "invalid frontend message type 121"}


def test_terminate_closes_upstream(proxy, dconn):
    marker = "term-" + uuid.uuid4().hex[:12]
    count = ("select count(*) from pg_stat_activity "
             f"where application_name like '%{marker}%'")
    c = proxy.raw(application_name=marker)
    assert scalar(dconn, count) == 1
    c.terminate()
    assert c.read_until_closed() == []
    c.close()
    poll(lambda: scalar(dconn, count) == 0, what="the upstream backend to go away")


def test_client_eof_closes_upstream(proxy, dconn):
    marker = "eof-" + uuid.uuid4().hex[:12]
    count = ("select count(*) from pg_stat_activity "
             f"where application_name like '%{marker}%'")
    c = proxy.raw(application_name=marker)
    assert scalar(dconn, count) == 1
    c.close()
    poll(lambda: scalar(dconn, count) == 0, what="the upstream backend to go away")


@proxy_only
def test_message_larger_than_max_message_size(start_proxy):
    proxy = start_proxy("--max-message-size", "1kB")
    with proxy.raw() as other, proxy.raw() as c:
        assert rows(c.query("select '" + "x" * 900 + "' = '' as ok")) == [("f",)]  # under 1 kB
        c.query_send("select '" + "x" * 2000 + "'")
        msgs = c.read_until_closed()
        err = only_error(msgs)
        assert (err["S"], err["C"]) == ("FATAL", "08P01"), describe(msgs)
        assert "max-message-size" in err["M"]
        assert rows(other.query("select 1")) == [("1",)]  # other sessions unaffected
