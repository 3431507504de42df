// The event stream read with fetch (where there is no EventSource), against
// a fake fetch: frames split anywhere, CRLF/CR/LF line ends, comments,
// events the client does not know, and Last-Event-ID on the reconnect.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from '../src/tincan.js';

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function until(cond, ms, what) {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

// A fake server: the join, then for each events request the next of streams
// (an array of chunks; the stream ends after them when end is set, else stays
// open), and empty long-poll answers.
function fakeServer(streams) {
  const events = [];
  const fetch = async (url, init = {}) => {
    const u = new URL(url);
    if (init.method === 'POST' && u.pathname === '/rooms/r/join') {
      return Response.json({ client_id: 'me', token: 'tok', peers: [], capacity: 2, events: '/rooms/r/events', messages: '/rooms/r/messages' }, { status: 201 });
    }
    if (u.pathname === '/rooms/r/events') {
      events.push({ url: u, headers: init.headers || {} });
      const s = streams.shift() || { chunks: [], end: false };
      const enc = new TextEncoder();
      let ctl;
      const body = new ReadableStream({
        async start(c) {
          ctl = c;
          for (const x of s.chunks) { await sleep(2); try { ctl.enqueue(enc.encode(x)); } catch { return; } }
          if (s.end) ctl.close();
        },
      });
      // As fetch does: aborting the request errors its body.
      if (init.signal) init.signal.addEventListener('abort', () => { try { ctl.error(new DOMException('aborted', 'AbortError')); } catch { /* closed */ } });
      return new Response(body, { status: 200, headers: { 'Content-Type': 'text/event-stream' } });
    }
    if (u.pathname === '/rooms/r/messages') {
      return Response.json({ messages: [], next: Number(u.searchParams.get('since')) });
    }
    return new Response('', { status: 404 });
  };
  return { fetch, events };
}

test('frames split anywhere, with CRLF, CR and LF line ends, comments and unknown events', async () => {
  const stream = ': ' + ' '.repeat(100) + '\n\r\n'
    + 'id: 0\r\ndata: {"next":0}\r\nevent: ready\r\nretry: 2000\r\n\r\n'
    + 'id: 1\ndata: {"id":1,"from":"p","type":"chat","text":"a:b"}\n\n'
    + ': keepalive\n\n'
    + 'event: something-new\ndata: {"id":99}\n\n'
    + 'id: 2\rdata: {"id":2,"from":"p",\rdata: "type":"offer","sdp":"v=0"}\r\r'
    + 'id: 2\ndata: {"id":2,"from":"p","type":"offer","sdp":"v=0"}\n\n'
    + 'data:{"id":3,"type":"peer-joined","peer":"q"}\nid:3\n\n';
  // Cut it into pieces of 1 to 7 characters, splitting CRLFs too.
  const chunks = [];
  for (let i = 0, n = 1; i < stream.length; i += n, n = (n % 7) + 1) chunks.push(stream.slice(i, i + n));
  const srv = fakeServer([{ chunks }]);
  const got = [];
  const presence = [];
  const c = await join('r', { base: 'http://fake', storage: null, fetch: srv.fetch, ackEvery: 0, onMessage: (m) => got.push(m), onPresence: (e) => presence.push(e) });
  try {
    await until(() => presence.length === 1, 5000, 'the peer-joined');
    assert.equal(c.transport, 'sse');
    assert.deepEqual(got.map((m) => [m.id, m.type]), [[1, 'chat'], [2, 'offer']]);
    assert.equal(got[0].text, 'a:b');
    assert.equal(got[1].sdp, 'v=0');
    assert.equal(c.stats.duplicates, 1);
    assert.deepEqual(c.peers, ['q']);
    assert.equal(c.cursor, 3);
    assert.equal(srv.events.length, 1);
    assert.equal(srv.events[0].url.searchParams.get('token'), 'tok');
  } finally {
    c.close();
  }
});

test('a stream that ends is reopened with Last-Event-ID: the last id delivered', async () => {
  const srv = fakeServer([
    { chunks: ['id: 0\ndata: {"next":0}\nevent: ready\n\n', 'id: 5\ndata: {"id":5,"from":"p","type":"a"}\n\n'], end: true },
    { chunks: ['id: 5\ndata: {"next":5}\nevent: ready\n\n', 'id: 6\ndata: {"id":6,"from":"p","type":"b"}\n\n'] },
  ]);
  const got = [];
  const c = await join('r', { base: 'http://fake', storage: null, fetch: srv.fetch, ackEvery: 0, onMessage: (m) => got.push(m) });
  try {
    await until(() => got.length === 2, 10000, 'two messages');
    assert.deepEqual(got.map((m) => m.type), ['a', 'b']);
    assert.equal(srv.events.length, 2);
    assert.equal(srv.events[0].headers['Last-Event-ID'], undefined);
    assert.equal(srv.events[1].headers['Last-Event-ID'], '5');
    assert.equal(srv.events[1].url.searchParams.get('since'), '5');
    assert.equal(c.transport, 'sse');
    assert.equal(c.stats.sseConnects, 2);
  } finally {
    c.close();
  }
});
