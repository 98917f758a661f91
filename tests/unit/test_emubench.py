import time

import numpy as np

from benchmarks.emulator import main, rate, single_latency_us


def test_rate_counts_samples_per_second_of_the_best_run():
    x = np.zeros((500, 4), dtype=np.float32)
    samples_per_s = rate(lambda batch: time.sleep(0.01), x)
    assert 500 / 0.03 < samples_per_s <= 500 / 0.01


def test_single_latency_calls_one_sample_at_a_time():
    seen = []
    single_latency_us(lambda batch: seen.append(len(batch)), np.zeros((3, 4)), n=7)
    assert seen == [1] * 7


def test_a_trial_without_an_emulator_is_refused(tmp_path, capsys):
    assert main(["--trial-dir", str(tmp_path)]) == 2
    assert "make bench" in capsys.readouterr().err


def test_batch_rate_calls_consecutive_batches_covering_the_budget():
    from benchmarks.emulator import batch_rate

    seen = []
    batch_rate(lambda batch: seen.append(len(batch)), np.zeros((100, 4)), batch=30, budget=100)
    assert seen == [30, 30, 30] * 3  # three whole batches per pass, best of three passes


def test_outputs_are_a_csv_and_a_plot(tmp_path):
    import csv

    from benchmarks.emulator import write_outputs

    rows = [{"batch": b, "hls4ml_samples_per_s": 17000, "vectorized_samples_per_s": 17000 * r, "ratio": r}
            for b, r in ((1, 1.7), (100, 80.0), (10000, 140.0))]
    write_outputs(rows, tmp_path / "out", "test")
    with (tmp_path / "out" / "emubench.csv").open() as fh:
        assert [int(r["batch"]) for r in csv.DictReader(fh)] == [1, 100, 10000]
    assert (tmp_path / "out" / "emubench.png").read_bytes().startswith(b"\x89PNG")
