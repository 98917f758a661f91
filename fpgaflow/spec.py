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
from typing import Annotated, Any, Final, Literal, get_args

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
from pydantic_core import ErrorDetails

from fpgaflow.errors import SpecError

API_VERSION: Final = "fpgaflow.io/v1alpha1"
GROUP: Final = API_VERSION.split("/")[0]
# the labels of what the operator makes for an Experiment: its experiment and trial, and the stage (a Job) or
# the serving target (a server) it is for
LABEL_EXPERIMENT, LABEL_TRIAL, LABEL_STAGE, LABEL_TARGET = (f"{GROUP}/{k}" for k in ("experiment", "trial", "stage",
                                                                                    "target"))
KIND: Final = "Experiment"
Target = Literal["cpu", "gpu", "fpga"]
TARGETS: tuple[Target, ...] = get_args(Target)
NotifyEvent = Literal["Succeeded", "Failed", "Diverged"]
NOTIFY_EVENTS: tuple[NotifyEvent, ...] = get_args(NotifyEvent)

_ROUNDING = "RND|RND_ZERO|RND_MIN_INF|RND_INF|RND_CONV|TRN|TRN_ZERO"
_SATURATION = "SAT|SAT_ZERO|SAT_SYM|WRAP|WRAP_SM"
PRECISION_PATTERN = (
    rf"^(ap_u?fixed<\s*\d+\s*,\s*-?\d+\s*(,\s*AP_({_ROUNDING})\s*)?(,\s*AP_({_SATURATION})\s*)?(,\s*\d+\s*)?>"
    r"|ap_u?int<\s*\d+\s*>)$"
)


def _check_precision(value: str) -> str:
    match = re.search(r"<\s*(\d+)", value)
    assert match is not None  # PRECISION_PATTERN has matched before this validator runs
    width = int(match.group(1))
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


SIMULATED_DATASETS = ("jets", "jet-images")
PT_RANGE_GEV = {"jets": (800.0, 1200.0), "jet-images": (550.0, 650.0)}  # the public data sets' windows


class SimulationSpec(_Model):
    """How jets are simulated where no file is given: Pythia 8 (pp at 13 TeV) and FastJet (anti-kT, R = 0.8)."""

    seed: int = Field(
        1, ge=0, lt=900_000_000,
        description="Seed of the simulation (each chunk of jets gets a Pythia seed derived from it). Apart from "
        "the dataset's seed, which draws the split: trials that vary only that share one simulated set.",
    )
    pt_range: list[float] | None = Field(
        None, min_length=2, max_length=2,
        description="The jets' pT window in GeV [low, high]. Default: 800-1200 for jets (the hls4ml jet data set's, "
        "around 1 TeV), 550-650 for jet-images (the top-tagging data set's).",
    )

    @field_validator("pt_range")
    @classmethod
    def _window(cls, value: list[float] | None) -> list[float] | None:
        if value is not None and not 100 <= value[0] < value[1] <= 6500:
            raise ValueError(f"ptRange {value} is not a window [low, high] with 100 <= low < high <= 6500 GeV")
        return value


