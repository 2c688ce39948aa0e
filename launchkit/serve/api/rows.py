"""Requests that carry several rows (KServe v2 tensors, v1 instances): each row is queued as its
own item, so it is batched with other requests' rows by the model's dynamic batching."""

from __future__ import annotations

import asyncio

from launchkit.serve.scheduling.registry import ServedModel
from launchkit.serve.wire import ItemRequest, ItemResult


async def run_rows(model: ServedModel, rows: list[tuple[bytes, str]], request_id: str) -> list[ItemResult]:
    """The result of every row, in order. If the client goes away, rows still queued are not run."""
    futures = model.queue.submit_many([ItemRequest(f"{request_id}.{index}", body, content_type, [])
                                       for index, (body, content_type) in enumerate(rows)])
    try:
        if len(futures) == 1:  # one row: await it directly (gather costs a second trip around the loop)
            return [await futures[0]]
        return list(await asyncio.gather(*futures))
    except asyncio.CancelledError:
        for future in futures:
            future.cancel()
        raise
