"""How published history is laid out in Redis Streams, and the scripts that write it (Lua, run by Redis).

Keys (``P`` is ``GENERATOR_HISTORY_KEY_PREFIX``, ``pulsestream`` by default;
the braces are a Redis Cluster hash tag, so every key of a deployment maps
to one slot and each script call and follower read touches one slot):

``{P}:p:NAME`` (stream, one per series)
    The series' log. A point is the entry ``<timestamp ms>-0`` with field
    ``v`` (the value as Python's ``repr`` of the float, read back exactly)
    and, when the point is late for a bucket the clock already closed, ``l``
    (bit mask of the widths, as :attr:`.timeline.Timeline.late` keeps it).
    So the stream id *is* the point's sequence, and Redis itself refuses an
    id at or below the top: the store's duplicate and out-of-order rules.
    A clock seal (a bucket of a quiet series closed by the wall clock) is the
    entry ``<newest point's ms>-<k>`` (k >= 1, after the point it follows)
    with fields ``s`` (width index) and ``u`` (the bucket's end): it sits in
    the log between the points it separates, so every replica, and every
    later replay, applies it at the same place.
``{P}:c:NAME`` (hash)
    The series' clock-closed-through time per width index (``0``, ``1``,
    ``2``), what the append script needs to mark late points.
``{P}:series`` (sorted set)
    Every series with points, scored by its newest point's time: what a
    replica lists at start (and after a reconnect) to know what to follow.
``{P}:meta`` (hash)
    What producers said about a series nobody declared (OTLP's unit and
    description), as JSON; declarations stay in each replica's settings.
``{P}:events`` (stream, capped at :data:`EVENTS_MAXLEN`)
    "Series added" (field ``n``) and "series described" (``n``, ``m``):
    followers read it with the series keys and start following a new key.

Series and seal keys expire :data:`EXPIRE_MARGIN_MS` after the retention
span past their last write, so Redis forgets quiet series by itself; each
replica forgets one locally (as the memory store does) once its newest
point is older than the span, and an append to a series whose newest point
is older than the span minus :data:`REVIVE_MARGIN_MS` announces it again,
so a replica that forgot it (its clock up to that margin ahead) follows it
anew.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "APPEND",
    "EVENTS_MAXLEN",
    "EXPIRE",
    "EXPIRE_MARGIN_MS",
    "REVIVE_MARGIN_MS",
    "SEAL",
    "Layout",
    "parse_id",
]

#: Entries the events stream keeps (approximately): followers read it continuously, and re-list the series
#: after every reconnect, so it only has to cover a follower's read, not an outage.
EVENTS_MAXLEN = 10_000
#: An append re-announces a series whose newest point is older than the span minus this (see the module doc).
REVIVE_MARGIN_MS = 30_000
#: Keys of a series live this long past the span after their last write (so they outlive every replica's copy).
EXPIRE_MARGIN_MS = 2 * REVIVE_MARGIN_MS


@dataclass(frozen=True, slots=True)
class Layout:
    """The key names of one deployment's history."""

    prefix: str = "pulsestream"

    @property
    def tag(self) -> str:
        return "{" + self.prefix + "}"

    @property
    def events(self) -> str:
        return f"{self.tag}:events"

    @property
    def series(self) -> str:
        return f"{self.tag}:series"

    @property
    def meta(self) -> str:
        return f"{self.tag}:meta"

    def points(self, name: str) -> str:
        return f"{self.tag}:p:{name}"

    def closed(self, name: str) -> str:
        return f"{self.tag}:c:{name}"

    @property
    def points_prefix(self) -> bytes:
        return f"{self.tag}:p:".encode()


def parse_id(raw: bytes) -> tuple[int, int]:
    """A stream id ``b"<ms>-<seq>"`` as numbers."""
    ms, _, seq = raw.partition(b"-")
    return int(ms), int(seq)


