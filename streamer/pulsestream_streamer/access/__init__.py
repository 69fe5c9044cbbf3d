"""Who may use ``/v1/*`` and how much: API keys, client identity, rate limits, and secrets kept out of logs.

``gate`` is the ASGI middleware that applies the rest; ``keys`` holds and
checks the API keys (with the rotating key file), ``clientid`` names the
client a limit applies to, ``ratelimit`` is the pure token-bucket and
stream-cap logic, ``redaction`` scrubs secrets from every log line. Nothing
here knows about streams, topics or the upstream.
"""
