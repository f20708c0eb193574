"""Hosts of a cluster sharing rate limits and health through a real Redis: several routers (one
per host, as separate hosts would have), each joined to the cluster by its own `ClusterLink`."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
from collections.abc import Callable
from pathlib import Path

import pytest

import router_core
from service.cluster import ClusterLink
from service.cluster import news as cluster_news
from service.cluster.budgets import Draw, Kind, Owed, Planner
from service.config import ConfigError, StateSettings, parse_config
from tests.redis_server import RedisServer

RPM = 600
CONFIG = json.dumps(
    {
        "deployments": [
            {"id": "a", "context_window": 1000, "rpm": RPM},
            {"id": "b", "context_window": 1000},
        ],
        "model_groups": [{"name": "chat", "deployments": ["a", "b"]}],
    }
)


def settings(server: RedisServer, **overrides: object) -> StateSettings:
    return StateSettings.model_validate({"backend": "redis", "url": server.url, "interval_s": 0.01, **overrides})


class Hosts:
    """`count` routers, each linked to the cluster."""

    def __init__(self, state: StateSettings, count: int) -> None:
        self.routers = [router_core.Router(CONFIG) for _ in range(count)]
        self.links = [ClusterLink(router, state) for router in self.routers]

    async def __aenter__(self) -> Hosts:
        await asyncio.gather(*(link.start() for link in self.links))
        return self

    async def __aexit__(self, *_: object) -> None:
        await asyncio.gather(*(link.aclose() for link in self.links))


def admit(router: router_core.Router, deployment: str = "a") -> bool:
    try:
        lease = router.reserve(deployment)
    except router_core.DeploymentUnavailableError:
        return False
    router.record(lease, outcome="ok", latency_ms=1.0)
    return True


async def demand(routers: list[router_core.Router], seconds: float, per_ms: int = 5) -> list[int]:
    """Each router asks for `per_ms` requests every millisecond for `seconds`: far above the
    limit. What each admitted."""
    loop = asyncio.get_running_loop()
    admitted = [0] * len(routers)
    end = loop.time() + seconds
    while loop.time() < end:
        for i, router in enumerate(routers):
            admitted[i] += sum(admit(router) for _ in range(per_ms))
        await asyncio.sleep(0.001)
    return admitted


async def eventually(check: Callable[[], bool], within_s: float = 5.0) -> float:
    """Seconds until `check` held; fails the test after `within_s`."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    while not check():
        assert loop.time() - start < within_s, "did not happen in time"
        await asyncio.sleep(0.002)
    return loop.time() - start


async def test_three_hosts_admit_one_limit_between_them(redis_server: RedisServer) -> None:
    """Never more than the limit: the slices the hosts hold count as in the cluster's bucket, even
    after they sat on them while Redis could have refilled behind them."""
    async with Hosts(settings(redis_server), 3) as hosts:
        await asyncio.sleep(0.5)  # each holds a slice; a full bucket in Redis beside them
        loop = asyncio.get_running_loop()
        start = loop.time()
        admitted = await demand(hosts.routers, 1.5)
        elapsed = loop.time() - start
    allowed_at_least = RPM + RPM / 60 * 1.5
    allowed_at_most = RPM + RPM / 60 * elapsed
    assert 0.95 * allowed_at_least <= sum(admitted) <= allowed_at_most + 1, admitted
    assert all(count > 0 for count in admitted), "every host got a part"


async def test_alone_each_host_would_admit_the_whole_limit() -> None:
    routers = [router_core.Router(CONFIG) for _ in range(3)]
    admitted = await demand(routers, 0.2)
    assert sum(admitted) >= 3 * RPM


async def test_a_host_gives_back_what_it_holds_when_it_stops(redis_server: RedisServer) -> None:
    async with Hosts(settings(redis_server, slice=0.2), 1) as hosts:
        (router,) = hosts.routers
        await eventually(lambda: router.budgets()[0][3] >= 100)
    # What it held is back in Redis: a new host can draw the whole limit again.
    async with Hosts(settings(redis_server, slice=0.5), 1) as hosts:
        admitted = await demand(hosts.routers, 0.3)
    assert sum(admitted) >= RPM - 2


async def test_an_opened_circuit_takes_the_deployment_out_on_the_other_hosts(redis_server: RedisServer) -> None:
    async with Hosts(settings(redis_server), 3) as hosts:
        here, *others = hosts.routers
        await asyncio.sleep(0.05)  # subscribed
        for _ in range(5):
            lease = here.reserve("b")
            here.record(lease, outcome="server_error", latency_ms=1.0)
        assert not admit(here, "b")
        took = await eventually(lambda: not any(admit(router, "b") for router in others))
        assert took < 0.1
        assert all(admit(router, "a") for router in others), "only b is out"


async def test_a_cool_down_travels_and_so_does_a_closed_circuit(redis_server: RedisServer) -> None:
    async with Hosts(settings(redis_server), 2) as hosts:
        here, there = hosts.routers
        await asyncio.sleep(0.05)
        lease = here.reserve("b")
        here.record(lease, outcome="rate_limited", latency_ms=1.0, retry_after_s=0.3)
        took = await eventually(lambda: not admit(there, "b"))
        assert took < 0.1
        assert there.cooling_down_for_s("b") is not None, "the service waits out a peer's cool-down too"
        await eventually(lambda: admit(there, "b"), 1.0)
        # Heard news is not passed on again: nothing echoes back to `here`.
        assert here.health_news() == [] and there.health_news() == []


