/**
 * Type declarations for latency-probe.js: end-to-end latency (microphone -> screen) of the avatar,
 * measured in the browser on its own clock. Needs a server started with `avatar serve --profile`.
 *
 * ```ts
 * import {AvatarClient} from './avatar-client.js';
 * import {LatencyProbe} from './latency-probe.js';
 * const probe = await LatencyProbe.create();
 * const avatar = await AvatarClient.connect({audio: probe.stream});
 * await avatar.attach(video);
 * probe.watch(video, avatar.info!.marker!, avatar.info!.size);
 * probe.on('sample', ({ms}) => console.log(`mic -> screen ${ms.toFixed(0)} ms`));
 * ```
 */

import type {ProfileMarker} from './avatar-client.js';

/** Options of {@link LatencyProbe.create}. */
export interface LatencyProbeOptions {
  /** Random pause between beep onsets, [min, max] ms (or one number). Default [1200, 1800]. */
  intervalMs?: number | [number, number];
  /** Beep length, ms. Default 80 (2-3 video frames at 25 fps). */
  beepMs?: number;
  /** Beep pitch, Hz. Default 1000. */
  frequency?: number;
  /** Beep amplitude, 0..1 of full scale. Default 0.5 (the server marks frames above RMS 0.05). */
  gain?: number;
  /**
   * A microphone to mix in (not through the onset detector). Default null: only beeps are sent, so
   * nothing else lights the marker. With a microphone, speech may light it too: measure in quiet.
   */
  includeMic?: MediaStream | MediaStreamTrack | null;
  /** A beep not seen on screen within this many ms counts as missed. Default 1500. */
  windowMs?: number;
}

/** One end-to-end measurement. Times are performance.now() milliseconds. */
export interface LatencySample {
  /** frameTime - onsetTime. */
  ms: number;
  /** When the beep's first sample entered the outgoing audio (AudioWorklet, sample-corrected). */
  onsetTime: number;
  /** The first frame with the marker lit: its expectedDisplayTime (or the callback's time). */
  frameTime: number;
  /** Samples so far, this one included. */
  count: number;
  /** Frames presented since the previous callback but not seen by it (0 normally). */
  skippedFrames: number;
}

/** What {@link LatencyProbe.stats} returns; times in ms, null while there are no samples. */
export interface LatencyStats {
  count: number;
  p50: number | null;
  p95: number | null;
  min: number | null;
  max: number | null;
  mean: number | null;
  /** Beeps never seen on screen within the window (while watching). */
  missed: number;
  /**
   * Share of the last 100 frames with the marker lit (null before 25 frames). Beeps alone give
   * about 0.05-0.1; far more means the corner is light for other reasons and samples are unreliable.
   */
  markedShare: number | null;
  /**
   * After {@link LatencyProbe.listen}: received audio minus displayed frame for each beep, ms
   * (positive: the sound trails the picture; the AudioContext's output latency included).
   */
  avOffset: {count: number; p50: number | null; mean: number | null};
}

/** Event names of {@link LatencyProbe} and what their listeners receive. */
export interface LatencyProbeEvents {
  /** A beep was seen on screen. */
  sample: LatencySample;
  /** A beep onset entered the outgoing audio (only while watching). */
  onset: {time: number};
  /** A beep was not seen on screen within the window. */
  missed: {onsetTime: number};
}

/**
 * Sends beeps as the avatar's audio input and times each one from the outgoing audio to the
 * displayed video frame that shows the server's marker. Create with {@link LatencyProbe.create}.
 */
export class LatencyProbe {
  private constructor();

  /**
   * Build the WebAudio graph (beeps -> onset AudioWorklet -> MediaStreamAudioDestinationNode), resume
   * the AudioContext and start beeping. Needs AudioWorklet (a secure page: https:// or localhost).
   */
  static create(options?: LatencyProbeOptions): Promise<LatencyProbe>;

  /** The audio to send: `AvatarClient.connect({audio: probe.stream})`. */
  readonly stream: MediaStream;
  /** The probe's AudioContext. */
  readonly context: AudioContext;
  /** End-to-end latencies so far, ms (this array grows in place). */
  readonly samples: number[];
  /** Beeps not seen on screen within the window, while watching. */
  readonly missed: number;
  /** Beep onsets detected in the outgoing audio. */
  readonly beeps: number;
  /** True while watch() reads a video element. */
  readonly watching: boolean;
  /** True once close() ran. */
  readonly closed: boolean;

  /**
   * Resume the AudioContext (call from a user gesture if it was created without one). Resolves
   * within `timeoutMs` (default 1000) with whether it is running.
   */
  resume(timeoutMs?: number): Promise<boolean>;

  /**
   * Time beeps on `video` (requestVideoFrameCallback; requestAnimationFrame where missing):
   * `marker` is the ready message's {@link ProfileMarker}, `videoSize` its `size` (default 512).
   */
  watch(video: HTMLVideoElement, marker: ProfileMarker, videoSize?: number): void;
  /** Stop reading the video; beeping goes on. */
  unwatch(): void;
  /**
   * Detect the beeps coming back in the avatar's received audio (`avatar.audioTrack`, playing in a
   * media element) for `stats().avOffset`.
   */
  listen(track: MediaStreamTrack): void;

  /** Percentiles and counts of the samples so far. */
  stats(): LatencyStats;

  /** Add a listener; returns a function that removes it. */
  on<K extends keyof LatencyProbeEvents>(name: K, fn: (event: LatencyProbeEvents[K]) => void): () => void;
  /** Add a listener that runs once; returns a function that removes it. */
  once<K extends keyof LatencyProbeEvents>(name: K, fn: (event: LatencyProbeEvents[K]) => void): () => void;
  /** Remove a listener. */
  off<K extends keyof LatencyProbeEvents>(name: K, fn: (event: LatencyProbeEvents[K]) => void): void;

  /** Stop beeping and watching, close the AudioContext; an included microphone stays open. */
  close(): void;
}
