"""The machine's speed for perf-gate.sh: mnist's model called in process (no launchkit code in the
path), batch 8 on one thread (steadier than batch 1: about a millisecond a call); the median of
five rounds, in ms per call."""

import statistics
import time

import torch

from launchkit.examples.mnist import digit_net

torch.set_num_threads(1)
model, x = digit_net(), torch.rand(8, 1, 28, 28)
rounds = []
with torch.inference_mode():
    for _ in range(50):
        model(x)
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(100):
            model(x)
        rounds.append((time.perf_counter() - started) / 100 * 1000)
print(f"{statistics.median(rounds):.4f}")
