"""KServe v2 tensors ↔ items (serve/api/kserve_codec.py): pure."""

from __future__ import annotations

import json

import pytest

from launchkit.core.errors import BadRequest
from launchkit.serve.api.kserve_codec import build_response, parse_infer
from launchkit.serve.wire import ItemResult


def test_one_input_is_split_into_rows():
    request = parse_infer(json.dumps({"id": "r1", "inputs": [
        {"name": "x", "shape": [2, 2, 2], "datatype": "FP32", "data": [1, 2, 3, 4, 5, 6, 7, 8]}]}).encode())
    assert request.request_id == "r1"
    assert [json.loads(body) for body, _ in request.rows] == [[[1, 2], [3, 4]], [[5, 6], [7, 8]]]
    assert request.rows[0][1] == "application/json"


def test_bytes_rows_are_text_and_several_inputs_are_objects():
    text = parse_infer(json.dumps({"inputs": [{"name": "t", "shape": [2], "datatype": "BYTES",
                                               "data": ["hello", "world"]}]}).encode())
    assert text.rows == [(b"hello", "text/plain; charset=utf-8"), (b"world", "text/plain; charset=utf-8")]
    two = parse_infer(json.dumps({"inputs": [{"name": "a", "shape": [2], "datatype": "INT64", "data": [1, 2]},
                                             {"name": "b", "shape": [2, 1], "datatype": "FP32", "data": [[.5], [.25]]}],
                                  "outputs": [{"name": "y"}]}).encode())
    assert [json.loads(body) for body, _ in two.rows] == [{"a": 1, "b": [.5]}, {"a": 2, "b": [.25]}]
    assert two.output_name == "y"


@pytest.mark.parametrize("body,message", [
    (b"{", "not valid JSON"),
    (b'{"inputs": []}', "expected"),
    (b'{"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "data": [1]}]}', "holds 2 values"),
    (b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FLOAT", "data": [1]}]}', "datatype"),
    (b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": ["a"]}]}', "must be numbers"),
    (b'{"inputs": [{"name": "x", "shape": [], "datatype": "FP32", "data": [1]}]}', "shape"),
    (b'{"inputs": [{"name": "x", "shape": [0], "datatype": "FP32", "data": []}]}', "positive integers"),
    (b'{"inputs": [{"name": "x", "shape": [8, 1000000, 0], "datatype": "FP32", "data": []}]}', "positive integers"),
    (b'{"inputs": [{"name": "x", "shape": [9000, 9000], "datatype": "FP32", "data": []}]}', "at most"),
    (b"[" * 100000 + b"]" * 100000, "nested too deeply"),
    (b'{"inputs": [{"name": "a", "shape": [1], "datatype": "FP32", "data": [1]},'
     b' {"name": "b", "shape": [2], "datatype": "FP32", "data": [1, 2]}]}', "disagree"),
])
def test_malformed_requests_are_400_with_a_reason(body, message):
    with pytest.raises(BadRequest, match=message):
        parse_infer(body)


def _ok(value):
    return ItemResult(200, "application/json", json.dumps(value).encode(), [])


def test_numeric_outputs_stack_into_one_tensor():
    status, body = build_response("m", "1.0", "r", "out", [_ok([0.5, 1.5]), _ok([2.5, 3.5])])
    output = json.loads(body)["outputs"][0]
    assert status == 200 and output == {"name": "out", "shape": [2, 2], "datatype": "FP32", "data": [0.5, 1.5, 2.5, 3.5]}
    assert json.loads(body)["id"] == "r"
    _, ints = build_response("m", "1.0", None, "out", [_ok(3), _ok(4)])
    assert json.loads(ints)["outputs"][0] == {"name": "out", "shape": [2], "datatype": "INT64", "data": [3, 4]}


def test_other_outputs_are_bytes_and_a_failed_row_fails_the_request():
    _, body = build_response("m", "1.0", None, "o", [_ok([{"label": "cat"}]), _ok([{"label": "dog"}])])
    output = json.loads(body)["outputs"][0]
    assert output["datatype"] == "BYTES" and json.loads(output["data"][1]) == [{"label": "dog"}]
    failed = ItemResult(422, "application/json", b'{"code": 422, "message": "bad row"}', [])
    status, body = build_response("m", "1.0", None, "o", [_ok(1), failed])
    assert status == 422 and json.loads(body) == {"error": "bad row"}
