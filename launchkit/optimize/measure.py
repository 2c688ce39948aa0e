"""Measure an original model against its optimized form: throughput and agreement. Needs torch.

Throughput: the same inputs, alternating original and optimized for a few rounds (the machine's
speed drifts), median of the rounds. Accuracy, against the fp32 original on every sample: top-1
agreement (classifiers), cosine similarity of each output row (embeddings, and logits too),
largest absolute difference.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Agreement:
    samples: int
    top1_agreement: float
    min_cosine: float
    mean_cosine: float
    max_abs_diff: float


def throughput(model: Callable[..., Any], inputs: tuple[Any, ...], seconds: float) -> float:
    """Samples per second of ``model`` on ``inputs`` (whose first dimension is the batch)."""
    batch = inputs[0].shape[0]
    model(*inputs)  # warm-up (graph modes specialise on the first runs)
    model(*inputs)
    runs, started = 0, time.perf_counter()
    while True:
        model(*inputs)
        runs += 1
        elapsed = time.perf_counter() - started
        if elapsed >= seconds and runs >= 2:
            return batch * runs / elapsed


@dataclass(frozen=True)
class Comparison:
    """Samples/s of the original and the optimized model, round by round (interleaved)."""

    original: tuple[float, ...]
    optimized: tuple[float, ...]

    @property
    def speedup(self) -> float:
        return statistics.median(self.optimized) / statistics.median(self.original)

    @property
    def slower_beyond_noise(self) -> bool:
        """Slower in every round, and by more than 5% at the median: not a drift of the machine."""
        return self.speedup < 0.95 and all(b < a for a, b in zip(self.original, self.optimized))


def compare_throughput(original: Callable[..., Any], optimized: Callable[..., Any], inputs: tuple[Any, ...],
                       seconds: float, rounds: int = 3) -> Comparison:
    """Samples/s of both, in interleaved rounds (the machine's speed drifts)."""
    first: list[float] = []
    second: list[float] = []
    for round_index in range(rounds):
        pair = [(original, first), (optimized, second)]
        for model, results in pair if round_index % 2 == 0 else pair[::-1]:
            results.append(throughput(model, inputs, seconds / rounds))
    return Comparison(tuple(first), tuple(second))


def agreement(original: Callable[..., Any], optimized: Callable[..., Any], samples: tuple[Any, ...],
              batch_size: int) -> Agreement:
    import torch

    count = samples[0].shape[0]
    reference, candidate = [], []
    for start in range(0, count, batch_size):
        chunk = tuple(tensor[start:start + batch_size] for tensor in samples)
        reference.append(_main_output(original(*chunk)).float().reshape(chunk[0].shape[0], -1))
        candidate.append(_main_output(optimized(*chunk)).float().reshape(chunk[0].shape[0], -1))
    a, b = torch.cat(reference), torch.cat(candidate)
    cosine = torch.nn.functional.cosine_similarity(a, b, dim=1)
    top1 = (a.argmax(dim=1) == b.argmax(dim=1)).float().mean().item() if a.shape[1] > 1 else 1.0
    return Agreement(count, round(top1, 5), round(cosine.min().item(), 6), round(cosine.mean().item(), 6),
                     float((a - b).abs().max().item()))


def _main_output(output: Any) -> Any:
    if isinstance(output, (tuple, list)):
        return output[0]
    if isinstance(output, dict):
        return next(iter(output.values()))
    return output


def label_accuracy(original: Callable[..., Any], optimized: Callable[..., Any], inputs: tuple[Any, ...],
                   labels: Any, batch_size: int) -> dict[str, Any]:
    """Label accuracy of both on a labelled held-out set, and the drop in points."""
    import torch

    def correct(model: Callable[..., Any]) -> float:
        hits = 0
        for start in range(0, labels.shape[0], batch_size):
            chunk = tuple(tensor[start:start + batch_size] for tensor in inputs)
            hits += int((_main_output(model(*chunk)).argmax(dim=1) == labels[start:start + batch_size]).sum())
        return hits / labels.shape[0]

    with torch.inference_mode():
        fp32, ours = correct(original), correct(optimized)
    return {"samples": int(labels.shape[0]), "original": round(fp32, 5), "optimized": round(ours, 5),
            "drop_points": round((fp32 - ours) * 100, 2)}
