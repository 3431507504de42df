// tincan.js: client for the tincan signaling server, in browsers and in Node.js ≥ 20.
//
//   import { join } from '/static/tincan.js';            // or: from 'tincan-client'
//   const client = await join('abc', { onMessage: m => …, onPresence: e => … });
//   await client.send({ type: 'chat', text: 'hi' });       // to every other member
//   await client.send({ type: 'offer', sdp }, peerId);      // to one member
//   await client.leave();                                   // on hang-up only
//
// Receives over Server-Sent Events and switches to long-poll by itself when the
// stream does not work (no `ready` frame within readyTimeout of opening it: a
// buffering proxy; or errors twice in a row), and back once a trial stream works.
// Where there is no EventSource (Node.js) it reads the event stream with fetch.
// Resumes after any gap from the last id it delivered, drops duplicate ids, retries
// POSTs with an Idempotency-Key, sends ICE candidates gathered close together in one
// POST (one per POST to a server that does not take batches), and keeps its token in
// sessionStorage so that a reload re-joins as the same member. Tells when the server
// stops answering (stopped, network gone) and when it answers again; an outage is
// waited out, it does not count as a stream that fails. No dependencies, no build step.
//
// The one source of this file is clients/js/src/tincan.js (the npm package
// tincan-client); static/tincan.js is a copy of it, byte for byte, and
// clients/js/dist/tincan.iife.js, for a plain <script>, is built from it
// (cd clients/js && npm run build).

const ROOM_RE = /^[A-Za-z0-9_-]{1,64}$/;
// The most messages one POST carries (the server's limit), and how long a
// candidate waits for others to go out with it.
const MAX_BATCH = 64;
const BATCH_WINDOW_MS = 5;

/** An error answered by the server (problem+json) or a network failure. */
export class TincanError extends Error {
  constructor(status, problem, message) {
    super(message || (problem && (problem.detail || problem.title)) || (status ? `HTTP ${status}` : 'network error'));
    this.name = 'TincanError';
    /** HTTP status, 0 for a network failure. */
    this.status = status;
    /** The problem's `code` (e.g. "room_full"), or "network" / "http_<status>". */
    this.code = (problem && problem.code) || (status ? `http_${status}` : 'network');
    this.problem = problem || null;
  }
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
// A promise that fulfils when p settles, either way.
const settled = (p) => p.then(() => {}, () => {});

// Exponential backoff with jitter: attempt 0 → base/2..base, doubling up to max.
function backoff(attempt, base = 500, max = 15000) {
  const d = Math.min(max, base * 2 ** Math.min(attempt, 16));
  return d / 2 + Math.random() * (d / 2);
}

function randomKey() {
  if (globalThis.crypto && crypto.randomUUID) {
    try { return crypto.randomUUID(); } catch { /* insecure context */ }
  }
  const b = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
}

// Whether an answer (status 0: none at all) says that the server cannot be
// reached: a proxy's or the server's "unavailable" is no answer from a
// working server.
function unreachable(status) {
  return status === 0 || status === 502 || status === 503 || status === 504;
}

function unreachableWhy(status) {
  return status ? `HTTP ${status}` : 'network error';
}

function retryAfter(res, fallback) {
  const v = Number(res.headers.get('Retry-After'));
  return Number.isFinite(v) && v > 0 ? Math.min(v * 1000, 60000) : fallback;
}

async function problemOf(res) {
  try {
    const text = await res.text();
    return text ? JSON.parse(text) : null;
  } catch {
    return null;
  }
}

// endReason is why the client ends on a 401 or 403: "kicked" or
// "room-closed" when the application removed the member, else
// "unauthorized" or "forbidden".
async function endReason(res) {
  if (res.status === 403) return 'forbidden';
  const p = await problemOf(res);
  if (p && p.code === 'kicked') return 'kicked';
  if (p && p.code === 'room_closed') return 'room-closed';
  return 'unauthorized';
}

// An event stream read with fetch, for where there is no EventSource
// (Node.js): the same surface as the part of EventSource the client uses
// (onmessage, onerror, addEventListener, close). It does not reconnect by
// itself: like an EventSource whose onerror closes it, it reports the error
// once and the client opens a new stream. It sends the last id it read as
// Last-Event-ID, and that of the stream it replaces when given one.
class FetchEventSource {
  constructor(url, fetchFn, lastEventId) {
    this.url = url;
    this.onmessage = null;
    this.onerror = null;
    this.lastEventId = lastEventId ? String(lastEventId) : '';
    this._listeners = new Map();
    this._ac = new AbortController();
    this._closed = false;
    this._run(fetchFn);
  }