# KEYS: events, series, meta, then per series its points key and its closed key.
# ARGV: now, keep_from (trim bound), expire_ms, revive_before, events maxlen, then five per series:
#   name, meta JSON ('' = none), timed times (space-separated, strictly increasing), their values (the same),
#   untimed values (the same). One string per list, not one argument per point: the client packs and Redis
#   parses five arguments per series however many points they hold.
# Returns per series: created (0/1), accepted, duplicates, out_of_order, late.
APPEND = """
local now = tonumber(ARGV[1])
local keep_from = tonumber(ARGV[2])
local expire = ARGV[3]
local revive_before = tonumber(ARGV[4])
local maxlen = ARGV[5]
local out = {}
local k = 4
local function ms_of(id)
  return tonumber(string.sub(id, 1, string.find(id, '-', 1, true) - 1))
end
local function words(text)
  local list = {}
  for word in string.gmatch(text, '%S+') do list[#list + 1] = word end
  return list
end
for a = 6, #ARGV, 5 do
  local name, meta = ARGV[a], ARGV[a + 1]
  local times, values, untimed = words(ARGV[a + 2]), words(ARGV[a + 3]), words(ARGV[a + 4])
  local key, ckey = KEYS[k], KEYS[k + 1]
  k = k + 2
  local top = redis.call('XREVRANGE', key, '+', '-', 'COUNT', 1)
  local newest = 0
  if #top > 0 then newest = ms_of(top[1][1]) end
  local sealed = redis.call('HMGET', ckey, '0', '1', '2')
  local through = {tonumber(sealed[1]) or 0, tonumber(sealed[2]) or 0, tonumber(sealed[3]) or 0}
  local accepted, dups, ooo, late = 0, 0, 0, 0
  local last = newest
  local function add(t, id, v)
    local mask, count = 0, 0
    for i = 1, 3 do
      if t < through[i] then mask = mask + 2 ^ (i - 1); count = count + 1 end
    end
    local ok
    if mask > 0 then
      ok = redis.pcall('XADD', key, id, 'v', v, 'l', string.format('%d', mask))
    else
      ok = redis.pcall('XADD', key, id, 'v', v)
    end
    if type(ok) == 'table' and ok.err then
      ooo = ooo + 1
    else
      accepted = accepted + 1
      late = late + count
      last = t
    end
  end
  for i = 1, #times do
    local t = tonumber(times[i])
    local id = times[i] .. '-0'
    if t <= newest then
      if #redis.call('XRANGE', key, id, id) > 0 then dups = dups + 1 else ooo = ooo + 1 end
    else
      add(t, id, values[i])
    end
  end
  for i = 1, #untimed do
    local t = math.max(now, last + 1)
    add(t, string.format('%.0f-0', t), untimed[i])
  end
  local created = 0
  if accepted > 0 then
    redis.call('ZADD', KEYS[2], last, name)
    redis.call('PEXPIRE', key, expire)
    if through[1] + through[2] + through[3] > 0 then redis.call('PEXPIRE', ckey, expire) end
    redis.call('XTRIM', key, 'MINID', '~', string.format('%.0f', math.min(keep_from, last)))
    if newest == 0 or newest < revive_before then created = 1 end
  end
  local event = nil
  if meta ~= '' and redis.call('HGET', KEYS[3], name) ~= meta then
    redis.call('HSET', KEYS[3], name, meta)
    event = {'n', name, 'm', meta}
  elseif created == 1 then
    event = {'n', name}
  end
  if event then redis.call('XADD', KEYS[1], 'MAXLEN', '~', maxlen, '*', unpack(event)) end
  for _, n in ipairs({created, accepted, dups, ooo, late}) do out[#out + 1] = n end
end
return out
"""

# KEYS: per seal the points key and the closed key. ARGV: expire_ms, then per seal: width index, start, end.
# A seal is written only if the series' newest point still lies in [start, end) (no point closed it since)
# and no replica sealed it already; returns how many were written.
SEAL = """
local expire = ARGV[1]
local done = 0
local k = 1
for a = 2, #ARGV, 3 do
  local key, ckey = KEYS[k], KEYS[k + 1]
  k = k + 2
  local index, start, finish = ARGV[a], tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  local top = redis.call('XREVRANGE', key, '+', '-', 'COUNT', 1)
  if #top > 0 then
    local id = top[1][1]
    local dash = string.find(id, '-', 1, true)
    local ms, seq = tonumber(string.sub(id, 1, dash - 1)), tonumber(string.sub(id, dash + 1))
    local current = tonumber(redis.call('HGET', ckey, index) or '0')
    if ms >= start and ms < finish and current < finish then
      redis.call('XADD', key, string.format('%.0f-%.0f', ms, seq + 1), 's', index, 'u', ARGV[a + 2])
      redis.call('HSET', ckey, index, ARGV[a + 2])
      redis.call('PEXPIRE', ckey, expire)
      redis.call('PEXPIRE', key, expire)
      done = done + 1
    end
  end
end
return done
"""

# KEYS: series, meta. ARGV: the time before which a series is gone. Forgets up to 500 names per call.
EXPIRE = """
local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1], 'LIMIT', 0, 500)
if #gone > 0 then
  redis.call('ZREM', KEYS[1], unpack(gone))
  redis.call('HDEL', KEYS[2], unpack(gone))
end
return #gone
"""
