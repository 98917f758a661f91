"""Serving configuration flows one way: the spec's serve block, then the command line, then frozen settings."""

import pytest

from fpgaflow.errors import ConfigError
from fpgaflow.spec import ServeSpec
from fpgaflow_inference.server import ServerSettings


def test_without_batching_in_the_spec_each_request_runs_alone():
    settings = ServerSettings.from_spec(ServeSpec())
    assert settings.max_batch_size == 1 and not settings.policy.enabled and settings.pacing is False


def test_the_spec_sets_batching_and_pacing():
    serve = ServeSpec.model_validate({"batching": {"maxBatchSize": 32, "maxLatencyMicros": 250}, "fpgaPacing": True})
    settings = ServerSettings.from_spec(serve, workers=3)
    policy = settings.policy
    assert (policy.max_batch_size, policy.max_delay_s, policy.concurrent_batches) == (32, 250e-6, 3)
    assert settings.pacing is True


def test_the_command_line_overrides_the_spec_and_unset_flags_do_not():
    serve = ServeSpec.model_validate({"batching": {"maxBatchSize": 32, "maxLatencyMicros": 250}, "fpgaPacing": True})
    settings = ServerSettings.from_spec(serve, max_batch_size=1, max_latency_micros=None, pacing=False, port=9000)
    assert (settings.max_batch_size, settings.max_latency_micros, settings.pacing, settings.port) == (1, 250, False, 9000)


def test_limits_reach_the_grpc_options():
    options = dict(ServerSettings(max_message_bytes=1000, max_concurrent_streams=8).grpc_options())
    assert options["grpc.max_receive_message_length"] == options["grpc.max_send_message_length"] == 1000
    assert options["grpc.max_concurrent_streams"] == 8
    assert "grpc.max_concurrent_streams" not in dict(ServerSettings().grpc_options())


def test_tls_needs_both_files(tmp_path):
    cert = tmp_path / "cert.pem"
    cert.write_text("x")
    with pytest.raises(ConfigError, match="--tls-key"):
        ServerSettings(tls_cert=cert).credentials()
    with pytest.raises(ConfigError, match="cannot read the TLS files"):
        ServerSettings(tls_cert=cert, tls_key=tmp_path / "missing.pem").credentials()
    assert ServerSettings().credentials() is None


def test_one_back_end_call_at_a_time_with_batching_unless_asked():
    assert ServerSettings().policy.concurrent_batches == 4
    assert ServerSettings(max_batch_size=64).policy.concurrent_batches == 1
    assert ServerSettings(max_batch_size=64, workers=3).policy.concurrent_batches == 3


def test_the_front_is_native_where_its_executable_is_and_asking_for_it_without_one_is_refused(tmp_path, monkeypatch):
    fake = tmp_path / "fpgaflow-front"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    monkeypatch.setenv("FPGAFLOW_FRONT", str(fake))
    assert ServerSettings().check() == fake  # auto, installed: native
    assert ServerSettings(front="python").check() is None
    monkeypatch.setenv("FPGAFLOW_FRONT", str(tmp_path / "missing"))
    assert ServerSettings().check() is None  # auto, not installed: Python's gRPC server
    with pytest.raises(ConfigError, match="FPGAFLOW_FRONT=.*missing is not an executable"):
        ServerSettings(front="native").check()
    with pytest.raises(ConfigError, match="unknown front 'go'"):
        ServerSettings(front="go").check()


def test_the_native_front_gets_the_same_transport_settings(tmp_path):
    options = ServerSettings(max_message_bytes=1000, max_concurrent_streams=8, grace_seconds=5, tls_cert=tmp_path / "c",
                             tls_key=tmp_path / "k").front_options()
    assert options == ["--max-message-bytes", "1000", "--grace", "5s", "--max-concurrent-streams", "8",
                       "--tls-cert", str(tmp_path / "c"), "--tls-key", str(tmp_path / "k")]
