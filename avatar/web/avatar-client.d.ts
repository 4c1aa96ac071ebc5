/**
 * Type declarations for avatar-client.js, the browser client of the real-time talking-avatar server.
 *
 * ```ts
 * import {AvatarClient} from './avatar-client.js';
 * const avatar = await AvatarClient.connect({audio: 'mic'});
 * avatar.attach(document.querySelector('video')!);
 * avatar.on('speech_start', () => console.log('speaking'));
 * ```
 */

/** Machine-readable reasons an {@link AvatarError} is thrown or emitted. */
export type AvatarErrorCode =
  /** An option had a wrong value (unknown codec, audio stream without an audio track, ...). */
  | 'bad-option'
  /** The server could not be reached (fetch failed, WebSocket could not open). */
  | 'network'
  /** The server answered with an HTTP error; `message` is the server's own `error` text. */
  | 'http'
  /** The server sent `{"type": "error"}` on the data channel or a WebSocket. */
  | 'server'
  /** The user or the browser refused microphone access. */
  | 'mic-denied'
  /** No usable microphone (none present, busy, or an insecure page). */
  | 'mic-unavailable'
  /** The requested video codec cannot be received, or the browser cannot choose codecs. */
  | 'codec-unsupported'
  /** The RTCPeerConnection reached the 'failed' state (no network path to the server). */
  | 'connection-failed'
  /** connect() did not finish within its timeout; `message` says which step was pending. */
  | 'timeout'
  /** The client (or the session) was closed. */
  | 'closed'
  /** attach(): the browser blocked playback until a user gesture. */
  | 'autoplay'
  /** replaceTracksIn(): the call has no video sender to replace. */
  | 'no-video-sender';

/** An Error with a `code` to branch on; `message` is meant for people. */
export class AvatarError extends Error {
  constructor(code: AvatarErrorCode, message: string, options?: {cause?: unknown; status?: number});
  readonly name: 'AvatarError';
  readonly code: AvatarErrorCode;
  /** The HTTP status, for code 'http'. */
  readonly status?: number;
}

/** Video codecs the server can send. */
export type VideoCodec = 'VP8' | 'H264';

/** `GET api/avatars`. */
export interface AvatarList {
  /** Names to pass as `avatar` to {@link AvatarClient.connect}. */
  avatars: string[];
  /** The one used when no `avatar` is given. */
  default: string | null;
}

/** Sent once when the data channel opens. */
export interface ReadyMessage {
  type: 'ready';
  session: string;
  /** The avatar actually used. */
  avatar: string;
  /** Video frame rate, e.g. 25. */
  fps: number;
  /** Video width and height in pixels (the video is square). */
  size: number;
  /** The 16 ARKit blendshape names, in the order of {@link BlendshapesMessage.values}. */
  blendshapes: string[];
  /** True when the server runs `avatar serve --profile`: 'profile' messages follow once a second. */
  profile?: boolean;
  /** Profile mode: where the server paints its white "loud audio" square (see {@link ProfileMarker}). */
  marker?: ProfileMarker;
}

/**
 * Profile mode: a white square of `size` px at (`x`, `y`) in video pixels (of a `size`-px
 * {@link ReadyMessage.size} frame) on every frame whose own audio is loud (RMS > 0.05 of full
 * scale); otherwise the avatar's image. Used by LatencyProbe (latency-probe.js).
 */
export interface ProfileMarker {
  x: number;
  y: number;
  size: number;
}

/** Milliseconds over the last second's frames. */
export interface ProfileQuantiles {
  p50: number;
  p95: number;
  mean: number;
}

/** Pipeline stages the server times, in the order a frame meets them. */
export type ProfileStage = 'resample' | 'vad' | 'features' | 'motion' | 'render' | 'colour' | 'encode' | 'send';
/** Queues a frame's work waits in. */
export type ProfileWait = 'inbox' | 'ready' | 'out';

/** Profile mode only, once a second: where the server's time goes. All times in milliseconds. */
export interface ProfileMessage {
  type: 'profile';
  /** Frames per second over the last second. */
  fps: number | null;
  /** Frames in this summary. */
  frames: number;
  /** Ticks missed (frames ready after their deadline). */
  late: number;
  /** Frames skipped to catch up. */
  skipped: number;
  /** Frames dropped by the sender's queue. */
  dropped?: number;
  /** Frames that showed the idle avatar. */
  idle: number;
  /** The frame budget, 1000 / fps. */
  budget_ms: number;
  /** Share of the budget the server's per-frame work used (1 = all of it). */
  budget_use: number | null;
  /** Server latency: audio received -> frame handed to the encoder. Not end to end. */
  latency_ms: {p50: number | null; p95: number | null};
  /** Work per stage; a stage may be missing or null (motion in silence, say). */
  stages: Partial<Record<ProfileStage, ProfileQuantiles | null>> & {[stage: string]: ProfileQuantiles | null | undefined};
  /** Time spent waiting in each queue. */
  waits: Partial<Record<ProfileWait, ProfileQuantiles | null>> & {[queue: string]: ProfileQuantiles | null | undefined};
}

