"""fpgaflow.tracking (standard library only) and train.command: a plain-Python script as the train stage."""

from __future__ import annotations

import ast
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from fpgaflow import tracking
from fpgaflow.errors import Diverged, StageError
from fpgaflow.spec import ExperimentSpec
from fpgaflow.trial import TrialDir
from fpgaflow_trainer.command import run_command

# A logistic regression trained by full-batch gradient descent in pure Python, reporting through
# fpgaflow.tracking; KILL_AT=N kills it with SIGKILL after logging epoch N, before its checkpoint.
SCRIPT = '''
import json, math, os, random, signal, sys
from fpgaflow import tracking

rng = random.Random(0)
points = [(rng.gauss(1.5 * c - 0.75, 1.0), rng.gauss(0.0, 1.0), c) for c in (0, 1) for _ in range(60)]
train, val = points[::2], points[1::2]

def evaluate(w, data):
    loss = correct = 0.0
    for x1, x2, y in data:
        p = 1 / (1 + math.exp(-(w[0] * x1 + w[1] * x2 + w[2])))
        loss -= math.log(p if y else 1 - p)
        correct += (p > 0.5) == bool(y)
    return loss / len(data), correct / len(data)

run = tracking.Run()
lr = run.spec["train"]["learningRate"]
w, start = [0.0, 0.0, 0.0], 0
resumed = run.latest_checkpoint()
if resumed is not None:
    start, path, state = resumed
    w = json.loads(path.read_text())
    print("resumed from epoch", start, "step", state["step"], flush=True)
for epoch in range(start + 1, run.total_epochs + 1):
    grad = [0.0, 0.0, 0.0]
    for x1, x2, y in train:
        p = 1 / (1 + math.exp(-(w[0] * x1 + w[1] * x2 + w[2])))
        for i, v in enumerate((x1, x2, 1.0)):
            grad[i] += (p - y) * v / len(train)
    w = [wi - lr * g for wi, g in zip(w, grad)]
    loss, acc = evaluate(w, train)
    val_loss, val_acc = evaluate(w, val)
    row = dict(loss=loss, accuracy=acc, val_loss=val_loss, val_accuracy=val_acc, learning_rate=lr)
    run.log_epoch(epoch, **row)
    print("LOGGED", json.dumps({"epoch": epoch, **row}), flush=True)
    if os.environ.get("KILL_AT") == str(epoch):
        os.kill(os.getpid(), signal.SIGKILL)
    run.save_checkpoint(epoch, json.dumps(w).encode(), state={"step": epoch})
run.finish(accuracy=evaluate(w, val)[1], weights=w)
'''


def make_trial(tmp_path: Path, command: list[str] | None = None, epochs: int = 3) -> TrialDir:
    spec = ExperimentSpec.model_validate({"train": {"epochs": epochs, "learningRate": 0.5, "command": command or ["python", "x.py"]}})
    return TrialDir.create(tmp_path / "t000", "plain", "t000", {}, spec)


def script(tmp_path: Path, text: str, name: str = "train_script.py") -> list[str]:
    path = tmp_path / name
    path.write_text(text)
    return ["python", str(path)]


def without_times(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k != "epoch_seconds"} for row in rows]


def test_tracking_imports_only_the_standard_library():
    source = Path(tracking.__file__)
    modules = set()
    for node in ast.walk(ast.parse(source.read_text())):
        if isinstance(node, ast.Import):
            modules.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            modules.add(node.module.split(".")[0])
    assert modules and modules <= set(sys.stdlib_module_names) | {"__future__"}, modules - set(sys.stdlib_module_names)
    # and it runs as a lone file without site-packages (a copy in a PyTorch or JAX environment)
    code = (f"import sys; sys.path[:0] = [{str(source.parent)!r}]; import tracking; "
            "print(tracking.validate_history({'total_epochs': 1, 'epochs': [{'epoch': 1, 'loss': 0.5}]}))")
    done = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_a_plain_python_script_reports_a_valid_history(tmp_path, capsys):
    trial = make_trial(tmp_path)
    argv = script(tmp_path, SCRIPT)
    result = run_command(trial, trial.stage_dir("train"), argv)
    logged = [json.loads(line.split(" ", 1)[1]) for line in capsys.readouterr().out.splitlines() if line.startswith("LOGGED ")]
    history = json.loads((trial.stage_dir("train") / "history.json").read_text())
    assert tracking.validate_history(history) == []
    assert history["total_epochs"] == 3
    assert without_times(history["epochs"]) == logged and len(logged) == 3
    assert all(row["epoch_seconds"] >= 0 for row in history["epochs"])
    assert history["epochs"][2]["val_loss"] < history["epochs"][0]["val_loss"]  # it learns
    assert result["epochs"] == 3 and result["command"] == argv
    assert result["accuracy"] == logged[-1]["val_accuracy"] and len(result["weights"]) == 3


