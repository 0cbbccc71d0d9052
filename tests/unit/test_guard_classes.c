/* Guardrails decided by class, not by example (docs/policy.md): every member found of each
 * class is a row here, and the maintained function table is run whole. */
#include "guard_test.h"

#define TB "function:pg_terminate_backend"

/* Transaction and session access modes, decided as PostgreSQL applies them: the last option
 * of a list wins, RESET and DEFAULT go where PostgreSQL takes them. */
static const struct policy_case access_modes[] = {
    {NULL, NULL, true, "BEGIN READ ONLY, READ WRITE", RO, "read-only"},
    {NULL, NULL, true, "BEGIN READ WRITE", RO, "read-only"},
    {NULL, NULL, true, "BEGIN TRANSACTION READ WRITE", RO, "read-only"},
    {NULL, NULL, true, "begin work isolation level serializable read write", RO, "read-only"},
    {NULL, NULL, true, "BEGIN DEFERRABLE, READ ONLY, NOT DEFERRABLE, READ WRITE", RO, "read-only"},
    {NULL, NULL, true, "START TRANSACTION READ WRITE", RO, "read-only"},
    {NULL, NULL, true, "START TRANSACTION READ ONLY, ISOLATION LEVEL READ COMMITTED, READ WRITE",
     RO, "read-only"},
    {NULL, NULL, true, "SET TRANSACTION READ WRITE", RO, "read-only"},
    {NULL, NULL, true, "SET TRANSACTION READ ONLY, READ WRITE", RO, "read-only"},
    {NULL, NULL, true, "SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE", RO, "read-only"},
    {NULL, NULL, true, "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY READ WRITE", RO,
     "read-only"},
    {NULL, NULL, true, "SET transaction_read_only = off", RO, "read-only"},
    {NULL, NULL, true, "SET transaction_read_only = false", RO, "read-only"},
    {NULL, NULL, true, "SET transaction_read_only = 0", RO, "read-only"},
    {NULL, NULL, true, "SET transaction_read_only TO 'no'", RO, "read-only"},
    {NULL, NULL, true, "SET transaction_read_only TO 'f'", RO, "read-only"},
    {NULL, NULL, true, "SET transaction_read_only TO DEFAULT", RO, "read-only"},
    {NULL, NULL, true, "SET transaction_read_only FROM CURRENT", RO, "read-only"},
    {NULL, NULL, true, "SET transaction_read_only = on, off", RO, "read-only"},
    {NULL, NULL, true, "SET LOCAL transaction_read_only = off", RO, "read-only"},
    {NULL, NULL, true, "SET SESSION transaction_read_only TO off", RO, "read-only"},
    {NULL, NULL, true, "RESET transaction_read_only", RO, "read-only"},
    {NULL, NULL, true, "SET \"Transaction_Read_Only\" = off", RO, "read-only"},
    {NULL, NULL, true, "SET default_transaction_read_only = off", RO, "read-only"},
    {NULL, NULL, true, "SET default_transaction_read_only = 'OFF'", RO, "read-only"},
    {NULL, NULL, true, "SET default_transaction_read_only TO false", RO, "read-only"},
    {NULL, NULL, true, "SET default_transaction_read_only = 0", RO, "read-only"},
    {NULL, NULL, true, "SET default_transaction_read_only = maybe", RO, "read-only"},
    {NULL, NULL, true, "SET default_transaction_read_only FROM CURRENT", RO, "read-only"},
    {NULL, NULL, true, "SELECT set_config('transaction_read_only', 'off', true)", RO, "read-only"},
    {NULL, NULL, true, "SELECT set_config('default_transaction_read_only', 'false', false)", RO,
     "read-only"},
    {NULL, NULL, true, "SELECT set_config('DEFAULT_TRANSACTION_READ_ONLY', 'off', false)", RO,
     "read-only"},
    {NULL, NULL, true,
     "SELECT set_config('default_transaction_read_only'::text, 'off'::text, false)", RO,
     "read-only"},
    {NULL, NULL, true, "SELECT set_config('default_transaction_read_only', v, false) FROM t", RO,
     "read-only"},
    {NULL, NULL, true, "SELECT set_config('transaction_read_only', $1, false)", RO, "read-only"},
    {NULL, NULL, true, "SET ROLE bob", RO, "read-only"},
    {NULL, NULL, true, "SET LOCAL ROLE bob", RO, "read-only"},
    {NULL, NULL, true, "SET ROLE NONE", RO, "read-only"},
    {NULL, NULL, true, "RESET ROLE", RO, "read-only"},
    {NULL, NULL, true, "SET SESSION AUTHORIZATION bob", RO, "read-only"},
    {NULL, NULL, true, "RESET SESSION AUTHORIZATION", RO, "read-only"},
    {NULL, NULL, true, "SELECT set_config('role', 'bob', false)", RO, "read-only"},
    {NULL, NULL, true, "SELECT set_config('session_authorization', 'bob', false)", RO, "read-only"},
    {NULL, NULL, true, "BEGIN; SET TRANSACTION READ WRITE; SELECT 1; COMMIT", RO, "read-only"},
    /* what PostgreSQL makes read-only */
    {NULL, NULL, true, "BEGIN READ WRITE, READ ONLY", NONE, ""},
    {NULL, NULL, true, "BEGIN READ ONLY", NONE, ""},
    {NULL, NULL, true, "START TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ ONLY, DEFERRABLE",
     NONE, ""},
    {NULL, NULL, true, "SET TRANSACTION READ WRITE, READ ONLY", NONE, ""},
    {NULL, NULL, true, "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ", NONE, ""},
    {NULL, NULL, true, "SET TRANSACTION SNAPSHOT '00000003-0000001B-1'", NONE, ""},
    {NULL, NULL, true, "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY", NONE, ""},
    {NULL, NULL, true, "SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL READ COMMITTED",
     NONE, ""},
    {NULL, NULL, true, "SET transaction_read_only = on", NONE, ""},
    {NULL, NULL, true, "SET transaction_read_only TO true", NONE, ""},
    {NULL, NULL, true, "SET transaction_read_only = 1", NONE, ""},
    {NULL, NULL, true, "SET transaction_read_only = 'yes'", NONE, ""},
    {NULL, NULL, true, "SET transaction_read_only = tr", NONE, ""},
    {NULL, NULL, true, "SET default_transaction_read_only TO on", NONE, ""},
    {NULL, NULL, true, "RESET default_transaction_read_only", NONE, ""},
    {NULL, NULL, true, "SET default_transaction_read_only TO DEFAULT", NONE, ""},
    {NULL, NULL, true, "SELECT set_config('default_transaction_read_only', 'on', false)", NONE, ""},
    {NULL, NULL, true, "SELECT set_config('transaction_read_only', 'true', true)", NONE, ""},
    {NULL, NULL, true, "RESET ALL", NONE, ""},
    {NULL, NULL, true, "DISCARD ALL", NONE, ""},
    {NULL, NULL, true, "COMMIT AND CHAIN", NONE, ""},
    /* without read-only mode these are ordinary SETs and transactions */
    {"drop", NULL, false, "BEGIN READ WRITE", NONE, ""},
    {"drop", NULL, false, "SET default_transaction_read_only = off", NONE, ""},
    {"set", NULL, false, "SET default_transaction_read_only = off", DENY, "deny:set"},
};

