"""The Open Inference Protocol (KServe v2) as Triton's and KServe's own clients speak it: numpy arrays
as binary tensors by default, tensor metadata, Triton's /config and /stats, perf_analyzer's default mode."""

from __future__ import annotations

import csv
import http.client
import json
import struct
import threading

import pytest

from tests.serve.compat.conftest import perf_analyzer, run_client
from tests.serve.conftest import Server, free_port, tiny_logits

ROW = [i / 64 for i in range(64)]

TRITON = """
    import json, sys
    import numpy as np
    import tritonclient.http as httpclient
    args = json.load(sys.stdin)
    client = httpclient.InferenceServerClient(f"127.0.0.1:{args['port']}")
    rows = np.array(args["rows"], dtype=np.float32)
    tensor = httpclient.InferInput("input0", list(rows.shape), "FP32")
    tensor.set_data_from_numpy(rows)  # binary_data=True: tritonclient's default
    binary = client.infer("tiny", [tensor])  # no outputs named: all of them, in binary
    as_json = client.infer("tiny", [tensor], outputs=[httpclient.InferRequestedOutput("output0", binary_data=False)])
    print(json.dumps({
        "live": client.is_server_live(), "ready": client.is_model_ready("tiny"),
        "metadata": client.get_model_metadata("tiny"), "config": client.get_model_config("tiny"),
        "binary": binary.as_numpy("output0").tolist(), "json": as_json.as_numpy("output0").tolist(),
        "json_response": as_json.get_response(),
        "stats": client.get_inference_statistics("tiny"), "server": client.get_server_metadata(),
    }))
"""

KSERVE = """
    import asyncio, json, sys
    import numpy as np
    from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig
    args = json.load(sys.stdin)

    async def main():
        client = InferenceRESTClient(RESTConfig(protocol="v2"))
        base = f"http://127.0.0.1:{args['port']}"
        rows = np.array(args["rows"], dtype=np.float32)
        tensor = InferInput("input0", list(rows.shape), "FP32")
        tensor.set_data_from_numpy(rows, binary_data=True)
        response = await client.infer(base, InferRequest(model_name="tiny", infer_inputs=[tensor], request_id="k1"),
                                      model_name="tiny")
        ready = await client.is_model_ready(base, "tiny")
        await client.close()
        print(json.dumps({"id": response.id, "outputs": response.outputs[0].as_numpy().tolist(), "ready": ready}))

    asyncio.run(main())
"""


@pytest.fixture(scope="module")
def tiny_server(example_archives):
    with Server([str(example_archives["tiny"]), "--batch-size", "8", "--max-batch-delay", "5"], free_port()) as server:
        yield server


def test_tritonclient_and_the_kserve_sdk_infer_with_numpy_in_binary(tiny_server):
    rows = [ROW, [1.0] * 64, [-0.5] * 64]
    expected = tiny_logits(*rows)  # the model run in this process
    triton = run_client(TRITON, port=tiny_server.port, rows=rows)
    assert triton["live"] and triton["ready"]
    assert triton["metadata"]["inputs"] == [{"name": "input0", "datatype": "FP32", "shape": [-1, 64]}]
    assert triton["metadata"]["outputs"] == [{"name": "output0", "datatype": "FP32", "shape": [-1, 10]}]
    assert triton["config"]["max_batch_size"] == 8 and triton["config"]["input"][0]["dims"] == [64]
    assert triton["config"]["input"][0]["data_type"] == "TYPE_FP32"
    assert triton["config"]["dynamic_batching"]["max_queue_delay_microseconds"] == 5000
    for answer in (triton["binary"], triton["json"]):
        assert _flat(answer) == pytest.approx(_flat(expected), abs=1e-4)
    assert "data" in triton["json_response"]["outputs"][0]  # binary_data=False gets JSON back
    stats = triton["stats"]["model_stats"][0]
    # before asking, the client sent 2 requests of 3 rows (binary, JSON): every row counts as an inference
    assert stats["name"] == "tiny" and stats["inference_count"] >= 6 and stats["inference_stats"]["success"]["count"] >= 2
    assert "binary_tensor_data" in triton["server"]["extensions"]

    kserve = run_client(KSERVE, port=tiny_server.port, rows=rows[:2])
    assert kserve["ready"] and kserve["id"] == "k1"
    assert _flat(kserve["outputs"]) == pytest.approx(_flat(expected[:2]), abs=1e-4)


