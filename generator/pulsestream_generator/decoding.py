"""Requests that do not decode get ``INVALID_ARGUMENT`` and one debug line, not ``UNKNOWN`` and a traceback.

gRPC hands the raw request bytes to the generated ``FromString``; when it
raises (garbage, a truncated or a foreign message), grpc.aio logs the
exception with its traceback at ERROR level and answers ``UNKNOWN`` —
a log line per call that anyone who can reach the port can trigger. The
servicers are registered through :func:`add_servicer` instead: each unary
request is decoded by a wrapper that turns a ``DecodeError`` into a marker,
and the method refuses the marker with ``INVALID_ARGUMENT``
(``BAD_ARGUMENT``, ``field: (request)``) before the servicer sees it.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from pulsestream import refusals
from pulsestream.refusals import Reason

__all__ = ["add_servicer"]

logger = logging.getLogger(__name__)


class _Undecodable:
    """What a request that could not be decoded becomes: the reason, kept for the answer."""

    __slots__ = ("error",)

    def __init__(self, error: str) -> None:
        self.error = error


def _tolerant(deserializer: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    def deserialize(raw: bytes) -> Any:
        try:
            return deserializer(raw)
        except DecodeError as error:
            return _Undecodable(str(error))

    return deserialize


async def _refuse(context: grpc.aio.ServicerContext, request: _Undecodable) -> None:
    logger.debug("undecodable request refused: %s", request.error, extra={"peer": context.peer()})
    await context.abort_with_status(
        refusals.status(Reason.BAD_ARGUMENT, f"request: not a valid message ({request.error})", field="(request)")
    )


def _guarded(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    """The same method handler, decoding its request tolerantly (streamed requests are left as they are)."""
    if handler.request_streaming or handler.request_deserializer is None:
        return handler
    deserializer = _tolerant(handler.request_deserializer)
    if handler.response_streaming:
        stream = handler.unary_stream

        async def unary_stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            if isinstance(request, _Undecodable):
                await _refuse(context, request)
            async for response in stream(request, context):
                yield response

        return grpc.unary_stream_rpc_method_handler(unary_stream, deserializer, handler.response_serializer)
    unary = handler.unary_unary

    async def unary_unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
        if isinstance(request, _Undecodable):
            await _refuse(context, request)
        return await unary(request, context)

    return grpc.unary_unary_rpc_method_handler(unary_unary, deserializer, handler.response_serializer)


class _GuardedGeneric(grpc.GenericRpcHandler):  # type: ignore[misc]  # grpc is untyped
    """A generic handler whose method handlers decode tolerantly (for generated code without registered methods)."""

    def __init__(self, inner: grpc.GenericRpcHandler) -> None:
        self._inner = inner
        self._guarded: dict[str, grpc.RpcMethodHandler | None] = {}

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        method = str(handler_call_details.method)
        if method not in self._guarded:
            handler = self._inner.service(handler_call_details)
            self._guarded[method] = _guarded(handler) if handler is not None else None
        return self._guarded[method]


class _Capture:
    """Stands in for the server while a generated ``add_*_to_server`` registers its method handlers."""

    def __init__(self) -> None:
        self.generic: list[grpc.GenericRpcHandler] = []
        self.services: dict[str, dict[str, grpc.RpcMethodHandler]] = {}

    def add_generic_rpc_handlers(self, handlers: tuple[grpc.GenericRpcHandler, ...]) -> None:
        self.generic.extend(handlers)

    def add_registered_method_handlers(self, service: str, handlers: dict[str, grpc.RpcMethodHandler]) -> None:
        self.services[service] = handlers


def add_servicer(server: grpc.aio.Server, add_to_server: Callable[[Any, Any], None], servicer: object) -> None:
    """``add_to_server(servicer, server)`` (a generated function), with every unary request decoded tolerantly."""
    capture = _Capture()
    add_to_server(servicer, capture)
    if not capture.services:  # older generated code (opentelemetry-proto's) registers generic handlers only
        server.add_generic_rpc_handlers(tuple(_GuardedGeneric(handler) for handler in capture.generic))
        return
    for service, handlers in capture.services.items():
        guarded = {name: _guarded(handler) for name, handler in handlers.items()}
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, guarded),))
        server.add_registered_method_handlers(service, guarded)
