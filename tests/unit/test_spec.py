from pathlib import Path

import pytest
import yaml

from fpgaflow.errors import SpecError
from fpgaflow.spec import load_experiment, parse_experiment, read_experiment
from tests.conftest import ROOT, fpgaflow

EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))


def manifest(**spec) -> dict:
    return {"apiVersion": "fpgaflow.io/v1alpha1", "kind": "Experiment", "metadata": {"name": "t"}, "spec": spec}


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_are_valid(path: Path):
    experiment = load_experiment(path)
    assert experiment.name == yaml.safe_load(path.read_text())["metadata"]["name"]


def test_defaults_follow_the_hls4ml_jet_tagger():
    spec = parse_experiment(manifest()).spec
    assert spec.model.layers == [64, 32, 32]
    assert spec.hls.precision == "ap_fixed<16,6>"
    assert spec.train.batch_size == 1024
    assert spec.serve.targets == ["cpu", "gpu", "fpga"]


@pytest.mark.parametrize(
    "spec, field, words",
    [
        ({"hls": {"reuseFactor": 0}}, "spec.hls.reuseFactor", "greater than or equal to 1"),
        ({"serve": {"targets": ["tpu"]}}, "spec.serve.targets[0]", "'cpu', 'gpu' or 'fpga'"),
        ({"serve": {"targets": ["cpu", "cpu"]}}, "spec.serve.targets", "must not repeat"),
        ({"serve": {"batching": {"maxBatchSize": 0}}}, "spec.serve.batching.maxBatchSize", "greater than or equal to 1"),
        ({"serve": {"batching": {"maxLatencyMicros": -5}}}, "spec.serve.batching.maxLatencyMicros", "greater than or equal to 0"),
        ({"serve": {"batching": {"maxDelay": 5}}}, "spec.serve.batching.maxDelay", "unknown field"),
        ({"hls": {"precision": "float32"}}, "spec.hls.precision", "is not an HLS type"),
        ({"hls": {"precision": "ap_fixed<80,6>"}}, "spec.hls.precision", "outside 1..64"),
        ({"hls": {"layers": {"fc1": {"precision": {"weight": "ap_fixed<8"}}}}}, "spec.hls.layers.fc1.precision.weight", "not an HLS type"),
        ({"hls": {"layers": {"fc7": {"reuseFactor": 2}}}}, "spec", "model does not have"),
        ({"hls": {"strategy": "Fast"}}, "spec.hls.strategy", "'Latency' or 'Resource'"),
        ({"hls": {"layers": {"softmax": {"tableSize": 1000}}}}, "spec.hls.layers.softmax.tableSize", "power of two"),
        ({"train": {"epochs": "many"}}, "spec.train.epochs", "valid integer"),
        ({"train": {"epochs": 3, "optimizer": "sgd"}}, "spec.train.optimizer", "unknown field"),
        ({"dataset": {"name": "imagenet"}}, "spec.dataset.name", "'jets', 'jet-images', 'digits', 'mnist' or 'fashion-mnist'"),
        ({"dataset": {"testFraction": 1.5}}, "spec.dataset.testFraction", "less than 1"),
        ({"benchmark": {"concurrency": []}}, "spec.benchmark.concurrency", "at least 1 item"),
        ({"sweep": {"parameters": {}}}, "spec.sweep.parameters", "at least 1 item"),
    ],
)
def test_bad_specs_name_the_field(spec, field, words):
    with pytest.raises(SpecError) as info:
        parse_experiment(manifest(**spec))
    fields = dict(info.value.problems)
    assert field in fields, fields
    assert words in fields[field]


def test_bad_metadata_and_kind():
    with pytest.raises(SpecError, match="metadata.name"):
        parse_experiment({**manifest(), "metadata": {"name": "Jet_Tagger"}})
    with pytest.raises(SpecError, match="kind"):
        parse_experiment({**manifest(), "kind": "Job"})
    with pytest.raises(SpecError, match="expected a mapping"):
        parse_experiment(["not", "a", "manifest"])


def test_notify_on_is_a_key_and_only_true_and_false_are_booleans():
    """YAML 1.1 (PyYAML's default) reads the key `on` as True; a manifest reads as YAML 1.2 does."""
    experiment = read_experiment("apiVersion: fpgaflow.io/v1alpha1\nkind: Experiment\nmetadata: {name: n}\n"
                                 "spec:\n  notify: {on: [Failed], webhook: {url: 'https://example.org/h'}}\n"
                                 "  preconditions: {gpu: true}\n")
    assert experiment.spec.notify.on == ["Failed"] and experiment.spec.preconditions.gpu is True
    assert read_experiment("apiVersion: fpgaflow.io/v1alpha1\nkind: Experiment\nmetadata: {name: off}\n"
                           "spec: {}\n").name == "off"


def test_load_reports_yaml_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("spec: [unclosed\n")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_experiment(bad)
    with pytest.raises(SpecError, match="cannot read"):
        load_experiment(tmp_path / "missing.yaml")


@pytest.mark.parametrize(
    "spec, field",
    [({"hls": {"reuseFactor": 0}}, "spec.hls.reuseFactor"), ({"serve": {"targets": ["tpu"]}}, "spec.serve.targets[0]")],
)
def test_validate_command_refuses_and_names_the_field(tmp_path, spec, field):
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(manifest(**spec)))
    done = fpgaflow("validate", str(path), check=False)
    assert done.returncode == 2
    assert field in done.stderr


def test_validate_command_accepts_examples():
    done = fpgaflow("validate", *map(str, EXAMPLES))
    assert "valid Experiment 'jet-tagger'" in done.stdout
    assert "6 trials" in done.stdout
