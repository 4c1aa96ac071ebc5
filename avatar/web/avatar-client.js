/**
 * avatar-client.js: the browser side of the real-time talking-avatar server.
 *
 * One plain ES module, no build step, no dependencies:
 *
 *   import {AvatarClient} from './avatar-client.js';
 *   const avatar = await AvatarClient.connect({audio: 'mic'});
 *   avatar.attach(document.querySelector('video'));
 *
 * The browser is always the offerer: it sends its microphone (or nothing) and receives the avatar's
 * video plus the matching speech audio (delayed by the server so it lines up with the mouth).
 * Control messages and events travel on a data channel labelled "avatar"; an optional WebSocket
 * carries late ICE candidates and mirrors the events.
 *
 * Exports: AvatarClient, PcmSender, AvatarError (see avatar-client.d.ts for the typed API).
 */

import {EMIT, Emitter} from './emitter.js';

// The types of avatar-client.d.ts (a `./avatar-client.js` type import resolves to the .d.ts).
/**
 * @import {AvatarClientEvents, AvatarErrorCode, AvatarList, ConnectOptions, PcmSenderEvents,
 *   PcmSenderOptions, ReadyMessage, ReplacedTracks, VideoCodec} from './avatar-client.js'
 * @typedef {'jitterBufferTarget' | 'playoutDelayHint' | null} DelayProperty
 */

/** Codecs the server can send; the offerer picks one through setCodecPreferences. */
/** @type {VideoCodec[]} */
const VIDEO_CODECS = ['VP8', 'H264'];
/** Retransmission and FEC entries stay in the preference list so loss recovery keeps working. */
const RESILIENCE_CODEC = /^video\/(rtx|red|ulpfec|flexfec-03)$/i;
const MIC_CONSTRAINTS = {echoCancellation: true, noiseSuppression: true, autoGainControl: true};
/** The same server error may arrive on the data channel and on the WebSocket; report it once. */
const DUPLICATE_ERROR_MS = 1500;
const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/** Module-private: constructors are reached only through the static factories. */
const FACTORY = Symbol('factory');
/** The public fields that #start() sets before connect() hands the client out. */
const SET_BY_CONNECT = /** @type {any} */ (undefined);
// Receiver jitter-buffer targets (ms; null = the browser's choice): see `jitterBuffer` in connect().
const DEFAULT_JITTER_BUFFER = Object.freeze({audio: null, video: 0});

/** `err.name` of whatever was thrown ('' when it has none). @param {unknown} err */
const errorName = (err) => String(/** @type {{name?: unknown} | null | undefined} */ (err)?.name ?? '');
/** `err.message`, or the thrown value itself, as text. @param {unknown} err */
const errorText = (err) => String(/** @type {{message?: unknown} | null | undefined} */ (err)?.message || err);

/**
 * An Error with a machine-readable `code`, so callers can react to, say, a denied microphone
 * differently from an unreachable server. `message` is always meant for people.
 */
export class AvatarError extends Error {
  /** @type {'AvatarError'} */ name = 'AvatarError';
  /** @type {AvatarErrorCode} */ code;

  /**
   * @param {AvatarErrorCode} code
   * @param {string} message
   * @param {{cause?: unknown, status?: number}} [options]
   */
  constructor(code, message, options = {}) {
    super(message, 'cause' in options ? {cause: options.cause} : undefined);
    this.code = code;
    /** The HTTP status, for code 'http'. */
    if (options.status !== undefined) this.status = options.status;
  }
}

/**
 * The server's base URL as a directory URL, so that 'offer', 'api/avatars' and 'ws' resolve
 * beneath it (the server may live under a path prefix). Default: the page's own directory.
 * @param {string | URL | null | undefined} url
 * @returns {URL}
 */
function resolveBase(url) {
  const here = globalThis.location?.href;
  if (url === undefined || url === null || url === '') {
    if (!here) throw new AvatarError('bad-option', 'No url given and no page location to default to');
    url = '.';
  }
  const base = new URL(String(url), here);
  if (!base.pathname.endsWith('/')) base.pathname += '/';
  base.search = '';
  base.hash = '';
  return base;
}

/**
 * ws:// or wss:// URL for `path` under the base, with query parameters.
 * @param {URL} base
 * @param {string} path
 * @param {Record<string, string>} params
 */
function socketUrl(base, path, params) {
  const url = new URL(path, base);
  url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
  for (const [key, value] of Object.entries(params)) url.searchParams.set(key, value);
  return url;
}

/**
 * Request headers with `Authorization: Bearer <token>` when there is a token.
 * @param {string | null | undefined} token
 * @param {Record<string, string>} [headers]
 * @returns {Record<string, string>}
 */
function authHeaders(token, headers = {}) {
  return token ? {...headers, Authorization: `Bearer ${token}`} : headers;
}

/**
 * The ICE servers the server hands out (GET api/ice: its STUN/TURN servers, TURN with
 * short-lived credentials). An older server without the route: none.
 * @param {URL} base
 * @param {string | null | undefined} token
 * @param {AbortSignal | undefined} signal
 * @returns {Promise<RTCIceServer[]>}
 */
async function serverIceServers(base, token, signal) {
  try {
    const body = await fetchJson(new URL('api/ice', base), {headers: authHeaders(token), signal}, 'Asking for ICE servers');
    return Array.isArray(body.iceServers) ? body.iceServers : [];
  } catch (err) {
    if (err instanceof AvatarError && err.status === 404) return [];
    throw err;
  }
}

/**
 * fetch + JSON with the server's `{"error": ...}` message surfaced as the Error's message.
 * @param {URL} url
 * @param {RequestInit} init
 * @param {string} what
 * @returns {Promise<Record<string, any>>} the parsed JSON object (its fields are not checked)
 */
