// The render page (renders.html): text or an audio file in, a finished video out, through the
// render-job API of `avatar serve` (docs/renders.md). Plain ES module, no build step.
//
// A server that requires tokens: open the page as renders.html?token=<avatar token>. Requests
// carry it as `Authorization: Bearer`; the result's URL (a <video> and a link cannot send
// headers) carries it as `?token=`, which the server also reads.
//
// For tests and the console: `window.rendersPage` holds the options, the current job and every
// state the progress bar showed (`seen`).

const POLL_MS = 500;
const token = new URLSearchParams(location.search).get('token') || null;

/** @typedef {'queued' | 'running' | 'done' | 'failed' | 'cancelled'} JobStatus */
/**
 * @typedef {object} RenderJob What `GET /v1/renders/{id}` answers (the part this page reads).
 * @property {string} id
 * @property {JobStatus} status
 * @property {{frames: number, total: number}} [progress]
 * @property {string | null} [error]
 * @property {string | null} [result_url]
 */
/**
 * @typedef {object} RenderOptions What `GET /v1/render-options` answers.
 * @property {string[]} avatars
 * @property {string} default_avatar
 * @property {string[]} renderers
 * @property {string[]} voices
 * @property {number[]} fps
 * @property {string[]} formats
 * @property {number} max_size
 * @property {number} max_text_chars
 */
/** @typedef {{status: JobStatus, frames: number, total: number, value: number, max: number}} Seen */

/**
 * @template {HTMLElement} T
 * @param {string} id
 * @param {{new (): T, prototype: T}} type
 * @returns {T}
 */
function byId(id, type) {
  const el = document.getElementById(id);
  if (!(el instanceof type)) throw new Error(`renders.html: no #${id}`);
  return el;
}

const ui = {
  form: byId('render-form', HTMLFormElement),
  text: byId('text-input', HTMLTextAreaElement),
  textField: byId('text-field', HTMLLabelElement),
  drop: byId('drop-zone', HTMLLabelElement),
  dropText: byId('drop-text', HTMLSpanElement),
  audio: byId('audio-input', HTMLInputElement),
  avatar: byId('avatar-select', HTMLSelectElement),
  voice: byId('voice-select', HTMLSelectElement),
  fps: byId('fps-select', HTMLSelectElement),
  format: byId('format-select', HTMLSelectElement),
  size: byId('size-input', HTMLInputElement),
  renderer: byId('renderer-select', HTMLSelectElement),
  submit: byId('submit-button', HTMLButtonElement),
  cancel: byId('cancel-button', HTMLButtonElement),
  error: byId('error', HTMLParagraphElement),
  job: byId('job', HTMLElement),
  status: byId('job-status', HTMLSpanElement),
  frames: byId('job-frames', HTMLSpanElement),
  progress: byId('job-progress', HTMLProgressElement),
  download: byId('download-link', HTMLAnchorElement),
  video: byId('result-video', HTMLVideoElement),
  note: byId('stage-note', HTMLDivElement),
};

const page = {
  /** @type {RenderOptions | null} */ options: null,
  /** @type {RenderJob | null} */ job: null,
  /** @type {Seen[]} */ seen: [],
};
Object.assign(window, {rendersPage: page});

/** @type {File | null} */
let audioFile = null;
let generation = 0; // a new submission stops the polling of the one before
/** @type {string | null} */
let cancelling = null; // the job a cancel was asked for (a running one stops at its next frame)

/** @type {Record<JobStatus, string>} */
const STATUS_TEXT = {
  queued: 'Queued',
  running: 'Rendering…',
  done: 'Done',
  failed: 'Failed',
  cancelled: 'Cancelled',
};

// -- the server -------------------------------------------------------------------------------

/**
 * A JSON answer of the server, or an Error with the server's own `error` message.
 * @param {string} path relative to the page (the API may sit under a prefix behind a proxy)
 * @param {RequestInit} [init]
 * @returns {Promise<any>}
 */
async function api(path, init = {}) {
  const headers = new Headers(init.headers);
  if (token) headers.set('Authorization', `Bearer ${token}`);
  let response;
  try {
    response = await fetch(new URL(path, location.href), {...init, headers});
  } catch (err) {
    throw new Error(`The server did not answer (${err instanceof Error ? err.message : err}).`);
  }
  let body = null;
  try {
    body = await response.json();
  } catch {
    // not JSON: the status line says enough
  }
  if (!response.ok) {
    const message = body && typeof body.error === 'string' ? body.error : '';
    throw new Error(message || `${response.status} ${response.statusText}`.trim());
  }
  return body;
}

/**
 * Where the result is, as a URL a <video> and a link can use (the token in the query string
 * when the result is on this server; a presigned URL elsewhere is used as it is).
 * @param {string} resultUrl
 */