class DatasetSpec(_Model):
    """Where the data comes from and how it is split."""

    name: Literal["jets", "jet-images", "digits", "mnist", "fashion-mnist"] = Field(
        "jets",
        description="jets: the 16 high-level features of the hls4ml jet-tagging data set (5 classes: g, q, w, z, "
        "t), read from `path`, or else simulated with Pythia 8 and FastJet (no detector simulation) and cached; "
        "jet-images: top versus QCD jet images (the top-tagging data set's recipe), simulated likewise; digits: "
        "scikit-learn's bundled 8x8 digits; mnist, fashion-mnist: 28x28 images from the idx (or idx.gz) files in "
        "the folder `path`.",
    )
    path: str | None = Field(
        None,
        min_length=1,
        description="jets: an OpenML ARFF or CSV file of hls4ml_lhc_jets_hlf, .npy/.npz, or HDF5 with the 16 "
        "feature columns and one-hot labels (preferred to simulation when given); mnist/fashion-mnist: the folder "
        "of the four idx files. Read where the trainer runs (a path in its volume in a cluster); nothing is "
        "downloaded.",
    )
    samples: int = Field(
        20_000, ge=100, le=10_000_000,
        description="Jets to simulate (jets, jet-images without a path), balanced over the classes. Pythia and "
        "FastJet make about 50 jets per second per core; a set is made once and then read from the cache.",
    )
    simulation: SimulationSpec = Field(default_factory=SimulationSpec)
    image_size: int = Field(32, ge=8, le=64, description="jet-images: pixels on each side of an image.")
    align_images: bool = Field(
        True,
        description="jet-images: rotate each image so that the principal axis of its pT is vertical and flip it "
        "so that the upper and right halves hold more pT (the top-tagging data set's preprocessing).",
    )
    max_samples: int | None = Field(None, ge=100, description="Use at most this many samples of a file (a random subset from the seed).")
    test_fraction: float = Field(0.2, gt=0, lt=1, description="Fraction held out as the test set.")
    seed: int = Field(42, ge=0, description="Seed of the split (and of maxSamples' subset).")

    @model_validator(mode="after")
    def _files_where_needed(self) -> DatasetSpec:
        if self.name in ("mnist", "fashion-mnist") and self.path is None:
            raise ValueError(f"{self.name} needs path: the folder of its idx files (fpgaflow downloads nothing)")
        if self.name in ("digits", "jet-images") and self.path is not None:
            raise ValueError(f"{self.name} is {'bundled' if self.name == 'digits' else 'simulated'} and takes no path")
        return self

    @property
    def simulated(self) -> bool:
        return self.name in SIMULATED_DATASETS and self.path is None

    @property
    def pt_range(self) -> tuple[float, float]:
        low, high = self.simulation.pt_range or PT_RANGE_GEV[self.name]
        return float(low), float(high)


# The layers of a model's featurizer are named feat_*: model.featurizer transfers them, freezeFeaturizer freezes them,
# quantize.retrainHead retrains the layers after them (the classifier head).
FEATURIZER_PREFIX = "feat_"


class ModelSpec(_Model):
    """The Keras network."""

    type: Literal["mlp", "cnn", "resnet", "binary", "keras"] = Field(
        "mlp",
        description="mlp: dense layers with an activation, softmax output; cnn: Conv2D blocks then dense layers "
        "(image data sets); resnet: a residual convolutional featurizer plus a dense classifier head, optionally "
        "transferred from `featurizer` and frozen; binary: a binarized MLP (weights and activations +-1) for the "
        "BNN export; keras: the user's .keras file at `path`.",
    )
    layers: list[Annotated[int, Field(ge=1, le=4096)]] = Field(
        default_factory=lambda: [64, 32, 32], min_length=1, max_length=16,
        description="Hidden dense layer widths (the classifier head of cnn and resnet).",
    )
    filters: list[Annotated[int, Field(ge=1, le=1024)]] = Field(
        default_factory=lambda: [8, 16], min_length=1, max_length=8,
        description="cnn, resnet: channels of each convolutional block (each block halves the image size).",
    )
    activation: Literal["relu", "tanh", "sigmoid"] = "relu"
    l1: float = Field(1e-4, ge=0, description="L1 regularization of the kernels.")
    path: str | None = Field(None, min_length=1, description="keras: the .keras file of the model to train.")
    featurizer: str | None = Field(
        None,
        min_length=1,
        description="resnet: a .keras file (an earlier trial's model.keras, say) whose featurizer layers "
        "(named feat_*) initialize this model's: transfer learning.",
    )
    freeze_featurizer: bool = Field(
        False, description="resnet: train only the classifier head; the featurizer's weights stay as loaded."
    )
    input_threshold: float | None = Field(
        None,
        description="binary: the raw input value from which an input is +1 (else -1), as BNN-PYNQ's LFC binarizes "
        "pixels; by default the middle of the training set's value range (127.5 for 0..255 pixels, LFC's rule).",
    )

    @model_validator(mode="after")
    def _fields_of_the_type(self) -> ModelSpec:
        if (self.type == "keras") != (self.path is not None):
            raise ValueError("path names the .keras file of type keras, and only of it")
        if self.type != "resnet" and (self.featurizer is not None or self.freeze_featurizer):
            raise ValueError(f"featurizer and freezeFeaturizer belong to type resnet, not {self.type}")
        if self.type != "binary" and self.input_threshold is not None:
            raise ValueError(f"inputThreshold belongs to type binary, not {self.type}")
        return self

    def layer_names(self) -> list[str] | None:
        """Names of the Keras layers the trainer builds, which per-layer HLS overrides may name
        (None for a user's .keras file, whose names are known only once it is read)."""
        if self.type == "keras":
            return None
        if self.type == "binary":
            hidden = [n for i in range(len(self.layers)) for n in (f"fc{i + 1}", f"bn{i + 1}", f"sign{i + 1}")]
            return ["binarize", *hidden, "output", "softmax"]
        hidden = [n for i in range(len(self.layers)) for n in (f"fc{i + 1}", f"{self.activation}{i + 1}")]
        if self.type == "cnn":
            convs = [n for i in range(len(self.filters)) for n in (f"conv{i + 1}", f"conv{i + 1}_{self.activation}", f"pool{i + 1}")]
            return [*convs, "flatten", *hidden, "output", "softmax"]
        if self.type == "resnet":
            blocks = [FEATURIZER_PREFIX + n for i in range(len(self.filters))
                      for n in (f"conv{i + 1}a", f"{self.activation}{i + 1}a", f"conv{i + 1}b", f"skip{i + 1}",
                                f"add{i + 1}", f"{self.activation}{i + 1}", f"pool{i + 1}")]
            return [*blocks, f"{FEATURIZER_PREFIX}flatten", *hidden, "output", "softmax"]
        return [*hidden, "output", "softmax"]


