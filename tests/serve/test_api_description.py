"""The API description, served as TorchServe serves it, and schemathesis (the real tool, its CLI) run
from it against a live server on both ports: no 5xx beyond the documented ones, every response as
documented, no worker lost."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import IO

from launchkit.serve.api.openapi import document
from tests.serve.conftest import Server, free_port

SCHEMATHESIS_CONFIG = Path(__file__).parent / "schemathesis" / "schemathesis.toml"
CASES_PER_OPERATION = 150  # about 170 requests per operation; a longer run: docs/serving-apis.md, "API description"


def _curl(*args: str) -> tuple[int, str]:
    done = subprocess.run(["curl", "-sS", "-o", "-", "-w", "\n%{http_code}", *args], capture_output=True,
                          text=True, timeout=30, check=True)
    body, _, status = done.stdout.rpartition("\n")
    return int(status), body


def test_each_port_answers_options_and_api_description_with_its_document(archives):
    with Server([str(archives["echo"])], free_port()) as server:
        ports = {"inference": server.port, "management": server.management_port, "metrics": server.metrics_port}
        for api, port in ports.items():
            status, body = _curl("-X", "OPTIONS", f"http://127.0.0.1:{port}/")  # TorchServe's documented call
            assert status == 200 and json.loads(body) == json.loads(json.dumps(document(api))), api
            status, body = _curl(f"http://127.0.0.1:{port}/api-description")
            assert status == 200 and json.loads(body)["info"]["title"] == f"launchkit {api} API"
        # an unknown path is still a 404 in the port's own error shape
        assert _curl(f"http://127.0.0.1:{server.port}/api-descriptions")[0] == 404


def test_an_inference_token_does_not_hide_the_description_but_guards_the_rest(archives):
    with Server([str(archives["echo"])], free_port(), env={"LAUNCHKIT_INFERENCE_TOKEN": "s3cret"}) as server:
        assert _curl("-X", "OPTIONS", f"http://127.0.0.1:{server.port}/")[0] == 200
        assert _curl(f"http://127.0.0.1:{server.port}/v2")[0] == 401
        assert _curl(f"http://127.0.0.1:{server.port}/nowhere")[0] == 401  # nor which endpoints exist


def _schemathesis(port: int, cases: int, seed: int) -> tuple[subprocess.Popen, IO[str]]:
    """schemathesis started against one port's document, and the file its output goes to (not a pipe: a
    full pipe would stall it while the test waits for another one); ``_passed`` waits for it."""
    command = [str(Path(sys.executable).parent / "st"), "--config-file", str(SCHEMATHESIS_CONFIG), "run",
               f"http://127.0.0.1:{port}/api-description", "--max-examples", str(cases), "--seed", str(seed),
               "--workers", "1",  # several workers trip a CPython 3.11 ast bug inside hypothesis, not the server
               "--no-color", "--generation-database", "none", "--request-timeout", "30"]
    output = tempfile.TemporaryFile("w+")
    return subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, text=True), output


def _passed(started: tuple[subprocess.Popen, IO[str]]) -> None:
    run, output = started
    with output:
        try:
            run.wait(timeout=400)
        finally:
            run.kill()
        output.seek(0)
        assert run.returncode == 0, output.read()[-8000:]


def _workers(server: Server) -> dict[str, tuple[int, int]]:
    """Each worker's (pid, restarts), by worker id, over every model."""
    found = {}
    for model in server.manage("GET", "/models")[1]["models"]:
        for entry in server.manage("GET", f"/models/{model['modelName']}/all")[1]:
            found |= {worker["id"]: (worker["pid"], worker["restarts"]) for worker in entry["workers"]}
    return found


def test_schemathesis_on_both_ports_finds_no_error_and_no_worker_dies(archives, example_archives):
    models = [str(example_archives["tiny"]), str(archives["echo"])]
    # two servers, one schemathesis each, side by side (one core each): generated management calls scale,
    # unregister and re-register the models, so they get a server of their own
    with Server(models, free_port()) as server, Server(models, free_port()) as managed:
        before = _workers(server)
        inference, management = _schemathesis(server.port, CASES_PER_OPERATION, 1), \
            _schemathesis(managed.management_port, CASES_PER_OPERATION, 1)
        _passed(management)
        _passed(_schemathesis(managed.metrics_port, 20, 1))
        _passed(inference)
        assert _workers(server) == before, "a worker died or was replaced under generated inference requests"
        assert managed.request("GET", "/ping")[0] in (200, 500)
        for each in (server, managed):
            output = each.output()
            assert "Traceback" not in output, output[-4000:]
            assert each.stop() == 0
