"""Fake generator refusals for client-side tests, built with the generator's own helper.

A test that needs "the generator said no" builds the error the way the
generator does (:func:`pulsestream.refusals.status`), so it never copies a
message text and follows the contract if a reason's code or shape changes.
"""

from __future__ import annotations

import grpc
import grpc.aio

from pulsestream.refusals import Reason, status

__all__ = ["refused", "rpc_error"]


def rpc_error(
    code: grpc.StatusCode, message: str, trailing: tuple[tuple[str, str | bytes], ...] = ()
) -> grpc.aio.AioRpcError:
    """The error a ``grpc.aio`` client raises for a call that ended with ``code``, ``message`` and trailers."""
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(*trailing), details=message)


def refused(reason: Reason, message: str = "refused", **metadata: object) -> grpc.aio.AioRpcError:
    """The error a ``grpc.aio`` client sees when the generator refuses with ``reason`` (and ``metadata``)."""
    sent = status(reason, message, **metadata)
    return rpc_error(sent.code, sent.details, tuple(sent.trailing_metadata))