  addEventListener(type, fn) {
    if (!this._listeners.has(type)) this._listeners.set(type, new Set());
    this._listeners.get(type).add(fn);
  }

  removeEventListener(type, fn) {
    const set = this._listeners.get(type);
    if (set) set.delete(fn);
  }

  close() {
    this._closed = true;
    this._ac.abort();
  }

  _fail() {
    if (this._closed) return;
    this._closed = true;
    this._ac.abort();
    if (typeof this.onerror === 'function') this.onerror({ type: 'error' });
  }

  _dispatch(type, data) {
    if (this._closed) return;
    const ev = { type, data, lastEventId: this.lastEventId };
    if (type === 'message' && typeof this.onmessage === 'function') this.onmessage(ev);
    const set = this._listeners.get(type);
    if (set) for (const fn of [...set]) fn(ev);
  }

  async _run(fetchFn) {
    try {
      const headers = { Accept: 'text/event-stream' };
      if (this.lastEventId) headers['Last-Event-ID'] = this.lastEventId;
      const res = await fetchFn(this.url, { headers, cache: 'no-store', signal: this._ac.signal });
      const type = (res.headers.get('Content-Type') || '').toLowerCase();
      if (res.status !== 200 || !type.startsWith('text/event-stream') || !res.body) {
        try { if (res.body && res.body.cancel) await res.body.cancel(); } catch { /* ignore */ }
        this._fail();
        return;
      }
      const reader = res.body.getReader();
      const decoder = new TextDecoder();
      let buf = '';
      let event = '';
      let data = [];
      let id = null;
      for (;;) {
        const { value, done } = await reader.read();
        if (this._closed) { reader.cancel().catch(() => {}); return; }
        if (done) break;
        buf += decoder.decode(value, { stream: true });
        // Lines end in CRLF, LF or CR; a CR at the very end may be half a CRLF.
        let start = 0;
        for (let i = 0; i < buf.length; i++) {
          const c = buf[i];
          if (c !== '\n' && c !== '\r') continue;
          if (c === '\r' && i + 1 === buf.length) break;
          const line = buf.slice(start, i);
          if (c === '\r' && buf[i + 1] === '\n') i++;
          start = i + 1;
          if (line === '') {
            // The end of a frame: its id counts even without data.
            if (id !== null) this.lastEventId = id;
            if (data.length) this._dispatch(event || 'message', data.join('\n'));
            if (this._closed) return;
            event = ''; data = []; id = null;
            continue;
          }
          if (line[0] === ':') continue; // a comment
          const colon = line.indexOf(':');
          const field = colon < 0 ? line : line.slice(0, colon);
          let val = colon < 0 ? '' : line.slice(colon + 1);
          if (val[0] === ' ') val = val.slice(1);
          if (field === 'data') data.push(val);
          else if (field === 'event') event = val;
          else if (field === 'id') { if (!val.includes('\0')) id = val; }
          // retry: this stream does not reconnect by itself; the client decides when.
        }
        buf = buf.slice(start);
      }
      this._fail(); // the server ended the stream
    } catch {
      this._fail();
    }
  }
}

function defaultStorage() {
  try { return globalThis.sessionStorage || null; } catch { return null; }
}

/**
 * Join a room and start receiving.
 *
 * @param {string} room  name matching ^[A-Za-z0-9_-]{1,64}$
 * @param {object} [opts]
 * @param {string} [opts.base='']           URL prefix of the server ("" = this origin)
 * @param {string} [opts.password]          room password
 * @param {string} [opts.token]             the application's join token (a JWT), for a server started with
 *                                          -auth jwt: the join sends it as Authorization: Bearer; the same
 *                                          person joining again (same `sub`) resumes its seat
 * @param {function} [opts.getToken]      async () => the join token: called before each join request, instead of
 *                                          `token`, so that the app can fetch a fresh short-lived JWT from its
 *                                          backend each time; if it throws (or gives no token) the join rejects
 *                                          with a TincanError of code "get_token_failed" (its `cause`: what it threw)
 * @param {'auto'|'sse'|'poll'} [opts.transport='auto']
 * @param {number} [opts.readyTimeout=5000] ms to wait for the SSE `ready` frame
 * @param {number} [opts.sseRetry=60000]    after falling back to long-poll, ms before the event stream is tried again (doubling up to 16×)
 * @param {number} [opts.ackEvery=30000]    on SSE, ms between acknowledgements of what arrived, so that the server can prune it (0: never)
 * @param {number} [opts.pollWait=25]       long-poll wait in seconds
 * @param {Storage|null} [opts.storage=sessionStorage] where the token is kept (null: nowhere)
 * @param {boolean} [opts.start=true]       start receiving at once (else call client.start())
 * @param {function} [opts.onMessage]       (msg) for every message from another member
 * @param {function} [opts.onPresence]      (event) for peer-joined / peer-left
 * @param {function} [opts.onTransport]     (name, reason) when the receive transport changes
 * @param {function} [opts.onReachable]     (reachable, reason) when the server stops answering (false, and
 *                                          why: "network error", "HTTP 503", "the browser is offline") and
 *                                          when it answers again (true); client.reachable says which is true now
 * @param {function} [opts.onClose]         ({reason}) when the client stops for good
 * @param {function} [opts.fetch=globalThis.fetch] the fetch to make every request with (also the event
 *                                          stream's where there is no EventSource, as in Node.js)
 * @returns {Promise<Client>} rejects with TincanError (code room_full, password_required, bad_password, …)
 */
export async function join(room, opts = {}) {
  if (!ROOM_RE.test(String(room))) {
    throw new TincanError(400, { code: 'bad_room_name', detail: `bad room name ${JSON.stringify(room)}` });
  }
  const client = new Client(String(room), opts);
  await client._join();
  if (opts.start !== false) client.start();
  return client;
}

export class Client {
  constructor(room, opts) {
    this.room = room;
    this.base = String(opts.base || '').replace(/\/+$/, '');
    this.onmessage = opts.onMessage || null;
    this.onpresence = opts.onPresence || null;
    this.ontransport = opts.onTransport || null;
    this.onclose = opts.onClose || null;
    this.onreachable = opts.onReachable || null;
    this.id = null;
    this.token = null;
    this.initiator = false;
    this.resumed = false;
    this.peers = [];
    this.capacity = 0;
    this.iceServers = [];
    /** 'sse' | 'poll' | null (not yet receiving) */
    this.transport = null;
    /** highest message id delivered */
    this.cursor = 0;
    this.closed = false;
    /** false while the server does not answer (after the join, which answered) */
    this.reachable = true;
    /** current long-poll wait in seconds (shortened after a 502/504) */
    this.pollWait = opts.pollWait ?? 25;
    this.stats = { sseConnects: 0, sseErrors: 0, polls: 0, gatewayTimeouts: 0, duplicates: 0, postRetries: 0, batches: 0, batchFallback: null, acks: 0, acked: 0, fallback: null };
    this._password = opts.password;
    this._jwt = opts.token ? String(opts.token) : null;
    this._getToken = typeof opts.getToken === 'function' ? opts.getToken : null;
    this._mode = ['sse', 'poll'].includes(opts.transport) ? opts.transport : 'auto';
    this._readyTimeout = opts.readyTimeout ?? 5000;
    this._sseRetryAfter = this._sseRetryBase = opts.sseRetry ?? 60000;
    this._sseRetryTimer = null;
    this._ackEvery = opts.ackEvery ?? 30000;
    this._ackTimer = null;
    this._storage = opts.storage === undefined ? defaultStorage() : opts.storage;
    this._key = `tincan:${this.base}:${room}`;
    this._fetch = opts.fetch || globalThis.fetch.bind(globalThis);
    this._sent = Promise.resolve(); // settles when every send so far has
    this._barrier = Promise.resolve(); // settles when the last non-candidate and all before it have
    this._batch = null; // the candidates waiting to go out together
    this._batching = true; // false once the server refused a batch as such
    this._batchWindow = BATCH_WINDOW_MS;
    this._es = null;
    this._esLost = null; // ends the open stream as if it had failed
    this._outages = 0; // stream retries since the server last answered
    this._pollAbort = null;
    this._pollOn = false;
    this._pollGen = 0;
    this._wakers = new Set();
    // Back online: wake the naps, and reconnect the stream, which may have
    // died without a word while the network was gone.
    this._onOnline = () => { this._wake(); if (this._esLost) this._esLost(); };
    this._onOffline = () => this._reach(false, 'the browser is offline');
    this._releaseLock = null;
    this._started = false;
  }