def _flat(rows: list[list[float]]) -> list[float]:
    return [value for row in rows for value in row]


def test_perf_analyzer_runs_in_its_default_mode(tiny_server, tmp_path):
    report = tmp_path / "pa.csv"
    result = perf_analyzer(["-m", "tiny", "-u", f"127.0.0.1:{tiny_server.port}", "--concurrency-range", "1:2",
                            "-p", "500", "-s", "1000", "-f", str(report)])  # -s: any window is stable (a noisy CI machine)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "Successful request count" in result.stdout  # server-side statistics were read
    rows = list(csv.DictReader(report.open()))
    assert [int(row["Concurrency"]) for row in sorted(rows, key=lambda r: int(r["Concurrency"]))] == [1, 2]
    assert all(float(row["Inferences/Second"]) > 0 for row in rows)


def _raw(port: int, body: bytes, header_length: int | None) -> tuple[int, dict]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"content-type": "application/octet-stream"}
    if header_length is not None:
        headers["inference-header-content-length"] = str(header_length)
    try:
        connection.request("POST", "/v2/models/tiny/infer", body, headers)
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def _binary(inputs: list[dict], data: bytes) -> tuple[bytes, int]:
    head = json.dumps({"inputs": inputs}).encode()
    return head + data, len(head)


def test_malformed_binary_requests_are_400s_and_nothing_else_in_flight_is_hurt(tiny_server):
    good_body, good_length = _binary([{"name": "input0", "shape": [2, 64], "datatype": "FP32",
                                       "parameters": {"binary_data_size": 512}}], struct.pack("<128f", *(ROW * 2)))
    answers: list[int] = []

    def steady() -> None:
        for _ in range(20):
            answers.append(_raw(tiny_server.port, good_body, good_length)[0])

    thread = threading.Thread(target=steady)
    thread.start()
    cases = [
        (_binary([{"name": "input0", "shape": [1, 64], "datatype": "FP32", "parameters": {"binary_data_size": 256}}],
                 b"\0" * 256)[0], 10**6, "body has only"),
        (*_binary([{"name": "input0", "shape": [1, 64], "datatype": "FP32", "parameters": {"binary_data_size": 200}}],
                  b"\0" * 200), "input 'input0': FP32 shape [1, 64] needs 256 bytes"),
        (*_binary([{"name": "input0", "shape": [2**40, 64], "datatype": "FP32",
                    "parameters": {"binary_data_size": 256}}], b"\0" * 256), "input 'input0'"),
        (*_binary([{"name": "input0", "shape": [1, 64], "datatype": "FP8", "parameters": {"binary_data_size": 64}}],
                  b"\0" * 64), "input 'input0': datatype 'FP8'"),
        (*_binary([{"name": "input0", "shape": [1, 64], "datatype": "FP32",
                    "parameters": {"binary_data_size": 2**62}}], b"\0" * 256), "runs past the end"),
        (good_body, None, "Inference-Header-Content-Length"),  # binary without its header
    ]
    for body, length, message in cases:
        status, answer = _raw(tiny_server.port, body, length)
        assert status == 400 and message in answer["error"], (message, answer)
    thread.join()
    assert answers == [200] * 20
    status, _ = _raw(tiny_server.port, good_body, good_length)
    assert status == 200


def test_tensor_metadata_is_learned_from_the_first_request_when_none_is_declared(half_plus_two):
    with Server([str(half_plus_two)], free_port()) as server:
        status, _, body = server.request("GET", "/v2/models/half_plus_two")
        assert status == 200 and json.loads(body)["inputs"] == []
        request = {"inputs": [{"name": "x", "shape": [3], "datatype": "FP32", "data": [1.0, 2.0, 5.0]}]}
        status, _, body = server.request("POST", "/v2/models/half_plus_two/infer", json.dumps(request).encode())
        assert status == 200 and json.loads(body)["outputs"][0]["data"] == [2.5, 3.0, 4.5]
        metadata = json.loads(server.request("GET", "/v2/models/half_plus_two")[2])
        assert metadata["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1]}]
        assert metadata["outputs"] == [{"name": "output0", "datatype": "FP32", "shape": [-1]}]
        assert metadata["launchkit"]["tensors_from"] == "learned from the first successful request"
