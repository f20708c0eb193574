"""The Redis side of the cluster's budgets in dollars (`dollars`): the script that draws from
and gives back to the pools, the entries a host sends it and its answers, and the channel on
which a host short of budget asks the others for theirs."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from service.cluster.news import from_another_host

NANOS_PER_USD = 1_000_000_000
PERIODS = ("daily", "monthly", "total")
# Pools live this long after their last draw; a total cap outlives it in the ledger and in the
# hosts' own counts, which restore it (below).
POOL_TTL_MS = 40 * 86_400_000

# One hash per owner holds the day and month its counts are for, and what was drawn (spent or
# held by a host) in the day, the month and in all, in nano-USD; and what each live host said it
# holds of the day's (`h:<host>`), so that a host short of budget knows whether the others could
# give some back (`DollarPool.top_up`). The hosts number days and months from the epoch; a pool
# only moves forward in time, and a draw for a day the pool has left behind gets nothing. A
# host's own count of what it spent is a floor for the pool's, so that a pool Redis lost comes
# back from what the hosts (and their ledgers) know.
# Each host numbers its calls and sends one again, with its number, until it has the answer:
# the answer is kept (KEYS[2]), so a call that ran but whose answer was lost to a timeout is not
# applied twice, and no draw or give-back is ever lost or doubled.
# KEYS[1] is the set of hosts seen lately (`budgets.DRAW_SCRIPT` keeps it), KEYS[2] the host's
# last call, KEYS[3..] the pools. ARGV[1] is the call's number, ARGV[2] the host; then per pool:
# its bounds (-1: none), the day and month, the amount (negative: given back, for that day and
# month), the most of what is left it may give (0: give all asked, for what a host already
# spent), the host's own counts, and what it holds now (-1: unchanged); last, how long pools
# live. Returns the hosts seen, then per pool what it gave, what it has left, the period that
# bounds that (0, 1, 2; -1 left: unbounded), and what the other live hosts hold.
DOLLARS_SCRIPT = """
local last = redis.call('HMGET', KEYS[2], 'call', 'answer')
if last[1] == ARGV[1] then
  local answer = {}
  for number in string.gmatch(last[2], '[^,]+') do table.insert(answer, tonumber(number)) end
  return answer
