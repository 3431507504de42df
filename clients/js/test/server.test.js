// tincan-client against a real tincan server (test/harness.js builds the
// binary from the repository root and runs it on 127.0.0.1); the server is
// killed with SIGKILL and restarted on the same port and database in the
// middle of a run. Node.js ≥ 20; run with: node --test test/
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join, TincanError } from '../src/tincan.js';
import { tincan, sleep, until as untilOn } from './harness.js';

let srv = null;
let base = '';
const clients = [];

// Waits for cond; on a timeout the error holds the server's log.
const until = (cond, ms, what) => untilOn(cond, ms, what, srv);
const kill9 = () => srv.kill9();
const startServer = () => srv.start();

let roomN = 0;
const newRoom = () => `js-${process.pid}-${++roomN}`;

// A client whose deliveries are collected in got (messages) and presence.
async function member(room, opts = {}) {
  const got = [];
  const presence = [];
  const c = await join(room, {
    base, storage: null, onMessage: (m) => got.push(m), onPresence: (e) => presence.push(e), ...opts,
  });
  c.got = got;
  c.presence = presence;
  clients.push(c);
  return c;
}

before(async () => {
  srv = await tincan();
  base = srv.base;
  assert.equal(base, `http://127.0.0.1:${srv.port}`);
}, { timeout: 300000 });

after(async () => {
  for (const c of clients) c.close();
  if (srv) await srv.stop();
});

test('the module imports without browser globals', () => {
  assert.equal(typeof globalThis.window, 'undefined');
  assert.equal(typeof globalThis.document, 'undefined');
  assert.equal(typeof globalThis.sessionStorage, 'undefined');
});

test('join: ids, peers, initiator, ICE servers; a bad room and a full room are TincanErrors', async () => {
  const room = newRoom();
  const a = await member(room);
  assert.match(a.id, /^[A-Za-z0-9_-]+$/);
  assert.ok(a.token);
  assert.equal(a.initiator, false);
  assert.deepEqual(a.peers, []);
  assert.ok(a.capacity >= 2);
  assert.ok(Array.isArray(a.iceServers));
  const b = await member(room);
  assert.equal(b.initiator, true);
  assert.deepEqual(b.peers, [a.id]);
  await until(() => a.presence.some((e) => e.type === 'peer-joined' && e.peer === b.id), 10000, 'peer-joined');
  assert.deepEqual(a.peers, [b.id]);
  await assert.rejects(join('bad room!', { base, storage: null }), (err) => err instanceof TincanError && err.code === 'bad_room_name');
  if (a.capacity === 2) {
    await assert.rejects(join(room, { base, storage: null }), (err) => err instanceof TincanError && err.status === 409 && err.code === 'room_full');
  }
  await b.leave();
  await until(() => a.presence.some((e) => e.type === 'peer-left' && e.peer === b.id), 10000, 'peer-left');
  assert.deepEqual(a.peers, []);
});

// Sends from b to a (to all, and to a alone, candidates in a batch among
// them), and checks that a receives each exactly once and in order.
async function exchange(a, b) {
  const sent = [];
  sent.push(await b.send({ type: 'chat', text: 'one' }));
  sent.push(await b.send({ type: 'offer', sdp: 'v=0 offer' }, a.id));
  const cands = await Promise.all([1, 2, 3, 4].map((i) => b.send({ type: 'candidate', candidate: `c${i}` }, a.id)));
  sent.push(...cands);
  sent.push(await b.send({ type: 'chat', text: 'two' }));
  await until(() => a.got.length >= sent.length, 10000, `${sent.length} messages`);
  await sleep(100);
  assert.equal(a.got.length, sent.length);
  assert.deepEqual(a.got.map((m) => m.id).sort((x, y) => x - y), sent.slice().sort((x, y) => x - y));
  for (const m of a.got) assert.equal(m.from, b.id);
  assert.deepEqual(a.got.filter((m) => m.type === 'chat').map((m) => m.text), ['one', 'two']);
  assert.equal(a.got.find((m) => m.type === 'offer').sdp, 'v=0 offer');
  assert.deepEqual(a.got.filter((m) => m.type === 'candidate').map((m) => m.candidate).sort(), ['c1', 'c2', 'c3', 'c4']);
  const ids = a.got.map((m) => m.id);
  assert.deepEqual(ids, ids.slice().sort((x, y) => x - y), 'delivered in id order');
  assert.equal(a.cursor, Math.max(...sent));
}

