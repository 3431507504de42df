// Scenarios for tincan.js, run in Chromium by TestBrowserTincanJS against the
// real server, directly or behind the misbehaving proxies of the test harness
// (see newHarness in browser_test.go). Each scenario resolves to a short
// description or throws.
import { join, TincanError } from '/static/tincan.js';

class MemoryStorage {
  constructor() { this.m = new Map(); }
  getItem(k) { return this.m.has(k) ? this.m.get(k) : null; }
  setItem(k, v) { this.m.set(k, String(v)); }
  removeItem(k) { this.m.delete(k); }
  get size() { return this.m.size; }
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const newRoom = () => `js-${Math.random().toString(36).slice(2, 12)}`;

let opened = [];

// join, remembering the client so that the runner can clean up.
async function J(room, opts = {}) {
  const c = await join(room, { storage: new MemoryStorage(), ...opts });
  opened.push(c);
  return c;
}

function collect(client) {
  const got = [];
  const presence = [];
  client.onmessage = (m) => got.push(m);
  client.onpresence = (e) => presence.push(e);
  return { got, presence };
}

async function until(pred, ms, what) {
  const end = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(25);
  }
}

function check(cond, msg) {
  if (!cond) throw new Error(msg);
}

// The messages are exactly these texts, in order, with increasing ids.
function expectTexts(got, texts, what) {
  const have = got.map((m) => m.text);
  check(JSON.stringify(have) === JSON.stringify(texts), `${what}: got ${JSON.stringify(have)}, want ${JSON.stringify(texts)}`);
  for (let i = 1; i < got.length; i++) {
    check(got[i].id > got[i - 1].id, `${what}: ids not increasing: ${got.map((m) => m.id)}`);
  }
}

async function sendTexts(client, texts, gap = 0) {
  for (const text of texts) {
    await client.send({ type: 'note', text });
    if (gap) await sleep(gap);
  }
}

const range = (prefix, n) => Array.from({ length: n }, (_, i) => `${prefix}${i + 1}`);

