"""The fan-out: shared topics, feeds that encode once, bounded client queues, and the loops that serve them.

``topic`` (one upstream stream per series and resolution, its order and
history) feeds ``feed`` (identical streams: one event per flush for all),
which fills ``clients`` (bounded queues, slow consumers, heartbeats,
lifetimes); ``flush`` paces the flushes, ``snapshots`` builds a stream's first
event, ``resume`` decides whether a cursor can be honoured, and ``hub`` owns
them all and their tasks. Lower objects signal upward through callbacks and
small protocols, never through a reference to their owner.
"""
