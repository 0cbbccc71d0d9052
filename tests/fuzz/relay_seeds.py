#!/usr/bin/python3
"""Writes the seed corpus of fuzz_relay (tests/fuzz/corpus/fuzz_relay/): realistic sessions in
the target's input format (see the comment at the top of fuzz_relay.c).

    /usr/bin/python3 tests/fuzz/relay_seeds.py
"""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "corpus", "fuzz_relay")

# flags (first knob byte)
READ_ONLY, SMALL_ROWS, SMALL_BYTES, TRUNCATE = 1, 2, 4, 8
CAP_4K, CAP_2K5 = 0x10, 0x20
NO_TIMEOUT = 0x80
# verdicts, two bits per policy call
ALLOW, DENY, SYNTAX, PENDING = 0, 1, 2, 3
# protocols (fourth knob byte)
EXT, COPY, COPY_VERDICT, SHADOW, WARN = 1, 2, 4, 8, 16


def msg(t, body=b""):
    return t + struct.pack(">I", len(body) + 4) + body


def cstr(s):
    return s.encode() + b"\0"


def query(sql):
    return msg(b"Q", cstr(sql))


def rowdesc():
    return msg(b"T", struct.pack(">H", 1) + cstr("c") + struct.pack(">IHIhiH", 0, 0, 25, -1, -1, 0))


def row(val=b"v"):
    return msg(b"D", struct.pack(">HI", 1, len(val)) + val)


def complete(tag):
    return msg(b"C", cstr(tag))


def ready(st):
    return msg(b"Z", st.encode())


def report(t, sev, code, text):
    return msg(t, b"S" + cstr(sev) + b"V" + cstr(sev) + b"C" + cstr(code) + b"M" + cstr(text) + b"\0")


def param(name, value):
    return msg(b"S", cstr(name) + cstr(value))


def notify(channel, payload):
    return msg(b"A", struct.pack(">I", 42) + cstr(channel) + cstr(payload))


def select(n):
    return rowdesc() + row() * n + complete("SELECT %d" % n)


def client(data):
    out = b""
    for i in range(0, len(data), 63):
        part = data[i:i + 63]
        out += bytes([len(part)]) + part
    return out


def upstream(data):
    out = b""
    for i in range(0, len(data), 16383):
        part = data[i:i + 16383]
        out += bytes([0x80 | len(part) >> 8, len(part) & 0xFF]) + part
    return out


def event(n):
    return bytes([0xC0 | n])


def seed(flags, limits, votes, *steps, protocols=0):
    return bytes([flags, limits, votes, protocols]) + b"".join(steps)


def parse(sql, name=""):
    return msg(b"P", cstr(name) + cstr(sql) + struct.pack(">H", 0))


def bind(portal="", stmt=""):
    return msg(b"B", cstr(portal) + cstr(stmt) + struct.pack(">HHH", 0, 0, 0))


def execute(portal="", max_rows=0):
    return msg(b"E", cstr(portal) + struct.pack(">I", max_rows))


def describe(kind, name=""):
    return msg(b"D", kind + cstr(name))


def pbes(sql):
    return parse(sql) + bind() + execute() + msg(b"S")


def copy_response(t):
    return msg(t, b"\0\0\1\0\0")


def verdicts(*vs):
    return sum(v << (2 * i) for i, v in enumerate(vs))


