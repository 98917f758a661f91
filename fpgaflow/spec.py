"""The Experiment spec: the one source of truth for the user's API.

The CRD's openAPIV3Schema and the CLI's JSON schema are generated from these models
(``fpgaflow.schema``), and the reference in the docs follows them. Field names are camelCase in
manifests and snake_case in Python.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from fpgaflow.errors import SpecError

API_VERSION = "fpgaflow.io/v1alpha1"
KIND = "Experiment"
TARGETS = ("cpu", "gpu", "fpga")

_ROUNDING = "RND|RND_ZERO|RND_MIN_INF|RND_INF|RND_CONV|TRN|TRN_ZERO"
_SATURATION = "SAT|SAT_ZERO|SAT_SYM|WRAP|WRAP_SM"
PRECISION_PATTERN = (
    rf"^(ap_u?fixed<\s*\d+\s*,\s*-?\d+\s*(,\s*AP_({_ROUNDING})\s*)?(,\s*AP_({_SATURATION})\s*)?(,\s*\d+\s*)?>"
    r"|ap_u?int<\s*\d+\s*>)$"
)


def _check_precision(value: str) -> str:
    width = int(re.search(r"<\s*(\d+)", value).group(1))
    if not 1 <= width <= 64:
        raise ValueError(f"total width {width} of {value!r} is outside 1..64 bits")
    return value.replace(" ", "")


Precision = Annotated[
    str,
    Field(
        pattern=PRECISION_PATTERN,
        description="An HLS type: ap_fixed<W,I[,AP_<rounding>[,AP_<saturation>]]>, ap_ufixed<...>, ap_int<W>, ap_uint<W>.",
        examples=["ap_fixed<16,6>", "ap_fixed<8,3,AP_RND,AP_SAT>"],
    ),
    AfterValidator(_check_precision),
]


class _Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True, validate_default=True
    )


class DatasetSpec(_Model):
    """Where the data comes from and how it is split."""

    name: Literal["jets", "digits"] = Field(
        "jets",
        description="jets: the hls4ml LHC jet data set (16 features, 5 classes), generated synthetically "
        "where no file is given (always labelled synthetic); digits: scikit-learn's bundled 8x8 digits.",
    )
    samples: int = Field(200_000, ge=100, le=10_000_000, description="Jets to generate (jets only).")
    test_fraction: float = Field(0.2, gt=0, lt=1, description="Fraction held out as the test set.")
    seed: int = Field(42, ge=0, description="Seed of the generator and of the split.")


class ModelSpec(_Model):
    """The Keras network."""

    type: Literal["mlp"] = Field("mlp", description="mlp: dense layers with an activation, softmax output.")
    layers: list[Annotated[int, Field(ge=1, le=4096)]] = Field(
        default_factory=lambda: [64, 32, 32], min_length=1, max_length=16, description="Hidden layer widths."
    )
    activation: Literal["relu", "tanh", "sigmoid"] = "relu"
    l1: float = Field(1e-4, ge=0, description="L1 regularization of the kernels.")

    def layer_names(self) -> list[str]:
        """Names of the Keras layers the trainer builds, which per-layer HLS overrides may name."""
        hidden = [n for i in range(len(self.layers)) for n in (f"fc{i + 1}", f"{self.activation}{i + 1}")]
        return [*hidden, "output", "softmax"]


class EarlyStoppingSpec(_Model):
    patience: int = Field(5, ge=1, description="Epochs without improvement of the validation loss.")


class TrainSpec(_Model):
    """Float training."""

    epochs: int = Field(10, ge=1, le=10_000)
    batch_size: int = Field(1024, ge=1)
    learning_rate: float = Field(1e-3, gt=0, le=10)
    validation_fraction: float = Field(0.1, gt=0, lt=1, description="Fraction of the training set used for validation.")
    early_stopping: EarlyStoppingSpec | None = None


class LayerPrecisionSpec(_Model):
    weight: Precision | None = None
    bias: Precision | None = None
    result: Precision | None = None
    accum: Precision | None = None


class LayerHLSSpec(_Model):
    """Per-layer overrides of the model-wide HLS settings."""

    precision: LayerPrecisionSpec | None = None
    reuse_factor: int | None = Field(None, ge=1)
    strategy: Literal["Latency", "Resource"] | None = None
    table_size: int | None = Field(
        None, ge=64, le=65536, description="Entries of an activation's lookup tables (softmax: 4096 by default)."
    )

    @field_validator("table_size")
    @classmethod
    def _power_of_two(cls, size: int | None) -> int | None:
        if size is not None and size & (size - 1):
            raise ValueError(f"must be a power of two, got {size}")
        return size


class HLSSpec(_Model):
    """How hls4ml converts the model."""

    backend: Literal["Vitis", "Vivado"] = "Vitis"
    part: str = Field("xcu250-figd2104-2L-e", min_length=1, description="FPGA part number.")
    clock_period: float = Field(5.0, gt=0, le=1000, description="Clock period in ns.")
    io_type: Literal["io_parallel", "io_stream"] = "io_parallel"
    precision: Precision = Field(
        "ap_fixed<16,6>",
        description="Type of every layer's weights, biases and results; accumulators are sized by hls4ml to be exact.",
    )
    reuse_factor: int = Field(1, ge=1, le=4096, description="Multiplications per multiplier; 1 is fully parallel.")
    strategy: Literal["Latency", "Resource"] = "Latency"
    layers: dict[str, LayerHLSSpec] = Field(default_factory=dict, description="Per-layer overrides, by Keras layer name.")
    min_agreement: float = Field(
        0.95,
        ge=0,
        le=1,
        description="The conversion fails when the emulation's argmax agrees with the float model's on less than this fraction of the test set.",
    )


class ServeSpec(_Model):
    targets: list[Literal["cpu", "gpu", "fpga"]] = Field(
        default_factory=lambda: ["cpu", "gpu", "fpga"], min_length=1, description="Back ends to serve the model from."
    )

    @field_validator("targets")
    @classmethod
    def _unique(cls, targets: list[str]) -> list[str]:
        if len(set(targets)) != len(targets):
            raise ValueError(f"targets must not repeat, got {targets}")
        return targets


class BenchmarkSpec(_Model):
    concurrency: list[Annotated[int, Field(ge=1, le=256)]] = Field(
        default_factory=lambda: [1, 4, 16, 50], min_length=1, description="Numbers of concurrent client processes to scan."
    )
    requests_per_client: int = Field(2000, ge=1, le=1_000_000, description="Requests each client sends one after another.")
    batch_size: int = Field(1, ge=1, le=65536, description="Samples per request.")
    warmup: int = Field(20, ge=0, description="Requests each client sends before timing starts.")


SweepValue = int | float | str | bool | list[int]  # a list sweeps model.layers


class SweepSpec(_Model):
    mode: Literal["grid", "random"] = Field("grid", description="grid: every combination; random: maxTrials drawn from the grid.")
    parallel_trials: int = Field(1, ge=1, le=64, description="Trials that run at once.")
    max_trials: int | None = Field(None, ge=1, description="Upper bound on the trials; a larger grid is refused.")
    seed: int = Field(0, ge=0, description="Seed of the random mode.")
    parameters: dict[str, list[SweepValue]] = Field(
        min_length=1, description="Dotted spec field (hls.reuseFactor) to the list of values it takes."
    )

    @field_validator("parameters")
    @classmethod
    def _non_empty(cls, params: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for key, values in params.items():
            if not values:
                raise ValueError(f"{key} has no values")
            if key.split(".")[0] in ("sweep", "serve", "benchmark"):
                raise ValueError(f"{key} cannot be swept (only dataset, model, train and hls fields)")
        return params


class ExperimentSpec(_Model):
    dataset: DatasetSpec = Field(default_factory=DatasetSpec)
    model: ModelSpec = Field(default_factory=ModelSpec)
    train: TrainSpec = Field(default_factory=TrainSpec)
    hls: HLSSpec = Field(default_factory=HLSSpec)
    serve: ServeSpec = Field(default_factory=ServeSpec)
    benchmark: BenchmarkSpec = Field(default_factory=BenchmarkSpec)
    sweep: SweepSpec | None = None

    @model_validator(mode="after")
    def _layer_overrides_exist(self) -> ExperimentSpec:
        known = self.model.layer_names()
        unknown = [name for name in self.hls.layers if name not in known]
        if unknown:
            raise ValueError(
                f"hls.layers names {', '.join(map(repr, unknown))}, which the model does not have; "
                f"its layers are {', '.join(known)}"
            )
        return self


class Metadata(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)
    name: str = Field(
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
        max_length=40,
        description="Lower-case letters, digits and '-', as Kubernetes names require.",
    )
    namespace: str | None = None


class Experiment(BaseModel):
    """A whole manifest, as ``kubectl apply`` and ``fpgaflow run`` take it."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    api_version: Literal["fpgaflow.io/v1alpha1"] = Field(API_VERSION, alias="apiVersion")
    kind: Literal["Experiment"] = KIND
    metadata: Metadata
    spec: ExperimentSpec = Field(default_factory=ExperimentSpec)
    status: dict[str, Any] | None = Field(None, description="Written by fpgaflow; ignored on input.")

    @property
    def name(self) -> str:
        return self.metadata.name


