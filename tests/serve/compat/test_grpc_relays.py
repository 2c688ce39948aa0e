"""gRPC served by relay processes (``--grpc-processes``): a relay that dies is replaced, a call whose client
gave up is not run, several relays share the port, no relay outlives its server, and 0 still serves
gRPC on the frontend's own loop. The clients' own behaviour through the relays is in test_grpc.py."""

from __future__ import annotations

import os
import signal
import threading

import grpc
import psutil
import pytest
from hypothesis import given
from hypothesis import strategies as st

from launchkit.serve.api.grpc_frames import Frame, FrameReader, Kind, call_frame, frame, parse_call
from launchkit.serve.api.protos import open_inference_pb2 as pb
from tests.serve.conftest import Server, free_port, tiny_logits, wait_for

INFER = "/inference.GRPCInferenceService/ModelInfer"
STATISTICS = "/inference.GRPCInferenceService/ModelStatistics"
ROW = [0.25] * 64


def _request(row: list[float] = ROW) -> pb.ModelInferRequest:
    contents = pb.InferTensorContents(fp32_contents=row)
    return pb.ModelInferRequest(model_name="tiny", inputs=[pb.ModelInferRequest.InferInputTensor(
        name="input0", datatype="FP32", shape=[1, 64], contents=contents)])


def _infer(port: int, timeout: float = 30.0) -> list[float]:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.unary_unary(INFER, request_serializer=pb.ModelInferRequest.SerializeToString,
                                   response_deserializer=pb.ModelInferResponse.FromString)
        answer = call(_request(), timeout=timeout)
    import struct

    raw = answer.raw_output_contents[0]
    return list(struct.unpack(f"<{len(raw) // 4}f", raw))


def _counts(port: int) -> tuple[int, int]:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.unary_unary(STATISTICS, request_serializer=pb.ModelStatisticsRequest.SerializeToString,
                                   response_deserializer=pb.ModelStatisticsResponse.FromString)
        stats = call(pb.ModelStatisticsRequest(name="tiny"), timeout=30).model_stats[0]
    return stats.inference_count, stats.execution_count


def _serve(archive, *args: str) -> tuple[Server, int]:  # noqa: ANN001
    port = free_port()
    return Server([str(archive), "--grpc-address", f"127.0.0.1:{port}", *args], free_port()), port


def test_a_relay_that_dies_is_replaced_and_the_workers_stay(example_archives):
    server, port = _serve(example_archives["tiny"])
    with server:
        expected = tiny_logits(ROW)[0]
        assert _infer(port) == pytest.approx(expected, abs=1e-4)
        (relay,) = server.relay_pids()
        workers = server.worker_pids()
        os.kill(relay, signal.SIGKILL)
        wait_for(lambda: server.relay_pids() not in ([], [relay]), what="a new relay")

        def answers() -> bool:
            try:
                return _infer(port, timeout=5) == pytest.approx(expected, abs=1e-4)
            except grpc.RpcError:
                return False  # the new relay is still starting

        wait_for(answers, what="gRPC answered again")
        assert server.worker_pids() == workers
        assert server.request("GET", "/ping")[0] == 200
        assert f"gRPC relay {relay} exited" in server.output()


def test_a_call_whose_client_gave_up_is_not_run(example_archives):
    """Batch 4, a batch waits up to 10 s for its rows: a call whose deadline passes while it waits must
    leave the queue (else it would be run with the next rows: five rows instead of four)."""
    server, port = _serve(example_archives["tiny"], "--batch-size", "4", "--max-batch-delay", "10000")
    with server:
        with pytest.raises(grpc.RpcError) as gave_up:
            _infer(port, timeout=0.5)
        assert gave_up.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
        results: list[list[float]] = []
        calls = [threading.Thread(target=lambda: results.append(_infer(port))) for _ in range(4)]
        for call in calls:
            call.start()
        for call in calls:
            call.join(timeout=60)
        assert len(results) == 4
        assert _counts(port)[0] == 4  # the abandoned row was never run


def test_two_relays_share_the_port_and_none_outlives_its_server(example_archives):
    server, port = _serve(example_archives["tiny"], "--grpc-processes", "2")
    with server:
        relays = server.relay_pids()
        assert len(relays) == 2
        before = {pid: psutil.Process(pid).cpu_times().user for pid in relays}
        expected = tiny_logits(ROW)[0]
        for _ in range(40):  # a new connection each: the kernel spreads them over both relays
            assert _infer(port) == pytest.approx(expected, abs=1e-4)
        assert _counts(port)[0] == 40
        assert "gRPC served by 2 relay processes" in server.output()
        assert all(psutil.Process(pid).cpu_times().user >= before[pid] for pid in relays)
        children = psutil.Process(server.proc.pid).children(recursive=True)
        os.kill(server.proc.pid, signal.SIGKILL)  # the frontend dies without a word: the relays see its socket close
        try:
            wait_for(lambda: not any(psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
                                     for pid in relays), what="the relays exited")
        finally:
            for child in children:  # workers and the fork server: this test ends what it started
                if psutil.pid_exists(child.pid):
                    child.kill()


def test_grpc_processes_0_serves_on_the_frontends_loop(example_archives):
    server, port = _serve(example_archives["tiny"], "--grpc-processes", "0")
    with server:
        assert server.relay_pids() == []
        assert _infer(port) == pytest.approx(tiny_logits(ROW)[0], abs=1e-4)
        assert "gRPC served on the frontend's event loop" in server.output()


def test_a_bad_grpc_processes_setting_is_refused(tmp_path):
    from launchkit.core.errors import UsageError
    from launchkit.serve.settings import ServerFlags, server_config

    config = tmp_path / "config.properties"
    for value in ("-1", "two"):
        config.write_text(f"grpc_processes={value}\n")
        with pytest.raises(UsageError, match="grpc_processes"):
            server_config(ServerFlags(ts_config=str(config)), environ={})
    config.write_text("grpc_processes=3\n")
    assert server_config(ServerFlags(ts_config=str(config)), environ={}).grpc_processes == 3


FRAMES = st.lists(st.tuples(st.sampled_from(list(Kind)), st.integers(0, 2**32 - 1), st.binary(max_size=300)),
                  max_size=12)


@given(FRAMES, st.lists(st.integers(1, 400), max_size=30))
def test_frames_come_out_as_they_went_in_however_the_stream_is_cut(frames, cuts):
    stream = b"".join(frame(kind, call, payload) for kind, call, payload in frames)
    reader, read, start = FrameReader(), [], 0
    for cut in cuts + [len(stream)]:
        read += reader.feed(stream[start:start + cut])
        start += cut
    read += reader.feed(stream[start:])
    assert read == [Frame(kind, call, payload) for kind, call, payload in frames]


@given(st.text(max_size=80), st.text(max_size=200), st.one_of(st.none(), st.binary(max_size=200)))
def test_a_call_frame_says_what_was_called(method, authorization, message):
    (read,) = FrameReader().feed(call_frame(7, method, authorization, message))
    assert read.kind is Kind.CALL and read.call == 7
    assert parse_call(read.payload) == (method, authorization, message)
