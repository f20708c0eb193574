"""The service's own Python per call, in one process, without gRPC or HTTP.

    .venv/bin/python -m benches.servicer                  # 20 000 chats, 5 000 streams
    .venv/bin/python -m benches.servicer --quick          # 2 000 and 500 (CI)
    .venv/bin/python -m benches.servicer --profile stream # and where the time goes (cProfile)

GatewayServicer.Chat and ChatStream run as a worker runs them (validation, decision, attempt,
answer, the access line in JSON) on benches/chat.py's config and request, with a stand-in for
grpc's context and the upstream's answer handed over where aiohttp would: the body
benches/mockupstream sends for Chat, parsed by the provider; its 53 events in two reads for
ChatStream, through the event-stream decoder. The CPU per call here is a lower bound of the
gateway's own: in a loaded worker, between grpc's and aiohttp's work, the same code costs more
(see README, "A worker's CPU against the floor of its stack"). Results: benches/results/servicer.json.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import json
import pstats
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import orjson
import uvloop

from benches.chat import PROMPT, gateway_config
from benches.harness import RESULTS, machine, timestamp
from service import logs
from service.api.switchboard.v1 import gateway_pb2 as pb
from service.config.document import parse_config
from service.gateway import GatewayServicer
from service.providers.events import server_sent_events
from service.runtime import Runtimes, build_runtime

# What benches/mockupstream answers: a completion of 50 tokens, or a stream of 50 chunks, the
# finish reason, the usage and [DONE].
_PREFIX = '{"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1700000000,"model":"bench-model",'
COMPLETION = orjson.dumps(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "bench-model",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "token " * 50}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 50, "total_tokens": 62},
    }
)
EVENTS = [
    *[f'data: {_PREFIX}"choices":[{{"index":0,"delta":{{"content":"token "}},"finish_reason":null}}]}}\n\n'] * 50,
    f'data: {_PREFIX}"choices":[{{"index":0,"delta":{{}},"finish_reason":"stop"}}]}}\n\n',
    f'data: {_PREFIX}"choices":[],"usage":{{"prompt_tokens":12,"completion_tokens":50,"total_tokens":62}}}}\n\n',
    "data: [DONE]\n\n",
]
# Read as a fast upstream's answer arrives: the first event, then the rest at once.
READS = (EVENTS[0].encode(), "".join(EVENTS[1:]).encode())


class Context:
    """What the servicer asks of grpc's context."""

    def __init__(self) -> None:
        self.written = 0

    def set_trailing_metadata(self, metadata: object) -> None:
        pass

    def invocation_metadata(self) -> tuple[()]:
        return ()

    def peer(self) -> str:
        return "ipv4:127.0.0.1:50000"

    def time_remaining(self) -> None:
        return None

    async def write(self, event: pb.ChatStreamResponse) -> None:
        self.written += 1

    async def abort(self, code: object, details: str, metadata: object = ()) -> None:
        raise RuntimeError(f"the call failed: {code}: {details}")


def servicer() -> GatewayServicer:
    """The benchmark's gateway, its upstream answering at once from memory."""
    config = parse_config(gateway_config(9))
    router = config.new_router()
    runtimes = Runtimes(build_runtime(config, router, {}))
    for provider in runtimes.current.providers.values():
        client: Any = provider._client  # type: ignore[attr-defined]

        @contextlib.asynccontextmanager
        async def post(url: object, body: object) -> AsyncIterator[None]:
            yield None

        async def body(response: object) -> bytes:
            return COMPLETION

        @contextlib.asynccontextmanager
        async def events(
            url: object, body: object, stray: list[str] | None = None, limit: int = client.max_response_bytes
        ) -> AsyncIterator[Any]:
            async def reads() -> AsyncIterator[bytes]:
                for read in READS:
                    yield read

            yield server_sent_events(reads(), stray, max_event_bytes=limit)

        client.post, client.body, client.events = post, body, events
    return GatewayServicer(runtimes, router)


async def cpu_per_call(call: Callable[[], Coroutine[Any, Any, None]], calls: int, profile: bool) -> float:
    """µs of this process's CPU per call, after a tenth as many to warm up."""
    for _ in range(max(calls // 10, 100)):
        await call()
    profiler = cProfile.Profile() if profile else None
    started = time.process_time()
    if profiler:
        profiler.enable()
    for _ in range(calls):
        await call()
    if profiler:
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(30)
    return (time.process_time() - started) / calls * 1e6


async def run(chats: int, streams: int, profile: str | None) -> dict[str, float]:
    gateway, context = servicer(), Context()
    request = pb.ChatRequest(
        model="bench", messages=[pb.Message(role=pb.ROLE_USER, content=[pb.ContentPart(text=PROMPT)])]
    ).SerializeToString()

    async def chat() -> None:
        await gateway.Chat(pb.ChatRequest.FromString(request), context)

    async def stream() -> None:
        await gateway.ChatStream(pb.ChatRequest.FromString(request), context)

    results = {
        "chat_us": await cpu_per_call(chat, chats, profile == "chat"),
        "stream_us": await cpu_per_call(stream, streams, profile == "stream"),
    }
    written = context.written / (streams + max(streams // 10, 100))
    assert written == 4, f"a stream wrote {written} messages, not start, two deltas and end"
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="2 000 chats and 500 streams (smoke test)")
    parser.add_argument("--profile", choices=["chat", "stream"], help="print where the time goes")
    options = parser.parse_args()
    chats, streams = (2_000, 500) if options.quick else (20_000, 5_000)
    # Access lines as a worker writes them when its stderr is not a terminal.
    logs.configure_logging(logs.LogSettings(format="json"))
    with open("/dev/null", "w") as nowhere, contextlib.redirect_stderr(nowhere):
        results = uvloop.run(run(chats, streams, options.profile))
    print(
        f"the service's own Python per call, without gRPC or HTTP: Chat {results['chat_us']:.1f} µs,"
        f" ChatStream (53 upstream events) {results['stream_us']:.1f} µs"
    )
    if options.profile:
        return  # profiled figures are not the code's
    name = "servicer-quick.json" if options.quick else "servicer.json"
    document = {"date": timestamp(), "machine": machine(), "chats": chats, "streams": streams, **results}
    (RESULTS / name).write_text(json.dumps(document, indent=2) + "\n")


if __name__ == "__main__":
    main()
