// node-postgres (pg@8) client for the client-compatibility tests (test_clients.py).
//
// Usage: node client.js  (connection from the standard PGHOST/PGPORT/PGUSER/PGDATABASE env)
//
// client.query(text) without values uses the simple query protocol in pg, which is what
// pgwire-proxy speaks. Prints one line per observation:
//   connected <server_version>
//   row <n> <text>                  (multi-row query)
//   error <sqlstate> <message>      (select 1/0)
//   tx_error_then <sqlstate>        (a statement after an error in a transaction: 25P02)
//   commit_command <command>        (COMMIT of a failed transaction reports ROLLBACK)
//   count_after_rollback <n>
//   count_after_commit <n>
//   extended_error <sqlstate> <message>   (a parameterized query: extended protocol)
//   after_extended <value>
//   done
'use strict';
const { Client } = require('pg');

async function sqlstateOf(promise) {
  try {
    await promise;
    return 'none';
  } catch (e) {
    return `${e.code} ${e.message}`;
  }
}

async function main() {
  const client = new Client({
    connectionTimeoutMillis: 10000,
    // SCRAM-SHA-256-PLUS when the server offers it (test_auth_clients.py)
    enableChannelBinding: process.env.PGWP_CHANNEL_BINDING === '1',
  });
  await client.connect();
  const v = await client.query('show server_version');
  console.log(`connected ${v.rows[0].server_version}`);

  const r = await client.query("select g, 'row ' || g as t from generate_series(1, 5) g");
  for (const row of r.rows) console.log(`row ${row.g} ${row.t}`);

  console.log(`error ${await sqlstateOf(client.query('select 1/0'))}`);

  await client.query('create temp table node_t (x int)');
  await client.query('begin');
  await client.query('insert into node_t values (1)');
  await sqlstateOf(client.query('select 1/0'));
  console.log(`tx_error_then ${(await sqlstateOf(client.query('select 1'))).split(' ')[0]}`);
  const c = await client.query('commit');
  console.log(`commit_command ${c.command}`);
  let n = await client.query('select count(*)::int as n from node_t');
  console.log(`count_after_rollback ${n.rows[0].n}`);
  await client.query('begin');
  await client.query('insert into node_t values (1), (2)');
  await client.query('commit');
  n = await client.query('select count(*)::int as n from node_t');
  console.log(`count_after_commit ${n.rows[0].n}`);

  // With values, pg uses Parse/Bind/Execute: the proxy answers 0A000 and the session survives.
  console.log(`extended_error ${await sqlstateOf(client.query('select $1::int + 1 as v', [41]))}`);
  const after = await client.query('select 7 as v');
  console.log(`after_extended ${after.rows[0].v}`);

  await client.end();
  console.log('done');
}

main().catch((e) => {
  console.error(`failed: ${e.code || ''} ${e.stack || e}`);
  process.exit(1);
});
