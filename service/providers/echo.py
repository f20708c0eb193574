"""A built-in, deterministic provider that repeats the last user message.

It lets the gateway answer with no network and no API key, for trying clients,
grpcurl and tests. Its "tokens" are whitespace-separated words, so max_tokens
truncates the echo to that many words with finish reason LENGTH.
"""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator

from service.api.switchboard.v1 import gateway_pb2 as pb
from service.outcomes import Completion, Delta, StreamEvent, StreamFinished, Usage

_WORD = re.compile(r"\S+\s*")


class EchoProvider:
    async def complete(self, request: pb.ChatRequest) -> Completion:
        words, finish_reason, usage = _echo(request)
        return Completion(text="".join(words), finish_reason=finish_reason, usage=usage)

    async def stream(self, request: pb.ChatRequest) -> AsyncGenerator[StreamEvent, None]:
        words, finish_reason, usage = _echo(request)
        for word in words:
            yield Delta(word)
        yield StreamFinished(finish_reason=finish_reason, usage=usage)

    async def aclose(self) -> None:
        return None


def _echo(request: pb.ChatRequest) -> tuple[list[str], pb.FinishReason, Usage]:
    last_user = next((m for m in reversed(request.messages) if m.role == pb.ROLE_USER), None)
    text = " ".join(part.text for part in last_user.content if part.text) if last_user else ""
    words = _WORD.findall(text.strip())
    finish_reason = pb.FINISH_REASON_STOP
    if request.params.HasField("max_tokens") and len(words) > request.params.max_tokens:
        words = words[: request.params.max_tokens]
        words[-1] = words[-1].rstrip()
        finish_reason = pb.FINISH_REASON_LENGTH
    input_words = sum(len(_WORD.findall(p.text)) for m in request.messages for p in m.content)
    return words, finish_reason, Usage(input_tokens=input_words, output_tokens=len(words))
