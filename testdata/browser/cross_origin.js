// A page on another origin imports tincan.js from the server (?server=URL) and
// talks to it there: the server must run with -allow-origin <this origin>.
const server = new URLSearchParams(location.search).get('server');

async function run() {
  const { join } = await import(`${server}/static/tincan.js`);
  const room = `xo-${Math.random().toString(36).slice(2, 12)}`;
  const a = await join(room, { base: server, storage: null });
  const got = [];
  a.onmessage = (m) => got.push(m);
  const b = await join(room, { base: server, storage: null, transport: 'poll' });
  const id = await b.send({ type: 'note', text: 'across origins' });
  const end = Date.now() + 8000;
  while (!(got.length && a.transport === 'sse')) {
    if (Date.now() > end) throw new Error(`timed out: ${got.length} messages, transport ${a.transport}`);
    await new Promise((r) => setTimeout(r, 25));
  }
  if (got[0].id !== id || got[0].text !== 'across origins') throw new Error(`got ${JSON.stringify(got[0])}`);
  await a.leave();
  await b.leave();
  return `message ${id} over ${a.transport} from ${location.origin} to ${server}`;
}

window.result = run().then(
  (detail) => ({ ok: true, detail }),
  (err) => ({ ok: false, detail: String((err && err.stack) || err) }),
);
window.result.then((r) => { document.getElementById('result').textContent = JSON.stringify(r); });
