"""The serving benchmark's KServe peer comparison: its process-tree CPU accounting, ratios, verdicts and text,
on made-up /proc lines and runs: never a server, never a timing."""

import numpy as np
import pytest

from benchmarks.serving import (
    CPU_GOAL,
    KSERVE,
    answers_agree,
    format_answer_check,
    format_peer_table,
    format_ratios,
    goal_verdicts,
    main,
    parse_proc_stat,
    peer_ratios,
    peer_requests_per_client,
    per_request_seconds,
    tree_ticks,
)


def stat_line(pid, name, ppid, utime, stime, cutime=0, cstime=0):
    # pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime cutime cstime ...
    return f"{pid} ({name}) S {ppid} {pid} {pid} 0 -1 4194560 100 0 0 0 {utime} {stime} {cutime} {cstime} 20 0 7 0 1 0"


def test_a_stat_line_gives_the_parent_and_all_four_cpu_times_whatever_the_name():
    assert parse_proc_stat(stat_line(42, "python", 7, 100, 20, 3, 4)) == (7, 127)
    assert parse_proc_stat(stat_line(43, "a) b (c", 42, 1, 1)) == (42, 2)  # the name may hold ') '


def test_the_tree_sums_the_server_and_every_process_under_it_and_nothing_else():
    table = {1: (0, 1000), 10: (1, 50), 11: (10, 5), 12: (10, 7), 13: (11, 1), 20: (1, 999), 21: (20, 3)}
    assert tree_ticks(table, 10) == (50 + 5 + 7 + 1, 4)
    assert tree_ticks(table, 13) == (1, 1)
    assert tree_ticks(table, 99) is None  # gone
    assert tree_ticks({5: (5, 2)}, 5) == (2, 1)  # a process that is its own parent does not loop


def test_cpu_per_request_and_the_request_plan():
    assert per_request_seconds(1.0, 3.0, 1000) == pytest.approx(0.002)
    assert per_request_seconds(None, 3.0, 10) is None and per_request_seconds(1.0, 2.0, 0) is None
    assert [peer_requests_per_client(2000, c) for c in (1, 8, 32)] == [2000, 250, 62]
    assert peer_requests_per_client(50, 32) == 10  # never fewer than a handful


def run(server, batch, clients, p50, rps, cpu, **extra):
    return {"server": server, "batch_size": batch, "concurrency": clients, "p50_ms": p50, "p99_ms": p50 * 3,
            "throughput_rps": rps, "server_cpu_ms_per_request": cpu, "errors": {}, **extra}


def runs(cpu_ours=0.4, fpga_ours=0.2):
    rows = []
    for clients in (1, 8, 32):
        rows += [run(KSERVE, 1, clients, 1.0, 1000, 1.0), run("fpgaflow cpu", 1, clients, 0.6, 1500, cpu_ours),
                 run("fpgaflow fpga", 1, clients, 0.8, 2000, fpga_ours), run(KSERVE, 16, clients, 2.0, 500, 2.0),
                 run("fpgaflow cpu native", 1, clients, 0.5, 2500, cpu_ours / 2),
                 run("fpgaflow fpga native", 1, clients, 0.3, 4000, fpga_ours / 2)]
    return rows


def test_ratios_are_fpgaflow_over_kserve_at_batch_1_against_the_goal():
    ratios = peer_ratios(runs())
    cpu = [r for r in ratios if r["server"] == "fpgaflow cpu" and r["metric"] == "server CPU per request"]
    assert [r["concurrency"] for r in cpu] == [1, 8, 32]
    assert all(r["ratio"] == 0.4 and r["goal"] == CPU_GOAL["cpu"] and r["met"] for r in cpu)
    fpga_p50 = next(r for r in ratios if r["server"] == "fpgaflow fpga" and r["metric"] == "p50 latency")
    assert fpga_p50["ratio"] == 0.8 and fpga_p50["goal"] == 0.7 and fpga_p50["met"] is False
    throughput = next(r for r in ratios if r["server"] == "fpgaflow cpu" and r["metric"] == "throughput")
    assert throughput["ratio"] == 1.5 and throughput["goal"] is None and throughput["met"] is None
    assert goal_verdicts(ratios) == {"cpu: CPU/request": True, "cpu: p50 at 1 client": True,
                                     "fpga: CPU/request": True, "fpga: p50 at 1 client": False,
                                     "cpu native: CPU/request": True, "cpu native: p50 at 1 client": True,
                                     "fpga native: CPU/request": True, "fpga native: p50 at 1 client": True}
    native = next(r for r in ratios if r["server"] == "fpgaflow fpga native" and r["key"] == "server_cpu_ms_per_request")
    assert native["ratio"] == 0.1 and native["goal"] == CPU_GOAL["fpga"]  # each front against the same KServe run