/** The avatar starts speaking; `pts_ms` is the presentation time of the first speaking frame. */
export interface SpeechStartMessage {
  type: 'speech_start';
  pts_ms: number;
}

/** The avatar stops speaking. */
export interface SpeechEndMessage {
  type: 'speech_end';
  pts_ms: number;
}

/** The server's pipeline counters, once a second. */
export interface StatsMessage {
  type: 'stats';
  /** Frames per second sent over the last second. */
  fps: number;
  /** Frames sent since the session started. */
  frames: number;
  /** Frames that were ready after their deadline. */
  late: number;
  /** Frames dropped to catch up. */
  skipped: number;
  /** Frames that showed the idle avatar (no speech). */
  idle: number;
  /** Speech-in to frame-out latency on the server, milliseconds. */
  latency_ms: {p50: number; p95: number};
  /** Work items waiting in the server's queue. */
  queue: number;
}

/** Per video frame, only after {@link AvatarClient.subscribeBlendshapes}(true). */
export interface BlendshapesMessage {
  type: 'blendshapes';
  frame: number;
  pts_ms: number;
  /** 16 values in 0..1, named by {@link ReadyMessage.blendshapes}. */
  values: number[];
  /** Eye closure, 0..1. */
  blink: number;
  /** Head pose: yaw, pitch, roll (radians), tx, ty, tz. */
  head: [number, number, number, number, number, number];
}

/** The server reported a problem (delivered as an {@link AvatarError} with code 'server'). */
export interface ErrorMessage {
  type: 'error';
  message: string;
}

/** Any message the server sends on the data channel. */
export type ServerMessage =
  | ReadyMessage
  | SpeechStartMessage
  | SpeechEndMessage
  | StatsMessage
  | BlendshapesMessage
  | ProfileMessage
  | ErrorMessage
  | {type: string; [key: string]: unknown};

/** Why the session ended: close() was called, the server ended it, or the connection failed. */
export interface AvatarCloseEvent {
  reason: 'local' | 'server' | 'failed';
}

/** Event names of {@link AvatarClient} and what their listeners receive. */
export interface AvatarClientEvents {
  ready: ReadyMessage;
  speech_start: SpeechStartMessage;
  speech_end: SpeechEndMessage;
  stats: StatsMessage;
  blendshapes: BlendshapesMessage;
  /** Once a second when the server runs with --profile. */
  profile: ProfileMessage;
  /** Every parsed server message, before its own event. */
  message: ServerMessage;
  /** Server errors, connection failure after connect, blocked autoplay. */
  error: AvatarError;
  /** The RTCPeerConnection's connectionState after each change. */
  connectionstatechange: RTCPeerConnectionState;
  /** Once, when the session ends for any reason. */
  close: AvatarCloseEvent;
  /**
   * The avatar moved to a new session (a node pool's gateway placed it on another node): the
   * server told it to (the node drains), its video stalled (the node died) or the connection
   * failed. `stream` already shows the new session; `session` is its id.
   */
  moved: AvatarMovedEvent;
}

/** A {@link AvatarClientEvents.moved} event. */
export interface AvatarMovedEvent {
  from: string | null;
  to: string | null;
  reason: 'told' | 'stalled' | 'failed';
}

