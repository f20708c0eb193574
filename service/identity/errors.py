"""How a caller is refused: no valid credential (UNAUTHENTICATED), a tenant asking for what it
may not use (PERMISSION_DENIED, naming what was refused), an address that failed too often, or a
budget with too little left (RESOURCE_EXHAUSTED, with when to try again)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC, datetime

import grpc
from google.protobuf.message import Message

import router_core
from service.errors import GatewayError, retry_info


class Unauthenticated(GatewayError):
    code = grpc.StatusCode.UNAUTHENTICATED
    reason = "UNAUTHENTICATED"


class PermissionDenied(GatewayError):
    code = grpc.StatusCode.PERMISSION_DENIED
    reason = "PERMISSION_DENIED"


class TooManyFailures(GatewayError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    reason = "TOO_MANY_AUTH_FAILURES"

    def __init__(self, wait_s: float) -> None:
        self.wait_s = wait_s
        super().__init__(f"too many failed authentications from this address; try again in {wait_s:.0f}s")

    def details(self) -> Sequence[Message]:
        return [self.error_info(), retry_info(self.wait_s)]


class BudgetExceeded(GatewayError):
    """A call whose estimated cost is more than a budget has left."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    reason = "BUDGET_EXCEEDED"

    def __init__(self, owner: str, refusal: router_core.BudgetRefusal) -> None:
        self.owner = owner
        self.refusal = refusal
        resets = refusal.resets_at_s
        when = "it does not start again" if resets is None else f"it starts again at {_utc(resets)}"
        super().__init__(
            f"{owner.replace('/', ' ')}'s {refusal.period} budget of {refusal.limit_usd:.2f} USD has "
            f"{refusal.left_usd:.6f} USD left; this request may cost up to {refusal.asked_usd:.6f} USD; {when}"
        )

    def details(self) -> Sequence[Message]:
        refusal = self.refusal
        metadata = {
            "owner": self.owner,
            "period": refusal.period,
            "limit_usd": f"{refusal.limit_usd}",
            "left_usd": f"{refusal.left_usd}",
            "asked_usd": f"{refusal.asked_usd}",
        }
        if refusal.resets_at_s is not None:
            metadata["resets_at"] = _utc(refusal.resets_at_s)
        details: list[Message] = [self.error_info(metadata)]
        if refusal.resets_at_s is not None:
            details.append(retry_info(max(0.0, refusal.resets_at_s - time.time())))
        return details


def _utc(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
