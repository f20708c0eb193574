"""What the adapters share when translating a unified request into a wire format that is not
OpenAI's (Anthropic, Bedrock, Gemini): turns that alternate, and refusing what cannot be said."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from service.api.switchboard.v1 import gateway_pb2 as pb

# Sampling parameters with no equivalent in Anthropic's or Bedrock's API.
NO_PENALTIES_OR_SEED = ("seed", "presence_penalty", "frequency_penalty")


def merged_turns(
    messages: Sequence[pb.Message],
    pieces: Callable[[pb.Message], list[dict[str, Any]]],
    *,
    assistant: str = "assistant",
    key: str = "content",
) -> list[dict[str, Any]]:
    """The conversation without its system messages, as turns of `user` and `assistant` (tool
    results are the user's), each message's `pieces` under `key`. Consecutive messages of one
    role merge into one turn: the APIs want the results of one turn's tool calls together, right
    after the calls."""
    turns: list[dict[str, Any]] = []
    for message in messages:
        if message.role == pb.ROLE_SYSTEM:
            continue
        role = assistant if message.role == pb.ROLE_ASSISTANT else "user"
        if turns and turns[-1]["role"] == role:
            turns[-1][key].extend(pieces(message))
        else:
            turns.append({"role": role, key: pieces(message)})
    return turns


def unsupported_sampling(request: pb.ChatRequest, params: Sequence[str]) -> list[str]:
    """What of the request an API whose temperature stops at 1, with no JSON output mode and none
    of `params`, cannot honour, each named as the client named it."""
    problems = [f"params.{name}" for name in params if request.params.HasField(name)]
    if request.params.HasField("temperature") and request.params.temperature > 1.0:
        problems.append("params.temperature above 1")
    if request.response_format.type in (pb.RESPONSE_FORMAT_TYPE_JSON_OBJECT, pb.RESPONSE_FORMAT_TYPE_JSON_SCHEMA):
        problems.append("response_format")
    return problems
