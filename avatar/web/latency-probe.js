/**
 * latency-probe.js: measure the avatar's end-to-end latency (microphone -> screen) in the browser,
 * on the browser's own clock.
 *
 * One plain ES module, no build step, no dependencies:
 *
 *   import {AvatarClient} from './avatar-client.js';
 *   import {LatencyProbe} from './latency-probe.js';
 *   const probe = await LatencyProbe.create();
 *   const avatar = await AvatarClient.connect({audio: probe.stream});
 *   avatar.attach(video);
 *   probe.watch(video, avatar.info.marker, avatar.info.size);   // server started with --profile
 *   probe.on('sample', ({ms}) => console.log(`mic -> screen ${ms.toFixed(0)} ms`));
 *
 * How it measures:
 * - The probe is the "microphone": a WebAudio graph sends a short 1 kHz beep at random intervals
 *   (scheduled on the AudioContext's clock) into a MediaStreamAudioDestinationNode, whose stream is
 *   what the AvatarClient sends.
 * - Onset: an AudioWorklet right before that destination watches the samples going into the
 *   outgoing track. At the first loud sample after a quiet stretch it posts a message; the main
 *   thread stamps its arrival with performance.now() and adds the sample's offset within its
 *   128-sample render quantum. (AudioContext.getOutputTimestamp() is not used: it is the
 *   loudspeaker's time, tens of milliseconds after the samples enter the track.)
 * - Screen: in profile mode the server paints a white square on every video frame whose own audio
 *   is loud. requestVideoFrameCallback reads only that square of each presented frame; the first
 *   frame where it turns white after an onset is that beep on screen, and its
 *   `expectedDisplayTime` minus the onset time is one end-to-end sample.
 *
 * Both ends are on the page's performance.now() clock; no server number is involved.
 * - A/V offset (optional, `listen(avatar.audioTrack)`): a second onset detector on the received
 *   audio finds each beep coming back; its time plus the context's output latency, minus the
 *   marked frame's display time, is how far the sound trails (positive) or leads the picture.
 *
 * Exports: LatencyProbe (see latency-probe.d.ts).
 */

import {EMIT, Emitter} from './emitter.js';

// The types of latency-probe.d.ts and avatar-client.d.ts.
/**
 * @import {LatencyProbeEvents, LatencyProbeOptions, LatencyStats} from './latency-probe.js'
 * @import {ProfileMarker} from './avatar-client.js'
 * @typedef {{oscillator: OscillatorNode, envelope: GainNode, detector: AudioWorkletNode,
 *   destination: MediaStreamAudioDestinationNode, mic: MediaStreamAudioSourceNode | null}} BeepGraph
 * @typedef {{interval: [number, number], beep: number, gain: number, windowMs: number}} BeepOptions
 * @typedef {{offset: number, frame: number, time: number, sampleRate: number}} Onset what the worklet posts
 */

const WORKLET_NAME = 'avatar-latency-onset';
const LOOKAHEAD_S = 2; // beeps are scheduled this far ahead of the context's clock
const SCHEDULE_EVERY_MS = 250;
const RAMP_S = 0.001; // 1 ms fade in and out: no click, onset within a millisecond of its time
const QUIET_MS = 30; // an onset needs this much quiet before it (a 1 kHz sine crosses zero every 0.5 ms)
const MARKED_BRIGHTNESS = 200; // mean grey level of the marker square above which a frame is "marked"
const MAX_SAMPLE_PX = 32; // the marker region is read at most at this size
const RECENT_FRAMES = 100; // frames behind stats().markedShare

/**
 * The AudioWorklet processor, loaded from a Blob URL so that this module stays one file.
 * It passes its input through unchanged and posts `{offset, frame, time, sampleRate}` at each onset:
 * the first sample above `threshold` after `quietMs` of samples below it.
 */
