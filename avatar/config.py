"""Pydantic configuration, loaded from ``avatar/configs/*.yaml`` and overridable per command.

Overrides use dotted keys: ``load_config(overrides=["motion.fps=30", "vad.aggressiveness=3"])``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from avatar.backends.protocol import BackendChoice
from avatar.backends.quantize import Precision
from avatar.errors import ConfigError
from avatar.resources import default_config, package_root
from avatar.units import ANALYSIS_RATE

PACKAGE_DIR = package_root()
DEFAULT_CONFIG = default_config()


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class VadConfig(_Section):
    """The speech gate (webrtcvad): frame size, aggressiveness, hysteresis and padding."""

    frame_ms: Literal[10, 20, 30] = 20
    aggressiveness: int = Field(default=2, ge=0, le=3)
    start_ratio: float = Field(default=0.6, gt=0, le=1)  # voiced share of the start window to open
    start_window_ms: int = Field(default=100, ge=10)
    end_ratio: float = Field(default=0.9, gt=0, le=1)  # unvoiced share of the end window to close
    end_window_ms: int = Field(default=300, ge=10)
    pre_padding_ms: int = Field(default=200, ge=0)  # audio before a START kept with the speech
    warmup_ms: int = Field(default=150, ge=0)  # webrtcvad calls the first ~100 ms voiced: ignore


class FeatureConfig(_Section):
    """Causal log-mel features: a frame ends at its hop, windows look only at the past."""

    sample_rate: int = ANALYSIS_RATE
    n_fft: int = 400
    hop: int = 160
    n_mels: int = 80
    fmin: float = 50.0
    fmax: float = 7600.0
    log_floor: float = 1e-5


class MotionConfig(_Section):
    """Audio-to-motion inference."""

    fps: float = 25.0
    weights: str = "builtin"  # "builtin" or a path to motion.onnx / motion.pt
    # the model for buffered input (a file, text-to-speech, agent audio ahead of playout), where
    # hearing further ahead costs no latency: "builtin", "builtin:NAME" (a committed model), a path
    buffered_weights: str = "builtin"
    backend: BackendChoice = "auto"  # auto = ORT CUDA > ORT CPU > torch CPU (TensorRT: name it)
    threads: int = Field(default=1, ge=1)
    # "int8": the ONNX file's INT8 sibling (NAME.int8.onnx, from scripts/quantize_models.py) for
    # both weights above; onnxruntime only. Same outputs within ~0.005 jawOpen, ~10% faster a call
    precision: Precision = "fp32"

    @field_validator("fps")
    @classmethod
    def _fps_ok(cls, v: float) -> float:
        if not 1 <= v <= 120:
            raise ValueError("fps must be between 1 and 120")
        return v

    def for_input(self, live: bool) -> MotionConfig:
        """This configuration with the weights for a live microphone or for buffered input."""
        return self if live else self.model_copy(update={"weights": self.buffered_weights})


class RenderConfig(_Section):
    """Avatar and renderer."""

    avatar: str = "default"  # a bundled avatar's name or a folder made by `avatar prepare`
    renderer: Literal["warp", "gan"] = "warp"
    # which of the avatar's generators: "" = gan.onnx / gan.pt; "small" = gan_small.* (carphone's
    # distilled half-width one: faster, a little less faithful; its MODEL_CARD.md)
    gan_variant: str = Field(default="", pattern=r"^[a-z0-9]*$")
    size: int = Field(default=512, ge=64, le=2048)  # side of the square video
    backend: BackendChoice = "auto"  # for the GAN: auto = ORT CUDA > ORT CPU > torch CPU
    threads: int = Field(default=1, ge=1)
    # the GAN generator's file: "fp32" gan.onnx, "int8" gan.int8.onnx (scripts/quantize_models.py;
    # onnxruntime only: ~2x faster a call on CPU, mouth pixels within ~0.3/255), or "auto": int8
    # where the generator runs on onnxruntime's CPU provider and the avatar has it, else fp32
    precision: Literal["auto", "fp32", "int8"] = "auto"
    idle_seed: int = 0  # blinks and head sway are reproducible from this


class BatchConfig(_Section):
    """Cross-session batching: one worker per model runs the due calls of all sessions as one
    batch (:mod:`avatar.backends.batching`), for the motion model and the GAN renderer."""

    enabled: bool = False
    max_batch: int = Field(default=8, ge=1, le=32)  # rows per call; 32 = the TensorRT profiles'
    max_wait_ms: float = Field(default=2.0, ge=0, le=40)  # oldest call waits this long at most


class EngineConfig(_Section):
    """The real-time loop: queue bounds, the late-frame policy and the silence gate."""

    max_backlog_frames: int = Field(default=3, ge=1)  # live input: older waiting frames skipped
    output_queue_frames: int = Field(default=2, ge=1)  # rendered, not yet taken: oldest dropped
    input_queue_chunks: int = Field(default=1000, ge=1)  # pushed audio blocks not yet analysed
    preroll_ms: int = Field(default=400, ge=0)  # audio replayed into the model when it wakes
    # How far the mouth runs ahead of its sound, as a real talker's does: free for buffered input
    # (a file, text-to-speech, agent audio ahead of playout); on a live microphone it is latency.
    lead_ms: int = Field(default=40, ge=0, le=200)
    live_lead_ms: int = Field(default=0, ge=0, le=200)
    sleep_after_ms: int = Field(default=300, ge=20)  # unvoiced time before the model sleeps
    idle_render_every: int = Field(default=2, ge=1)  # in silence, render every n-th frame
    workers: int = Field(default=0, ge=0)  # executor threads for all sessions; 0 = CPU count
    tick_phase: bool = True  # live: move the ticks to just after frames become ready
    sync_marker: bool = False  # white corner square on frames whose audio is loud (sync checks)
    batch: BatchConfig = BatchConfig()


class IceServer(_Section):
    """One STUN/TURN server offered to aiortc (``urls`` like ``turn:host:3478``)."""

    urls: list[str]
    username: str | None = None
    credential: str | None = None


class EncoderConfig(_Section):
    """Options over aiortc's for the video encoders (libvpx / libx264 names). aiortc's are for
    camera video: the rendered face has no noise to remove, and x264's default preset costs
    ~6x superfast (``scripts/bench_encoders.py``)."""

    # static-thresh: a block that barely changed is skipped (its SAD under 300): the talking
    # face costs x0.85 (-0.08 dB), repeated frames while it listens x0.7 (-0.17 dB)
    vp8: dict[str, str] = {"noise-sensitivity": "0", "cpu-used": "-12", "static-thresh": "300"}
    h264: dict[str, str] = {"preset": "superfast"}


class AuthConfig(_Section):
    """Who may open a session: signed tokens (``avatar token``) and the pages' origins."""

    # auto: tokens are required when the server binds a non-loopback address
    require_token: Literal["auto", "always", "never"] = "auto"
    secret_file: str = ""  # the HMAC key (the AVATAR_SECRET environment variable wins)
    token_ttl_s: int = Field(default=3600, ge=1)  # lifetime of tokens minted by `avatar token`
    # pages on other origins allowed to call the server ("https://app.example.com"; "*" = any);
    # the server's own origin is always allowed, and clients that send no Origin (not browsers)
    allowed_origins: list[str] = []