class EarlyStoppingSpec(_Model):
    patience: int = Field(5, ge=1, description="Epochs without improvement of the validation loss.")


class PruningSpec(_Model):
    """Magnitude pruning to a target sparsity on a polynomial schedule (Zhu and Gupta, 2017)."""

    target_sparsity: float = Field(description="Fraction of each kernel's weights set to zero at the end.", ge=0, lt=1)
    begin_epoch: int = Field(0, ge=0, description="First epoch (0-based) that prunes.")
    end_epoch: int | None = Field(
        None, ge=1, description="Epoch (0-based) from which the target sparsity holds; the last float epoch by default."
    )
    layers: list[str] | None = Field(None, description="Names of the layers to prune; every Dense and Conv2D kernel by default.")

    @model_validator(mode="after")
    def _ordered(self) -> PruningSpec:
        if self.end_epoch is not None and self.end_epoch <= self.begin_epoch:
            raise ValueError(f"endEpoch {self.end_epoch} must come after beginEpoch {self.begin_epoch}")
        return self


class DiagnosticsSpec(_Model):
    """Thresholds of the checks that stop a run early with reason Diverged."""

    divergence_factor: float = Field(10.0, gt=1, description="Validation loss this many times its best so far.")
    dead_relu_fraction: float = Field(0.9, gt=0, le=1, description="Fraction of a ReLU layer's units silent on every probe sample.")
    max_gradient_norm: float = Field(1e4, gt=0, description="Global gradient norm (on a probe batch) above which gradients have exploded.")
    plateau_epochs: int = Field(
        10, ge=0, description="Stop when the training loss has not improved by plateauTolerance over this many epochs (0: off)."
    )
    plateau_tolerance: float = Field(1e-4, ge=0, description="Relative improvement of the training loss that counts as progress.")


class TrainSpec(_Model):
    """Float training."""

    epochs: int = Field(10, ge=1, le=10_000)
    batch_size: int = Field(1024, ge=1)
    learning_rate: float = Field(1e-3, gt=0, le=10)
    validation_fraction: float = Field(0.1, gt=0, lt=1, description="Fraction of the training set used for validation.")
    early_stopping: EarlyStoppingSpec | None = None
    pruning: PruningSpec | None = None
    diagnostics: DiagnosticsSpec = Field(default_factory=DiagnosticsSpec)
    command: list[Annotated[str, Field(min_length=1)]] | None = Field(
        None,
        min_length=1,
        description="Run this program (argv) as the training stage instead of the Keras trainer: a PyTorch, JAX "
        "or plain-Python script reporting through fpgaflow.tracking into the trial folder "
        "(FPGAFLOW_TRAIN_DIR and FPGAFLOW_SPEC in its environment).",
    )