/* In read-only mode nothing may follow the end of a transaction in the same Query: the next
 * transaction's access mode is known only at ReadyForQuery. */
static const struct policy_case txn_ends[] = {
    {NULL, NULL, true, "COMMIT; SELECT 1", RO, "read-only"},
    {NULL, NULL, true, "END; SELECT 1", RO, "read-only"},
    {NULL, NULL, true, "ROLLBACK; SELECT 1", RO, "read-only"},
    {NULL, NULL, true, "ABORT; SELECT 1", RO, "read-only"},
    {NULL, NULL, true, "COMMIT AND CHAIN; SELECT 1", RO, "read-only"},
    {NULL, NULL, true, "ROLLBACK AND CHAIN; SELECT 1", RO, "read-only"},
    {NULL, NULL, true, "select 1; commit; select 2", RO, "read-only"},
    {NULL, NULL, true, "BEGIN; SELECT 1; COMMIT; BEGIN; SELECT 2; COMMIT", RO, "read-only"},
    {NULL, NULL, true, "COMMIT; COMMIT", RO, "read-only"},
    {NULL, NULL, true, "BEGIN; SELECT 1; COMMIT", NONE, ""},
    {NULL, NULL, true, "SELECT 1; COMMIT", NONE, ""},
    {NULL, NULL, true, "COMMIT;", NONE, ""},
    {NULL, NULL, true, "BEGIN; SELECT 1; ROLLBACK;;", NONE, ""},
    {NULL, NULL, true, "COMMIT -- and a comment", NONE, ""},
    {NULL, NULL, true, "BEGIN; SAVEPOINT a; SELECT 1; ROLLBACK TO a; RELEASE a; COMMIT", NONE, ""},
    {"drop", NULL, false, "COMMIT; SELECT 1", NONE, ""},
};

static const struct policy_case sql_text[] = {
    {"drop", NULL, false, "SELECT * FROM dblink('dbname=x', 'select 1') AS t(a int)", DENY,
     "sql-text"},
    {"drop", NULL, false, "SELECT ('drop table t').dblink_exec", DENY, "sql-text"},
    {"drop", NULL, false, "SELECT x.dblink_exec FROM (SELECT 'select 1'::text) x", DENY,
     "sql-text"},
    {"drop", NULL, false, "SELECT ts_rewrite('a'::tsquery, 'select a, b from aliases')", DENY,
     "sql-text"},
    {"drop", NULL, false, "SELECT ts_rewrite('a'::tsquery, 'a'::tsquery, 'b'::tsquery)", NONE, ""},
    {"drop", NULL, false, "SELECT public.query_to_xml('select 1', true, false, '')", DENY,
     "sql-text"},
    {"drop", NULL, false, "SELECT \"query_to_xml\"('select 1', true, false, '')", DENY, "sql-text"},
    {"drop", NULL, false,
     "SELECT 1 WHERE EXISTS (SELECT query_to_xml('select 1', true, false, ''))", DENY, "sql-text"},
    {"drop", NULL, false, "DO $$BEGIN PERFORM pg_terminate_backend(1); END$$", DENY, "sql-text"},
    {"drop", NULL, false, "DO LANGUAGE plpgsql 'BEGIN END'", DENY, "sql-text"},
    {NULL, "select", false, "SELECT query_to_xml('select 1', true, false, '')", DENY, "sql-text"},
    {NULL, NULL, true, "SELECT query_to_xml('select 1', true, false, '')", DENY, "sql-text"},
    {NULL, NULL, true,
     "SELECT query_to_xml('select set_config(''default_transaction_read_only'', ''off'', "
     "false)', true, false, '')",
     DENY, "sql-text"},
    {NULL, NULL, true, "DO $$BEGIN END$$", RO, "read-only"},
    /* named by an allow list: explicitly allowed */
    {NULL, "select,function:query_to_xml", false,
     "SELECT query_to_xml('select 1', true, false, '')", NONE, ""},
    {NULL, "select,group:sql_text", false, "SELECT dblink_exec('drop table t')", NONE, ""},
    {NULL, "select,do", false, "DO $$BEGIN END$$", NONE, ""},
    {NULL, "select", false, "DO $$BEGIN END$$", DENY, "allow"},
    /* a deny entry beats the exception */
    {"function:dblink_exec", "select,function:dblink_exec", false,
     "SELECT dblink_exec('drop table t')", DENY, "deny:function:dblink_exec"},
};

