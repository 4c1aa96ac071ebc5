"""The package's error hierarchy. A user's mistake gets a message that says what to do."""


class AvatarError(Exception):
    """Base class for every error this package raises on purpose."""


class ConfigError(AvatarError):
    """A configuration file or override is invalid."""


class AudioInputError(AvatarError):
    """Audio that cannot be used: not audio, empty, unsupported layout, corrupt."""


class ModelError(AvatarError):
    """A model file is missing, corrupt, or does not match the code."""


class BackendUnavailable(AvatarError):
    """An inference backend cannot run here (library or device missing)."""


class FestivalError(AvatarError):
    """Festival is missing, a voice is unknown, or a synthesis run failed."""


class HumanSpeechError(AvatarError):
    """No human recordings or no aligner is available, or an alignment failed."""


class ImageInputError(AvatarError):
    """An image file that cannot be used: not an image, truncated, too large."""


class FaceError(AvatarError):
    """No usable face: none found, more than one, or too small."""


class AvatarNotFound(AvatarError):
    """An avatar name or folder that does not exist or is incomplete."""


class MediaError(AvatarError):
    """A public media file cannot be fetched, read, or does not match its checksum."""


class RequestError(AvatarError):
    """A client's mistake in an HTTP request or socket message: answered with
    ``{"error": message}`` and this HTTP status (and ``Retry-After`` when given)."""

    def __init__(self, message: str, status: int = 400, retry_after_s: float | None = None):
        super().__init__(message)
        self.status, self.retry_after_s = status, retry_after_s


class HookError(AvatarError):
    """aiortc or aioice changed underneath one of our hooks (:mod:`avatar.server.aiortc_hooks`)."""


class TextError(AvatarError):
    """Text that cannot be spoken: empty, too long, control characters, an unknown voice."""
