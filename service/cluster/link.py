"""One host's link to the cluster's state in Redis: a background task that draws rate-limit
budget (`budgets`) and allowances of dollar budgets (`dollars`) and passes on this host's health
news, and one that hears the others' (`news`). The router decides on what it holds: the request
path waits on Redis only for a call whose dollar allowance ran short (`dollars.DollarPool.top_up`).

When Redis cannot be reached or answers slowly, every call still goes on: each limit refills
on this host by itself at a share of its rate (`state.fallback_share`), the link says so in the
log and in the gRPC health status of `switchboard.cluster`, and it tries again with backoff.
Once Redis answers, the buckets are fed from it again."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from collections.abc import Awaitable, Callable
from contextlib import suppress
from typing import Any, TypeVar

import redis.asyncio as redis
from redis.backoff import NoBackoff
from redis.retry import Retry

import router_core
from service.cluster import budgets, dollars, news, pools
from service.cluster.news import BACKOFF_FIRST_S, BACKOFF_MAX_S, UNREACHABLE
from service.config import StateSettings
from service.redaction import SECRETS, bounded

log = logging.getLogger(__name__)

# A host counts towards `fallback_share: auto` while it drew in this long.
HOST_SEEN_S = 10.0
# Even with nothing to draw, a host says it is there this often.
HEARTBEAT_S = 1.0

T = TypeVar("T")


class ClusterLink:
    def __init__(
        self,
        router: router_core.Router,
        settings: StateSettings,
        *,
        on_reachable: Callable[[bool], object] = lambda reachable: None,
        holder: str | None = None,
    ) -> None:
        """`holder`: what names this host's dollar allowances in Redis, the same for the workers
        of one host, which share them (default: this process)."""
        if settings.url is None:
            raise ValueError("a cluster link needs state.url")
        self._router = router
        self._settings = settings
        self._on_reachable = on_reachable
        self.host = f"{socket.gethostname()}/{os.getpid()}/{uuid.uuid4().hex[:8]}"
        self._redis = redis.Redis.from_url(
            settings.url,
            socket_timeout=settings.timeout_s,
            socket_connect_timeout=settings.timeout_s,
            retry=Retry(NoBackoff(), 0),  # the link retries on its own schedule
        )
        password = self._redis.connection_pool.connection_kwargs.get("password")
        SECRETS.add((str(password) if password else None,))
        self.where = _where(self._redis)
        self._draw = self._redis.register_script(budgets.DRAW_SCRIPT)
        self._owed = budgets.Owed()
        self._planner = budgets.Planner(settings.slice)
        self.dollars = dollars.DollarPool(router, self._redis, settings, self.host, holder or self.host, self._call)
        self.reachable = False
        self._hosts_seen = 1
        self._since_heartbeat = HEARTBEAT_S
        self._lost_at: float | None = None
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Reaches Redis once (within `timeout_s`, falling back if it cannot), then runs in the
        background."""
        await self._step_or_fall_back()
        self._tasks = [
            asyncio.create_task(self._run(), name="cluster link"),
            asyncio.create_task(
                news.listen(
                    self._redis,
                    {
                        news.channel(self._settings.namespace): lambda data: news.hear(data, self.host, self._router),
                        pools.recall_channel(self._settings.namespace): self._recalled,
                    },
                    self._stop,
                ),
                name="cluster news",
            ),
        ]

    def _recalled(self, data: object) -> None:
        owner = pools.recalled_owner(data, self.host)
        if owner is not None:
            self.dollars.recall(owner)

    async def aclose(self) -> None:
        """Stops, and gives back what this host holds of the cluster's budget."""
        self._stop.set()
        self._tasks[0].cancel()  # between steps, or in a step that is bounded by `timeout_s`
        done, pending = await asyncio.wait(self._tasks, timeout=2 * news.READ_S + self._settings.timeout_s)
        for task in pending:
            task.cancel()
        for task in done:
            with suppress(asyncio.CancelledError):
                await task
        if self.reachable:
            draws = self._owed.drain({}) + budgets.take_back_all(self._router)
            try:
                await self._call(self._run_script(draws))
                await self.dollars.close()
            except UNREACHABLE as error:
                log.warning("could not give back this host's budget to %s: %s", self.where, error)
        await self._redis.aclose()

    async def _run(self) -> None:
        while True:
            delay = await self._step_or_fall_back()
            await asyncio.sleep(delay)

    async def _step_or_fall_back(self) -> float:
        """One round of drawing and telling; on failure, the fallback and the next try's delay."""
        try:
            await self._step()
        except UNREACHABLE as error:
            return self._lost(error)
        return self._settings.interval_s

    async def _step(self) -> None:
        if not self.reachable:
            await self._call(self._ping())
            # From here on the buckets take budget only from the cluster's; and what health news
            # may have been lost (published as Redis went away) is told again.
            self._router.set_refill_share(0.0)
            self._router.retell_health()
            self.reachable = True
            self.dollars.back()
            self._on_reachable(True)
            if self._lost_at is not None:
                away = asyncio.get_running_loop().time() - self._lost_at
                log.info("cluster state at %s is reachable again after %.1fs", self.where, away)
            self._lost_at = None
        levels = self._router.budgets()
        holds = {(key, kind): level for key, kind, _, level in levels}
        draws = self._owed.drain(holds) + self._planner.plan(levels)
        self._since_heartbeat += self._settings.interval_s
        if draws or self._since_heartbeat >= HEARTBEAT_S:
            given = await self._call(self._run_script(draws))
            self._since_heartbeat = 0.0
            for draw, amount in zip(draws, given, strict=True):
                if amount > 0:
                    taken = self._router.grant(draw.key, draw.kind, amount)
                    self._planner.granted(draw, taken)
                    if taken < amount:
                        self._owed.add(draw, amount - taken)
        await self.dollars.step()
        told = self._router.health_news()
        if told:
            await self._call(news.publish(self._redis, self._settings.namespace, self.host, told))

    async def _run_script(self, draws: list[budgets.Draw]) -> list[int]:
        keys, arguments = budgets.script_arguments(self._settings.namespace, self.host, HOST_SEEN_S, draws)
        result: list[Any] = await self._draw(keys=keys, args=arguments)
        self._hosts_seen = max(1, int(result[0]))
        return [int(amount) for amount in result[1:]]

    def _lost(self, error: BaseException) -> float:
        """Falls back to this host's share of every limit (once per outage); returns how long to
        wait before the next try, doubling while Redis stays away."""
        loop_time = asyncio.get_running_loop().time()
        share = self._settings.fallback_share
        if share == "auto":
            share = 1.0 / self._hosts_seen
        if self.reachable or self._lost_at is None:
            self._router.set_refill_share(share)
            self.dollars.lost(share)
            self.reachable = False
            self._on_reachable(False)
            self._lost_at = loop_time
            log.warning(
                "cluster state at %s is unreachable (%s): each rate limit refills on this host at"
                " %.3g of its rate until it is back; trying again with backoff",
                self.where,
                _describe(error),
                share,
            )
        away = loop_time - self._lost_at
        return min(BACKOFF_MAX_S, max(BACKOFF_FIRST_S, away))

    async def _ping(self) -> None:
        await self._redis.ping()  # type: ignore[misc]  # typed for the sync client too

    async def _call(self, call: Awaitable[T]) -> T:
        return await asyncio.wait_for(call, self._settings.timeout_s)


def _where(client: redis.Redis) -> str:
    """Where Redis is, for the log: never the password."""
    kwargs = client.connection_pool.connection_kwargs
    if "path" in kwargs:
        return f"unix:{kwargs['path']}"
    return f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}"


def _describe(error: BaseException) -> str:
    return bounded(f"{type(error).__name__}: {error}", 200) if str(error) else type(error).__name__
