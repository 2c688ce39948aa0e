"""The Open Inference Protocol over gRPC as its users' clients speak it: tritonclient.grpc (metadata,
config, statistics, raw contents, streaming), KServe's InferenceGRPCClient (typed and raw contents),
perf_analyzer -i grpc in its default mode; bad input answered with the right status; rows of gRPC and
HTTP requests batched together; the inference token."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import pytest

from launchkit.serve.api.protos import open_inference_pb2
from tests.serve.compat.conftest import perf_analyzer, run_client
from tests.serve.conftest import Server, free_port, make_archive, tiny_logits

PHOTO = Path(__file__).parents[2] / "fixtures" / "payloads" / "rocket.jpg"
ROWS = [[i / 64 for i in range(64)], [1.0] * 64, [-0.5] * 64]
PROTO_MODULE = Path(open_inference_pb2.__file__)


@pytest.fixture(scope="module")
def grpc_server(example_archives, tmp_path_factory):
    store = tmp_path_factory.mktemp("grpc-store")
    make_archive(store, "digest_handler.py", "digest")
    (store / "tiny.mar").symlink_to(example_archives["tiny"])
    config = store / "config.properties"
    config.write_text(f"max_request_size={4 * 2**20}\n")
    port = free_port()
    with Server(["--model-store", str(store), "--models", "tiny=tiny.mar,digest=digest.mar", "--ts-config",
                 str(config), "--batch-size", "8", "--max-batch-delay", "5", "--grpc-address",
                 f"127.0.0.1:{port}"], free_port()) as server:
        server.grpc_port = port
        yield server


TRITON = """
    import json, sys
    import numpy as np
    import tritonclient.grpc as grpcclient
    args = json.load(sys.stdin)
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{args['port']}")
    rows = np.array(args["rows"], dtype=np.float32)
    tensor = grpcclient.InferInput("input0", list(rows.shape), "FP32")
    tensor.set_data_from_numpy(rows)
    answer = client.infer("tiny", [tensor], request_id="t1")
    named = client.infer("tiny", [tensor], outputs=[grpcclient.InferRequestedOutput("output0")])
    streamed = []
    client.start_stream(callback=lambda result, error: streamed.append(
        (result.get_response().id, result.as_numpy("output0").tolist()) if error is None else ("error", str(error))))
    for index in range(3):
        one = grpcclient.InferInput("input0", [1, 64], "FP32")
        one.set_data_from_numpy(rows[index:index + 1])
        client.async_stream_infer("tiny", [one], request_id=f"s{index}")
    client.stop_stream()  # waits for every answer
    print(json.dumps({
        "live": client.is_server_live(), "ready": client.is_server_ready(), "model_ready": client.is_model_ready("tiny"),
        "server": client.get_server_metadata(as_json=True), "metadata": client.get_model_metadata("tiny", as_json=True),
        "config": client.get_model_config("tiny", as_json=True)["config"],
        "outputs": answer.as_numpy("output0").tolist(), "id": answer.get_response().id,
        "named": named.as_numpy("output0").tolist(), "streamed": sorted(streamed),
        "stats": client.get_inference_statistics("tiny", as_json=True),
    }))
