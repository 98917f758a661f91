import time

import numpy as np

from fpgaflow.converter.emubench import main, rate, single_latency_us


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
