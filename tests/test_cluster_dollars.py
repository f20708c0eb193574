"""Budgets in dollars shared by the hosts of a cluster through a real Redis: each host (a router
with its own `ClusterLink`) spends allowances drawn from one pool per owner, so that together
they never reserve more than the owner may spend, and every dollar is counted once."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
import redis.asyncio as redis

import router_core
from service.cluster import ClusterLink, dollars
from service.cluster.dollars import reserve_budget
from service.cluster.pools import (
    DOLLARS_SCRIPT,
    NANOS_PER_USD,
    Entry,
    pool_key,
    recalled_owner,
    script_arguments,
)
from service.identity.auth import Owner
from tests.redis_server import RedisServer
from tests.test_cluster import CONFIG, Hosts, eventually, settings

OWNER: Owner = ("tenant/acme", 1.0, None, None)  # a dollar a day
CENT = 0.01


async def spend(router: router_core.Router, link: ClusterLink, usd: float = CENT, owner: Owner = OWNER) -> bool:
    """One call of `usd` on `owner`'s budget, as the engine makes it: reserved, then settled."""
    held = await reserve_budget(router, link.dollars, [owner], usd)
    if isinstance(held, router_core.BudgetRefusal):
        return False
    await asyncio.sleep(0)  # the call, while other calls run
    held.settle(usd)
    return True


async def pool(server: RedisServer, owner: str = OWNER[0]) -> dict[str, int]:
    client = redis.Redis.from_url(server.url)
    try:
        fields = await client.hgetall(pool_key("switchboard", owner))  # type: ignore[misc]
    finally:
        await client.aclose()
    return {name.decode(): int(value) for name, value in fields.items()}


async def test_two_hosts_spend_one_budget_and_count_every_cent_once(redis_server: RedisServer) -> None:
    """Both hosts spend a cent per call, concurrently, far beyond the budget: together they admit
    at most a dollar; once they stop, the pool counts exactly what they spent."""
    async with Hosts(settings(redis_server), 2) as hosts:

        async def calls(host: int) -> int:
            admitted = 0
            for _ in range(150):
                admitted += await spend(hosts.routers[host], hosts.links[host])
            return admitted

        admitted = await asyncio.gather(*(calls(host) for host in range(2) for _ in range(4)))
    total = sum(admitted)
    assert total <= 100, admitted
    assert total >= 95, f"refused while the pool had money: {admitted}"
    assert (await pool(redis_server))["daily"] == round(total * CENT * NANOS_PER_USD), "each cent once"


async def test_a_budget_left_by_a_stopped_host_is_spent_to_the_cent_by_another(redis_server: RedisServer) -> None:
    async with Hosts(settings(redis_server), 1) as first:
        assert all([await spend(first.routers[0], first.links[0], 0.07) for _ in range(8)])  # 0.56
    async with Hosts(settings(redis_server), 1) as second:
        router, link = second.routers[0], second.links[0]
        assert await spend(router, link, 0.44)
        assert not await spend(router, link, 1e-9), "not a nano-dollar more"
        refusal = router.reserve_budget([OWNER], CENT)
        assert isinstance(refusal, router_core.BudgetRefusal)
        assert (refusal.period, refusal.left_usd) == ("daily", 0.0)
    assert (await pool(redis_server))["daily"] == NANOS_PER_USD


async def test_an_idle_host_gives_back_all_but_a_slice(redis_server: RedisServer) -> None:
    async with Hosts(settings(redis_server), 2) as hosts:
        busy, idle = zip(hosts.routers, hosts.links, strict=True)
        # The idle host spends once, in a burst that draws a large slice, then stops spending.
        for _ in range(20):
            await spend(*idle, 0.02)
        await asyncio.sleep(0.2)
        held = _held(idle[0])
        assert held <= 0.02 * NANOS_PER_USD, "at most two of an idle host's slices stay with it"
        spent = 0.4
        while await spend(*busy, CENT):
            spent += CENT
        assert spent >= 1.0 - 0.02 - 1e-9, spent