/** Options of {@link AvatarClient.connect}. */
export interface ConnectOptions {
  /**
   * The server's base URL; endpoints are resolved beneath it ('offer', 'api/avatars', 'ws').
   * Default: the current page's directory, `new URL('.', location.href)`.
   */
  url?: string | URL;
  /**
   * What the avatar listens to: 'mic' opens the microphone (with echo cancellation, noise
   * suppression and auto gain); a MediaStream (its first audio track) or an audio track is sent as
   * is; 'none' sends nothing (feed speech with {@link PcmSender} instead). Default 'mic'.
   */
  audio?: 'mic' | 'none' | MediaStream | MediaStreamTrack;
  /** Avatar name from {@link AvatarClient.listAvatars}; default: the server's default. */
  avatar?: string;
  /**
   * Force the video codec (the offer then lists only this codec and its RTX/RED/FEC entries).
   * Default (or 'auto'): the browser's order.
   */
  codec?: VideoCodec | 'auto';
  /**
   * ICE servers (STUN/TURN) for the peer connection. Default: the server's own list from
   * GET api/ice (TURN with short-lived credentials when the server has a TURN secret).
   */
  iceServers?: RTCIceServer[];
  /**
   * Session token for servers that require one (`avatar token` mints it; your backend hands it
   * to the page). Sent as `Authorization: Bearer <token>` with the offer.
   */
  token?: string;
  /** Subscribe to per-frame 'blendshapes' events from the start. Default false. */
  blendshapes?: boolean;
  /**
   * Jitter-buffer targets for the received audio and video in milliseconds, set on the receivers
   * (`jitterBufferTarget`, or `playoutDelayHint` where only that exists); null leaves the browser's
   * own choice. Default `{audio: null, video: 0}`: video is shown as soon as it is decoded (the
   * server also sends the playout-delay RTP extension), audio keeps the browser's adaptive buffer.
   */
  jitterBuffer?: {audio?: number | null; video?: number | null};
  /** Aborts connecting; connect() then rejects with the signal's reason. No effect afterwards. */
  signal?: AbortSignal;
  /**
   * Milliseconds from after the microphone prompt until the server's 'ready' message; on expiry
   * connect() rejects with code 'timeout'. Default 15000.
   */
  timeout?: number;
  /** Milliseconds to wait for ICE gathering before sending the offer anyway. Default 2000. */
  iceGatheringTimeout?: number;
  /**
   * Open the optional `ws?session=` WebSocket (late ICE candidates, mirrored events). Default true.
   */
  websocket?: boolean;
  /**
   * Keep the avatar on screen when its server goes away: on a 'shutdown' or 'move' message, when
   * the video stalls for `stallMs`, or when the connection fails, open a new session through the
   * same URL (a node pool's gateway places it elsewhere), switch to it once it shows a frame, then
   * close the old one; emits 'moved'. Tries for up to a minute before closing with 'failed'.
   * Default true.
   */
  roam?: boolean;
  /** Video stalled this long (ms, after its first frame) means the server is gone. Default 1500. */
  stallMs?: number;
  /** Listeners to register before connecting (the only way to see events fired during connect). */
  on?: {[K in keyof AvatarClientEvents]?: (event: AvatarClientEvents[K]) => void};
}

/** What {@link AvatarClient.replaceTracksIn} replaced. */
export interface ReplacedTracks {
  /** The call's previous outgoing video track (may be null if the sender had none). */
  video: MediaStreamTrack | null;
  /** The call's previous outgoing audio track; null if not replaced or none. */
  audio: MediaStreamTrack | null;
  /** Put the original tracks back. */
  restore(): Promise<void>;
}

/** Options of {@link PcmSender.open}. */
export interface PcmSenderOptions {
  /** The server's base URL; default: the current page's directory. */
  url?: string | URL;
  /** The session id, {@link AvatarClient.session}. */
  session: string;
  /** The session's key from the answer (AvatarClient.openPcm passes it); the id alone opens nothing. */
  key?: string;
  /** Sample rate of what will be sent. Default 16000. */
  sampleRate?: number;
  /** Interleaved channels. Default 1. */
  channels?: number;
  /** Aborts opening. */
  signal?: AbortSignal;
  /** Milliseconds to wait for the socket to open. Default 10000. */
  timeout?: number;
}

/** Event names of {@link PcmSender} and what their listeners receive. */
export interface PcmSenderEvents {
  /** A server `{"type": "error"}` message, as an AvatarError with code 'server'. */
  error: AvatarError;
  /** Any parsed text message from the server. */
  message: {type?: string; [key: string]: unknown};
  /** The WebSocket closed. */
  close: {code: number; reason: string};
}

/**
 * A live avatar session over one RTCPeerConnection. Create it with {@link AvatarClient.connect}.
 */
export class AvatarClient {
  private constructor();

  /** `{avatars, default}` from the server's `GET api/avatars`. */
  static listAvatars(options?: {url?: string | URL; signal?: AbortSignal}): Promise<AvatarList>;

  /**
   * Open a session: microphone (if asked), offer (after ICE gathering), answer, connection, and the
   * server's 'ready' message. Rejects with an {@link AvatarError} (HTTP errors carry the server's
   * message), or with the signal's reason when aborted; nothing is left open then.
   */
  static connect(options?: ConnectOptions): Promise<AvatarClient>;