# --------------------------------------------------------------------------- loading and errors


_UNION_TAGS = {"int", "float", "str", "bool", "none"}


def _field_path(loc: tuple) -> str:
    """pydantic's error location as a manifest path: spec.serve.targets[0]."""
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif "[" in str(part) or part in _UNION_TAGS:
            continue  # a union member's label (literal[...], function-after[...], int), not a field
        else:
            path += ("." if path else "") + str(part)
    return path


def _message(err: dict) -> str:
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        return "unknown field (not part of the Experiment spec)"
    if err["type"] == "string_pattern_mismatch" and "ap_" in err["ctx"].get("pattern", ""):
        return f"{err['input']!r} is not an HLS type; use ap_fixed<W,I>, ap_ufixed<W,I>, ap_int<W> or ap_uint<W>"
    if "input" in err and err["type"] not in ("missing",) and not isinstance(err["input"], dict | list):
        msg += f" (got {err['input']!r})"
    return msg


def problems_from(exc: ValidationError) -> list[tuple[str, str]]:
    seen: dict[str, str] = {}
    for err in exc.errors():
        seen.setdefault(_field_path(err["loc"]), _message(err))
    return list(seen.items())


def parse_experiment(doc: Any, source: str = "manifest") -> Experiment:
    """Validate a manifest already parsed from YAML/JSON. Raises SpecError naming each bad field."""
    if not isinstance(doc, dict):
        raise SpecError([("", f"expected a mapping with apiVersion, kind, metadata and spec, got {type(doc).__name__}")], source)
    try:
        return Experiment.model_validate(doc)
    except ValidationError as exc:
        raise SpecError(problems_from(exc), source) from None


def load_experiment(path: str | Path) -> Experiment:
    """Read and validate a manifest file (YAML or JSON)."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise SpecError([("", f"cannot read {path}: {exc.strerror}")], str(path)) from None
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        raise SpecError([("", f"not valid YAML: {exc}")], str(path)) from None
    if len(docs) != 1:
        raise SpecError([("", f"expected one Experiment document, found {len(docs)}")], str(path))
    return parse_experiment(docs[0], str(path))


def spec_to_dict(spec: ExperimentSpec) -> dict:
    """The spec as a manifest would write it (camelCase, every default filled in)."""
    return spec.model_dump(mode="json", by_alias=True)


def spec_hash(spec: ExperimentSpec) -> str:
    return hashlib.sha256(json.dumps(spec_to_dict(spec), sort_keys=True).encode()).hexdigest()[:16]
