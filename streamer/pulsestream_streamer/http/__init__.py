"""The streamer's HTTP face: the FastAPI app, the SSE stream route, its parameters and the uvicorn server.

``app`` wires the parts together and serves ``/v1/series``, ``/health``,
``/metrics`` and the dashboard; ``stream`` serves ``/v1/stream`` from request
to last byte; ``params`` validates its query; ``problems`` is the JSON error
shape; ``server`` configures uvicorn; ``uvicorn_internals`` is the one module
that reaches into uvicorn's connection objects.
"""