def test_a_killed_script_resumes_from_its_checkpoint(tmp_path, capsys, monkeypatch):
    reference = make_trial(tmp_path / "ref")
    run_command(reference, reference.stage_dir("train"), script(tmp_path, SCRIPT))
    expected = json.loads((reference.stage_dir("train") / "history.json").read_text())["epochs"]

    trial, argv = make_trial(tmp_path), script(tmp_path, SCRIPT)
    out = trial.stage_dir("train")
    with monkeypatch.context() as patch:
        patch.setenv("KILL_AT", "3")
        with pytest.raises(StageError, match="exited with code -9"):
            run_command(trial, out, argv)
    assert len(json.loads((out / "history.json").read_text())["epochs"]) == 3  # epoch 3 logged, not checkpointed
    capsys.readouterr()
    result = run_command(trial, out, argv)
    assert "resumed from epoch 2 step 2" in capsys.readouterr().out
    history = json.loads((out / "history.json").read_text())["epochs"]
    assert without_times(history) == without_times(expected)  # the same run as one never killed
    assert result["epochs"] == 3


@pytest.mark.parametrize("body, match", [
    ("raise ZeroDivisionError('learning rate schedule divided by zero')",
     r"exited with code 1; its stderr ends:\n(.|\n)*ZeroDivisionError: learning rate schedule divided by zero"),
    ("print('no tracking here')", r"wrote no .*history.json: report epochs"),
    ("run = tracking.Run(); run.log_epoch(1, loss=0.3)", r"exited 0 without calling .*Run.finish"),
    ("import json, os; open(os.environ['FPGAFLOW_TRAIN_DIR'] + '/history.json', 'w').write(json.dumps("
     "{'total_epochs': 3, 'epochs': [{'epoch': 2, 'loss': 1}]}))", r"history.json is invalid: epochs\[0\].epoch must be 1"),
    ("run = tracking.Run(); run.fail('OutOfMemory', 'batch too large'); raise SystemExit(3)",
     r"^batch too large \(exit code 3\)$"),
])
def test_run_command_names_what_went_wrong(tmp_path, body, match):
    trial = make_trial(tmp_path)
    argv = script(tmp_path, "from fpgaflow import tracking\n" + body + "\n")
    with pytest.raises(StageError, match=match) as caught:
        run_command(trial, trial.stage_dir("train"), argv)
    assert type(caught.value) is StageError
    if "OutOfMemory" in body:
        assert caught.value.reason == "OutOfMemory"


def test_a_script_that_reports_diverged_fails_the_stage_as_diverged(tmp_path):
    trial = make_trial(tmp_path)
    argv = script(tmp_path, "from fpgaflow import tracking\nrun = tracking.Run()\nrun.log_epoch(1, loss=float('nan'))\n"
                            "run.fail('Diverged', 'loss is NaN at epoch 1')\n")
    with pytest.raises(Diverged, match="loss is NaN at epoch 1"):
        run_command(trial, trial.stage_dir("train"), argv)


def test_a_missing_program_is_a_stage_error(tmp_path):
    trial = make_trial(tmp_path)
    with pytest.raises(StageError, match="could not start"):
        run_command(trial, trial.stage_dir("train"), [str(tmp_path / "no-such-program")])


