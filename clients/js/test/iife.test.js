// dist/tincan.iife.js, the build for a plain <script> tag: it is what
// scripts/build-iife.js makes of src/tincan.js, and loaded as a script in a
// fresh context (node:vm, no module system, no EventSource) it defines
// globalThis.tincan, whose join works against the real server.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import vm from 'node:vm';
import * as esm from '../src/tincan.js';
import { build, srcPath, outPath } from '../scripts/build-iife.js';
import { tincan, until as untilOn } from './harness.js';

let srv = null;
const clients = [];
const until = (cond, ms, what) => untilOn(cond, ms, what, srv);

before(async () => { srv = await tincan(); }, { timeout: 300000 });

after(async () => {
  for (const c of clients) c.close();
  if (srv) await srv.stop();
});

// A fresh global scope with what a browser page has that the client uses,
// fetch included, and the IIFE run in it as a <script> would be.
function loadIIFE() {
  const ctx = vm.createContext({
    fetch, console, crypto, setTimeout, clearTimeout, setInterval, clearInterval,
    AbortController, TextDecoder, TextEncoder, URL, URLSearchParams,
  });
  vm.runInContext(readFileSync(outPath, 'utf8'), ctx, { filename: 'tincan.iife.js' });
  return ctx;
}

test('dist/tincan.iife.js is up to date with src/tincan.js (else: npm run build)', () => {
  assert.ok(build(readFileSync(srcPath, 'utf8')) === readFileSync(outPath, 'utf8'),
    'dist/tincan.iife.js is not what scripts/build-iife.js makes of src/tincan.js: run `npm run build` in clients/js');
});

test('the IIFE defines globalThis.tincan with what the module exports, and nothing else', () => {
  const ctx = loadIIFE();
  assert.equal(typeof ctx.tincan, 'object');
  assert.deepEqual(Object.keys(ctx.tincan).sort(), Object.keys(esm).sort());
  assert.equal(typeof ctx.tincan.join, 'function');
  assert.equal(typeof ctx.tincan.Client, 'function');
  assert.equal(typeof ctx.tincan.TincanError, 'function');
  const globals = Object.keys(vm.runInContext('globalThis', ctx));
  assert.ok(!globals.includes('join') && !globals.includes('Client') && !globals.includes('FetchEventSource'), `no other globals: ${globals}`);
});

test('tincan.join from the IIFE joins, sends and receives against the real server', async () => {
  const { tincan: t } = loadIIFE();
  await assert.rejects(t.join('bad room!', { base: srv.base }), (err) => err instanceof t.TincanError && err.code === 'bad_room_name');
  const room = `iife-${process.pid}`;
  const gotA = [];
  const gotB = [];
  // a: the script build (no EventSource in its context: the stream is read with fetch).
  const a = await t.join(room, { base: srv.base, onMessage: (m) => gotA.push(m) });
  clients.push(a);
  assert.ok(a instanceof t.Client);
  assert.match(a.id, /^[A-Za-z0-9_-]+$/);
  // b: the ES module, on long-poll.
  const b = await esm.join(room, { base: srv.base, storage: null, transport: 'poll', pollWait: 2, onMessage: (m) => gotB.push(m) });
  clients.push(b);
  assert.deepEqual(b.peers, [a.id]);
  await until(() => a.transport === 'sse' && b.transport === 'poll', 10000, 'both receiving');
  const toA = await b.send({ type: 'offer', sdp: 'v=0' }, a.id);
  const toB = await a.send({ type: 'answer', sdp: 'v=0 answer' });
  await until(() => gotA.length === 1 && gotB.length === 1, 10000, 'one message each way');
  assert.equal(gotA[0].id, toA);
  assert.equal(gotA[0].from, b.id);
  assert.equal(gotA[0].sdp, 'v=0');
  assert.equal(gotB[0].id, toB);
  assert.equal(gotB[0].from, a.id);
  await a.leave();
  await until(() => !b.peers.includes(a.id), 10000, 'peer-left');
});