function resultHref(resultUrl) {
  const url = new URL(resultUrl, location.href);
  if (token && url.origin === location.origin) url.searchParams.set('token', token);
  return url.href;
}

// -- the form ---------------------------------------------------------------------------------

/**
 * @param {HTMLSelectElement} select
 * @param {Array<string | number>} values
 * @param {string | number | null} selected
 * @param {(value: string) => string} [label]
 */
function fill(select, values, selected, label = (v) => v) {
  const keep = [...select.options].filter((o) => o.value === '');
  select.replaceChildren(...keep);
  for (const value of values) {
    const option = new Option(label(String(value)), String(value));
    option.selected = String(value) === String(selected);
    select.add(option);
  }
}

async function loadOptions() {
  try {
    /** @type {RenderOptions} */
    const options = await api('v1/render-options');
    page.options = options;
    fill(ui.avatar, options.avatars, options.default_avatar,
      (v) => (v === options.default_avatar && v !== 'default' ? `${v} (default)` : v));
    ui.avatar.querySelector('option[value=""]')?.remove();
    fill(ui.voice, options.voices, null);
    fill(ui.fps, options.fps, 25, (v) => `${v} fps`);
    fill(ui.format, options.formats, options.formats[0]);
    fill(ui.renderer, options.renderers, null);
    ui.size.max = String(options.max_size);
    ui.text.maxLength = options.max_text_chars;
  } catch (err) {
    showError(`Could not load the render options: ${message(err)}`);
  }
}

function inputKind() {
  const checked = ui.form.querySelector('input[name="input"]:checked');
  return checked instanceof HTMLInputElement && checked.value === 'audio' ? 'audio' : 'text';
}

/** @param {'text' | 'audio'} kind */
function setInputKind(kind) {
  const radio = ui.form.querySelector(`input[name="input"][value="${kind}"]`);
  if (radio instanceof HTMLInputElement) radio.checked = true;
  ui.textField.hidden = kind !== 'text';
  ui.drop.hidden = kind !== 'audio';
  ui.voice.disabled = kind !== 'text';
}

/** @param {File | null} file */
function setAudioFile(file) {
  audioFile = file;
  if (file) {
    const mb = (file.size / (1 << 20)).toFixed(1);
    const name = document.createElement('strong');
    name.textContent = file.name;
    ui.dropText.replaceChildren(name, ` (${mb} MB): drop or click to replace`);
    setInputKind('audio');
  } else {
    ui.dropText.textContent = 'Drop an audio file here, or click to choose one';
  }
}

/**
 * The submission: JSON for text, multipart for a file. Nothing is checked here: the server
 * checks every field and says what is wrong, and the page shows its words.
 * @returns {RequestInit}
 */
function buildRequest() {
  /** @type {Record<string, string | number>} */
  const fields = {fps: Number(ui.fps.value), format: ui.format.value};
  if (ui.avatar.value) fields.avatar = ui.avatar.value;
  if (ui.renderer.value) fields.renderer = ui.renderer.value;
  if (ui.size.value.trim()) fields.size = Number(ui.size.value);
  if (inputKind() === 'text') {
    if (ui.voice.value) fields.voice = ui.voice.value;
    const body = JSON.stringify({text: ui.text.value, ...fields});
    return {method: 'POST', body, headers: {'Content-Type': 'application/json'}};
  }
  const form = new FormData();
  for (const [key, value] of Object.entries(fields)) form.append(key, String(value));
  if (audioFile) form.append('audio', audioFile, audioFile.name);
  return {method: 'POST', body: form};
}

// -- the job ----------------------------------------------------------------------------------

/** @param {unknown} err */
function message(err) {
  return err instanceof Error ? err.message : String(err);
}

/** @param {string} text */
function showError(text) {
  ui.error.textContent = text;
  ui.error.hidden = false;
}

function clearError() {
  ui.error.textContent = '';
  ui.error.hidden = true;
}

function clearResult() {
  ui.video.pause();
  ui.video.removeAttribute('src');
  ui.video.load();
  ui.video.hidden = true;
  ui.download.hidden = true;
  ui.download.removeAttribute('href');
  ui.note.hidden = false;
}

