"""The reference: a gRPC-to-SSE bridge written the way tutorials write it.

This is what pulsestream is measured against, so it is kept small and
honest: FastAPI, sse-starlette's ``EventSourceResponse``, one shared gRPC
channel to the generator, and per browser connection its own ``Subscribe``
stream, its own ``json.dumps`` of every point and one SSE event per point.
It serves the same URL shape and the same ``points`` event data as
pulsestream (``format=d3``), so one load client measures both. It is not
part of the product and has none of its guarantees (no shared upstream, no
snapshot, no resume, no bounded queues).

Run: ``python -m bench.reference --port 8090 --generator 127.0.0.1:50051``.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import grpc
import uvicorn
from fastapi import FastAPI, Request
from sse_starlette import EventSourceResponse

from pulsestream.v1 import timeseries_pb2, timeseries_pb2_grpc


def create_app(generator_address: str, ping_seconds: float = 15.0) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with grpc.aio.insecure_channel(generator_address) as channel:
            app.state.stub = timeseries_pb2_grpc.TimeSeriesServiceStub(channel)  # type: ignore[no-untyped-call]
            yield

    app = FastAPI(lifespan=lifespan)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/stream")
    async def stream(request: Request, series: str = "cpu", resolution: str = "raw") -> EventSourceResponse:
        subscribe = timeseries_pb2.SubscribeRequest(series=series.split(","), resolution=resolution)

        async def points() -> AsyncIterator[dict[str, str]]:
            call = request.app.state.stub.Subscribe(subscribe)
            try:
                async for response in call:
                    for point in response.points:
                        row = {
                            "series": point.series,
                            "t": point.timestamp.seconds * 1000 + point.timestamp.nanos // 1_000_000,
                            "v": point.value,
                            "seq": point.sequence,
                        }
                        data = json.dumps({"points": [row], "meta": {"resolution": resolution, "x": "t", "y": "v"}})
                        yield {"event": "points", "id": str(point.sequence), "data": data}
            finally:
                call.cancel()

        return EventSourceResponse(points(), ping=ping_seconds)

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--generator", default="127.0.0.1:50051", help="generator gRPC address")
    parser.add_argument("--ping", type=float, default=15.0, help="seconds between keep-alive comments")
    args = parser.parse_args()
    app = create_app(args.generator, args.ping)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False, backlog=4096)


if __name__ == "__main__":
    main()