static const struct policy_case sql_text_permitted[] = {
    {"drop", NULL, false, "SELECT query_to_xml('select 1', true, false, '')", NONE, ""},
    {NULL, NULL, true, "SELECT query_to_xml('select 1', true, false, '')", NONE, ""},
    {NULL, "select", false, "SELECT query_to_xml('select 1', true, false, '')", NONE, ""},
    {"drop", NULL, false, "DO $$BEGIN END$$", NONE, ""},
    {"do", NULL, false, "DO $$BEGIN END$$", DENY, "deny:do"},
    {"drop", NULL, false, "SELECT dblink_exec('drop table t')", DENY, "sql-text"},
};

/* Attribute notation calls a function without a FuncCall node: fail-closed by name. */
static const struct policy_case attributes[] = {
    {TB, NULL, false, "SELECT (pid).pg_terminate_backend FROM pg_stat_activity", DENY, "deny:" TB},
    {TB, NULL, false, "SELECT ((pid)).pg_terminate_backend FROM pg_stat_activity", DENY,
     "deny:" TB},
    {TB, NULL, false, "SELECT (pid).\"pg_terminate_backend\" FROM pg_stat_activity", DENY,
     "deny:" TB},
    {TB, NULL, false, "SELECT (pid).PG_TERMINATE_BACKEND FROM pg_stat_activity", DENY, "deny:" TB},
    {TB, NULL, false, "SELECT a.pid.pg_terminate_backend FROM pg_stat_activity a", DENY,
     "deny:" TB},
    {TB, NULL, false, "SELECT a.pg_terminate_backend FROM pg_stat_activity a", DENY, "deny:" TB},
    {TB, NULL, false, "SELECT (1234).pg_terminate_backend", DENY, "deny:" TB},
    {TB, NULL, false, "SELECT (x).y.pg_terminate_backend FROM t", DENY, "deny:" TB},
    {TB, NULL, false, "SELECT 1 FROM t WHERE (t.a).pg_terminate_backend", DENY, "deny:" TB},
    {TB, NULL, false, "SELECT pid FROM pg_stat_activity", NONE, ""},
    {TB, NULL, false, "SELECT a.pid FROM pg_stat_activity a", NONE, ""},
    {TB, NULL, false, "SELECT pg_terminate_backend FROM t", NONE, ""},
    {"group:signal", NULL, false, "SELECT (pid).pg_cancel_backend FROM pg_stat_activity", DENY,
     "deny:group:signal"},
    {NULL, "select,function:count", false, "SELECT (x).f FROM t", DENY, "allow"},
    {NULL, "select,function:count", false, "SELECT (x).count FROM t", NONE, ""},
    {NULL, "select,function:count", false, "SELECT t.a FROM t", NONE, ""},
    {NULL, "select,function:count", false, "SELECT s.t.a FROM s.t", DENY, "allow"},
    {NULL, "select,function:count", false, "SELECT (pid).pg_terminate_backend FROM t", DENY,
     "allow"},
    {NULL, "select", false, "SELECT (x).f FROM t", NONE, ""},
    {NULL, NULL, true, "SELECT (1234).lo_unlink", RO, "read-only"},
    {NULL, NULL, true, "SELECT t.oid.lo_unlink FROM t", RO, "read-only"},
};

