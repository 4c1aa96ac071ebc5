// Demo page logic: controls, live stats, and the avatar video.
//
// Query parameters (used by tests): ?autostart=1&avatar=NAME&codec=VP8|H264&audio=mic|none&blendshapes=1
// &probe=1 (latency probe: timed beeps instead of the microphone, measured on screen).
// After connecting, window.avatarClient is the AvatarClient; window.avatarDemo exposes what the
// page measures (displayed frames, page fps, codec in use, state, and with a server started with
// --profile: the last profile message, and the probe's end-to-end samples).

import {AvatarClient} from './avatar-client.js';
import {LatencyProbe} from './latency-probe.js';

/**
 * @import {BlendshapesMessage, ProfileMessage, ProfileQuantiles, StatsMessage, VideoCodec} from './avatar-client.js'
 * @typedef {'idle' | 'connecting' | 'connected'} DemoState
 */

/**
 * The page's element `id`, of class `type` (index.html has them all: anything else is a broken page).
 * @template {HTMLElement} T
 * @param {string} id
 * @param {{new (): T, name: string}} type
 * @returns {T}
 */
function $(id, type) {
  const found = document.getElementById(id);
  if (!(found instanceof type)) throw new Error(`demo page: #${id} is not a ${type.name}`);
  return found;
}

/**
 * `selector` inside `root`, which the page's markup always has (see $ above).
 * @param {ParentNode} root
 * @param {string} selector
 * @returns {HTMLElement}
 */
function part(root, selector) {
  const found = root.querySelector(selector);
  if (!(found instanceof HTMLElement)) throw new Error(`demo page: no ${selector} in its place`);
  return found;
}

/** @param {string} id */
const el = (id) => $(id, HTMLElement);
const ui = {
  video: $('avatar-video', HTMLVideoElement),
  avatar: $('avatar-select', HTMLSelectElement),
  codec: $('codec-select', HTMLSelectElement),
  audio: $('audio-select', HTMLSelectElement),
  start: $('start-button', HTMLButtonElement),
  stop: $('stop-button', HTMLButtonElement),
  clear: $('clear-button', HTMLButtonElement),
  sayText: $('say-text', HTMLTextAreaElement),
  voice: $('voice-select', HTMLSelectElement),
  say: $('say-button', HTMLButtonElement),
  error: el('error'),
  speaking: el('speaking-indicator'),
  blendToggle: $('blend-toggle', HTMLInputElement),
  blendBars: el('blend-bars'),
  probeToggle: $('probe-toggle', HTMLInputElement),
  profileToggle: $('profile-toggle', HTMLInputElement),
  profile: el('profile'),
  profileBody: el('profile-body'),
  profileNote: el('profile-note'),
  counters: el('prof-counters'),
  gauge: el('budget-gauge'),
  stack: el('stage-stack'),
  stageBars: el('stage-bars'),
  waitBars: el('wait-bars'),
  budgetMs: el('budget-ms'),
  e2e: {p50: el('e2e-p50'), p95: el('e2e-p95'), sub: el('e2e-sub'), badge: el('e2e-badge'), badgeValue: el('e2e-badge-value')},
  server: {p50: el('srv-p50'), p95: el('srv-p95')},
  stat: {
    state: el('stat-state'),
    avatar: el('stat-avatar'),
    codec: el('stat-codec'),
    resolution: el('stat-resolution'),
    pageFps: el('stat-page-fps'),
    serverFps: el('stat-server-fps'),
    latency: el('stat-latency'),
    frames: el('stat-frames'),
    late: el('stat-late'),
    skipped: el('stat-skipped'),
    idle: el('stat-idle'),
    queue: el('stat-queue'),
  },
};

/**
 * What the page measures; tests read it as window.avatarDemo.
 * @type {{state: DemoState, framesDisplayed: number, pageFps: number | null,
 *   codec: string | null, lastStats: StatsMessage | null, lastProfile: ProfileMessage | null,
 *   probe: LatencyProbe | null, e2e: number[]}}
 */
