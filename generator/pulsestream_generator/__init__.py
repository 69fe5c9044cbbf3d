"""pulsestream generator: a grpc.aio server streaming deterministic, seeded time-series.

Run it with ``pulsestream-generator`` or ``python -m pulsestream_generator``;
it is configured by ``GENERATOR_*`` environment variables
(:class:`~pulsestream_generator.settings.GeneratorSettings`) and the live
settings file.
"""
