"""The cluster's rate limits: one token bucket per limit in Redis, from which each host draws
slices into its router's buckets (`router_core.Router.grant`) before they run dry, so that a
decision never waits on Redis. Over the cluster, the hosts admit no more than the Redis buckets
hand out; the slices a host holds and does not use (at most one per limit, `Planner`) are what
it may leave idle, and what a Redis that restarts empty hands out a second time."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import router_core

# One hash per bucket holds its level in Redis, when it was refilled, and what each live host
# holds of it (`h:<host>`, as each host last said when it drew). What the hosts hold counts as
# in the bucket: Redis refills its level only up to the rate less all that, so the level and the
# hosts' slices together never exceed one minute's limit, and the hosts admit no more than the
# limit however many hold slices (what a host spent makes room once it says so, not before). A
# host that stopped drawing for `seen_ms` (dead) no longer counts. Keys expire once a bucket
# would be full again anyway, so idle limits cost nothing.
# KEYS[1] is the set of hosts that drew lately (by time), KEYS[2..] the buckets; ARGV holds this
# host, how long a host counts as seen (ms), then per bucket its rate, the amount to take
# (negative: to give back) and what this host holds now (its level, negative in debt).
# Returns the hosts seen, then what each bucket gave (or took back).
DRAW_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local host, seen_ms = ARGV[1], tonumber(ARGV[2])
local mine_field = 'h:' .. host
redis.call('ZADD', KEYS[1], now, host)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - seen_ms * 1000)
redis.call('PEXPIRE', KEYS[1], seen_ms)
local result = {redis.call('ZCARD', KEYS[1])}
for i = 2, #KEYS do
  local arg = 3 * i - 3
  local rate, amount, holds = tonumber(ARGV[arg]), tonumber(ARGV[arg + 1]), tonumber(ARGV[arg + 2])
  local fields = redis.call('HGETALL', KEYS[i])
  local level, at, others, held = nil, nil, 0, 0
  for j = 1, #fields, 2 do
    local name, value = fields[j], fields[j + 1]
    if name == 'level' then
      level = tonumber(value)
    elseif name == 'at' then
      at = tonumber(value)
    elseif name == mine_field then
      held = tonumber(value)
    else
      if redis.call('ZSCORE', KEYS[1], string.sub(name, 3)) then
        others = others + tonumber(value)
      else
        redis.call('HDEL', KEYS[i], name)
      end
    end
  end
  if level == nil or at == nil then
    level, at = rate, now
  end
  -- Refill up to the room left beside what this host last said it held: what it spent since
  -- makes room only from now on (unseen, it may have spent it just now).
  local room = math.max(0, rate - others - held)
  level = math.min(room, level + math.max(0, now - at) * rate / 60000000)
  local given = amount
  if amount > 0 then
    given = math.max(0, math.min(amount, math.floor(level)))
  end
  local mine = math.max(0, holds + math.max(0, given))
  level = math.max(0, math.min(rate - others - mine, level - given))
  redis.call('HSET', KEYS[i], 'level', string.format('%.6f', level), 'at', now)
  if mine > 0 then
    redis.call('HSET', KEYS[i], mine_field, string.format('%.6f', mine))
  else
    redis.call('HDEL', KEYS[i], mine_field)
  end
  redis.call('PEXPIRE', KEYS[i], 120000)
  result[i] = given
end
return result
"""

Kind = Literal["requests", "tokens"]


@dataclass(frozen=True, slots=True)
class Draw:
    key: str
    kind: Kind
    per_minute: int
    # What to take from the cluster's bucket; negative: what to give back to it.
    amount: int
    # What this host holds of the bucket as it draws (negative in debt), for Redis to count.
    holds: float = 0.0


# The most one draw holds, as a part of one minute's limit, however fast a host spends.
MAX_SLICE_SHARE = 0.1


class Planner:
    """How much each bucket draws: enough for about two intervals at the rate this host spent
    it over the last one, never less than `slice_share` of a minute's limit (at least 1), never
    more than `MAX_SLICE_SHARE` of it. A host that spends fast draws in large slices, so that a
    burst is not held to one small slice per interval; an idle one holds one small slice. A
    bucket draws when it holds less than half of that."""

    def __init__(self, slice_share: float) -> None:
        self.slice_share = slice_share
        # Per bucket: the level after the last plan's draws were granted.
        self._after: dict[tuple[str, Kind], float] = {}

    def plan(self, budgets: Sequence[tuple[str, Kind, int, float]]) -> list[Draw]:
        draws = []
        after, self._after = self._after, {}
        for key, kind, per_minute, level in budgets:
            spent = max(0.0, after.get((key, kind), level) - level)
            least = max(1, math.ceil(per_minute * self.slice_share))
            most = max(least, math.floor(per_minute * MAX_SLICE_SHARE))
            target = min(most, max(least, math.ceil(2 * spent)))
            self._after[key, kind] = level
            if level < target / 2:
                amount = min(per_minute, math.ceil(target - level))
                if amount > 0:
                    draws.append(Draw(key, kind, per_minute, amount, level))
        return draws

    def granted(self, draw: Draw, amount: int) -> None:
        self._after[draw.key, draw.kind] = self._after.get((draw.key, draw.kind), 0.0) + amount


class Owed:
    """Budget drawn from the cluster that a bucket could not take (it was full, or its limit went
    away in a reload): given back with the next draw."""

    def __init__(self) -> None:
        self._owed: defaultdict[tuple[str, Kind], tuple[int, int]] = defaultdict(lambda: (0, 0))

    def add(self, draw: Draw, amount: int) -> None:
        owed, _ = self._owed[draw.key, draw.kind]
        self._owed[draw.key, draw.kind] = (owed + amount, draw.per_minute)

    def drain(self, holds: Mapping[tuple[str, Kind], float]) -> list[Draw]:
        """What is owed, as draws that give it back; `holds` is what this host holds of each
        bucket now (see `Draw.holds`)."""
        draws = [
            Draw(key, kind, rate, -owed, holds.get((key, kind), 0.0))
            for (key, kind), (owed, rate) in self._owed.items()
            if owed
        ]
        self._owed.clear()
        return draws


def take_back_all(router: router_core.Router) -> list[Draw]:
    """Everything this host holds, taken out of its buckets to be given back, for every bucket
    (one that holds nothing still tells Redis that this host holds nothing)."""
    return [
        Draw(key, kind, per_minute, -router.take_back(key, kind) if level >= 1 else 0)
        for key, kind, per_minute, level in router.budgets()
    ]


def script_arguments(namespace: str, host: str, seen_s: float, draws: list[Draw]) -> tuple[list[str], list[str]]:
    """Keys and arguments of `DRAW_SCRIPT`. Every key carries the namespace as its hash tag, so
    that on a Redis Cluster they all live on one node, as one script's keys must."""
    keys = [f"{{{namespace}}}:hosts"] + [f"{{{namespace}}}:budget:{d.key}:{d.kind}" for d in draws]
    arguments = [host, str(int(seen_s * 1000))]
    for draw in draws:
        arguments += [str(draw.per_minute), str(draw.amount), repr(draw.holds)]
    return keys, arguments
