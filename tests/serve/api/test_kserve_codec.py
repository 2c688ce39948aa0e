"""KServe v2 tensors ↔ items (serve/api/kserve_codec.py, serve/tensors.py): pure, bytes built by hand."""

from __future__ import annotations

import json
import struct

import pytest

from launchkit.core.errors import ArchiveError, BadRequest
from launchkit.serve.api.kserve_codec import OutputRequest, V2Request, build_response, parse_infer
from launchkit.serve.tensors import ROWS_CONTENT_TYPE, ModelTensors, TensorSpec, declared_tensors
from launchkit.serve.wire import ItemResult
from launchkit.serve.worker.codec import decode_row


def _binary(header: dict, *buffers: bytes) -> tuple[bytes, int]:
    """A binary-extension body and its Inference-Header-Content-Length."""
    head = json.dumps(header).encode()
    return head + b"".join(buffers), len(head)


def _request(**fields) -> V2Request:
    defaults = {"request_id": None, "rows": [], "inputs": (), "outputs": (), "binary_output": False}
    return V2Request(**{**defaults, **fields})


# -- JSON requests --------------------------------------------------------------------------------

def test_one_input_is_split_into_rows():
    request = parse_infer(json.dumps({"id": "r1", "inputs": [
        {"name": "x", "shape": [2, 2, 2], "datatype": "FP32", "data": [1, 2, 3, 4, 5, 6, 7, 8]}]}).encode())
    assert request.request_id == "r1"
    assert [json.loads(body) for body, _ in request.rows] == [[[1, 2], [3, 4]], [[5, 6], [7, 8]]]
    assert request.rows[0][1] == "application/json"
    assert request.inputs == (TensorSpec("x", "FP32", (-1, 2, 2)),)


def test_bytes_rows_are_text_and_several_inputs_are_objects():
    text = parse_infer(json.dumps({"inputs": [{"name": "t", "shape": [2], "datatype": "BYTES",
                                               "data": ["hello", "world"]}]}).encode())
    assert text.rows == [(b"hello", "text/plain; charset=utf-8"), (b"world", "text/plain; charset=utf-8")]
    one_per_row = parse_infer(json.dumps({"inputs": [{"name": "t", "shape": [1, 1], "datatype": "BYTES",
                                                      "data": [["hi"]]}]}).encode())
    assert one_per_row.rows == [(b"hi", "text/plain; charset=utf-8")]  # [N, 1] BYTES: still the text
    two = parse_infer(json.dumps({"inputs": [{"name": "a", "shape": [2], "datatype": "INT64", "data": [1, 2]},
                                             {"name": "b", "shape": [2, 1], "datatype": "FP32", "data": [[.5], [.25]]}],
                                  "outputs": [{"name": "y", "parameters": {"binary_data": True}}]}).encode())
    assert [json.loads(body) for body, _ in two.rows] == [{"a": 1, "b": [.5]}, {"a": 2, "b": [.25]}]
    assert two.outputs == (OutputRequest("y", True),) and not two.binary_output


@pytest.mark.parametrize("body,message", [
    (b"{", "not valid JSON"),
    (b"\x00\x01binary", "Inference-Header-Content-Length"),  # binary sent without the header: say which header
    (b'{"inputs": []}', "expected"),
    (b'{"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "data": [1]}]}', "holds 2 values"),
    (b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FLOAT", "data": [1]}]}', "input 'x': datatype 'FLOAT'"),
    (b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": ["a"]}]}', "must be numbers"),
    (b'{"inputs": [{"name": "x", "shape": [], "datatype": "FP32", "data": [1]}]}', "shape"),
    (b'{"inputs": [{"name": "x", "shape": [0], "datatype": "FP32", "data": []}]}', "positive integers"),
    (b'{"inputs": [{"name": "x", "shape": [8, 1000000, 0], "datatype": "FP32", "data": []}]}', "positive integers"),
    (b'{"inputs": [{"name": "x", "shape": [9000, 9000], "datatype": "FP32", "data": []}]}', "at most"),
    (b"[" * 100000 + b"]" * 100000, "nested too deeply"),
    (b'{"inputs": [{"name": "a", "shape": [1], "datatype": "FP32", "data": [1]},'
     b' {"name": "b", "shape": [2], "datatype": "FP32", "data": [1, 2]}]}', "disagree"),
    (b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}], "outputs": {}}', "outputs must"),
    (b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "parameters": {"binary_data_size": 4}}]}',
     "no Inference-Header-Content-Length"),
])
def test_malformed_requests_are_400_with_a_reason(body, message):
    with pytest.raises(BadRequest, match=message):
        parse_infer(body)


