"""The local Prometheus's pure parts: its config, its target files, the dashboards' queries as sent, the record's rows."""

from __future__ import annotations

from pathlib import Path

from fpgaflow import prometheus
from fpgaflow.dashboards import dashboard, panel_queries
from fpgaflow.prometheus import (
    NOT_INSTALLED,
    SERVERS_JOB,
    TRAINING_JOB,
    legend,
    numbers,
    panel_rows,
    prometheus_binary,
    query_step,
    rate_window,
    scrape_config,
    substitute,
    target_groups,
)


def test_every_job_reads_its_targets_from_its_own_file_at_a_short_interval(tmp_path):
    config = scrape_config(tmp_path / "targets")
    assert config["global"]["scrape_interval"] == "1s" and config["global"]["scrape_timeout"] == "1s"
    jobs = {c["job_name"]: c for c in config["scrape_configs"]}
    assert set(jobs) == {TRAINING_JOB, SERVERS_JOB}
    for name, job in jobs.items():
        assert job["file_sd_configs"] == [{"files": [str(tmp_path / "targets" / f"{name}.json")], "refresh_interval": "30s"}]
        assert job["honor_labels"] is True  # the trainer's own trial/experiment labels win over the target's
        assert "static_configs" not in job
    assert scrape_config(Path("t"), ("a",), interval=2)["global"]["evaluation_interval"] == "2s"
    # a run store given as a relative --home: the target files are still found from the config's folder
    [relative] = scrape_config(Path("home/prometheus/targets"), ("a",))["scrape_configs"][0]["file_sd_configs"][0]["files"]
    assert Path(relative).is_absolute() and relative.endswith("home/prometheus/targets/a.json")


def test_target_groups_are_one_group_per_address_with_its_labels():
    groups = target_groups({"127.0.0.1:9200": {"trial": "t01", "experiment": "e"}, "127.0.0.1:9100": {}})
    assert groups == [{"targets": ["127.0.0.1:9100"], "labels": {}},
                      {"targets": ["127.0.0.1:9200"], "labels": {"experiment": "e", "trial": "t01"}}]
    assert target_groups({}) == []


def test_dashboard_queries_have_no_template_variable_left_once_substituted():
    for _, _, expr in panel_queries(dashboard()):
        sent = substitute(expr, experiment="tiny-jets", rate_window="4s")
        assert "$" not in sent, sent
    assert substitute('fpgaflow_train_loss{experiment=~"$experiment"}', experiment="tiny-jets") == \
        'fpgaflow_train_loss{experiment=~"tiny-jets"}'
    assert substitute('rate(x{model=~"$model"}[$__rate_interval])') == 'rate(x{model=~".*"}[10s])'


def test_steps_and_rate_windows_follow_grafana():
    assert query_step(0, 60) == 1 and query_step(0, 3600) == 4 and query_step(0, 36000, points=1000) == 36
    assert rate_window(1) == "4s"  # 4 scrapes of 1 s
    assert rate_window(30) == "31s"  # step + 1 scrape: no sample falls between two steps


def test_legends_and_rows_from_series():
    assert legend("{{target}} p99", {"target": "fpga"}) == "fpga p99"
    assert legend("{{ experiment }}/{{trial}} {{split}}", {"experiment": "e", "trial": "t00", "split": "train"}) == "e/t00 train"
    assert legend("", {"a": "b"}) == '{"a": "b"}'
    series = {"metric": {"target": "cpu"}, "values": [[100.0, "2"], [101.0, "NaN"], [102.0, "+Inf"], [103.0, "4.5"]]}
    assert numbers(series) == [(100.0, 2.0), (103.0, 4.5)]
    panels = {"Throughput by target": {"A": {"expr": "x", "legend": "{{target}} requests/s", "series": [series]}},
              "Errors by code": {"A": {"expr": "y", "legend": "{{code}}", "series": []}}}
    assert panel_rows(panels, start=90.0) == [
        {"panel": "Throughput by target", "series": "cpu requests/s", "time": 100.0, "seconds": 10.0, "value": 2.0},
        {"panel": "Throughput by target", "series": "cpu requests/s", "time": 103.0, "seconds": 13.0, "value": 4.5}]


def test_without_the_binary_live_metrics_are_off_and_say_why(monkeypatch):
    monkeypatch.setattr(prometheus.shutil, "which", lambda name: None)
    assert prometheus_binary(True) == (None, NOT_INSTALLED)
    assert "apt-get install prometheus" in NOT_INSTALLED
    monkeypatch.setattr(prometheus.shutil, "which", lambda name: f"/usr/bin/{name}")
    assert prometheus_binary(True) == ("/usr/bin/prometheus", None)
    assert prometheus_binary(False) == (None, None)  # turned off (--no-prometheus): nothing to say


def test_the_kubernetes_scrape_job_reads_the_annotations_the_operator_sets():
    """charts/prometheus-kubernetes.yaml (for a Prometheus without the operator) keeps the pods that carry the
    operator's prometheus.io annotations and scrapes the port and path they name."""
    import yaml

    from fpgaflow_operator.manifests import SCRAPE_ANNOTATIONS
    from tests.conftest import ROOT

    [job] = yaml.safe_load((ROOT / "charts" / "prometheus-kubernetes.yaml").read_text())["scrape_configs"]
    sources = {label for rule in job["relabel_configs"] for label in rule.get("source_labels", [])}
    for annotation in SCRAPE_ANNOTATIONS:
        meta = "__meta_kubernetes_pod_annotation_" + annotation.replace(".", "_").replace("/", "_")
        assert meta in sources, annotation
    assert job["kubernetes_sd_configs"][0]["role"] == "pod"
