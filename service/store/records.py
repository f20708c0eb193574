"""What the ledger keeps of a call, and what it answers of spending: plain tuples, the rows the
store writes and reads."""

from __future__ import annotations

from typing import NamedTuple


class CallRecord(NamedTuple):
    time: float  # seconds since the epoch, when the call ended
    request_id: str
    tenant: str
    key_id: str
    method: str
    model_group: str
    deployment: str
    status: str  # the gRPC status name
    outcome: str
    input_tokens: int
    output_tokens: int
    cost_usd: float
    latency_ms: float
    # Time to the first token of a stream that answered; None for a unary call or a failure.
    ttft_ms: float | None = None
    # The policy that routed it; the experiment and variant it was assigned, if any.
    policy: str = ""
    experiment: str = ""
    variant: str = ""
    # A shadow call (method SHADOW_METHOD): the request id of the call it copied, and how its
    # answer compared with that call's (service/agreement.py); None when either had no answer.
    shadow_of: str = ""
    similarity: float | None = None
    agrees: bool | None = None
    # The answering attempt's own latency, without what came before it (retries, fallbacks,
    # waits) or after (a slow reader of a stream): what a shadow call's latency compares with.
    attempt_ms: float | None = None
    # Why the answer ended (stop, length, tool_calls, content_filter); empty without an answer.
    finish_reason: str = ""


# The method of the calls the gateway makes on its own: copies of a policy's requests to its
# shadow deployments. They are counted and priced apart, never charged to the tenant's budgets.
SHADOW_METHOD = "Shadow"


class FeedbackRecord(NamedTuple):
    time: float  # seconds since the epoch, when it was reported
    request_id: str  # the call's
    tenant: str  # the reporter's: it attaches only to that tenant's call
    key_id: str
    score: float | None
    label: str
    comment: str


class Spend(NamedTuple):
    day: str  # YYYY-MM-DD, UTC
    tenant: str
    key_id: str
    model_group: str
    calls: int
    input_tokens: int
    output_tokens: int
    cost_usd: float
    shadow: bool = False  # shadow calls, summed apart from the tenant's own