# -- binary requests (the binary tensor data extension) ------------------------------------------

def test_binary_fp32_rows_reach_the_worker_as_tensors_of_the_row_shape():
    values = [float(i) for i in range(12)]
    body, length = _binary({"inputs": [{"name": "x", "shape": [2, 2, 3], "datatype": "FP32",
                                        "parameters": {"binary_data_size": 48}}],
                            "parameters": {"binary_data_output": True}},
                           struct.pack("<12f", *values))
    request = parse_infer(body, length)
    assert request.binary_output and len(request.rows) == 2
    row_body, content_type = request.rows[1]
    assert content_type == ROWS_CONTENT_TYPE
    assert row_body.index(b"\n") % 8 == 7  # the header line is padded: the tensor starts 8-aligned
    tensor = decode_row(row_body)
    assert tuple(tensor.shape) == (2, 3) and tensor.flatten().tolist() == values[6:]


def test_every_numeric_datatype_round_trips_through_a_row():
    cases = {"BOOL": ("?", [True, False]), "UINT8": ("B", [0, 255]), "UINT16": ("H", [1, 65535]),
             "INT8": ("b", [-128, 127]), "INT16": ("h", [-2, 3]), "INT32": ("i", [-(2**31), 7]),
             "INT64": ("q", [-(2**40), 5]), "FP16": ("e", [0.5, -2.0]), "FP64": ("d", [1e300, -0.25]),
             "UINT32": ("I", [2**32 - 1, 0]), "UINT64": ("Q", [2**40, 1])}
    for datatype, (code, values) in cases.items():
        raw = struct.pack(f"<2{code}", *values)
        body, length = _binary({"inputs": [{"name": "x", "shape": [1, 2], "datatype": datatype,
                                            "parameters": {"binary_data_size": len(raw)}}]}, raw)
        tensor = decode_row(parse_infer(body, length).rows[0][0])
        assert tensor.tolist() == values, datatype


def test_binary_bytes_one_element_per_row_is_the_raw_body_and_several_are_lists():
    elements = [b"\xff\xd8 jpeg one", b"two"]
    raw = b"".join(struct.pack("<I", len(e)) + e for e in elements)
    body, length = _binary({"inputs": [{"name": "img", "shape": [2, 1], "datatype": "BYTES",
                                        "parameters": {"binary_data_size": len(raw)}}]}, raw)
    assert parse_infer(body, length).rows == [(elements[0], "application/octet-stream"),
                                              (elements[1], "application/octet-stream")]
    body, length = _binary({"inputs": [{"name": "t", "shape": [1, 2], "datatype": "BYTES",
                                        "parameters": {"binary_data_size": len(raw)}}]}, raw)
    assert decode_row(parse_infer(body, length).rows[0][0]) == elements


def test_mixed_binary_and_json_inputs_make_one_object_per_row():
    body, length = _binary({"inputs": [
        {"name": "ids", "shape": [2, 2], "datatype": "INT64", "parameters": {"binary_data_size": 32}},
        {"name": "scale", "shape": [2], "datatype": "FP32", "data": [0.5, 2.0]}]}, struct.pack("<4q", 1, 2, 3, 4))
    rows = [decode_row(row) for row, _ in parse_infer(body, length).rows]
    assert rows[1]["ids"].tolist() == [3, 4] and rows[1]["scale"] == 2.0