  /** The peer connection to the server. */
  readonly pc: RTCPeerConnection;
  /** Session id given by the server. */
  readonly session: string | null;
  /** The server's 'ready' message (set before connect() resolves). */
  readonly info: ReadyMessage | null;
  /** The avatar's video and speech audio together, in sync; give it to a <video> element. */
  readonly stream: MediaStream;
  /** The received avatar video track. */
  readonly videoTrack: MediaStreamTrack;
  /** The received speech audio track (the speech, delayed to match the video). */
  readonly audioTrack: MediaStreamTrack;
  /** Which receiver property took each jitter-buffer target (null: none set or none supported). */
  readonly jitterBuffer: {
    audio: 'jitterBufferTarget' | 'playoutDelayHint' | null;
    video: 'jitterBufferTarget' | 'playoutDelayHint' | null;
  };
  /** The server base URL (a directory URL). */
  readonly url: string;
  /** True between 'speech_start' and 'speech_end'. */
  readonly speaking: boolean;
  /** True once the session has ended. */
  readonly closed: boolean;
  /** The control data channel's readyState. */
  readonly channelState: RTCDataChannelState;

  /** Add a listener; returns a function that removes it. */
  on<K extends keyof AvatarClientEvents>(name: K, fn: (event: AvatarClientEvents[K]) => void): () => void;
  /** Add a listener that runs once; returns a function that removes it. */
  once<K extends keyof AvatarClientEvents>(name: K, fn: (event: AvatarClientEvents[K]) => void): () => void;
  /** Remove a listener added with on() or once(). */
  off<K extends keyof AvatarClientEvents>(name: K, fn: (event: AvatarClientEvents[K]) => void): void;

  /** Interrupt: the server drops queued speech and the avatar goes idle. False if not sent (session not open). */
  clear(): boolean;
  /** Speak text (sessions connected with audio: 'none'), after what is already being said. False if not sent. */
  say(text: string, options?: {voice?: 'slt' | 'kal' | 'ked' | string}): boolean;
  /** Start or stop per-frame 'blendshapes' events. False if not sent (session not open). */
  subscribeBlendshapes(enabled?: boolean): boolean;

  /**
   * Show the avatar in a video element: sets srcObject, playsInline and autoplay, then play().
   * Resolves false when the browser blocks playback (an 'error' event with code 'autoplay' is
   * emitted; call video.play() from a user gesture).
   */
  attach(video: HTMLVideoElement): Promise<boolean>;

  /**
   * Swap the avatar into an existing call: its outgoing video sender (and, unless
   * `audio: false`, its audio sender) get the avatar's tracks via replaceTrack. Throws an
   * AvatarError with code 'no-video-sender' if the call sends no video ('closed' once this client
   * is closed). Keep the result to restore.
   */
  replaceTracksIn(pc: RTCPeerConnection, options?: {audio?: boolean}): Promise<ReplacedTracks>;

  /**
   * Open a {@link PcmSender} for this session (connect with audio: 'none' to use it alone). Rejects
   * with an AvatarError ('closed') when there is no session.
   */
  openPcm(options?: {sampleRate?: number; channels?: number; signal?: AbortSignal; timeout?: number}): Promise<PcmSender>;

  /** End the session: closes the connection and WebSocket; stops the microphone only if this client opened it. */
  close(): void;
}

/**
 * Feeds PCM speech (e.g. from TTS) to a session over the `ws/audio?session=` WebSocket.
 * Create it with {@link PcmSender.open}.
 */
export class PcmSender {
  private constructor();

  /** Open the socket and announce `{"type": "format", sample_rate, channels}`. */
  static open(options: PcmSenderOptions): Promise<PcmSender>;

  /** Sample rate announced to the server. */
  readonly sampleRate: number;
  /** Channels announced to the server. */
  readonly channels: number;
  /** True while the socket is open. */
  readonly isOpen: boolean;
  /** Bytes queued in the browser, not yet sent (to pace a producer faster than real time). */
  readonly bufferedAmount: number;

  /**
   * Send samples, interleaved when channels > 1. Float32Array values in [-1, 1] are converted
   * to s16; an ArrayBuffer is sent as raw s16le bytes. Throws an AvatarError with code 'closed' if
   * the socket is closed, a RangeError if the samples are not whole frames of `channels`.
   */
  send(samples: Int16Array | Float32Array | Float64Array | ArrayBuffer): void;
  /** Interrupt: the server drops the audio queued so far. Throws an AvatarError ('closed') if the socket is closed. */
  clear(): void;
  /** Close the socket (the session stays up). */
  close(): void;

  on<K extends keyof PcmSenderEvents>(name: K, fn: (event: PcmSenderEvents[K]) => void): () => void;
  once<K extends keyof PcmSenderEvents>(name: K, fn: (event: PcmSenderEvents[K]) => void): () => void;
  off<K extends keyof PcmSenderEvents>(name: K, fn: (event: PcmSenderEvents[K]) => void): void;
}
