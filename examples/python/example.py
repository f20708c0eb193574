"""Calling Switchboard from Python with its thin client: Chat, ChatStream, Route, and an error
with its details decoded, each call under a deadline. Run a gateway (`make serve`), then:

    .venv/bin/python examples/python/example.py --target 127.0.0.1:50051 --model echo
"""

from __future__ import annotations

import argparse
import asyncio

from service.api.switchboard.v1 import gateway_pb2 as pb
from switchboard import Client, SwitchboardError


async def main(target: str, model: str) -> None:
    async with Client(target, timeout_s=10.0) as client:  # every call's deadline, unless it names one
        answer = await client.chat("hello from Python", model=model)
        print(f"chat: {answer.text} (deployment {answer.deployment}, {answer.response.usage.output_tokens} tokens out)")

        stream = client.stream("one two three", model=model, timeout_s=10.0)
        text = "".join([piece async for piece in stream])
        assert stream.start is not None and stream.end is not None
        finish = pb.FinishReason.Name(stream.end.finish_reason)
        print(f"stream: {text} (deployment {stream.start.served.deployment}, {finish})")

        decision = await client.route("how long is a piece of string?", model=model)
        first = decision.candidates[0].deployment if decision.candidates else "none"
        print(f"route: group {decision.model_group}, first {first} of {len(decision.candidates)} candidates")

        try:
            await client.chat("hello", model="no-such-group")
        except SwitchboardError as error:
            print(f"error: {error.code.name}")
            for field, description in error.field_violations:
                print(f"  bad request: {field}: {description}")
            if error.reason:
                print(f"  error info: {error.reason} {error.metadata}")
            if error.retry_after_s is not None:
                print(f"  retry after: {error.retry_after_s}s")
            for attempt in error.attempts:
                print(f"  attempt: {attempt.deployment} {attempt.outcome}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", default="127.0.0.1:50051", help="the gateway's host:port")
    parser.add_argument("--model", default="echo", help="a model group, or auto")
    options = parser.parse_args()
    asyncio.run(main(options.target, options.model))
