"""The input-token estimate that routing (context-window filter) and rate-limit reservations use
before a provider counts.

The request's texts go to the Rust estimator (``router_core.estimate_tokens``), which counts them
the way BPE tokenizers of the cl100k/o200k kind do, plus a per-message and per-image cost; each
deployment's router then calibrates the estimate against the input tokens its provider reports.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable

from google.protobuf import json_format, struct_pb2

import router_core
from service.api.switchboard.v1 import gateway_pb2 as pb


def estimate_input_tokens(messages: Iterable[pb.Message], tools: Iterable[pb.Tool] = ()) -> int:
    """Estimated input tokens of a conversation and of the tools offered with it (their names,
    descriptions and parameter schemas are part of the prompt too)."""
    texts: list[str] = []
    count = images = 0
    for message in messages:
        count += 1
        if message.name:
            texts.append(message.name)
        for part in message.content:
            if part.WhichOneof("part") == "image":
                images += 1
            else:
                texts.append(part.text)
        for call in message.tool_calls:
            texts += (call.name, call.arguments)
    for tool in tools:
        texts += (tool.name, tool.description)
        if tool.HasField("parameters"):
            texts.append(_schema_json(tool.parameters.SerializeToString(deterministic=True)))
    return router_core.estimate_tokens(texts, messages=count, images=images)


# Clients send the same tool definitions again and again; rendering a schema as JSON costs
# about 20 µs, finding it here about 1 µs.
@functools.lru_cache(maxsize=256)
def _schema_json(serialized: bytes) -> str:
    return json_format.MessageToJson(struct_pb2.Struct.FromString(serialized), indent=None)
