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
