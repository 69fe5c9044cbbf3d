"""The aggregation resolutions: the bucket widths the generator computes and the streamer serves.

A module of its own because both the wire code of the services and the live
settings' rules (:mod:`pulsestream.specrules`: a frequency slower than the
coarsest bucket leaves its buckets empty) read it.
"""

from __future__ import annotations

#: Resolutions the generator aggregates to (bucket width in seconds; raw is 0).
RESOLUTIONS: dict[str, float] = {"raw": 0.0, "1s": 1.0, "5s": 5.0, "1m": 60.0}

#: The widest bucket as ``(name, seconds)``: ``("1m", 60.0)``.
COARSEST: tuple[str, float] = max(RESOLUTIONS.items(), key=lambda item: item[1])