/* Statements that name a function for later use are decided as calls of it. */
static const struct policy_case ddl_functions[] = {
    {TB, NULL, false, "CREATE OPERATOR ### (FUNCTION = pg_terminate_backend, RIGHTARG = int)", DENY,
     "deny:" TB},
    {TB, NULL, false, "CREATE OPERATOR ### (PROCEDURE = pg_terminate_backend, RIGHTARG = int)",
     DENY, "deny:" TB},
    {TB, NULL, false,
     "CREATE OPERATOR ### (FUNCTION = pg_catalog.pg_terminate_backend, LEFTARG = int)", DENY,
     "deny:" TB},
    {TB, NULL, false, "CREATE OPERATOR ### (FUNCTION = 'pg_terminate_backend', LEFTARG = int)",
     DENY, "deny:" TB},
    {TB, NULL, false,
     "CREATE OPERATOR === (FUNCTION = f, LEFTARG = int, RIGHTARG = int, RESTRICT = "
     "pg_terminate_backend)",
     DENY, "deny:" TB},
    {TB, NULL, false,
     "CREATE OPERATOR === (FUNCTION = f, LEFTARG = int, RIGHTARG = int, JOIN = "
     "pg_terminate_backend)",
     DENY, "deny:" TB},
    {TB, NULL, false, "ALTER OPERATOR === (int, int) SET (RESTRICT = pg_terminate_backend)", DENY,
     "deny:" TB},
    {TB, NULL, false, "ALTER OPERATOR === (int, int) SET (JOIN = pg_terminate_backend)", DENY,
     "deny:" TB},
    {TB, NULL, false, "CREATE AGGREGATE a (int) (SFUNC = pg_terminate_backend, STYPE = int)", DENY,
     "deny:" TB},
    {TB, NULL, false,
     "CREATE AGGREGATE a (int) (SFUNC = f, STYPE = int, FINALFUNC = pg_terminate_backend)", DENY,
     "deny:" TB},
    {TB, NULL, false,
     "CREATE AGGREGATE a (int) (SFUNC = f, STYPE = int, COMBINEFUNC = pg_terminate_backend)", DENY,
     "deny:" TB},
    {TB, NULL, false,
     "CREATE AGGREGATE a (int) (SFUNC = f, STYPE = internal, SERIALFUNC = pg_terminate_backend, "
     "DESERIALFUNC = g)",
     DENY, "deny:" TB},
    {TB, NULL, false,
     "CREATE AGGREGATE a (int) (SFUNC = f, STYPE = internal, SERIALFUNC = g, DESERIALFUNC = "
     "pg_terminate_backend)",
     DENY, "deny:" TB},
    {TB, NULL, false,
     "CREATE AGGREGATE a (int) (SFUNC = f, STYPE = int, MSFUNC = pg_terminate_backend, MINVFUNC "
     "= g, MSTYPE = int)",
     DENY, "deny:" TB},
    {TB, NULL, false,
     "CREATE AGGREGATE a (int) (SFUNC = f, STYPE = int, MSFUNC = g, MINVFUNC = "
     "pg_terminate_backend, MSTYPE = int)",
     DENY, "deny:" TB},
    {TB, NULL, false,
     "CREATE AGGREGATE a (int) (SFUNC = f, STYPE = int, MSFUNC = g, MINVFUNC = g, MSTYPE = int, "
     "MFINALFUNC = pg_terminate_backend)",
     DENY, "deny:" TB},
    {TB, NULL, false,
     "CREATE AGGREGATE a (BASETYPE = int, SFUNC = pg_terminate_backend, STYPE = int)", DENY,
     "deny:" TB},
    {TB, NULL, false, "CREATE CAST (int AS text) WITH FUNCTION pg_terminate_backend(int)", DENY,
     "deny:" TB},
    {TB, NULL, false, "CREATE TYPE t (INPUT = pg_terminate_backend, OUTPUT = f)", DENY, "deny:" TB},
    {TB, NULL, false, "CREATE TYPE t (INPUT = f, OUTPUT = pg_terminate_backend)", DENY, "deny:" TB},
    {TB, NULL, false, "CREATE TYPE t (INPUT = f, OUTPUT = f, RECEIVE = pg_terminate_backend)", DENY,
     "deny:" TB},
    {TB, NULL, false, "CREATE TYPE t (INPUT = f, OUTPUT = f, SEND = pg_terminate_backend)", DENY,
     "deny:" TB},
    {TB, NULL, false, "CREATE TYPE t (INPUT = f, OUTPUT = f, TYPMOD_IN = pg_terminate_backend)",
     DENY, "deny:" TB},
    {TB, NULL, false, "CREATE TYPE t (INPUT = f, OUTPUT = f, TYPMOD_OUT = pg_terminate_backend)",
     DENY, "deny:" TB},
    {TB, NULL, false, "CREATE TYPE t (INPUT = f, OUTPUT = f, ANALYZE = pg_terminate_backend)", DENY,
     "deny:" TB},
    {TB, NULL, false, "CREATE TYPE t (INPUT = f, OUTPUT = f, SUBSCRIPT = pg_terminate_backend)",
     DENY, "deny:" TB},
    {TB, NULL, false,
     "CREATE TYPE r AS RANGE (SUBTYPE = int4, SUBTYPE_DIFF = pg_terminate_backend)", DENY,
     "deny:" TB},
    {TB, NULL, false, "CREATE TYPE r AS RANGE (SUBTYPE = int4, CANONICAL = pg_terminate_backend)",
     DENY, "deny:" TB},
    {TB, NULL, false, "ALTER TYPE t SET (RECEIVE = pg_terminate_backend)", DENY, "deny:" TB},
    {TB, NULL, false, "ALTER TYPE t SET (SEND = pg_terminate_backend)", DENY, "deny:" TB},
    {TB, NULL, false, "ALTER TYPE t SET (TYPMOD_IN = pg_terminate_backend)", DENY, "deny:" TB},
    {TB, NULL, false, "ALTER TYPE t SET (TYPMOD_OUT = pg_terminate_backend)", DENY, "deny:" TB},
    {TB, NULL, false, "ALTER TYPE t SET (ANALYZE = pg_terminate_backend)", DENY, "deny:" TB},
    {TB, NULL, false, "ALTER TYPE t SET (SUBSCRIPT = pg_terminate_backend)", DENY, "deny:" TB},
    {TB, NULL, false,
     "CREATE TRIGGER tr AFTER INSERT ON t FOR EACH ROW EXECUTE FUNCTION pg_terminate_backend()",
     DENY, "deny:" TB},
    {TB, NULL, false,
     "CREATE TRIGGER tr AFTER INSERT ON t EXECUTE PROCEDURE public.pg_terminate_backend()", DENY,
     "deny:" TB},
    {TB, NULL, false,
     "CREATE CONSTRAINT TRIGGER tr AFTER INSERT ON t FOR EACH ROW EXECUTE FUNCTION "
     "pg_terminate_backend()",
     DENY, "deny:" TB},
    {TB, NULL, false,
     "CREATE EVENT TRIGGER e ON ddl_command_start EXECUTE FUNCTION pg_terminate_backend()", DENY,
     "deny:" TB},
    {TB, NULL, false, "CREATE LANGUAGE l HANDLER pg_terminate_backend", DENY, "deny:" TB},
    {TB, NULL, false, "CREATE LANGUAGE l HANDLER h INLINE pg_terminate_backend", DENY, "deny:" TB},
    {TB, NULL, false, "CREATE LANGUAGE l HANDLER h VALIDATOR pg_terminate_backend", DENY,
     "deny:" TB},
    {TB, NULL, false, "CREATE FOREIGN DATA WRAPPER w HANDLER pg_terminate_backend", DENY,
     "deny:" TB},
    {TB, NULL, false, "CREATE FOREIGN DATA WRAPPER w VALIDATOR pg_terminate_backend", DENY,
     "deny:" TB},
    {TB, NULL, false, "ALTER FOREIGN DATA WRAPPER w HANDLER pg_terminate_backend", DENY,
     "deny:" TB},
    {TB, NULL, false, "ALTER FOREIGN DATA WRAPPER w VALIDATOR pg_terminate_backend", DENY,
     "deny:" TB},
    {TB, NULL, false, "CREATE ACCESS METHOD am TYPE TABLE HANDLER pg_terminate_backend", DENY,
     "deny:" TB},
    {TB, NULL, false,
     "CREATE TRANSFORM FOR int LANGUAGE l (FROM SQL WITH FUNCTION pg_terminate_backend(internal), "
     "TO SQL WITH FUNCTION f(internal))",
     DENY, "deny:" TB},
    {TB, NULL, false,
     "CREATE TRANSFORM FOR int LANGUAGE l (FROM SQL WITH FUNCTION f(internal), TO SQL WITH "
     "FUNCTION pg_terminate_backend(internal))",
     DENY, "deny:" TB},
    {TB, NULL, false, "CREATE CONVERSION c FOR 'UTF8' TO 'LATIN1' FROM pg_terminate_backend", DENY,
     "deny:" TB},
    {TB, NULL, false,
     "CREATE TEXT SEARCH PARSER p (START = pg_terminate_backend, GETTOKEN = f, END = f, "
     "LEXTYPES = f)",
     DENY, "deny:" TB},
    {TB, NULL, false,
     "CREATE TEXT SEARCH PARSER p (START = f, GETTOKEN = pg_terminate_backend, END = f, "
     "LEXTYPES = f)",
     DENY, "deny:" TB},
    {TB, NULL, false,
     "CREATE TEXT SEARCH PARSER p (START = f, GETTOKEN = f, END = pg_terminate_backend, "
     "LEXTYPES = f)",
     DENY, "deny:" TB},
    {TB, NULL, false,
     "CREATE TEXT SEARCH PARSER p (START = f, GETTOKEN = f, END = f, LEXTYPES = "
     "pg_terminate_backend)",
     DENY, "deny:" TB},
    {TB, NULL, false,
     "CREATE TEXT SEARCH PARSER p (START = f, GETTOKEN = f, END = f, LEXTYPES = f, HEADLINE = "
     "pg_terminate_backend)",
     DENY, "deny:" TB},
    {TB, NULL, false, "CREATE TEXT SEARCH TEMPLATE t (INIT = pg_terminate_backend, LEXIZE = f)",
     DENY, "deny:" TB},
    {TB, NULL, false, "CREATE TEXT SEARCH TEMPLATE t (LEXIZE = pg_terminate_backend)", DENY,
     "deny:" TB},
    {TB, NULL, false,
     "CREATE FUNCTION f(int) RETURNS int LANGUAGE sql SUPPORT pg_terminate_backend AS 'select 1'",
     DENY, "deny:" TB},
    {TB, NULL, false, "ALTER FUNCTION f(int) SUPPORT pg_terminate_backend", DENY, "deny:" TB},
    {TB, NULL, false,
     "CREATE OPERATOR CLASS c FOR TYPE int USING btree AS FUNCTION 1 "
     "pg_terminate_backend(int, int)",
     DENY, "deny:" TB},
    {TB, NULL, false,
     "ALTER OPERATOR FAMILY f USING btree ADD FUNCTION 1 (int, int) pg_terminate_backend(int, "
     "int)",
     DENY, "deny:" TB},
    /* expressions stored for later are parsed like any other */
    {TB, NULL, false, "CREATE TABLE t (a int DEFAULT pg_terminate_backend(1))", DENY, "deny:" TB},
    {TB, NULL, false, "CREATE TABLE t (a int CHECK (pg_terminate_backend(a)))", DENY, "deny:" TB},
    {TB, NULL, false, "CREATE TABLE t (a int GENERATED ALWAYS AS (pg_terminate_backend(1)) STORED)",
     DENY, "deny:" TB},
    {TB, NULL, false, "CREATE DOMAIN d AS int CHECK (pg_terminate_backend(VALUE))", DENY,
     "deny:" TB},
    {TB, NULL, false, "CREATE INDEX ON t ((pg_terminate_backend(a)))", DENY, "deny:" TB},
    {TB, NULL, false, "CREATE POLICY p ON t USING (pg_terminate_backend(1))", DENY, "deny:" TB},
    {TB, NULL, false, "CREATE VIEW v AS SELECT pg_terminate_backend(1)", DENY, "deny:" TB},
    {TB, NULL, false, "CREATE RULE r AS ON SELECT TO t DO INSTEAD SELECT pg_terminate_backend(1)",
     DENY, "deny:" TB},
    {TB, NULL, false, "ALTER TABLE t ALTER COLUMN a SET DEFAULT pg_terminate_backend(1)", DENY,
     "deny:" TB},
    {TB, NULL, false, "CREATE PUBLICATION p FOR TABLE t WHERE (pg_terminate_backend(a))", DENY,
     "deny:" TB},
    /* naming a function is not always binding it */
    {TB, NULL, false, "COMMENT ON FUNCTION pg_terminate_backend(int) IS 'x'", NONE, ""},
    {TB, NULL, false, "GRANT EXECUTE ON FUNCTION pg_terminate_backend(int) TO r", NONE, ""},
    {TB, NULL, false, "DROP FUNCTION pg_terminate_backend(int)", NONE, ""},
    {TB, NULL, false, "ALTER FUNCTION pg_terminate_backend(int) OWNER TO r", NONE, ""},
    {TB, NULL, false, "CREATE OPERATOR CLASS c FOR TYPE int USING btree AS OPERATOR 1 <", NONE, ""},
    {"function:start", NULL, false, "CREATE SEQUENCE s START 5", NONE, ""},
    /* under a function allow list, binding counts as calling */
    {NULL, "create,function:f", false, "CREATE OPERATOR ### (FUNCTION = g, RIGHTARG = int)", DENY,
     "allow"},
    {NULL, "create,function:f", false, "CREATE OPERATOR ### (FUNCTION = f, RIGHTARG = int)", NONE,
     ""},
};

