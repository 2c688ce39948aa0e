"""Which handler an archive names: a file of the archive, or one of TorchServe's default handlers.

TorchServe resolves a handler that is not a file of the archive among its default handlers
(``image_classifier``, ``image_segmenter``, ``object_detector``, ``text_classifier``); launchkit
ships its own versions of them (no torchvision or torchtext needed; every one batches), plus
``base_handler``. ``ts.torch_handler.image_classifier`` spells the same handler. The classes live
in the worker (``launchkit.serve.worker.builtin_*``); this module only knows their names.
"""

from __future__ import annotations

from collections.abc import Callable

from launchkit.core.errors import ArchiveError

BUILTIN_HANDLERS = ("image_classifier", "image_segmenter", "object_detector", "text_classifier", "base_handler")
TS_PREFIX = "ts.torch_handler."


def builtin_handler(handler: str) -> str | None:
    """The default handler ``handler`` names (``image_classifier``), or None."""
    module = handler.partition(":")[0]
    module = module[len(TS_PREFIX):] if module.startswith(TS_PREFIX) else module
    return module if module in BUILTIN_HANDLERS else None


def handler_module_file(handler: str) -> str:
    """The file a handler that is not built in must be: ``my_handler.py`` for ``my_handler[:fn]``."""
    module = handler.partition(":")[0]
    return module if module.endswith(".py") else f"{module}.py"


def check_handler(handler: str, has_file: Callable[[str], bool], where: str) -> None:
    """ArchiveError unless ``handler`` is a file of the archive (``has_file``) or a default handler."""
    if not handler.partition(":")[0]:
        raise ArchiveError(f"{where}: the handler name is empty")
    if builtin_handler(handler) is None and not has_file(handler_module_file(handler)):
        raise ArchiveError(
            f"{where}: handler {handler!r} is neither a file of the archive ({handler_module_file(handler)}) nor "
            f"a default handler ({', '.join(BUILTIN_HANDLERS)}); pass a handler .py file or one of those names")
