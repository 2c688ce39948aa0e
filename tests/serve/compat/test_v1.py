"""KServe v1 / TF Serving REST: seed 002's half_plus_two, as written, against launchkit serve."""

from __future__ import annotations

import json
import threading

from tests.serve.compat.conftest import run_client
from tests.serve.conftest import Server, free_port


def _post(server: Server, path: str, payload: object) -> tuple[int, dict]:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    status, _, data = server.request("POST", path, body, {"content-type": "application/json"})
    return status, json.loads(data)


def test_tf_serving_half_plus_two_as_written(half_plus_two):
    with Server([str(half_plus_two), "--batch-size", "8", "--max-batch-delay", "200"], free_port()) as server:
        status, _, body = server.request("GET", "/v1/models/half_plus_two")
        answer = json.loads(body)
        assert status == 200 and answer["name"] == "half_plus_two" and answer["ready"] is True  # KServe v1
        assert answer["model_version_status"][0]["state"] == "AVAILABLE"  # TF Serving
        assert _post(server, "/v1/models/half_plus_two:predict", {"instances": [1.0, 2.0, 5.0]}) == \
            (200, {"predictions": [2.5, 3.0, 4.5]})
        assert _post(server, "/v1/models/half_plus_two/versions/1.0:predict", {"inputs": [1.0, 2.0, 5.0]}) == \
            (200, {"predictions": [2.5, 3.0, 4.5]})

        # rows of concurrent requests are batched together, as /predictions requests are
        before = server.metrics()
        answers: list[tuple[int, dict]] = []
        threads = [threading.Thread(target=lambda i=i: answers.append(
            _post(server, "/v1/models/half_plus_two:predict", {"instances": [float(i)]}))) for i in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(a[1]["predictions"][0] for a in answers) == [2.0 + i / 2 for i in range(6)]
        after = server.metrics()
        key = ("launchkit_batch_size_count", (("model", "half_plus_two"), ("version", "1.0")))
        assert after[key] - before.get(key, 0) < 6  # fewer batches than requests


def test_v1_bad_input_is_a_400_naming_the_field_and_the_server_carries_on(half_plus_two):
    with Server([str(half_plus_two)], free_port()) as server:
        cases = [
            ({"instances": [1.0], "inputs": [1.0]}, 400, 'either "instances"'),
            ({"instances": 1.0}, 400, '"instances" must be a list'),
            ({"inputs": {"a": [1.0, 2.0], "b": [1.0]}}, 400, "disagree on the number of rows"),
            ({"signature_name": "serving_default"}, 400, '"instances"'),
            ({"instances": []}, 400, "no rows"),
            ({"instances": [{"b64": "not base64!"}]}, 400, "row 0: b64"),
            (b"{not json", 400, "not valid JSON"),
            ({"instances": ["text"]}, 500, "handler failed"),  # the model cannot take text: its failure, a 5xx
        ]
        for payload, expected, message in cases:
            status, answer = _post(server, "/v1/models/half_plus_two:predict", payload)
            assert status == expected and message in answer["error"], (payload, answer)
        status, answer = _post(server, "/v1/models/nope:predict", {"instances": [1.0]})
        assert status == 404 and "not loaded" in answer["error"]
        status, _, body = server.request("GET", "/v1/models/half_plus_two:predict")
        assert status == 405 and "POST" in json.loads(body)["error"]
        assert _post(server, "/v1/models/half_plus_two:predict", {"instances": [4.0]}) == (200, {"predictions": [4.0]})


KSERVE_V1 = """
    import asyncio, json, sys
    from kserve import InferenceRESTClient, RESTConfig
    args = json.load(sys.stdin)

    async def main():
        client = InferenceRESTClient(RESTConfig(protocol="v1"))
        base = f"http://127.0.0.1:{args['port']}"
        response = await client.infer(base, {"instances": [1.0, 2.0, 5.0]}, model_name="half_plus_two")
        ready = await client.is_model_ready(base, "half_plus_two")
        await client.close()
        print(json.dumps({"response": response, "ready": ready}))

    asyncio.run(main())
"""


def test_the_kserve_sdk_speaks_v1(half_plus_two):
    with Server([str(half_plus_two)], free_port()) as server:
        answer = run_client(KSERVE_V1, port=server.port)
        assert answer == {"response": {"predictions": [2.5, 3.0, 4.5]}, "ready": True}
