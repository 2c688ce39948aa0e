"""Pure parts of the operations API: fleet changes, the URL policy, KServe v2 conversion."""

from __future__ import annotations

import hashlib
import itertools
import json

import pytest

from launchkit.serve.fleet.plan import StartWorker, plan_changes
from launchkit.core.errors import BadRequest
from launchkit.serve.api.kserve_codec import build_response, parse_infer
from launchkit.serve.wire import ItemResult
from launchkit.core.errors import SourceError, SourceMissing, SourceRefused
from launchkit.serve.sources import SourcePolicy, check_sha256, resolve

# --- fleet plan -----------------------------------------------------------------------------------


def test_unchanged_fleet_keeps_every_worker():
    change = plan_changes([("a", 2)], {"a": [("a0", "k0"), ("a1", "k1")]}, ["k0", "k1"])
    assert change.keep == ("a0", "a1") and change.empty


def test_scale_up_moves_cores_make_before_break():
    # a had both cores; now a and a new worker get one each: a0 is replaced, not stopped first
    change = plan_changes([("a", 2)], {"a": [("a0", "both")]}, ["c0", "c1"])
    assert change.keep == ()
    assert change.start == (StartWorker("a", 0, "a0"), StartWorker("a", 1, None))
    assert change.retire == ()


def test_scale_down_retires_the_extra_workers_and_keeps_matching_ones():
    change = plan_changes([("a", 1)], {"a": [("a0", "c0"), ("a1", "c1")]}, ["c0"])
    assert change.keep == ("a0",) and change.retire == ("a1",) and change.start == ()


def test_models_take_instances_in_order_and_removed_models_retire():
    change = plan_changes([("a", 1), ("b", 2)], {"a": [("a0", "k0")], "gone": [("g0", "k9")]}, ["k0", "k1", "k2"])
    assert change.keep == ("a0",)
    assert [(s.model_key, s.instance) for s in change.start] == [("b", 1), ("b", 2)]
    assert change.retire == ("g0",)


def test_count_mismatch_is_a_bug_not_a_plan():
    with pytest.raises(ValueError):
        plan_changes([("a", 2)], {}, ["k0"])


@pytest.mark.parametrize("before,after", list(itertools.product(range(0, 4), repeat=2)))
def test_every_resize_ends_with_the_wanted_count(before, after):
    running = {"m": [(f"w{i}", f"old{i}") for i in range(before)]}
    change = plan_changes([("m", after)], running, [f"new{i}" for i in range(after)])
    replaced = {s.replaces for s in change.start if s.replaces}
    survivors = len(change.keep) + len(change.start)
    assert survivors == after
    # every old worker is kept, replaced (retired once its successor is ready) or retired now: none leaks
    assert set(change.keep) | replaced | set(change.retire) == {w for w, _ in running["m"]}
    assert not (replaced & set(change.retire))


# --- URL policy -----------------------------------------------------------------------------------


@pytest.fixture
def store(tmp_path):
    folder = tmp_path / "store"
    folder.mkdir()
    (folder / "tiny.mar").write_bytes(b"PK")
    (tmp_path / "outside.mar").write_bytes(b"PK")
    (folder / "link.mar").symlink_to(tmp_path / "outside.mar")
    return folder


def test_store_names_resolve_inside_the_store(store):
    source = resolve("tiny.mar", SourcePolicy(store))
    assert source.kind == "file" and source.path == (store / "tiny.mar").resolve()
    assert resolve(f"file://{store}/tiny.mar", SourcePolicy(store)).path == (store / "tiny.mar").resolve()


@pytest.mark.parametrize("url", ["file:///etc/passwd", "/etc/passwd", "../outside.mar", "link.mar",
                                 "http://169.254.169.254/latest/meta-data", "https://example.com/x.mar",
                                 "http://127.0.0.1:8081/models"])
def test_everything_outside_the_store_is_refused_by_default(store, url):
    with pytest.raises(SourceRefused, match="allowed_urls"):
        resolve(url, SourcePolicy(store))


def test_allowed_urls_must_match_the_whole_url(store):
    policy = SourcePolicy(store, (r"https://models\.example\.com/.*",))
    assert resolve("https://models.example.com/a.mar", policy).kind == "http"
    with pytest.raises(SourceRefused):
        resolve("https://models.example.com.evil.net/a.mar", policy)
    with pytest.raises(SourceRefused):
        resolve("http://x/?https://models.example.com/a.mar", policy)


def test_unsupported_schemes_missing_files_and_no_store(store):
    with pytest.raises(SourceError, match="not supported"):
        resolve("gopher://x/a.mar", SourcePolicy(store))
    with pytest.raises(SourceMissing):
        resolve("nope.mar", SourcePolicy(store))
    with pytest.raises(SourceError, match="--model-store"):
        resolve("tiny.mar", SourcePolicy(None))
    with pytest.raises(SourceError, match="empty"):
        resolve(" ", SourcePolicy(store))


def test_sha256_pin(store):
    path = store / "tiny.mar"
    check_sha256(path, hashlib.sha256(b"PK").hexdigest().upper())
    with pytest.raises(SourceError, match="pinned"):
        check_sha256(path, "0" * 64)
    with pytest.raises(SourceError, match="64 hex"):
        check_sha256(path, "abc")


# --- KServe v2 ------------------------------------------------------------------------------------


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
    (b'{"inputs": [{"name": "x", "shape": [0], "datatype": "FP32", "data": []}]}', "batch dimension"),
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
