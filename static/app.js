// The call page at /r/{room}: camera + microphone (or chat only), perfect
// negotiation per the W3C example, trickle ICE, ICE restart, resume on reload.
//
// document.documentElement.dataset.state is one of joining | waiting |
// connecting | connected | failed | full (and `ended` after a hang-up, or
// `bad-link` when the path names no room: /r/, /r/bad%20name, /r/x/);
// dataset.transport is `sse` or `poll` once messages flow; dataset.signaling
// is `up` once joined, and `down` while the server cannot be reached (the
// call itself goes on: media flows between the browsers).
import { join } from './tincan.js';

const html = document.documentElement;
const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const room = roomFromPath();
const transport = ['sse', 'poll'].includes(params.get('transport')) ? params.get('transport') : 'auto';
const mediaMode = params.get('media'); // "none": chat only; "audio": no camera
const mySid = randomId(); // this page instance; a reload gets a new one
const appKey = `tincan-app:${room}`;
// The application's join token, from the URL fragment (/r/room#token=…):
// a fragment is never sent to a server, so the token lands in no log.
const joinToken = new URLSearchParams(location.hash.slice(1)).get('token');

const peers = new Map(); // client id → peer state
// client id → display name, from the application's join tokens (the join
// answer's members, the peer-joined events); absent: the peer is a "Guest".
const names = new Map();
const staleSids = new Set(); // `${peer}/${sid}`: page instances of peers that were replaced
let polite = {}; // client id → am I polite towards it (it joined before me)
let client = null;
let localStream = null;
let mediaTried = false;
let starting = false;
let ended = false;
let retryTimer = 0;
let signalNoticeTimer = 0;

// For automated checks and debugging from the console.
const debug = {
  sid: mySid,
  generations: 0, // peer connections made
  collisions: 0, // offers that crossed ours (glare)
  signalNotices: [], // every text the signaling notice showed, oldest first
  peers,
  names,
  get client() { return client; },
  get localStream() { return localStream; },
  restartIce() { for (const p of peers.values()) { p.lastRestart = 0; restartIce(p); } },
};
window.tincanDebug = debug;

const LABELS = {
  joining: 'Joining…',
  waiting: 'Waiting for someone to join',
  connecting: 'Connecting…',
  connected: 'Connected',
  failed: 'Connection failed',
  full: 'Room is full',
  ended: 'Call ended',
  'bad-link': 'No such call',
};
// On a phone the status shares the header's row with the room name: short
// words there (the stage below says what the waiting is for).
const SHORT_LABELS = { waiting: 'Waiting', failed: 'Failed', full: 'Room full' };
const narrow = matchMedia('(max-width: 640px)');

function statusLabel(s) {
  return (narrow.matches && SHORT_LABELS[s]) || LABELS[s] || s;
}

// The room of a path /r/{room} (under whatever prefix a proxy adds), as
// written in the link; null when the path ends in something else (/r/,
// /r/x/, /r/x/y): the server answers those with this page too, to say so.
function roomFromPath() {
  const m = /\/r\/([^/]*)$/.exec(location.pathname);
  if (!m) return null;
  try { return decodeURIComponent(m[1]); } catch { return m[1]; }
}

function randomId() {
  const b = crypto.getRandomValues(new Uint8Array(12));
  return Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
}

function setState(s) {
  if (html.dataset.state === s) return;
  html.dataset.state = s;
  $('status').textContent = statusLabel(s);
  $('status').title = LABELS[s] || s;
  document.title = `${LABELS[s] || s}${room ? ` · ${room}` : ''} · tincan`;
}

function updateState() {
  if (!client || ended) return;
  let connected = false;
  let failed = false;
  for (const p of peers.values()) {
    const cs = p.pc.connectionState;
    if (cs === 'connected') connected = true;
    else if (cs === 'failed') failed = true;
  }
  const present = client.peers.length > 0 || peers.size > 0;
  if (connected) setState('connected');
  else if (failed) setState('failed');
  else if (present) setState('connecting');
  else setState('waiting');
  $('waiting-note').hidden = present;
}

function showView(id) {
  for (const v of ['call-view', 'full-view', 'password-view', 'ended-view', 'error-view']) $(v).hidden = v !== id;
}

