"""One exception hierarchy for the engine; front-ends turn it into a one-line message."""


class RollingDepthError(Exception):
    """Base class of every error the engine raises on purpose."""


class ConfigError(RollingDepthError):
    """A setting is out of range or inconsistent with another."""


class InputError(RollingDepthError):
    """The plate cannot be read: missing, undecodable, too short, mixed sizes."""


class OutputError(RollingDepthError):
    """The output cannot be written: unwritable folder, failed EXR write."""


class WeightsError(RollingDepthError):
    """The checkpoint cannot be found, downloaded or loaded."""


class DeviceError(RollingDepthError):
    """The requested device or dtype is not available here."""


class Cancelled(RollingDepthError):
    """The user (Ctrl-C, a Cancel button) or a progress callback stopped the run."""


class NonFiniteDepth(RollingDepthError):
    """The model produced NaN or infinite depth (half precision overflowing, usually)."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(
            message or "the model produced non-finite depth; with fp16 try `--dtype bf16` or `fp32`"
        )
