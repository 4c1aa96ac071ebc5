// A page's TypeScript using the npm package by name (scripts/check_js.sh installs the packed
// avatar/web into an empty project and type-checks this file there). Compile-only: nothing runs.
// Each @ts-expect-error is a misuse the declarations must refuse (tsc fails if one is accepted).
import {
  AvatarClient,
  AvatarError,
  PcmSender,
  type AvatarErrorCode,
  type ReadyMessage,
  type ServerMessage,
} from '@avatar-engine/client';
import {LatencyProbe, type LatencyStats} from '@avatar-engine/client/latency-probe';

export async function talk(video: HTMLVideoElement, call: RTCPeerConnection): Promise<void> {
  const {avatars, default: fallback} = await AvatarClient.listAvatars({url: 'https://avatar.example/'});
  const avatar = await AvatarClient.connect({
    url: new URL('https://avatar.example/'),
    audio: 'mic',
    avatar: fallback ?? avatars[0],
    codec: 'H264',
    jitterBuffer: {audio: null, video: 0},
    on: {connectionstatechange: (state: RTCPeerConnectionState) => console.log(state)},
  });
  const info: ReadyMessage | null = avatar.info;
  const playing: boolean = await avatar.attach(video);
  avatar.on('speech_start', (m) => console.log(m.pts_ms.toFixed(0), playing));
  avatar.on('stats', (s) => console.log(s.latency_ms.p95, s.queue));
  avatar.on('blendshapes', (m) => console.log(m.values.length, m.head[5]));
  avatar.on('message', (m: ServerMessage) => console.log(m.type));
  avatar.once('close', ({reason}) => console.log(reason === 'failed'));
  avatar.on('error', (err) => {
    const code: AvatarErrorCode = err.code;
    console.log(code, err.status, err instanceof AvatarError);
  });
  const off = avatar.on('profile', (p) => console.log(p.stages.motion?.p50, p.budget_use));
  off();
  const sent: boolean = avatar.subscribeBlendshapes(true) && avatar.clear();
  const replaced = await avatar.replaceTracksIn(call, {audio: false});
  await replaced.restore();
  const pcm: PcmSender = await avatar.openPcm({sampleRate: 24000, channels: 1});
  pcm.send(new Float32Array(480));
  pcm.send(new Int16Array(480).buffer);
  pcm.on('close', ({code}) => console.log(code, sent, pcm.bufferedAmount));
  pcm.close();
  avatar.close();
  console.log(info?.blendshapes.length, avatar.jitterBuffer.video, avatar.channelState);

  const probe = await LatencyProbe.create({intervalMs: [1000, 1500]});
  if (info?.marker) probe.watch(video, info.marker, info.size);
  probe.on('sample', ({ms, skippedFrames}) => console.log(ms, skippedFrames));
  const stats: LatencyStats = probe.stats();
  console.log(stats.avOffset.p50, probe.samples.length);

  // @ts-expect-error: only 'mic', 'none' or a MediaStream / MediaStreamTrack
  await AvatarClient.connect({audio: 'speaker'});
  // @ts-expect-error: the server sends VP8 or H264
  await AvatarClient.connect({codec: 'AV1'});
  // @ts-expect-error: no such event
  avatar.on('frame', () => {});
  // @ts-expect-error: a stats message has no such field
  avatar.on('stats', (s) => s.bitrate);
  // @ts-expect-error: made by connect(), not by `new`
  new AvatarClient();
  // @ts-expect-error: PcmSender.open() needs the session
  await PcmSender.open({sampleRate: 16000});
  // @ts-expect-error: read-only
  avatar.session = 'other';
  // @ts-expect-error: not an error code
  new AvatarError('oops', 'message');
}
