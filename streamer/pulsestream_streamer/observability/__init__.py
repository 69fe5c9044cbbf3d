"""What the streamer tells operators about itself: Prometheus metrics and OpenTelemetry spans.

Both are wired in by the layers above and cost nothing per client write:
counters move once per feed per flush, spans exist per connection and per
upstream subscription, never per point.
"""