/* A statement carries every kind it can perform. */
static const struct policy_case nested_kinds[] = {
#define MERGE_ON "MERGE INTO t USING u ON t.a = u.a "
    {"delete", NULL, false, MERGE_ON "WHEN MATCHED THEN DELETE", DENY, "deny:delete"},
    {"update", NULL, false, MERGE_ON "WHEN MATCHED THEN UPDATE SET a = 1", DENY, "deny:update"},
    {"insert", NULL, false, MERGE_ON "WHEN NOT MATCHED THEN INSERT VALUES (1)", DENY,
     "deny:insert"},
    {"delete", NULL, false, MERGE_ON "WHEN MATCHED AND t.a > 1 THEN DO NOTHING", NONE, ""},
    {"delete", NULL, false,
     MERGE_ON "WHEN MATCHED AND t.a > 1 THEN UPDATE SET a = 2 WHEN MATCHED THEN DELETE", DENY,
     "deny:delete"},
    {"delete", NULL, false,
     "WITH x AS (SELECT 1 AS a) MERGE INTO t USING x ON t.a = x.a WHEN MATCHED THEN DELETE", DENY,
     "deny:delete"},
    {"delete", NULL, false, "EXPLAIN ANALYZE " MERGE_ON "WHEN MATCHED THEN DELETE", DENY,
     "deny:delete"},
    {"delete", NULL, false, "PREPARE p AS " MERGE_ON "WHEN MATCHED THEN DELETE", DENY,
     "deny:delete"},
    {"update", NULL, false, "INSERT INTO t VALUES (1) ON CONFLICT (a) DO UPDATE SET a = 2", DENY,
     "deny:update"},
    {"update", NULL, false,
     "WITH i AS (INSERT INTO t VALUES (1) ON CONFLICT (a) DO UPDATE SET a = 2 RETURNING *) "
     "SELECT * FROM i",
     DENY, "deny:update"},
    {"update", NULL, false, "INSERT INTO t VALUES (1) ON CONFLICT DO NOTHING", NONE, ""},
    {"insert", NULL, false, "COPY t FROM '/tmp/f'", DENY, "deny:insert"},
    {"insert", NULL, false, "COPY t FROM PROGRAM 'cat /tmp/f'", DENY, "deny:insert"},
    {"select", NULL, false, "COPY t TO '/tmp/f'", DENY, "deny:select"},
    {"delete", NULL, false, "COPY (DELETE FROM t RETURNING *) TO '/tmp/f'", DENY, "deny:delete"},
    {"delete", NULL, false, "CREATE RULE r AS ON UPDATE TO t DO INSTEAD DELETE FROM u", DENY,
     "deny:delete"},
    {NULL, "insert", false, "INSERT INTO t VALUES (1) ON CONFLICT (a) DO UPDATE SET a = 2", DENY,
     "allow"},
    {NULL, "insert,update", false, "INSERT INTO t VALUES (1) ON CONFLICT (a) DO UPDATE SET a = 2",
     NONE, ""},
    {NULL, "merge", false, MERGE_ON "WHEN MATCHED THEN DELETE", DENY, "allow"},
    {NULL, "merge,delete", false, MERGE_ON "WHEN MATCHED THEN DELETE", NONE, ""},
    {NULL, "copy", false, "COPY t FROM '/tmp/f'", DENY, "allow"},
    {NULL, NULL, true, "DECLARE c CURSOR FOR SELECT 1 FROM t FOR UPDATE", RO, "read-only"},
    {NULL, NULL, true, "COPY t TO '/tmp/f'", RO, "read-only"},
#undef MERGE_ON
};

