"""One instance of the multi-instance benchmark: batch-1 ResNet-18 images/s over a shared window.

    resnet_worker.py --dir DIR [--duration 15] [--batch 1] [--warmup 10]

Warms up, writes DIR/ready.<pid>, waits for DIR/go (a start time written by the orchestrator,
so all instances measure the same window), runs until start+duration, writes DIR/result.<pid>.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from launchkit.examples.resnet import resnet18  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dir", required=True)
    parser.add_argument("--duration", type=float, default=15.0)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=10)
    args = parser.parse_args()
    folder = Path(args.dir)
    model = resnet18()
    images = torch.randn(args.batch, 3, 224, 224)
    with torch.inference_mode():
        for _ in range(args.warmup):
            model(images)
        (folder / f"ready.{os.getpid()}").write_text("")
        go = folder / "go"
        while not go.exists():
            time.sleep(0.01)
        time.sleep(0.05)  # the orchestrator writes go atomically, but be safe on slow filesystems
        start = float(go.read_text())
        while time.time() < start:
            time.sleep(0.001)
        end = start + args.duration
        done = 0
        while time.time() < end:
            model(images)
            done += args.batch
        elapsed = time.time() - start
    result = {
        "pid": os.getpid(),
        "instance": os.environ.get("LAUNCHKIT_INSTANCE_ID"),
        "threads": torch.get_num_threads(),
        "affinity": sorted(os.sched_getaffinity(0)),
        "images": done,
        "seconds": elapsed,
        "images_per_s": done / elapsed,
    }
    (folder / f"result.{os.getpid()}").write_text(json.dumps(result))


if __name__ == "__main__":
    main()