  _url(path) { return this.base + path; }

  _load() {
    try {
      const v = this._storage && this._storage.getItem(this._key);
      return v ? JSON.parse(v) : null;
    } catch { return null; }
  }

  _save() {
    if (!this._storage || !this.token) return;
    try {
      this._storage.setItem(this._key, JSON.stringify({ id: this.id, token: this.token, cursor: this.cursor }));
    } catch { /* quota or disabled storage: resume just will not work */ }
  }

  _forget() {
    try { this._storage && this._storage.removeItem(this._key); } catch { /* ignore */ }
  }

  // Hold a Web Lock named after the member while this client lives, so that a
  // duplicated tab (which copies sessionStorage) does not resume the same member.
  async _lock(id, waitMs) {
    if (!(globalThis.navigator && navigator.locks && navigator.locks.request)) return true;
    const name = `tincan-member:${this.base}:${this.room}:${id}`;
    return new Promise((resolve) => {
      const ac = new AbortController();
      const t = waitMs > 0 ? setTimeout(() => ac.abort(), waitMs) : 0;
      const options = waitMs > 0 ? { signal: ac.signal } : { ifAvailable: true };
      navigator.locks.request(name, options, (lock) => {
        clearTimeout(t);
        if (!lock) { resolve(false); return undefined; }
        resolve(true);
        return new Promise((release) => { this._releaseLock = release; });
      }).catch(() => resolve(false));
    });
  }