"""


def test_tritonclient_grpc_reads_metadata_and_infers_raw_and_streamed(grpc_server):
    expected = tiny_logits(*ROWS)  # the model run in this process
    answer = run_client(TRITON, port=grpc_server.grpc_port, rows=ROWS)
    assert answer["live"] and answer["ready"] and answer["model_ready"]
    assert answer["server"]["name"] == "launchkit" and "statistics" in answer["server"]["extensions"]
    assert answer["metadata"]["inputs"] == [{"name": "input0", "datatype": "FP32", "shape": ["-1", "64"]}]
    assert answer["metadata"]["outputs"] == [{"name": "output0", "datatype": "FP32", "shape": ["-1", "10"]}]
    config = answer["config"]
    assert config["max_batch_size"] == 8 and config["input"][0]["dims"] == ["64"]
    assert config["input"][0]["data_type"] == "TYPE_FP32"
    assert config["dynamic_batching"]["max_queue_delay_microseconds"] == "5000"
    assert config["version_policy"] == {"specific": {"versions": ["1"]}}
    assert answer["id"] == "t1"
    for outputs in (answer["outputs"], answer["named"]):
        assert _flat(outputs) == pytest.approx(_flat(expected), abs=1e-4)
    assert [entry[0] for entry in answer["streamed"]] == ["s0", "s1", "s2"]
    for index, (_, outputs) in enumerate(answer["streamed"]):
        assert _flat(outputs) == pytest.approx(expected[index], abs=1e-4)
    stats = answer["stats"]["model_stats"][0]
    assert stats["name"] == "tiny" and stats["version"] == "1" and int(stats["inference_count"]) >= 9


KSERVE = """
    import asyncio, json, sys
    import numpy as np
    from kserve import InferenceGRPCClient, InferInput, InferRequest
    args = json.load(sys.stdin)

    async def main():
        client = InferenceGRPCClient(f"127.0.0.1:{args['port']}")
        rows = np.array(args["rows"], dtype=np.float32)
        answers = {}
        for binary in (False, True):  # typed contents (fp32_contents), then raw_input_contents
            tensor = InferInput("input0", list(rows.shape), "FP32")
            tensor.set_data_from_numpy(rows, binary_data=binary)
            response = await client.infer(InferRequest(model_name="tiny", infer_inputs=[tensor], request_id=f"k{binary}"))
            answers[str(binary)] = {"id": response.id, "outputs": response.outputs[0].as_numpy().tolist()}
        photo = InferInput("input0", [1], "BYTES")
        photo.set_data_from_numpy(np.array([open(args["photo"], "rb").read()], dtype=np.object_), binary_data=True)
        digest = await client.infer(InferRequest(model_name="digest", infer_inputs=[photo]))
        answers["digest"] = json.loads(digest.outputs[0].as_numpy()[0])
        answers["ready"] = await client.is_model_ready("tiny")
        await client.close()
        print(json.dumps(answers))

    asyncio.run(main())
"""


def test_the_kserve_grpc_client_sends_typed_and_raw_contents_and_a_photo(grpc_server):
    expected = tiny_logits(*ROWS)
    answer = run_client(KSERVE, port=grpc_server.grpc_port, rows=ROWS, photo=str(PHOTO))
    assert answer["ready"]
    for binary in ("False", "True"):
        assert answer[binary]["id"] == f"k{binary}"
        assert _flat(answer[binary]["outputs"]) == pytest.approx(_flat(expected), abs=1e-4)
    photo = PHOTO.read_bytes()
    assert len(photo) > 100_000  # a real photo, as users send them
    assert answer["digest"] == {"bytes": len(photo), "sha256": hashlib.sha256(photo).hexdigest()}


BAD = """
    import importlib.util, json, sys
    import grpc
    args = json.load(sys.stdin)
    spec = importlib.util.spec_from_file_location("open_inference_pb2", args["proto"])
    pb = importlib.util.module_from_spec(spec); spec.loader.exec_module(pb)  # launchkit's messages, by path
    channel = grpc.insecure_channel(f"127.0.0.1:{args['port']}",
                                    options=[("grpc.max_send_message_length", 64 * 2**20)])
    infer = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer",
                                response_deserializer=pb.ModelInferResponse.FromString)
    Input = pb.ModelInferRequest.InferInputTensor

    def status(message, raw=False):
        try:
            infer(message if raw else message.SerializeToString())
            return ["OK", ""]
        except grpc.RpcError as error:
            return [error.code().name, error.details()]

    fp32 = lambda n: pb.InferTensorContents(fp32_contents=[0.5] * n)
    cases = {
        "malformed protobuf": status(b"\\xff\\xff\\xff\\x0fnot a protobuf message", raw=True),
        "unknown model": status(pb.ModelInferRequest(model_name="nope", inputs=[
            Input(name="input0", datatype="FP32", shape=[1, 64], contents=fp32(64))])),
        "wrong shape": status(pb.ModelInferRequest(model_name="tiny", inputs=[
            Input(name="input0", datatype="FP32", shape=[1, 63], contents=fp32(63))])),
        "shape and contents disagree": status(pb.ModelInferRequest(model_name="tiny", inputs=[
            Input(name="input0", datatype="FP32", shape=[2, 64], contents=fp32(64))])),
        "unknown datatype": status(pb.ModelInferRequest(model_name="tiny", inputs=[
            Input(name="input0", datatype="FP33", shape=[1, 64], contents=fp32(64))])),
        "int8 out of range": status(pb.ModelInferRequest(model_name="tiny", inputs=[
            Input(name="input0", datatype="INT8", shape=[1, 64], contents=pb.InferTensorContents(int_contents=[300] * 64))])),
        "raw contents short of inputs": status(pb.ModelInferRequest(model_name="tiny", inputs=[
            Input(name="input0", datatype="FP32", shape=[1, 64]), Input(name="extra", datatype="FP32", shape=[1, 1])],
            raw_input_contents=[bytes(256)])),
        "raw contents of the wrong size": status(pb.ModelInferRequest(model_name="tiny", inputs=[
            Input(name="input0", datatype="FP32", shape=[1, 64])], raw_input_contents=[bytes(255)])),
        "no inputs": status(pb.ModelInferRequest(model_name="tiny")),
        "larger than max_request_size": status(pb.ModelInferRequest(model_name="digest", inputs=[
            Input(name="input0", datatype="BYTES", shape=[1])], raw_input_contents=[bytes(5 * 2**20)])),
        "afterwards, a good one": status(pb.ModelInferRequest(model_name="tiny", inputs=[
            Input(name="input0", datatype="FP32", shape=[1, 64], contents=fp32(64))])),
    }
    print(json.dumps(cases))
