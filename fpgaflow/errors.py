"""The one exception hierarchy of fpgaflow.

Each boundary maps it once: the CLI to an exit code and a one-line message, the gRPC servers to a
status code (``fpgaflow_inference.interceptor``), the stage wrapper to ``error.json``.
"""

from __future__ import annotations


class FpgaflowError(Exception):
    """Base of every error fpgaflow raises on purpose. ``reason`` is a short CamelCase word."""

    reason = "Error"
    exit_code = 1

    def __init__(self, message: str = "", *, reason: str | None = None):
        super().__init__(message)
        if reason is not None:
            self.reason = reason


class SpecError(FpgaflowError):
    """A manifest or spec that is wrong; ``problems`` lists (field path, message) pairs."""

    reason = "InvalidSpec"
    exit_code = 2

    def __init__(self, problems: list[tuple[str, str]], source: str = "manifest"):
        self.problems = problems
        self.source = source
        lines = [f"{field}: {message}" if field else message for field, message in problems]
        super().__init__(f"{source} is invalid: " + "; ".join(lines))


class StageError(FpgaflowError):
    """A stage could not do its work (missing input, failed tool)."""

    reason = "StageFailed"


class MissingArtifact(StageError):
    reason = "MissingArtifact"


class FidelityError(StageError):
    """The converted model does not compute what the float model computes."""

    reason = "FidelityCheckFailed"


class Diverged(StageError):
    """Training was stopped by a diagnostic (NaN/Inf, divergence, dead ReLUs); its last good checkpoint is kept."""

    reason = "Diverged"


class PreconditionFailed(StageError):
    """The host cannot run the stage as the spec asks (disk, memory, GPU, expected duration); names the shortfall."""

    reason = "PreconditionFailed"


class TargetUnavailable(FpgaflowError):
    """A serving target cannot run here (no GPU, say). Never faked with another device."""

    reason = "Unavailable"
    exit_code = 3


class StaleResult(FpgaflowError):
    """A finished result would be overwritten by a different spec."""

    reason = "ResultExists"
    exit_code = 2


class RequestError(FpgaflowError):
    """A bad inference request (mapped to INVALID_ARGUMENT)."""

    reason = "InvalidArgument"


class ModelNotFound(FpgaflowError):
    """An inference request for a model this server does not serve (mapped to NOT_FOUND)."""

    reason = "NotFound"


class ShuttingDown(FpgaflowError):
    """A request that arrived after the server began to shut down (mapped to UNAVAILABLE: retry elsewhere)."""

    reason = "ShuttingDown"


class Unsupported(FpgaflowError):
    """A call this server does not implement (mapped to UNIMPLEMENTED)."""

    reason = "Unimplemented"


class ConfigError(FpgaflowError):
    """Settings that cannot work together (a TLS certificate without its key, pacing without a timing model)."""

    reason = "InvalidSettings"
    exit_code = 2


class NotInstalled(FpgaflowError):
    """A command or back end whose service distribution is not installed in this environment."""

    reason = "NotInstalled"
    exit_code = 2


class NotFound(FpgaflowError):
    """An experiment, trial or log that does not exist where it was asked for."""

    reason = "NotFound"
    exit_code = 2


class AlreadyQueued(FpgaflowError):
    """An experiment submitted while one of the same name is queued or running."""

    reason = "AlreadyQueued"
    exit_code = 2


class StoreFull(FpgaflowError):
    """The run store's file system has no room: nothing new is accepted (and nothing stored is harmed)."""

    reason = "DiskFull"


class Unauthenticated(FpgaflowError):
    """A call to `fpgaflow server` without its token or a client certificate it trusts."""

    reason = "Unauthenticated"
    exit_code = 4


class ServerUnavailable(FpgaflowError):
    """`fpgaflow server` cannot be reached (not started, or another address)."""

    reason = "Unavailable"
    exit_code = 3
