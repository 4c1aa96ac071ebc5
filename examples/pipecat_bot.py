"""A Pipecat bot with the avatar's face: it says a text in festival's voice, then listens.

No STT or LLM runs here, so the pipeline is TTS-only: festival speaks the text (as a TTS service
would push it), the avatar's engine turns it into lip-synced video, Pipecat's SmallWebRTC
transport sends both to the page::

    pip install 'avatar[pipecat]'
    python examples/pipecat_bot.py "Hello! I am a Pipecat bot with a face."   # then open
        http://127.0.0.1:7860 and press Start
    python examples/pipecat_bot.py --check "Hello."   # an aiortc peer instead of a browser

In a full bot the avatar goes between the TTS and the output transport:
``[transport.input(), stt, user_agg, llm, tts, AvatarVideoService(cfg), transport.output(),
assistant_agg]``.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from aiohttp import web
from aiortc import RTCPeerConnection, RTCSessionDescription
from pipecat.frames.frames import TTSAudioRawFrame, TTSStartedFrame, TTSStoppedFrame
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.transports.smallwebrtc.connection import SmallWebRTCConnection
from pipecat.workers.runner import WorkerRunner

from avatar.audio.pcm import to_pcm16
from avatar.config import Config, load_config
from avatar.data.tts import speak
from avatar.integrations.pipecat import AvatarVideoService, smallwebrtc_transport

PAGE = """<!doctype html><meta charset="utf-8"><title>Pipecat avatar</title>
<video id="v" autoplay playsinline width="512" height="512"></video><br>
<button id="b">Start</button>
<script>
b.onclick = async () => {
  b.disabled = true;
  const pc = new RTCPeerConnection(), stream = new MediaStream();
  pc.addTransceiver("audio", {direction: "sendrecv"});  // Pipecat's order: audio, then video
  pc.addTransceiver("video", {direction: "sendrecv"});
  pc.ontrack = (e) => { stream.addTrack(e.track); v.srcObject = stream; };
  await pc.setLocalDescription(await pc.createOffer());
  await new Promise((done) => {
    if (pc.iceGatheringState === "complete") return done();
    pc.onicegatheringstatechange = () => pc.iceGatheringState === "complete" && done();
  });
  const answer = await fetch("/api/offer", {method: "POST", body: JSON.stringify(
    {sdp: pc.localDescription.sdp, type: pc.localDescription.type})});
  await pc.setRemoteDescription(await answer.json());
};
</script>"""


def tts_frames(text: str) -> list[Any]:
    """The text as a TTS service pushes it: started, 20 ms of s16 audio at a time, stopped."""
    speech = speak(text)
    pcm, n = to_pcm16(speech.audio), speech.rate // 50
    audio = [
        TTSAudioRawFrame(pcm[i : i + n].tobytes(), speech.rate, 1) for i in range(0, len(pcm), n)
    ]
    return [TTSStartedFrame(), *audio, TTSStoppedFrame()]


def make_bot(
    connection: SmallWebRTCConnection, cfg: Config, text: str
) -> tuple[PipelineWorker, AvatarVideoService]:
    """One session: it says ``text`` once the client is connected, idles until it goes."""
    transport = smallwebrtc_transport(connection, cfg)
    avatar = AvatarVideoService(cfg)
    worker = PipelineWorker(Pipeline([avatar, transport.output()]), idle_timeout_secs=None,
                            params=PipelineParams(audio_out_sample_rate=48000))  # fmt: skip

    @transport.event_handler("on_client_connected")
    async def on_connected(_transport: Any, _client: Any) -> None:
        await worker.queue_frames(tts_frames(text))

    @transport.event_handler("on_client_disconnected")
    async def on_disconnected(_transport: Any, _client: Any) -> None:
        await worker.cancel()

    return worker, avatar


async def run(worker: PipelineWorker) -> None:
    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)
    await runner.run()


async def answer(connection: SmallWebRTCConnection, offer: dict[str, str]) -> dict[str, str]:
    await connection.initialize(sdp=offer["sdp"], type=offer["type"])
    return connection.get_answer()


def serve(cfg: Config, text: str, port: int) -> None:
    bots: dict[asyncio.Task[None], PipelineWorker] = {}

    async def offer(request: web.Request) -> web.Response:
        connection = SmallWebRTCConnection()
        reply = await answer(connection, await request.json())
        worker = make_bot(connection, cfg, text)[0]
        task = asyncio.create_task(run(worker))
        bots[task] = worker
        task.add_done_callback(lambda done: bots.pop(done, None))
        return web.json_response(reply)

    async def page(_request: web.Request) -> web.Response:
        return web.Response(text=PAGE, content_type="text/html")

    async def stop_bots(_app: web.Application) -> None:
        # Ctrl-C: cancel each pipeline while its tasks still run (aiohttp then cancels every
        # task at once, and a CancelFrame could no longer travel through the pipeline)
        for worker in list(bots.values()):
            await worker.cancel()
        if bots:
            await asyncio.wait(list(bots), timeout=10)

    app = web.Application()
    app.router.add_get("/", page)
    app.router.add_post("/api/offer", offer)
    app.on_shutdown.append(stop_bots)
    print(f"open http://127.0.0.1:{port} and press Start")
    web.run_app(app, host="127.0.0.1", port=port, print=None)


async def check(cfg: Config, text: str) -> None:
    """The bot and an aiortc peer in this process: counts what the peer receives."""
    peer, connection = RTCPeerConnection(), SmallWebRTCConnection()
    peer.addTransceiver("audio", direction="sendrecv")
    peer.addTransceiver("video", direction="sendrecv")
    counts = {"audio": 0, "video": 0}

    async def read(track: Any) -> None:
        while True:
            await track.recv()
            counts[track.kind] += 1

    tasks = []
    peer.on("track", lambda track: tasks.append(asyncio.create_task(read(track))))
    await peer.setLocalDescription(await peer.createOffer())
    reply = await answer(connection, {"sdp": peer.localDescription.sdp, "type": "offer"})
    await peer.setRemoteDescription(RTCSessionDescription(reply["sdp"], reply["type"]))
    worker, avatar = make_bot(connection, cfg, text)
    bot = asyncio.create_task(run(worker))
    await asyncio.sleep(speak(text).duration_s + 3)
    await worker.end()  # EndFrame: what was said plays out, then the engine closes
    await asyncio.wait_for(bot, 30)
    stats = avatar.engine.stats if avatar.engine else None
    made = f"{stats.frames} frames, {stats.late} late" if stats else "no engine"
    print(
        f"the peer received {counts['video']} video frames and {counts['audio']} audio "
        f"packets; the engine made {made}"
    )
    for task in tasks:
        task.cancel()
    await peer.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("text", nargs="?", default="Hello! I am a Pipecat bot with a face.")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--check", action="store_true", help="an aiortc peer, no browser")
    parser.add_argument("--set", action="append", default=[], help="config key=value")
    args = parser.parse_args()
    cfg = load_config(overrides=args.set)
    if args.check:
        asyncio.run(check(cfg, args.text))
    else:
        serve(cfg, args.text, args.port)


if __name__ == "__main__":
    main()