async function fetchJson(url, init, what) {
  let res;
  try {
    res = await fetch(url, init);
  } catch (err) {
    if (init.signal?.aborted) throw init.signal.reason ?? err;
    throw new AvatarError('network', `Could not reach the avatar server at ${url.origin} (${what}): ${errorText(err)}`, {cause: err});
  }
  /** @type {any} */
  let body = null;
  try {
    body = await res.json();
  } catch {
    body = null; // not JSON (a proxy's HTML error page, say); handled below
  }
  if (!res.ok) {
    const message = body && typeof body.error === 'string' && body.error
      ? body.error
      : `${what} failed: HTTP ${res.status}${res.statusText ? ' ' + res.statusText : ''}`;
    throw new AvatarError('http', message, {status: res.status});
  }
  if (!body || typeof body !== 'object') {
    throw new AvatarError('http', `${what}: the server's reply is not a JSON object`, {status: res.status});
  }
  return body;
}

/** @returns {Promise<MediaStreamTrack>} */
async function openMicrophone() {
  if (!globalThis.navigator?.mediaDevices?.getUserMedia) {
    throw new AvatarError('mic-unavailable',
      'This page cannot use the microphone: it needs a secure origin (https:// or http://localhost) ' +
      'and a browser with getUserMedia. Connect with audio: "none" to send no audio.');
  }
  try {
    const stream = await navigator.mediaDevices.getUserMedia({audio: MIC_CONSTRAINTS, video: false});
    return stream.getAudioTracks()[0];
  } catch (err) {
    switch (errorName(err)) {
      case 'NotAllowedError':
      case 'SecurityError':
        throw new AvatarError('mic-denied',
          'Microphone access was denied. Allow the microphone for this page and try again.', {cause: err});
      case 'NotFoundError':
      case 'OverconstrainedError':
        throw new AvatarError('mic-unavailable', 'No microphone was found.', {cause: err});
      case 'NotReadableError':
        throw new AvatarError('mic-unavailable',
          'The microphone could not be opened (is another application using it?).', {cause: err});
      default:
        throw new AvatarError('mic-unavailable', `Could not open the microphone: ${errorText(err)}`, {cause: err});
    }
  }
}

/**
 * Put `codec` first on the (receive-only) video transceiver, keeping only the RTX/RED/FEC entries
 * after it: aiortc answers with the offer's codecs in the offer's order and sends the first, so
 * this is how the browser chooses what the server encodes. Other codecs are left out on purpose:
 * asking for H264 must not silently end up as VP8.
 * @param {RTCRtpTransceiver} transceiver
 * @param {VideoCodec} codec
 */
function preferVideoCodec(transceiver, codec) {
  if (typeof transceiver.setCodecPreferences !== 'function' || !globalThis.RTCRtpReceiver?.getCapabilities) {
    throw new AvatarError('codec-unsupported',
      `This browser cannot choose a video codec (no setCodecPreferences); connect without codec to use the default.`);
  }
  const codecs = RTCRtpReceiver.getCapabilities('video')?.codecs ?? [];
  const mime = `video/${codec}`.toLowerCase();
  const chosen = codecs.filter((c) => c.mimeType.toLowerCase() === mime);
  if (chosen.length === 0) {
    throw new AvatarError('codec-unsupported', `This browser cannot receive ${codec} video.`);
  }
  transceiver.setCodecPreferences([...chosen, ...codecs.filter((c) => RESILIENCE_CODEC.test(c.mimeType))]);
}

/**
 * Ask a receiver to hold `ms` milliseconds in its jitter buffer (null: leave the browser's own
 * choice). `jitterBufferTarget` (ms) is the standard; older Chromium has `playoutDelayHint`
 * (seconds). Returns the property used, or null when the browser has neither.
 * @param {RTCRtpReceiver} receiver
 * @param {number | null | undefined} ms
 * @returns {DelayProperty}
 */
function setReceiverDelay(receiver, ms) {
  if (ms === null || ms === undefined) return null;
  const value = Math.max(0, Number(ms));
  if (!Number.isFinite(value)) throw new AvatarError('bad-option', `jitterBuffer wants milliseconds, not ${JSON.stringify(ms)}`);
  // Either property may be missing, whatever the DOM types of the day say.
  const r = /** @type {{jitterBufferTarget?: number | null, playoutDelayHint?: number}} */ (receiver);
  try {
    if ('jitterBufferTarget' in r) {
      r.jitterBufferTarget = value;
      return 'jitterBufferTarget';
    }
    if ('playoutDelayHint' in r) {
      r.playoutDelayHint = value / 1000;
      return 'playoutDelayHint';
    }
  } catch {
    // a browser that has the property but refuses the value keeps its own choice
  }
  return null;
}

/**
 * Resolves once ICE gathering is complete, or after `ms` regardless (true = complete).
 *
 * Why wait: the server (aiortc) does not take trickled candidates in its answer path, so the offer
 * must already carry them. Host candidates arrive within milliseconds, but a STUN/TURN server that
 * does not answer can stall gathering for many seconds; after the timeout the offer goes out with
 * what is there, and later candidates follow over the WebSocket.
 * @param {RTCPeerConnection} pc
 * @param {number} ms
 * @returns {Promise<boolean>}
 */
function waitForIceGathering(pc, ms) {
  if (pc.iceGatheringState === 'complete') return Promise.resolve(true);
  return new Promise((resolve) => {
    const check = () => {
      if (pc.iceGatheringState === 'complete') done(true);
    };
    /** @param {boolean} complete */
    const done = (complete) => {
      clearTimeout(timer);
      pc.removeEventListener('icegatheringstatechange', check);
      resolve(complete);
    };
    const timer = setTimeout(() => done(false), ms);
    pc.addEventListener('icegatheringstatechange', check);
  });
}

/**
 * The sender of `kind` in someone else's call that is (or may be) sending.
 * @param {RTCPeerConnection} pc
 * @param {'audio' | 'video'} kind
 * @returns {RTCRtpSender | null}
 */
function findSender(pc, kind) {
  const transceivers = pc.getTransceivers().filter(
    (t) => t.direction !== 'stopped' && t.currentDirection !== 'stopped' && t.receiver.track?.kind === kind);
  const sending = transceivers.find((t) => t.direction === 'sendrecv' || t.direction === 'sendonly');
  if (sending) return sending.sender;
  return pc.getSenders().find((s) => s.track?.kind === kind) ?? null;
}

