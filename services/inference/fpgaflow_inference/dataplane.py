"""The data plane both protocols share: which model a request names, whether the server takes
requests, and the call into the model. Servicers translate protos to these calls and back."""

from __future__ import annotations

import enum
import time

import numpy as np

from fpgaflow.errors import ModelNotFound, RequestError, ShuttingDown
from fpgaflow_inference.model import ServedModel


class State(enum.Enum):
    STARTING = "starting"
    SERVING = "serving"
    DRAINING = "draining"  # SIGTERM: unready, in-flight requests finish, new ones are refused


class DataPlane:
    """The versions of one model (each a ServedModel), what the server's state lets through, and the counts."""

    def __init__(self, models: ServedModel | list[ServedModel]):
        models = [models] if isinstance(models, ServedModel) else models
        self.models = {model.version: model for model in models}
        self.state = State.STARTING
        self.accepted = self.answered = self.refused = 0  # since start; refused: arrived while draining
        self.last_arrival = float("-inf")  # time.monotonic() of the latest prediction request, accepted or not

    @property
    def active(self) -> int:
        """Predictions accepted and not yet answered."""
        return self.accepted - self.answered

    @property
    def model(self) -> ServedModel:
        """The latest version: what a request that names no version gets."""
        return self.models[max(self.models)]

    @property
    def versions(self) -> str:
        return ", ".join(map(str, sorted(self.models)))

    @property
    def ready(self) -> bool:
        return self.state is State.SERVING

    def resolve(self, name: str, version: int | None = None, label: str = "") -> ServedModel:
        """TF Serving's rules: the name must match; no version means the latest; a version that is not
        loaded is NOT_FOUND; a label must be one the server assigns (this one assigns none)."""
        model = self.model
        if name != model.name:
            raise ModelNotFound(f"model {name!r} is not served here; this server serves {model.name!r}")
        if label:
            raise RequestError(f"version label {label!r} is not assigned; this server assigns no labels "
                               f"(versions: {self.versions})")
        if version is None:
            return model
        if version not in self.models:
            raise ModelNotFound(f"model {name!r} has no version {version}; loaded versions: {self.versions}")
        return self.models[version]

    def resolve_v2(self, name: str, version: str) -> ServedModel:
        """The v2 protocol names the version as a string; empty means the server's choice."""
        if version == "":
            return self.resolve(name)
        try:
            number = int(version)
        except ValueError:
            raise ModelNotFound(f"model {name!r} has no version {version!r}; loaded versions: {self.versions}") from None
        return self.resolve(name, number)

    def select_v2(self, name: str, version: str) -> list[ServedModel]:
        """Triton's statistics rule: an empty name means every model (this server has one), an empty
        version every version; otherwise the model and version must exist, as for resolve_v2."""
        name = name or self.model.name
        if version == "":
            self.resolve(name)  # the name must match
            return [self.models[number] for number in sorted(self.models)]
        return [self.resolve_v2(name, version)]

    def check_accepting(self) -> None:
        self.last_arrival = time.monotonic()
        if self.state is not State.SERVING:
            self.refused += 1
            raise ShuttingDown("the server is shutting down and takes no new requests; retry on another replica"
                               if self.state is State.DRAINING else "the server is still starting")

    async def predict(self, model: ServedModel, x: np.ndarray) -> np.ndarray:
        """The model's answer; a request accepted here is answered (with its result or its error) even
        when shutdown begins meanwhile."""
        self.check_accepting()
        self.accepted += 1
        try:
            return await model.predict(x)
        finally:
            self.answered += 1