"""


def test_bad_requests_get_the_right_status_and_no_worker_ends(grpc_server):
    pids = grpc_server.worker_pids()
    cases = run_client(BAD, port=grpc_server.grpc_port, proto=str(PROTO_MODULE))
    expected = {
        "malformed protobuf": ("INVALID_ARGUMENT", "not a valid inference.ModelInferRequest"),
        "unknown model": ("NOT_FOUND", "nope"),
        "wrong shape": ("INVALID_ARGUMENT", "[1, 63]"),
        "shape and contents disagree": ("INVALID_ARGUMENT", "input0"),
        "unknown datatype": ("INVALID_ARGUMENT", "FP33"),
        "int8 out of range": ("INVALID_ARGUMENT", "does not fit INT8"),
        "raw contents short of inputs": ("INVALID_ARGUMENT", "raw_input_contents"),
        "raw contents of the wrong size": ("INVALID_ARGUMENT", "input0"),
        "no inputs": ("INVALID_ARGUMENT", "inputs"),
        "larger than max_request_size": ("RESOURCE_EXHAUSTED", ""),
        "afterwards, a good one": ("OK", ""),
    }
    for case, (code, words) in expected.items():
        assert cases[case][0] == code, (case, cases[case])
        assert words in cases[case][1], (case, cases[case])
    assert grpc_server.worker_pids() == pids  # no worker ended or was replaced
    assert "Traceback" not in grpc_server.output()


def test_perf_analyzer_over_grpc_in_its_default_mode(grpc_server, tmp_path):
    report = tmp_path / "pa.csv"
    result = perf_analyzer(["-m", "tiny", "-u", f"127.0.0.1:{grpc_server.grpc_port}", "-i", "grpc",
                            "--concurrency-range", "1:2", "-p", "500", "-s", "1000", "-f", str(report)])
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "Successful request count" in result.stdout  # the statistics extension was read over gRPC
    rows = list(csv.DictReader(report.open()))
    assert sorted(int(row["Concurrency"]) for row in rows) == [1, 2]
    assert all(float(row["Inferences/Second"]) > 0 for row in rows)


PROTOCOL = """
    import json
    from tritonclient.grpc import service_pb2
    out = {}
    def walk(message):
        for field in message.fields:
            out[f"{message.full_name}.{field.name}"] = [field.number, field.type, field.is_repeated]
        for nested in message.nested_types:
            walk(nested)
    for message in service_pb2.DESCRIPTOR.message_types_by_name.values():
        walk(message)
    from tritonclient.grpc import model_config_pb2
    for message in model_config_pb2.DESCRIPTOR.message_types_by_name.values():
        walk(message)
    methods = {m.name: [m.input_type.full_name, m.output_type.full_name]
               for m in service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"].methods}
    print(json.dumps({"fields": out, "methods": methods}))
"""


def test_every_field_and_method_is_the_protocols_own():
    """Field numbers, types and labels as tritonclient's own descriptors have them (a wrong number would
    read as an unknown field and pass silently)."""
    theirs = run_client(PROTOCOL)
    ours: dict[str, list] = {}

    def walk(message) -> None:  # noqa: ANN001
        for field in message.fields:
            ours[f"{message.full_name}.{field.name}"] = [field.number, field.type, field.is_repeated]
        for nested in message.nested_types:
            if not nested.GetOptions().map_entry:
                walk(nested)

    for message in open_inference_pb2.DESCRIPTOR.message_types_by_name.values():
        walk(message)
    assert len(ours) > 100
    assert {name: ours[name] for name in ours} == {name: theirs["fields"].get(name) for name in ours}
    service = open_inference_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    for method in service.methods:
        assert [method.input_type.full_name, method.output_type.full_name] == theirs["methods"][method.name]


MIXED = """
    import json, sys, threading
    import numpy as np
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient
    args = json.load(sys.stdin)
    bearer = {"authorization": f"Bearer {args['token']}"}  # copied per call: tritonclient.http adds to the dict
    over_grpc = grpcclient.InferenceServerClient(f"127.0.0.1:{args['grpc']}")
    over_http = httpclient.InferenceServerClient(f"127.0.0.1:{args['http']}", concurrency=2)
    answers = {"live without the token": over_grpc.is_server_live()}
    try:
        over_grpc.get_model_metadata("tiny")
        answers["metadata without the token"] = "OK"
    except Exception as error:
        answers["metadata without the token"] = error.status()
    before = over_grpc.get_inference_statistics("tiny", headers=bearer, as_json=True)["model_stats"][0]
    row = np.full((1, 64), 0.25, dtype=np.float32)

    def tensor(module):
        made = module.InferInput("input0", [1, 64], "FP32")
        made.set_data_from_numpy(row)
        return made

    results, threads = [], []
    for client, module in ((over_grpc, grpcclient), (over_http, httpclient)) * 2:
        call = lambda client=client, module=module: results.append(
            client.infer("tiny", [tensor(module)], headers=dict(bearer)).as_numpy("output0").tolist())
        threads.append(threading.Thread(target=call))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    after = over_grpc.get_inference_statistics("tiny", headers=bearer, as_json=True)["model_stats"][0]
    answers["results"] = results
    answers["rows"] = int(after["inference_count"]) - int(before.get("inference_count", 0))
    answers["batches"] = int(after["execution_count"]) - int(before.get("execution_count", 0))
    print(json.dumps(answers))
