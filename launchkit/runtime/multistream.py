"""MultiStreamModule: one model, one copy of its weights, several streams (pinned threads, each with
its own OpenMP team on its share of the pool) running parts of a batch at once.

The pool's cores are divided evenly and the first ``len(cores) % streams`` streams get one more;
a batch is split the same way (4 over 3 streams: 2, 1, 1), and a batch smaller than the stream
count runs on that many streams. The parts go to one queue that every stream takes from when it is
free, so a stream on a busier core does fewer parts: with a fixed part per stream every call ran at
the slowest stream's pace, and one core shared with the caller's thread or a system task held all
sixteen back. Hints say where inputs are split and outputs joined: an int is a
dimension, None means "not split" (every stream gets the whole value; for an output, stream 0's is
kept), and tuples, lists and dicts nest as the values do. The default hint, a bare 0, splits every
tensor input on dimension 0 and joins every tensor output on it.

Streams run at once only where the model releases the GIL while it computes (TorchScript, frozen
and compiled graphs; large eager operators partly); an eager Python model gets one warning.
"""

from __future__ import annotations

import concurrent.futures
import logging
import queue
import threading
import warnings
from typing import Any

import torch

from launchkit.core.errors import InvalidArgument, WrongArgumentType
from launchkit.runtime.pool import CPUPool
from launchkit.runtime.threads import Future, _PinnedThread

logger = logging.getLogger(__name__)
_warned_eager = False


def get_default_num_streams(cpu_pool: CPUPool) -> int:
    """What ``num_streams="AUTO"`` means: one stream per core of the pool."""
    return len(cpu_pool)


class MultiStreamModuleHint:
    """Where a module's inputs are split, or its outputs joined: ``MultiStreamModuleHint(0, None,
    (0, 1), key=0)`` mirrors ``module(x, flag, (a, b), key=y)``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        for path, value in [(f"argument {i}", a) for i, a in enumerate(args)] + [(k, v) for k, v in kwargs.items()]:
            _check_hint(value, path)
        self.args = args
        self.kwargs = kwargs

    @property
    def broadcast(self) -> bool:
        """A bare int: applies to every tensor, wherever it is."""
        return len(self.args) == 1 and isinstance(self.args[0], int) and not self.kwargs

    def __repr__(self) -> str:
        parts = [repr(a) for a in self.args] + [f"{k}={v!r}" for k, v in self.kwargs.items()]
        return f"MultiStreamModuleHint({', '.join(parts)})"


def _check_hint(value: Any, path: str) -> None:
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return
    if isinstance(value, (tuple, list)):
        for index, item in enumerate(value):
            _check_hint(item, f"{path}[{index}]")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            _check_hint(item, f"{path}[{key!r}]")
        return
    raise TypeError(f"hint {path}: {value!r} is not a dimension (int), None, or a tuple/list/dict of them")


def _sizes(total: int, parts: int) -> list[int]:
    size, extra = divmod(total, parts)
    return [size + (1 if index < extra else 0) for index in range(parts)]


class MultiStreamModule(torch.nn.Module):
    """``MultiStreamModule(model, num_streams="AUTO", cpu_pool=CPUPool(), concat_output=True,
    input_split_hint=MultiStreamModuleHint(0), output_concat_hint=MultiStreamModuleHint(0))``;
    call it like the model."""

    def __init__(self, model: Any, num_streams: int | str = "AUTO", cpu_pool: CPUPool | None = None,
                 concat_output: bool = True, input_split_hint: MultiStreamModuleHint | None = None,
                 output_concat_hint: MultiStreamModuleHint | None = None) -> None:
        super().__init__()
        if not callable(model):
            raise TypeError(f"MultiStreamModule runs a module or a callable, got {type(model).__name__}")
        cpu_pool = cpu_pool if cpu_pool is not None else CPUPool()
        if not isinstance(cpu_pool, CPUPool):
            raise TypeError(f"cpu_pool must be a CPUPool, got {type(cpu_pool).__name__}")
        for name, hint in (("input_split_hint", input_split_hint), ("output_concat_hint", output_concat_hint)):
            if hint is not None and not isinstance(hint, MultiStreamModuleHint):
                raise TypeError(f"{name} must be a MultiStreamModuleHint, got {type(hint).__name__}")
        streams = self._stream_count(num_streams, cpu_pool)
        self.model = model
        self.cpu_pool = cpu_pool
        self.concat_output = concat_output
        self.input_split_hint = input_split_hint or MultiStreamModuleHint(0)
        self.output_concat_hint = output_concat_hint or MultiStreamModuleHint(0)
        self.pools = cpu_pool.split(streams)
        self.num_streams = streams
        self._parts: queue.SimpleQueue[Any] = queue.SimpleQueue()  # every stream takes the next part from here
        self._streams = [_PinnedThread(pool.core_ids, f"launchkit-stream-{index}", self._parts)
                         for index, pool in enumerate(self.pools)]
        _warn_if_eager(model)

    @staticmethod
    def _stream_count(num_streams: int | str, cpu_pool: CPUPool) -> int:
        if isinstance(num_streams, str):
            if num_streams.upper() != "AUTO":
                raise InvalidArgument(f'num_streams={num_streams!r}: give a number of streams or "AUTO"')
            return get_default_num_streams(cpu_pool)
        if not isinstance(num_streams, int) or isinstance(num_streams, bool):
            raise WrongArgumentType(f'num_streams={num_streams!r}: give a number of streams (1 or more) or "AUTO"')
        if num_streams < 1:
            raise InvalidArgument(f'num_streams={num_streams!r}: give a number of streams (1 or more) or "AUTO"')
        if num_streams > len(cpu_pool):
            warnings.warn(f"num_streams={num_streams} is more than the pool's {len(cpu_pool)} cores: using "
                          f"{len(cpu_pool)} streams, one per core", stacklevel=3)
            return len(cpu_pool)
        return num_streams

    @property
    def stream_threads(self) -> list[int | None]:
        """Each stream's thread id in /proc/self/task."""
        return [stream.native_id for stream in self._streams]

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.submit(*args, **kwargs).result()

    def submit(self, *args: Any, **kwargs: Any) -> Future:
        """Start the call on the streams and return at once: a :class:`Future` of what calling the
        module returns (``.result()``/``.get()`` waits).

        Parts are taken in the order they were submitted, by whichever stream is free, so with two
        or more calls in flight a stream that finishes a part of one call starts on the next call's
        at once, and the caller can prepare the next inputs meanwhile: a synchronous call leaves
        every stream idle from the moment it finishes until the slowest does.
        """
        hint = self.input_split_hint
        batch = _batch_size(args, kwargs, hint)
        active = max(1, min(self.num_streams, batch)) if batch else 1
        sizes = _sizes(batch, active) if batch else [0]
        chunks = [_take(args, kwargs, hint, sizes, index) for index in range(active)]
        result = Future()
        result.set_running_or_notify_cancel()
        parts: list[Future] = [self._streams[0].submit(self.model, *chunk_args, **chunk_kwargs)
                               for chunk_args, chunk_kwargs in chunks]  # the queue is shared: any stream runs it
        _JoinWhenDone(parts, result, self._finish)
        return result

    def _finish(self, outputs: list[Any]) -> Any:
        return _join(outputs, self.output_concat_hint) if self.concat_output else outputs

    def close(self) -> None:
        for stream in self._streams:
            stream.stop()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass


class _JoinWhenDone:
    """Completes ``result`` once every part is done: with the joined outputs, or the first error.
    The join runs on the thread that finished last (a stream), so no thread waits on the parts."""

    def __init__(self, parts: list[Future], result: Future, join: Any) -> None:
        self.parts, self.result, self.join = parts, result, join
        self.left = len(parts)
        self.lock = threading.Lock()
        for part in parts:
            part.add_done_callback(self._one_done)

    def _one_done(self, _: concurrent.futures.Future[Any]) -> None:
        with self.lock:
            self.left -= 1
            if self.left:
                return
        error = next((part.exception() for part in self.parts if part.exception() is not None), None)
        if error is not None:
            self.result.set_exception(error)
            return
        try:
            self.result.set_result(self.join([part.result() for part in self.parts]))
        except BaseException as failure:  # noqa: BLE001 - a join that does not fit: the caller gets it
            self.result.set_exception(failure)


def _warn_if_eager(model: Any) -> None:
    global _warned_eager
    graph_types = (torch.jit.ScriptModule, torch.jit.ScriptFunction)
    compiled = type(model).__name__ == "OptimizedModule"  # torch.compile's wrapper
    if isinstance(model, torch.nn.Module) and not isinstance(model, graph_types) and not compiled and not _warned_eager:
        _warned_eager = True
        logger.warning("MultiStreamModule: %s is eager Python, which holds the GIL between operators, so its "
                       "streams mostly take turns. Trace and freeze it (torch.jit.freeze(torch.jit.trace(model, "
                       "example))) or torch.compile it to run the streams at once.", type(model).__name__)


# -- splitting and joining ------------------------------------------------------------------------

def _pairs(args: tuple[Any, ...], kwargs: dict[str, Any], hint: MultiStreamModuleHint) -> list[tuple[Any, Any, str]]:
    """(value, its hint, where) for each argument; a broadcast hint applies to every argument."""
    if hint.broadcast:
        return [(value, hint.args[0], f"argument {i}") for i, value in enumerate(args)] + \
            [(value, hint.args[0], key) for key, value in kwargs.items()]
    if len(hint.args) != len(args) or set(hint.kwargs) != set(kwargs):
        raise InvalidArgument(f"input_split_hint {hint!r} does not match the call: {len(args)} positional argument(s) "
                         f"and keywords {sorted(kwargs)}")
    return [(value, hint.args[i], f"argument {i}") for i, value in enumerate(args)] + \
        [(value, hint.kwargs[key], key) for key, value in kwargs.items()]


