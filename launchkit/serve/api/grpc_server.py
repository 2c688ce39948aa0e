"""What launchkit's gRPC services share: grpc.aio's server, tokens, malformed messages, statuses.

Services are registered by hand (``server.add_registered_method_handlers``) from the generated message
classes in :mod:`launchkit.serve.api.protos`; no service stubs are generated. Each method is wrapped
so that a missing token is UNAUTHENTICATED and a request that is not its protobuf message is
INVALID_ARGUMENT (gRPC's own answer to a deserializer that raises is INTERNAL, as if the server
were at fault).
"""

from __future__ import annotations

import hmac
import logging
import os
from collections.abc import AsyncIterator, Callable
from enum import Enum
from typing import Any

# The frontend starts workers with fork+exec (never a bare fork that goes on running gRPC), so gRPC's
# fork handlers have nothing to protect: with them on, it logs a line at every worker start.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

import grpc  # noqa: E402 - after the setting above, which gRPC reads when it is imported
from google.protobuf.message import DecodeError  # noqa: E402

from launchkit.core.errors import LaunchkitError, ServeError  # noqa: E402
from launchkit.serve.api.grpc_codec import grpc_status  # noqa: E402
from launchkit.serve.api.responses import http_error  # noqa: E402

logger = logging.getLogger(__name__)
NEEDS_TOKEN = "this server needs a token: send 'authorization: Bearer <token>' metadata"


class Shape(Enum):
    """A method's shape: what it takes and what it answers."""

    UNARY = "unary"  # one request, one answer
    UNARY_STREAM = "unary_stream"  # one request, a stream of answers
    STREAM_STREAM = "stream_stream"  # a stream each way


class Malformed:
    """What a request that is not the method's protobuf message decodes to."""

    def __init__(self, kind: str, error: Exception) -> None:
        self.message = f"the request is not a valid {kind} protobuf message ({error})"


def _lenient(message: Any) -> Callable[[bytes], Any]:
    def decode(data: bytes) -> Any:
        try:
            return message.FromString(data)
        except DecodeError as error:
            return Malformed(message.DESCRIPTOR.full_name, error)

    return decode


def code_for(http_status: int) -> grpc.StatusCode:
    return getattr(grpc.StatusCode, grpc_status(http_status).value)


async def abort_with(context: grpc.aio.ServicerContext, error: LaunchkitError) -> None:
    """End the call with the gRPC status for the HTTP status the error would get, and its message."""
    status, _kind, _headers = http_error(error)
    await context.abort(code_for(status), str(error))


def _authorized(context: grpc.aio.ServicerContext, token: str | None) -> bool:
    if not token:
        return True
    wanted = f"Bearer {token}"
    return any(key == "authorization" and isinstance(value, str) and hmac.compare_digest(value, wanted)
               for key, value in context.invocation_metadata() or ())


def method_handler(method: Callable[..., Any], shape: Shape, request: Any, response: Any,
                   token: str | None) -> grpc.RpcMethodHandler:
    """``method`` (an async function, or an async generator for streamed answers) as gRPC's handler."""
    if shape is Shape.UNARY:
        async def unary(message: Any, context: grpc.aio.ServicerContext) -> Any:
            if not _authorized(context, token):
                await context.abort(grpc.StatusCode.UNAUTHENTICATED, NEEDS_TOKEN)
            if isinstance(message, Malformed):
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, message.message)
            return await method(message, context)

        return grpc.unary_unary_rpc_method_handler(unary, request_deserializer=_lenient(request),
                                                   response_serializer=response.SerializeToString)

    async def streamed(messages: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        if not _authorized(context, token):
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, NEEDS_TOKEN)
        if isinstance(messages, Malformed):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, messages.message)
        async for answer in method(messages, context):  # a stream's malformed messages: the method's to answer
            yield answer

    make = grpc.unary_stream_rpc_method_handler if shape is Shape.UNARY_STREAM else grpc.stream_stream_rpc_method_handler
    return make(streamed, request_deserializer=_lenient(request), response_serializer=response.SerializeToString)


Service = tuple[str, dict[str, grpc.RpcMethodHandler]]  # a service's full name, its methods' handlers


async def start_grpc_server(services: list[Service], target: str, key: str, flag: str,
                            max_receive: int, max_send: int) -> grpc.aio.Server:
    """Listen on ``target`` (host:port) with ``services``; a port that cannot be bound is a clear error.

    Methods are registered ahead (gRPC's registered methods): a call then skips the core's lookup
    of an unknown method by name."""
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", max_receive),
                                      ("grpc.max_send_message_length", max_send),
                                      ("grpc.so_reuseport", 0)])
    for name, methods in services:
        server.add_registered_method_handlers(name, methods)
    try:
        server.add_insecure_port(target)
    except RuntimeError as error:
        raise ServeError(f"cannot listen on {target} ({key}): {error}. Is another server running there? Pick "
                         f"another port with {flag} (or {key}= in --ts-config).") from None
    await server.start()
    return server
