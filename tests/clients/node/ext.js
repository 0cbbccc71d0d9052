// node-postgres (pg@8) with values, for the extended-protocol tests
// (tests/integration/test_extended_clients_jvm_node.py).
//
// Usage: node ext.js  (connection from PGHOST/PGPORT/PGUSER/PGDATABASE)
//
// A query with values is Parse/Bind/Describe/Execute/Sync; a query config with `rows` reads
// the portal in pages, Execute(rows) + Flush until CommandComplete, as pg-cursor does. Prints:
//   values <v> <t> <null>            (parameters of three kinds)
//   named <v1> <v2> <v3>             (a named prepared statement run three times)
//   error <sqlstate>                 (a parameterized 1/$1 with 0)
//   tx_error_then <sqlstate>         (a statement after an error in a transaction)
//   commit_command <command>
//   after <value>
//   pages <rows> <sum> <sqlstate|none>  (rows: 100 over 2500 rows)
//   done
'use strict';
const { Client } = require('pg');

async function stateOf(promise) {
  try {
    await promise;
    return 'none';
  } catch (e) {
    return e.code;
  }
}

async function main() {
  const client = new Client({ connectionTimeoutMillis: 10000 });
  await client.connect();
  const v = await client.query('select $1::int + 1 as v, $2::text as t, $3::text as n',
    [41, "it's", null]);
  console.log(`values ${v.rows[0].v} ${v.rows[0].t} ${v.rows[0].n}`);

  const named = [];
  for (let i = 1; i <= 3; i++) {
    const r = await client.query({ name: 'times_ten', text: 'select $1::int * 10 as x', values: [i] });
    named.push(r.rows[0].x);
  }
  console.log(`named ${named.join(' ')}`);
  console.log(`error ${await stateOf(client.query('select 1 / $1::int', [0]))}`);

  await client.query('begin');
  await client.query('select $1::int', [1]);
  await stateOf(client.query('select 1 / $1::int', [0]));
  console.log(`tx_error_then ${await stateOf(client.query('select $1::int', [2]))}`);
  const c = await client.query('commit');
  console.log(`commit_command ${c.command}`);

  const after = await client.query('select $1::int as a', [7]);
  console.log(`after ${after.rows[0].a}`);

  // Last: pg 8 sends no Sync after an error in a paged query, and its next query would wait
  // forever, against PostgreSQL itself as well.
  let pages = 'none';
  let got = [];
  try {
    const r = await client.query({ text: 'select g from generate_series(1, $1::int) g',
      values: [2500], rows: 100 });
    got = r.rows;
  } catch (e) {
    pages = e.code;
  }
  const sum = got.reduce((a, r) => a + r.g, 0);
  console.log(`pages ${got.length} ${sum} ${pages}`);
  await client.end();
  console.log('done');
}

main().catch((e) => {
  console.error(`failed: ${e.code || ''} ${e.stack || e}`);
  process.exit(1);
});
