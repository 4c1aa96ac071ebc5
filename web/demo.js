// Demo page logic: controls, live stats, and the avatar video.
//
// Query parameters (used by tests): ?autostart=1&avatar=NAME&codec=VP8|H264&audio=mic|none&blendshapes=1
// After connecting, window.avatarClient is the AvatarClient; window.avatarDemo exposes what the
// page measures (displayed frames, page fps, codec in use, state).

import {AvatarClient} from './avatar-client.js';

const $ = (id) => document.getElementById(id);
const ui = {
  video: $('avatar-video'),
  avatar: $('avatar-select'),
  codec: $('codec-select'),
  audio: $('audio-select'),
  start: $('start-button'),
  stop: $('stop-button'),
  clear: $('clear-button'),
  error: $('error'),
  speaking: $('speaking-indicator'),
  blendToggle: $('blend-toggle'),
  blendBars: $('blend-bars'),
  stat: {
    state: $('stat-state'),
    avatar: $('stat-avatar'),
    codec: $('stat-codec'),
    resolution: $('stat-resolution'),
    pageFps: $('stat-page-fps'),
    serverFps: $('stat-server-fps'),
    latency: $('stat-latency'),
    frames: $('stat-frames'),
    late: $('stat-late'),
    skipped: $('stat-skipped'),
    idle: $('stat-idle'),
    queue: $('stat-queue'),
  },
};

/** What the page measures; tests read it. */
const demo = (window.avatarDemo = {
  state: 'idle', // 'idle' | 'connecting' | 'connected'
  framesDisplayed: 0, // frames presented by the <video> (requestVideoFrameCallback)
  pageFps: null, // displayed frames per second over the last second
  codec: null, // e.g. 'VP8', from getStats
  lastStats: null, // the server's last 'stats' message
});

let client = null;
let connecting = null; // AbortController while connect() runs
let stopSession = null; // undoes what a session set up (timers, frame counter)

// ---------------------------------------------------------------------------------------------
// UI state

function setState(state) {
  demo.state = state;
  document.body.dataset.state = state;
  ui.stat.state.textContent = state;
  ui.start.disabled = state !== 'idle';
  ui.stop.disabled = state === 'idle';
  ui.clear.disabled = state !== 'connected';
  for (const select of [ui.avatar, ui.codec, ui.audio]) select.disabled = state !== 'idle';
}

function showError(message) {
  ui.error.textContent = message || '';
  ui.error.hidden = !message;
}

function setSpeaking(on) {
  ui.speaking.dataset.speaking = String(on);
}

function resetStats() {
  for (const el of Object.values(ui.stat)) el.textContent = '–';
  ui.stat.state.textContent = demo.state;
  setSpeaking(false);
}

const fmt = (value, digits = 0) => (typeof value === 'number' && Number.isFinite(value) ? value.toFixed(digits) : '–');

function showServerStats(stats) {
  demo.lastStats = stats;
  ui.stat.serverFps.textContent = fmt(stats.fps, 1);
  ui.stat.latency.textContent = stats.latency_ms
    ? `${fmt(stats.latency_ms.p50)} / ${fmt(stats.latency_ms.p95)} ms`
    : '–';
  ui.stat.frames.textContent = fmt(stats.frames);
  ui.stat.late.textContent = fmt(stats.late);
  ui.stat.skipped.textContent = fmt(stats.skipped);
  ui.stat.idle.textContent = fmt(stats.idle);
  ui.stat.queue.textContent = fmt(stats.queue);
}

// ---------------------------------------------------------------------------------------------
// Measurements in the page

/**
 * Count frames the video element actually presents. `presentedFrames` also counts frames whose
 * callback was missed (a busy main thread), so it is preferred over counting callbacks.
 * Returns a stop function, or null where requestVideoFrameCallback is missing.
 */
function countDisplayedFrames(video) {
  if (typeof video.requestVideoFrameCallback !== 'function') return null;
  let handle = 0;
  let first = null;
  const onFrame = (_now, meta) => {
    if (typeof meta.presentedFrames === 'number') {
      first ??= meta.presentedFrames - 1;
      demo.framesDisplayed = meta.presentedFrames - first;
    } else {
      demo.framesDisplayed += 1;
    }
    handle = video.requestVideoFrameCallback(onFrame);
  };
  handle = video.requestVideoFrameCallback(onFrame);
  return () => video.cancelVideoFrameCallback(handle);
}

