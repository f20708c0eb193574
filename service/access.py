"""One access-log line per call, and the request id that names the call everywhere: in the
response (`id`), in the trailing metadata (`x-request-id`, errors included) and in the log.

A client may name its call itself with `x-request-id` in its metadata (a token of at most 128
letters, digits and `._:-`); anything else is replaced by a fresh id. The line holds what the
call came to, never what was asked or answered: no prompt, no completion, no secret."""

from __future__ import annotations

import logging
import os
import re
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import grpc

import router_core
from service.logs import ACCESS_LOGGER, emit_access
from service.redaction import bounded

if TYPE_CHECKING:
    from service.attempts import Estimate
    from service.identity import Caller

REQUEST_ID = "x-request-id"
_CLIENT_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
# The requested model is the client's text, and an error may quote an upstream: a line carries
# this much of each.
MAX_MODEL_CHARS = 128
MAX_ERROR_CHARS = 300

log = logging.getLogger(ACCESS_LOGGER)


def request_id(context: grpc.aio.ServicerContext) -> str:
    """The client's id for the call when it sent a valid one, else a new one."""
    for key, value in context.invocation_metadata() or ():
        if key == REQUEST_ID and isinstance(value, str) and _CLIENT_ID.fullmatch(value):
            return value
    return new_request_id()


def new_request_id() -> str:
    """A random (version 4) UUID's 32 hex digits, made without the UUID class's checks."""
    octets = bytearray(os.urandom(16))
    octets[6] = (octets[6] & 0x0F) | 0x40  # version 4
    octets[8] = (octets[8] & 0x3F) | 0x80  # the RFC 4122 variant
    return octets.hex()


@dataclass
class Call:
    """What one call came to, filled in as it goes: by the servicer (method, status) and the
    engine (where it was routed, what it used)."""

    method: str
    request_id: str
    started: float = field(default_factory=time.perf_counter)
    # Who called (a tenant of the config and the id of its key), once authenticated.
    caller: Caller | None = None
    # Dollars reserved on the caller's budgets for this call, until its cost settles them.
    budget_hold: router_core.BudgetHold | None = None
    model: str = ""
    model_group: str = ""
    deployment: str = ""
    attempts: int = 0
    # Attempts beyond the first: the same deployment again, the next candidate, one alongside.
    retries: int = 0
    fallbacks: int = 0
    hedges: int = 0
    outcome: str = ""
    ttft_ms: float | None = None
    # The answering attempt's own latency (without retries, fallbacks, waits, or a slow reader).
    attempt_ms: float | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    # The status message of a failed call (what the client was told).
    error: str = ""
    # For traces: the served deployment's model, why it stopped, and the routing decision.
    response_model: str = ""
    finish_reason: str = ""
    policy: str = ""
    strategy: str = ""
    # The call's (latest) routing decision, whose candidates are drawn as the call goes on.
    decision: router_core.Decision | None = None
    # The matched policy's experiment and the variant the call was assigned, if any.
    experiment: str = ""
    variant: str = ""
    # Where the router would copy the request (the policy's shadow, when it sampled this one),
    # and the tokens its leases reserved, for the copies' own.
    shadow: router_core.ShadowCopy | None = None
    estimate: Estimate | None = None

    @property
    def candidates(self) -> list[str]:
        """The deployments the call's decision drew, best first: those it tried or leased."""
        return [] if self.decision is None else [c.deployment for c in self.decision.drawn[0]]

    @property
    def rejected(self) -> list[str]:
        """The deployments its decision rejected on the way, with the filter that did."""
        return [] if self.decision is None else [f"{r.deployment}: {r.filter}" for r in self.decision.drawn[1]]

    @property
    def shown_model(self) -> str:
        """The requested model as logs and traces carry it: the client's text, bounded."""
        return bounded(self.model, MAX_MODEL_CHARS)

    @property
    def tenant(self) -> str:
        """The caller's tenant; empty before authentication, or with auth off."""
        return "" if self.caller is None else self.caller.tenant

    @property
    def key_id(self) -> str:
        return "" if self.caller is None else self.caller.key_id

    def elapsed_s(self) -> float:
        return time.perf_counter() - self.started

    def fields(self, status: str) -> dict[str, Any]:
        line: dict[str, Any] = {
            "request_id": self.request_id,
            "method": self.method,
            "status": status,
            "latency_ms": round(self.elapsed_s() * 1000, 3),
        }
        optional = {
            "tenant": self.tenant,
            "key_id": self.key_id,
            "model": self.shown_model,
            "model_group": self.model_group,
            "deployment": self.deployment,
            "attempts": self.attempts,
            "retries": self.retries,
            "fallbacks": self.fallbacks,
            "hedges": self.hedges,
            "outcome": self.outcome,
            "experiment": self.experiment,
            "variant": self.variant,
            "ttft_ms": None if self.ttft_ms is None else round(self.ttft_ms, 3),
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cost_usd": self.cost_usd,
            "error": bounded(self.error, MAX_ERROR_CHARS),
        }
        line.update({key: value for key, value in optional.items() if value not in ("", None, 0, 0.0)})
        return line


def log_call(call: Call, status: str) -> None:
    """The access-log line: its fields go to a JSON log whole (`extra["access"]`), and read as
    `key=value` in a text log."""
    if not log.isEnabledFor(logging.INFO):
        return
    fields = call.fields(status)

    def text() -> str:
        return " ".join(f"{key}={value}" for key, value in fields.items())

    if not emit_access(fields, text):
        log.info("%s", text(), extra={"access": fields})
