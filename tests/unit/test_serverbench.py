"""The serving benchmark's arithmetic and text, on made-up runs: never a timing."""

import pytest
from prometheus_client import generate_latest

from benchmarks.serving import (
    CASES,
    batching_gains,
    cpu_per_request,
    empty_response,
    format_gains,
    format_overheads,
    format_table,
    histogram_totals,
    main,
    mean_between,
    overheads,
    requests_per_client,
    server_row,
)
from fpgaflow_inference.metrics import ServerMetrics


def run(server, concurrency, p50, rps, **extra):
    return {"server": server, "target": server, "concurrency": concurrency, "p50_ms": p50, "p99_ms": p50 * 2,
            "throughput_rps": rps, "errors": {}, **extra}


def test_requests_scale_with_the_single_clients_count():
    assert [requests_per_client(2000, c) for c in (1, 8, 50)] == [2000, 400, 200]
    assert [requests_per_client(200, c) for c in (1, 8, 50)] == [200, 40, 20]
    assert requests_per_client(20, 50) == 10 and requests_per_client(20, 8) == 10  # never fewer than a handful


def test_compute_mean_is_read_from_the_servers_own_metrics_between_two_scrapes():
    metrics = ServerMetrics("m", "cpu")
    metrics.observe_batch(1, [0.001], 0.002, None)
    before = histogram_totals(generate_latest(metrics.registry).decode())
    metrics.observe_batch(3, [0.0, 0.0, 0.0], 0.004, None)
    metrics.observe_batch(1, [0.0], 0.008, None)
    after = histogram_totals(generate_latest(metrics.registry).decode())
    assert before["fpgaflow_compute_duration_seconds"] == pytest.approx((0.002, 1))
    assert mean_between(before, after, "fpgaflow_compute_duration_seconds") == pytest.approx(0.006)
    assert mean_between(before, after, "fpgaflow_batch_size") == pytest.approx(2.0)
    assert mean_between(after, after, "fpgaflow_batch_size") is None  # nothing happened in between


def test_server_cpu_per_request_counts_warm_up_requests_too():
    assert cpu_per_request(10.0, 12.5, 2000) == 1.25
    assert cpu_per_request(None, 12.5, 2000) is None and cpu_per_request(1.0, 2.0, 0) is None


def test_server_row_carries_the_server_means_in_milliseconds():
    before = {"fpgaflow_compute_duration_seconds": (1.0, 10), "fpgaflow_queue_duration_seconds": (0.0, 10),
              "fpgaflow_batch_size": (10, 10)}
    after = {"fpgaflow_compute_duration_seconds": (1.5, 20), "fpgaflow_queue_duration_seconds": (0.01, 30),
             "fpgaflow_batch_size": (40, 20)}
    row = server_row(CASES[1], {"target": "x", "concurrency": 1, "throughput_rps": 1.0, "errors": {}}, before, after)
    assert row["server"] == row["target"] == "cpu, batching off"
    assert row["compute_ms_mean"] == 50.0 and row["queue_ms_mean"] == 0.5 and row["batch_mean"] == 3.0
    assert "compute_ms_mean" not in server_row(CASES[0], {"concurrency": 1}, None, None)  # empty: no metrics


def test_overhead_is_the_median_over_the_empty_handler_then_less_the_compute():
    rows = [run("empty", 1, 0.3, 3000), run("empty", 8, 3.0, 2000),
            run("cpu, batching off", 1, 1.2, 800, compute_ms_mean=0.5), run("cpu, batching off", 8, 9.0, 700),
            run("fpga, batching off", 1, 0.8, 1200)]
    result = overheads(rows)
    assert set(result) == {"cpu, batching off", "fpga, batching off"}
    cpu = result["cpu, batching off"]
    assert cpu["overhead_ms"] == pytest.approx(0.9) and cpu["overhead_without_compute_ms"] == pytest.approx(0.4)
    assert result["fpga, batching off"]["overhead_without_compute_ms"] is None  # no compute time known
    assert overheads([r for r in rows if r["server"] != "empty"]) == {}  # no reference, no overhead
    text = format_overheads(result)
    assert "1.200 - empty 0.300 = 0.900 ms, minus compute 0.500 ms = 0.400 ms" in text


def test_batching_gain_is_on_over_off_at_50_clients_per_target():
    rows = [run("cpu, batching off", 50, 50, 400), run("cpu, batching on", 50, 30, 600, batch_mean=6.5),
            run("fpga, batching off", 50, 50, 500), run("fpga, batching on", 50, 60, 400, batch_mean=2.0),
            run("cpu, batching on", 8, 5, 9999)]
    gains = batching_gains(rows)
    assert gains["cpu"]["gain"] == 1.5 and gains["cpu"]["on_batch_mean"] == 6.5
    assert gains["fpga"]["gain"] == 0.8
    text = format_gains(gains)
    assert "cpu   600.0 / 400.0 req/s = 1.500x: batching raises throughput" in text
    assert "fpga  400.0 / 500.0 req/s = 0.800x: batching does NOT raise throughput" in text


def test_table_lists_one_servers_runs_by_clients():
    rows = [run("empty", 50, 40.0, 450.0), run("empty", 1, 0.3371, 2621.64),
            run("cpu, batching on", 1, 2.0, 400.0, batch_mean=1.0, compute_ms_mean=0.6, server_cpu_ms_per_request=1.25,
                 errors={"UNAVAILABLE": 2})]
    lines = format_table("empty", rows).splitlines()
    assert lines[0] == "empty" and lines[1].split()[:3] == ["clients", "p50", "ms"]
    assert lines[3].split() == ["1", "0.337", "0.674", "2621.6", "—", "—", "—", "0"]
    assert lines[4].split()[0] == "50" and len(lines) == 5
    assert format_table("cpu, batching on", rows).splitlines()[3].split() == \
        ["1", "2.000", "4.000", "400.0", "1.00", "0.600", "1.250", "UNAVAILABLE", "2"]


def test_the_empty_servers_answer_has_the_real_ones_shape():
    from tensorflow_serving.apis import predict_pb2

    reply = predict_pb2.PredictResponse.FromString(empty_response("bench-serving", "probabilities", 5))
    assert reply.model_spec.name == "bench-serving" and reply.model_spec.version.value == 1
    tensor = reply.outputs["probabilities"]
    assert [d.size for d in tensor.tensor_shape.dim] == [1, 5] and len(tensor.tensor_content) == 5 * 4


def test_a_missing_trial_exits_2_saying_how_to_make_it(tmp_path, capsys):
    assert main(["--trial-dir", str(tmp_path / "nope"), "--out", str(tmp_path / "out")]) == 2
    assert "fpgaflow run examples/bench-serving.yaml --home .cache/bench --replace" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