function notice(text) {
  const n = $('media-notice');
  n.textContent = text;
  n.hidden = !text;
}

// ---- media ----

async function getMedia() {
  if (mediaMode === 'none') {
    notice('Joined without camera and microphone: chat only.');
    return null;
  }
  if (!(navigator.mediaDevices && navigator.mediaDevices.getUserMedia)) {
    notice('The camera needs a secure (https) page here. Chat still works.');
    return null;
  }
  const video = mediaMode === 'audio' ? false : { width: { ideal: 1280 }, height: { ideal: 720 }, facingMode: 'user' };
  try {
    return await navigator.mediaDevices.getUserMedia({ audio: true, video });
  } catch (err) {
    if (video) {
      try {
        const s = await navigator.mediaDevices.getUserMedia({ audio: true, video: false });
        notice('No camera: audio only.');
        return s;
      } catch { /* fall through */ }
    }
    notice(err && err.name === 'NotAllowedError'
      ? 'Camera and microphone are blocked: chat only.'
      : 'No camera or microphone found: chat only.');
    return null;
  }
}

function showLocal() {
  const hasVideo = !!localStream && localStream.getVideoTracks().length > 0;
  $('local-video').srcObject = hasVideo ? localStream : null;
  $('local-tile').classList.toggle('novideo', !hasVideo);
  $('local-note').hidden = hasVideo;
  const mic = $('toggle-mic');
  const cam = $('toggle-cam');
  mic.disabled = !localStream || localStream.getAudioTracks().length === 0;
  cam.disabled = !hasVideo;
}

function toggle(kind, button, onText, offText) {
  if (!localStream) return;
  const tracks = kind === 'audio' ? localStream.getAudioTracks() : localStream.getVideoTracks();
  if (!tracks.length) return;
  const enable = !tracks[0].enabled;
  for (const t of tracks) t.enabled = enable;
  button.setAttribute('aria-pressed', String(!enable));
  button.textContent = enable ? onText : offText;
  if (kind === 'video') $('local-tile').classList.toggle('camoff', !enable);
}

function stopMedia() {
  if (localStream) for (const t of localStream.getTracks()) t.stop();
  localStream = null;
  $('local-video').srcObject = null;
}

// ---- peers and perfect negotiation ----

function loadPolite() {
  try { return JSON.parse(sessionStorage.getItem(appKey) || '{}').polite || {}; } catch { return {}; }
}

function savePolite() {
  try { sessionStorage.setItem(appKey, JSON.stringify({ polite })); } catch { /* ignore */ }
}

function createPeer(id, offerer) {
  debug.generations++;
  const pc = new RTCPeerConnection({ iceServers: client.iceServers });
  const peer = {
    id, pc, polite: !!polite[id], remoteSid: null,
    makingOffer: false, ignoreOffer: false, answerPending: false,
    chain: Promise.resolve(), stream: new MediaStream(), restartTimer: 0, lastRestart: 0,
  };
  peers.set(id, peer);

  if (localStream) for (const t of localStream.getTracks()) pc.addTrack(t, localStream);
  if (offerer) {
    // Receive what we do not send, so a member without a camera still sees the others.
    for (const kind of ['audio', 'video']) {
      if (!localStream || !localStream.getTracks().some((t) => t.kind === kind)) {
        pc.addTransceiver(kind, { direction: 'recvonly' });
      }
    }
  }
  // Same channel on both sides, no in-band open handshake: the call connects
  // even when nobody has a camera.
  peer.dc = pc.createDataChannel('chat', { negotiated: true, id: 0 });
  peer.dc.onopen = updateChat;
  peer.dc.onclose = updateChat;
  peer.dc.onmessage = (ev) => addChat('them', String(ev.data));
  makeTile(peer);

  pc.ontrack = ({ track, streams }) => {
    const s = streams && streams[0];
    if (s) peer.stream = s;
    else peer.stream.addTrack(track);
    if (peer.video.srcObject !== peer.stream) peer.video.srcObject = peer.stream;
    if (track.kind === 'video') {
      const show = () => peer.tile.classList.toggle('novideo', track.muted);
      track.onmute = show;
      track.onunmute = show;
      show();
    }
    play(peer.video);
  };
  pc.onicecandidate = ({ candidate }) => {
    signal(peer, candidate
      ? { type: 'candidate', candidate: candidate.candidate, sdpMid: candidate.sdpMid, sdpMLineIndex: candidate.sdpMLineIndex, usernameFragment: candidate.usernameFragment }
      : { type: 'candidate', candidate: null });
  };
  pc.onnegotiationneeded = async () => {
    try {
      peer.makingOffer = true;
      await pc.setLocalDescription();
      signal(peer, { type: pc.localDescription.type, sdp: pc.localDescription.sdp });
    } catch (err) {
      console.warn('negotiation failed', err);
    } finally {
      peer.makingOffer = false;
    }
  };
  pc.oniceconnectionstatechange = () => {
    const s = pc.iceConnectionState;
    clearTimeout(peer.restartTimer);
    if (s === 'failed') restartIce(peer);
    else if (s === 'disconnected') {
      peer.restartTimer = setTimeout(() => { if (pc.iceConnectionState === 'disconnected') restartIce(peer); }, 4000);
    }
  };
  pc.onconnectionstatechange = () => {
    peer.tile.dataset.state = pc.connectionState;
    updateState();
  };
  updateState();
  return peer;
}

