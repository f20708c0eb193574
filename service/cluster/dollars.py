"""The cluster's budgets in dollars: one pool per owner (a tenant, an API key) in Redis, from
which each host draws allowances into its router's budgets (`router_core.Router.grant_dollars`),
so that the hosts together never reserve more than the owner may spend.

Most calls spend an allowance the host already holds: the link draws ahead of need for owners
in use, in slices sized to what the host spends. A call that finds the allowance short draws for
itself (`DollarPool.top_up`; calls short together draw together); when the pool is short too
but the other hosts hold enough, it asks them for theirs on a Redis channel and waits a few
steps for it. So a refusal means the cluster had too little left, not that this host drew too
little. Slices shrink as the pool runs low (each at most half of what is left, over the hosts
seen); a host gives back what it holds beyond two slices, all of it once an owner goes idle,
what belongs to a day that is over, and everything when it stops.

While Redis is away, a host may spend its share (`state.fallback_share`) of what the pool last
had left, once per owner until Redis has counted it. A host that dies loses what it held:
counted as spent, never handed out twice."""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from typing import Any

import redis.asyncio as redis

import router_core
from service.cluster.news import UNREACHABLE
from service.cluster.pools import (
    DOLLARS_SCRIPT,
    NANOS_PER_USD,
    PERIODS,
    Answer,
    Bounds,
    Entry,
    recall_channel,
    recall_message,
    script_arguments,
)
from service.config import StateSettings
from service.identity.auth import Owner

log = logging.getLogger(__name__)

# The most one slice holds, as a part of the owner's smallest bound (unless `state.slice` is more).
MAX_SLICE_SHARE = 0.1
# A call short of budget that the other hosts could cover waits this many steps for them to
# give theirs back; they draw ahead again (beyond what their calls ask) after `RECALL_HOLD_S`.
RECALL_WAIT_STEPS = 5
RECALL_HOLD_S = 1.0
# An owner whose allowance went unspent this long gives all of it back; it draws again when a
# call asks.
IDLE_S = 5.0
# A host that holds some allowance says so at least this often, to count as live
# (`pools.HOLDER_SEEN_MS`) for a host short of budget to ask.
HOLDS_HEARTBEAT_S = 2.0
NO_BOUNDS: Bounds = (None, None, None)


def bounds_of(budget: router_core.PooledBudget) -> Bounds:
    return (budget.daily_usd, budget.monthly_usd, budget.total_usd)


def slice_nanos(budget: router_core.PooledBudget, slice_share: float, spent_per_step: int) -> int:
    """How much a host holds of a pool to spend from: about two steps of what it spends, never
    less than `slice_share` of the owner's smallest bound, never more than `MAX_SLICE_SHARE` of
    it (or `slice_share`, when that is more). 1 for a budget without bounds, which draws none."""
    bounds = [b for b in bounds_of(budget) if b is not None]
    if not bounds:
        return 1
    smallest = min(bounds) * NANOS_PER_USD
    least = max(1, math.ceil(smallest * slice_share))
    most = max(least, math.floor(smallest * MAX_SLICE_SHARE))
    return min(most, max(least, 2 * spent_per_step))


def _today(budget: router_core.PooledBudget) -> bool:
    """Whether the allowance was drawn for today."""
    return (budget.allowance_day, budget.allowance_month) == (budget.day, budget.month)


def _floors(budget: router_core.PooledBudget, paying: Sequence[Entry]) -> tuple[int, int, int]:
    """What this host spent less what it has yet to pay in (`paying`): the pool counts that when
    it is paid."""
    floors = list(budget.spent_nanos)
    for entry in paying:
        if entry.owner != budget.owner or entry.nanos <= 0 or entry.fraction != 0:
            continue
        same_month = entry.month == budget.month
        floors[0] -= entry.nanos if same_month and entry.day == budget.day else 0
        floors[1] -= entry.nanos if same_month else 0
        floors[2] -= entry.nanos
    return (floors[0], floors[1], floors[2])