def test_news_from_the_channel_is_checked_before_the_router_hears_it() -> None:
    router = router_core.Router(CONFIG)

    def message(**fields: object) -> bytes:
        return json.dumps({"host": "other", "deployment": "b", "kind": "cooling_down", "seconds": 5, **fields}).encode()

    assert cluster_news.hear(message(), "me", router)
    assert not admit(router, "b")
    for bad in (
        message(host="me"),
        message(kind="explode"),
        message(seconds=-1),
        message(seconds=10**9),
        message(seconds=True),
        message(deployment=["b"]),
        message(deployment="nowhere"),
        b"not json",
        b"[]",
        message(padding="x" * 2000),
        None,
    ):
        assert not cluster_news.hear(bad, "me", router), bad


def test_a_bucket_draws_a_slice_when_below_half_of_one() -> None:
    budgets: list[tuple[str, Kind, int, float]] = [
        ("deployment/a", "requests", 1000, 4.0),  # below 5 of a 10-slice: draw 6
        ("deployment/b", "requests", 1000, 6.0),  # above: nothing
        ("tenant/t", "tokens", 50, -20.0),  # in debt: pay it and hold 1
        ("api_key/k", "requests", 10, 0.0),  # the slice is never less than 1
    ]
    planner = Planner(0.01)
    assert planner.plan(budgets) == [
        Draw("deployment/a", "requests", 1000, 6, holds=4.0),
        Draw("tenant/t", "tokens", 50, 21, holds=-20.0),
        Draw("api_key/k", "requests", 10, 1, holds=0.0),
    ]
    planner.granted(Draw("deployment/a", "requests", 1000, 6), 6)
    # a spent 8 over the interval: it now draws for 16, up to its most of 100.
    assert planner.plan([("deployment/a", "requests", 1000, 2.0)]) == [Draw("deployment/a", "requests", 1000, 14, 2.0)]
    planner.granted(Draw("deployment/a", "requests", 1000, 14), 14)
    in_debt = Draw("deployment/a", "requests", 1000, 1000, -1000.0)
    assert planner.plan([("deployment/a", "requests", 1000, -1000.0)]) == [in_debt]
    # Idle again: back to one small slice, which it holds.
    assert planner.plan([("deployment/a", "requests", 1000, 30.0)]) == []
    assert planner.plan([("deployment/a", "requests", 1000, 30.0)]) == []
    owed = Owed()
    owed.add(Draw("deployment/a", "requests", 1000, 6), 2)
    owed.add(Draw("deployment/a", "requests", 1000, 6), 1)
    assert owed.drain({("deployment/a", "requests"): 7.5}) == [Draw("deployment/a", "requests", 1000, -3, 7.5)]
    assert owed.drain({}) == []


async def test_redis_going_away_fails_nothing_and_the_hosts_converge_when_it_returns(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "service.cluster")
    async with Hosts(settings(redis_server), 2) as hosts:
        first, second = hosts.links
        await demand(hosts.routers, 0.1)
        redis_server.stop()
        # Calls go on, on each host's share of the limit (half: two hosts were seen).
        await eventually(lambda: not first.reachable and not second.reachable)
        assert [router.refill_share for router in hosts.routers] == [0.5, 0.5]
        assert "unreachable" in caplog.text
        # What each still holds of the slices it drew is its to spend; beyond that, its share.
        held = sum(max(0, math.floor(level)) for router in hosts.routers for *_, level in router.budgets())
        loop = asyncio.get_running_loop()
        away_since = loop.time()
        admitted_while_away = await demand(hosts.routers, 0.3)
        away_s = loop.time() - away_since
        redis_server.start()
        await eventually(lambda: first.reachable and second.reachable, 10.0)
        assert [router.refill_share for router in hosts.routers] == [0.0, 0.0]
        assert "reachable again" in caplog.text
        # Fed from the (empty, restarted) Redis again: its whole limit, once, between them.
        admitted_after = await demand(hosts.routers, 1.0)
    assert sum(admitted_while_away) <= held + 2 * (RPM / 2 / 60) * away_s + 2, (admitted_while_away, held)
    assert 0.95 * RPM <= sum(admitted_after) <= RPM + RPM / 60 * 1.5, admitted_after


async def test_a_host_that_cannot_reach_redis_at_start_serves_on_its_share(tmp_path: Path) -> None:
    nowhere = RedisServer(tmp_path)  # never started: nothing listens on its port
    async with Hosts(settings(nowhere, fallback_share=0.25), 1) as hosts:
        (router,) = hosts.routers
        assert not hosts.links[0].reachable
        assert router.refill_share == 0.25
        admitted = await demand(hosts.routers, 0.1)
    assert sum(admitted) == RPM // 4, "a full share of the bucket, no more"


@pytest.mark.parametrize(
    ("state", "named"),
    [
        ("{backend: redis}", "state: Value error, state.url is required with backend: redis"),
        ("{backend: redis, url: 'http://h'}", "state.url: String should match pattern"),
        ("{backend: redis, url: 'redis://h', slice: 2}", "state.slice: Input should be less than or equal to 0.5"),
        ("{backend: etcd}", "state.backend: Input should be 'local' or 'redis'"),
    ],
)
def test_a_wrong_state_section_is_named_with_its_line(state: str, named: str) -> None:
    echo = "model_groups: [{name: e, deployments: [{id: e, type: echo, model: e, context_window: 10}]}]\n"
    with pytest.raises(ConfigError, match=re.escape(f"c.yaml:2: {named}")):
        parse_config(f"server: {{}}\nstate: {state}\n" + echo, "c.yaml")


async def test_the_redis_password_never_reaches_the_log(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    nowhere = RedisServer(tmp_path)
    url = f"redis://:s3cret-pw@127.0.0.1:{nowhere.port}/0"
    async with Hosts(StateSettings(backend="redis", url=url), 1):
        pass
    assert f"127.0.0.1:{nowhere.port} is unreachable" in caplog.text
    assert "s3cret-pw" not in caplog.text
