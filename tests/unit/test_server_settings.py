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