const WORKLET_SOURCE = `
class AvatarLatencyOnset extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const o = (options && options.processorOptions) || {};
    this.threshold = o.threshold;
    this.quietNeeded = Math.max(1, Math.round((o.quietMs * sampleRate) / 1000));
    this.quiet = this.quietNeeded;
    this.running = true;
    this.port.onmessage = (event) => {
      if (event.data === 'stop') this.running = false;
    };
  }

  process(inputs, outputs) {
    const input = inputs[0] || [];
    const output = outputs[0] || [];
    const x = input[0];
    for (let c = 0; c < output.length; c++) {
      const src = input[c] || x;
      if (src) output[c].set(src);
    }
    if (!x) {
      this.quiet += 128;
      return this.running;
    }
    for (let i = 0; i < x.length; i++) {
      if (x[i] > this.threshold || x[i] < -this.threshold) {
        if (this.quiet >= this.quietNeeded) {
          this.port.postMessage({offset: i, frame: currentFrame + i, time: currentTime + i / sampleRate, sampleRate});
        }
        this.quiet = 0;
      } else {
        this.quiet++;
      }
    }
    return this.running;
  }
}
registerProcessor('${WORKLET_NAME}', AvatarLatencyOnset);
`;

/** Module-private: the constructor's token (use LatencyProbe.create()). */
const FACTORY = Symbol('factory');

/**
 * Linear-interpolation percentile (numpy's default) of an ascending array.
 * @param {number[]} sorted
 * @param {number} q
 * @returns {number | null}
 */
function percentile(sorted, q) {
  if (sorted.length === 0) return null;
  const pos = (sorted.length - 1) * q;
  const lo = Math.floor(pos);
  const hi = Math.min(lo + 1, sorted.length - 1);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo);
}

/**
 * @param {number | [number, number]} intervalMs
 * @returns {[number, number]}
 */
function checkRange(intervalMs) {
  const [lo, hi] = Array.isArray(intervalMs) ? intervalMs : [intervalMs, intervalMs];
  if (!(Number.isFinite(lo) && Number.isFinite(hi) && lo > 0 && hi >= lo)) {
    throw new RangeError(`intervalMs must be [min, max] milliseconds with 0 < min <= max, not ${JSON.stringify(intervalMs)}`);
  }
  return [lo, hi];
}

/**
 * @param {MediaStream | MediaStreamTrack | null | undefined} value
 * @returns {MediaStreamTrack | null}
 */
function audioTrackOf(value) {
  if (value === null || value === undefined) return null;
  if (typeof MediaStream !== 'undefined' && value instanceof MediaStream) {
    const track = value.getAudioTracks()[0];
    if (!track) throw new TypeError('includeMic: the MediaStream has no audio track');
    return track;
  }
  if (typeof MediaStreamTrack !== 'undefined' && value instanceof MediaStreamTrack && value.kind === 'audio') return value;
  throw new TypeError('includeMic must be a MediaStream (or an audio MediaStreamTrack), or null');
}

/**
 * Beeps into the avatar's microphone input and times them on screen. Create with
 * `LatencyProbe.create()`.
 *
 * Events (`on(name, fn)`): 'sample' ({ms, onsetTime, frameTime, count, skippedFrames}),
 * 'onset' ({time}) for each beep while watching, 'missed' ({onsetTime}) for a beep never seen on
 * screen within the window.
 * @extends {Emitter<LatencyProbeEvents>}
 */
export class LatencyProbe extends Emitter {
  /** The MediaStream to send: `AvatarClient.connect({audio: probe.stream})`. @type {MediaStream} */ stream;
  /** @type {AudioContext} */ context;
  /** End-to-end latencies measured so far, milliseconds (the array itself grows). @type {number[]} */ samples = [];
  /** Beeps that were not seen on screen within `windowMs` (counted only while watching). */ missed = 0;
  /** Beep onsets detected in the outgoing audio (while watching or not). */ beeps = 0;

  /** @type {BeepOptions} */ #options;
  /** @type {BeepGraph} */ #nodes;
  #scheduler = 0;
  #nextBeep = 0;
  /** @type {number[]} */ #pending = []; // onset times (performance.now() ms) waiting for their marked frame
  /** @type {{video: HTMLVideoElement, cancel: () => void} | null} */ #watch = null;
  /** @type {{onsetTime: number, frameTime: number}[]} */ #marks = []; // of each sample, for the A/V offset
  /** @type {number[]} */ #echoes = []; // times the beeps came back in the received audio (listen())
  /** @type {{source: MediaStreamAudioSourceNode, detector: AudioWorkletNode, mute: GainNode} | null} */
  #listener = null;
  /** @type {boolean[]} */ #recent = []; // marked or not, for the last RECENT_FRAMES presented frames
  #closed = false;