/** @param {RenderJob} job */
function showJob(job) {
  page.job = job;
  const frames = job.progress?.frames ?? 0;
  const total = job.progress?.total ?? 0;
  document.body.dataset.state = job.status;
  ui.job.hidden = false;
  ui.status.textContent = STATUS_TEXT[job.status] ?? job.status;
  if (total > 0) {
    ui.progress.max = total;
    ui.progress.value = Math.min(frames, total);
    const pct = Math.floor((100 * Math.min(frames, total)) / total);
    ui.frames.textContent = `${frames} / ${total} frames (${pct} %)`;
  } else if (job.status === 'queued' || job.status === 'running') {
    ui.progress.removeAttribute('value'); // indeterminate: waiting, or speaking the text
    ui.frames.textContent = job.status === 'queued' ? 'waiting for the renderer' : 'preparing speech';
  } else {
    ui.progress.max = 1;
    ui.progress.value = job.status === 'done' ? 1 : 0;
    ui.frames.textContent = '–';
  }
  ui.progress.dataset.frames = String(frames);
  ui.progress.dataset.total = String(total);
  page.seen.push({status: job.status, frames, total, value: ui.progress.value, max: ui.progress.max});
  const live = job.status === 'queued' || job.status === 'running';
  if (live && cancelling === job.id) ui.status.textContent = 'Cancelling…';
  ui.cancel.disabled = !live || cancelling === job.id;
  ui.submit.disabled = live;
  ui.form.setAttribute('aria-busy', String(live));
  if (job.status === 'failed') showError(job.error || 'The render failed.');
  if (job.status === 'cancelled') ui.note.textContent = 'Cancelled.';
  if (job.status === 'done' && job.result_url) showResult(job.result_url);
}

/** @param {string} resultUrl */
function showResult(resultUrl) {
  const href = resultHref(resultUrl);
  if (ui.video.getAttribute('src') !== href) {
    ui.video.src = href;
    ui.video.load();
  }
  ui.video.hidden = false;
  ui.note.hidden = true;
  const format = ui.format.value || 'mp4';
  ui.download.href = href;
  ui.download.download = `${page.job?.id ?? 'render'}.${format}`;
  ui.download.textContent = `Download ${format}`;
  ui.download.hidden = false;
}

/**
 * GET the job every POLL_MS until it ends or another submission starts.
 * @param {string} id
 * @param {number} gen
 */
async function poll(id, gen) {
  while (gen === generation) {
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
    if (gen !== generation) return;
    let job;
    try {
      job = /** @type {RenderJob} */ (await api(`v1/renders/${encodeURIComponent(id)}`));
    } catch (err) {
      showError(`Lost the job: ${message(err)}`);
      ui.submit.disabled = false;
      ui.cancel.disabled = true;
      return;
    }
    if (gen !== generation) return;
    showJob(job);
    if (job.status !== 'queued' && job.status !== 'running') return;
  }
}

ui.form.addEventListener('submit', async (event) => {
  event.preventDefault();
  if (ui.submit.disabled) return;
  const gen = ++generation;
  clearError();
  clearResult();
  page.seen = [];
  ui.note.textContent = 'Rendering…';
  ui.submit.disabled = true;
  ui.form.setAttribute('aria-busy', 'true');
  try {
    /** @type {{id: string, status: JobStatus}} */
    const accepted = await api('v1/renders', buildRequest());
    if (gen !== generation) return;
    showJob({id: accepted.id, status: accepted.status});
    if (accepted.status === 'queued' || accepted.status === 'running') void poll(accepted.id, gen);
  } catch (err) {
    showError(message(err));
    ui.note.textContent = 'Type some text or drop an audio file, then press Render.';
    document.body.dataset.state = 'idle';
    ui.submit.disabled = false;
    ui.form.setAttribute('aria-busy', 'false');
  }
});

ui.cancel.addEventListener('click', async () => {
  const job = page.job;
  if (!job) return;
  cancelling = job.id;
  ui.cancel.disabled = true;
  ui.status.textContent = 'Cancelling…';
  try {
    showJob(/** @type {RenderJob} */ (await api(`v1/renders/${encodeURIComponent(job.id)}`, {method: 'DELETE'})));
  } catch (err) {
    showError(message(err)); // e.g. it ended meanwhile: the next poll shows how
  }
});

for (const radio of ui.form.querySelectorAll('input[name="input"]')) {
  radio.addEventListener('change', () => setInputKind(inputKind()));
}
ui.audio.addEventListener('change', () => setAudioFile(ui.audio.files?.[0] ?? null));

// A file dropped anywhere on the page is the input (and the browser does not open it instead).
document.addEventListener('dragover', (event) => {
  if (!event.dataTransfer?.types.includes('Files')) return;
  event.preventDefault();
  event.dataTransfer.dropEffect = 'copy';
  ui.drop.dataset.over = '';
});
document.addEventListener('dragleave', (event) => {
  if (event.relatedTarget === null) delete ui.drop.dataset.over;
});
document.addEventListener('drop', (event) => {
  const file = event.dataTransfer?.files[0];
  if (!file) return;
  event.preventDefault();
  delete ui.drop.dataset.over;
  setAudioFile(file);
});

setInputKind(inputKind());
void loadOptions();
