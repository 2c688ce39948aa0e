"""Prometheus metrics move as expected after known traffic; KServe v2 endpoints on a real server."""

from __future__ import annotations

import json
import time

import pytest

from tests.serve.conftest import Server, free_port, tiny_logits

ROW = [i / 64 for i in range(64)]


def value(samples, name, **labels) -> float:
    """A sample's value; a sample that is not there fails the test (it never reads as 0)."""
    key = (name, tuple(sorted(labels.items())))
    assert key in samples, f"{name} {labels} is not on /metrics"
    return samples[key]


def test_metrics_count_known_traffic(example_archives):
    args = [str(example_archives["tiny"]), "--batch-size", "4", "--max-batch-delay", "5"]
    with Server(args, free_port()) as server:
        before = server.metrics()
        for _ in range(10):
            assert server.predict("tiny", ROW)[0] == 200
        for _ in range(2):
            assert server.predict("tiny", [1, 2, 3])[0] == 400
        assert server.predict("nope", ROW)[0] == 404
        samples = server.metrics()
        tiny = {"model": "tiny", "version": "1.0"}
        assert value(samples, "launchkit_requests_total", code="200", **tiny) == 10
        assert value(samples, "launchkit_requests_total", code="400", **tiny) == 2
        assert value(samples, "launchkit_requests_total", code="404", model="", version="") == 1
        assert value(samples, "launchkit_request_latency_seconds_count", **tiny) == 12
        assert value(samples, "launchkit_request_latency_seconds_count", **tiny) == \
            value(samples, "launchkit_request_latency_seconds_bucket", le="+Inf", **tiny)
        # sequential requests: every batch holds one request, and every request waited in the queue once
        assert value(samples, "launchkit_batch_size_count", **tiny) == 12
        assert value(samples, "launchkit_batch_size_sum", **tiny) == 12
        assert value(samples, "launchkit_queue_wait_seconds_count", **tiny) == 12
        for stage in ("preprocess", "inference", "postprocess", "handle"):
            assert value(samples, "launchkit_handler_seconds_count", stage=stage, **tiny) == 12, stage
        handle = value(samples, "launchkit_handler_seconds_sum", stage="handle", **tiny)
        inference = value(samples, "launchkit_handler_seconds_sum", stage="inference", **tiny)
        assert 0 < inference <= handle < value(samples, "launchkit_request_latency_seconds_sum", **tiny)
        assert value(samples, "launchkit_workers", state="ready", **tiny) == 1
        assert value(samples, "launchkit_queue_depth", **tiny) == 0
        assert value(samples, "launchkit_model_ready", **tiny) == 1
        assert value(samples, "launchkit_worker_restarts_total", **tiny) == 0
        assert value(samples, "launchkit_worker_rss_bytes", worker="tiny-1.0-0", **tiny) > 10e6
        # before any request the labelled counter has no sample yet (prometheus_client's rule)
        assert ("launchkit_requests_total", tuple(sorted({"code": "200", **tiny}.items()))) not in before
        # name[] filtering, as Prometheus' client libraries offer it
        status, _, text = server.request("GET", "/metrics?name[]=launchkit_queue_depth", port=server.metrics_port)
        assert status == 200 and b"launchkit_queue_depth" in text and b"launchkit_requests_total" not in text
        assert server.request("GET", "/other", port=server.metrics_port)[0] == 404


def test_kserve_v2_endpoints_and_rows_batch_together(example_archives):
    args = [str(example_archives["tiny"]), "--batch-size", "8", "--max-batch-delay", "50"]
    with Server(args, free_port()) as server:
        status, _, body = server.request("GET", "/v2")
        assert status == 200 and json.loads(body)["name"] == "launchkit"
        for path in ("/v2/models/tiny/ready", "/v2/models/tiny/versions/1.0/ready"):
            status, _, body = server.request("GET", path)
            assert (status, json.loads(body)) == (200, {"name": "tiny", "ready": True})
        status, _, body = server.request("GET", "/v2/models/tiny")
        assert status == 200 and json.loads(body)["versions"] == ["1.0"]

        request = {"id": "q1", "inputs": [{"name": "input0", "shape": [3, 64], "datatype": "FP32", "data": ROW * 3}]}
        before = server.metrics()
        for path in ("/v2/models/tiny/infer", "/v2/models/tiny/versions/1.0/infer"):
            status, _, body = server.request("POST", path, json.dumps(request).encode(),
                                             {"content-type": "application/json"})
            answer = json.loads(body)
            assert status == 200, answer
            output = answer["outputs"][0]
            assert answer["id"] == "q1" and answer["model_name"] == "tiny" and answer["model_version"] == "1.0"
            assert output["shape"] == [3, 10] and output["datatype"] == "FP32" and len(output["data"]) == 30
            expected = tiny_logits(ROW)[0]  # the model run in this process, not another route of the server
            assert output["data"][:10] == pytest.approx(expected, abs=1e-4)
            assert server.predict("tiny", ROW)[2] == pytest.approx(expected, abs=1e-4)
        after = server.metrics()
        batches = value(after, "launchkit_batch_size_count", model="tiny", version="1.0") - \
            value(before, "launchkit_batch_size_count", model="tiny", version="1.0")
        assert batches <= 4  # 2 infer calls of 3 rows + 2 single predictions: rows went through the batcher together

        bad = [
            ("POST", "/v2/models/tiny/infer", b"{", 400),
            ("POST", "/v2/models/tiny/infer", json.dumps({"inputs": [{"name": "input0", "shape": [1, 3], "datatype": "FP32",
                                                                      "data": [1, 2, 3]}]}).encode(), 400),
            ("POST", "/v2/models/nope/infer", json.dumps(request).encode(), 404),
            ("GET", "/v2/models/tiny/infer", None, 405),
            ("GET", "/v2/models/tiny/versions/9/ready", None, 404),
            ("GET", "/v2/models/tiny/extra/path", None, 404),
        ]
        for method, path, payload, expected in bad:
            status, _, body = server.request(method, path, payload)
            assert status == expected and "error" in json.loads(body), (path, body)
        assert server.stop() == 0  # after all that, it still stops cleanly