def test_the_cpu_goal_is_met_only_where_it_is_met_at_every_client_count():
    rows = runs()
    next(r for r in rows if r["server"] == "fpgaflow fpga" and r["concurrency"] == 32)["server_cpu_ms_per_request"] = 0.5
    verdicts = goal_verdicts(peer_ratios(rows))
    assert verdicts["fpga: CPU/request"] is False and verdicts["cpu: CPU/request"] is True
    missing = [r for r in runs() if not (r["server"] == KSERVE and r["concurrency"] == 8)]
    assert goal_verdicts(peer_ratios(missing))["cpu: CPU/request"] is None  # a figure missing: no verdict


def test_the_text_shows_the_servers_side_by_side_and_the_verdicts():
    rows = runs()
    rows[0]["errors"] = {"UNAVAILABLE": 2}
    table = format_peer_table(rows).splitlines()
    assert "kserve" in table[1] and "fpgaflow cpu" in table[1] and "fpgaflow fpga" in table[1]
    first = table[4].replace("|", " ").split()
    assert first == ["1", "1", "1.000", "3.000", "1000.0", "1.000", "0.600", "1.800", "1500.0", "0.400",
                     "0.800", "2.400", "2000.0", "0.200", "0.500", "1.500", "2500.0", "0.200",
                     "0.300", "0.900", "4000.0", "0.100"]
    assert table[7].split()[:2] == ["16", "1"] and "—" in table[7]  # batch 16: only KServe ran
    assert table[-1] == "errors: kserve, batch 1, 1 clients: {'UNAVAILABLE': 2}"
    text = format_ratios(peer_ratios(rows))
    assert "fpgaflow cpu         server CPU per request    1 client  0.400 / 1.000 ms = 0.400  goal <= 0.50: met" in text
    assert "goal, fpga: p50 at 1 client         NOT MET" in text
    assert "goal, fpga native: p50 at 1 client  MET" in text


def test_kserves_answers_must_match_fpgaflow_cpus_and_fpgas_are_compared_for_information():
    cpu = np.array([[0.1, 0.9], [0.8, 0.2]], dtype=np.float32)
    check = answers_agree({KSERVE: cpu + 1e-7, "fpgaflow cpu": cpu, "fpgaflow fpga": np.array([[0.2, 0.8], [0.4, 0.6]])})
    assert check["kserve_vs_cpu"]["agree"] and check["kserve_vs_cpu"]["rows"] == 2
    assert check["fpga_vs_cpu"]["same_class"] == 0.5 and check["fpga_vs_cpu"]["max_abs_diff"] == pytest.approx(0.4)
    assert "kserve vs fpgaflow cpu: agree on 2 rows" in format_answer_check(check)
    bad = answers_agree({KSERVE: cpu[:, ::-1], "fpgaflow cpu": cpu})
    assert not bad["kserve_vs_cpu"]["agree"] and "DISAGREE" in format_answer_check(bad)
    assert "not compared" in format_answer_check(answers_agree({"fpgaflow cpu": cpu}))


def test_without_the_kserve_venv_the_bench_exits_2_saying_how_to_build_it(tmp_path, capsys):
    trial = tmp_path / "t00"
    (trial / "train").mkdir(parents=True)
    (trial / "convert").mkdir()
    np.savez(trial / "train" / "testset.npz", x=np.zeros((2, 3)))
    assert main(["--trial-dir", str(trial), "--kserve-venv", str(tmp_path / "no-venv"), "--peer-only",
                 "--out", str(tmp_path / "out")]) == 2
    assert "bash benchmarks/kserve_venv.sh .cache/bench/kserve-venv" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
