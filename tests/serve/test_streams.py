"""Multi-stream workers: one process, K batches at once, each stream on its own core."""

from __future__ import annotations

import threading
import time

from tests.serve.conftest import Server, free_port, make_archive


def _at_once(server: Server, count: int, sleep: float) -> list[dict]:
    answers: list = [None] * count
    threads = [threading.Thread(target=lambda i=i: answers.__setitem__(i, server.predict("s", {"sleep": sleep})))
               for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(status == 200 for status, _, _ in answers), answers
    return [body for _, _, body in answers]


def test_one_worker_runs_a_batch_per_stream_at_once(tmp_path):
    archive = make_archive(tmp_path, "stream_handler.py", "s")
    with Server([str(archive), "--streams", "2", "--workers", "1"], free_port()) as server:
        status, [described] = server.manage("GET", "/models/s")
        assert status == 200 and described["streams"] == 2
        streams = described["workers"][0]["streams"]
        assert [len(stream["cpus"]) for stream in streams] == [1, 1]
        assert {stream["cpus"][0] for stream in streams} == set(described["workers"][0]["cores"])

        started = time.perf_counter()
        answers = _at_once(server, 2, 0.8)
        elapsed = time.perf_counter() - started
        assert elapsed < 1.4, elapsed  # two batches of 0.8 s, side by side (one after the other: 1.6 s)
        assert {tuple(a["cpus"]) for a in answers} == {tuple(s["cpus"]) for s in streams}  # each on its own core
        assert len({a["handler"] for a in answers}) == 2  # a handler object per stream (one model, shared)
        samples = server.metrics()
        per_stream = {dict(labels)["stream"]: value for (name, labels), value in samples.items()
                      if name == "launchkit_stream_batches_total"}
        assert set(per_stream) == {"0", "1"} and sum(per_stream.values()) >= 2


def test_streams_come_from_every_settings_source_and_are_clamped_to_the_cores(tmp_path):
    config = tmp_path / "model-config.yaml"
    config.write_text("streams: 2\n")
    archive = make_archive(tmp_path / "a", "stream_handler.py", "s", config_file=str(config))
    with Server([str(archive)], free_port()) as server:
        assert server.manage("GET", "/models/s")[1][0]["streams"] == 2  # model-config.yaml
    store = tmp_path / "store"
    make_archive(store, "stream_handler.py", "s")
    with Server(["--model-store", str(store), "--allow-shared-cores"], free_port(), wait_ready=False) as server:
        status, body = server.manage("POST", "/models?url=s.mar&streams=9&initial_workers=1")
        assert status == 200, body
        status, [described] = server.manage("GET", "/models/s")
        assert described["streams"] == 9  # as asked; each worker runs as many as it has cores
        worker = described["workers"][0]
        assert len(worker["streams"]) == len(worker["cores"])
        status, body = server.manage("POST", "/models?url=s.mar&model_name=u&streams=0")
        assert status == 400 and "streams" in body["message"]