class RetrainHeadSpec(_Model):
    """The last step of the Brainwave recipe: only the classifier head retrained on what the fixed-point
    featurizer computes."""

    epochs: int = Field(5, ge=1, le=10_000, description="Epochs of the head's retraining.")
    learning_rate: float = Field(1e-3, gt=0, le=10, description="Learning rate of the head's retraining.")
    batch_size: int = Field(256, ge=1, le=1_000_000, description="Batch size of the head's retraining.")


class QuantizeSpec(_Model):
    """From float to fixed point: post-training (hls4ml applies hls.precision) or quantization-aware fine-tuning."""

    method: Literal["ptq", "qat"] = Field(
        "ptq",
        description="ptq: convert the float model at hls.precision; qat: then fine-tune it in fixed point "
        "(HGQ2 quantizers at the HLS types), which hls4ml converts bit-exactly.",
    )
    epochs: int = Field(5, ge=1, le=10_000, description="qat: fine-tuning epochs after the float ones.")
    learning_rate: float = Field(1e-4, gt=0, le=10, description="qat: learning rate of the fine-tuning.")
    retrain_head: RetrainHeadSpec | None = Field(
        None,
        description="qat with a featurizer (resnet): after conversion, retrain only the classifier head on the "
        "featurizer's outputs on the training set as the firmware computes them (its bit-exact emulation), "
        "convert the new head with the featurizer, and serve it as version 2 beside the model before (version 1): "
        "the Brainwave recipe's last step.",
    )


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
    pe: int | None = Field(
        None, ge=1, le=4096,
        description="binary (BNN-PYNQ export): processing elements of this fc or output layer, the neurons computed "
        "in parallel; LFC's by default (fc1 32, fc2 64, fc3 32, output 16).",
    )
    simd: int | None = Field(
        None, ge=1, le=64,
        description="binary (BNN-PYNQ export): input bits per PE per cycle (one 64-bit word at most); must divide "
        "the layer's padded input width; LFC's by default (fc1 64, fc2 32, fc3 64, output 8).",
    )

    @field_validator("table_size")
    @classmethod
    def _power_of_two(cls, size: int | None) -> int | None:
        if size is not None and size & (size - 1):
            raise ValueError(f"must be a power of two, got {size}")
        return size


# BNN-PYNQ's LFC overlay (lfcW1A1, bnn/src/network/lfcW1A1/hw/config.h): (PE, SIMD) of its three hidden layers
# and of its output layer. A binary model's hidden layer i takes LFC's i-th (the last one beyond three).
LFC_HIDDEN_FOLDING = ((32, 64), (64, 32), (32, 64))
LFC_OUTPUT_FOLDING = (16, 8)
BNN_WORD_BITS = 64  # BNN-PYNQ's ExtMemWord; the first layer's input and the last layer's output are padded to it


