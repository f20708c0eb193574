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
# A holder counts as live (what it holds as the others') while it called this recently.
HOLDER_SEEN_MS = 10_000

# One hash per owner holds the day and month its counts are for, and what was drawn (spent or
# held by a host) in the day, the month and in all, in nano-USD; and what each live holder (a
# host: the workers of one share an allowance) said it holds of the day's (`h:<holder>`), so
# that a host short of budget knows whether the others could give some back
# (`DollarPool.top_up`). Days and months are Redis's own (UTC, numbered from the epoch), so a
# host whose clock is off cannot move a pool on: a draw dated for another day than Redis's gets
# nothing. A host's own count of what it spent is a floor for the pool's, so that a pool Redis
# lost comes back from what the hosts (and their ledgers) know.
# Each host numbers its calls and sends one again, with its number, until it has the answer:
# the answer is kept (KEYS[2]), so a call that ran but whose answer was lost to a timeout is not
# applied twice, and no draw or give-back is ever lost or doubled.
# KEYS[1] is the set of holders seen lately, KEYS[2] the host's last call, KEYS[3..] the pools.
# ARGV[1] is the call's number, ARGV[2] the holder, ARGV[3] how long a holder counts as seen
# (ms); then per pool: its bounds (-1: none), the day and month, the amount (negative: given
# back, for that day and month), the most of what is left it may give (0: give all asked, for
# what a host already spent), the host's own counts, and what it holds now besides what this
# draws (-1: unchanged); last, how long pools live. Returns the holders seen, then per pool what
# it gave, what it has left, the period that bounds that (0, 1, 2; -1 left: unbounded), and what
# the other live holders hold.
DOLLARS_SCRIPT = """
local last = redis.call('HMGET', KEYS[2], 'call', 'answer')
if last[1] == ARGV[1] then
  local answer = {}
  for number in string.gmatch(last[2], '[^,]+') do table.insert(answer, tonumber(number)) end
  return answer
end
local t = redis.call('TIME')
local now_s = tonumber(t[1])
local today = math.floor(now_s / 86400)
-- The month of a day (Howard Hinnant's civil_from_days), numbered from January 1970.
local z = today + 719468
local era = math.floor(z / 146097)
local doe = z - era * 146097
local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524) - math.floor(doe / 146096)) / 365)
local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
local mp = math.floor((5 * doy + 2) / 153)
local m = mp < 10 and mp + 3 or mp - 9
local this_month = (yoe + era * 400 + (m <= 2 and 1 or 0) - 1970) * 12 + m - 1
local holder = ARGV[2]
local mine_field = 'h:' .. holder
redis.call('ZADD', KEYS[1], now_s * 1000, holder)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now_s * 1000 - tonumber(ARGV[3]))
redis.call('PEXPIRE', KEYS[1], ARGV[3])
local result = {redis.call('ZCARD', KEYS[1])}
for i = 3, #KEYS do
  local a = (i - 3) * 11 + 3
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
  local drawn = {f.daily or 0, f.monthly or 0, f.total or 0}
  if (f.day or today) ~= today then
    drawn[1] = 0
    for name in pairs(held) do redis.call('HDEL', KEYS[i], name) end
    held = {}
  end
  if (f.month or this_month) ~= this_month then drawn[2] = 0 end
  local same = {day == today and month == this_month, month == this_month, true}
  local function left()
    local least, period = -1, 2
    for p = 1, 3 do
      if bounds[p] >= 0 and (least < 0 or bounds[p] - drawn[p] < least) then
        least, period = math.max(0, bounds[p] - drawn[p]), p - 1
      end
    end
    return least, period
  end
  local function floor_counts()
    if same[1] then
      for p = 1, 3 do drawn[p] = math.max(drawn[p], floors[p]) end
    end
  end
  floor_counts()
  local given = amount
  if amount > 0 and fraction > 0 then
    local room = left()
    if not same[1] then
      given = 0
    elseif room >= 0 then
      given = math.max(0, math.min(amount, math.floor(room * fraction)))
    end
  end
  for p = 1, 3 do
    if same[p] then drawn[p] = math.max(0, drawn[p] + given) end
  end
  floor_counts()
  redis.call('HSET', KEYS[i], 'day', today, 'month', this_month,
    'daily', string.format('%d', drawn[1]), 'monthly', string.format('%d', drawn[2]),
    'total', string.format('%d', drawn[3]))
  if holds >= 0 and same[1] then
    held[mine_field] = holds + ((fraction > 0 and given > 0) and given or 0)
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


Bounds = tuple[float | None, float | None, float | None]


@dataclass(frozen=True, slots=True)
class Entry:
    """One pool's part of a script call."""

    owner: str
    bounds: Bounds
    day: int
    month: int
    # To draw; negative: to give back.
    nanos: int
    # The most of what is left this draw may take; 0: all asked, whatever is left.
    fraction: float
    floors: tuple[int, int, int] = (0, 0, 0)
    # What the host holds of the day's pool besides what this draws; -1: not said.
    holds: int = -1
    # Pays in what the host spent on its own while Redis was away (the host's note, not sent).
    pays_fallback: bool = False


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


def script_arguments(
    namespace: str, host: str, holder: str, call: int, entries: Sequence[Entry]
) -> tuple[list[str], list[str]]:
    """Keys and arguments of `DOLLARS_SCRIPT` for `host`'s call number `call`, made for `holder`
    (what the host's workers hold together); the namespace is every key's hash tag (see
    `budgets.script_arguments`)."""
    keys = [f"{{{namespace}}}:usd-holders", f"{{{namespace}}}:usd-call:{host}"]
    keys += [pool_key(namespace, e.owner) for e in entries]
    arguments = [str(call), holder, str(HOLDER_SEEN_MS)]
    for e in entries:
        arguments += [str(-1 if b is None else round(b * NANOS_PER_USD)) for b in e.bounds]
        arguments += [str(e.day), str(e.month), str(e.nanos), repr(e.fraction)]
        arguments += [str(floor) for floor in e.floors]
        arguments.append(str(e.holds))
    arguments.append(str(POOL_TTL_MS))
    return keys, arguments
