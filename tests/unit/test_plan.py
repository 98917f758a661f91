import pytest

from fpgaflow.errors import SpecError
from fpgaflow.plan import plan_trials, set_path
from fpgaflow.spec import parse_experiment


def spec_with(sweep: dict | None = None, **spec):
    doc = {"metadata": {"name": "s"}, "spec": {**spec, **({"sweep": sweep} if sweep else {})}}
    return parse_experiment(doc).spec


def test_no_sweep_is_one_trial_with_the_spec():
    spec = spec_with(hls={"reuseFactor": 4})
    [trial] = plan_trials(spec)
    assert trial.name == "t00" and trial.parameters == {}
    assert trial.spec.hls.reuse_factor == 4
    assert trial.spec.sweep is None


def test_grid_is_every_combination_in_order():
    spec = spec_with({"parameters": {"hls.reuseFactor": [1, 4, 16], "hls.precision": ["ap_fixed<16,6>", "ap_fixed<10,4>"]}})
    trials = plan_trials(spec)
    assert [t.name for t in trials] == ["t00", "t01", "t02", "t03", "t04", "t05"]
    assert [(t.spec.hls.reuse_factor, t.spec.hls.precision) for t in trials] == [
        (1, "ap_fixed<16,6>"), (1, "ap_fixed<10,4>"), (4, "ap_fixed<16,6>"),
        (4, "ap_fixed<10,4>"), (16, "ap_fixed<16,6>"), (16, "ap_fixed<10,4>"),
    ]
    assert trials[3].parameters == {"hls.reuseFactor": 4, "hls.precision": "ap_fixed<10,4>"}


def test_per_layer_and_training_fields_can_be_swept():
    spec = spec_with({"parameters": {"hls.layers.fc1.precision.weight": ["ap_fixed<8,2>"], "train.learningRate": [0.01, 0.001]}})
    trials = plan_trials(spec)
    assert len(trials) == 2
    assert trials[0].spec.hls.layers["fc1"].precision.weight == "ap_fixed<8,2>"
    assert trials[1].spec.train.learning_rate == 0.001


def test_grid_larger_than_max_trials_is_refused():
    spec = spec_with({"maxTrials": 2, "parameters": {"hls.reuseFactor": [1, 2, 4]}})
    with pytest.raises(SpecError, match="grid has 3 trials, more than maxTrials 2"):
        plan_trials(spec)


def test_random_mode_draws_max_trials_reproducibly():
    sweep = {"mode": "random", "maxTrials": 3, "seed": 5, "parameters": {"hls.reuseFactor": [1, 2, 4, 8], "train.epochs": [1, 2]}}
    first = [t.parameters for t in plan_trials(spec_with(sweep))]
    assert len(first) == 3 and len({str(p) for p in first}) == 3
    assert first == [t.parameters for t in plan_trials(spec_with(sweep))]


@pytest.mark.parametrize(
    "parameters, field, words",
    [
        ({"hls.reuseFactor": [1, 0]}, "spec.sweep.parameters.hls.reuseFactor", "greater than or equal to 1"),
        ({"hls.nosuch": [1]}, "spec.sweep.parameters.hls.nosuch", "no such field"),
        ({"hls.precision": ["fixed"]}, "spec.sweep.parameters.hls.precision", "not an HLS type"),
    ],
)
def test_bad_sweep_values_name_the_parameter(parameters, field, words):
    with pytest.raises(SpecError) as info:
        plan_trials(spec_with({"parameters": parameters}))
    problems = dict(info.value.problems)
    assert field in problems and words in problems[field]


def test_sweeping_serving_fields_is_refused():
    with pytest.raises(SpecError, match="cannot be swept"):
        spec_with({"parameters": {"serve.targets": ["cpu"]}})


def test_set_path_copies():
    doc = {"hls": {"reuseFactor": 1, "layers": {}}}
    out = set_path(doc, "hls.layers.fc1.reuseFactor", 4)
    assert out["hls"]["layers"] == {"fc1": {"reuseFactor": 4}}
    assert doc["hls"]["layers"] == {}
    with pytest.raises(KeyError):
        set_path(doc, "hls.missing.x", 1)


def test_model_layers_can_be_swept():
    trials = plan_trials(spec_with({"parameters": {"model.layers": [[64, 32, 32], [16, 8]]}}))
    assert [t.spec.model.layers for t in trials] == [[64, 32, 32], [16, 8]]
