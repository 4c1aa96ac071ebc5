"""What a client may ask of a render job, checked before anything is queued.

``POST /v1/renders`` takes JSON (``text`` or ``audio_url``) or ``multipart/form-data`` (an
``audio`` file and the same fields as form fields). Every check here is a 4xx with one sentence:
an unknown avatar or voice, fps outside :data:`FPS_CHOICES`, a size above ``renders.max_size``,
text that cannot be spoken, none or two of the inputs.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from avatar.config import RendersConfig
from avatar.data.tts import check_voice, clean_text
from avatar.errors import AvatarError, RequestError
from avatar.face.store import builtin_names, resolve_avatar

FPS_CHOICES = (24, 25, 30, 50, 60)


class RenderRequest(BaseModel):
    """One job's inputs and options (``audio`` uploads are not a field: they become the job's
    input file)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    text: str | None = None
    audio_url: str | None = None
    avatar: str | None = None  # a bundled avatar; None = the server's default
    renderer: Literal["warp", "gan"] | None = None  # None = the server's default
    size: int | None = Field(default=None, ge=64)  # video side; None = the renderer's own
    fps: int = 25
    voice: str | None = None  # text only: a local TTS voice (avatar.data.tts.VOICES)
    format: Literal["mp4", "webm"] = "mp4"
    webhook_url: str | None = None  # POSTed (signed) when the job ends


def parse_request(fields: dict[str, object]) -> RenderRequest:
    """``fields`` as a :class:`RenderRequest`, or a 422 naming the first bad field."""
    try:
        return RenderRequest.model_validate(fields)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(x) for x in first["loc"]) or "body"
        raise RequestError(f"{where}: {first['msg']}", 422) from None


def check_request(req: RenderRequest, cfg: RendersConfig, uploaded: bool, avatar: str) -> str:
    """Refuse what cannot be rendered; returns the avatar to use (``avatar``: the default)."""
    inputs = [name for name, given in
              (("text", req.text is not None), ("audio_url", req.audio_url is not None),
               ("audio", uploaded)) if given]  # fmt: skip
    if len(inputs) != 1:
        raise RequestError("give exactly one of text, audio_url or an audio upload"
                           + (f" (got {', '.join(inputs)})" if inputs else ""), 422)  # fmt: skip
    if req.fps not in FPS_CHOICES:
        raise RequestError(f"fps {req.fps}: choose one of {FPS_CHOICES}", 422)
    if req.size is not None and req.size > cfg.max_size:
        raise RequestError(f"size {req.size}: at most {cfg.max_size}", 422)
    if req.text is not None:
        try:
            clean_text(req.text, cfg.max_text_chars)
            check_voice(req.voice)
        except AvatarError as e:
            status = 413 if len(req.text) > cfg.max_text_chars else 422
            raise RequestError(str(e), status) from None
    elif req.voice is not None:
        raise RequestError("voice is for text; audio is rendered as it is", 422)
    name = _avatar(req.avatar, avatar)
    if req.renderer == "gan" and not (resolve_avatar(name) / "gan.onnx").exists():
        raise RequestError(f"avatar {name!r} has no GAN (one is trained from a video of the "
                           "person): use renderer warp", 422)  # fmt: skip
    return name


def _avatar(asked: str | None, default: str) -> str:
    name = asked or default
    if name not in builtin_names() and name != default:
        raise RequestError(f"unknown avatar {name[:60]!r}: choose one of "
                           f"{', '.join(builtin_names())}", 404)  # fmt: skip
    try:
        resolve_avatar(name)
    except AvatarError as e:
        raise RequestError(str(e), 404) from None
    return name
