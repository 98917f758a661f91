"""The modelled network's schedule (fpgaflow_inference.netem): when each chunk leaves a link with a delay
and a bandwidth limit, and the networks' names and descriptions."""

from __future__ import annotations

import numpy as np
import pytest

from fpgaflow_inference.netem import Link, Network, delivery_times, split_address


def test_a_delay_only_link_shifts_every_chunk_by_the_one_way_delay():
    arrivals = [(0.0, 100), (0.001, 5000), (0.5, 1)]
    assert delivery_times(arrivals, one_way_s=0.02) == pytest.approx([0.02, 0.021, 0.52])


def test_a_bandwidth_limit_serializes_chunks_one_after_another():
    # 1 Mbit/s: 125,000 bytes take 1 s on the link; two sent at once leave 1 s apart, in order
    assert delivery_times([(0.0, 125_000), (0.0, 125_000)], one_way_s=0.01, bits_per_s=1e6) == pytest.approx([1.01, 2.01])
    # a chunk arriving once the link is idle again waits only for its own delay and serialization
    assert delivery_times([(0.0, 1250), (5.0, 1250)], one_way_s=0.01, bits_per_s=1e6) == pytest.approx([0.02, 5.02])
    # an end of stream (0 bytes) leaves after the bytes before it
    assert delivery_times([(0.0, 125_000), (0.1, 0)], one_way_s=0.0, bits_per_s=1e6) == pytest.approx([1.0, 1.0])


def test_deliveries_keep_their_order_and_never_beat_the_link():
    rng = np.random.default_rng(7)
    arrivals = list(zip(np.cumsum(rng.exponential(0.002, 500)).tolist(), rng.integers(0, 20_000, 500).tolist(), strict=True))
    one_way, bits = 0.025, 50e6
    times = delivery_times(arrivals, one_way, bits)
    assert times == sorted(times)
    for (arrival, n), t in zip(arrivals, times, strict=True):
        assert t >= arrival + one_way + n * 8 / bits - 1e-12
    # the link is never busier than its bandwidth: the bytes delivered by time t were serialized in time
    sizes = [n for _, n in arrivals]
    assert times[-1] - times[0] >= sum(sizes[1:]) * 8 / bits - 1e-9
    link = Link(one_way, bits)
    assert [link.deliver(a, n) for a, n in arrivals] == times and link.last_delivery == times[-1]


def test_networks_say_what_they_model():
    assert Network().direct and Network().describe() == "direct"
    assert not Network("remote", 50).direct and Network("remote", 50).describe() == "50 ms RTT, modelled"
    assert Network("wan", 0, 100).describe() == "100 Mbit/s, modelled" and not Network("wan", 0, 100).direct
    assert (Network("remote", 50).one_way_s, Network("x", 1, 8).bits_per_s) == (0.025, 8e6)
    assert split_address("127.0.0.1:8500") == ("127.0.0.1", 8500) and split_address("[::1]:9") == ("::1", 9)
    with pytest.raises(ValueError, match="HOST:PORT"):
        split_address("localhost")


def test_a_run_row_and_its_latencies_name_the_network():
    from fpgaflow_inference.loadgen import RunResult, csv_table, latency_key

    row = RunResult("fpga", 1, 1, np.array([50.0, 51.0]), {}, 1.0, network=Network("remote", 50)).summary()
    assert (row["network"], row["rtt_ms"], row["bandwidth_mbps"]) == ("remote", 50, None)
    assert "network" not in RunResult("fpga", 1, 1, np.array([1.0]), {}, 1.0).summary(), "not said: no network"
    header, [line] = csv_table([row])
    assert line[header.index("network")] == "remote" and line[header.index("rtt_ms")] == 50
    assert (latency_key("fpga", 1, 4), latency_key("fpga", 1, 4, "remote")) == ("fpga_b1_c4", "fpga@remote_b1_c4")