  /**
   * @private Use LatencyProbe.create().
   * @param {symbol} token
   * @param {AudioContext} context
   * @param {BeepGraph} nodes
   * @param {BeepOptions} options
   */
  constructor(token, context, nodes, options) {
    super();
    if (token !== FACTORY) throw new TypeError('Use LatencyProbe.create() to create a LatencyProbe');
    this.context = context;
    this.#nodes = nodes;
    this.#options = options;
    this.stream = nodes.destination.stream;
    nodes.detector.port.onmessage = (event) => this.#onOnset(performance.now(), event.data);
  }

  /**
   * Build the beep graph and start beeping.
   * @param {LatencyProbeOptions} [options]
   * @returns {Promise<LatencyProbe>}
   */
  static async create({
    intervalMs = [1200, 1800],
    beepMs = 80,
    frequency = 1000,
    gain = 0.5,
    includeMic = null,
    windowMs = 1500,
  } = {}) {
    const interval = checkRange(intervalMs);
    if (!(beepMs > 2 * RAMP_S * 1000 && beepMs < interval[0])) {
      throw new RangeError(`beepMs must be between ${2 * RAMP_S * 1000} ms and the shortest interval (${interval[0]} ms)`);
    }
    if (!(gain > 0 && gain <= 1)) throw new RangeError('gain must be in (0, 1]');
    if (!(frequency > 0)) throw new RangeError('frequency must be positive');
    if (!(windowMs > 0)) throw new RangeError('windowMs must be positive');
    const micTrack = audioTrackOf(includeMic);

    /** @type {typeof AudioContext | undefined} (older Safari has only the prefixed one) */
    const Context = globalThis.AudioContext ?? /** @type {any} */ (globalThis).webkitAudioContext;
    if (!Context) throw new Error('The latency probe needs the Web Audio API (AudioContext).');
    const context = new Context({latencyHint: 'interactive'});
    const moduleUrl = URL.createObjectURL(new Blob([WORKLET_SOURCE], {type: 'text/javascript'}));
    try {
      if (!context.audioWorklet) {
        throw new Error('The latency probe needs AudioWorklet, which browsers offer only on secure pages ' +
          '(https:// or http://localhost).');
      }
      await context.audioWorklet.addModule(moduleUrl);

      const oscillator = new OscillatorNode(context, {type: 'sine', frequency});
      const envelope = new GainNode(context, {gain: 0});
      const detector = new AudioWorkletNode(context, WORKLET_NAME, {
        numberOfInputs: 1,
        numberOfOutputs: 1,
        outputChannelCount: [1],
        processorOptions: {threshold: gain * 0.1, quietMs: QUIET_MS},
      });
      const destination = new MediaStreamAudioDestinationNode(context, {channelCount: 1});
      oscillator.connect(envelope).connect(detector).connect(destination);
      let mic = null;
      if (micTrack) {
        // Mixed in after the detector: speech never counts as a beep onset (it may still light the
        // marker, so measure in quiet moments when the microphone is included).
        mic = new MediaStreamAudioSourceNode(context, {mediaStream: new MediaStream([micTrack])});
        mic.connect(destination);
      }
      oscillator.start();

      const probe = new LatencyProbe(FACTORY, context, {oscillator, envelope, detector, destination, mic},
        {interval, beep: beepMs / 1000, gain, windowMs});
      await probe.resume(500);
      probe.#nextBeep = context.currentTime + 0.3;
      probe.#schedule();
      return probe;
    } catch (err) {
      context.close().catch(() => {});
      throw err;
    } finally {
      URL.revokeObjectURL(moduleUrl);
    }
  }

  /** True while watch() is reading a video element. */
  get watching() {
    return this.#watch !== null;
  }

  /** True once close() ran. */
  get closed() {
    return this.#closed;
  }

