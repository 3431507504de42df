// Checks that the npm tarball holds exactly the package's files:
// node scripts/pack-check.js (runs `npm pack --dry-run --json`).
import { execFileSync } from 'node:child_process';

const want = ['README.md', 'dist/tincan.iife.js', 'package.json', 'src/tincan.d.ts', 'src/tincan.js'];
const out = execFileSync('npm', ['pack', '--dry-run', '--json'], { encoding: 'utf8' });
const [pack] = JSON.parse(out);
const got = pack.files.map((f) => f.path).sort();
if (got.join('\n') !== want.join('\n')) {
  console.error(`npm pack: the tarball holds\n  ${got.join('\n  ')}\nwant\n  ${want.join('\n  ')}`);
  process.exit(1);
}
console.log(`npm pack: ${pack.filename} holds ${got.join(', ')} (${pack.size} bytes)`);