test('send and receive over SSE read with fetch (no EventSource)', async () => {
  const streams = [];
  const fetchAndLog = (url, init) => {
    if (String(url).includes('/events')) streams.push(url);
    return fetch(url, init);
  };
  const room = newRoom();
  const a = await member(room, { fetch: fetchAndLog });
  const b = await member(room);
  await until(() => a.transport === 'sse' && b.transport === 'sse', 10000, 'both on sse');
  assert.ok(streams.length >= 1, 'the stream went through the fetch option');
  assert.equal(a.stats.sseErrors, 0);
  await exchange(a, b);
  assert.equal(a.transport, 'sse');
  assert.equal(a.stats.polls, 0);
  assert.equal(a.stats.fallback, null);
});

test('send and receive over long-poll (transport: poll)', async () => {
  const room = newRoom();
  const a = await member(room, { transport: 'poll', pollWait: 5 });
  const b = await member(room, { transport: 'poll', pollWait: 5 });
  await until(() => a.transport === 'poll' && b.transport === 'poll', 10000, 'both on poll');
  await exchange(a, b);
  assert.equal(a.stats.sseConnects, 0);
  assert.ok(a.stats.polls > 0);
});

test('kill -9 and restart of the server mid-run: every message exactly once, in order, on SSE and on long-poll', { timeout: 120000 }, async () => {
  // Rooms hold two members: a sender and a receiver in each.
  const roomS = newRoom();
  const roomP = newRoom();
  const lastEventIds = [];
  const fetchAndLog = (url, init) => {
    if (String(url).includes('/events')) lastEventIds.push((init && init.headers && init.headers['Last-Event-ID']) || '');
    return fetch(url, init);
  };
  const reach = [];
  const sse = await member(roomS, { fetch: fetchAndLog, ackEvery: 300, onReachable: (ok) => reach.push(ok) });
  const poll = await member(roomP, { transport: 'poll', pollWait: 2 });
  const pairs = [['sse', sse, await member(roomS)], ['poll', poll, await member(roomP)]];
  await until(() => sse.transport === 'sse' && poll.transport === 'poll', 10000, 'receivers up');

  const N = 60;
  const sends = { sse: [], poll: [] };
  for (let i = 0; i < N; i++) {
    for (const [name, , snd] of pairs) sends[name].push(snd.send({ type: 'seq', n: i }));
    if (i === 19) {
      await Promise.all([...sends.sse, ...sends.poll]); // the first 20 are in before the crash
      await until(() => sse.got.length >= 20 && poll.got.length >= 20, 10000, 'the first 20');
    }
    if (i === 29) {
      // 30..N-1 go while the server is dead and after it comes back.
      await kill9();
      await sleep(300);
      await startServer();
    }
  }
  for (const [name, c] of pairs) {
    const ids = await Promise.all(sends[name]);
    assert.equal(new Set(ids).size, N, `${name}: each send has its own id`);
    assert.deepEqual(ids, ids.slice().sort((x, y) => x - y), `${name}: ids increase in the order sent`);
    await until(() => c.got.length >= N, 60000, `${name}: ${N} messages (has ${c.got.length})`);
    await sleep(200);
    assert.deepEqual(c.got.map((m) => m.n), [...Array(N).keys()], `${name}: every message once, in order`);
    assert.deepEqual(c.got.map((m) => m.id), ids, `${name}: the ids the sends answered`);
  }
  const ids = await Promise.all(sends.sse);
  assert.equal(sse.transport, 'sse');
  assert.ok(sse.stats.sseConnects >= 2, `the stream reconnected (${sse.stats.sseConnects} connects)`);
  assert.ok(reach.includes(false) && reach.at(-1) === true, `onReachable told of the outage and the return: ${reach}`);
  // Each reconnect resumed from what had been delivered: Last-Event-ID.
  assert.equal(lastEventIds[0], '');
  assert.ok(lastEventIds.slice(1).some((v) => Number(v) >= ids[19]), `Last-Event-ID on reconnect: ${lastEventIds}`);
  // And it goes on after the restart.
  for (const [name, c, snd] of pairs) {
    const id = await snd.send({ type: 'seq', n: N });
    await until(() => c.got.length > N, 10000, `${name}: one more`);
    assert.equal(c.got.at(-1).id, id);
    assert.equal(c.got.length, N + 1);
  }
});
