"""The relaying proxy of the modelled network against real servers: a TCP echo server and a gRPC health
server behind it answer a round trip no sooner than the RTT (and not much later), a large payload takes
its time at the bandwidth limit, and on exit the relay leaves no thread, listener or connection behind."""

from __future__ import annotations

import socket
import statistics
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from fpgaflow_inference.netem import Network, Relay, split_address

pytestmark = pytest.mark.slow
RTT_MS = 40.0
MARGIN_MS = 25.0  # a loaded 2-core machine's scheduling, on top of the modelled round trip


@contextmanager
def echo_server() -> Iterator[tuple[str, list[socket.socket]]]:
    """A TCP echo server on a thread: its address and the connections it accepted."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []

    def echo(conn: socket.socket) -> None:
        with conn:
            while data := conn.recv(65536):
                conn.sendall(data)

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            accepted.append(conn)
            threading.Thread(target=echo, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{listener.getsockname()[1]}", accepted
    finally:
        listener.shutdown(socket.SHUT_RDWR)  # wakes the accept()
        listener.close()
        thread.join(timeout=5)


def connect(address: str) -> socket.socket:
    sock = socket.create_connection(split_address(address), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def echo_round_trip(sock: socket.socket, payload: bytes) -> float:
    """Seconds from sending ``payload`` to having all of it back."""
    start = time.perf_counter()
    sock.sendall(payload)
    got = 0
    while got < len(payload):
        chunk = sock.recv(1 << 20)
        assert chunk, "the relay closed the connection"
        got += len(chunk)
    return time.perf_counter() - start


def test_a_round_trip_through_the_relay_takes_the_rtt_and_a_large_payload_the_bandwidth():
    threads = threading.active_count()
    bandwidth_mbps = 8.0
    with echo_server() as (upstream, accepted):
        relay = Relay(upstream, Network("remote", RTT_MS, bandwidth_mbps))
        with relay as address:
            assert address.startswith("127.0.0.1:") and address != upstream
            sock = connect(address)
            trips = [echo_round_trip(sock, b"x") * 1000 for _ in range(10)]
            assert min(trips) >= RTT_MS, trips
            assert statistics.median(trips) < RTT_MS + MARGIN_MS, trips
            # 400 kB each way at 8 Mbit/s: 0.4 s on each link, the two overlapped (echoed as it comes)
            payload = bytes(range(256)) * 1600
            seconds = echo_round_trip(sock, payload)
            serialization = len(payload) * 8 / (bandwidth_mbps * 1e6)
            assert serialization + RTT_MS / 1000 <= seconds < serialization + RTT_MS / 1000 + 0.35, seconds
            assert relay.accepted == 1 and len(accepted) == 1
            # stopped with a connection open: the client's connection is closed, as is the server's
        sock.settimeout(5)
        try:
            assert sock.recv(10) == b""
        except ConnectionResetError:
            pass
        sock.close()
        with pytest.raises(OSError):
            connect(address).close()  # nothing listens there any more
    deadline = time.monotonic() + 5
    while threading.active_count() > threads and time.monotonic() < deadline:
        time.sleep(0.05)  # the echo server's thread for the connection the relay closed
    assert threading.active_count() == threads, threading.enumerate()


def test_a_delay_only_relay_passes_bytes_unchanged_in_order():
    with echo_server() as (upstream, _), Relay(upstream, Network("near", 2.0)) as address, connect(address) as sock:
        payload = bytes(range(256)) * 4096  # 1 MiB, in many chunks
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)  # the end of stream goes through too: the echo server closes, so does the relay
        received = bytearray()
        while chunk := sock.recv(1 << 20):
            received += chunk
        assert bytes(received) == payload


def test_a_grpc_server_behind_the_relay_answers_a_rtt_later():
    from concurrent import futures

    import grpc
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with Relay(f"127.0.0.1:{port}", Network("remote", RTT_MS)) as address, grpc.insecure_channel(address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            request = health_pb2.HealthCheckRequest(service="")
            assert stub.Check(request, timeout=10).status == health_pb2.HealthCheckResponse.SERVING  # connects (untimed)
            trips = []
            for _ in range(10):
                start = time.perf_counter()
                stub.Check(request, timeout=10)
                trips.append((time.perf_counter() - start) * 1000)
            assert min(trips) >= RTT_MS, trips
            assert statistics.median(trips) < RTT_MS + MARGIN_MS, trips
    finally:
        server.stop(None).wait()


def test_the_load_generator_runs_its_clients_through_the_relay_and_records_the_network():
    """run_load with a remote network: every timed request takes at least the RTT, the row names the network,
    and the relay is gone after the run."""
    from concurrent import futures

    import grpc

    from fpgaflow_inference.loadgen import PROTOCOLS, Load, run_load

    method = PROTOCOLS["tfserving"].method
    service, name = method.strip("/").split("/")
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(
        service, {name: grpc.unary_unary_rpc_method_handler(lambda request, context: b"")})])  # bytes in, bytes out
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        remote = run_load("cpu", f"127.0.0.1:{port}", [b"x" * 64], 1, Load(2, 15, warmup=2), network=Network("remote", RTT_MS))
        direct = run_load("cpu", f"127.0.0.1:{port}", [b"x" * 64], 1, Load(2, 15, warmup=2), network=Network())
    finally:
        server.stop(None).wait()
    row = remote.summary()
    assert (row["ok"], row["errors"], row["network"], row["rtt_ms"], row["bandwidth_mbps"]) == (30, {}, "remote", RTT_MS, None)
    assert remote.latencies_ms.min() >= RTT_MS and row["p50_ms"] < RTT_MS + MARGIN_MS
    assert direct.summary()["network"] == "on-prem" and direct.summary()["p50_ms"] < RTT_MS / 4
    assert not [t for t in threading.enumerate() if t.name.startswith("netem-")], "the relay's thread ended with the run"
