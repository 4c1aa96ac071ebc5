"""Pipecat: the avatar as the video of a Pipecat bot (``pip install 'avatar[pipecat]'``).

Both services go between the TTS and the output transport (docs/integrations.md)::

    Pipeline([transport.input(), stt, user_agg, llm, tts,
              AvatarVideoService(cfg),                 # or RemoteAvatarService("http://host:8080")
              transport.output(), assistant_agg])

:class:`AvatarVideoService` owns an engine in this process; :class:`RemoteAvatarService` drives a
session of a remote ``avatar serve`` (TTS audio over ``/ws/audio``, video and audio back over
WebRTC). ``TTSAudioRawFrame`` goes into the engine and is not passed on. Out come, per video
frame, an ``OutputImageRawFrame`` (``sync_with_audio``: the transport shows it when the audio
pushed before it has been sent), then that frame's audio as a ``SpeechOutputAudioRawFrame`` at
the pipeline's output rate: image first (pushed after its audio it shows a frame late). While
the bot is silent the listening face keeps coming at the engine's fps. The output transport
makes ``BotStarted/StoppedSpeakingFrame`` from the audio it plays (as for HeyGen's service);
the services make none. ``InterruptionFrame`` clears the engine (frames of the dropped speech
are not sent); ``EndFrame`` lets the speech play out, then closes the engine; ``CancelFrame``
closes it at once. In process, frames that come after TTS audio (``TTSTextFrame``,
``TTSStoppedFrame``...) leave after the video frames of that audio, as without an avatar.

SmallWebRTC: use :func:`smallwebrtc_transport`. Pipecat's video track stamps every frame 1/30 s
after the one before (aiortc's ``VideoStreamTrack.next_timestamp``): at 25 fps its clock runs
17 % slow against the audio; and its video task sends the latest image on its own beat, up to a
frame after its audio. :func:`fit_video_track` fixes both.

Not tested here: a browser's lip sync (tests use an aiortc peer), real STT/LLM/TTS services,
transports other than SmallWebRTC and Pipecat's base output transport.

One file per job: :mod:`.frames` (Pipecat frames <-> the engine), :mod:`.service` (in process),
:mod:`.transport` (transport settings, SmallWebRTC's video), :mod:`.remote` (a remote server).
"""

from avatar.integrations.pipecat.frames import AudioOut, InOrder, image_frame, tts_samples
from avatar.integrations.pipecat.remote import RemoteAvatarService, RemoteSession
from avatar.integrations.pipecat.service import AvatarVideoService
from avatar.integrations.pipecat.transport import (
    VideoClock,
    fit_video_track,
    smallwebrtc_transport,
    transport_params,
)

__all__ = [
    "AudioOut", "AvatarVideoService", "InOrder", "RemoteAvatarService", "RemoteSession",
    "VideoClock", "fit_video_track", "image_frame", "smallwebrtc_transport", "transport_params",
    "tts_samples",
]  # fmt: skip
