"""Health news between the hosts of a cluster, over one Redis pub/sub channel: a circuit that
opened or closed, a rate-limit cool-down (see `router_core.Router.health_news`). Each message
names the host that sent it, so a host ignores its own. What arrives is checked and bounded
before the router hears it: whoever can publish on the channel is not trusted with more.
`listen` serves the cluster's other channels too (see `pools.recall_channel`)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import redis.asyncio as redis

import router_core

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 1024
KINDS = frozenset({"circuit_open", "circuit_closed", "cooling_down"})
# The longest a word from another host keeps a deployment out.
MAX_SECONDS = 3600.0
# What Redis being away or slow looks like from here.
UNREACHABLE = (redis.RedisError, OSError, TimeoutError)
# Tries again after this, doubling while Redis stays away.
BACKOFF_FIRST_S = 0.05
# The longest one read waits for a message, and so the longest `listen` takes to stop.
READ_S = 0.1
BACKOFF_MAX_S = 5.0


def channel(namespace: str) -> str:
    return f"{{{namespace}}}:health"


async def publish(client: redis.Redis, namespace: str, host: str, told: Sequence[tuple[str, str, float]]) -> None:
    async with client.pipeline(transaction=False) as pipe:
        for deployment, kind, seconds in told:
            message = {"host": host, "deployment": deployment, "kind": kind, "seconds": round(seconds, 3)}
            pipe.publish(channel(namespace), json.dumps(message, separators=(",", ":")))
        await pipe.execute()


async def listen(client: redis.Redis, handlers: Mapping[str, Callable[[object], object]], stop: asyncio.Event) -> None:
    """Hands each message on the channels of `handlers` to that channel's handler until `stop`
    is set, subscribing again (with backoff) whenever the connection is lost. It stops by
    looking at `stop` between short reads, not by being cancelled: redis-py can lose a
    cancellation that arrives in the middle of a read."""
    delay = BACKOFF_FIRST_S
    while not stop.is_set():
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(*handlers)
            delay = BACKOFF_FIRST_S
            while not stop.is_set():
                message = await pubsub.get_message(timeout=READ_S)
                if message is None:
                    continue
                name = message.get("channel")
                name = name.decode(errors="replace") if isinstance(name, bytes) else str(name)
                if name in handlers:
                    handlers[name](message.get("data"))
        except UNREACHABLE as error:
            log.debug("cluster news: subscription lost (%s); subscribing again", type(error).__name__)
        finally:
            await _close(pubsub)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), delay)
        delay = min(BACKOFF_MAX_S, delay * 2)


def from_another_host(data: object, host: str) -> dict[str, Any] | None:
    """One message on a cluster channel as an object, unless it is this host's own or malformed
    (not a bounded JSON object): whoever can publish on the channel is not trusted with more."""
    if not isinstance(data, bytes | str) or len(data) > MAX_MESSAGE_BYTES:
        return None
    try:
        message = json.loads(data)
    except ValueError:
        return None
    if not isinstance(message, dict) or message.get("host") == host:
        return None
    return message


def hear(data: object, host: str, router: router_core.Router) -> bool:
    """Applies one message; False when it is not news for this host (its own, or malformed)."""
    message = from_another_host(data, host)
    if message is None:
        return False
    deployment, kind, seconds = message.get("deployment"), message.get("kind"), message.get("seconds")
    if not isinstance(deployment, str) or kind not in KINDS:
        return False
    if not isinstance(seconds, int | float) or isinstance(seconds, bool) or not 0 <= seconds <= MAX_SECONDS:
        return False
    return router.hear(deployment, kind, float(seconds))


async def _close(pubsub: redis.client.PubSub) -> None:
    with contextlib.suppress(*UNREACHABLE):
        await asyncio.wait_for(pubsub.aclose(), 1.0)