/* set_config is SET, pg_notify is NOTIFY, for every setting and channel. */
static const struct policy_case by_function[] = {
    {NULL, "select", false, "SELECT set_config('role', 'x', false)", DENY, "allow"},
    {NULL, "select", false, "SELECT pg_catalog.set_config('search_path', 'evil', false)", DENY,
     "allow"},
    {NULL, "select", false, "SELECT 1 FROM t WHERE set_config('work_mem', '1MB', true) > ''", DENY,
     "allow"},
    {NULL, "select,set", false, "SELECT set_config('role', 'x', false)", NONE, ""},
    {"set", NULL, false, "SELECT set_config('work_mem', '1MB', false)", DENY, "deny:set"},
    {"set", NULL, false, "SELECT current_setting('work_mem')", NONE, ""},
    {NULL, "select", false, "SELECT set_config(name, 'x', false) FROM t", DENY, "set-config"},
    {NULL, "select", false, "SELECT set_config(1, 'x', false)", DENY, "set-config"},
    {NULL, "select", false, "SELECT set_config('a' || 'b', 'x', false)", DENY, "set-config"},
    {NULL, "select", false, "SELECT pg_notify('c', 'x')", DENY, "allow"},
    {"notify", NULL, false, "SELECT pg_notify('c', 'x')", DENY, "deny:notify"},
    {NULL, NULL, true, "SELECT pg_notify('c', 'x')", RO, "read-only"},
    /* the try-variants take the lock too (found by test_policy_classes.py) */
    {NULL, NULL, true, "SELECT pg_try_advisory_lock(4711)", RO, "read-only"},
    {NULL, NULL, true, "SELECT pg_try_advisory_xact_lock_shared(1, 2)", RO, "read-only"},
    {"group:advisory_lock", NULL, false, "SELECT pg_try_advisory_lock(4711)", DENY,
     "deny:group:advisory_lock"},
};