@pytest.mark.parametrize("doc, problem", [
    ([], "history must be a JSON object"),
    ({"epochs": []}, "total_epochs must be an integer >= 1, got None"),
    ({"total_epochs": 2, "epochs": {}}, "epochs must be a list"),
    ({"total_epochs": 2, "epochs": [{"epoch": 1, "loss": 1.0}, {"epoch": 3, "loss": 0.5}]}, "epochs[1].epoch must be 2"),
    ({"total_epochs": 2, "epochs": [{"epoch": 1, "accuracy": 0.5}]}, "epochs[0] has no loss"),
    ({"total_epochs": 2, "epochs": [{"epoch": 1, "loss": "0.5"}]}, "epochs[0].loss must be a number, got str '0.5'"),
    ({"total_epochs": 2, "epochs": [{"epoch": 1, "loss": 0.5, "epoch_seconds": -1}]}, "epochs[0].epoch_seconds must be"),
    ({"total_epochs": 2, "epochs": [7]}, "epochs[0] must be an object"),
])
def test_validate_history_names_the_problem(doc, problem):
    problems = tracking.validate_history(doc)
    assert any(problem in p for p in problems), problems


def test_validate_history_accepts_the_keras_trainers_rows():
    rows = [{"epoch": 1, "epoch_seconds": 0.2, "loss": float("nan"), "val_auc": {"g": 0.9, "q": None},
             "weight_norm": [1.0, 2.0], "phase": "qat"}]
    assert tracking.validate_history({"total_epochs": 1, "epochs": rows}) == []


def test_log_epoch_checks_what_it_records(tmp_path, capsys):
    run = tracking.Run(tmp_path, total_epochs=5)
    with pytest.raises(ValueError, match="epoch 2 logged after epoch 0"):
        run.log_epoch(2, loss=1.0)
    with pytest.raises(ValueError, match="metric loss must be a number, got str"):
        run.log_epoch(1, loss="low")
    with pytest.raises(ValueError, match="must follow log_epoch"):
        run.save_checkpoint(1, b"w")
    row = run.log_epoch(1, loss=float("inf"), accuracy=1)
    assert "epoch 1: loss is inf" in capsys.readouterr().err
    assert math.isinf(row["loss"]) and row["accuracy"] == 1
    run.log_epoch(2, loss=0.5, epoch_seconds=9.0)
    assert json.loads(run.history_path.read_text())["epochs"][1]["epoch_seconds"] == 9.0
    with pytest.raises(ValueError, match="finite JSON"):
        run.finish(accuracy=float("nan"))


def test_checkpoints_keep_only_the_latest_and_hand_back_state(tmp_path):
    run = tracking.Run(tmp_path, total_epochs=3)
    for epoch in (1, 2):
        run.log_epoch(epoch, loss=1.0 / epoch)
        run.save_checkpoint(epoch, lambda p, e=epoch: p.mkdir() or (p / "w.bin").write_bytes(bytes([e])), state={"e": epoch})
    run.log_epoch(3, loss=0.2)  # logged, then killed before its checkpoint
    assert sorted(p.name for p in run.checkpoint_dir.iterdir()) == ["epoch-0002", "latest.json"]
    again = tracking.Run(tmp_path, total_epochs=3)
    epoch, path, state = again.latest_checkpoint()
    assert (epoch, state, (path / "w.bin").read_bytes()) == (2, {"e": 2}, b"\x02")
    assert [r["epoch"] for r in json.loads(again.history_path.read_text())["epochs"]] == [1, 2]
    again.log_epoch(3, loss=0.25)
    assert tracking.Run(tmp_path / "fresh", total_epochs=1).latest_checkpoint() is None


def test_run_reads_its_folder_and_spec_from_the_environment(tmp_path, monkeypatch):
    trial = make_trial(tmp_path, epochs=7)
    monkeypatch.setenv(tracking.ENV_TRAIN_DIR, str(tmp_path / "out"))
    monkeypatch.setenv(tracking.ENV_SPEC, str(trial.spec_path))
    run = tracking.Run()
    assert run.out_dir == tmp_path / "out" and run.total_epochs == 7
    assert run.spec["train"]["command"] == ["python", "x.py"]
    monkeypatch.delenv(tracking.ENV_TRAIN_DIR)
    with pytest.raises(RuntimeError, match="FPGAFLOW_TRAIN_DIR is not set"):
        tracking.Run()