  _unlock() {
    if (this._releaseLock) { this._releaseLock(); this._releaseLock = null; }
  }

  async _join() {
    let saved = this._load();
    if (saved && saved.token && !(await this._lock(saved.id, 1500))) {
      saved = null; // another tab of this browser is this member: take a new seat
    }
    const body = this._password != null && this._password !== '' ? { password: String(this._password) } : {};
    for (let attempt = 0; ; attempt++) {
      const headers = { 'Content-Type': 'application/json' };
      // A join token takes precedence: its `sub` resumes the same seat anyway.
      // getToken gives a fresh one for every join request.
      const jwt = this._getToken ? await this._freshToken() : this._jwt;
      if (jwt) headers.Authorization = `Bearer ${jwt}`;
      else if (saved && saved.token) headers.Authorization = `Bearer ${saved.token}`;
      let res;
      try {
        res = await this._fetch(this._url(`/rooms/${this.room}/join`), {
          method: 'POST', headers, body: JSON.stringify(body), cache: 'no-store',
        });
      } catch (err) {
        if (attempt >= 4) { this._unlock(); throw new TincanError(0, null, `join: ${err.message}`); }
        await sleep(backoff(attempt));
        continue;
      }
      if (res.status === 200 || res.status === 201) {
        const a = await res.json();
        this.id = a.client_id;
        this.token = a.token;
        this.initiator = !!a.initiator;
        this.peers = Array.isArray(a.peers) ? a.peers.slice() : [];
        /** the other members with what the application's join tokens say of them: {client_id, identity, name, metadata} */
        this.members = Array.isArray(a.members) ? a.members.slice() : [];
        /** this member's identity and name from its join token, if any */
        this.identity = a.identity || null;
        this.name = a.name || null;
        this.capacity = a.capacity || 0;
        this.iceServers = a.ice_servers || [];
        this._eventsPath = a.events || `/rooms/${this.room}/events`;
        this._messagesPath = a.messages || `/rooms/${this.room}/messages`;
        this.resumed = res.status === 200 && !!saved && saved.id === this.id;
        this.cursor = this.resumed ? Number(saved.cursor) || 0 : 0;
        if (!this.resumed) {
          this._unlock();
          await this._lock(this.id, 0);
        }
        this._save();
        return;
      }
      const problem = await problemOf(res);
      const retriable = res.status === 429 || res.status === 502 || res.status === 503 || res.status === 504;
      if (!retriable || attempt >= 4) { this._unlock(); throw new TincanError(res.status, problem); }
      await sleep(retryAfter(res, backoff(attempt)));
    }
  }

  // Ask the app for a join token (opts.getToken); its failure is the join's.
  async _freshToken() {
    let tok;
    try {
      tok = await this._getToken();
    } catch (err) {
      this._unlock();
      const e = new TincanError(0, { code: 'get_token_failed' }, `join: getToken() failed: ${(err && err.message) || err}`);
      e.cause = err;
      throw e;
    }
    if (typeof tok !== 'string' || tok === '') {
      this._unlock();
      throw new TincanError(0, { code: 'get_token_failed' }, `join: getToken() gave no token (${tok === '' ? 'an empty string' : typeof tok})`);
    }
    return tok;
  }

  /** Start receiving (only needed with opts.start === false). */
  start() {
    if (this._started || this.closed) return;
    this._started = true;
    if (globalThis.addEventListener) {
      globalThis.addEventListener('online', this._onOnline);
      globalThis.addEventListener('offline', this._onOffline);
    }
    if (this._mode === 'poll') this._startPoll(null);
    else this._startSSE(0);
  }

