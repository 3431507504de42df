// Builds dist/tincan.iife.js, the client for a plain <script> tag, from
// src/tincan.js: the module's text with its `export` keywords taken off,
// wrapped in a function that puts what it exported on globalThis.tincan.
// No bundler, no dependencies.
//
//   node scripts/build-iife.js           write dist/tincan.iife.js
//   node scripts/build-iife.js --check   exit 1 if dist/tincan.iife.js is not what src builds
import { readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const pkg = resolve(dirname(fileURLToPath(import.meta.url)), '..');
export const srcPath = resolve(pkg, 'src/tincan.js');
export const outPath = resolve(pkg, 'dist/tincan.iife.js');

// build returns the IIFE's text for the module's source text.
export function build(src) {
  const names = [];
  const body = src.replace(/^export (class|async function|function|const|let) ([A-Za-z_$][\w$]*)/gm, (_, kind, name) => {
    names.push(name);
    return `${kind} ${name}`;
  });
  // Anything else that a module has and a script cannot: refuse it rather
  // than build a file that breaks in the browser.
  const left = /^\s*(export|import)\b.*$/m.exec(body) || /\bimport\.meta\b|\bimport\s*\(/.exec(body);
  if (left) throw new Error(`build-iife: src/tincan.js has a statement the build does not handle: ${left[0].trim()}`);
  if (!names.includes('join')) throw new Error('build-iife: src/tincan.js exports no join');
  // (Not indented: that would change any string that spans lines.)
  return `// tincan.iife.js: the tincan client for a plain <script> tag; it defines
// globalThis.tincan = { ${names.join(', ')} }.
//
//   <script src="https://unpkg.com/tincan-client/dist/tincan.iife.js"></script>
//   <script> tincan.join('abc', { onMessage: (m) => console.log(m) }); </script>
//
// Generated from src/tincan.js by scripts/build-iife.js (npm run build); do not edit.
(function () {
'use strict';

${body.replace(/\n+$/, '')}

globalThis.tincan = { ${names.join(', ')} };
})();
`;
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const want = build(readFileSync(srcPath, 'utf8'));
  if (process.argv.includes('--check')) {
    let got = null;
    try { got = readFileSync(outPath, 'utf8'); } catch { /* missing */ }
    if (got !== want) {
      console.error('dist/tincan.iife.js is not what src/tincan.js builds: run `npm run build` in clients/js and commit it');
      process.exit(1);
    }
    console.log('dist/tincan.iife.js is up to date with src/tincan.js');
  } else {
    mkdirSync(dirname(outPath), { recursive: true });
    writeFileSync(outPath, want);
    console.log(`wrote dist/tincan.iife.js (${Buffer.byteLength(want)} bytes)`);
  }
}