def pad_to(n: int, multiple: int) -> int:
    """n rounded up to a multiple of ``multiple``."""
    return -(-n // multiple) * multiple


def bnn_folding(widths: list[int], overrides: dict[str, LayerHLSSpec]) -> list[tuple[str, int, int]]:
    """(layer name, PE, SIMD) of each fc layer and the output layer of a binary model with hidden ``widths``:
    hls.layers.<name>.pe / .simd where given, LFC's otherwise."""
    names = [f"fc{i + 1}" for i in range(len(widths))] + ["output"]
    defaults = [LFC_HIDDEN_FOLDING[min(i, len(LFC_HIDDEN_FOLDING) - 1)] for i in range(len(widths))]
    folding = []
    for name, (pe, simd) in zip(names, [*defaults, LFC_OUTPUT_FOLDING], strict=True):
        layer = overrides.get(name)
        folding.append((name, (layer and layer.pe) or pe, (layer and layer.simd) or simd))
    return folding


def bnn_padded_inputs(widths: list[int], folding: list[tuple[str, int, int]], n_in: int | None) -> list[int | None]:
    """Each layer's padded input width as BNN-PYNQ's finnthesizer pads it: the first layer's to a multiple of
    max(SIMD, 64), a later layer's to the previous layer's padded neuron count (a multiple of its PE). None for
    the first layer when n_in (the data's features) is not known."""
    first_simd = folding[0][2]
    padded: list[int | None] = [None if n_in is None else pad_to(n_in, max(first_simd, BNN_WORD_BITS))]
    for width, (_, pe, _) in zip(widths, folding[:-1], strict=True):
        padded.append(pad_to(width, pe))
    return padded


def folding_problems(widths: list[int], overrides: dict[str, LayerHLSSpec], n_in: int | None) -> list[tuple[str, str]]:
    """(field, message) for each SIMD that does not divide its layer's padded input width."""
    folding = bnn_folding(widths, overrides)
    problems = []
    for (name, _, simd), padded in zip(folding, bnn_padded_inputs(widths, folding, n_in), strict=True):
        if padded is not None and padded % simd:
            problems.append((f"hls.layers.{name}.simd",
                             f"{simd} does not divide the layer's padded input width {padded}; BNN-PYNQ packs "
                             f"each neuron's inputs in words of SIMD bits (divisors of {padded} up to 64 work)"))
    return problems


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


Quantity = Annotated[
    str,
    Field(pattern=r"^\d+(\.\d+)?(Ki|Mi|Gi|Ti|k|M|G|T)?$", description="Bytes, as Kubernetes writes them.", examples=["512Mi", "2Gi"]),
]
Duration = Annotated[
    str,
    Field(pattern=r"^(\d+h)?(\d+m)?(\d+s)?$", min_length=2, description="A duration.", examples=["90s", "30m", "1h30m"]),
]
_BYTE_UNITS = {"": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}


def quantity_bytes(quantity: str) -> int:
    """'2Gi' -> 2147483648."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([A-Za-z]*)", quantity)
    if match is None:
        raise ValueError(f"{quantity!r} is not a quantity of bytes")
    number, unit = match.groups()
    return int(float(number) * _BYTE_UNITS[unit])


def duration_seconds(duration: str) -> float:
    """'1h30m' -> 5400."""
    match = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?", duration)
    if match is None:
        raise ValueError(f"{duration!r} is not a duration")
    parts = match.groups()
    return float(sum(int(p or 0) * f for p, f in zip(parts, (3600, 60, 1), strict=True)))


class PreconditionsSpec(_Model):
    """What the trainer checks before it starts; a shortfall refuses the run, naming it."""

    min_free_disk: Quantity | None = Field(None, description="Free space in the trial folder's file system.")
    min_free_memory: Quantity | None = Field(None, description="Memory available to the trainer.")
    gpu: bool = Field(False, description="Refuse to train without a GPU.")
    max_duration: Duration | None = Field(None, description="Refuse when the estimated training time exceeds this.")


class EmailSpec(_Model):
    to: list[Annotated[str, Field(pattern=r"^[^@\s]+@[^@\s]+$")]] = Field(min_length=1)
    sender: str = Field("fpgaflow@localhost", pattern=r"^[^@\s]+@[^@\s]+$", description="The From address.")
    smtp_host: str = Field("localhost", min_length=1)
    smtp_port: int = Field(25, ge=1, le=65535)
    starttls: bool = False
    username_env: str | None = Field(None, description="Environment variable holding the SMTP user name.")
    password_env: str | None = Field(None, description="Environment variable holding the SMTP password.")


class WebhookSpec(_Model):
    url: str = Field(pattern=r"^https?://", description="Receives a JSON POST (Slack-compatible: text and blocks).")
    timeout_seconds: float = Field(10, gt=0, le=300)


class NotifySpec(_Model):
    """Messages when a trial's training ends."""

    on: list[NotifyEvent] = Field(
        default_factory=lambda: list(NOTIFY_EVENTS), min_length=1,
        description='Events that send. For kubectl, quote the key ("on":): its YAML reads a bare on as true.',
    )
    email: EmailSpec | None = None
    webhook: WebhookSpec | None = None


class BatchingSpec(_Model):
    """Dynamic batching: concurrent requests gathered into one back-end call, answered separately."""

    max_batch_size: int = Field(64, ge=1, le=65536, description="Most samples one back-end call takes; 1 turns batching off.")
    max_latency_micros: int = Field(
        500, ge=0, le=1_000_000, description="Longest the first request of a batch waits for others to join it."
    )


class ServeSpec(_Model):
    targets: list[Target] = Field(
        default_factory=lambda: list(TARGETS), min_length=1, description="Back ends to serve the model from."
    )
    batching: BatchingSpec | None = Field(None, description="Dynamic batching for every target; absent: each request runs alone.")
    fpga_pacing: bool = Field(
        False, description="Pace the fpga target's answers to one modelled device taking a sample every initiation "
        "interval (studies of N clients sharing one FPGA); stated in the model metadata and the metrics."
    )

    @field_validator("targets")
    @classmethod
    def _unique(cls, targets: list[str]) -> list[str]:
        if len(set(targets)) != len(targets):
            raise ValueError(f"targets must not repeat, got {targets}")
        return targets


def modelled_distance(rtt_ms: float | None, bandwidth_mbps: float | None) -> bool:
    """Whether clients behind this round trip and bandwidth limit reach the server through the load generator's
    relaying proxy (a distance modelled), rather than directly (rtt 0 or unset, no limit)."""
    return bool(rtt_ms) or bandwidth_mbps is not None


class NetworkSpec(_Model):
    """Where the benchmark's clients sit: on-prem (connected to the server directly) or at a modelled distance,
    through a relaying proxy in the load generator that delays and paces the bytes (this kernel has no netem)."""

    name: str = Field(pattern=r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$", max_length=40,
                      description="The network's name in the results and the report: on-prem, remote, ...")
    rtt_ms: float = Field(0.0, ge=0, le=10_000, description="Round-trip time added between the clients and the server "
                          "(half each way), in ms.")
    bandwidth_mbps: float | None = Field(None, gt=0, le=1_000_000, description="Each direction's bandwidth limit in "
                                         "Mbit/s; unset: unlimited. With rttMs 0 and no limit, the clients connect directly.")


class BenchmarkSpec(_Model):
    """The load generator's scan (SONIC's measurement): every network, target, batch size and number of clients."""

    concurrency: list[Annotated[int, Field(ge=1, le=256)]] = Field(
        default_factory=lambda: [1, 4, 16, 50], min_length=1, description="Numbers of concurrent client processes to scan."
    )
    requests_per_client: int = Field(2000, ge=1, le=1_000_000, description="Timed requests each client sends.")
    batch_sizes: list[Annotated[int, Field(ge=1, le=65536)]] = Field(
        default_factory=lambda: [1], min_length=1, description="Samples per request, scanned; the report compares batch 1 "
        "with the best batch size.")
    warmup: int = Field(20, ge=0, description="Requests each client sends before timing starts.")
    protocol: Literal["tfserving", "v2"] = Field("tfserving", description="TF Serving Predict or Open Inference v2 ModelInfer.")
    rate: float | None = Field(
        None, gt=0, le=1_000_000, description="Open loop: requests per second of all clients together, each sent at its "
        "scheduled time, its latency counted from then. Unset: closed loop, each client sends when its previous answer came.")
    networks: list[NetworkSpec] = Field(
        default_factory=lambda: [NetworkSpec(name="on-prem")], min_length=1, max_length=16,
        description="Where the clients sit, each measured in turn (SONIC's on-prem and remote): a name, and the round "
        "trip and bandwidth a relaying proxy in the load generator models between the clients and the server.")

    @field_validator("networks")
    @classmethod
    def _unique_networks(cls, networks: list[NetworkSpec]) -> list[NetworkSpec]:
        names = [n.name for n in networks]
        if len(set(names)) != len(names):
            raise ValueError(f"network names must not repeat, got {names}")
        return networks


EXECUTORS = ("local", "kubernetes", "slurm")


class ExecutorSpec(_Model):
    """Where `fpgaflow server` runs the experiment and its place in the queue (`fpgaflow run` and the operator
    run it where they are and ignore this)."""

    name: Literal["local", "kubernetes", "slurm"] | None = Field(
        None, description="local: stage processes on the server's machine; kubernetes: the Experiment resource, run by "
        "the operator; slurm: each stage an sbatch job. Unset: the server's default.")
    priority: int = Field(0, ge=-100, le=100, description="Higher starts first; equal priorities start in submission order.")


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
            if key.split(".")[0] in ("sweep", "serve", "benchmark", "preconditions", "notify", "executor"):
                raise ValueError(f"{key} cannot be swept (only dataset, model, train, quantize and hls fields)")
        return params


class ExperimentSpec(_Model):
    dataset: DatasetSpec = Field(default_factory=DatasetSpec)
    model: ModelSpec = Field(default_factory=ModelSpec)
    train: TrainSpec = Field(default_factory=TrainSpec)
    quantize: QuantizeSpec = Field(default_factory=QuantizeSpec)
    preconditions: PreconditionsSpec = Field(default_factory=PreconditionsSpec)
    notify: NotifySpec | None = None
    hls: HLSSpec = Field(default_factory=HLSSpec)
    serve: ServeSpec = Field(default_factory=ServeSpec)
    benchmark: BenchmarkSpec = Field(default_factory=BenchmarkSpec)
    sweep: SweepSpec | None = None
    executor: ExecutorSpec = Field(default_factory=ExecutorSpec)

    @model_validator(mode="after")
    def _bnn_folding(self) -> ExperimentSpec:
        folded = {name for name, layer in self.hls.layers.items() if layer.pe is not None or layer.simd is not None}
        if folded and self.model.type != "binary":
            raise ValueError(f"hls.layers pe and simd fold a binary model's BNN-PYNQ export; model type {self.model.type} "
                             f"has none (set on {', '.join(sorted(folded))})")
        if self.model.type == "binary":
            problems = folding_problems(self.model.layers, self.hls.layers, None)
            if problems:
                raise SpecError(problems)
        return self

    @model_validator(mode="after")
    def _layer_overrides_exist(self) -> ExperimentSpec:
        if self.train.command is not None and self.quantize.method == "qat":
            raise ValueError("quantize.method qat fine-tunes the Keras trainer's model; a train.command trains outside it")
        if self.quantize.retrain_head is not None and (self.quantize.method != "qat" or self.model.type != "resnet"):
            raise ValueError("quantize.retrainHead retrains the head of a resnet fine-tuned in fixed point: it needs "
                             f"quantize.method qat and model.type resnet, not {self.quantize.method} and {self.model.type}")
        known = self.model.layer_names()
        if known is None:  # a user's .keras file: checked against the file's layers when it is read
            return self
        named = {"hls.layers": list(self.hls.layers), "train.pruning.layers": (self.train.pruning and self.train.pruning.layers) or []}
        for where, names in named.items():
            unknown = [name for name in names if name not in known]
            if unknown:
                raise ValueError(
                    f"{where} names {', '.join(map(repr, unknown))}, which the model does not have; "
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


def _message(err: ErrorDetails) -> str:
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


class ManifestLoader(yaml.SafeLoader):
    """YAML with the booleans of YAML 1.2 (true, false): "on", "off", "yes" and "no" stay words, as the key
    ``notify.on`` must (YAML 1.1, PyYAML's default, reads it as True)."""


ManifestLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
ManifestLoader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                                     list("tTfF"))


def read_experiment(text: str, source: str = "manifest") -> Experiment:
    """A manifest's text (YAML or JSON, one document) validated. Raises SpecError naming each bad field."""
    try:
        docs = [d for d in yaml.load_all(text, Loader=ManifestLoader) if d is not None]  # noqa: S506 - a SafeLoader
    except yaml.YAMLError as exc:
        raise SpecError([("", f"not valid YAML: {exc}")], source) from None
    if len(docs) != 1:
        raise SpecError([("", f"expected one Experiment document, found {len(docs)}")], source)
    return parse_experiment(docs[0], source)


def load_experiment(path: str | Path) -> Experiment:
    """Read and validate a manifest file (YAML or JSON)."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise SpecError([("", f"cannot read {path}: {exc.strerror}")], str(path)) from None
    return read_experiment(text, str(path))


def spec_to_dict(spec: ExperimentSpec) -> dict:
    """The spec as a manifest would write it (camelCase, every default filled in)."""
    return spec.model_dump(mode="json", by_alias=True)


def spec_hash(spec: ExperimentSpec) -> str:
    """What identifies an experiment's results: its spec, less where and when it is run (``executor``)."""
    results = {k: v for k, v in spec_to_dict(spec).items() if k != "executor"}
    return hashlib.sha256(json.dumps(results, sort_keys=True).encode()).hexdigest()[:16]
