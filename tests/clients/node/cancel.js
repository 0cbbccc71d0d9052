// node-postgres (pg@8) cancel for the client-compatibility tests (test_clients.py).
//
// Usage: node cancel.js  (connection from the standard PGHOST/PGPORT/PGUSER/PGDATABASE env)
//
// pg has no documented cancel, but Client#cancel(client, query) (lib/client.js) opens a second
// connection and sends a CancelRequest with the key from the first one's BackendKeyData. It needs the Query object, so the statement is submitted as
// a `new Query(...)`. A watcher connection waits until the statement runs upstream before the
// cancel is sent. Prints:
//   cancel <sqlstate> <ms>          (ms from sending the cancel to the query's error)
//   after_cancel <value>            (the session is usable afterwards)
//   done
'use strict';
const { Client, Query } = require('pg');

async function waitActive(watcher, tag) {
  for (let i = 0; i < 200; i++) {
    const r = await watcher.query(
      "select 1 from pg_stat_activity where state = 'active' and query like '%" + tag +
        "%' and pid <> pg_backend_pid()");
    if (r.rows.length > 0) return;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error(`statement ${tag} never became active`);
}

async function main() {
  const client = new Client({ connectionTimeoutMillis: 10000 });
  const watcher = new Client({ connectionTimeoutMillis: 10000 });
  await client.connect();
  await watcher.connect();

  const tag = `node_cancel_${process.pid}`;
  const query = new Query(`select pg_sleep(30) /* ${tag} */`);
  const finished = new Promise((resolve) => {
    query.on('error', (e) => resolve(e.code || `error ${e.message}`));
    query.on('end', () => resolve('none'));
  });
  client.query(query);
  await waitActive(watcher, tag);
  const start = process.hrtime.bigint();
  new Client().cancel(client, query);
  const state = await finished;
  const ms = Number((process.hrtime.bigint() - start) / 1000000n);
  console.log(`cancel ${state} ${ms}`);

  const after = await client.query('select 7 as v');
  console.log(`after_cancel ${after.rows[0].v}`);
  await watcher.end();
  await client.end();
  console.log('done');
}

main().catch((e) => {
  console.error(`failed: ${e.code || ''} ${e.stack || e}`);
  process.exit(1);
});