def _batch_size(args: tuple[Any, ...], kwargs: dict[str, Any], hint: MultiStreamModuleHint) -> int:
    sizes: dict[str, int] = {}
    for value, part, where in _pairs(args, kwargs, hint):
        _collect_sizes(value, part, where, sizes, hint.broadcast)
    if len(set(sizes.values())) > 1:
        raise InvalidArgument(f"inputs to split disagree on the batch size: {sizes}")
    return next(iter(sizes.values()), 0)


def _collect_sizes(value: Any, hint: Any, where: str, sizes: dict[str, int], broadcast: bool) -> None:
    if hint is None:
        return
    if isinstance(hint, int):
        if isinstance(value, torch.Tensor):
            if hint >= value.dim() or hint < -value.dim():
                raise InvalidArgument(f"{where}: cannot split a {value.dim()}-d tensor on dimension {hint}")
            sizes[where] = value.shape[hint]
        elif isinstance(value, (tuple, list)) and broadcast:
            for index, item in enumerate(value):
                _collect_sizes(item, hint, f"{where}[{index}]", sizes, broadcast)
        elif isinstance(value, dict) and broadcast:
            for key, item in value.items():
                _collect_sizes(item, hint, f"{where}[{key!r}]", sizes, broadcast)
        elif not broadcast:
            raise WrongArgumentType(f"{where}: hint {hint} splits a tensor, but the value is a {type(value).__name__}")
        return
    if isinstance(hint, dict):
        if not isinstance(value, dict) or set(hint) != set(value):
            raise InvalidArgument(f"{where}: hint {hint!r} does not match the value's keys")
        for key in hint:
            _collect_sizes(value[key], hint[key], f"{where}[{key!r}]", sizes, broadcast)
        return
    if not isinstance(value, (tuple, list)) or len(value) != len(hint):
        raise WrongArgumentType(f"{where}: hint {hint!r} does not match a {type(value).__name__} of {len(value) if hasattr(value, '__len__') else '?'} items")
    for index, (item, part) in enumerate(zip(value, hint)):
        _collect_sizes(item, part, f"{where}[{index}]", sizes, broadcast)


def _take(args: tuple[Any, ...], kwargs: dict[str, Any], hint: MultiStreamModuleHint, sizes: list[int],
          index: int) -> tuple[tuple[Any, ...], dict[str, Any]]:
    start = sum(sizes[:index])
    span = (start, sizes[index])
    pairs = _pairs(args, kwargs, hint)
    values = [_slice(value, part, span) for value, part, _ in pairs]
    return tuple(values[:len(args)]), dict(zip(kwargs, values[len(args):]))


def _slice(value: Any, hint: Any, span: tuple[int, int]) -> Any:
    if hint is None:
        return value
    if isinstance(hint, int):
        if isinstance(value, torch.Tensor):
            return value.narrow(hint, span[0], span[1])
        if isinstance(value, (tuple, list)):
            return type(value)(_slice(item, hint, span) for item in value)
        if isinstance(value, dict):
            return {key: _slice(item, hint, span) for key, item in value.items()}
        return value
    if isinstance(hint, dict):
        return {key: _slice(value[key], hint[key], span) for key in value}
    return type(value)(_slice(item, part, span) for item, part in zip(value, hint))


def _join(outputs: list[Any], hint: MultiStreamModuleHint) -> Any:
    if hint.broadcast:
        return _join_value(outputs, hint.args[0])
    structure = hint.args[0] if len(hint.args) == 1 and not hint.kwargs else (hint.kwargs or hint.args)
    return _join_value(outputs, structure)


def _join_value(outputs: list[Any], hint: Any) -> Any:
    first = outputs[0]
    if hint is None:
        return first
    if isinstance(hint, int):
        if isinstance(first, torch.Tensor):
            return torch.cat(outputs, dim=hint)
        if isinstance(first, (tuple, list)):
            return type(first)(_join_value([out[i] for out in outputs], hint) for i in range(len(first)))
        if isinstance(first, dict):
            return {key: _join_value([out[key] for out in outputs], hint) for key in first}
        return first
    if isinstance(hint, dict):
        if not isinstance(first, dict) or set(first) != set(hint):
            raise InvalidArgument(f"output_concat_hint {hint!r} does not match the output's keys")
        return {key: _join_value([out[key] for out in outputs], hint[key]) for key in first}
    if not isinstance(first, (tuple, list)) or len(first) != len(hint):
        raise WrongArgumentType(f"output_concat_hint {hint!r} does not match the output ({type(first).__name__})")
    return type(first)(_join_value([out[i] for out in outputs], part) for i, part in enumerate(hint))