async def test_a_pool_keeps_redis_days_and_answers_a_call_sent_again_once(redis_server: RedisServer) -> None:
    """A host whose clock is a day ahead (or behind) draws nothing and moves no pool on."""
    client = redis.Redis.from_url(redis_server.url)
    script = client.register_script(DOLLARS_SCRIPT)
    now = datetime.now(UTC)
    day, month = int(now.timestamp() // 86_400), (now.year - 1970) * 12 + now.month - 1

    async def call(number: int, *entries: Entry) -> list[int]:
        keys, arguments = script_arguments("switchboard", "host-1", "host-1", number, entries)
        return [int(x) for x in await script(keys=keys, args=arguments)]

    def draw(nanos: int, on_day: int = day, fraction: float = 1.0) -> Entry:
        return Entry("tenant/acme", (1.0, None, None), on_day, month, nanos, fraction)

    try:
        assert await call(1, draw(600_000_000)) == [1, 600_000_000, 400_000_000, 0, 0]
        assert await call(1, draw(600_000_000)) == [1, 600_000_000, 400_000_000, 0, 0], "answered, not applied again"
        assert (await call(2, draw(600_000_000)))[1] == 400_000_000, "no more than is left"
        assert (await call(3, draw(1, on_day=day + 1)))[1:3] == [0, 0], "nothing for tomorrow, and today stays"
        assert (await call(4, draw(1, on_day=day - 1)))[1] == 0, "nor for yesterday"
        given_back = Entry("tenant/acme", (1.0, None, None), day - 1, month, -100_000_000, 0.0)
        assert (await call(5, given_back))[1:3] == [-100_000_000, 0], "yesterday's is not today's"
        assert (await pool(redis_server))["day"] == day
    finally:
        await client.aclose()


async def test_while_redis_hangs_a_host_spends_its_share_and_pays_it_back(redis_server: RedisServer) -> None:
    state = settings(redis_server, fallback_share=0.5, timeout_s=0.1)
    async with Hosts(state, 1) as hosts:
        router, link = hosts.routers[0], hosts.links[0]
        assert await spend(router, link, 0.2)
        redis_server.pause()
        try:
            await eventually(lambda: not link.reachable)
            spent = 0.2
            while await spend(router, link, CENT):
                spent += CENT
        finally:
            redis_server.resume()
        # What it held, and half of what the pool had left beside that.
        assert 0.2 + 0.5 * 0.8 - 0.05 <= spent <= 0.2 + 0.5 * 0.8 + 0.05, spent
        await eventually(lambda: link.reachable, within_s=10)
        assert await spend(router, link, CENT), "the pool has money left"
        spent += CENT
    assert (await pool(redis_server))["daily"] == round(spent * NANOS_PER_USD), "counted once, when Redis was back"


async def test_a_redis_that_restarts_empty_does_not_hand_out_the_day_again(redis_server: RedisServer) -> None:
    async with Hosts(settings(redis_server, timeout_s=0.1), 1) as hosts:
        router, link = hosts.routers[0], hosts.links[0]
        spent = 0.0
        while spent < 0.7:
            assert await spend(router, link, 0.05)
            spent += 0.05
        redis_server.stop()
        await eventually(lambda: not link.reachable)
        redis_server.start()
        await eventually(lambda: link.reachable, within_s=10)
        while await spend(router, link, CENT):
            spent += CENT
    assert spent <= 1.0 + 1e-9, "what the host spent before is a floor for the new pool"


async def test_a_host_short_of_budget_gets_back_what_another_holds(redis_server: RedisServer) -> None:
    """The other host draws large slices and sits on one; a call that needs more than the pool
    has left asks for it back and waits, instead of being refused."""
    a = ClusterLink(router_core.Router(CONFIG), settings(redis_server))
    b = ClusterLink(router_core.Router(CONFIG), settings(redis_server, slice=0.3))
    await a.start()
    await b.start()
    try:
        assert await spend(b._router, b, CENT)
        await eventually(lambda: _held(b._router) >= 0.2 * NANOS_PER_USD)
        left = NANOS_PER_USD - (await pool(redis_server))["daily"]
        ask = (left + _held(b._router) / 2) / NANOS_PER_USD
        assert await spend(a._router, a, ask), "b gave back what it held"
        assert _held(b._router) == 0, "and draws ahead no more for a while"
        assert not await spend(a._router, a, 1.0 - CENT - ask + CENT), "never more than the dollar"
    finally:
        await a.aclose()
        await b.aclose()
    assert (await pool(redis_server))["daily"] <= NANOS_PER_USD


def _held(router: router_core.Router) -> int:
    budget = router.pooled_budget(OWNER[0])
    assert budget is not None
    return budget.allowance_nanos


def test_a_recall_from_the_channel_is_checked_before_it_is_heeded() -> None:
    assert recalled_owner(b'{"host": "other", "owner": "tenant/acme"}', "me") == "tenant/acme"
    assert recalled_owner(b'{"host": "me", "owner": "tenant/acme"}', "me") is None, "its own"
    for bad in (b"not json", b"[]", b'{"host": "other", "owner": 7}', b"x" * 5000, None):
        assert recalled_owner(bad, "me") is None, bad


async def test_calls_short_together_draw_together_and_are_all_served(redis_server: RedisServer) -> None:
    owner: Owner = ("tenant/acme", 100.0, None, None)
    async with Hosts(settings(redis_server), 1) as hosts:
        router, link = hosts.routers[0], hosts.links[0]
        served = await asyncio.gather(*(spend(router, link, 0.5, owner) for _ in range(40)))
    assert all(served), f"{served.count(False)} of 40 refused with 80 USD left"


async def test_a_budget_without_bounds_is_never_refused_for_want_of_an_allowance(redis_server: RedisServer) -> None:
    async with Hosts(settings(redis_server), 1) as hosts:
        assert await spend(hosts.routers[0], hosts.links[0], 5.0, ("tenant/free", None, None, None))


async def test_an_idle_owner_gives_back_everything(redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dollars, "IDLE_S", 0.2)
    async with Hosts(settings(redis_server), 1) as hosts:
        router, link = hosts.routers[0], hosts.links[0]
        assert await spend(router, link, CENT)
        assert _held(router) > 0
        await eventually(lambda: _held(router) == 0)
        assert (await pool(redis_server))["daily"] == round(CENT * NANOS_PER_USD), "all but what was spent is back"


async def test_a_redis_that_comes_and_goes_grants_the_fallback_once_until_it_is_counted(
    redis_server: RedisServer,
) -> None:
    async with Hosts(settings(redis_server, fallback_share=0.5, timeout_s=0.1), 1) as hosts:
        router, link = hosts.routers[0], hosts.links[0]
        assert await spend(router, link, CENT)
        redis_server.pause()
        try:
            await eventually(lambda: not link.reachable)
            while await spend(router, link, CENT):
                pass
            link.dollars.back()  # Redis answered a ping, and is gone again before the step pays
            link.dollars.lost(0.5)
            assert not await spend(router, link, CENT), "no second share of the same remainder"
        finally:
            redis_server.resume()
        await eventually(lambda: link.reachable, within_s=10)
        assert await spend(router, link, CENT), "counted: the pool has the rest"