async function restartIce(peer) {
  if (peer.pc.signalingState === 'closed' || !client) return;
  const wait = peer.lastRestart + 5000 - Date.now();
  if (wait > 0) {
    peer.restartTimer = setTimeout(() => restartIce(peer), wait);
    return;
  }
  peer.lastRestart = Date.now();
  try {
    const iceServers = await client.fetchIceServers(); // TURN credentials expire
    peer.pc.setConfiguration({ ...peer.pc.getConfiguration(), iceServers });
  } catch (err) {
    console.warn('could not refresh ICE servers', err);
  }
  if (peer.pc.signalingState !== 'closed') peer.pc.restartIce();
}

function signal(peer, data) {
  if (!client || client.closed || peers.get(peer.id) !== peer) return;
  const msg = { ...data, sid: mySid };
  if (peer.remoteSid) msg.tsid = peer.remoteSid;
  client.send(msg, peer.id).catch((err) => {
    if (err.code === 'unknown_peer') dropPeer(peer.id);
    else if (err.code !== 'closed') console.warn('signaling send failed', err);
  });
}

async function handleSignal(peer, msg) {
  const pc = peer.pc;
  if (pc.signalingState === 'closed') return;
  if (msg.type === 'offer' || msg.type === 'answer') {
    const readyForOffer = !peer.makingOffer && (pc.signalingState === 'stable' || peer.answerPending);
    const collision = msg.type === 'offer' && !readyForOffer;
    if (collision) debug.collisions++;
    peer.ignoreOffer = !peer.polite && collision;
    if (peer.ignoreOffer) return;
    peer.answerPending = msg.type === 'answer';
    await pc.setRemoteDescription({ type: msg.type, sdp: msg.sdp });
    peer.answerPending = false;
    if (msg.type === 'offer') {
      await pc.setLocalDescription();
      signal(peer, { type: pc.localDescription.type, sdp: pc.localDescription.sdp });
    }
  } else if (msg.type === 'candidate') {
    const c = msg.candidate
      ? { candidate: msg.candidate, sdpMid: msg.sdpMid, sdpMLineIndex: msg.sdpMLineIndex, usernameFragment: msg.usernameFragment }
      : null;
    try {
      await pc.addIceCandidate(c);
    } catch (err) {
      if (!peer.ignoreOffer && c) console.warn('addIceCandidate failed', err);
    }
  }
}

function dropPeer(id) {
  const p = peers.get(id);
  if (!p) return;
  peers.delete(id);
  if (p.remoteSid) staleSids.add(`${id}/${p.remoteSid}`);
  clearTimeout(p.restartTimer);
  p.pc.close();
  p.tile.remove();
  updateChat();
  updateState();
}