class LimitsConfig(_Section):
    """What one client may cost the server: sizes, rates, buffered audio."""

    max_body_kb: int = Field(default=64, ge=1)  # POST /offer
    max_message_kb: int = Field(default=16, ge=1)  # data channel / events socket, both ways
    max_audio_message_kb: int = Field(default=64, ge=1)  # one binary message on /ws/audio
    max_audio_ahead_s: float = Field(default=4.0, gt=0)  # PCM buffered ahead of playout
    say_queue: int = Field(default=8, ge=1)  # `say` texts waiting to be spoken per session
    max_candidates: int = Field(default=64, ge=1)  # ICE candidates per session (SDP + trickle)
    max_media_sections: int = Field(default=6, ge=2)
    offers_per_minute: float = Field(default=30.0, gt=0)  # per client address
    offer_burst: int = Field(default=10, ge=1)
    # POST /v1/renders per client address: a content pipeline submits hundreds at once
    jobs_per_minute: float = Field(default=600.0, gt=0)
    job_burst: int = Field(default=200, ge=1)
    sockets_per_minute: float = Field(default=120.0, gt=0)  # /ws and /ws/audio per address
    messages_per_second: float = Field(default=50.0, gt=0)  # control messages per session
    engine_builds: int = Field(default=2, ge=1)  # engines built at once (off the event loop)
    whep_viewers: int = Field(default=2, ge=1)  # WHEP viewers per WHIP session (an encoder each)


