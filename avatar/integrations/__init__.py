"""The engine inside voice-agent frameworks: Pipecat (:mod:`.pipecat`) and LiveKit Agents
(:mod:`.livekit`). Each module imports its framework, so it is imported only by those who use it
(``pip install 'avatar[pipecat]'`` / ``'avatar[livekit]'``)."""