/* Texts with a backslash inside a string are decided under both readings. */
static const struct policy_case two_readings[] = {
    {TB, NULL, false, "select 'a\\'' , pg_terminate_backend(1) --'", DENY, "deny:" TB},
    {TB, NULL, false, "select 'a\\'; select pg_terminate_backend(1); --'", DENY, "deny:" TB},
    {TB, NULL, false, "select 'a\\' ' , pg_terminate_backend(1) --", DENY, "deny:" TB},
    {"drop", NULL, false, "select 'a\\'; drop table t; --'", DENY, "deny:drop"},
    {TB, NULL, false, "select 'a\\'; drop table t; --'", DENY, "standard_conforming_strings"},
    {TB, NULL, false, "select '\\'; select 1; --'", DENY, "standard_conforming_strings"},
    {TB, NULL, false, "select 'a\\'' , now() --'", DENY, "standard_conforming_strings"},
    {TB, NULL, false, "select 'x\\' , 1 --'", NONE, ""},
    {TB, NULL, false, "select 'x\\'' ; insert into t values (3, null) --'", DENY,
     "standard_conforming_strings"},
    /* with it off this is a syntax error: PostgreSQL runs nothing of it in that mode */
    {TB, NULL, false, "select 'x\\'; insert into t values (3, 'x'); --'", NONE, ""},
    {TB, NULL, false, "select 'C:\\path\\file'", NONE, ""},
    {TB, NULL, false, "select E'a\\'b', 'c\\\\d'", NONE, ""},
    {TB, NULL, false, "select U&'\\0041'", NONE, ""},
    {TB, NULL, false, "select $$a\\'$$, 1", NONE, ""},
    {TB, NULL, false, "select 'a\\' ' , 1 --", NONE, ""},
    {TB, NULL, false, "selec 'a\\'", SYNTX, "syntax"},
    {NULL, NULL, true,
     "select 'a\\'' , set_config('default_transaction_read_only', 'off', false) --'", RO,
     "read-only"},
    {NULL, "select", false, "select 'a\\'' , 1; delete from t --'", DENY, "allow"},
};

static void test_access_modes(void **state)
{
    (void)state;
    gt_run_table("access_modes", access_modes, sizeof access_modes / sizeof access_modes[0]);
    gt_run_table("txn_ends", txn_ends, sizeof txn_ends / sizeof txn_ends[0]);
}

static void test_sql_text(void **state)
{
    (void)state;
    gt_run_table("sql_text", sql_text, sizeof sql_text / sizeof sql_text[0]);
    gt_run_table_permit("sql_text_permitted", sql_text_permitted,
                        sizeof sql_text_permitted / sizeof sql_text_permitted[0],
                        "function:query_to_xml,do");
}

static void test_attributes_and_ddl(void **state)
{
    (void)state;
    gt_run_table("attributes", attributes, sizeof attributes / sizeof attributes[0]);
    gt_run_table("ddl_functions", ddl_functions, sizeof ddl_functions / sizeof ddl_functions[0]);
}

static void test_kinds_and_functions(void **state)
{
    (void)state;
    gt_run_table("nested_kinds", nested_kinds, sizeof nested_kinds / sizeof nested_kinds[0]);
    gt_run_table("by_function", by_function, sizeof by_function / sizeof by_function[0]);
    gt_run_table("two_readings", two_readings, sizeof two_readings / sizeof two_readings[0]);
}

static void expect(const struct guard_policy *p, const char *sql, enum guard_verdict v,
                   const char *rule)
{
    struct guard_decision d;
    gt_check(p, NULL, sql, &d);
    if (d.verdict != v || (rule && strcmp(d.rule, rule) != 0))
        fail_msg("[%s]: verdict %d rule %s (%s), want %d %s", sql, d.verdict, d.rule, d.message, v,
                 rule ? rule : "");
}

/* The maintained table, whole: every group member is denied by its group, every function
 * that runs SQL text is refused under each kind of policy unless permitted, every side effect
 * is refused in read-only mode unless permitted. */