/** Codec, resolution and decoder frame rate of the received video, from getStats. */
async function inboundVideo(pc) {
  const report = await pc.getStats();
  for (const stat of report.values()) {
    if (stat.type !== 'inbound-rtp' || (stat.kind ?? stat.mediaType) !== 'video') continue;
    const codec = stat.codecId ? report.get(stat.codecId) : null;
    return {
      codec: codec?.mimeType ? codec.mimeType.replace(/^video\//i, '') : null,
      width: stat.frameWidth,
      height: stat.frameHeight,
      framesPerSecond: stat.framesPerSecond,
    };
  }
  return null;
}

/** Once a second: page fps from the frame counter (or the decoder's rate), codec in use. */
function startStatsLoop(activeClient, haveFrameCounter) {
  let lastFrames = demo.framesDisplayed;
  let lastTime = performance.now();
  const timer = setInterval(async () => {
    const now = performance.now();
    const frames = demo.framesDisplayed; // read together with `now`, before awaiting getStats
    let video = null;
    try {
      video = await inboundVideo(activeClient.pc);
    } catch {
      // getStats fails once the connection is closed; the next tick is stopped anyway.
    }
    if (haveFrameCounter) {
      demo.pageFps = ((frames - lastFrames) * 1000) / (now - lastTime);
    } else if (video && typeof video.framesPerSecond === 'number') {
      demo.pageFps = video.framesPerSecond; // browsers without requestVideoFrameCallback
    }
    lastFrames = frames;
    lastTime = now;
    ui.stat.pageFps.textContent = fmt(demo.pageFps, 1);
    if (video) {
      demo.codec = video.codec;
      ui.stat.codec.textContent = video.codec ?? '–';
      ui.stat.resolution.textContent = video.width ? `${video.width}×${video.height}` : '–';
    }
  }, 1000);
  return () => clearInterval(timer);
}

// ---------------------------------------------------------------------------------------------
// Blendshape bars

let blendNames = [];
let blendPending = null;

function buildBlendBars(names) {
  blendNames = names ?? [];
  ui.blendBars.replaceChildren(...blendNames.map((name) => {
    const row = document.createElement('div');
    row.className = 'row';
    row.innerHTML = '<span class="name"></span><span class="bar"><span class="fill"></span></span>';
    row.querySelector('.name').textContent = name;
    return row;
  }));
}

function showBlendshapes(message) {
  // Up to 25 messages a second: paint only the latest one per animation frame.
  const scheduled = blendPending !== null;
  blendPending = message;
  if (scheduled) return;
  requestAnimationFrame(() => {
    const fills = ui.blendBars.querySelectorAll('.fill');
    blendPending.values?.forEach((v, i) => {
      if (fills[i]) fills[i].style.transform = `scaleX(${Math.max(0, Math.min(1, v))})`;
    });
    blendPending = null;
  });
}

ui.blendToggle.addEventListener('change', () => {
  const on = ui.blendToggle.checked;
  ui.blendBars.hidden = !on;
  client?.subscribeBlendshapes(on);
});

// ---------------------------------------------------------------------------------------------
// Session

async function start() {
  if (client || connecting) return;
  showError('');
  resetStats();
  setState('connecting');
  const abort = (connecting = new AbortController());
  let session;
  try {
    session = await AvatarClient.connect({
      audio: ui.audio.value,
      avatar: ui.avatar.value || undefined,
      codec: ui.codec.value || undefined,
      blendshapes: ui.blendToggle.checked,
      signal: abort.signal,
      on: {connectionstatechange: (state) => (ui.stat.state.textContent = state)},
    });
  } catch (err) {
    if (err?.name !== 'AbortError') showError(err?.message || String(err));
    setState('idle');
    return;
  } finally {
    connecting = null;
  }

  client = session;
  window.avatarClient = session;
  ui.stat.avatar.textContent = session.info?.avatar ?? '–';
  buildBlendBars(session.info?.blendshapes);

  session.on('speech_start', () => setSpeaking(true));
  session.on('speech_end', () => setSpeaking(false));
  session.on('stats', showServerStats);
  session.on('blendshapes', showBlendshapes);
  session.on('error', (err) => showError(err.message));
  session.on('connectionstatechange', (state) => {
    ui.stat.state.textContent = state === 'connected' ? 'connected' : state;
  });
  session.on('close', ({reason}) => {
    stopSession?.();
    stopSession = null;
    client = null;
    ui.video.srcObject = null;
    setState('idle');
    resetStats();
    if (reason === 'server') showError('The server ended the session.');
  });

  setState('connected');
  demo.framesDisplayed = 0;
  demo.pageFps = null;
  const stopCounting = countDisplayedFrames(ui.video);
  const stopStats = startStatsLoop(session, stopCounting !== null);
  stopSession = () => {
    stopCounting?.();
    stopStats();
  };

  if (!(await session.attach(ui.video))) {
    // Autoplay was blocked (the 'error' listener shows why): the next click plays it.
    ui.video.addEventListener('click', () => ui.video.play().then(() => showError(''), () => {}), {once: true});
  }
}

function stop() {
  connecting?.abort();
  client?.close(); // its 'close' listener resets the page
}

ui.start.addEventListener('click', start);
ui.stop.addEventListener('click', stop);
ui.clear.addEventListener('click', () => client?.clear());
$('controls').addEventListener('submit', (event) => event.preventDefault());

// ---------------------------------------------------------------------------------------------
// Start-up: fill the avatar list, apply query parameters, maybe start at once.

function selectValue(select, value) {
  if (!value) return;
  if (![...select.options].some((o) => o.value === value)) {
    // Keep an unknown value selectable, so the server can say what is wrong with it.
    select.add(new Option(value, value));
  }
  select.value = value;
}

async function loadAvatars() {
  try {
    const {avatars, default: fallback} = await AvatarClient.listAvatars();
    const label = (name) => (name === fallback && name !== 'default' ? `${name} (default)` : name);
    ui.avatar.replaceChildren(...avatars.map((name) => new Option(label(name), name)));
    if (fallback) ui.avatar.value = fallback;
  } catch (err) {
    showError(`Could not list avatars: ${err.message}`);
  }
}

async function init() {
  setState('idle');
  const params = new URLSearchParams(location.search);
  await loadAvatars();
  selectValue(ui.avatar, params.get('avatar'));
  const codec = params.get('codec');
  if (codec) selectValue(ui.codec, codec.toLowerCase() === 'auto' ? '' : codec.toUpperCase());
  selectValue(ui.audio, params.get('audio'));
  if (params.get('blendshapes') === '1') {
    ui.blendToggle.checked = true;
    ui.blendBars.hidden = false;
  }
  if (params.get('autostart') === '1') await start();
}

init();