function onMessage(msg) {
  if (msg.type !== 'offer' && msg.type !== 'answer' && msg.type !== 'candidate') return;
  if (msg.tsid && msg.tsid !== mySid) return; // meant for this page before a reload
  if (msg.sid && staleSids.has(`${msg.from}/${msg.sid}`)) return; // from a page of the peer that is gone
  let peer = peers.get(msg.from);
  if (peer && peer.remoteSid && msg.sid && peer.remoteSid !== msg.sid) {
    // The peer restarted without us noticing: only its new offer matters.
    if (msg.type !== 'offer') return;
    dropPeer(msg.from);
    peer = null;
  }
  if (!peer) {
    if (msg.type !== 'offer') return;
    if (!(msg.from in polite)) { polite[msg.from] = false; savePolite(); }
    peer = createPeer(msg.from, false);
  }
  if (!peer.remoteSid && msg.sid) peer.remoteSid = msg.sid;
  peer.chain = peer.chain.then(() => handleSignal(peer, msg)).catch((err) => console.warn('signaling failed', err));
}

function onPresence(ev) {
  if (ev.type === 'peer-joined') {
    // A resumed peer reloaded its page: its old connection is dead; it offers again.
    // A new peer joined after us: we are the impolite side; it offers.
    dropPeer(ev.peer);
    if (typeof ev.name === 'string' && ev.name.trim()) names.set(ev.peer, ev.name.trim());
    if (!ev.resumed || !(ev.peer in polite)) polite[ev.peer] = false;
    if (!ev.resumed) addChatEvent(`${names.get(ev.peer) || 'Someone'} joined the call.`);
  } else if (ev.type === 'peer-left') {
    const p = peers.get(ev.peer);
    const name = p ? p.tile.querySelector('figcaption').textContent : (names.get(ev.peer) || 'Guest');
    dropPeer(ev.peer);
    delete polite[ev.peer];
    names.delete(ev.peer);
    addChatEvent(ev.reason === 'timeout' ? `${name} lost the connection and left the call.` : `${name} left the call.`);
  }
  savePolite();
  updateState();
}

function onTransport(name, reason) {
  html.dataset.transport = name;
  html.dataset.transportReason = reason || '';
  updateFooter();
}

// The footer says in plain words how this page reaches the server (which
// sets up the call); the technical detail is in its tooltip.
function updateFooter() {
  const f = $('transport');
  // Until messages flow, the transport asked for in the link (?transport=poll).
  const name = html.dataset.transport || (transport === 'poll' ? 'poll' : '');
  const reason = html.dataset.transportReason;
  const signaling = html.dataset.signaling;
  if (signaling === 'down') {
    f.textContent = 'Reconnecting to the server…';
  } else if (signaling !== 'up') {
    f.textContent = 'Connecting to the server…';
  } else if (name === 'poll') {
    f.textContent = reason
      ? 'Connected to the server, by polling: this network holds back live updates, so the call may take a moment longer to set up.'
      : 'Connected to the server, by polling.';
  } else {
    f.textContent = 'Connected to the server.';
  }
  f.title = name ? `Signaling over ${name === 'sse' ? 'Server-Sent Events' : 'long-poll'}${reason ? ` (${reason})` : ''}` : '';
}

// The server stopped answering, or answers again. Nothing else changes: the
// peer connections carry on, and tincan.js retries what it has to send.
function onReachable(reachable, why) {
  if (ended) return;
  html.dataset.signaling = reachable ? 'up' : 'down';
  const n = $('signal-notice');
  clearTimeout(signalNoticeTimer);
  n.classList.toggle('back', reachable);
  if (reachable) {
    n.textContent = 'The server is back.';
    signalNoticeTimer = setTimeout(() => { n.hidden = true; }, 8000);
  } else {
    n.textContent = `The server cannot be reached${why ? ` (${why})` : ''}. The call goes on; `
      + 'nobody can join or reconnect until it answers again.';
  }
  n.hidden = false;
  debug.signalNotices.push(n.textContent);
  updateFooter();
}

function onClose(ev) {
  if (!ended && (ev.reason === 'kicked' || ev.reason === 'room-closed')) {
    // The application removed us or closed the room: no rejoining on our own.
    removedByApp(ev.reason);
    return;
  }
  if (ended || (ev.reason !== 'unauthorized' && ev.reason !== 'forbidden')) return;
  // The server removed us (e.g. the laptop slept past the client timeout): join again.
  for (const id of [...peers.keys()]) dropPeer(id);
  client = null;
  start();
}

