"""Streams that are slow to their first token fall over; streams that stall after it end with an
error that says so, never OK."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import grpc
import pytest
from google.rpc import error_details_pb2

from service.api.switchboard.v1 import gateway_pb2 as pb
from service.attempts.openings import stalling as _stalling
from service.outcomes import UpstreamError
from tests.conftest import StartGateway, status_details
from tests.mock_openai import MockOpenAI


def config(slow: MockOpenAI, fast: MockOpenAI, *, first_token_s: float = 5.0, stall_s: float = 5.0) -> str:
    return f"""
default_group: chat
model_groups:
  - name: chat
    strategy: priority
    deployments:
      - id: slow
        type: openai_compatible
        model: m
        base_url: {slow.base_url}
        context_window: 8192
        priority: 0
        first_token_timeout_s: {first_token_s}
        stall_timeout_s: {stall_s}
      - id: fast
        type: openai_compatible
        model: m
        base_url: {fast.base_url}
        context_window: 8192
        priority: 1
"""


def chat(text: str = "one two three") -> pb.ChatRequest:
    return pb.ChatRequest(model="chat", messages=[pb.Message(role=pb.ROLE_USER, content=[pb.ContentPart(text=text)])])


async def test_a_late_first_token_falls_over_to_the_next_deployment(
    start_gateway: StartGateway, upstream: MockOpenAI, second_upstream: MockOpenAI
) -> None:
    upstream.chunk_delay_s = 0.5  # the first content chunk comes after half a second
    stub = await start_gateway(config(upstream, second_upstream, first_token_s=0.1))
    started = time.perf_counter()
    events = [event async for event in stub.ChatStream(chat())]
    assert time.perf_counter() - started < 0.45, "the slow deployment was waited for"
    assert events[0].start.served.deployment == "fast"
    assert [(a.deployment, a.outcome) for a in events[0].start.failed_attempts] == [("slow", pb.OUTCOME_TIMEOUT)]
    assert "".join(e.delta.text for e in events if e.HasField("delta")) == "second: one two three"
    assert events[-1].end.finish_reason == pb.FINISH_REASON_STOP


async def test_a_stall_after_content_ends_the_call_with_an_error(
    start_gateway: StartGateway, upstream: MockOpenAI, second_upstream: MockOpenAI
) -> None:
    upstream.chunk_delay_s = 0.3  # every chunk: the first token is in time, the pauses after it are not
    stub = await start_gateway(config(upstream, second_upstream, first_token_s=2.0, stall_s=0.1))
    received: list[pb.ChatStreamResponse] = []
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for event in stub.ChatStream(chat()):
            received.append(event)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "stalled: no chunk for 0.1s" in (caught.value.details() or "")
    assert received[0].start.served.deployment == "slow"
    assert any(event.HasField("delta") for event in received)
    info, log = status_details(caught.value)
    assert isinstance(info, error_details_pb2.ErrorInfo) and info.reason == "STREAM_INTERRUPTED"
    assert isinstance(log, pb.AttemptLog)
    assert [(a.deployment, a.outcome) for a in log.attempts] == [("slow", pb.OUTCOME_TIMEOUT)]
    assert not second_upstream.requests, "a stream must not fall back once content was sent"


async def test_a_slow_reader_is_not_a_stalled_upstream() -> None:
    """Only waiting for the upstream counts: a reader slower than the stall limit is fine."""

    async def upstream() -> AsyncIterator[int]:
        for item in range(1, 4):
            yield item

    received = []
    async for item in _stalling(0, upstream(), stall_s=0.05):
        received.append(item)
        await asyncio.sleep(0.1)
    assert received == [0, 1, 2, 3]


async def test_a_silent_upstream_is_a_stall() -> None:
    async def upstream() -> AsyncIterator[int]:
        yield 1
        await asyncio.sleep(1)
        yield 2

    received = []
    with pytest.raises(UpstreamError) as caught:
        async for item in _stalling(0, upstream(), stall_s=0.05):
            received.append(item)
    assert received == [0, 1] and caught.value.outcome == pb.OUTCOME_TIMEOUT
