"""Pure logic of the streamer: no I/O and no tasks (``clock.epoch_ms`` is the one clock read).

Points (``samples``), their order (``sequencing``), bounded history (``ring``),
resume cursors (``cursor``), the shapes browsers draw (``shape``), SSE framing
(``sse``), the catalogue of series (``catalogue``), reconnect pacing
(``backoff``), the validated stream request (``request``) and wall-clock
milliseconds (``clock``). Every layer above builds on these; they import
nothing of the streamer's own but each other.
"""