@pytest.mark.parametrize("header,data,length_delta,message", [
    ({"name": "x", "shape": [1, 4], "datatype": "FP32", "parameters": {"binary_data_size": 12}}, b"\0" * 12, 0,
     "needs 16 bytes"),
    ({"name": "x", "shape": [1, 4], "datatype": "FP32", "parameters": {"binary_data_size": 64}}, b"\0" * 16, 0,
     "runs past the end"),
    ({"name": "x", "shape": [1, 4], "datatype": "FP32", "parameters": {"binary_data_size": 16}}, b"\0" * 20, 0,
     "4 bytes of binary data that no input claims"),
    ({"name": "x", "shape": [1, 4], "datatype": "FP32", "parameters": {"binary_data_size": -1}}, b"", 0,
     "byte count"),
    ({"name": "x", "shape": [1, 4], "datatype": "FP32", "parameters": {"binary_data_size": 16}}, b"\0" * 16, 10**6,
     "body has only"),
    ({"name": "x", "shape": [2**31, 2**31], "datatype": "FP32", "parameters": {"binary_data_size": 16}}, b"\0" * 16,
     0, "at most"),
    ({"name": "x", "shape": [1, 4], "datatype": "COMPLEX", "parameters": {"binary_data_size": 16}}, b"\0" * 16, 0,
     "datatype 'COMPLEX'"),
    ({"name": "s", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": 6}},
     struct.pack("<I", 99) + b"ab", 0, "claims 99 bytes"),
    ({"name": "s", "shape": [2], "datatype": "BYTES", "parameters": {"binary_data_size": 6}},
     struct.pack("<I", 2) + b"ab", 0, "holds 2 BYTES elements but the data has 1"),
    ({"name": "s", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": 3}}, b"\1\0\0", 0,
     "truncated"),
    ({"name": "x", "shape": [1], "datatype": "FP32", "data": [1.0], "parameters": {"binary_data_size": 4}},
     b"\0" * 4, 0, "both data and binary_data_size"),
])
def test_malformed_binary_requests_are_400_naming_the_tensor(header, data, length_delta, message):
    body, length = _binary({"inputs": [header]}, data)
    with pytest.raises(BadRequest, match=message) as caught:
        parse_infer(body, length + length_delta)
    if "body has" not in message and "no input claims" not in message:  # about the body, not one tensor
        assert repr(header["name"]) in str(caught.value)


def test_declared_inputs_are_checked_by_name_datatype_and_shape():
    declared = ModelTensors((TensorSpec("input0", "FP32", (-1, 64)),), (), "model-config.yaml")

    def infer(name: str, datatype: str, shape: list[int]) -> None:
        count = 1
        for dim in shape:
            count *= dim
        parse_infer(json.dumps({"inputs": [{"name": name, "shape": shape, "datatype": datatype,
                                            "data": [0] * count}]}).encode(), declared=declared)

    infer("input0", "FP32", [3, 64])
    with pytest.raises(BadRequest, match="'x' is not an input of this model; its inputs: input0"):
        infer("x", "FP32", [1, 64])
    with pytest.raises(BadRequest, match="is FP64; the model takes FP32"):
        infer("input0", "FP64", [1, 64])
    with pytest.raises(BadRequest, match=r"has shape \[1, 63\]; the model takes \[-1, 64\]"):
        infer("input0", "FP32", [1, 63])


# -- responses -------------------------------------------------------------------------------------

def _ok(value):
    return ItemResult(200, "application/json", json.dumps(value).encode(), [])


def test_numeric_outputs_stack_into_one_tensor():
    response = build_response("m", "1.0", _request(request_id="r", outputs=(OutputRequest("out", None),)),
                              [_ok([0.5, 1.5]), _ok([2.5, 3.5])])
    output = json.loads(response.body)["outputs"][0]
    assert response.status == 200 and output == {"name": "out", "shape": [2, 2], "datatype": "FP32",
                                                  "data": [0.5, 1.5, 2.5, 3.5]}
    assert json.loads(response.body)["id"] == "r"
    assert response.outputs == (TensorSpec("out", "FP32", (-1, 2)),)
    ints = build_response("m", "1.0", _request(), [_ok(3), _ok(4)])
    assert json.loads(ints.body)["outputs"][0] == {"name": "output0", "shape": [2], "datatype": "INT64", "data": [3, 4]}


def test_binary_outputs_follow_the_header_with_their_length():
    response = build_response("m", "1", _request(binary_output=True), [_ok([0.5, 1.5]), _ok([2.5, 3.5])])
    length = int(dict(response.headers)[b"inference-header-content-length"])
    header = json.loads(response.body[:length])
    output = header["outputs"][0]
    assert output["parameters"] == {"binary_data_size": 16} and "data" not in output
    assert struct.unpack("<4f", response.body[length:]) == (0.5, 1.5, 2.5, 3.5)
    # an output's own binary_data beats binary_data_output
    json_anyway = build_response("m", "1", _request(binary_output=True, outputs=(OutputRequest("output0", False),)),
                                 [_ok(1.0)])
    assert not json_anyway.headers and json.loads(json_anyway.body)["outputs"][0]["data"] == [1.0]


def test_declared_outputs_give_the_datatype_and_split_dictionaries():
    declared = ModelTensors((), (TensorSpec("scores", "FP64", (-1, 2)), TensorSpec("label", "BYTES", (-1,))),
                            "model-config.yaml")
    rows = [_ok({"scores": [0.25, 0.75], "label": "cat"}), _ok({"scores": [1.0, 0.0], "label": "dog"})]
    response = build_response("m", "1", _request(outputs=(OutputRequest("label", True), OutputRequest("scores", None))),
                              rows, declared)
    length = int(dict(response.headers)[b"inference-header-content-length"])
    outputs = {o["name"]: o for o in json.loads(response.body[:length])["outputs"]}
    assert outputs["scores"] == {"name": "scores", "datatype": "FP64", "shape": [2, 2], "data": [0.25, 0.75, 1.0, 0.0]}
    assert outputs["label"]["parameters"] == {"binary_data_size": 14}
    assert response.body[length:] == struct.pack("<I", 3) + b"cat" + struct.pack("<I", 3) + b"dog"
    with pytest.raises(BadRequest, match="'nope' is not an output of this model"):
        build_response("m", "1", _request(outputs=(OutputRequest("nope", None),)), rows, declared)


def test_other_outputs_are_bytes_and_a_failed_row_fails_the_request():
    response = build_response("m", "1.0", _request(), [_ok([{"label": "cat"}]), _ok([{"label": "dog"}])])
    output = json.loads(response.body)["outputs"][0]
    assert output["datatype"] == "BYTES" and json.loads(output["data"][1]) == [{"label": "dog"}]
    failed = ItemResult(422, "application/json", b'{"code": 422, "message": "bad row"}', [])
    response = build_response("m", "1.0", _request(), [_ok(1), failed])
    assert response.status == 422 and json.loads(response.body) == {"error": "bad row"}


# -- declared metadata ------------------------------------------------------------------------------

def test_model_config_declarations_accept_both_spellings_and_refuse_nonsense():
    declared = declared_tensors({"inputs": [{"name": "x", "datatype": "FP32", "shape": [3, -1]}],
                                 "outputs": [{"name": "y", "data_type": "TYPE_STRING", "dims": [1]}]}, "a.mar")
    assert declared.inputs == (TensorSpec("x", "FP32", (-1, 3, -1)),)
    assert declared.outputs == (TensorSpec("y", "BYTES", (-1, 1)),)
    assert declared_tensors({"batchSize": 4}, "a.mar") is None
    for bad, message in [({"inputs": {"x": 1}}, "must be a list"),
                         ({"inputs": [{"name": "x", "datatype": "FLOAT", "shape": [1]}]}, "datatype 'FLOAT'"),
                         ({"inputs": [{"name": "x", "datatype": "FP32", "shape": [0]}]}, "shape must be"),
                         ({"outputs": [{"datatype": "FP32", "shape": [1]}]}, "name is missing")]:
        with pytest.raises(ArchiveError, match=message):
            declared_tensors(bad, "a.mar")
