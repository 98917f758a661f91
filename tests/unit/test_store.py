import csv
import io

from fpgaflow.store import RunStore


def test_store_round_trip_and_export(tmp_path):
    store = RunStore(tmp_path)
    assert store.experiments() == [] and store.experiment("x") is None
    store.upsert_experiment("exp-a", "abc", {"spec": {}}, {"commit": "deadbeef", "dirty": True}, "Running")
    store.update_trial("exp-a", "t00", {"hls.reuseFactor": 1}, phase="Running", stage="train")
    store.update_trial("exp-a", "t01", {"hls.reuseFactor": 4}, phase="Failed", stage="convert", reason="FidelityCheckFailed")
    store.update_trial("exp-a", "t00", {"hls.reuseFactor": 1}, phase="Succeeded", stage=None, accuracy_float=0.75,
                       accuracy_emulated=0.74, argmax_agreement=0.99, results={"benchmark": {"runs": []}})
    store.set_experiment_phase("exp-a", "Failed", "TrialFailed")

    [summary] = store.experiments()
    assert (summary["name"], summary["phase"], summary["trials"], summary["succeeded"]) == ("exp-a", "Failed", 2, 1)
    assert summary["best_emulated"] == 0.74
    record = store.experiment("exp-a")
    assert record["git_commit"] == "deadbeef" and record["git_dirty"] == 1
    t00, t01 = record["trials"]
    assert t00["results"] == {"benchmark": {"runs": []}} and t00["parameters"] == {"hls.reuseFactor": 1}
    assert (t01["phase"], t01["stage"], t01["reason"]) == ("Failed", "convert", "FidelityCheckFailed")

    rows = list(csv.DictReader(io.StringIO(store.export_csv())))
    assert [r["trial"] for r in rows] == ["t00", "t01"]
    assert rows[0]["git_commit"] == "deadbeef" and rows[0]["accuracy_emulated"] == "0.74"


def test_update_trial_rejects_unknown_columns(tmp_path):
    store = RunStore(tmp_path)
    store.upsert_experiment("e", "h", {}, {}, "Running")
    try:
        store.update_trial("e", "t00", {}, colour="red")
    except ValueError as exc:
        assert "colour" in str(exc)
    else:
        raise AssertionError("an unknown column was accepted")
