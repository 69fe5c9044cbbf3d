"""Who may use ``/v1/*``, which series it may read, how much: keys, tokens, provider JWTs, limits, redaction.

``gate`` is the ASGI middleware that applies the rest; ``principal`` turns a
credential into who the caller is and what it may read, with ``keys`` (the API
keys and their rotating file, each key with a scope), ``tokens`` (short-lived
stream tokens: mint, verify, rotating secrets), ``idp`` (an identity
provider's JWTs) and ``jwks`` (that provider's keys, fetched and kept fresh);
``scopes`` is the pure glob logic of series scopes; ``clientid`` names the
client a limit applies to, ``ratelimit`` is the pure token-bucket and
stream-cap logic, ``redaction`` scrubs secrets from every log line. Nothing
here knows about streams, topics or the upstream: the HTTP layer applies a
principal's scope.
"""
