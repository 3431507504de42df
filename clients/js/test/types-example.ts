// A typed use of tincan-client: `npx tsc --noEmit -p .` checks it (it is not run).
import { join, Client, TincanError, type Message, type PresenceEvent, type JoinOptions } from '../src/tincan.js';

export async function example(base: string): Promise<Client | null> {
  const got: Message[] = [];
  const opts: JoinOptions = {
    base,
    storage: null,
    transport: 'auto',
    fetch: (url, init) => fetch(url, init),
    onMessage: (m) => { got.push(m); console.log(m.from, m.type, m.id); },
    onPresence: (ev: PresenceEvent) => {
      if (ev.type === 'peer-left') console.log(ev.peer, 'left:', ev.reason);
      else console.log(ev.peer, 'joined', ev.resumed === true);
    },
    onTransport: (name, reason) => console.log('now on', name satisfies 'sse' | 'poll', reason),
    onClose: ({ reason }) => console.log('closed:', reason),
  };
  let client: Client;
  try {
    client = await join('my-room', opts);
  } catch (err) {
    if (err instanceof TincanError && err.code === 'room_full') return null;
    throw err;
  }
  const id: number = await client.send({ type: 'chat', text: 'hi' });
  if (client.peers.length) await client.send({ type: 'offer', sdp: 'v=0' }, client.peers[0]);
  const ice = await client.fetchIceServers();
  const urls: string | string[] = ice[0]?.urls ?? [];
  console.log(id, urls, client.iceServers, client.transport, client.cursor, client.stats.polls);
  await join('other-room', { base, fetch: globalThis.fetch, storage: null, start: false }).then((c) => { c.start(); c.close(); });
  // A fresh short-lived join token from the app's backend for each join (server -auth jwt).
  const getToken = async (): Promise<string> => {
    const res = await fetch('/api/tincan-token?room=my-room', { method: 'POST' });
    if (!res.ok) throw new Error(`token endpoint: HTTP ${res.status}`);
    return ((await res.json()) as { token: string }).token;
  };
  try {
    (await join('my-room', { base, storage: null, getToken })).close();
  } catch (err) {
    if (err instanceof TincanError && err.code === 'get_token_failed') console.log('no token:', err.message, err.cause);
  }
  await join('my-room', { base, storage: null, getToken: () => 'a.static.jwt' });
  // @ts-expect-error getToken gives a string, not an object
  await join('my-room', { base, getToken: async () => ({ token: 'x' }) });
  // @ts-expect-error a message needs a type
  await client.send({ text: 'no type' });
  await client.leave();
  return client;
}