  // Sleep for ms, or less: the browser coming back online, or close(), wakes it.
  _nap(ms) {
    return new Promise((resolve) => {
      const done = () => { clearTimeout(t); this._wakers.delete(done); resolve(); };
      const t = setTimeout(done, ms);
      this._wakers.add(done);
    });
  }

  _wake() {
    for (const done of [...this._wakers]) done();
  }

  _setTransport(name, reason) {
    if (this.transport === name) return;
    this.transport = name;
    this._call(this.ontransport, name, reason || null);
  }

  // The server answered (ok), or could not be reached (why): onReachable
  // hears of each change.
  _reach(ok, why) {
    if (this.closed || this.reachable === ok) return;
    this.reachable = ok;
    if (ok) this._outages = 0;
    this._call(this.onreachable, ok, ok ? null : why);
  }

  // fetch, telling _reach what the outcome says of the server. An aborted
  // request says nothing.
  async _request(url, init) {
    let res;
    try {
      res = await this._fetch(url, init);
    } catch (err) {
      if (!(err && err.name === 'AbortError')) this._reach(false, unreachableWhy(0));
      throw err;
    }
    if (unreachable(res.status)) this._reach(false, unreachableWhy(res.status));
    else this._reach(true);
    return res;
  }

  _call(fn, ...args) {
    if (typeof fn !== 'function') return;
    try { fn(...args); } catch (err) { console.error('tincan: callback failed', err); }
  }

  // ---- Server-Sent Events ----

  // A trial stream runs beside the long-poll after a fallback: once it
  // delivers `ready`, the poll stops and the stream carries on as usual; if
  // it fails, the poll goes on and the stream is tried again later.
  _startSSE(failures, trial = false) {
    if (this.closed) return;
    const q = new URLSearchParams({ token: this.token, since: String(this.cursor) });
    const url = `${this._url(this._eventsPath)}?${q}`;
    const es = typeof EventSource === 'undefined'
      ? new FetchEventSource(url, this._fetch, this.cursor)
      : new EventSource(url);
    this._es = es;
    this.stats.sseConnects++;
    let readyAt = 0;
    const done = () => {
      clearTimeout(timer);
      es.close();
      if (this._es === es) this._es = null;
      if (this._esLost === lost) this._esLost = null;
    };
    // The stream failed, or is given up: find out why, and go on.
    const lost = async () => {
      if (this._es !== es) return;
      done();
      if (this.closed) return;
      if (trial) { this._retrySSELater(); return; }
      // A stream that delivered `ready` and then lived a while is healthy: this is a
      // gap (restart, proxy timeout, network change); reconnect from the cursor.
      // An error before `ready`, or right after it, counts as a failure.
      const healthy = readyAt && Date.now() - readyAt >= 1000;
      // Unless the server cannot be reached at all: a plain request that fails
      // too says this is an outage, not a stream that does not work on this
      // path. It is waited out, counting no failure.
      const status = await this._probe();
      if (this.closed) return;
      if (status === 401 || status === 403) { this._end(status === 401 ? 'unauthorized' : 'forbidden'); return; }
      if (unreachable(status)) { this._sseRetry(failures, true); return; }
      const n = healthy ? 0 : failures + 1;
      // (The probe was a long-poll that worked: the fallback's transport works.)
      if (this._mode === 'auto' && n >= 2) { this._fallback('event stream failed twice', true); return; }
      this._sseRetry(n);
    };
    if (!trial) this._esLost = lost; // a trial has its own schedule
    const timer = setTimeout(() => {
      if (readyAt || this._es !== es) return;
      if (this._mode === 'sse' && !trial) { lost(); return; }
      done();
      if (trial) { this._retrySSELater(); return; }
      this._fallback(`no ready frame within ${this._readyTimeout} ms`);
    }, this._readyTimeout);
    const markReady = () => {
      if (readyAt) return;
      readyAt = Date.now();
      clearTimeout(timer);
      if (trial) {
        trial = false;
        this._stopPoll();
        this._sseRetryAfter = this._sseRetryBase; // a later fallback starts the wait afresh
        this._esLost = lost;
      }
      this._reach(true);
      this._setTransport('sse');
      this._startAcks();
    };
    es.addEventListener('ready', markReady);
    es.onmessage = (ev) => {
      markReady();
      let msg;
      try { msg = JSON.parse(ev.data); } catch { return; }
      this._deliver(msg);
    };
    es.onerror = () => {
      if (this._es !== es || this.closed) return;
      this.stats.sseErrors++;
      lost();
    };
  }

