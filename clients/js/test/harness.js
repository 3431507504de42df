// The tests' real tincan server: tincan() builds the binary from the
// repository root (go build, once per test file), runs it on 127.0.0.1 with
// its own database, and can kill it with SIGKILL and start it again on the
// same port and database. No tests of its own; importing it does nothing.
import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join as pathJoin, dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const root = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// until waits for cond() to hold, for at most ms; the error names what it
// waited for, and the server's log when given a server.
export async function until(cond, ms, what, server = null) {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) {
      throw new Error(`timed out after ${ms} ms waiting for ${what}${server ? `\n--- server log ---\n${server.log.slice(-4000)}` : ''}`);
    }
    await sleep(20);
  }
}

export function freePort() {
  return new Promise((res, rej) => {
    const s = createServer();
    s.on('error', rej);
    s.listen(0, '127.0.0.1', () => { const p = s.address().port; s.close(() => res(p)); });
  });
}

let built = null;

// tincan starts a server and resolves once it listens: { base, port, log,
// kill9(), start(), stop() }. args are more flags; env more environment
// (TINCAN_AUTH=jwt, TINCAN_JWT_SECRET=…).
export async function tincan({ args = [], env = {} } = {}) {
  if (!built) {
    const binDir = mkdtempSync(pathJoin(tmpdir(), 'tincan-js-bin-'));
    process.on('exit', () => rmSync(binDir, { recursive: true, force: true }));
    execFileSync('go', ['build', '-o', pathJoin(binDir, 'tincan'), '.'], {
      cwd: root, stdio: 'inherit',
      env: { ...process.env, GOFLAGS: `${process.env.GOFLAGS || ''} -buildvcs=false`.trim() },
    });
    built = pathJoin(binDir, 'tincan');
  }
  const dir = mkdtempSync(pathJoin(tmpdir(), 'tincan-js-'));
  const s = {
    port: await freePort(),
    base: '',
    log: '',
    proc: null,
    // Start the server on its port and database; resolve once it listens.
    start() {
      return new Promise((res, rej) => {
        const p = spawn(built, ['-addr', `127.0.0.1:${s.port}`, '-db', pathJoin(dir, 't.db'), '-turn=false', '-rate-limit', '0', '-member-rate-limit', '0', ...args], {
          stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env },
        });
        let out = '';
        let done = false;
        const timer = setTimeout(() => { if (!done) { done = true; p.kill('SIGKILL'); rej(new Error(`the server did not start: ${out}${s.log}`)); } }, 20000);
        p.stdout.on('data', (b) => {
          out += b;
          const m = /tincan listening on (http:\/\/\S+)/.exec(out);
          if (m && !done) { done = true; clearTimeout(timer); s.proc = p; s.base = m[1].replace(/\/+$/, ''); res(s.base); }
        });
        p.stderr.on('data', (b) => { s.log += b; });
        p.on('exit', (code, sig) => {
          s.log += `[server exited: ${code ?? sig}]\n`;
          if (!done) { done = true; clearTimeout(timer); rej(new Error(`the server exited (${code ?? sig}): ${out}${s.log}`)); }
        });
      });
    },
    kill9() {
      return new Promise((res) => {
        const p = s.proc;
        s.proc = null;
        if (!p || p.exitCode !== null || p.signalCode !== null) { res(); return; }
        p.on('exit', () => res());
        p.kill('SIGKILL');
      });
    },
    async stop() {
      await s.kill9();
      rmSync(dir, { recursive: true, force: true });
    },
  };
  await s.start();
  return s;
}