"""


def test_grpc_and_http_rows_batch_together_behind_the_token(example_archives):
    """Four single-row requests, two over each protocol, at once: one batch of four (batch 4, a batch
    waits up to 10 s for its rows, so only a full batch leaves early)."""
    grpc_port, token = free_port(), "grpc-test-token"
    with Server([str(example_archives["tiny"]), "--batch-size", "4", "--max-batch-delay", "10000",
                 "--grpc-address", f"127.0.0.1:{grpc_port}"], free_port(),
                env={"LAUNCHKIT_INFERENCE_TOKEN": token}) as server:
        answer = run_client(MIXED, grpc=grpc_port, http=server.port, token=token)
    assert answer["live without the token"] is True
    assert answer["metadata without the token"] == "StatusCode.UNAUTHENTICATED"
    expected = tiny_logits([0.25] * 64)
    assert len(answer["results"]) == 4
    for result in answer["results"]:
        assert _flat(result) == pytest.approx(_flat(expected), abs=1e-4)
    assert (answer["rows"], answer["batches"]) == (4, 1)


def _flat(rows: list) -> list[float]:
    return [value for row in rows for value in (row if isinstance(row, list) else [row])]


def test_grpc_address_settings_and_a_taken_port(example_archives, tmp_path):
    """config.properties' grpc_inference_address turns it on; a taken port is a clear error, not a traceback."""
    import socket
    import subprocess
    import sys

    from launchkit.serve.settings import ServerFlags, server_config

    config = tmp_path / "config.properties"
    config.write_text("grpc_inference_address=127.0.0.1:8001\n")
    settled = server_config(ServerFlags(ts_config=str(config)), environ={})
    assert settled.effective()["grpc_inference_address"] == "127.0.0.1:8001"
    assert server_config(ServerFlags(), environ={}).grpc_inference_address is None
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run([sys.executable, "-m", "launchkit", "serve", str(example_archives["tiny"]),
                               "--inference-address", f"127.0.0.1:{free_port()}", "--management-address",
                               f"127.0.0.1:{free_port()}", "--metrics-address", f"127.0.0.1:{free_port()}",
                               "--grpc-address", f"127.0.0.1:{port}"], capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert f"cannot listen on 127.0.0.1:{port} (grpc_inference_address)" in done.stderr + done.stdout
    assert "Traceback" not in done.stderr + done.stdout
    json.dumps(settled.effective())  # the startup report prints it
