"""A cheap input-token estimate for routing (context-window filter) before a provider counts.

Roughly four characters per token for text plus a small per-message overhead,
which is what OpenAI documents as a rule of thumb for English; providers report
the real counts in their usage.
"""

from __future__ import annotations

from collections.abc import Iterable

from service.api.switchboard.v1 import gateway_pb2 as pb

CHARS_PER_TOKEN = 4
TOKENS_PER_MESSAGE = 4
TOKENS_PER_IMAGE = 765  # OpenAI's cost of a 512x512 high-detail image tile set


def estimate_input_tokens(messages: Iterable[pb.Message]) -> int:
    total = 0
    for message in messages:
        total += TOKENS_PER_MESSAGE
        for part in message.content:
            if part.WhichOneof("part") == "image":
                total += TOKENS_PER_IMAGE
            else:
                total += -(-len(part.text) // CHARS_PER_TOKEN)
    return total
