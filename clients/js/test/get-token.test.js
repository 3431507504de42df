// The getToken option against a real tincan server started with -auth jwt
// (TINCAN_AUTH=jwt, TINCAN_JWT_SECRET): join tokens are minted here as an
// app's backend would (HS256 with node:crypto), and getToken hands them out.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac, randomBytes } from 'node:crypto';
import { join, TincanError } from '../src/tincan.js';
import { tincan } from './harness.js';

const secret = randomBytes(32).toString('hex'); // 64 bytes: more than the 32 the server asks for
let srv = null;
let base = '';
const clients = [];

const b64url = (v) => Buffer.from(typeof v === 'string' ? v : JSON.stringify(v)).toString('base64url');

// mint makes a join token (HS256 JWT) for room, valid for ttl seconds.
function mint({ sub, room, name, ttl = 60 }) {
  const now = Math.floor(Date.now() / 1000);
  const head = `${b64url({ alg: 'HS256', typ: 'JWT' })}.${b64url({ sub, room, name, iat: now, exp: now + ttl })}`;
  return `${head}.${createHmac('sha256', secret).update(head).digest('base64url')}`;
}

let roomN = 0;
const newRoom = () => `jwt-${process.pid}-${++roomN}`;

before(async () => {
  srv = await tincan({ env: { TINCAN_AUTH: 'jwt', TINCAN_JWT_SECRET: secret } });
  base = srv.base;
}, { timeout: 300000 });

after(async () => {
  for (const c of clients) c.close();
  if (srv) await srv.stop();
});

test('the server asks for a join token: a join without one is a 401', async () => {
  await assert.rejects(join(newRoom(), { base, storage: null }), (err) => err instanceof TincanError && err.status === 401);
});

test('getToken is called for each join, and the join brings what it gave', async () => {
  const room = newRoom();
  const calls = [];
  const sent = [];
  // The app's backend: a fresh short-lived token each time it is asked.
  const getToken = async () => {
    calls.push(Date.now());
    await new Promise((r) => setTimeout(r, 5));
    return mint({ sub: `user-${calls.length}`, room, name: `User ${calls.length}` });
  };
  const fetchAndLog = (url, init = {}) => {
    if (String(url).endsWith('/join')) sent.push(init.headers.Authorization);
    return fetch(url, init);
  };
  const a = await join(room, { base, storage: null, getToken, fetch: fetchAndLog });
  clients.push(a);
  assert.equal(calls.length, 1);
  assert.equal(a.identity, 'user-1');
  assert.equal(a.name, 'User 1');
  assert.equal(sent.length, 1);
  assert.match(sent[0], /^Bearer [\w-]+\.[\w-]+\.[\w-]+$/);

  const got = [];
  const b = await join(room, { base, storage: null, getToken, fetch: fetchAndLog, onMessage: (m) => got.push(m) });
  clients.push(b);
  assert.equal(calls.length, 2, 'a second join asks for a second token');
  assert.equal(b.identity, 'user-2');
  assert.notEqual(sent[1], sent[0]);
  assert.deepEqual(b.members.map((m) => m.identity), ['user-1']);

  // The joined members talk as any others do.
  const id = await a.send({ type: 'chat', text: 'hi' });
  const end = Date.now() + 10000;
  while (!got.length && Date.now() < end) await new Promise((r) => setTimeout(r, 20));
  assert.equal(got.length, 1, `b received a's message\n${srv.log.slice(-2000)}`);
  assert.equal(got[0].id, id);
  assert.equal(got[0].from, a.id);

  // getToken wins over a token given too, and a plain function will do.
  const c = await join(newRoom(), { base, storage: null, token: 'not.a.token', getToken: () => mint({ sub: 'plain', room: '*' }) });
  clients.push(c);
  assert.equal(c.identity, 'plain');
});

test('a getToken that throws rejects the join with a clear TincanError, and nothing is sent', async () => {
  const backendDown = new Error('token endpoint: HTTP 503');
  let requests = 0;
  const counting = (url, init) => { requests++; return fetch(url, init); };
  await assert.rejects(
    join(newRoom(), { base, storage: null, fetch: counting, getToken: async () => { throw backendDown; } }),
    (err) => {
      assert.ok(err instanceof TincanError);
      assert.equal(err.code, 'get_token_failed');
      assert.equal(err.status, 0);
      assert.equal(err.cause, backendDown);
      assert.match(err.message, /getToken\(\) failed: token endpoint: HTTP 503/);
      return true;
    },
  );
  await assert.rejects(
    join(newRoom(), { base, storage: null, fetch: counting, getToken: async () => undefined }),
    (err) => err instanceof TincanError && err.code === 'get_token_failed' && /gave no token/.test(err.message),
  );
  assert.equal(requests, 0, 'no join request without a token');
});

test('a token the server refuses (expired, or for another room) rejects the join with the server\'s 401', async () => {
  const room = newRoom();
  await assert.rejects(
    join(room, { base, storage: null, getToken: async () => mint({ sub: 'late', room, ttl: -120 }) }),
    (err) => err instanceof TincanError && err.status === 401 && err.problem !== null,
  );
  await assert.rejects(
    join(room, { base, storage: null, getToken: async () => mint({ sub: 'lost', room: 'another-room' }) }),
    (err) => err instanceof TincanError && err.status === 401 && /another-room/.test(err.message),
  );
});