// ---- tiles, chat ----

function makeTile(peer) {
  const fig = document.createElement('figure');
  fig.className = 'tile remote novideo';
  const video = document.createElement('video');
  video.autoplay = true;
  video.playsInline = true;
  const cap = document.createElement('figcaption');
  cap.textContent = names.get(peer.id) || (peers.size > 1 ? `Guest ${peers.size}` : 'Guest');
  const note = document.createElement('p');
  note.className = 'novideo-note';
  note.textContent = 'No video';
  fig.append(video, cap, note);
  $('remotes').append(fig);
  peer.tile = fig;
  peer.video = video;
}

function play(video) {
  video.play().catch((err) => {
    if (err.name !== 'NotAllowedError') return;
    // Autoplay with sound was refused: play muted and offer a button.
    video.muted = true;
    video.play().catch(() => {});
    $('unmute-remote').hidden = false;
  });
}

function updateChat() {
  const open = [...peers.values()].some((p) => p.dc && p.dc.readyState === 'open');
  $('chat-input').disabled = !open;
  $('chat-send').disabled = !open;
  $('chat-input').placeholder = open ? 'Message' : 'Chat opens with the call';
}

// who: `me`, `them`, or `event` for what happened in the call.
function addChat(who, text) {
  const li = document.createElement('li');
  li.className = who;
  li.textContent = text;
  const log = $('chat-log');
  log.append(li);
  log.scrollTop = log.scrollHeight;
  if (who !== 'event') $('chat-empty').hidden = true;
}

function addChatEvent(text) {
  addChat('event', text);
}

// ---- joining ----

function storedPassword() {
  try { return sessionStorage.getItem(`tincan-pw:${room}`) || undefined; } catch { return undefined; }
}

async function start(password) {
  if (starting || ended) return;
  starting = true;
  clearTimeout(retryTimer);
  try {
    setState('joining');
    showView('call-view');
    if (!mediaTried) {
      mediaTried = true;
      localStream = await getMedia();
      showLocal();
    }
    let c;
    try {
      c = await join(room, {
        transport, password: password ?? storedPassword(), token: joinToken, onMessage, onPresence, onTransport, onReachable, onClose,
      });
    } catch (err) {
      joinFailed(err, password);
      return;
    }
    if (password) {
      try { sessionStorage.setItem(`tincan-pw:${room}`, password); } catch { /* ignore */ }
    }
    client = c;
    html.dataset.clientId = c.id;
    if (html.dataset.signaling === 'down') onReachable(true);
    html.dataset.signaling = 'up';
    updateFooter();
    polite = c.resumed ? loadPolite() : {};
    if (!c.resumed) staleSids.clear(); // a new member: nothing old can reach it
    // Peers listed at a fresh join were there first: we are polite towards them.
    // At a resume, a peer we do not know joined while we were away, after us.
    for (const p of c.peers) if (!(p in polite)) polite[p] = !c.resumed;
    for (const m of c.members || []) {
      if (m && typeof m.name === 'string' && m.name.trim()) names.set(m.client_id, m.name.trim());
    }
    savePolite();
    for (const p of c.peers) createPeer(p, true); // initiator: offer to who is there
    updateState();
  } finally {
    starting = false;
  }
}

function joinFailed(err, password) {
  console.warn('join failed', err);
  if (err.code === 'room_full') {
    $('full-room').textContent = room;
    showView('full-view');
    setState('full');
    return;
  }
  if (err.code === 'password_required' || err.code === 'bad_password') {
    showView('password-view');
    $('password-error').hidden = err.code !== 'bad_password';
    $('password-input').focus();
    return;
  }
  $('error-text').textContent = err.message;
  showView('error-view');
  setState('failed');
  if (err.status === 0 || err.status >= 500 || err.status === 429) {
    retryTimer = setTimeout(() => start(password), 5000);
  }
}

