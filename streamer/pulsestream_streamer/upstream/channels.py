"""The gRPC side: one shared channel per generator address, the Subscribe and ListSeries calls.

:class:`Upstream` owns the channels (created lazily, one per address in
``STREAMER_GENERATOR_ADDRESS``, shared by every subscription, closed on
shutdown) and knows which address is current. :meth:`Upstream.subscribe` is
the ONE place a ``Subscribe`` call is made (tracing wraps it there);
:meth:`Upstream.list_series` the one ``ListSeries`` call (deadline and retry
policy from the service config).
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
from google.protobuf import timestamp_pb2

from pulsestream import telemetry
from pulsestream.spec import RESOLUTIONS
from pulsestream.v1 import timeseries_pb2, timeseries_pb2_grpc
from pulsestream_streamer.core.catalogue import Catalogue, SeriesInfo
from pulsestream_streamer.core.samples import Sample, from_point
from pulsestream_streamer.settings import StreamerSettings
from pulsestream_streamer.upstream.errors import Start, UpstreamError

__all__ = ["Upstream", "channel_credentials", "channel_options", "samples_of"]

logger = logging.getLogger(__name__)

_SERVICE = "pulsestream.v1.TimeSeriesService"


def _timestamp_ms(point: timeseries_pb2.Point) -> int:
    stamp = point.timestamp
    return int(stamp.seconds) * 1000 + int(stamp.nanos) // 1_000_000


def samples_of(response: timeseries_pb2.SubscribeResponse, series: str) -> list[Sample]:
    """The points of ``series`` in one response, as samples."""
    return [from_point(p, _timestamp_ms(p)) for p in response.points if p.series == series]


def _service_config(settings: StreamerSettings) -> str:
    """Retry policy for the unary ListSeries (streams are resumed by :func:`follow` instead)."""
    return json.dumps(
        {
            "methodConfig": [
                {
                    "name": [{"service": _SERVICE, "method": "ListSeries"}],
                    "timeout": f"{settings.unary_timeout.seconds:.3f}s",
                    "retryPolicy": {
                        "maxAttempts": max(2, settings.unary_retries),
                        "initialBackoff": f"{settings.reconnect_base.seconds:.3f}s",
                        "maxBackoff": f"{settings.reconnect_cap.seconds:.3f}s",
                        "backoffMultiplier": 2,
                        "retryableStatusCodes": ["UNAVAILABLE"],
                    },
                }
            ]
        }
    )


def channel_options(settings: StreamerSettings) -> list[tuple[str, Any]]:
    """gRPC channel arguments from the settings: keepalive, message size, reconnect pacing, retries."""
    options: list[tuple[str, Any]] = [
        ("grpc.keepalive_time_ms", settings.keepalive_time.millis),
        ("grpc.keepalive_timeout_ms", settings.keepalive_timeout.millis),
        # grpcio 1.85 waits for a ping's ack up to http2.ping_timeout_ms (default 1 min), not keepalive_timeout:
        # without this a frozen generator (SIGSTOP, half-open TCP) held streams for a minute.
        ("grpc.http2.ping_timeout_ms", settings.keepalive_timeout.millis),
        ("grpc.keepalive_permit_without_calls", 0),
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.max_receive_message_length", settings.max_message_size),
        ("grpc.max_send_message_length", settings.max_message_size),
        ("grpc.initial_reconnect_backoff_ms", settings.reconnect_base.millis),
        # Despite its name, C-core uses this as the minimum time one connection attempt gets
        # (MIN_CONNECT_TIMEOUT in gRPC's connection-backoff.md; 20 s by default).
        ("grpc.min_reconnect_backoff_ms", settings.connect_timeout.millis),
        ("grpc.max_reconnect_backoff_ms", settings.reconnect_cap.millis),
        ("grpc.enable_retries", 1),
        ("grpc.service_config", _service_config(settings)),
    ]
    if settings.tls_server_name:
        options.append(("grpc.ssl_target_name_override", settings.tls_server_name))
    return options


def channel_credentials(settings: StreamerSettings) -> grpc.ChannelCredentials | None:
    """TLS credentials when a CA file is configured (optionally with a client certificate), else None."""
    if not settings.tls_ca_file:
        return None
    ca = Path(settings.tls_ca_file).read_bytes()
    cert = Path(settings.tls_cert_file).read_bytes() if settings.tls_cert_file else None
    key = Path(settings.tls_key_file).read_bytes() if settings.tls_key_file else None
    return grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)


class Upstream:
    """Channels to the generator replicas; the current one is used, failures move to the next."""

    def __init__(self, settings: StreamerSettings) -> None:
        self.settings = settings
        self.addresses = list(settings.generator_address)
        self._index = 0
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._options = channel_options(settings)
        self._credentials = channel_credentials(settings)
        self.last_error: str | None = None

    @property
    def address(self) -> str:
        return self.addresses[self._index]

    def channel(self, address: str | None = None) -> grpc.aio.Channel:
        """The shared channel to ``address`` (default: the current one), created on first use."""
        target = address or self.address
        channel = self._channels.get(target)
        if channel is None:
            if self._credentials is not None:
                channel = grpc.aio.secure_channel(target, self._credentials, options=self._options)
            else:
                channel = grpc.aio.insecure_channel(target, options=self._options)
            self._channels[target] = channel
        return channel

    def failover(self, failed: str) -> None:
        """Move to the next address after ``failed`` (no-op if another subscription already moved on)."""
        if len(self.addresses) > 1 and self.address == failed:
            self._index = (self._index + 1) % len(self.addresses)
            logger.info("upstream failover", extra={"failed": failed, "address": self.address})

    def state(self) -> str:
        """Connectivity of the current channel: idle, connecting, ready, transient_failure, shutdown."""
        channel = self._channels.get(self.address)
        if channel is None:
            return "idle"
        return str(channel.get_state(try_to_connect=False).name).lower()

    async def list_series(self) -> Catalogue:
        """The generator's catalogue (ListSeries, with deadline and retries); raise UpstreamError."""
        stub = timeseries_pb2_grpc.TimeSeriesServiceStub(self.channel())  # type: ignore[no-untyped-call]
        try:
            reply = await stub.ListSeries(
                timeseries_pb2.ListSeriesRequest(), timeout=self.settings.unary_timeout.seconds
            )
        except grpc.aio.AioRpcError as error:
            self.last_error = f"{error.code().name}: {error.details()}"
            raise UpstreamError.of(error) from error
        self.last_error = None
        return Catalogue(
            series={
                info.name: SeriesInfo(
                    info.name,
                    info.unit,
                    info.description,
                    info.expected_min,
                    info.expected_max,
                    info.shape,
                    info.origin,
                )
                for info in reply.series
            },
            frequency_ms=reply.frequency.seconds * 1000 + reply.frequency.nanos // 1_000_000,
            retention_ms=reply.retention.seconds * 1000 + reply.retention.nanos // 1_000_000,
            resolutions=tuple(reply.resolutions) or tuple(RESOLUTIONS),
            known=True,
        )

    async def subscribe(
        self, series: list[str], resolution: str, start: Start, address: str | None = None
    ) -> AsyncGenerator[timeseries_pb2.SubscribeResponse, None]:
        """THE Subscribe call: yield responses until the stream ends; raise UpstreamError on failure.

        Closing the generator (``aclose``) cancels the call at once.
        """
        request = timeseries_pb2.SubscribeRequest(series=series, resolution=resolution)
        if start.after is not None:
            request.after_sequence = start.after
        elif start.time_ms is not None:
            request.start_time.CopyFrom(timestamp_pb2.Timestamp(seconds=start.time_ms // 1000, nanos=0))
            request.start_time.nanos = (start.time_ms % 1000) * 1_000_000
        stub = timeseries_pb2_grpc.TimeSeriesServiceStub(self.channel(address))  # type: ignore[no-untyped-call]
        call = stub.Subscribe(request, metadata=telemetry.inject_metadata())  # W3C traceparent of the current span
        try:
            async for response in call:
                yield response
        except grpc.aio.AioRpcError as error:
            self.last_error = f"{error.code().name}: {error.details()}"
            raise UpstreamError.of(error) from error
        finally:
            call.cancel()

    async def close(self) -> None:
        """Close every channel (in-flight calls end with CANCELLED)."""
        channels, self._channels = list(self._channels.values()), {}
        for channel in channels:
            await channel.close(grace=None)