  // The server prunes a message once its recipients acknowledged it, and an
  // event stream acknowledges only when it reconnects. So while on SSE, say
  // every ackEvery what arrived, with a long-poll that does not wait (its
  // answer, usually empty, goes through the same duplicate check). When that
  // request finds no server, the stream is reconnected: it may be dead
  // without knowing it.
  _startAcks() {
    if (this._ackTimer || !(this._ackEvery > 0)) return;
    this._ackTimer = setInterval(async () => {
      const upto = this.cursor;
      if (this.closed || this.transport !== 'sse' || upto <= this.stats.acked) return;
      let res;
      try {
        res = await this._request(`${this._url(this._messagesPath)}?since=${upto}&wait=0`, {
          headers: { Authorization: `Bearer ${this.token}` }, cache: 'no-store',
        });
      } catch {
        if (this._esLost) this._esLost();
        return; // the next tick tries again
      }
      if (res.status !== 200) return;
      try {
        const body = await res.json();
        this.stats.acked = Math.max(this.stats.acked, upto);
        this.stats.acks++;
        for (const m of body.messages || []) this._deliver(m);
      } catch { /* the next tick tries again */ }
    }, this._ackEvery);
  }

  // Reconnect the stream after a pause: short after a healthy stream's gap,
  // growing with failures, and during an outage growing up to 15 s (coming
  // back online ends the pause at once).
  async _sseRetry(failures, outage = false) {
    if (this.closed) return;
    let pause;
    if (outage) pause = backoff(this._outages++, 1000, 15000);
    else pause = failures === 0 ? 250 + Math.random() * 500 : backoff(failures - 1, 1000, 30000);
    await this._nap(pause);
    this._startSSE(failures);
  }

  // A long-poll that does not wait: it delivers what the stream missed, and
  // its status (0: no answer) says whether the server is there and the token
  // still works.
  async _probe() {
    try {
      const res = await this._request(`${this._url(this._messagesPath)}?since=${this.cursor}&wait=0`, {
        headers: { Authorization: `Bearer ${this.token}` }, cache: 'no-store',
      });
      if (res.ok) {
        const body = await res.json();
        for (const m of body.messages || []) this._deliver(m);
      }
      return res.status;
    } catch { return 0; }
  }

  // Switch to long-poll; pollWorks: a long-poll has just been answered.
  _fallback(reason, pollWorks = false) {
    this.stats.fallback = reason;
    this._startPoll(reason);
    if (pollWorks) this._setTransport('poll', reason);
    this._retrySSELater();
  }

  // The cause of a fallback (a proxy, a network) may go away: try the event
  // stream again after sseRetry, then after twice as long, up to 16 times.
  _retrySSELater() {
    if (this.closed || this._mode !== 'auto' || this._sseRetryTimer) return;
    const after = this._sseRetryAfter;
    this._sseRetryAfter = Math.min(after * 2, this._sseRetryBase * 16);
    this._sseRetryTimer = setTimeout(() => {
      this._sseRetryTimer = null;
      if (this._pollOn && !this._es) this._startSSE(0, true);
    }, after);
  }

  // ---- long-poll ----

  // Each start of the long-poll is a generation: a loop stopped while its
  // request is in flight ends at its next step, even if a new loop has begun.
  _startPoll(reason) {
    if (this.closed || this._pollOn) return;
    this._pollOn = true;
    this._pollReason = reason;
    this._pollLoop(++this._pollGen);
  }

  _stopPoll() {
    this._pollOn = false;
    this._pollGen++;
    if (this._pollAbort) this._pollAbort.abort();
    this._wake();
  }