end
local mine_field = 'h:' .. ARGV[2]
local result = {redis.call('ZCARD', KEYS[1])}
for i = 3, #KEYS do
  local a = (i - 3) * 11 + 2
  local bounds = {tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])}
  local day, month = tonumber(ARGV[a + 4]), tonumber(ARGV[a + 5])
  local amount, fraction = tonumber(ARGV[a + 6]), tonumber(ARGV[a + 7])
  local floors = {tonumber(ARGV[a + 8]), tonumber(ARGV[a + 9]), tonumber(ARGV[a + 10])}
  local holds = tonumber(ARGV[a + 11])
  local fields = redis.call('HGETALL', KEYS[i])
  local f, held = {}, {}
  for j = 1, #fields, 2 do
    if string.sub(fields[j], 1, 2) == 'h:' then held[fields[j]] = tonumber(fields[j + 1])
    else f[fields[j]] = tonumber(fields[j + 1]) end
  end
  local at_day, at_month = f.day or day, f.month or month
  local drawn = {f.daily or 0, f.monthly or 0, f.total or 0}
  if day > at_day then
    at_day, drawn[1] = day, 0
    for name in pairs(held) do redis.call('HDEL', KEYS[i], name) end
    held = {}
  end
  if month > at_month then at_month, drawn[2] = month, 0 end
  local same = {day == at_day, month == at_month, true}
  for p = 1, 3 do
    if same[p] then drawn[p] = math.max(drawn[p], floors[p]) end
  end
  local function left()
    local least, period = -1, 2
    for p = 1, 3 do
      if bounds[p] >= 0 and (least < 0 or bounds[p] - drawn[p] < least) then
        least, period = math.max(0, bounds[p] - drawn[p]), p - 1
      end
    end
    return least, period
  end
  local given = amount
  if amount > 0 and fraction > 0 then
    local room = left()
    if not (same[1] and same[2]) then
      given = 0
    elseif room >= 0 then
      given = math.max(0, math.min(amount, math.floor(room * fraction)))
    end
  end
  for p = 1, 3 do
    if same[p] then drawn[p] = math.max(0, drawn[p] + given) end
  end
  redis.call('HSET', KEYS[i], 'day', at_day, 'month', at_month,
    'daily', string.format('%d', drawn[1]), 'monthly', string.format('%d', drawn[2]),
    'total', string.format('%d', drawn[3]))
  if holds >= 0 and same[1] and same[2] then
    held[mine_field] = holds + math.max(0, given)
    redis.call('HSET', KEYS[i], mine_field, string.format('%d', held[mine_field]))
  end
  local others = 0
  for name, value in pairs(held) do
    if name ~= mine_field then
      if redis.call('ZSCORE', KEYS[1], string.sub(name, 3)) then
        others = others + value
      else
        redis.call('HDEL', KEYS[i], name)
      end
    end
  end
  redis.call('PEXPIRE', KEYS[i], ARGV[#ARGV])
  local room, period = left()
  table.insert(result, given)
  table.insert(result, math.floor(room))
  table.insert(result, period)
  table.insert(result, others)
end
local text = {}
for j = 1, #result do text[j] = string.format('%d', result[j]) end
redis.call('HSET', KEYS[2], 'call', ARGV[1], 'answer', table.concat(text, ','))
redis.call('PEXPIRE', KEYS[2], 86400000)
return result
"""


@dataclass(frozen=True, slots=True)
class Entry:
    """One pool's part of a script call."""

    owner: str
    bounds: tuple[float | None, float | None, float | None]
    day: int
    month: int
    # To draw; negative: to give back.
    nanos: int
    # The most of what is left this draw may take; 0: all asked, whatever is left.
    fraction: float
    floors: tuple[int, int, int] = (0, 0, 0)
    # What the host holds of the day's pool besides what this draws; -1: not said.
    holds: int = -1


@dataclass(frozen=True, slots=True)
class Answer:
    given: int
    left: int
    period: str
    # What the other live hosts hold of the pool.
    others: int


def pool_key(namespace: str, owner: str) -> str:
    return f"{{{namespace}}}:usd:{owner}"


def recall_channel(namespace: str) -> str:
    return f"{{{namespace}}}:usd-recall"


def recall_message(host: str, owner: str) -> str:
    return json.dumps({"host": host, "owner": owner}, separators=(",", ":"))


def recalled_owner(data: object, host: str) -> str | None:
    """The owner another host asks to have its budget back, from one message; None when it is
    not for this host (its own, or malformed)."""
    message = from_another_host(data, host)
    owner = None if message is None else message.get("owner")
    return owner if isinstance(owner, str) else None


def script_arguments(namespace: str, host: str, call: int, entries: Sequence[Entry]) -> tuple[list[str], list[str]]:
    """Keys and arguments of `DOLLARS_SCRIPT` for `host`'s call number `call`; the namespace is
    every key's hash tag (see `budgets.script_arguments`)."""
    keys = [f"{{{namespace}}}:hosts", f"{{{namespace}}}:usd-call:{host}"]
    keys += [pool_key(namespace, e.owner) for e in entries]
    arguments = [str(call), host]
    for e in entries:
        arguments += [str(-1 if b is None else round(b * NANOS_PER_USD)) for b in e.bounds]
        arguments += [str(e.day), str(e.month), str(e.nanos), repr(e.fraction)]
        arguments += [str(floor) for floor in e.floors]
        arguments.append(str(e.holds))
    arguments.append(str(POOL_TTL_MS))
    return keys, arguments