export const scenarios = {
  // The plain path: SSE with a ready frame at once, messages and presence.
  async sse_ready() {
    const room = newRoom();
    const recv = await J(room);
    const c = collect(recv);
    check(!recv.initiator && recv.peers.length === 0, 'first member: initiator false, no peers');
    const snd = await J(room, { transport: 'poll' });
    check(snd.initiator && snd.peers[0] === recv.id, `second member: initiator ${snd.initiator}, peers ${snd.peers}`);
    await until(() => recv.transport === 'sse', 3000, 'SSE ready');
    await until(() => c.presence.some((e) => e.type === 'peer-joined' && e.peer === snd.id), 3000, 'peer-joined');
    await sendTexts(snd, ['a', 'b', 'c']);
    const id = await snd.send({ type: 'note', text: 'direct' }, recv.id);
    await until(() => c.got.length >= 4, 5000, '4 messages');
    expectTexts(c.got, ['a', 'b', 'c', 'direct'], 'sse');
    check(c.got[3].id === id && c.got[3].from === snd.id, 'id and from of a delivered message');
    return `transport sse, ${c.got.length} messages, ids ${c.got.map((m) => m.id)}`;
  },

  // Behind a proxy that buffers whole responses no ready frame ever comes:
  // switch to long-poll after readyTimeout, and lose nothing sent meanwhile.
  async fallback_buffered() {
    const room = newRoom();
    const t0 = Date.now();
    const recv = await J(room, { base: '/buffered' });
    const c = collect(recv);
    let switchedAt = 0;
    recv.ontransport = (name) => { if (name === 'poll') switchedAt = Date.now(); };
    const snd = await J(room, { transport: 'poll' });
    await sendTexts(snd, ['m1', 'm2']); // while the client still waits for the stream
    await until(() => recv.transport === 'poll', 12000, 'fallback to long-poll');
    await sendTexts(snd, ['m3', 'm4', 'm5']);
    await until(() => c.got.length >= 5, 8000, '5 messages');
    await sleep(300);
    expectTexts(c.got, range('m', 5), 'buffered');
    const after = switchedAt - t0;
    check(after >= 4500, `switched after ${after} ms, before the 5 s ready timeout`);
    check(/ready/.test(recv.stats.fallback), `fallback reason ${recv.stats.fallback}`);
    return `switched to long-poll after ${after} ms (${recv.stats.fallback}); 5 messages in order`;
  },

  // An event stream that errors twice: long-poll without waiting for a timeout.
  async fallback_errors() {
    const room = newRoom();
    const t0 = Date.now();
    const recv = await J(room, { base: '/sse-broken' });
    const c = collect(recv);
    const snd = await J(room);
    await until(() => recv.transport === 'poll', 6000, 'fallback to long-poll');
    const after = Date.now() - t0;
    check(after < 4500, `fallback took ${after} ms`);
    check(recv.stats.sseErrors >= 2, `sseErrors ${recv.stats.sseErrors}`);
    await sendTexts(snd, ['x', 'y']);
    await until(() => c.got.length >= 2, 5000, '2 messages');
    expectTexts(c.got, ['x', 'y'], 'after errors');
    return `switched after ${after} ms and ${recv.stats.sseErrors} stream errors (${recv.stats.fallback})`;
  },

  // The stream fails twice, then works: long-poll first, then back to SSE,
  // without losing or repeating a message across either switch.
  async sse_recovers() {
    const room = newRoom();
    const recv = await J(room, { base: '/sse-recovers', sseRetry: 1000 });
    const c = collect(recv);
    const snd = await J(room);
    await until(() => recv.transport === 'poll', 6000, 'fallback to long-poll');
    await sendTexts(snd, ['p1', 'p2']);
    await until(() => c.got.length >= 2, 5000, '2 messages over long-poll');
    const t0 = Date.now();
    await until(() => recv.transport === 'sse', 10000, 'back to SSE');
    const back = Date.now() - t0;
    const polls = recv.stats.polls;
    await sendTexts(snd, ['s1', 's2']);
    await until(() => c.got.length >= 4, 5000, '2 messages over SSE');
    await sleep(1000);
    expectTexts(c.got, ['p1', 'p2', 's1', 's2'], 'across both switches');
    check(recv.stats.polls === polls, `${recv.stats.polls - polls} polls after the switch back`);
    return `fell back (${recv.stats.fallback}), back on SSE ${back} ms after the poll delivered, ${recv.stats.duplicates} duplicates dropped`;
  },

  // On SSE the client acknowledges what arrived every ackEvery: afterwards the
  // server replays nothing of it to a reader without a cursor (and may prune it).
  async sse_acks() {
    const room = newRoom();
    const recv = await J(room, { ackEvery: 300 });
    const c = collect(recv);
    const snd = await J(room);
    await until(() => recv.transport === 'sse', 3000, 'SSE');
    await sendTexts(snd, ['a', 'b', 'c']);
    await until(() => c.got.length >= 3, 5000, '3 messages');
    const last = recv.cursor;
    await until(() => recv.stats.acked >= last, 3000, `an acknowledgement of id ${last}`);
    const res = await fetch(`/rooms/${room}/messages?wait=0`, { headers: { Authorization: `Bearer ${recv.token}` } });
    const body = await res.json();
    check(res.status === 200 && body.messages.length === 0, `after the acknowledgement the server still holds ${JSON.stringify(body.messages)}`);
    return `${recv.stats.acks} acknowledgement(s), up to id ${recv.stats.acked}; nothing left to replay`;
  },

  // A proxy answers 504 to a long wait: ask again at once with a shorter wait.
  async poll_gateway_timeout() {
    const room = newRoom();
    const recv = await J(room, { base: '/slow', transport: 'poll' });
    const c = collect(recv);
    const snd = await J(room);
    await until(() => recv.stats.gatewayTimeouts >= 1, 5000, 'a 504');
    check(recv.pollWait < 1.5, `wait is still ${recv.pollWait} s after a 504 at 1.5 s`);
    await sleep(2500); // polls with the shorter wait answer in time now
    const timeouts = recv.stats.gatewayTimeouts;
    const t = Date.now();
    await sendTexts(snd, ['late']);
    await until(() => c.got.length >= 1, 4000, 'the message');
    expectTexts(c.got, ['late'], '504');
    check(recv.stats.gatewayTimeouts === timeouts, `more 504s with the shorter wait: ${recv.stats.gatewayTimeouts}`);
    return `after ${timeouts} x 504 the wait is ${recv.pollWait} s; message after ${Date.now() - t} ms`;
  },

  // Streams that a proxy cuts every 2 s: reconnect from the last id, no gap, no duplicate.
  async resume_sse_gap() {
    const room = newRoom();
    const recv = await J(room, { base: '/cut', transport: 'sse' });
    const c = collect(recv);
    const snd = await J(room);
    await until(() => recv.transport === 'sse', 3000, 'SSE');
    const texts = range('n', 40);
    const t0 = Date.now();
    await sendTexts(snd, texts, 100);
    const sendMs = Date.now() - t0;
    await until(() => c.got.length >= 40, 15000, '40 messages');
    await sleep(500);
    expectTexts(c.got, texts, 'cut streams');
    check(recv.stats.sseConnects >= 2, `only ${recv.stats.sseConnects} stream(s): no cut happened`);
    check(recv.transport === 'sse', `transport ${recv.transport}`);
    return `${recv.stats.sseConnects} streams, 40 messages once each, in order (sending took ${sendMs} ms)`;
  },

  // A reload: a new client with the same storage resumes the member and its cursor.
  async resume_reload() {
    const room = newRoom();
    const store = new MemoryStorage();
    const a = await J(room, { storage: store });
    const ca = collect(a);
    const snd = await J(room);
    const cs = collect(snd);
    await sendTexts(snd, ['before']);
    await until(() => ca.got.length >= 1, 5000, 'first message');
    a.close(); // the page goes away without leaving
    await sendTexts(snd, ['away1', 'away2']);
    const a2 = await J(room, { storage: store });
    const ca2 = collect(a2);
    check(a2.resumed, 'not resumed');
    check(a2.id === a.id && a2.token === a.token, 'a new identity after a reload');
    check(a2.initiator && a2.peers.includes(snd.id), `resumed: initiator ${a2.initiator}, peers ${a2.peers}`);
    await until(() => ca2.got.length >= 2, 5000, 'the messages sent while away');
    await sleep(400);
    expectTexts(ca2.got, ['away1', 'away2'], 'after the reload');
    await until(() => cs.presence.some((e) => e.type === 'peer-joined' && e.peer === a.id && e.resumed === true), 5000, 'peer-joined resumed:true');
    const info = await (await fetch(`/rooms/${room}`)).json();
    check(info.occupants === 2, `occupants ${info.occupants} after a resume`);
    return `resumed ${a.id} from id ${ca.got[0].id}; got only the 2 messages sent while away`;
  },

  // Duplicate frames in one stream are dropped.
  async dedupe_sse() {
    const room = newRoom();
    const recv = await J(room, { base: '/dup', transport: 'sse' });
    const c = collect(recv);
    const snd = await J(room);
    await until(() => recv.transport === 'sse', 3000, 'SSE');
    const texts = range('d', 10);
    await sendTexts(snd, texts);
    await until(() => c.got.length >= 10, 5000, '10 messages');
    await sleep(500);
    expectTexts(c.got, texts, 'dedupe sse');
    check(recv.stats.duplicates >= 10, `duplicates dropped: ${recv.stats.duplicates}`);
    return `dropped ${recv.stats.duplicates} duplicates`;
  },

  // Duplicate and repeated messages in long-poll answers are dropped.
  async dedupe_poll() {
    const room = newRoom();
    const recv = await J(room, { base: '/dup', transport: 'poll' });
    const c = collect(recv);
    const snd = await J(room);
    const texts = range('p', 10);
    await sendTexts(snd, texts, 30);
    await until(() => c.got.length >= 10, 8000, '10 messages');
    await sleep(500);
    expectTexts(c.got, texts, 'dedupe poll');
    check(recv.stats.duplicates >= 10, `duplicates dropped: ${recv.stats.duplicates}`);
    return `dropped ${recv.stats.duplicates} duplicates in ${recv.stats.polls} polls`;
  },

  // A POST whose answer is lost is retried with the same Idempotency-Key: one message.
  async idempotent_retry() {
    const room = newRoom();
    const recv = await J(room);
    const c = collect(recv);
    const snd = await J(room, { base: '/lost-post' });
    const id1 = await snd.send({ type: 'note', text: 'once' });
    const id2 = await snd.send({ type: 'note', text: 'twice?' });
    await until(() => c.got.length >= 2, 5000, '2 messages');
    await sleep(700);
    expectTexts(c.got, ['once', 'twice?'], 'idempotent');
    check(c.got[0].id === id1 && c.got[1].id === id2, `ids ${c.got.map((m) => m.id)} vs answers ${id1}, ${id2}`);
    check(snd.stats.postRetries >= 2, `postRetries ${snd.stats.postRetries}`);
    return `${snd.stats.postRetries} retries, each message delivered once`;
  },

  // A third member of a room of two gets TincanError room_full.
  async room_full() {
    const room = newRoom();
    await J(room);
    await J(room);
    try {
      await J(room);
    } catch (err) {
      check(err instanceof TincanError, `not a TincanError: ${err}`);
      check(err.status === 409 && err.code === 'room_full', `status ${err.status} code ${err.code}`);
      return `409 ${err.code}: ${err.message}`;
    }
    throw new Error('the third join succeeded');
  },

  // The first member's password locks the room.
  async password() {
    const room = newRoom();
    const a = await J(room, { password: 'sesame' });
    let err = null;
    try { await J(room); } catch (e) { err = e; }
    check(err && err.status === 403 && err.code === 'password_required', `no password: ${err && `${err.status} ${err.code}`}`);
    err = null;
    try { await J(room, { password: 'wrong' }); } catch (e) { err = e; }
    check(err && err.code === 'bad_password', `wrong password: ${err && err.code}`);
    const b = await J(room, { password: 'sesame' });
    check(b.peers.includes(a.id), 'joined with the password');
    return 'no password: 403 password_required; a wrong one: 403 bad_password; the right one joins';
  },

  // leave: the others see peer-left at once, the token is gone, a new join is new.
  // A run of candidates goes out at once, but never before the message sent
  // ahead of it, and the message after the run waits for all of them.
  async send_order() {
    const room = newRoom();
    const recv = await J(room);
    const c = collect(recv);
    const snd = await J(room);
    const sends = [snd.send({ type: 'note', text: 'offer' })];
    for (let i = 0; i < 10; i++) sends.push(snd.send({ type: 'candidate', candidate: `c${i}` }));
    sends.push(snd.send({ type: 'note', text: 'answer' }));
    for (let i = 10; i < 15; i++) sends.push(snd.send({ type: 'candidate', candidate: `c${i}` }));
    const ids = await Promise.all(sends);
    await until(() => c.got.length >= 17, 5000, '17 messages');
    const types = c.got.map((m) => m.type === 'note' ? m.text : 'c');
    const want = ['offer', ...Array(10).fill('c'), 'answer', ...Array(5).fill('c')];
    check(JSON.stringify(types) === JSON.stringify(want), `arrived as ${JSON.stringify(types)}`);
    const cands = c.got.filter((m) => m.type === 'candidate').map((m) => m.candidate).sort();
    check(cands.length === 15 && new Set(cands).size === 15, `candidates ${cands}`);
    check(ids[0] < Math.min(...ids.slice(1, 11)) && Math.max(...ids.slice(1, 11)) < ids[11], `ids ${ids}`);
    return `offer, 10 candidates, answer, 5 candidates: in that order of runs, ids ${ids.join(',')}`;
  },

  // Candidates sent together go out as one batch POST. The message after
  // the batch waits for it, even when the batch is slow to be answered (the
  // proxy holds each batch 300 ms), and the candidates after that message wait
  // for it in turn.
  async batch_order() {
    const room = newRoom();
    const recv = await J(room);
    const c = collect(recv);
    const snd = await J(room, { base: '/slow-batch' });
    const sends = [snd.send({ type: 'note', text: 'offer' })];
    for (const cand of range('c', 20)) sends.push(snd.send({ type: 'candidate', candidate: cand }));
    sends.push(snd.send({ type: 'note', text: 'answer' }));
    for (const cand of range('d', 5)) sends.push(snd.send({ type: 'candidate', candidate: cand }));
    const ids = await Promise.all(sends);
    await until(() => c.got.length >= 27, 5000, '27 messages');
    await sleep(300);
    const got = c.got.map((m) => m.type === 'note' ? m.text : m.candidate);
    const want = ['offer', ...range('c', 20), 'answer', ...range('d', 5)];
    check(JSON.stringify(got) === JSON.stringify(want), `arrived as ${JSON.stringify(got)}`);
    check(JSON.stringify(c.got.map((m) => m.id)) === JSON.stringify(ids), `delivered ids ${c.got.map((m) => m.id)}, send answered ${ids}`);
    check(snd.stats.batches === 2, `${snd.stats.batches} batch POSTs, want 2 (20 candidates, then 5)`);
    return `offer, a batch of 20 candidates, answer, a batch of 5: delivered in that order, ids ${ids.join(',')}`;
  },

  // A batch whose answer is lost is retried with the same Idempotency-Key:
  // each candidate is stored and delivered once, with the id its send got.
  async batch_retry() {
    const room = newRoom();
    const recv = await J(room);
    const c = collect(recv);
    const snd = await J(room, { base: '/lost-post' });
    const sends = [];
    for (const cand of range('r', 8)) sends.push(snd.send({ type: 'candidate', candidate: cand }));
    const ids = await Promise.all(sends);
    await until(() => c.got.length >= 8, 5000, '8 candidates');
    await sleep(700);
    const got = c.got.map((m) => m.candidate);
    check(JSON.stringify(got) === JSON.stringify(range('r', 8)), `delivered ${JSON.stringify(got)}`);
    check(JSON.stringify(c.got.map((m) => m.id)) === JSON.stringify(ids), `delivered ids ${c.got.map((m) => m.id)}, send answered ${ids}`);
    check(snd.stats.batches === 1 && snd.stats.postRetries >= 1, `batches ${snd.stats.batches}, postRetries ${snd.stats.postRetries}`);
    return `one batch, ${snd.stats.postRetries} retry, each candidate delivered once`;
  },

  // A server from before batches answers a batch 400: the candidates of that
  // batch go again one per POST, and so does every candidate after it.
  async batch_fallback() {
    const room = newRoom();
    const recv = await J(room);
    const c = collect(recv);
    const posted = []; // what each message POST carried: 'batch' or a message type
    const fetchAndLog = (url, init) => {
      if (init && init.method === 'POST' && String(url).endsWith('/messages')) {
        const body = JSON.parse(init.body);
        posted.push(Array.isArray(body) ? 'batch' : body.type);
      }
      return fetch(url, init);
    };
    const snd = await J(room, { base: '/no-batch', fetch: fetchAndLog });
    const first = [];
    for (const cand of range('f', 6)) first.push(snd.send({ type: 'candidate', candidate: cand }));
    const ids = await Promise.all(first);
    check(snd.stats.batchFallback && /400/.test(snd.stats.batchFallback), `batchFallback ${snd.stats.batchFallback}`);
    const later = [snd.send({ type: 'note', text: 'between' })];
    for (const cand of range('g', 6)) later.push(snd.send({ type: 'candidate', candidate: cand }));
    ids.push(...await Promise.all(later));
    await until(() => c.got.length >= 13, 5000, '13 messages');
    await sleep(300);
    const cands = c.got.filter((m) => m.type === 'candidate').map((m) => m.candidate).sort();
    check(cands.length === 12 && new Set(cands).size === 12, `candidates delivered: ${cands}`);
    check(c.got.map((m) => m.id).sort((a, b) => a - b).join() === ids.slice().sort((a, b) => a - b).join(), `delivered ids ${c.got.map((m) => m.id)}, send answered ${ids}`);
    const batches = posted.filter((p) => p === 'batch').length;
    check(batches === 1, `${batches} batch POSTs (${posted}), want only the first`);
    check(posted.length === 14, `${posted.length} message POSTs, want 14: the refused batch, then one per message`);
    return `the batch answered 400; then ${posted.length - 1} POSTs of one message each (${snd.stats.batchFallback})`;
  },

  async leave() {
    const room = newRoom();
    const store = new MemoryStorage();
    const a = await J(room, { storage: store });
    const b = await J(room);
    const cb = collect(b);
    check(store.size === 1, 'token not stored');
    await a.leave();
    await until(() => cb.presence.some((e) => e.type === 'peer-left' && e.peer === a.id), 5000, 'peer-left');
    const ev = cb.presence.find((e) => e.type === 'peer-left');
    check(ev.reason === 'left', `reason ${ev.reason}`);
    check(store.size === 0, 'token still stored after leave');
    check(a.closed, 'client not closed after leave');
    const a2 = await J(room, { storage: store });
    check(!a2.resumed && a2.id !== a.id, 'a join after leave resumed the old member');
    return `peer-left reason ${ev.reason}; rejoined as a new member`;
  },
};

window.scenarios = scenarios;

window.runScenario = async (name) => {
  const fn = scenarios[name];
  if (!fn) return { ok: false, detail: `no scenario ${name}` };
  opened = [];
  const li = document.createElement('li');
  li.textContent = `${name}: running`;
  document.getElementById('results').append(li);
  let result;
  try {
    result = { ok: true, detail: String((await fn()) || '') };
  } catch (err) {
    result = { ok: false, detail: String((err && err.stack) || err) };
  }
  for (const c of opened) {
    if (!c.closed) await c.leave().catch(() => {});
  }
  li.textContent = `${name}: ${result.ok ? 'ok' : 'FAILED'}: ${result.detail}`;
  return result;
};