// removedByApp ends the call after the application kicked this member or
// closed the room: dataset.state is `ended`, the ended view says why.
function removedByApp(reason) {
  ended = true;
  clearTimeout(retryTimer);
  for (const id of [...peers.keys()]) dropPeer(id);
  stopMedia();
  client = null;
  try { sessionStorage.removeItem(appKey); } catch { /* ignore */ }
  html.dataset.state = 'ended';
  html.dataset.ended = reason;
  $('status').textContent = LABELS.ended;
  $('ended-title').textContent = reason === 'kicked' ? 'You were removed from the call' : 'The call was closed';
  showView('ended-view');
}

async function hangUp() {
  if (ended) return;
  ended = true;
  clearTimeout(retryTimer);
  for (const id of [...peers.keys()]) dropPeer(id);
  stopMedia();
  const c = client;
  client = null;
  try { sessionStorage.removeItem(appKey); } catch { /* ignore */ }
  html.dataset.state = 'ended';
  $('status').textContent = LABELS.ended;
  showView('ended-view');
  if (c) {
    try { await c.leave(); } catch (err) { console.warn('leave failed', err); }
  }
}

// The link names no call: say what is wrong with it, and offer the room it
// most likely meant (/r/x/ → /r/x).
function showBadLink() {
  const rule = 'A room name is 1 to 64 letters, digits, "-" or "_".';
  const meant = /\/r\/([A-Za-z0-9_-]{1,64})\/.*$/.exec(location.pathname);
  $('error-title').textContent = 'This link leads to no call';
  if (meant) {
    $('error-text').textContent = `This link has something after the room name ${meant[1]}.`;
    const a = $('error-fix');
    a.href = `${location.pathname.slice(0, -meant[0].length)}/r/${meant[1]}`;
    a.textContent = `Open ${meant[1]}`;
    a.hidden = false;
  } else if (!room) {
    $('error-text').textContent = `This link names no room. ${rule}`;
  } else {
    $('error-text').textContent = `“${room}” is not a room name. ${rule}`;
  }
  $('retry-error').hidden = true;
  $('copy-link').hidden = true;
  showView('error-view');
  setState('bad-link');
}

async function copyLink(button) {
  const link = `${location.origin}/r/${encodeURIComponent(room)}`;
  let ok = false;
  try {
    await navigator.clipboard.writeText(link);
    ok = true;
  } catch {
    const input = document.createElement('input');
    input.value = link;
    document.body.append(input);
    input.select();
    try { ok = document.execCommand('copy'); } catch { ok = false; }
    input.remove();
  }
  const old = button.textContent;
  button.textContent = ok ? 'Copied!' : link;
  setTimeout(() => { button.textContent = old; }, 2500);
}

// ---- wiring ----

$('room-name').textContent = room || '';
$('room-name').title = room || '';
narrow.addEventListener('change', () => {
  if (html.dataset.state) $('status').textContent = statusLabel(html.dataset.state);
});
updateFooter();
$('toggle-mic').addEventListener('click', (e) => toggle('audio', e.currentTarget, 'Mute', 'Unmute'));
$('toggle-cam').addEventListener('click', (e) => toggle('video', e.currentTarget, 'Camera off', 'Camera on'));
$('hangup').addEventListener('click', hangUp);
$('copy-link').addEventListener('click', (e) => copyLink(e.currentTarget));
$('unmute-remote').addEventListener('click', (e) => {
  for (const p of peers.values()) { p.video.muted = false; p.video.play().catch(() => {}); }
  e.currentTarget.hidden = true;
});
$('chat-form').addEventListener('submit', (e) => {
  e.preventDefault();
  const input = $('chat-input');
  const text = input.value.trim();
  if (!text) return;
  let sent = false;
  for (const p of peers.values()) {
    if (p.dc && p.dc.readyState === 'open') { p.dc.send(text); sent = true; }
  }
  if (sent) { addChat('me', text); input.value = ''; }
});
$('retry-full').addEventListener('click', () => start());
$('retry-error').addEventListener('click', () => start());
$('rejoin').addEventListener('click', () => location.reload());
$('password-form').addEventListener('submit', (e) => {
  e.preventDefault();
  start($('password-input').value);
});

if (room === null || !/^[A-Za-z0-9_-]{1,64}$/.test(room)) showBadLink();
else start();