const demo = {
  state: 'idle',
  framesDisplayed: 0, // frames presented by the <video> (requestVideoFrameCallback)
  pageFps: null, // displayed frames per second over the last second
  codec: null, // e.g. 'VP8', from getStats
  lastStats: null, // the server's last 'stats' message
  lastProfile: null, // the server's last 'profile' message (server started with --profile)
  probe: null, // the LatencyProbe while a probe session runs
  e2e: [], // end-to-end (mic -> screen) latencies in ms, browser clock: the probe's samples
};
Object.assign(window, {avatarDemo: demo});

/** @type {AvatarClient | null} */
let client = null;
/** @type {AbortController | null} */
let connecting = null; // while connect() runs
/** @type {(() => void) | null} */
let stopSession = null; // undoes what a session set up (timers, frame counter)

// ---------------------------------------------------------------------------------------------
// UI state

/** @param {DemoState} state */
function setState(state) {
  demo.state = state;
  document.body.dataset.state = state;
  ui.stat.state.textContent = state;
  ui.start.disabled = state !== 'idle';
  ui.stop.disabled = state === 'idle';
  ui.clear.disabled = state !== 'connected';
  ui.say.disabled = state !== 'connected' || ui.audio.value !== 'none'; // text replaces the mic
  for (const select of [ui.avatar, ui.codec, ui.probeToggle]) select.disabled = state !== 'idle';
  ui.audio.disabled = state !== 'idle' || ui.probeToggle.checked; // the probe is the input
}

/** @param {string} message */
function showError(message) {
  ui.error.textContent = message || '';
  ui.error.hidden = !message;
}

/** @param {boolean} on */
function setSpeaking(on) {
  ui.speaking.dataset.speaking = String(on);
}

function resetStats() {
  for (const el of Object.values(ui.stat)) el.textContent = '–';
  ui.stat.state.textContent = demo.state;
  setSpeaking(false);
}

/** @param {unknown} value @param {number} [digits] */
const fmt = (value, digits = 0) => (typeof value === 'number' && Number.isFinite(value) ? value.toFixed(digits) : '–');

/** @param {StatsMessage} stats */
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
 * @param {HTMLVideoElement} video
 * @returns {(() => void) | null}
 */
