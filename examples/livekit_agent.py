"""A LiveKit Agents voice agent with the avatar engine as its face.

Untested against a LiveKit server: none runs on the machines this was written on, so this file has
never joined a room. What was tested is the media path under LiveKit's own classes
(tests/agents/test_livekit.py, on a fake room). It needs ``pip install 'avatar[livekit]'`` and
``LIVEKIT_URL``, ``LIVEKIT_API_KEY``, ``LIVEKIT_API_SECRET``; the STT/LLM/TTS named below go
through LiveKit Inference (swap in any plugins you have keys for).

In process (the avatar renders in the agent's job and publishes as the agent)::

    python examples/livekit_agent.py dev

Remote worker (the agent streams its audio to a worker that joined the same room; run the agent
with ``AVATAR_REMOTE=1`` and start a worker per room, e.g. from your dispatcher)::

    AVATAR_REMOTE=1 python examples/livekit_agent.py dev
    python examples/livekit_agent.py worker ROOM_NAME AGENT_IDENTITY
"""

from __future__ import annotations

import asyncio
import os
import sys

from livekit.agents import Agent, AgentServer, AgentSession, JobContext, cli, room_io

from avatar.integrations.livekit import (
    AvatarSession,
    avatar_worker_token,
    remote_audio_output,
    run_avatar_worker,
)

AVATAR_IDENTITY = "avatar-worker"
server = AgentServer()


@server.rtc_session()
async def entrypoint(ctx: JobContext) -> None:
    """The agent's job: the avatar first (it takes the session's audio output), then the agent."""
    await ctx.connect()
    session: AgentSession[None] = AgentSession(
        stt="deepgram/nova-3", llm="openai/gpt-4.1-mini", tts="cartesia/sonic-2"
    )
    if os.environ.get("AVATAR_REMOTE"):
        session.output.audio = remote_audio_output(ctx.room, AVATAR_IDENTITY)
        print("start the worker:", sys.argv[0], "worker", ctx.room.name,
              ctx.room.local_participant.identity)  # fmt: skip
    else:
        await AvatarSession().start(session, ctx.room)  # loads the models (in an executor)
    await session.start(
        agent=Agent(instructions="You are a friendly assistant. Keep answers short."),
        room=ctx.room,
        room_options=room_io.RoomOptions(audio_output=False),  # the avatar publishes the audio
    )
    await session.generate_reply(instructions="Greet the user.")


def worker(room_name: str, agent_identity: str) -> None:
    """The remote worker for one room: joins as an agent publishing on the agent's behalf."""
    token = avatar_worker_token(room_name, agent_identity, AVATAR_IDENTITY)
    asyncio.run(run_avatar_worker(os.environ["LIVEKIT_URL"], token))


if __name__ == "__main__":
    if sys.argv[1:2] == ["worker"]:
        worker(*sys.argv[2:4])
    else:
        cli.run_app(server)
