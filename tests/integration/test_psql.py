"""psql through the proxy looks exactly like psql straight to PostgreSQL."""
import pytest

# Each meta-command and a piece of text its output must contain (so an empty or failed run
# cannot compare equal by accident).
META = {
    r"\l": "template1",
    r"\dn": "sales",
    r"\dt": "items",
    r"\d items": "items_name_key",
    r"\d+ items": "Storage",
    r"\d sales.orders": "orders_item_id_fkey",
    r"\df": "add_one",
    r"\du": "pwuser",
    r"\di": "items_qty_idx",
    r"\dv": "items_in_stock",
    r"\dx": "plpgsql",
}


def same_output(via, ref):
    assert via.returncode == ref.returncode, via.stderr
    assert via.stdout == ref.stdout
    assert via.stderr == ref.stderr


@pytest.mark.parametrize("cmd", list(META))
def test_meta_command_same_as_direct(proxy, direct, cmd):
    via, ref = proxy.psql("-c", cmd), direct.psql("-c", cmd)
    assert ref.returncode == 0, ref.stderr
    assert META[cmd] in ref.stdout
    same_output(via, ref)


def test_expanded_select_same_as_direct(proxy, direct):
    script = ("\\x on\n"
              "select * from items order by id;\n"
              "select 'a b' as txt, null::int as nothing, 1.50::numeric as num, "
              "'2024-02-29'::date as d, array[1,2] as arr, '{\"k\": 1}'::jsonb as j;\n")
    via, ref = proxy.psql("-v", "ON_ERROR_STOP=1", input=script), direct.psql(
        "-v", "ON_ERROR_STOP=1", input=script)
    assert "-[ RECORD 1 ]" in ref.stdout and "apple" in ref.stdout
    same_output(via, ref)


def test_psql_errors_same_as_direct(proxy, direct):
    script = "select 1/0;\nselec 1;\nselect * from no_such_table;\nselect 'still here';\n"
    via, ref = proxy.psql(input=script), direct.psql(input=script)
    assert "division by zero" in ref.stderr and "still here" in ref.stdout
    same_output(via, ref)


def test_psql_script_with_transaction(proxy, dconn):
    with dconn.cursor() as cur:
        cur.execute("drop table if exists psql_tx; create table psql_tx (id int primary key)")
    script = ("begin;\ninsert into psql_tx values (1);\ncommit;\n"
              "begin;\ninsert into psql_tx values (2);\nrollback;\n"
              "select string_agg(id::text, ',') from psql_tx;\n")
    r = proxy.psql("-At", "-v", "ON_ERROR_STOP=1", input=script, check=True)
    assert r.stdout.split() == ["BEGIN", "INSERT", "0", "1", "COMMIT", "BEGIN", "INSERT", "0", "1",
                                "ROLLBACK", "1"]


def test_million_rows_stream_through(unlimited_proxy):
    r = unlimited_proxy.psql("-At", "-o", "/dev/null",
                             "-c", "select g from generate_series(1, 1000000) g",
                             "-c", r"\echo :ROW_COUNT", check=True)
    assert r.stdout.strip() == "1000000"


def test_million_rows_with_fetch_count(unlimited_proxy):
    """psql's FETCH_COUNT uses a cursor inside a transaction block (DECLARE/FETCH)."""
    r = unlimited_proxy.psql("-At", "-v", "FETCH_COUNT=50000",
                             "-c", "select g from generate_series(1, 200000) g", check=True)
    lines = r.stdout.split()
    assert len(lines) == 200000 and lines[0] == "1" and lines[-1] == "200000"