/** @param {unknown} value @returns {value is MediaStreamTrack} */
function isAudioTrack(value) {
  return typeof MediaStreamTrack !== 'undefined' && value instanceof MediaStreamTrack && value.kind === 'audio';
}

/**
 * Frames decoded so far on `pc`'s inbound video (0 before the first).
 * @param {RTCPeerConnection} pc
 * @returns {Promise<number>}
 */
async function framesDecoded(pc) {
  let frames = 0;
  try {
    (await pc.getStats()).forEach((s) => {
      if (s.type === 'inbound-rtp' && s.kind === 'video') frames = Number(s.framesDecoded ?? 0);
    });
  } catch { /* closed meanwhile */ }
  return frames;
}

/**
 * Resolves true once `pc` has decoded a video frame, false after `timeoutMs`.
 * @param {RTCPeerConnection} pc
 * @param {number} timeoutMs
 */
async function firstFrame(pc, timeoutMs) {
  const until = performance.now() + timeoutMs;
  while (performance.now() < until) {
    if ((await framesDecoded(pc)) > 0) return true;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return false;
}

/** @param {unknown} value @returns {value is MediaStream} */
function isMediaStream(value) {
  return typeof MediaStream !== 'undefined' && value instanceof MediaStream;
}

/**
 * A live avatar session: one RTCPeerConnection to the server. Create with `AvatarClient.connect()`.
 *
 * Events (`on(name, fn)`): 'ready', 'speech_start', 'speech_end', 'stats', 'blendshapes', 'profile'
 * (server messages, passed as parsed objects; 'profile' only from a server started with --profile),
 * 'message' (every server message), 'error' (an AvatarError),
 * 'connectionstatechange' (the RTCPeerConnectionState string), 'close' ({reason}).
 * @extends {Emitter<AvatarClientEvents>}
 */
export class AvatarClient extends Emitter {
  /** @type {RTCPeerConnection} */ pc = SET_BY_CONNECT;
  /** @type {string | null} */ session = null;
  /** The server's 'ready' message: {session, avatar, fps, size, blendshapes[, profile, marker]}. @type {ReadyMessage | null} */ info = null;
  /** @type {MediaStream} */ stream = SET_BY_CONNECT;
  /** @type {MediaStreamTrack} */ videoTrack = SET_BY_CONNECT;
  /** @type {MediaStreamTrack} */ audioTrack = SET_BY_CONNECT;
  /** Which receiver property took each jitter-buffer target. @type {{audio: DelayProperty, video: DelayProperty}} */
  jitterBuffer = {audio: null, video: null};
  /** The server base URL (a directory URL string). @type {string} */ url;

  /** @type {URL} */ #base;
  /** @type {MediaStreamTrack | null} */ #micTrack;
  /** @type {boolean} */ #ownsMic;
  /** @type {RTCDataChannel | null} */ #dc = null;
  /** @type {WebSocket | null} */ #ws = null;
  /** @type {string | null} */ #token = null; // bearer token for the offer (servers that require one)
  /** @type {string | null} */ #key = null; // the session's key from the answer: opens its WebSockets
  /** @type {string[]} */ #wsQueue = [];
  #trickle = false; // true once the offer has been sent: later candidates go over the WebSocket
  #useSocket = false;
  #sentEndOfCandidates = false;
  #connected = false;
  #closed = false;
  #speaking = false;
  #blendshapes = false;
  /** @type {AbortController | null} */ #setupAbort = null; // of a connect() in progress
  /** @type {((ready: ReadyMessage) => void) | null} */ #readyResolve = null;
  #lastError = {message: '', at: 0};
  /** What connect() was given, for the sessions this client moves to. @type {ConnectOptions} */
  #options = {};
  #roam = false;
  /** A successor's owner: the client the page holds, whose events these are. @type {AvatarClient | null} */
  #owner = null;
  /** The successor whose connection this client now shows. @type {AvatarClient | null} */
  #current = null;
  #moving = false;
  /** @type {ReturnType<typeof setInterval> | null} */ #stallTimer = null;

  /**
   * @private Use AvatarClient.connect().
   * @param {symbol} token
   * @param {{base: URL, micTrack: MediaStreamTrack | null, ownsMic: boolean, token?: string}} parts
   */
  constructor(token, {base, micTrack, ownsMic, token: authToken}) {
    super();
    if (token !== FACTORY) throw new TypeError('Use AvatarClient.connect() to create an AvatarClient');
    this.#token = authToken ? String(authToken) : null;
    this.#base = base;
    this.url = base.href;
    this.#micTrack = micTrack;
    this.#ownsMic = ownsMic;
  }

  /** True between 'speech_start' and 'speech_end'. */
  get speaking() {
    return this.#speaking;
  }

  /** True once close() ran or the connection ended. */
  get closed() {
    return this.#closed;
  }

  /** The data channel's state ('connecting' | 'open' | 'closing' | 'closed'). @returns {RTCDataChannelState} */
  get channelState() {
    return this.#dc?.readyState ?? 'closed';
  }

  /**
   * `{avatars: string[], default: string | null}` from the server's GET api/avatars.
   * @param {{url?: string | URL, signal?: AbortSignal}} [options]
   * @returns {Promise<AvatarList>}
   */
  static async listAvatars({url, signal} = {}) {
    const body = await fetchJson(new URL('api/avatars', resolveBase(url)), {signal}, 'Listing avatars');
    return {
      avatars: Array.isArray(body.avatars) ? body.avatars.map(String) : [],
      default: typeof body.default === 'string' ? body.default : null,
    };
  }

  /**
   * Open a session: microphone (if asked), offer, answer, connection, and the server's 'ready'.
   * Resolves with a connected client (its `info` holds the 'ready' message), or rejects with an
   * AvatarError (or the signal's reason when aborted). Nothing is left open when it rejects.
   * @param {ConnectOptions} [options]
   * @returns {Promise<AvatarClient>}
   */
  static async connect(options = {}) {
    const {
      url,
      audio = 'mic',
      avatar,
      codec,
      iceServers,
      token,
      blendshapes = false,
      jitterBuffer = DEFAULT_JITTER_BUFFER,
      signal,
      timeout = 15000,
      iceGatheringTimeout = 2000,
      websocket = true,
      roam = true,
      stallMs = 1500,
      on,
    } = options;
    signal?.throwIfAborted();
    const base = resolveBase(url);

    let videoCodec;
    const wanted = String(codec ?? '').toLowerCase(); // from JS anything may come: '' is 'auto' too
    if (wanted !== '' && wanted !== 'auto') {
      videoCodec = VIDEO_CODECS.find((c) => c.toLowerCase() === wanted);
      if (!videoCodec) {
        throw new AvatarError('bad-option', `Unknown codec ${JSON.stringify(codec)}: use ${VIDEO_CODECS.join(' or ')}`);
      }
    }

    let micTrack = null;
    let ownsMic = false;
    if (audio === 'mic') {
      micTrack = await openMicrophone();
      ownsMic = true;
    } else if (isMediaStream(audio)) {
      micTrack = audio.getAudioTracks()[0] ?? null;
      if (!micTrack) throw new AvatarError('bad-option', 'The MediaStream given as audio has no audio track');
    } else if (isAudioTrack(audio)) {
      micTrack = audio;
    } else if (audio !== 'none') {
      throw new AvatarError('bad-option', `audio must be 'mic', 'none' or a MediaStream, not ${JSON.stringify(audio)}`);
    }

    const client = new AvatarClient(FACTORY, {base, micTrack, ownsMic, token});
    client.#options = {...options, on: undefined, signal: undefined};
    client.#roam = Boolean(roam);
    // Each listener gets its own event's message (Object.entries loses which name goes with which).
    if (on) {
      for (const [name, fn] of Object.entries(on)) {
        client.on(/** @type {keyof AvatarClientEvents} */ (name), /** @type {(event: unknown) => void} */ (fn));
      }
    }
    try {
      // The permission prompt may take the user any time; the timeout starts after it.
      signal?.throwIfAborted();
      const servers = iceServers ?? (await serverIceServers(base, token, signal));
      await client.#start({avatar, videoCodec, iceServers: servers, blendshapes, jitterBuffer, signal, timeout, iceGatheringTimeout, websocket});
      client.#options.iceServers = servers;
    } catch (err) {
      client.#teardown();
      throw err;
    }
    if (client.#roam) client.#watchVideo(Number(stallMs));
    return client;
  }

  /**
   * @param {{avatar?: string, videoCodec?: VideoCodec, iceServers: RTCIceServer[], blendshapes: boolean,
   *   jitterBuffer: ConnectOptions['jitterBuffer'], signal?: AbortSignal, timeout: number,
   *   iceGatheringTimeout: number, websocket: boolean}} options
   */
  async #start({avatar, videoCodec, iceServers, blendshapes, jitterBuffer, signal, timeout, iceGatheringTimeout, websocket}) {
    // Everything that can end the setup early (user abort, timeout, connection failure, a server
    // error message, the channel closing) aborts this controller; every wait races against it.
    const setup = (this.#setupAbort = new AbortController());
    const onUserAbort = () => setup.abort(signal?.reason);
    signal?.addEventListener('abort', onUserAbort, {once: true});
    /** @type {Promise<never>} */
    const aborted = new Promise((_, reject) => {
      setup.signal.addEventListener('abort', () => reject(setup.signal.reason), {once: true});
    });
    aborted.catch(() => {}); // only observed through race()
    /** @type {<T>(promise: Promise<T>) => Promise<T>} */
    const race = (promise) => Promise.race([promise, aborted]);
    const timer = setTimeout(() => setup.abort(this.#timeoutError(timeout)), timeout);

    try {
      const pc = (this.pc = new RTCPeerConnection({iceServers}));
      pc.addEventListener('connectionstatechange', () => this.#onConnectionState());
      // Older Firefox/Safari report failure only through the ICE state.
      pc.addEventListener('iceconnectionstatechange', () => {
        if (pc.iceConnectionState === 'failed') this.#onConnectionFailed();
      });
      pc.addEventListener('icecandidate', (event) => this.#onLocalCandidate(event.candidate));

      // Must exist before createOffer so the offer carries an SCTP section.
      const dc = (this.#dc = pc.createDataChannel('avatar', {ordered: true}));
      this.#blendshapes = Boolean(blendshapes);
      dc.addEventListener('open', () => {
        if (this.#blendshapes) this.#send({type: 'subscribe', blendshapes: true});
      });
      dc.addEventListener('message', (event) => this.#onMessage(event.data, 'datachannel'));
      dc.addEventListener('close', () => this.#onChannelClosed());

      const audioTransceiver = this.#micTrack
        ? pc.addTransceiver(this.#micTrack, {direction: 'sendrecv'})
        : pc.addTransceiver('audio', {direction: 'recvonly'});
      const videoTransceiver = pc.addTransceiver('video', {direction: 'recvonly'});
      if (videoCodec) preferVideoCodec(videoTransceiver, videoCodec);

      // With unified plan the receivers' tracks exist from here on and are the very tracks that
      // 'track' events would deliver, so the stream can be built before negotiation.
      this.videoTrack = videoTransceiver.receiver.track;
      this.audioTrack = audioTransceiver.receiver.track;
      this.stream = new MediaStream([this.videoTrack, this.audioTrack]);
      this.jitterBuffer = {
        audio: setReceiverDelay(audioTransceiver.receiver, jitterBuffer?.audio),
        video: setReceiverDelay(videoTransceiver.receiver, jitterBuffer?.video),
      };

      await race(pc.setLocalDescription(await race(pc.createOffer())));
      await race(waitForIceGathering(pc, iceGatheringTimeout));

      // Read the SDP and switch to trickling in one synchronous step: a candidate gathered after
      // this line is not in the offer and must go over the WebSocket instead. (When gathering is
      // already complete the offer has every candidate and there is nothing to trickle.)
      const sdp = /** @type {RTCSessionDescription} */ (pc.localDescription).sdp; // set just above
      this.#trickle = websocket && pc.iceGatheringState !== 'complete';

      /** @type {{sdp: string, type: 'offer', audio: 'mic' | 'none', avatar?: string}} */
      const body = {sdp, type: 'offer', audio: this.#micTrack ? 'mic' : 'none'};
      if (avatar) body.avatar = String(avatar);
      const answer = await race(fetchJson(new URL('offer', this.#base), {
        method: 'POST',
        headers: authHeaders(this.#token, {'Content-Type': 'application/json'}),
        body: JSON.stringify(body),
        signal: setup.signal,
      }, 'Sending the offer'));
      if (typeof answer.sdp !== 'string' || (answer.type && answer.type !== 'answer')) {
        throw new AvatarError('http', 'The server answered the offer without an SDP answer');
      }
      this.session = typeof answer.session === 'string' ? answer.session : null;
      this.#key = typeof answer.key === 'string' ? answer.key : null;
      this.#useSocket = websocket && Boolean(this.session);
      if (!this.#useSocket) this.#trickle = false;

      const ready = new Promise((resolve) => {
        this.#readyResolve = resolve;
      });
      await race(pc.setRemoteDescription({type: 'answer', sdp: answer.sdp}));
      if (this.#useSocket) this.#openSocket();
      await race(ready);
      this.#connected = true;
    } finally {
      clearTimeout(timer);
      signal?.removeEventListener('abort', onUserAbort);
      this.#setupAbort = null;
    }
  }

  /** @param {number} ms */
  #timeoutError(ms) {
    const s = ms >= 1000 ? `${Number((ms / 1000).toFixed(1))} s` : `${ms} ms`;
    const state = this.pc?.connectionState;
    let what;
    if (!this.session) what = 'for the server to answer the offer';
    else if (state !== 'connected') what = 'for the WebRTC connection to the server (check firewalls, or configure a TURN server via iceServers)';
    else what = "for the avatar's 'ready' message";
    return new AvatarError('timeout', `Timed out after ${s} waiting ${what}.`);
  }

  #onConnectionState() {
    if (this.#closed) return;
    const state = this.pc.connectionState;
    this.#emit('connectionstatechange', state);
    if (state === 'failed') this.#onConnectionFailed();
  }

  #onConnectionFailed() {
    if (this.#closed) return;
    if (!this.#setupAbort && this.#lead().#roamAway('failed')) return;
    const err = new AvatarError('connection-failed',
      'The connection to the avatar server failed (no network path: check firewalls, or configure a TURN server via iceServers).');
    if (this.#setupAbort) {
      this.#setupAbort.abort(err);
    } else {
      this.#emitError(err);
      this.#shutdown('failed');
    }
  }

  #onChannelClosed() {
    if (this.#closed || this.#dc?.readyState === 'open') return; // a connection it moved from
    if (this.#setupAbort) {
      this.#setupAbort.abort(new AvatarError('closed', 'The server closed the session while it was being set up.'));
    } else if (!this.#lead().#roamAway('failed')) {
      // The data channel is the session's control line; without it the session is over.
      this.#shutdown('server');
    }
  }

  /** @param {RTCIceCandidate | null} candidate */
  #onLocalCandidate(candidate) {
    if (!this.#trickle || this.#closed) return; // still part of the offer's SDP
    // End of candidates is null (some browsers: an empty candidate string).
    const init = candidate && candidate.candidate ? candidate.toJSON() : null;
    if (init === null) {
      if (this.#sentEndOfCandidates) return;
      this.#sentEndOfCandidates = true;
    }
    const message = JSON.stringify({type: 'candidate', candidate: init});
    const ws = this.#ws;
    if (ws && ws.readyState === WebSocket.OPEN) ws.send(message);
    else if (!ws || ws.readyState === WebSocket.CONNECTING) this.#wsQueue.push(message); // sent once it opens
  }

  /** The event WebSocket is optional: if it cannot open, the data channel still does everything. */
  #openSocket() {
    let ws;
    try {
      // the session id is set: the socket opens only after an answer that named it
      ws = new WebSocket(socketUrl(this.#base, 'ws', {session: String(this.session), key: this.#key ?? ''}));
    } catch (err) {
      console.warn('[AvatarClient] event WebSocket unavailable:', err);
      this.#wsQueue = [];
      return;
    }
    this.#ws = ws;
    ws.addEventListener('open', () => {
      for (const message of this.#wsQueue) ws.send(message);
      this.#wsQueue = [];
    });
    ws.addEventListener('message', (event) => {
      if (typeof event.data === 'string') this.#onMessage(event.data, 'websocket');
    });
    ws.addEventListener('close', () => {
      if (this.#ws === ws) this.#ws = null;
      this.#wsQueue = [];
    });
  }

  /**
   * @param {string} text
   * @param {'datachannel' | 'websocket'} via
   */
  #onMessage(text, via) {
    if (this.#closed) return;
    /** @type {any} */
    let msg;
    try {
      msg = JSON.parse(text);
    } catch {
      console.warn(`[AvatarClient] ignoring a non-JSON ${via} message`);
      return;
    }
    if (!msg || typeof msg.type !== 'string') return;

    // The WebSocket mirrors the data channel's events. While the channel is open it is the one
    // source, so nothing is delivered twice; errors are let through and deduplicated below.
    if (via === 'websocket' && msg.type !== 'error' && this.#dc?.readyState === 'open') return;

    if (msg.type === 'error') {
      const message = typeof msg.message === 'string' && msg.message ? msg.message : 'Unknown server error';
      const now = performance.now();
      if (message === this.#lastError.message && now - this.#lastError.at < DUPLICATE_ERROR_MS) return;
      this.#lastError = {message, at: now};
      this.#emit('message', msg);
      const err = new AvatarError('server', message);
      if (this.#setupAbort) this.#setupAbort.abort(err); // a setup error: connect() rejects with it
      else this.#emitError(err);
      return;
    }
    if (msg.type === 'ready') {
      if (this.info) return; // once per session, whichever channel brought it first
      this.info = msg;
      if (typeof msg.session === 'string' && !this.session) this.session = msg.session;
      this.#readyResolve?.(msg);
    } else if (msg.type === 'speech_start') {
      this.#speaking = true;
    } else if (msg.type === 'speech_end') {
      this.#speaking = false;
    }
    this.#emit('message', msg);
    this.#emit(msg.type, msg);
    if (msg.type === 'shutdown' || msg.type === 'move') this.#lead().#roamAway('told');
  }

  /** @param {AvatarError} err */
  #emitError(err) {
    if (!this.#emit('error', err)) console.warn('[AvatarClient]', err.message);
  }

  /**
   * @param {{type: string, [key: string]: unknown}} message
   * @returns {boolean}
   */
  #send(message) {
    if (this.#closed || this.#dc?.readyState !== 'open') return false;
    this.#dc.send(JSON.stringify(message));
    return true;
  }

  /**
   * Interrupt: the server drops the speech it has queued and the avatar goes idle.
   * @returns {boolean} false if the session is not open (nothing was sent)
   */
  clear() {
    return this.#send({type: 'clear'});
  }

  /**
   * Speak text (sessions connected with audio: 'none'): the server's text-to-speech says it,
   * sentence by sentence, after what it is already saying; clear() stops it. A mistake (empty
   * text, an unknown voice, a microphone session) comes back as an 'error' event.
   * @param {string} text
   * @param {{voice?: string}} [options] 'slt' (the default), 'kal' or 'ked'
   * @returns {boolean} false if the session is not open (nothing was sent)
   */
  say(text, options = {}) {
    return this.#send({type: 'say', text, ...(options.voice ? {voice: options.voice} : {})});
  }

  /**
   * Ask for (or stop) one 'blendshapes' event per video frame.
   * @param {boolean} [enabled]
   * @returns {boolean} false if the session is not open (nothing was sent)
   */
  subscribeBlendshapes(enabled = true) {
    this.#blendshapes = Boolean(enabled);
    return this.#send({type: 'subscribe', blendshapes: this.#blendshapes});
  }

  /**
   * Show the avatar in a <video> element (video and the synchronised speech audio).
   * @returns {Promise<boolean>} false if the browser blocked playback (an 'error' event with code
   *   'autoplay' is emitted; call video.play() from a user gesture then)
   * @param {HTMLVideoElement} video
   */
  async attach(video) {
    if (!video || typeof video.play !== 'function') throw new TypeError('attach() needs a <video> element');
    video.playsInline = true;
    video.setAttribute('playsinline', ''); // older Safari reads only the attribute
    video.autoplay = true;
    if (video.srcObject !== this.stream) video.srcObject = this.stream;
    try {
      await video.play();
      return true;
    } catch (err) {
      if (errorName(err) === 'AbortError') return false; // a newer load or srcObject replaced this one
      this.#emitError(new AvatarError('autoplay',
        'The browser blocked playback with sound: click the video (or any control) to start it.', {cause: err}));
      return false;
    }
  }

  /**
   * Swap the avatar into an existing call: the call's outgoing video (and, with `audio`, its
   * outgoing audio) become the avatar's. Returns the tracks that were replaced, plus `restore()`.
   * @param {RTCPeerConnection} pc
   * @param {{audio?: boolean}} [options]
   * @returns {Promise<ReplacedTracks>}
   */
  async replaceTracksIn(pc, {audio = true} = {}) {
    if (this.#closed) throw new AvatarError('closed', 'This AvatarClient is closed');
    if (!pc || typeof pc.getTransceivers !== 'function') throw new TypeError('replaceTracksIn() needs an RTCPeerConnection');
    const videoSender = findSender(pc, 'video');
    if (!videoSender) {
      throw new AvatarError('no-video-sender',
        'That call has no video sender to replace: add a camera track (or a sendrecv video transceiver) to it first.');
    }
    const audioSender = audio ? findSender(pc, 'audio') : null;
    const original = {video: videoSender.track, audio: audioSender ? audioSender.track : null};
    await videoSender.replaceTrack(this.videoTrack);
    if (audioSender) {
      try {
        await audioSender.replaceTrack(this.audioTrack);
      } catch (err) {
        await videoSender.replaceTrack(original.video).catch(() => {});
        throw err;
      }
    }
    return {
      ...original,
      async restore() {
        await videoSender.replaceTrack(original.video);
        if (audioSender) await audioSender.replaceTrack(original.audio);
      },
    };
  }

  /**
   * A PcmSender for this session (server-fed speech, e.g. from TTS in the page).
   * @param {{sampleRate?: number, channels?: number, signal?: AbortSignal, timeout?: number}} [options]
   * @returns {Promise<PcmSender>}
   */
  openPcm(options = {}) {
    if (!this.session) return Promise.reject(new AvatarError('closed', 'No session to send audio to'));
    return PcmSender.open({...options, url: this.url, session: this.session, key: this.#key ?? ''});
  }

  /** End the session: closes the connection and the WebSocket, stops the mic if this client opened it. */
  close() {
    if (this.#setupAbort) {
      this.#setupAbort.abort(new AvatarError('closed', 'The client was closed'));
      return;
    }
    this.#shutdown('local');
  }

  /** @param {'local' | 'server' | 'failed'} reason */
  #shutdown(reason) {
    if (this.#owner) {
      this.#owner.#shutdown(reason);
      return;
    }
    if (this.#closed) return;
    this.#teardown();
    this.#emit('close', {reason});
  }

  /** @param {string} name @param {unknown} event @returns {boolean} */
  #emit(name, event) {
    return /** @type {any} */ (this.#owner ?? this)[EMIT](name, event);
  }

  /** The client the page holds (a successor answers for its owner). @returns {AvatarClient} */
  #lead() {
    return this.#owner ?? this;
  }

  /**
   * Video stalled: no new decoded frame for `stallMs` once the first one came (the node that
   * held the session is gone). Checked on the inbound video's framesDecoded.
   * @param {number} stallMs
   */
  #watchVideo(stallMs) {
    let frames = -1;
    let since = performance.now();
    this.#stallTimer = setInterval(async () => {
      if (this.#closed || this.#moving) return;
      const decoded = await framesDecoded(this.pc);
      const now = performance.now();
      if (decoded !== frames) {
        frames = decoded;
        since = now;
      } else if (frames > 0 && now - since > stallMs) {
        since = now;
        this.#roamAway('stalled');
      }
    }, 250);
  }

  /**
   * Move to a new session through the same URL (a pool's gateway places it on another node),
   * make before break: the new session's first decoded frame, then its tracks replace the old
   * ones in `stream` (an attached <video> keeps playing) and the old connection closes. Emits
   * 'moved'. Returns false when this client does not roam.
   * @param {'told' | 'stalled' | 'failed'} reason
   * @returns {boolean}
   */
  #roamAway(reason) {
    if (!this.#roam || this.#closed) return false;
    if (!this.#moving) {
      this.#moving = true;
      this.#moveTo(reason).finally(() => (this.#moving = false));
    }
    return true;
  }

  /** @param {'told' | 'stalled' | 'failed'} reason */
  async #moveTo(reason) {
    const from = this.session;
    const deadline = performance.now() + 60000;
    /** @type {AvatarClient | null} */
    let next = null;
    while (!this.#closed && performance.now() < deadline) {
      try {
        next = await AvatarClient.connect({...this.#options, audio: this.#micTrack ?? 'none', roam: false});
        if (await firstFrame(next.pc, 15000)) break;
        next.close();
      } catch (err) {
        console.warn('[AvatarClient] moving:', errorText(err));
      }
      next = null;
      await new Promise((resolve) => setTimeout(resolve, 500));
    }
    if (!next || this.#closed) {
      next?.close();
      if (!this.#closed) this.#shutdown('failed');
      return;
    }
    this.#adopt(next);
    this.#emit('moved', {from, to: this.session, reason});
  }

  /** Show `next`'s connection from now on; the old one closes. @param {AvatarClient} next */
  #adopt(next) {
    const old = {pc: this.pc, dc: this.#dc, ws: this.#ws, current: this.#current};
    next.#owner = this;
    this.#current = next;
    this.pc = next.pc;
    this.#dc = next.#dc;
    this.#ws = next.#ws;
    this.#key = next.#key;
    this.session = next.session;
    this.info = next.info;
    this.jitterBuffer = next.jitterBuffer;
    for (const track of [this.videoTrack, this.audioTrack]) this.stream.removeTrack(track);
    this.videoTrack = next.videoTrack;
    this.audioTrack = next.audioTrack;
    this.stream.addTrack(this.videoTrack);
    this.stream.addTrack(this.audioTrack);
    if (old.current) old.current.#closed = true; // its handlers stop; its objects close below
    try {
      old.dc?.close();
    } catch { /* already closed */ }
    try {
      old.ws?.close(1000);
    } catch { /* already closed */ }
    try {
      old.pc?.close();
    } catch { /* already closed */ }
  }

  #teardown() {
    if (this.#stallTimer) clearInterval(this.#stallTimer);
    if (this.#current) this.#current.#closed = true;
    this.#closed = true;
    this.#speaking = false;
    this.#trickle = false;
    this.#wsQueue = [];
    try {
      this.#dc?.close();
    } catch { /* already closed */ }
    try {
      this.#ws?.close(1000);
    } catch { /* already closed */ }
    this.#ws = null;
    try {
      this.pc?.close();
    } catch { /* already closed */ }
    if (this.#ownsMic) this.#micTrack?.stop();
  }
}

/**
 * Float samples in [-1, 1] (or already s16) -> little-endian s16 ready to send.
 * @param {Int16Array | Float32Array | Float64Array | ArrayBuffer} samples
 * @returns {Int16Array<ArrayBuffer> | Uint8Array<ArrayBuffer>}
 */
function toS16le(samples) {
  let out;
  if (samples instanceof Int16Array) {
    out = new Int16Array(samples); // a copy: WebSocket.send() refuses views of a SharedArrayBuffer
  } else if (samples instanceof Float32Array || samples instanceof Float64Array) {
    out = new Int16Array(samples.length);
    for (let i = 0; i < samples.length; i++) {
      const v = samples[i];
      // NaN -> 0; clamp so that a full-scale float does not wrap around.
      out[i] = v > 1 ? 32767 : v < -1 ? -32767 : v === v ? Math.round(v * 32767) : 0;
    }
  } else if (samples instanceof ArrayBuffer) {
    return new Uint8Array(samples); // already s16le bytes
  } else {
    throw new TypeError('send() takes an Int16Array, a Float32Array or an ArrayBuffer of s16le');
  }
  if (!LITTLE_ENDIAN) {
    // Every browser platform in use is little-endian; this keeps the wire format right anyway.
    const bytes = new DataView(new ArrayBuffer(out.length * 2));
    for (let i = 0; i < out.length; i++) bytes.setInt16(i * 2, out[i], true);
    return new Uint8Array(bytes.buffer);
  }
  return out;
}

/**
 * Feeds PCM speech to a session over `ws/audio` (for TTS or an agent instead of the microphone;
 * connect the AvatarClient with audio: 'none'). Create with `PcmSender.open()`.
 * Events: 'error' (AvatarError), 'message' (server text messages), 'close' ({code, reason}).
 * @extends {Emitter<PcmSenderEvents>}
 */
export class PcmSender extends Emitter {
  /** @type {WebSocket} */ #ws;
  /** Samples per second per channel, as announced to the server. @type {number} */ sampleRate;
  /** Interleaved channels per sample frame. @type {number} */ channels;

  /**
   * @private Use PcmSender.open().
   * @param {symbol} token
   * @param {WebSocket} ws
   * @param {number} sampleRate
   * @param {number} channels
   */
  constructor(token, ws, sampleRate, channels) {
    super();
    if (token !== FACTORY) throw new TypeError('Use PcmSender.open() to create a PcmSender');
    this.#ws = ws;
    this.sampleRate = sampleRate;
    this.channels = channels;
    ws.addEventListener('message', (event) => {
      if (typeof event.data !== 'string') return;
      /** @type {any} */
      let msg;
      try {
        msg = JSON.parse(event.data);
      } catch {
        return;
      }
      this[EMIT]('message', msg);
      if (msg?.type === 'error') {
        const err = new AvatarError('server', String(msg.message || 'Unknown server error'));
        if (!this[EMIT]('error', err)) console.warn('[PcmSender]', err.message);
      }
    });
    ws.addEventListener('close', (event) => this[EMIT]('close', {code: event.code, reason: event.reason}));
  }

  /**
   * Open `ws/audio?session=...&key=...` and announce the format.
   * @param {Partial<PcmSenderOptions>} [options] `session` is required (an AvatarError without it)
   * @returns {Promise<PcmSender>}
   */
  static async open({url, session, key = '', sampleRate = 16000, channels = 1, signal, timeout = 10000} = {}) {
    signal?.throwIfAborted();
    if (!session) throw new AvatarError('bad-option', 'PcmSender.open() needs the session id (client.session)');
    if (!Number.isInteger(sampleRate) || sampleRate <= 0) throw new AvatarError('bad-option', `Bad sampleRate ${sampleRate}`);
    if (!Number.isInteger(channels) || channels < 1) throw new AvatarError('bad-option', `Bad channels ${channels}`);
    const target = socketUrl(resolveBase(url), 'ws/audio', {session, key});
    const ws = new WebSocket(target);
    ws.binaryType = 'arraybuffer';
    await /** @type {Promise<void>} */ (new Promise((resolve, reject) => {
      const cleanup = () => {
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        ws.removeEventListener('open', onOpen);
        ws.removeEventListener('close', onClose);
      };
      /** @param {unknown} err */
      const fail = (err) => {
        cleanup();
        try {
          ws.close();
        } catch { /* not open */ }
        reject(err);
      };
      const onOpen = () => {
        cleanup();
        resolve();
      };
      // Browsers give no detail on 'error'; the following 'close' carries the code, if any.
      /** @param {CloseEvent} event */
      const onClose = (event) => fail(new AvatarError('network',
        `Could not open the PCM WebSocket ${target.origin}${target.pathname} (code ${event.code}${event.reason ? ': ' + event.reason : ''}); is the session id valid?`));
      const onAbort = () => fail(signal?.reason);
      const timer = setTimeout(() => fail(new AvatarError('timeout', 'Timed out opening the PCM WebSocket')), timeout);
      ws.addEventListener('open', onOpen);
      ws.addEventListener('close', onClose);
      signal?.addEventListener('abort', onAbort, {once: true});
    }));
    ws.send(JSON.stringify({type: 'format', sample_rate: sampleRate, channels}));
    return new PcmSender(FACTORY, ws, sampleRate, channels);
  }

  /** True while the WebSocket is open. */
  get isOpen() {
    return this.#ws.readyState === WebSocket.OPEN;
  }

  /** Bytes queued in the browser but not yet sent (for pacing a fast producer). */
  get bufferedAmount() {
    return this.#ws.bufferedAmount;
  }

  /**
   * Send samples (interleaved when channels > 1). Floats in [-1, 1] are converted to s16; an
   * ArrayBuffer is sent as is (s16le bytes).
   * @param {Int16Array | Float32Array | Float64Array | ArrayBuffer} samples
   */
  send(samples) {
    if (!this.isOpen) throw new AvatarError('closed', 'The PCM WebSocket is closed');
    const data = toS16le(samples);
    const count = data instanceof Int16Array ? data.length : data.byteLength / 2;
    if (!Number.isInteger(count) || count % this.channels !== 0) {
      throw new RangeError(`send(): ${count} samples is not a whole number of ${this.channels}-channel frames`);
    }
    if (count > 0) this.#ws.send(data);
  }

  /** Interrupt: the server drops the audio queued so far. */
  clear() {
    if (!this.isOpen) throw new AvatarError('closed', 'The PCM WebSocket is closed');
    this.#ws.send(JSON.stringify({type: 'clear'}));
  }

  /** Close the WebSocket (the session itself stays up). */
  close() {
    if (this.#ws.readyState === WebSocket.CONNECTING || this.#ws.readyState === WebSocket.OPEN) this.#ws.close(1000);
  }
}

// -- Type-level only (no run-time effect) ---------------------------------------------------------
// tsc (`make lint`) fails here, naming the members, where a class above and avatar-client.d.ts
// disagree: a member the declaration promises and the class lacks or types differently, or a
// public member the declaration does not mention.
/**
 * @import * as Declared from './avatar-client.js'
 * @import {Broken, None, Statics, Undeclared} from './emitter.js'
 * @typedef {[
 *   None<Broken<AvatarError, Declared.AvatarError> | Undeclared<AvatarError, Declared.AvatarError>>,
 *   None<Broken<AvatarClient, Declared.AvatarClient> | Undeclared<AvatarClient, Declared.AvatarClient>>,
 *   None<Broken<Statics<typeof AvatarClient>, Statics<typeof Declared.AvatarClient>>
 *     | Undeclared<Statics<typeof AvatarClient>, Statics<typeof Declared.AvatarClient>>>,
 *   None<Broken<PcmSender, Declared.PcmSender> | Undeclared<PcmSender, Declared.PcmSender>>,
 *   None<Broken<Statics<typeof PcmSender>, Statics<typeof Declared.PcmSender>>
 *     | Undeclared<Statics<typeof PcmSender>, Statics<typeof Declared.PcmSender>>>,
 * ]} MatchesItsDeclaration
 */
