// Landing page: pick or generate a room name, copy the link, open the call.
const ROOM_RE = /^[A-Za-z0-9_-]{1,64}$/;
const WORDS = [
  'amber', 'brisk', 'cedar', 'delta', 'ember', 'fjord', 'grove', 'harbor', 'indigo', 'juniper',
  'kestrel', 'lumen', 'maple', 'nimbus', 'orchid', 'pebble', 'quartz', 'raven', 'sierra', 'tundra',
  'umber', 'velvet', 'willow', 'xenon', 'yonder', 'zephyr',
];
const ALPHABET = 'abcdefghijkmnpqrstuvwxyz23456789';

const $ = (id) => document.getElementById(id);

function randomName() {
  const r = crypto.getRandomValues(new Uint32Array(12));
  const words = `${WORDS[r[0] % WORDS.length]}-${WORDS[r[1] % WORDS.length]}`;
  let tail = '';
  for (let i = 2; i < 12; i++) tail += ALPHABET[r[i] % ALPHABET.length];
  return `${words}-${tail}`; // about 50 random bits in the tail
}

function linkFor(room) {
  return `${location.origin}/r/${encodeURIComponent(room)}`;
}

function update() {
  const room = $('room').value.trim();
  const ok = ROOM_RE.test(room);
  $('link').textContent = ok ? linkFor(room) : '';
  $('copy').disabled = !ok;
  $('room').setAttribute('aria-invalid', String(!ok && room !== ''));
  $('room-hint').classList.toggle('error', !ok && room !== '');
}

async function copy() {
  const text = $('link').textContent;
  if (!text) return;
  let ok = false;
  try {
    await navigator.clipboard.writeText(text);
    ok = true;
  } catch {
    const range = document.createRange();
    range.selectNodeContents($('link'));
    const sel = getSelection();
    sel.removeAllRanges();
    sel.addRange(range);
    try { ok = document.execCommand('copy'); } catch { ok = false; }
  }
  $('copy').textContent = ok ? 'Copied!' : 'Select and copy';
  setTimeout(() => { $('copy').textContent = 'Copy'; }, 2500);
}

$('room').addEventListener('input', update);
$('generate').addEventListener('click', () => { $('room').value = randomName(); update(); });
$('copy').addEventListener('click', copy);
$('start-form').addEventListener('submit', (e) => {
  e.preventDefault();
  const room = $('room').value.trim();
  if (!ROOM_RE.test(room)) { $('room').focus(); update(); return; }
  const pw = $('password').value;
  try {
    if (pw) sessionStorage.setItem(`tincan-pw:${room}`, pw);
    else sessionStorage.removeItem(`tincan-pw:${room}`);
  } catch { /* ignore */ }
  location.assign(`/r/${encodeURIComponent(room)}`);
});

$('room').value = randomName();
update();