class ClusterConfig(_Section):
    """Many machines (:mod:`avatar.cluster`): engine nodes registered in one Redis, offers placed
    on them by stateless gateways. With no ``redis`` the server is one machine, as always."""

    # single: one machine (as always); node: this server registered in the pool's Redis;
    # gateway: no sessions here, offers placed on the pool's nodes, their sockets relayed
    role: Literal["single", "node", "gateway"] = "single"
    redis: str = ""  # the pool's Redis, e.g. redis://host:6379/0 (node and gateway)
    prefix: str = "avatar:"  # every key of the registry starts with it (one Redis, many pools)
    node_id: str = ""  # "" = hostname-pid
    pool: str = Field(default="cpu", pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$")  # e.g. cpu, gpu
    advertise: str = ""  # how gateways reach this node's HTTP; "" = http://host:port
    heartbeat_s: float = Field(default=1.0, gt=0)  # the node's record and liveness refreshed
    alive_s: float = Field(default=3.0, gt=0)  # a node silent this long leaves placement
    hold_s: float = Field(default=10.0, gt=0)  # a gateway's slot on a node while it answers

    @model_validator(mode="after")
    def _consistent(self) -> ClusterConfig:
        if self.alive_s <= self.heartbeat_s:
            raise ValueError("cluster.alive_s must be longer than cluster.heartbeat_s")
        if self.role != "single" and not self.redis:
            raise ValueError(
                f"a {self.role} needs the pool's Redis: server.cluster.redis (--redis)"
            )
        return self


class ServerConfig(_Section):
    """``avatar serve``: HTTP/WebSocket signalling, ICE, limits, authentication."""

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    ice_servers: list[IceServer] = []  # none by default: no public STUN host is assumed
    ice_hosts: list[str] = []  # addresses to gather and offer; [] = every non-loopback one
    ice_public_ip: str | None = None  # replaces the host address in offered candidates (1:1 NAT)
    udp_ports: tuple[int, int] | None = None  # ICE sockets bind inside this range
    audio_jitter_packets: int = Field(default=0, ge=0, le=15)  # aiortc's stock buffer holds 4
    # the playout-delay RTP header extension on our video (min, max ms; Chrome honours it):
    # (0, 0) = render each frame as soon as it is decoded; None = do not negotiate it
    playout_delay_ms: tuple[int, int] | None = (0, 0)
    max_sessions: int = Field(default=8, ge=1)  # per process (per worker with ``workers`` > 1)
    # processes holding sessions: 1 = this process alone; N or "auto" (one per CPU) = a front
    # process (HTTP, routing) and N worker processes (docs/deploy.md)
    workers: int | Literal["auto"] = 1
    stats_interval_s: float = Field(default=1.0, gt=0)
    web_dir: str = ""  # the JS client and pages; "" = the package's own (avatar/web)
    profile: bool = False  # per-frame stage timing; live numbers and overlay on the page
    # TURN with coturn's shared secret (use-auth-secret): the page gets short-lived credentials
    # from GET /api/ice; the secret is read from the AVATAR_TURN_SECRET environment variable
    turn_urls: list[str] = []  # e.g. ["turn:turn.example.com:3478?transport=udp"]
    turn_ttl_s: int = Field(default=3600, ge=60)
    reap_s: float = Field(default=8.0, ge=2)  # a connected peer silent this long is gone
    drain_s: float = Field(default=30.0, ge=0)  # on SIGTERM: sessions may finish this long
    log_format: Literal["text", "json"] = "text"
    encoder: EncoderConfig = EncoderConfig()
    auth: AuthConfig = AuthConfig()
    limits: LimitsConfig = LimitsConfig()
    cluster: ClusterConfig = ClusterConfig()

    @field_validator("workers")
    @classmethod
    def _workers_ok(cls, v: int | str) -> int | str:
        if isinstance(v, int) and v < 1:
            raise ValueError('workers must be at least 1, or "auto" (one per CPU)')
        return v


class RendersConfig(_Section):
    """Render jobs (``/v1/renders``, ``avatar worker``; docs/renders.md): text or audio in, a
    finished video out. With no Redis the jobs run in the serving process, one at a time, and
    results go to a local folder; with ``redis`` they are queued for ``avatar worker``s."""

    redis: str = ""  # "" = jobs run in this process; redis://host:6379/0 = queued (arq)
    store: str = "renders"  # a local folder, or s3://bucket[/prefix] (docs/renders.md)
    s3_endpoint: str = ""  # e.g. http://127.0.0.1:8333; "" = AWS; keys from AWS_* variables
    url_ttl_s: int = Field(default=3600, ge=60)  # presigned result URLs (S3 store)
    job_timeout_s: float = Field(default=900.0, gt=0)  # one try of one job
    max_tries: int = Field(default=3, ge=1)  # a worker that dies mid-job: the job runs again
    max_queued: int = Field(default=1000, ge=1)  # jobs waiting; past it: 503 + Retry-After
    max_text_chars: int = Field(default=5000, ge=1)
    max_audio_mb: float = Field(default=50.0, gt=0)  # an upload or a fetched audio_url
    max_audio_s: float = Field(default=600.0, gt=0)  # longest input speech
    fetch_timeout_s: float = Field(default=10.0, gt=0)  # audio_url: the whole download
    allow_private_urls: bool = False  # audio_url / webhook_url on loopback or private networks
    max_size: int = Field(default=1024, ge=64, le=2048)  # largest video side a job may ask
    keep_days: float = Field(default=7.0, gt=0)  # job records (Redis) live this long


class Config(_Section):
    vad: VadConfig = VadConfig()
    features: FeatureConfig = FeatureConfig()
    motion: MotionConfig = MotionConfig()
    render: RenderConfig = RenderConfig()
    engine: EngineConfig = EngineConfig()
    server: ServerConfig = ServerConfig()
    renders: RendersConfig = RendersConfig()


def _set_dotted(tree: dict[str, Any], key: str, raw: str) -> None:
    parts = key.split(".")
    node = tree
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {key!r}: {p!r} is not a section")
    node[parts[-1]] = yaml.safe_load(raw)


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load ``path`` (default: the bundled ``avatar/configs/default.yaml``) and apply
    ``key=value`` overrides."""
    tree: dict[str, Any] = {}
    src = Path(path) if path else DEFAULT_CONFIG
    if src.exists():
        text = src.read_text()  # JSON: what a front writes for its workers (exact floats)
        loaded = (json.loads(text) if src.suffix == ".json" else yaml.safe_load(text)) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{src}: expected a mapping at the top level")
        tree = loaded
    elif path:
        raise ConfigError(f"config file not found: {src}")
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like section.key=value")
        key, raw = item.split("=", 1)
        _set_dotted(tree, key.strip(), raw)
    try:
        return Config.model_validate(tree)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(x) for x in first["loc"])
        raise ConfigError(f"config {where}: {first['msg']}") from None
