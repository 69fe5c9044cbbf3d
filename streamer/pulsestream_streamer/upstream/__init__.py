"""The streamer's side of gRPC: channels to the generator replicas, and keeping topics subscribed.

``channels`` makes the calls (``Subscribe``, ``ListSeries``) over shared
channels and knows the current replica; ``follow`` keeps one topic's stream
alive through outages and failover; ``errors`` is the vocabulary both use.
"""