  async _pollLoop(gen) {
    let attempt = 0;
    while (!this.closed && gen === this._pollGen) {
      // While the server is not reachable, polls do not wait: the first
      // answer says at once that it is back (a waiting poll answers late).
      const wait = this.reachable ? this.pollWait : 0;
      const ac = new AbortController();
      this._pollAbort = ac;
      // A poll that neither answers nor fails is a dead connection: give up on it.
      const guard = setTimeout(() => ac.abort(), (wait + 20) * 1000);
      const started = Date.now();
      let res, body;
      try {
        this.stats.polls++;
        res = await this._fetch(`${this._url(this._messagesPath)}?since=${this.cursor}&wait=${wait}`, {
          headers: { Authorization: `Bearer ${this.token}` }, cache: 'no-store', signal: ac.signal,
        });
        if (res.status === 200) body = await res.json();
      } catch {
        res = null;
      } finally {
        clearTimeout(guard);
        if (this._pollAbort === ac) this._pollAbort = null;
      }
      if (this.closed || gen !== this._pollGen) return;
      if (res && res.status === 200 && body) {
        attempt = 0;
        this._reach(true);
        this._setTransport('poll', this._pollReason);
        for (const m of body.messages || []) this._deliver(m);
        if (Number.isFinite(body.next) && body.next > this.cursor) { this.cursor = body.next; this._save(); }
        continue;
      }
      const elapsed = (Date.now() - started) / 1000;
      if (res && (res.status === 502 || res.status === 504) && elapsed >= 1) {
        // A proxy gave up waiting for us: ask again at once, waiting less.
        // (One that answers at once has no server behind it: an outage.)
        this.stats.gatewayTimeouts++;
        const shorter = Math.max(0.5, Math.round(Math.min(wait / 2, elapsed * 0.6) * 10) / 10);
        if (shorter < wait) { this.pollWait = shorter; continue; }
      }
      // (A 502 or 504 that shortened the wait was a proxy's timeout, not an outage.)
      const status = res ? res.status : 0;
      if (unreachable(status)) this._reach(false, unreachableWhy(status));
      else this._reach(true);
      if (res && (res.status === 401 || res.status === 403)) {
        this._end(await endReason(res));
        return;
      }
      const delay = res && (res.status === 429 || res.status === 503) ? retryAfter(res, backoff(attempt)) : backoff(attempt);
      attempt++;
      await this._nap(delay);
    }
  }

  // ---- delivery ----

  _deliver(msg) {
    if (msg && (msg.type === 'kicked' || msg.type === 'room-closed') && msg.id === undefined && msg.from === undefined) {
      // The application removed this member, or closed the room: the last frame.
      this._end(msg.type);
      return;
    }
    if (!msg || typeof msg !== 'object' || !Number.isFinite(msg.id)) return;
    if (msg.id <= this.cursor) { this.stats.duplicates++; return; }
    this.cursor = msg.id;
    this._save();
    const server = msg.from === undefined;
    if (server && msg.type === 'peer-joined') {
      if (msg.peer && !this.peers.includes(msg.peer)) this.peers.push(msg.peer);
      this._call(this.onpresence, msg);
    } else if (server && msg.type === 'peer-left') {
      this.peers = this.peers.filter((p) => p !== msg.peer);
      this._call(this.onpresence, msg);
    } else if (!server) {
      this._call(this.onmessage, msg);
    }
  }

  // ---- sending ----

  /**
   * Send a message (a JSON object with a `type`) to every other member, or to one.
   * POSTs go out in order, each retried with the same Idempotency-Key; resolves to
   * the message id. One exception to the order: `candidate` messages sent close
   * together (within batchWindow ms of the first, at most 64) go out as one batch
   * POST, after everything sent before them, and batches of one run go out without
   * waiting for each other, because ICE does not care in which order candidates
   * arrive and each POST waits for a commit to disk: a call's setup then waits for
   * a commit or two instead of one per candidate. Any other message waits for every
   * send before it, candidates included.
   */
  send(msg, to) {
    const body = { ...msg };
    delete body.id;
    delete body.from;
    if (to) body.to = to;
    if (body.type === 'candidate') return this._sendCandidate(body);
    this._closeBatch(); // what follows this message waits for it
    const key = randomKey();
    const p = this._sent.then(() => this._post(body, key)).then((answer) => answer.id);
    this._sent = this._barrier = settled(p);
    return p;
  }

  // A candidate joins the open batch, or opens one.
  _sendCandidate(body) {
    const batch = this._batch || this._openBatch();
    return new Promise((resolve, reject) => {
      batch.items.push({ body, resolve, reject });
      if (batch.items.length >= MAX_BATCH) this._closeBatch();
    });
  }

  // A batch collects candidates until batchWindow ms have passed since its
  // first and everything sent before it has gone out (until then they could
  // not leave anyway), until it is full, or until a message other than a
  // candidate is sent; then it is posted.
  _openBatch() {
    const barrier = this._barrier;
    let close;
    const batch = { items: [], timer: 0, closed: new Promise((resolve) => { close = resolve; }) };
    batch.close = () => { clearTimeout(batch.timer); close(); };
    this._batch = batch;
    const windowOver = new Promise((resolve) => { batch.timer = setTimeout(resolve, this._batchWindow); });
    Promise.all([barrier, windowOver]).then(() => { if (this._batch === batch) this._closeBatch(); });
    const done = Promise.all([barrier, batch.closed]).then(() => this._postBatch(batch.items));
    this._sent = Promise.all([this._sent, done]);
    return batch;
  }