static void test_function_table(void **state)
{
    (void)state;
    size_t n;
    const struct guard_fn *fns = guard_fn_table(&n);
    char sql[256], rule[96];

    assert_true(guard_funcs_self_check());
    assert_true(guard_walk_self_check());
    struct guard_policy *deny = gt_policy("drop", NULL, NULL, false);
    struct guard_policy *ro = gt_policy(NULL, NULL, NULL, true);
    struct guard_policy *allow = gt_policy(NULL, "select", NULL, false);
    for (size_t i = 0; i < n; i++) {
        const struct guard_fn *f = &fns[i];
        /* two arguments: ts_rewrite's SQL form */
        snprintf(sql, sizeof sql, "SELECT %s('x', 'y')", f->name);
        for (unsigned g = 0; g < GUARD_G_COUNT; g++) {
            if (!(f->groups & (1u << g)))
                continue;
            snprintf(rule, sizeof rule, "group:%s", guard_group_name(g));
            struct guard_policy *p = gt_policy(rule, NULL, NULL, false);
            snprintf(rule, sizeof rule, "deny:group:%s", guard_group_name(g));
            expect(p, sql, GUARD_DENY, rule);
            guard_policy_free(p);
        }
        if (f->groups & GUARD_GBIT(SQL_TEXT)) {
            expect(deny, sql, GUARD_DENY, "sql-text");
            expect(ro, sql, GUARD_DENY, "sql-text");
            expect(allow, sql, GUARD_DENY, "sql-text");
            snprintf(rule, sizeof rule, "function:%s", f->name);
            struct guard_policy *p = gt_policy("drop", NULL, rule, true);
            expect(p, sql, GUARD_ALLOW, "");
            guard_policy_free(p);
            p = gt_policy("drop", NULL, "group:sql_text", false);
            expect(p, sql, GUARD_ALLOW, "");
            guard_policy_free(p);
        }
        if (f->ro_reason) {
            expect(ro, sql, GUARD_READ_ONLY, "read-only");
            expect(deny, sql, GUARD_ALLOW, "");
            snprintf(rule, sizeof rule, "function:%s", f->name);
            struct guard_policy *p = gt_policy(NULL, NULL, rule, true);
            /* pg_notify stays NOTIFY, which read-only mode refuses as a statement */
            expect(p, sql, (f->flags & GUARD_FN_IS_NOTIFY) ? GUARD_READ_ONLY : GUARD_ALLOW, NULL);
            guard_policy_free(p);
        } else if (!(f->groups & GUARD_GBIT(SQL_TEXT)) && !(f->flags & GUARD_FN_IS_SET)) {
            expect(ro, sql, GUARD_ALLOW, ""); /* reads: read-only mode lets them be */
        }
    }
    guard_policy_free(deny);
    guard_policy_free(ro);
    guard_policy_free(allow);

    /* groups in allow lists */
    struct guard_policy *p = gt_policy(NULL, "select,group:sleep", NULL, false);
    expect(p, "SELECT pg_sleep_for('1s')", GUARD_ALLOW, "");
    expect(p, "SELECT now()", GUARD_DENY, "allow");
    guard_policy_free(p);
    p = gt_policy("group:file_access", NULL, NULL, false);
    struct guard_decision d;
    gt_check(p, NULL, "SELECT pg_read_binary_file('/etc/passwd')", &d);
    assert_string_equal(d.message,
                        "statement denied by pgwire-proxy policy: deny:group:file_access "
                        "(pg_read_binary_file)");
    guard_policy_free(p);
}

/* The rule grammar: its errors name the entry; shadow: takes deny and allow entries
 * (test_guard_shadow.c), not permit ones. */
static void test_rule_grammar(void **state)
{
    (void)state;
    char err[1024];
    struct guard_rules r = {0};
    const char *shadow[] = {"shadow:drop"};
    const char *bad_group[] = {"group:files"};
    const char *bad_permit[] = {"select"};
    const char *permits[] = {"function:query_to_xml", "group:sql_text", "do", "Function:DBLINK"};

    r.deny = shadow;
    r.ndeny = 1;
    struct guard_policy *sp = guard_policy_compile(&r, err, sizeof err);
    assert_non_null(sp);
    guard_policy_free(sp);
    r.deny = NULL;
    r.ndeny = 0;
    r.allow = shadow;
    r.nallow = 1;
    sp = guard_policy_compile(&r, err, sizeof err);
    assert_non_null(sp);
    guard_policy_free(sp);
    r.allow = bad_group;
    assert_null(guard_policy_compile(&r, err, sizeof err));
    assert_non_null(strstr(err, "\"group:files\""));
    assert_non_null(strstr(err, "file_access"));
    r.allow = NULL;
    r.nallow = 0;
    r.permit = bad_permit;
    r.npermit = 1;
    assert_null(guard_policy_compile(&r, err, sizeof err));
    assert_non_null(strstr(err, "invalid permit rule \"select\""));
    r.permit = shadow;
    assert_null(guard_policy_compile(&r, err, sizeof err));
    assert_non_null(strstr(err, "invalid permit rule \"shadow:drop\""));
    r.permit = permits;
    r.npermit = 4;
    struct guard_policy *p = guard_policy_compile(&r, err, sizeof err);
    assert_non_null(p);
    /* permit entries alone are not a policy: nothing to parse for */
    assert_false(guard_policy_parses(p));
    guard_policy_free(p);
    /* a group in an allow list limits calls like a function entry does */
    p = gt_policy(NULL, "select,group:sleep", NULL, false);
    assert_true(p->func_allow_list);
    guard_policy_free(p);
    p = gt_policy(NULL, "select", "function:query_to_xml", false);
    assert_false(p->func_allow_list);
    guard_policy_free(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_access_modes),       cmocka_unit_test(test_sql_text),
        cmocka_unit_test(test_attributes_and_ddl), cmocka_unit_test(test_kinds_and_functions),
        cmocka_unit_test(test_function_table),     cmocka_unit_test(test_rule_grammar),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
