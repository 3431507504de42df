// Safe to import during server-side rendering: importing the module (and
// running the IIFE) touches no window, document, sessionStorage or other
// browser global. Each import here is a fresh instance of the module (its
// URL has its own query), evaluated with those globals absent, and then with
// getters on globalThis that throw (and note the name) if touched.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import vm from 'node:vm';
import { outPath } from '../scripts/build-iife.js';

const browserGlobals = ['window', 'document', 'sessionStorage', 'localStorage', 'navigator', 'location', 'self', 'EventSource', 'addEventListener'];
const moduleURL = new URL('../src/tincan.js', import.meta.url);

test('the module imports with window, document and sessionStorage absent', async () => {
  for (const name of ['window', 'document', 'sessionStorage']) assert.equal(typeof globalThis[name], 'undefined', name);
  const m = await import(`${moduleURL}?absent`);
  assert.equal(typeof m.join, 'function');
});

test('the module imports without touching browser globals (getters that throw)', async () => {
  const touched = [];
  const saved = new Map();
  for (const name of browserGlobals) {
    saved.set(name, Object.getOwnPropertyDescriptor(globalThis, name));
    Object.defineProperty(globalThis, name, {
      configurable: true,
      get() { touched.push(name); throw new Error(`${name} touched during import`); },
    });
  }
  let m;
  try {
    m = await import(`${moduleURL}?getters`);
  } finally {
    for (const [name, d] of saved) {
      if (d) Object.defineProperty(globalThis, name, d);
      else delete globalThis[name];
    }
  }
  assert.deepEqual(touched, [], `touched during import: ${touched}`);
  assert.equal(typeof m.join, 'function');
  assert.equal(typeof m.Client, 'function');
  assert.equal(typeof m.TincanError, 'function');
});

test('the IIFE runs without touching browser globals', () => {
  const touched = [];
  const ctx = vm.createContext({});
  for (const name of browserGlobals) {
    Object.defineProperty(vm.runInContext('globalThis', ctx), name, {
      configurable: true,
      get() { touched.push(name); throw new Error(`${name} touched while the script ran`); },
    });
  }
  vm.runInContext(readFileSync(outPath, 'utf8'), ctx);
  assert.deepEqual(touched, []);
  assert.equal(typeof ctx.tincan.join, 'function');
});
