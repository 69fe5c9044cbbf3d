"""Per-series order: duplicates dropped, small reorderings repaired, gaps detected.

The generator promises strictly increasing ``sequence`` per series with no gap
and no duplicate on one stream, and every point names its predecessor
(``previous_sequence``). Across a reconnect or a failover to another replica
that promise can break at the seam: the new stream may repeat points the
streamer already holds, or start after a hole. :class:`Sequencer` turns
whatever arrives into one clean, contiguous run:

- a point at or before the last accepted sequence is a duplicate: dropped;
- a point whose predecessor is the last accepted one (or that starts the
  series) is accepted, and any held points that now connect follow it;
- a point whose predecessor is later than the last accepted one is held
  (up to ``window`` points) in case the missing ones arrive out of order;
- when more than ``window`` points are held, :attr:`Sequencer.gap` becomes
  true: the caller resubscribes ``after_sequence=last`` and calls
  :meth:`Sequencer.clear_held`; the refilled points connect, and the ones
  held before are dropped as duplicates when they come again.

Pure logic, no I/O; tested directly.
"""

from __future__ import annotations

from pulsestream_streamer.core.samples import Sample

__all__ = ["Sequencer"]


class Sequencer:
    """Order for one series. ``last`` is the sequence of the last accepted point (0 = none yet)."""

    __slots__ = ("_held", "duplicates", "last", "window")

    def __init__(self, last: int = 0, window: int = 16) -> None:
        self.last = last
        self.window = window
        self.duplicates = 0
        self._held: dict[int, Sample] = {}

    @property
    def gap(self) -> bool:
        """True when points are missing and did not arrive within the reorder window: resubscribe."""
        return len(self._held) > self.window

    @property
    def held(self) -> int:
        """Points waiting for a missing predecessor."""
        return len(self._held)

    def clear_held(self) -> None:
        """Forget held points (before resubscribing after :attr:`last`; they will come again)."""
        self._held.clear()

    def _connects(self, sample: Sample) -> bool:
        # prev == 0: the generator has nothing before it (series start); prev <= last: it follows what we hold.
        return self.last == 0 or sample.prev <= self.last

    def offer(self, sample: Sample) -> list[Sample]:
        """Take one point; return the points that are now in order (possibly none)."""
        if sample.seq <= self.last:
            self.duplicates += 1
            return []
        if not self._connects(sample):
            if sample.seq in self._held:
                self.duplicates += 1
            else:
                self._held[sample.seq] = sample
            return []
        self.last = sample.seq
        if not self._held:
            return [sample]
        released = [sample]
        while self._held:
            following = min(self._held)
            candidate = self._held[following]
            if following <= self.last:
                del self._held[following]
                self.duplicates += 1
                continue
            if candidate.prev > self.last:
                break
            del self._held[following]
            self.last = candidate.seq
            released.append(candidate)
        return released

    def offer_many(self, samples: list[Sample]) -> list[Sample]:
        """Take a batch; return the points now in order. Fast path when the batch simply continues."""
        if not self._held and samples:
            first = samples[0]
            if first.seq > self.last and self._connects(first):
                ok = True
                previous = first.seq
                for sample in samples[1:]:
                    if sample.seq <= previous or sample.prev > previous:
                        ok = False
                        break
                    previous = sample.seq
                if ok:
                    self.last = previous
                    return samples
        released: list[Sample] = []
        for sample in samples:
            released.extend(self.offer(sample))
        return released