  /**
   * Resume the AudioContext (it may start suspended until a user gesture; call this from one).
   * Resolves after at most `timeoutMs` with whether it runs.
   * @param {number} [timeoutMs]
   * @returns {Promise<boolean>}
   */
  async resume(timeoutMs = 1000) {
    if (this.#closed) return false;
    if (this.context.state !== 'running') {
      /** @type {ReturnType<typeof setTimeout> | undefined} */
      let timer;
      await Promise.race([
        this.context.resume().catch(() => {}),
        new Promise((resolve) => (timer = setTimeout(resolve, timeoutMs))),
      ]);
      clearTimeout(timer);
    }
    return this.context.state === 'running';
  }

  /** Keep beeps scheduled LOOKAHEAD_S ahead; a timer is fine, the beeps' times are the context's. */
  #schedule() {
    if (this.#closed) return;
    const {interval: [lo, hi], beep, gain} = this.#options;
    const now = this.context.currentTime;
    // After a stall (a throttled background tab) do not schedule into the past.
    if (this.#nextBeep < now + 0.05) this.#nextBeep = now + 0.1;
    const g = this.#nodes.envelope.gain;
    while (this.#nextBeep < now + LOOKAHEAD_S) {
      const t = this.#nextBeep;
      g.setValueAtTime(0, t);
      g.linearRampToValueAtTime(gain, t + RAMP_S);
      g.setValueAtTime(gain, t + beep - RAMP_S);
      g.linearRampToValueAtTime(0, t + beep);
      this.#nextBeep = t + (lo + Math.random() * (hi - lo)) / 1000;
    }
    this.#expire(performance.now() - 100); // frames are timed up to ~100 ms ahead of now
    this.#scheduler = setTimeout(() => this.#schedule(), SCHEDULE_EVERY_MS);
  }

  /**
   * @param {number} arrival
   * @param {Onset | undefined} data
   */
  #onOnset(arrival, data) {
    if (this.#closed || !data) return;
    this.beeps += 1;
    // Samples of one render quantum leave together; the onset sample is `offset` samples into it.
    const time = arrival + (data.offset * 1000) / (data.sampleRate || this.context.sampleRate);
    // Not while watching nothing, nor in a hidden tab (no frame callbacks there: not a miss).
    if (!this.#watch || globalThis.document?.visibilityState === 'hidden') return;
    this.#pending.push(time);
    this[EMIT]('onset', {time});
  }

  /**
   * Onsets older than the window before `time` will not be matched any more: missed.
   * @param {number} time
   */
  #expire(time) {
    const limit = time - this.#options.windowMs;
    while (this.#pending.length && this.#pending[0] < limit) this.#miss(/** @type {number} */ (this.#pending.shift()));
  }

  /** @param {number} onsetTime */
  #miss(onsetTime) {
    this.missed += 1;
    this[EMIT]('missed', {onsetTime});
  }

  /**
   * Read the marker square of each frame `video` presents; a frame where it turns white after a
   * beep gives one sample. `marker` is the ready message's `{x, y, size}` in the server's video
   * pixels; `videoSize` is the server's frame size (`info.size`, default 512).
   * @param {HTMLVideoElement} video
   * @param {ProfileMarker} marker
   * @param {number} [videoSize]
   */
  watch(video, marker, videoSize = 512) {
    if (this.#closed) throw new Error('This LatencyProbe is closed');
    if (!video || typeof video.play !== 'function') throw new TypeError('watch() needs a <video> element');
    if (!marker || !(marker.size > 0) || !Number.isFinite(marker.x) || !Number.isFinite(marker.y)) {
      throw new TypeError('watch() needs the marker {x, y, size} of the ready message (is the server running with --profile?)');
    }
    if (!(videoSize > 0)) throw new RangeError('videoSize must be positive');
    this.unwatch();

    const canvas = document.createElement('canvas');
    const g = canvas.getContext('2d', {willReadFrequently: true, alpha: false});
    if (!g) throw new Error('watch() needs a 2D canvas context, and this browser gave none');
    let wasMarked = true; // a square that is white from the start is no edge
    /** @type {number | null} */
    let lastPresented = null;
    let handle = 0;
    const useFrames = typeof video.requestVideoFrameCallback === 'function';

    /**
     * @param {number} now
     * @param {VideoFrameCallbackMetadata | null} meta null from requestAnimationFrame
     */
    const onFrame = (now, meta) => {
      if (this.#watch?.video !== video) return;
      handle = useFrames ? video.requestVideoFrameCallback(onFrame) : requestAnimationFrame((t) => onFrame(t, null));
      const width = meta?.width || video.videoWidth;
      const height = meta?.height || video.videoHeight;
      if (!width || !height) return;
      let skippedFrames = 0;
      if (typeof meta?.presentedFrames === 'number') {
        if (lastPresented !== null) skippedFrames = Math.max(0, meta.presentedFrames - lastPresented - 1);
        lastPresented = meta.presentedFrames;
      }
      // The inner part of the square: codecs blur its edges (chroma subsampling, block edges).
      const scale = width / videoSize;
      const inset = marker.size * 0.2;
      const sx = (marker.x + inset) * scale;
      const sy = (marker.y + inset) * scale;
      const sw = Math.max(1, (marker.size - 2 * inset) * scale);
      const sh = sw; // square
      const cw = Math.max(1, Math.min(MAX_SAMPLE_PX, Math.round(sw)));
      const ch = Math.max(1, Math.min(MAX_SAMPLE_PX, Math.round(sh)));
      if (canvas.width !== cw || canvas.height !== ch) {
        canvas.width = cw;
        canvas.height = ch;
      }
      g.drawImage(video, sx, sy, sw, sh, 0, 0, cw, ch);
      const px = g.getImageData(0, 0, cw, ch).data;
      let sum = 0;
      for (let i = 0; i < px.length; i += 4) sum += px[i] + px[i + 1] + px[i + 2];
      const marked = sum / ((px.length / 4) * 3) > MARKED_BRIGHTNESS;
      this.#recent.push(marked);
      if (this.#recent.length > RECENT_FRAMES) this.#recent.shift();
      const frameTime = typeof meta?.expectedDisplayTime === 'number' ? meta.expectedDisplayTime : now;
      if (marked && !wasMarked) this.#onMarked(frameTime, skippedFrames);
      wasMarked = marked;
      this.#expire(frameTime);
    };

    this.#watch = {
      video,
      cancel: () => (useFrames ? video.cancelVideoFrameCallback(handle) : cancelAnimationFrame(handle)),
    };
    handle = useFrames ? video.requestVideoFrameCallback(onFrame) : requestAnimationFrame((t) => onFrame(t, null));
  }

  /**
   * A frame where the marker turned on (the frames after it, still marked, are the same beep).
   * It belongs to the latest onset before it; earlier unmatched onsets were missed.
   */
  /**
   * @param {number} frameTime
   * @param {number} skippedFrames
   */
  #onMarked(frameTime, skippedFrames) {
    let index = -1;
    for (let i = this.#pending.length - 1; i >= 0; i--) {
      if (this.#pending[i] < frameTime) {
        index = i;
        break;
      }
    }
    if (index < 0) return; // a mark with no beep before it (speech from an included mic, say)
    const onsetTime = this.#pending[index];
    for (const older of this.#pending.splice(0, index + 1).slice(0, index)) this.#miss(older);
    const ms = frameTime - onsetTime;
    if (ms > this.#options.windowMs) {
      this.#miss(onsetTime);
      return;
    }
    this.samples.push(ms);
    this.#marks.push({onsetTime, frameTime});
    if (this.#marks.length > 1000) this.#marks.shift();
    this[EMIT]('sample', {ms, onsetTime, frameTime, count: this.samples.length, skippedFrames});
  }

  /**
   * Detect the beeps in the avatar's received audio (`avatar.audioTrack`, which must also play in
   * a media element), for `stats().avOffset`.
   * @param {MediaStreamTrack} track
   * @returns {void}
   */
  listen(track) {
    if (this.#closed) throw new Error('This LatencyProbe is closed');
    this.#unlisten();
    const {gain} = this.#options;
    const source = new MediaStreamAudioSourceNode(this.context, {mediaStream: new MediaStream([track])});
    const detector = new AudioWorkletNode(this.context, WORKLET_NAME, {
      numberOfInputs: 1, numberOfOutputs: 1, outputChannelCount: [1],
      processorOptions: {threshold: gain * 0.1, quietMs: QUIET_MS},
    });
    const mute = new GainNode(this.context, {gain: 0}); // pulled by the graph, heard by nobody
    source.connect(detector).connect(mute).connect(this.context.destination);
    detector.port.onmessage = (event) => {
      const rate = event.data.sampleRate || this.context.sampleRate;
      const out = (this.context.baseLatency || 0) + (this.context.outputLatency || 0);
      this.#echoes.push(performance.now() + (event.data.offset / rate + out) * 1000);
      if (this.#echoes.length > 1000) this.#echoes.shift();
    };
    this.#listener = {source, detector, mute};
  }

  #unlisten() {
    if (!this.#listener) return;
    const {source, detector, mute} = this.#listener;
    detector.port.postMessage('stop');
    detector.port.onmessage = null;
    for (const node of [source, detector, mute]) node.disconnect();
    this.#listener = null;
  }

  /** Received-audio beep minus displayed frame, ms, for each sample whose beep came back. */
  #avOffsets() {
    const out = [];
    for (const {onsetTime, frameTime} of this.#marks) {
      const echo = this.#echoes.find((t) => t > onsetTime && t < onsetTime + this.#options.windowMs);
      if (echo !== undefined) out.push(echo - frameTime);
    }
    return out.sort((a, b) => a - b);
  }

  /** Stop reading the video (beeps go on; onsets are no longer counted). */
  unwatch() {
    this.#watch?.cancel();
    this.#watch = null;
    this.#pending = [];
    this.#recent = [];
  }

  /**
   * `{count, p50, p95, min, max, mean}` of the samples so far (ms; null when none), plus `missed`
   * beeps and `markedShare`: the share of the last 100 frames with a white marker (null before 25
   * frames). Beeps light 2-3 frames in 30-45; a share far above 0.1 means the corner is white for
   * other reasons (a light avatar image there, or speech from an included microphone), and the
   * samples cannot be trusted. `avOffset` (after `listen()`): `{count, p50, mean}` of received
   * audio minus displayed frame per beep, ms (positive: the sound trails the picture).
   * @returns {LatencyStats}
   */
  stats() {
    const sorted = [...this.samples].sort((a, b) => a - b);
    const count = sorted.length;
    const av = this.#avOffsets();
    return {
      avOffset: {count: av.length, p50: percentile(av, 0.5),
        mean: av.length ? av.reduce((a, b) => a + b, 0) / av.length : null},
      count,
      p50: percentile(sorted, 0.5),
      p95: percentile(sorted, 0.95),
      min: count ? sorted[0] : null,
      max: count ? sorted[count - 1] : null,
      mean: count ? sorted.reduce((a, b) => a + b, 0) / count : null,
      missed: this.missed,
      markedShare: this.#recent.length >= 25 ? this.#recent.filter(Boolean).length / this.#recent.length : null,
    };
  }

  /** Stop beeping and watching, and close the AudioContext. An included microphone is left open. */
  close() {
    if (this.#closed) return;
    this.unwatch();
    this.#unlisten();
    this.#closed = true;
    clearTimeout(this.#scheduler);
    const {oscillator, envelope, detector, destination, mic} = this.#nodes;
    try {
      envelope.gain.cancelScheduledValues(0);
      oscillator.stop();
    } catch { /* already stopped */ }
    detector.port.postMessage('stop');
    detector.port.onmessage = null;
    for (const node of [oscillator, envelope, detector, mic]) node?.disconnect();
    for (const track of destination.stream.getTracks()) track.stop();
    this.context.close().catch(() => {});
  }
}

// -- Type-level only (no run-time effect) ---------------------------------------------------------
// tsc (`make lint`) fails here, naming the members, where LatencyProbe and latency-probe.d.ts
// disagree (see the same check at the end of avatar-client.js).
/**
 * @import * as Declared from './latency-probe.js'
 * @import {Broken, None, Statics, Undeclared} from './emitter.js'
 * @typedef {[
 *   None<Broken<LatencyProbe, Declared.LatencyProbe> | Undeclared<LatencyProbe, Declared.LatencyProbe>>,
 *   None<Broken<Statics<typeof LatencyProbe>, Statics<typeof Declared.LatencyProbe>>
 *     | Undeclared<Statics<typeof LatencyProbe>, Statics<typeof Declared.LatencyProbe>>>,
 * ]} MatchesItsDeclaration
 */