  _closeBatch() {
    const batch = this._batch;
    if (!batch) return;
    this._batch = null;
    batch.close();
  }

  // Post a batch's candidates and settle each one's send. A batch refused
  // because of one of its elements, or for its size, is sent again one
  // candidate per POST, so that each gets its own answer; a 400 that names no
  // element comes from a server that does not take batches: from then on
  // every candidate goes alone.
  async _postBatch(items) {
    if (items.length > 1 && this._batching) {
      try {
        const answer = await this._post(items.map((it) => it.body), randomKey());
        const ids = answer && answer.ids;
        if (!Array.isArray(ids) || ids.length !== items.length) throw new TincanError(0, null, 'send: the answer to a batch has no ids');
        this.stats.batches++;
        items.forEach((it, i) => it.resolve(ids[i]));
        return;
      } catch (err) {
        const names = err instanceof TincanError && /^message \d+:/.test((err.problem && err.problem.detail) || '');
        if (err.status === 400 && !names) {
          this._batching = false;
          this.stats.batchFallback = `a batch answered 400 (${err.message})`;
        } else if (!(names || err.status === 413)) {
          for (const it of items) it.reject(err);
          return;
        }
      }
    }
    await Promise.all(items.map((it) => this._post(it.body, randomKey()).then((a) => it.resolve(a.id), it.reject)));
  }

  // POST one message (an object) or a batch (an array) and return the answer
  // ({id} or {ids}), retrying with the same Idempotency-Key.
  async _post(body, key) {
    const data = JSON.stringify(body);
    for (let attempt = 0; ; attempt++) {
      if (this.closed) throw new TincanError(0, { code: 'closed' }, 'client is closed');
      let res;
      try {
        res = await this._request(this._url(this._messagesPath), {
          method: 'POST',
          headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${this.token}`, 'Idempotency-Key': key },
          body: data,
          cache: 'no-store',
        });
      } catch (err) {
        res = null;
        if (attempt >= 7) throw new TincanError(0, null, `send: ${err.message}`);
      }
      if (res && res.status === 201) return res.json();
      if (res) {
        const retriable = res.status === 429 || res.status >= 500;
        if (!retriable || attempt >= 7) {
          const err = new TincanError(res.status, await problemOf(res));
          if (res.status === 401) this._end('unauthorized');
          throw err;
        }
      }
      this.stats.postRetries++;
      await this._nap(res ? retryAfter(res, backoff(attempt, 250)) : backoff(attempt, 250));
    }
  }

  /** Fresh ICE servers (TURN credentials expire), e.g. before an ICE restart. */
  async fetchIceServers() {
    const res = await this._request(this._url('/ice-servers'), {
      headers: { Authorization: `Bearer ${this.token}` }, cache: 'no-store',
    });
    if (!res.ok) throw new TincanError(res.status, await problemOf(res));
    const body = await res.json();
    this.iceServers = body.ice_servers || [];
    return this.iceServers;
  }

  // ---- ending ----

  _stop() {
    this.closed = true;
    this._closeBatch(); // its sends fail at once
    if (this._es) { this._es.close(); this._es = null; }
    if (this._pollAbort) this._pollAbort.abort();
    clearTimeout(this._sseRetryTimer);
    clearInterval(this._ackTimer);
    if (globalThis.removeEventListener) {
      globalThis.removeEventListener('online', this._onOnline);
      globalThis.removeEventListener('offline', this._onOffline);
    }
    this._wake();
    this._unlock();
  }

  _end(reason) {
    if (this.closed) return;
    if (reason === 'unauthorized') this._forget(); // the server no longer knows this token
    this._stop();
    this._call(this.onclose, { reason });
  }

  /** Stop receiving but keep the seat (a later join with the same storage resumes it). */
  close() {
    this._end('closed');
  }

  /** Leave the room for good (hang-up). Never call this on page unload. */
  async leave() {
    const token = this.token;
    this._forget();
    this._end('left');
    if (!token) return;
    try {
      const res = await this._fetch(this._url(`/rooms/${this.room}/leave`), {
        method: 'POST', headers: { Authorization: `Bearer ${token}` }, keepalive: true, cache: 'no-store',
      });
      if (!res.ok && res.status !== 401) throw new TincanError(res.status, await problemOf(res));
    } catch (err) {
      if (err instanceof TincanError) throw err;
      throw new TincanError(0, null, `leave: ${err.message}`);
    }
  }
}