class DollarPool:
    """This host's side of the pools: `step` (from the link's loop) keeps the allowance of each
    owner in use about one slice full, `top_up` draws for calls that found theirs short. One
    script call at a time; one whose answer did not come is sent again before any other."""

    def __init__(
        self,
        router: router_core.Router,
        client: redis.Redis,
        settings: StateSettings,
        host: str,
        holder: str,
        call: Callable[[Awaitable[Any]], Awaitable[Any]],
    ) -> None:
        self._router = router
        self._client = client
        self._settings = settings
        self._host = host
        self._holder = holder
        self._call = call
        self._script = client.register_script(DOLLARS_SCRIPT)
        self.hosts_seen = 1
        self.reachable = False
        # What a host may spend by itself while Redis is away, as a part of a pool's remainder.
        self.fallback_share = 1.0
        # Owners in use (loop time of their last spending or draw), each one's allowance after
        # the last step, what its pool had left when last heard from, and until when it draws
        # only what its calls ask (another host asked for what it held).
        self._active: dict[str, float] = {}
        self._after: dict[str, int] = {}
        self._pool_left: dict[str, int] = {}
        self._recalled: dict[str, float] = {}
        # What this host granted itself while Redis was away (once per owner until the pool
        # counted it: `_fell_back`), for the pools to count when it is back.
        self._owed: list[Entry] = []
        self._fell_back: set[str] = set()
        # Per owner: what the calls short of it asked for, and the draw they wait on.
        self._demand: dict[str, int] = {}
        self._topping: dict[str, asyncio.Task[bool]] = {}
        self._calls = 0
        self._unanswered: list[Entry] | None = None
        self._one_call = asyncio.Lock()
        self._last_answer = 0.0
        self._closed = False
        router.set_budgets_pooled(True)

    def _plan(self) -> list[Entry]:
        """What to give back, owe and draw, for every owner in use."""
        now = asyncio.get_running_loop().time()
        entries: list[Entry] = []
        after, self._after = self._after, {}
        heartbeat = now - self._last_answer >= HOLDS_HEARTBEAT_S
        for owner in list(self._active):
            budget = self._router.pooled_budget(owner)
            if budget is None or bounds_of(budget) == NO_BOUNDS:
                del self._active[owner]
                continue
            spent = max(0, after.get(owner, budget.allowance_nanos) - budget.allowance_nanos)
            if spent:
                self._active[owner] = now
            idle = now - self._active[owner] >= IDLE_S
            hold_back = idle or self._recalled.get(owner, 0.0) > now
            target = slice_nanos(budget, self._settings.slice, spent)
            keep = 0 if hold_back else 2 * target
            held = min(max(0, budget.allowance_nanos), keep) if _today(budget) else 0
            returned = self._take_back(budget, keep, held)
            entries += returned
            self._after[owner] = held
            if held < target / 2 and not hold_back:
                entries.append(self._draw(budget, target - held, 0.5 / self.hosts_seen, held, returned))
            elif heartbeat and held > 0 and not returned:
                entries.append(Entry(owner, bounds_of(budget), budget.day, budget.month, 0, 0.0, holds=held))
            if idle:
                del self._active[owner]
        self._recalled = {owner: until for owner, until in self._recalled.items() if until > now}
        entries += self._owed
        self._owed = []
        return entries

    def _take_back(self, budget: router_core.PooledBudget, keep: int, holds: int) -> list[Entry]:
        """What goes back to the pool (or, a debt, is paid into it), saying what is held after."""
        back = [
            Entry(budget.owner, bounds_of(budget), day, month, -nanos, 0.0, holds=holds)
            for nanos, day, month in self._router.take_back_dollars(budget.owner, keep)
        ]
        # Those for today say what this host spent, less the debts they pay in (see `_floors`).
        floors = _floors(budget, [*back, *self._owed])
        return [replace(e, floors=floors) if (e.day, e.month) == (budget.day, budget.month) else e for e in back]

    def _draw(
        self,
        budget: router_core.PooledBudget,
        nanos: int,
        fraction: float,
        holds: int,
        paying: Sequence[Entry] = (),
    ) -> Entry:
        floors = _floors(budget, [*paying, *self._owed])
        return Entry(budget.owner, bounds_of(budget), budget.day, budget.month, nanos, fraction, floors, holds)

    async def _run(self, plan: Callable[[], list[Entry]]) -> list[Answer]:
        """Sends the call left unanswered, if any, then one for what `plan` says now; grants
        what was drawn."""
        async with self._one_call:
            if self._unanswered is not None:
                await self._send(self._unanswered)
            if self._closed:
                return []
            entries = plan()
            if not entries:
                return []
            self._calls += 1
            self._unanswered = entries
            return await self._send(entries)

    async def _send(self, entries: list[Entry]) -> list[Answer]:
        keys, arguments = script_arguments(self._settings.namespace, self._host, self._holder, self._calls, entries)
        result: list[Any] = await self._call(self._script(keys=keys, args=arguments))
        self._unanswered = None
        now = asyncio.get_running_loop().time()
        self._last_answer = now
        self.hosts_seen = max(1, int(result[0]))
        answers = []
        for i, entry in enumerate(entries):
            given, left, period, others = (int(x) for x in result[1 + 4 * i : 5 + 4 * i])
            answer = Answer(given, left, PERIODS[period], others)
            answers.append(answer)
            if left >= 0:
                self._pool_left[entry.owner] = left
            if entry.pays_fallback:
                self._fell_back.discard(entry.owner)
            if entry.nanos > 0 and entry.fraction > 0 and given > 0:
                self._router.grant_dollars(entry.owner, given, entry.day, entry.month, max(0, left), answer.period)
                self._after[entry.owner] = self._after.get(entry.owner, 0) + given
                self._active[entry.owner] = now
        return answers

    async def step(self) -> None:
        await self._run(self._plan)

    async def top_up(self, owner: str, nanos: int) -> bool:
        """Draws at least `nanos` of `owner`'s pool for a call that found its allowance short;
        true when something was granted, so that the call may try again. Calls that find it
        short together wait for one draw of all they asked. When the pool is short but the
        other hosts hold enough, asks them for it back and waits (a few steps at most) until
        they did. Bounded in time: twice `state.timeout_s` and the steps of that wait."""
        if self._closed:
            return False
        self._demand[owner] = self._demand.get(owner, 0) + nanos
        task = self._topping.get(owner)
        if task is None:
            task = asyncio.ensure_future(self._top_up(owner))
            self._topping[owner] = task
        return await asyncio.shield(task)

    async def _top_up(self, owner: str) -> bool:
        wanted, shortfall = 0, 0

        def plan() -> list[Entry]:
            """A draw of what the allowance lacks, and a slice, as it stands once the call is sent."""
            nonlocal wanted, shortfall
            if self._topping.get(owner) is task:  # later calls short of it draw next
                del self._topping[owner]
                wanted = self._demand.pop(owner, 0)
            budget = self._router.pooled_budget(owner)
            if budget is None or bounds_of(budget) == NO_BOUNDS:
                return []
            held = max(0, budget.allowance_nanos) if _today(budget) else 0
            shortfall = wanted - held
            if shortfall <= 0:
                return []
            returned = self._take_back(budget, held, held)  # only what is stale, or owed
            draw = self._draw(budget, shortfall + slice_nanos(budget, self._settings.slice, 0), 1.0, held, returned)
            return [*returned, draw]

        task = asyncio.current_task()
        if not self.reachable:
            self._topping.pop(owner, None)
            budget = self._router.pooled_budget(owner)
            return budget is not None and self._fall_back(budget)
        loop = asyncio.get_running_loop()
        wait_until = loop.time() + RECALL_WAIT_STEPS * self._settings.interval_s
        granted, recalled = 0, False
        try:
            async with asyncio.timeout(2 * self._settings.timeout_s + RECALL_WAIT_STEPS * self._settings.interval_s):
                while True:
                    answers = await self._run(plan)
                    if not answers:  # held enough by now (or no such budget: the call says so)
                        return True
                    given, left, others = answers[-1].given, answers[-1].left, answers[-1].others
                    granted += given
                    if given >= shortfall or left + others < shortfall - given or loop.time() >= wait_until:
                        return granted > 0
                    if not recalled:
                        message = recall_message(self._host, owner)
                        await self._call(self._client.publish(recall_channel(self._settings.namespace), message))
                        recalled = True
                    await asyncio.sleep(self._settings.interval_s)
        except (*UNREACHABLE, TimeoutError) as error:
            log.debug("drawing from the budget pool of %s failed: %r", owner, error)
            return granted > 0
        finally:
            if self._topping.get(owner) is task:
                del self._topping[owner]

    def recall(self, owner: str) -> None:
        """Another host asks for `owner`'s budget: this host gives back what it holds at its next
        step, and for a while draws only what its own calls ask."""
        if owner in self._active:
            self._recalled[owner] = asyncio.get_running_loop().time() + RECALL_HOLD_S

    def _fall_back(self, budget: router_core.PooledBudget) -> bool:
        """Once per owner until the pool counted it: this host's share of what the pool last had
        left (or, never heard from, of the owner's smallest bound less what this host spent)."""
        owner = budget.owner
        if owner in self._fell_back or bounds_of(budget) == NO_BOUNDS:
            return False
        left = self._pool_left.get(owner)
        if left is None:
            spent = dict(zip(PERIODS, budget.spent_nanos, strict=True))
            bounds = dict(zip(PERIODS, bounds_of(budget), strict=True))
            left = min(round(b * NANOS_PER_USD) - spent[p] for p, b in bounds.items() if b is not None)
        nanos = max(0, math.floor(left * self.fallback_share))
        self._pool_left[owner] = left - nanos
        self._fell_back.add(owner)
        pays = Entry(owner, NO_BOUNDS, budget.day, budget.month, nanos, 0.0, pays_fallback=True)
        self._owed.append(pays)
        self._router.grant_dollars(owner, nanos, budget.day, budget.month, 0, "total")
        self._active[owner] = asyncio.get_running_loop().time()
        return nanos > 0

    def lost(self, share: float) -> None:
        """Redis went away: what a host may spend by itself is `share` of each pool's remainder."""
        self.reachable = False
        self.fallback_share = share

    def back(self) -> None:
        """Redis answers again: the next step pays what was spent meanwhile."""
        self.reachable = True

    async def close(self) -> None:
        """Stops drawing, and gives back everything this host holds of every pool (and pays what
        it owes)."""
        for task in list(self._topping.values()):
            task.cancel()

        def everything() -> list[Entry]:
            entries, self._owed = self._owed, []
            for owner in list(self._active):
                budget = self._router.pooled_budget(owner)
                if budget is not None:
                    entries += self._take_back(budget, 0, 0)
            self._closed = True
            return entries

        await self._run(everything)


# A call short of an owner's allowance tries this many draws at most (others may take what one
# brought before it tries again).
MAX_TOP_UPS_PER_OWNER = 3


async def reserve_budget(
    router: router_core.Router, pool: DollarPool | None, owners: Sequence[Owner], amount_usd: float
) -> router_core.BudgetHold | router_core.BudgetRefusal:
    """`router.reserve_budget`; when a budget pooled with other hosts refuses for want of this
    host's allowance, after drawing from its pool (`MAX_TOP_UPS_PER_OWNER` draws per owner at most)."""
    held = router.reserve_budget(owners, amount_usd)
    for _ in range(MAX_TOP_UPS_PER_OWNER * len(owners)):
        if not isinstance(held, router_core.BudgetRefusal) or not held.pooled or pool is None:
            break
        drawn = await pool.top_up(owners[held.owner_index][0], math.ceil(amount_usd * NANOS_PER_USD))
        held = router.reserve_budget(owners, amount_usd)
        if not drawn:
            break
    return held
