"""What a provider call produced: completions, stream events and classified failures.

Providers speak different wire formats; these are the shapes the engine sees,
whatever the provider.
"""

from __future__ import annotations

from dataclasses import dataclass

from service.api.switchboard.v1 import gateway_pb2 as pb
from service.redaction import redact

# Failures another deployment may well not have: the engine falls through to
# the next candidate on these, and fails at once on the rest (bad requests,
# content refusals), which would fail the same way anywhere.
RETRIABLE_OUTCOMES = frozenset(
    {
        pb.OUTCOME_RATE_LIMITED,
        pb.OUTCOME_OVERLOADED,
        pb.OUTCOME_SERVER_ERROR,
        pb.OUTCOME_TIMEOUT,
        pb.OUTCOME_CONNECTION_ERROR,
        pb.OUTCOME_CONTEXT_WINDOW_EXCEEDED,
        pb.OUTCOME_AUTH_ERROR,
        pb.OUTCOME_PROTOCOL_ERROR,
    }
)


# The router's outcome classes are the proto's names without the prefix: OUTCOME_RATE_LIMITED → rate_limited.
OUTCOME_CLASSES = {
    value: name.removeprefix("OUTCOME_").lower()
    for name, value in pb.Outcome.items()
    # Listed in answers, never recorded: an attempt abandoned, or one never made.
    if value not in (pb.OUTCOME_UNSPECIFIED, pb.OUTCOME_CANCELLED, pb.OUTCOME_OUT_OF_ROTATION)
}


@dataclass(frozen=True, slots=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0


@dataclass(frozen=True, slots=True)
class Completion:
    """A whole answer from a unary call."""

    text: str
    finish_reason: pb.FinishReason
    usage: Usage
    provider_request_id: str = ""
    tool_calls: tuple[pb.ToolCall, ...] = ()


@dataclass(frozen=True, slots=True)
class Delta:
    """A non-empty piece of streamed content: text, pieces of tool calls, or both."""

    text: str = ""
    tool_calls: tuple[pb.ToolCallDelta, ...] = ()


@dataclass(frozen=True, slots=True)
class StreamFinished:
    """The last event of a stream that completed."""

    finish_reason: pb.FinishReason
    usage: Usage
    provider_request_id: str = ""


StreamEvent = Delta | StreamFinished


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    """What one attempt of a request came to, as its answer or its error lists it."""

    deployment: str
    outcome: pb.Outcome
    latency_s: float | None = None  # None: passed over without a call
    upstream_status: int = 0
    error: str = ""


def finish_reason_name(reason: pb.FinishReason) -> str:
    """FINISH_REASON_TOOL_CALLS → tool_calls, as logs, traces and the ledger carry it."""
    return pb.FinishReason.Name(reason).removeprefix("FINISH_REASON_").lower()


def usage_with_cache(uncached_input: int, output: int, cache_read: int, cache_write: int) -> Usage:
    """Usage from providers that count prompt tokens read from and written to their cache apart
    from the rest (Anthropic, Bedrock): all of them are input, the reads are also cached."""
    return Usage(
        input_tokens=uncached_input + cache_read + cache_write, output_tokens=output, cached_input_tokens=cache_read
    )


MAX_MESSAGE_CHARS = 500


class UpstreamError(Exception):
    """A provider call that failed, classified so the engine can act on the class."""

    def __init__(
        self,
        outcome: pb.Outcome,
        message: str,
        *,
        status: int = 0,
        retry_after_s: float | None = None,
        local: bool = False,
    ) -> None:
        # An upstream's error text can be anything, of any length (a whole HTML page), and may
        # reflect the request's headers: redacted of every credential, then cut.
        message = redact(message)
        message = message if len(message) <= MAX_MESSAGE_CHARS else f"{message[:MAX_MESSAGE_CHARS]}… (cut)"
        super().__init__(message)
        self.outcome = outcome
        self.message = message
        self.status = status
        self.retry_after_s = retry_after_s
        # The gateway's own limit (its connection pool was full), not the deployment's failure:
        # the router learns nothing of the deployment's health from it.
        self.local = local

    @property
    def retriable(self) -> bool:
        return self.outcome in RETRIABLE_OUTCOMES

    def __str__(self) -> str:
        name = pb.Outcome.Name(self.outcome).removeprefix("OUTCOME_").lower()
        status = f" (HTTP {self.status})" if self.status else ""
        return f"{name}{status}: {self.message}"