SEEDS = {
    "select": seed(NO_TIMEOUT, 0, 0, client(query("SELECT 1")), upstream(select(1) + ready("I"))),
    "pipelined_sync": seed(NO_TIMEOUT, 0, 0, client(query("SELECT 1") + msg(b"S")),
                           upstream(select(2) + ready("I")), event(7)),
    "denied": seed(NO_TIMEOUT, 0, verdicts(DENY), client(query("DROP TABLE t"))),
    "syntax": seed(NO_TIMEOUT, 0, verdicts(SYNTAX), client(query("SELEC 1"))),
    "denied_in_block": seed(NO_TIMEOUT, 0, verdicts(ALLOW, DENY), client(query("BEGIN")),
                            upstream(complete("BEGIN") + ready("T")), client(query("DROP TABLE t")),
                            upstream(report(b"E", "ERROR", "P0001", "aborted") + ready("E"))),
    "row_limit": seed(SMALL_ROWS | NO_TIMEOUT, 1, 0, client(query("SELECT c FROM t")),
                      upstream(rowdesc() + row() * 4),
                      upstream(report(b"E", "ERROR", "57014", "canceling") + ready("I"))),
    "shadow_denied": seed(NO_TIMEOUT, 0, verdicts(ALLOW, PENDING), client(query("TRUNCATE t")),
                          upstream(complete("TRUNCATE TABLE") + ready("I")),
                          client(query("TRUNCATE t")), event(1 | 8),
                          upstream(complete("TRUNCATE TABLE") + ready("I")), protocols=SHADOW),
    "warn_rows": seed(SMALL_ROWS | SMALL_BYTES | NO_TIMEOUT, 1 | 2 << 3, 0,
                      client(query("SELECT c FROM t")),
                      upstream(rowdesc() + row() * 6 + complete("SELECT 6") + ready("I")),
                      client(query("SELECT 1")), upstream(select(1) + ready("I")),
                      protocols=WARN),
    "truncate": seed(SMALL_ROWS | TRUNCATE | NO_TIMEOUT, 1, 0, client(query("SELECT 1; SELECT 2")),
                     upstream(select(3) + notify("ch", "x") + select(3) + ready("I"))),
    "byte_limit": seed(SMALL_BYTES | NO_TIMEOUT, 2 << 3, 0, client(query("SELECT c FROM t")),
                       upstream(rowdesc() + report(b"N", "NOTICE", "00000", "hello") + row() * 3),
                       upstream(report(b"E", "ERROR", "57014", "canceling") + ready("I"))),
    "committed_write": seed(SMALL_ROWS | NO_TIMEOUT, 1, 0, client(query("DELETE FROM t RETURNING c")),
                            upstream(rowdesc() + row() * 3 + complete("DELETE 3") + ready("I"))),
    "timeout": seed(0, 0, 0, client(query("SELECT pg_sleep(10)")), event(0),
                    upstream(report(b"E", "ERROR", "57014", "canceling") + ready("I"))),
    "copy_in": seed(NO_TIMEOUT, 0, 0, client(query("COPY t FROM STDIN")),
                    upstream(msg(b"G", b"\0\0\1\0\0")),
                    upstream(report(b"E", "ERROR", "57014", "COPY failed") + ready("I"))),
    "copy_out": seed(NO_TIMEOUT, 0, 0, client(query("COPY t TO STDOUT")),
                     upstream(msg(b"H", b"\0\0\1\0\0") + msg(b"d", b"1\n") + msg(b"c")),
                     upstream(complete("COPY 1") + ready("I"))),
    "extended": seed(NO_TIMEOUT, 0, 0,
                     client(msg(b"P", b"\0SELECT 1\0\0\0") + msg(b"B", b"\0" * 10) + msg(b"E", b"\0" * 5)
                            + msg(b"S") + msg(b"F", b"\0\0\0\1" + b"\0" * 6) + msg(b"X"))),
    "read_only_reload": seed(NO_TIMEOUT, 0, 0, event(3), client(query("SELECT 1")),
                             upstream(param("default_transaction_read_only", "on") + complete("SET")
                                      + ready("I")), event(7), upstream(select(1) + ready("I"))),
    "read_only_lost": seed(READ_ONLY | NO_TIMEOUT, 0, 0, client(query("SET x = 1")),
                           upstream(param("default_transaction_read_only", "off") + ready("I"))),
    "unsafe_encoding": seed(NO_TIMEOUT, 0, 0, upstream(param("client_encoding", "SJIS"))),
    "pending": seed(NO_TIMEOUT, 0, verdicts(PENDING), client(query("SELECT 1")), event(1 | 8),
                    upstream(select(1) + ready("I"))),
    "large_row": seed(CAP_4K | NO_TIMEOUT, 0, 0, client(query("SELECT c FROM t")),
                      upstream(rowdesc() + row(b"r" * 10000) + complete("SELECT 1") + ready("I"))),
    "large_error": seed(CAP_2K5 | SMALL_BYTES | NO_TIMEOUT, 31 << 3, 0, client(query("SELECT c FROM t")),
                        upstream(rowdesc() + report(b"E", "ERROR", "22P02", "m" * 6000) + ready("I"))),
    "idle_notify": seed(SMALL_BYTES | NO_TIMEOUT, 0, 0, upstream(notify("ch", "payload")
                                                                + report(b"N", "NOTICE", "00000", "n"))),
    "read_only_in_block": seed(NO_TIMEOUT, 0, 0, client(query("BEGIN")),
                               upstream(complete("BEGIN") + ready("T")), event(3),
                               client(query("UPDATE t SET c = 1")),
                               upstream(report(b"E", "ERROR", "P0001", "aborted") + ready("E"))),
    "extended_in_block": seed(NO_TIMEOUT, 0, 0, client(query("BEGIN")),
                              upstream(complete("BEGIN") + ready("T")),
                              client(msg(b"P", b"\0SELECT 1\0\0\0") + msg(b"S")),
                              upstream(report(b"E", "ERROR", "P0001", "aborted") + ready("E"))),
    "limit_later_results": seed(SMALL_ROWS | NO_TIMEOUT, 1, 0,
                                client(query("DELETE FROM t RETURNING c; SELECT 1")),
                                upstream(rowdesc() + row() * 3 + complete("DELETE 3") + select(1)
                                         + ready("I"))),
    "broken_param": seed(NO_TIMEOUT, 0, 0, client(query("SELECT 1")),
                         upstream(rowdesc() + row() + msg(b"S", b"ab"))),
    # --extended-protocol allow, --copy allow
    "ext_allowed": seed(NO_TIMEOUT, 0, 0, client(parse("SELECT 1") + bind() + describe(b"P") + execute()
                                                 + msg(b"S")),
                        upstream(msg(b"1") + msg(b"2") + select(1) + ready("I")),
                        client(query("SELECT 2")), upstream(select(1) + ready("I")),
                        protocols=EXT),
    "ext_shadow_warn": seed(SMALL_ROWS | NO_TIMEOUT, 1, 0,
                            client(parse("SELECT c FROM t") + bind() + execute() + msg(b"S")),
                            upstream(msg(b"1") + msg(b"2") + select(4) + ready("I")),
                            protocols=EXT | SHADOW | WARN),
    "ext_max_rows": seed(NO_TIMEOUT, 0, 0, client(parse("SELECT c FROM t") + bind() + execute("", 2)
                                                  + msg(b"H")),
                         upstream(msg(b"1") + msg(b"2") + row() * 2 + msg(b"s")),
                         client(execute("", 2) + msg(b"S")),
                         upstream(row() + complete("SELECT 3") + ready("I")), protocols=EXT),
    "ext_row_limit": seed(SMALL_ROWS | NO_TIMEOUT, 1, 0, client(pbes("SELECT c FROM t")),
                          upstream(msg(b"1") + msg(b"2") + row() * 3),
                          upstream(report(b"E", "ERROR", "57014", "canceling") + ready("I")),
                          protocols=EXT),
    "ext_limit_before_sync": seed(SMALL_ROWS | NO_TIMEOUT, 1, 0,
                                  client(parse("SELECT c FROM t") + bind() + execute()),
                                  upstream(msg(b"1") + msg(b"2") + row() * 3 + complete("SELECT 3")),
                                  client(parse("SELECT 2") + msg(b"S")),
                                  upstream(report(b"E", "ERROR", "42601", "syntax") + ready("I")),
                                  protocols=EXT),
    "ext_denied": seed(NO_TIMEOUT, 0, verdicts(DENY, ALLOW), client(pbes("DROP TABLE t")),
                       upstream(report(b"E", "ERROR", "42601", "syntax") + ready("I")),
                       client(pbes("SELECT 1")),
                       upstream(msg(b"1") + msg(b"2") + select(1) + ready("I")), protocols=EXT),
    "ext_pending": seed(NO_TIMEOUT, 0, verdicts(PENDING, ALLOW), client(pbes("SELECT 1")), event(1 | 8),
                        upstream(msg(b"1") + msg(b"2") + select(1) + ready("I")), protocols=EXT),
    "ext_in_block": seed(NO_TIMEOUT, 0, 0, client(query("BEGIN")), upstream(complete("BEGIN") + ready("T")),
                         client(pbes("UPDATE t SET c = 1")),
                         upstream(msg(b"1") + msg(b"2") + complete("UPDATE 1") + ready("T")),
                         protocols=EXT),
    "ext_copy_rejected": seed(NO_TIMEOUT, 0, 0, client(pbes("COPY t FROM STDIN")),
                              upstream(msg(b"1") + msg(b"2") + copy_response(b"G")),
                              upstream(report(b"E", "ERROR", "57014", "COPY failed") + ready("I")),
                              protocols=EXT),
    "ext_copy_in": seed(NO_TIMEOUT, 0, 0, client(pbes("COPY t FROM STDIN")),
                        upstream(msg(b"1") + msg(b"2") + copy_response(b"G")),
                        client(msg(b"d", b"1\n") + msg(b"c") + msg(b"S")),
                        upstream(complete("COPY 1") + ready("I")), protocols=EXT | COPY),
    "copy_in_allowed": seed(NO_TIMEOUT, 0, 0, client(query("COPY t FROM STDIN")),
                            upstream(copy_response(b"G")),
                            client(msg(b"d", b"1\n") + msg(b"d", b"2\n") + msg(b"c")),
                            upstream(complete("COPY 2") + ready("I")), protocols=COPY),
    "copy_in_max_bytes": seed(SMALL_BYTES | NO_TIMEOUT, 0, 0, client(query("COPY t FROM STDIN")),
                              upstream(copy_response(b"G")),
                              client(msg(b"d", b"x" * 20) * 3 + msg(b"c")),
                              upstream(report(b"E", "ERROR", "57014", "COPY failed") + ready("I")),
                              protocols=COPY),
    "copy_out_allowed": seed(SMALL_ROWS | NO_TIMEOUT, 2, 0, client(query("COPY t TO STDOUT")),
                             upstream(copy_response(b"H") + msg(b"d", b"1\n") * 4 + msg(b"c")
                                      + complete("COPY 4") + ready("I")), protocols=COPY),
    "copy_refused_by_policy": seed(NO_TIMEOUT, 0, verdicts(DENY), client(query("COPY t FROM STDIN")),
                                   protocols=COPY_VERDICT),
}


def main():
    os.makedirs(OUT, exist_ok=True)
    for name, data in SEEDS.items():
        with open(os.path.join(OUT, name), "wb") as f:
            f.write(data)


if __name__ == "__main__":
    main()
