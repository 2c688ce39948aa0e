"""TorchServe's gRPC APIs called through stubs generated from TorchServe's own .proto files (taken from
its frontend jar in .venv-clients), with the calls of its client script (ts_scripts/torchserve_grpc_client.py:
infer with ``input={"data": ...}``, register, unregister) and the rest of both services."""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

import pytest

from tests.serve.compat.conftest import CLIENTS, run_client
from tests.serve.conftest import Server, free_port, make_archive, tiny_logits

PHOTO = Path(__file__).parents[2] / "fixtures" / "payloads" / "rocket.jpg"
TOKEN = "grpc-management-token"

CLIENT = """
    import json, subprocess, sys, tempfile, zipfile
    args = json.load(sys.stdin)
    protos = tempfile.mkdtemp()
    with zipfile.ZipFile(args["jar"]) as jar:  # TorchServe's own protos, as its frontend ships them
        for name in ("proto/inference.proto", "proto/management.proto", "google/rpc/status.proto"):
            jar.extract(name, protos)
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", f"-I{protos}/proto", f"-I{protos}", f"--python_out={protos}",
                    f"--grpc_python_out={protos}", "inference.proto", "management.proto", "google/rpc/status.proto"],
                   check=True)
    sys.path.insert(0, protos)
    import grpc, inference_pb2, inference_pb2_grpc, management_pb2, management_pb2_grpc
    from google.protobuf import empty_pb2

    inference = inference_pb2_grpc.InferenceAPIsServiceStub(grpc.insecure_channel(f"127.0.0.1:{args['inference']}"))
    management = management_pb2_grpc.ManagementAPIsServiceStub(grpc.insecure_channel(f"127.0.0.1:{args['management']}"))
    token = (("authorization", f"Bearer {args['token']}"),)
    out = {}

    def call(name, method, request, **kwargs):
        try:
            answer = method(request, **kwargs)
            out[name] = ["OK", answer.msg if hasattr(answer, "msg") else answer]
        except grpc.RpcError as error:
            out[name] = [error.code().name, error.details()]
        return out[name]

    out["ping"] = json.loads(inference.Ping(empty_pb2.Empty()).health)
    tiny = bytes.fromhex(args["row"])
    out["infer tiny"] = json.loads(inference.Predictions(
        inference_pb2.PredictionsRequest(model_name="tiny", input={"data": tiny})).prediction)
    call("register without the token", management.RegisterModel,
         management_pb2.RegisterModelRequest(url="digest.mar", model_name="digest", initial_workers=1, synchronous=True))
    call("register", management.RegisterModel, management_pb2.RegisterModelRequest(
        url="digest.mar", model_name="digest", initial_workers=1, synchronous=True), metadata=token)
    photo = open(args["photo"], "rb").read()
    out["infer photo"] = json.loads(inference.Predictions(
        inference_pb2.PredictionsRequest(model_name="digest", input={"data": photo})).prediction)
    out["stream"] = [json.loads(answer.prediction) for answer in inference.StreamPredictions(
        inference_pb2.PredictionsRequest(model_name="digest", input={"data": b"streamed"}))]
    requests = [inference_pb2.PredictionsRequest(model_name=name, input={"data": name.encode()}, sequence_id=seq)
                for name, seq in (("digest", "a"), ("nope", "b"), ("digest", "c"))]
    out["stream2"] = [{"sequence_id": answer.sequence_id, "prediction": answer.prediction.decode(),
                       "code": answer.status.code, "message": answer.status.message}
                      for answer in inference.StreamPredictions2(iter(requests))]
    call("infer unknown model", inference.Predictions,
         inference_pb2.PredictionsRequest(model_name="nope", input={"data": b"x"}))
    call("infer a bad body", inference.Predictions,
         inference_pb2.PredictionsRequest(model_name="tiny", input={"data": b"not 256 bytes"}))
    call("describe", management.DescribeModel, management_pb2.DescribeModelRequest(model_name="digest"), metadata=token)
    call("list", management.ListModels, management_pb2.ListModelsRequest(), metadata=token)
    call("scale beyond the cores", management.ScaleWorker, management_pb2.ScaleWorkerRequest(
        model_name="digest", min_worker=64, synchronous=True), metadata=token)
    call("scale", management.ScaleWorker, management_pb2.ScaleWorkerRequest(model_name="digest", min_worker=1,
                                                                             synchronous=True), metadata=token)
    call("set default", management.SetDefault, management_pb2.SetDefaultRequest(model_name="digest", model_version="1.0"),
         metadata=token)
    call("describe unknown", management.DescribeModel, management_pb2.DescribeModelRequest(model_name="nope"),
         metadata=token)
    call("register a missing archive", management.RegisterModel,
         management_pb2.RegisterModelRequest(url="missing.mar", synchronous=True), metadata=token)
    call("unregister", management.UnregisterModel, management_pb2.UnregisterModelRequest(model_name="digest"),
         metadata=token)
    call("infer after unregister", inference.Predictions,
         inference_pb2.PredictionsRequest(model_name="digest", input={"data": b"x"}))
    print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def store(example_archives, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("grpc-ts-store")
    make_archive(folder, "digest_handler.py", "digest")
    (folder / "tiny.mar").symlink_to(example_archives["tiny"])
    return folder


def test_torchserve_grpc_stubs_run_its_client_scripts_calls_and_the_rest(store):
    inference_port, management_port = free_port(), free_port()
    config = store / "config.properties"
    # TorchServe's own keys: ports, as a TorchServe config.properties has them
    config.write_text(f"grpc_inference_port={inference_port}\ngrpc_management_port={management_port}\n")
    jar = CLIENTS / "ts-only" / "ts" / "frontend" / "model-server.jar"
    assert jar.exists(), "TorchServe's package is missing from .venv-clients: run bash scripts/setup.sh --tests"
    row = [i / 64 for i in range(64)]
    with Server(["--model-store", str(store), "--models", "tiny=tiny.mar", "--ts-config", str(config)], free_port(),
                env={"LAUNCHKIT_MANAGEMENT_TOKEN": TOKEN}) as server:
        pids = server.worker_pids()
        out = run_client(CLIENT, jar=str(jar), inference=inference_port, management=management_port, token=TOKEN,
                         photo=str(PHOTO), row=struct.pack("<64f", *row).hex())
        log = server.output()
        after = server.worker_pids()
    assert out["ping"] == {"status": "Healthy"}
    assert out["infer tiny"] == pytest.approx(tiny_logits(row)[0], abs=1e-4)
    assert out["register without the token"][0] == "UNAUTHENTICATED"
    assert out["register"][0] == "OK" and "digest" in out["register"][1]
    photo = PHOTO.read_bytes()
    assert out["infer photo"] == {"bytes": len(photo), "sha256": hashlib.sha256(photo).hexdigest()}
    assert out["stream"] == [{"bytes": 8, "sha256": hashlib.sha256(b"streamed").hexdigest()}]
    first, unknown, last = out["stream2"]
    assert (first["sequence_id"], last["sequence_id"], unknown["sequence_id"]) == ("a", "c", "b")
    assert json.loads(first["prediction"])["sha256"] == hashlib.sha256(b"digest").hexdigest()
    assert first["code"] == 0 and unknown["code"] == 5 and "nope" in unknown["message"]  # 5: NOT_FOUND
    assert out["infer unknown model"][0] == "NOT_FOUND" and "nope" in out["infer unknown model"][1]
    assert out["infer a bad body"][0] in ("INVALID_ARGUMENT", "INTERNAL")
    assert "256 bytes" in out["infer a bad body"][1]
    described = json.loads(out["describe"][1])
    assert described[0]["modelName"] == "digest" and described[0]["modelVersion"] == "1.0"
    listed = json.loads(out["list"][1])
    assert sorted(model["modelName"] for model in listed["models"]) == ["digest", "tiny"]
    assert out["scale beyond the cores"][0] == "INVALID_ARGUMENT"  # the HTTP API's 400, its message
    assert "their own cores" in out["scale beyond the cores"][1]
    assert out["scale"][0] == "OK", out["scale"]
    assert out["set default"][0] == "OK", out["set default"]
    assert out["describe unknown"][0] == "NOT_FOUND"
    assert out["register a missing archive"][0] in ("NOT_FOUND", "INVALID_ARGUMENT")
    assert "missing.mar" in out["register a missing archive"][1]
    assert out["unregister"][0] == "OK"
    assert out["infer after unregister"][0] == "NOT_FOUND"
    assert set(pids) <= set(after)  # the tiny worker served throughout: no bad request ended it
    assert "Traceback" not in log