function countDisplayedFrames(video) {
  if (typeof video.requestVideoFrameCallback !== 'function') return null;
  let handle = 0;
  /** @type {number | null} */
  let first = null;
  /** @type {VideoFrameRequestCallback} */
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

/**
 * Codec, resolution and decoder frame rate of the received video, from getStats.
 * @param {RTCPeerConnection} pc
 * @returns {Promise<{codec: string | null, width?: number, height?: number, framesPerSecond?: number} | null>}
 */
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

/**
 * Once a second: page fps from the frame counter (or the decoder's rate), codec in use.
 * @param {AvatarClient} activeClient
 * @param {boolean} haveFrameCounter
 */
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

/** @type {string[]} */
let blendNames = [];
/** @type {BlendshapesMessage | null} */
let blendPending = null;

/** @param {string[] | undefined} names */
function buildBlendBars(names) {
  blendNames = names ?? [];
  ui.blendBars.replaceChildren(...blendNames.map((name) => {
    const row = document.createElement('div');
    row.className = 'row';
    row.innerHTML = '<span class="name"></span><span class="bar"><span class="fill"></span></span>';
    part(row, '.name').textContent = name;
    return row;
  }));
}

/** @param {BlendshapesMessage} message */
function showBlendshapes(message) {
  // Up to 25 messages a second: paint only the latest one per animation frame.
  const scheduled = blendPending !== null;
  blendPending = message;
  if (scheduled) return;
  requestAnimationFrame(() => {
    const fills = ui.blendBars.querySelectorAll('.fill');
    blendPending?.values?.forEach((v, i) => {
      const fill = fills[i];
      if (fill instanceof HTMLElement) fill.style.transform = `scaleX(${Math.max(0, Math.min(1, v))})`;
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
// Profile (server started with --profile) and the latency probe

/** Pipeline stages and queues in the order a frame meets them; colours come from demo.css. */
const STAGES = ['resample', 'vad', 'features', 'motion', 'render', 'colour', 'encode', 'send'];
const WAITS = ['inbox', 'ready', 'out'];
/** @param {string} name */
const stageColour = (name) => `var(--st-${name}, var(--st-other))`;
/** @param {string} name */
const waitColour = (name) => `var(--wt-${name}, var(--wt-out))`;

let profileOn = false; // the session's server is in profile mode (ready.profile, or profile messages)
let probeOn = false; // the session's audio is the latency probe's beeps

/** @param {unknown} v @returns {v is number} */
const isNum = (v) => typeof v === 'number' && Number.isFinite(v);
/** Milliseconds with the precision that matters at that size: 0.05, 3.1, 42. @param {unknown} v */
const fmtMs = (v) => (isNum(v) ? v.toFixed(v < 1 ? 2 : v < 10 ? 1 : 0) : '–');
/**
 * Width of `ms` on a track that is `budget` ms long; a non-zero value stays visible.
 * @param {number | null | undefined} ms
 * @param {number} budget
 */
const barWidth = (ms, budget) => (isNum(ms) && ms > 0 && budget > 0 ? `max(1px, ${Math.min(100, (ms / budget) * 100)}%)` : '0');

/**
 * @param {HTMLElement} container
 * @param {string} name
 * @param {string} colour
 * @returns {HTMLElement}
 */
function barRow(container, name, colour) {
  const row = document.createElement('div');
  row.className = 'bar-row';
  row.dataset.name = name;
  row.dataset.missing = '';
  row.style.setProperty('--c', colour);
  row.innerHTML = '<span class="name"></span><span class="track"><span class="p95"></span><span class="p50"></span></span><span class="num">–</span>';
  part(row, '.name').textContent = name;
  container.append(row);
  return row;
}

/**
 * @param {HTMLElement} container
 * @param {string} name
 * @param {string} colour
 * @returns {HTMLElement}
 */
function rowFor(container, name, colour) {
  const rows = /** @type {HTMLElement[]} */ ([...container.children]); // barRow() made them all
  return rows.find((row) => row.dataset.name === name) ?? barRow(container, name, colour);
}

/**
 * One stage or queue: p50 solid, p95 as a lighter extension, both on the budget's scale.
 * @param {HTMLElement} row
 * @param {ProfileQuantiles | null | undefined} q
 * @param {number} budget
 */
function showBar(row, q, budget) {
  const [p50, p95] = [part(row, '.p50'), part(row, '.p95')];
  const num = part(row, '.num');
  const name = row.dataset.name;
  if (!q || !isNum(q.p50)) {
    row.dataset.missing = '';
    row.removeAttribute('data-over');
    p50.style.width = p95.style.width = '0';
    num.textContent = '–';
    row.title = `${name}: not measured in the last second`;
    return;
  }
  row.removeAttribute('data-missing');
  const high = isNum(q.p95) ? Math.max(q.p95, q.p50) : q.p50;
  p50.style.width = barWidth(q.p50, budget);
  p95.style.width = barWidth(high, budget);
  row.toggleAttribute('data-over', high > budget);
  num.innerHTML = `${fmtMs(q.p50)} <small>/ ${fmtMs(q.p95)} ms</small>`;
  const share = budget > 0 ? ` (p50 ${((q.p50 / budget) * 100).toFixed(1)}% of the ${fmtMs(budget)} ms budget)` : '';
  row.title = `${name}: p50 ${fmtMs(q.p50)} ms, p95 ${fmtMs(q.p95)} ms, mean ${fmtMs(q.mean)} ms${share}`;
}

function resetProfile() {
  profileOn = false;
  probeOn = false;
  demo.lastProfile = null;
  demo.e2e = [];
  ui.stageBars.replaceChildren();
  ui.waitBars.replaceChildren();
  for (const name of STAGES) barRow(ui.stageBars, name, stageColour(name));
  for (const name of WAITS) barRow(ui.waitBars, name, waitColour(name));
  part(ui.stack, '.track').replaceChildren();
  part(ui.stack, '.num').textContent = '–';
  part(ui.gauge, '.fill').style.width = '0';
  part(ui.gauge, '.num').textContent = '–';
  ui.gauge.removeAttribute('data-level');
  ui.budgetMs.textContent = '–';
  for (const chip of ui.counters.children) {
    part(chip, 'b').textContent = '–';
    chip.removeAttribute('data-hot');
  }
  ui.server.p50.textContent = ui.server.p95.textContent = '–';
  ui.e2e.p50.textContent = ui.e2e.p95.textContent = '–';
  ui.e2e.badgeValue.textContent = '…';
  ui.e2e.sub.textContent = 'Latency probe off: tick it before Start to measure.';
  setProfileNote('');
  updateProfileVisibility();
}

/** @param {string} text */
function setProfileNote(text) {
  ui.profileNote.textContent = text;
  ui.profileNote.hidden = !text;
}

function updateProfileVisibility() {
  // After Stop the last numbers stay up until the next Start.
  const used = profileOn || probeOn;
  ui.profile.hidden = !(used && ui.profileToggle.checked);
  ui.profileBody.hidden = !profileOn;
  ui.e2e.badge.hidden = !probeOn;
}

/**
 * Once a second in profile mode: where the frame budget goes, and the server's latency.
 * @param {ProfileMessage} msg
 */
function showProfile(msg) {
  demo.lastProfile = msg;
  if (!profileOn) {
    profileOn = true;
    updateProfileVisibility();
  }
  const fps = isNum(msg.fps) ? msg.fps : client?.info?.fps;
  const budget = isNum(msg.budget_ms) && msg.budget_ms > 0 ? msg.budget_ms : 1000 / (fps || 25);
  ui.budgetMs.textContent = fmtMs(budget);

  /** @type {Record<string, string | number | undefined>} */
  const counters = {fps: fmt(msg.fps, 1), frames: fmt(msg.frames), late: msg.late, skipped: msg.skipped, dropped: msg.dropped, idle: fmt(msg.idle)};
  for (const chip of /** @type {HTMLElement[]} */ ([...ui.counters.children])) {
    const value = counters[chip.dataset.key ?? ''];
    part(chip, 'b').textContent = typeof value === 'string' ? value : fmt(value);
    chip.toggleAttribute('data-hot', chip.hasAttribute('data-warn') && isNum(value) && value > 0);
  }

  const use = msg.budget_use;
  part(ui.gauge, '.fill').style.width = barWidth(isNum(use) ? use * budget : null, budget);
  ui.gauge.dataset.level = !isNum(use) ? 'ok' : use >= 1 ? 'over' : use >= 0.7 ? 'warn' : 'ok';
  part(ui.gauge, '.num').textContent = isNum(use) ? `${(use * 100).toFixed(0)}% of ${fmtMs(budget)} ms` : '–';
  ui.gauge.title = "Share of the frame budget (1/fps) the server's per-frame work used, last second";

  /** @type {ProfileMessage['stages']} */
  const stages = msg.stages && typeof msg.stages === 'object' ? msg.stages : {};
  /** @type {ProfileMessage['waits']} */
  const waits = msg.waits && typeof msg.waits === 'object' ? msg.waits : {};
  // Known stages in pipeline order; any new one the server reports is added after them.
  const stageNames = [...STAGES, ...Object.keys(stages).filter((n) => !STAGES.includes(n))];
  const waitNames = [...WAITS, ...Object.keys(waits).filter((n) => !WAITS.includes(n))];
  for (const name of stageNames) showBar(rowFor(ui.stageBars, name, stageColour(name)), stages[name], budget);
  for (const name of waitNames) showBar(rowFor(ui.waitBars, name, waitColour(name)), waits[name], budget);

  // Mean work per frame, stage by stage, side by side on the budget: where the time goes.
  let sum = 0;
  const segments = [];
  for (const name of stageNames) {
    const q = stages[name];
    const ms = q && (isNum(q.mean) ? q.mean : q.p50);
    if (!isNum(ms) || ms <= 0) continue;
    sum += ms;
    const seg = document.createElement('span');
    seg.className = 'seg';
    seg.style.setProperty('--c', stageColour(name));
    seg.style.width = `${(ms / budget) * 100}%`;
    seg.title = `${name}: mean ${fmtMs(ms)} ms`;
    segments.push(seg);
  }
  part(ui.stack, '.track').replaceChildren(...segments);
  part(ui.stack, '.num').textContent = segments.length ? `Σ ${fmtMs(sum)} ms` : '–';
  ui.stack.toggleAttribute('data-over', sum > budget);

  const lat = msg.latency_ms ?? {p50: null, p95: null};
  ui.server.p50.textContent = fmtMs(lat.p50);
  ui.server.p95.textContent = fmtMs(lat.p95);
}

/** After each probe sample (or missed beep): the browser's own end-to-end numbers. */
function showE2E() {
  const probe = demo.probe;
  if (!probe) return;
  const s = probe.stats();
  ui.e2e.p50.textContent = fmtMs(s.p50);
  ui.e2e.p95.textContent = fmtMs(s.p95);
  ui.e2e.badgeValue.textContent = s.count ? `${fmtMs(s.p50)} ms` : '…';
  const last = probe.samples[probe.samples.length - 1];
  setProfileNote(s.markedShare !== null && s.markedShare > 0.3
    ? `The marker corner is white in ${(s.markedShare * 100).toFixed(0)}% of frames, not only after beeps: ` +
      'the avatar image there is too light for the probe, and its numbers cannot be trusted.'
    : '');
  ui.e2e.sub.textContent = s.count
    ? `${s.count} beeps timed · last ${fmtMs(last)} ms · min ${fmtMs(s.min)} · max ${fmtMs(s.max)}${s.missed ? ` · ${s.missed} missed` : ''}`
    : s.missed
      ? `No beep seen on screen yet (${s.missed} missed).`
      : 'Beeping; waiting for the first marked frame…';
}

ui.profileToggle.addEventListener('change', updateProfileVisibility);
ui.probeToggle.addEventListener('change', () => setState(demo.state));

// ---------------------------------------------------------------------------------------------
// Session

async function start() {
  if (client || connecting) return;
  showError('');
  resetStats();
  resetProfile();
  setState('connecting');
  const abort = (connecting = new AbortController());
  /** @type {LatencyProbe | null} */
  let probe = null;
  let session;
  try {
    if (ui.probeToggle.checked) {
      // Created here, in the Start click: the AudioContext may need that user gesture.
      probe = await LatencyProbe.create();
      demo.probe = probe;
      demo.e2e = probe.samples;
      probeOn = true;
      ui.e2e.sub.textContent = 'Connecting…';
      updateProfileVisibility();
    }
    abort.signal.throwIfAborted();
    session = await AvatarClient.connect({
      // The selects' values; one from the query string that is not an option's is passed on as
      // it is, and connect() refuses it with a message that says what is wrong.
      audio: probe ? probe.stream : /** @type {'mic' | 'none'} */ (ui.audio.value),
      avatar: ui.avatar.value || undefined,
      codec: /** @type {VideoCodec | undefined} */ (ui.codec.value || undefined),
      blendshapes: ui.blendToggle.checked,
      jitterBuffer: jitterBufferParams(new URLSearchParams(location.search)),
      // a server that requires tokens: open the page as ...?token=<avatar token>
      token: new URLSearchParams(location.search).get('token') || undefined,
      signal: abort.signal,
      on: {connectionstatechange: (state) => (ui.stat.state.textContent = state)},
    });
  } catch (err) {
    probe?.close();
    demo.probe = null;
    if (!(err instanceof DOMException && err.name === 'AbortError')) showError(err instanceof Error ? err.message : String(err));
    setState('idle');
    return;
  } finally {
    connecting = null;
  }

  client = session;
  Object.assign(window, {avatarClient: session});
  ui.stat.avatar.textContent = session.info?.avatar ?? '–';
  buildBlendBars(session.info?.blendshapes);

  session.on('speech_start', () => setSpeaking(true));
  session.on('speech_end', () => setSpeaking(false));
  session.on('stats', showServerStats);
  session.on('blendshapes', showBlendshapes);
  session.on('profile', showProfile);
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
    if (profileOn || probeOn) setProfileNote('Session ended: the last numbers stay until the next Start.');
    if (reason === 'server') showError('The server ended the session.');
  });

  setState('connected');
  demo.framesDisplayed = 0;
  demo.pageFps = null;
  const stopCounting = countDisplayedFrames(ui.video);
  const stopStats = startStatsLoop(session, stopCounting !== null);
  if (session.info?.profile) {
    profileOn = true;
    updateProfileVisibility();
  }
  if (probe) startProbe(probe, session);
  stopSession = () => {
    stopCounting?.();
    stopStats();
    probe?.close(); // demo.e2e keeps its samples
    demo.probe = null;
  };

  if (!(await session.attach(ui.video))) {
    // Autoplay was blocked (the 'error' listener shows why): the next click plays it.
    ui.video.addEventListener('click', () => ui.video.play().then(() => showError(''), () => {}), {once: true});
  }
}

/**
 * Time the beeps on screen: needs the marker square a server in profile mode paints.
 * @param {LatencyProbe} probe
 * @param {AvatarClient} client
 */
function startProbe(probe, client) {
  const info = client.info;
  const marker = info?.marker;
  if (!marker) {
    const why = 'The server paints no marker (start it with avatar serve --profile): the probe beeps but cannot time anything.';
    ui.e2e.sub.textContent = 'No marker from the server: nothing to time.';
    setProfileNote(why);
    return;
  }
  probe.on('sample', showE2E);
  probe.on('missed', showE2E);
  probe.watch(ui.video, marker, info?.size || 512);
  probe.listen(client.audioTrack);
  showE2E();
}

function stop() {
  connecting?.abort();
  client?.close(); // its 'close' listener resets the page
}

ui.start.addEventListener('click', start);
ui.stop.addEventListener('click', stop);
ui.clear.addEventListener('click', () => client?.clear());
ui.say.addEventListener('click', () => client?.say(ui.sayText.value, {voice: ui.voice.value}));
$('controls', HTMLFormElement).addEventListener('submit', (event) => event.preventDefault());

// ---------------------------------------------------------------------------------------------
// Start-up: fill the avatar list, apply query parameters, maybe start at once.

/**
 * @param {HTMLSelectElement} select
 * @param {string | null} value
 */
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
    /** @param {string} name */
    const label = (name) => (name === fallback && name !== 'default' ? `${name} (default)` : name);
    ui.avatar.replaceChildren(...avatars.map((name) => new Option(label(name), name)));
    if (fallback) ui.avatar.value = fallback;
  } catch (err) {
    showError(`Could not list avatars: ${err instanceof Error ? err.message : err}`);
  }
}

/**
 * `?jb_audio=ms&jb_video=ms` (`off`: the browser's choice); absent: the client's default.
 * @param {URLSearchParams} params
 */
function jitterBufferParams(params) {
  if (!params.has('jb_audio') && !params.has('jb_video')) return undefined;
  /** @param {string} name */
  const read = (name) => {
    const v = params.get(name);
    return v === null || v === '' || v === 'off' ? null : Number(v);
  };
  return {audio: read('jb_audio'), video: read('jb_video')};
}

async function init() {
  setState('idle');
  const params = new URLSearchParams(location.search);
  await loadAvatars();
  selectValue(ui.avatar, params.get('avatar'));
  const codec = params.get('codec');
  if (codec) selectValue(ui.codec, codec.toLowerCase() === 'auto' ? '' : codec.toUpperCase());
  selectValue(ui.audio, params.get('audio'));
  if (params.get('probe') === '1') {
    ui.probeToggle.checked = true;
    setState(demo.state);
  }
  if (params.get('blendshapes') === '1') {
    ui.blendToggle.checked = true;
    ui.blendBars.hidden = false;
  }
  if (params.get('autostart') === '1') await start();
}

init();
