"""Gateway errors and the one table that turns them into gRPC statuses.

Servicer methods raise these; the `grpc_errors` decorator is the only place
that converts them into a status with google.rpc details.
"""

from __future__ import annotations

import asyncio
import functools
import math
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, ClassVar, Protocol, TypeVar

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2

import router_core
from service import responses
from service.access import REQUEST_ID, Call, log_call, request_id
from service.api.switchboard.v1 import gateway_pb2 as pb
from service.outcomes import AttemptRecord
from service.redaction import bounded, redact

if TYPE_CHECKING:
    from service.ledger import Ledger

ERROR_DOMAIN = "switchboard.v1"


class GatewayError(Exception):
    """An error the client should see as a specific gRPC status, with a google.rpc.ErrorInfo of
    `reason` (a value of the contract's ErrorReason, without its prefix) in its details."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL
    reason: ClassVar[str] = ""

    def details(self) -> Sequence[Message]:
        return [self.error_info()] if self.reason else []

    def error_info(self, metadata: Mapping[str, str] | None = None) -> error_details_pb2.ErrorInfo:
        return error_details_pb2.ErrorInfo(reason=self.reason, domain=ERROR_DOMAIN, metadata=metadata)


# What one error may carry of what a client sent or an upstream said: a status's message and
# details travel in trailers (gRPC's default limit is 8 KiB) and into a log line.
MAX_VIOLATIONS = 20
MAX_FIELD_CHARS = 120
MAX_REASON_CHARS = 300


class InvalidRequest(GatewayError):
    """The request is malformed; each violation names the offending field. The first
    MAX_VIOLATIONS are kept, each bounded, then a count of the rest."""

    code = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(self, violations: Sequence[tuple[str, str]]) -> None:
        kept = [
            (bounded(field, MAX_FIELD_CHARS), bounded(why, MAX_REASON_CHARS))
            for field, why in violations[:MAX_VIOLATIONS]
        ]
        if len(violations) > MAX_VIOLATIONS:
            kept.append(("request", f"and {len(violations) - MAX_VIOLATIONS} more problems"))
        self.violations = kept
        super().__init__("; ".join(f"{field}: {why}" for field, why in self.violations))

    def details(self) -> Sequence[Message]:
        return [
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(field=field, description=why)
                    for field, why in self.violations
                ]
            )
        ]


class NotEnabled(GatewayError):
    """The call needs what this gateway's config leaves off."""

    code = grpc.StatusCode.FAILED_PRECONDITION
    reason = "NOT_ENABLED"


class NoEligibleDeployment(GatewayError):
    """Routing filters removed every deployment of the model group."""

    code = grpc.StatusCode.FAILED_PRECONDITION
    reason = "NO_ELIGIBLE_DEPLOYMENT"

    def __init__(self, model_group: str, rejections: Sequence[tuple[str, str, str]]) -> None:
        self.model_group = model_group
        self.rejections = list(rejections)
        self.attempts: list[AttemptRecord] = []
        reasons = "; ".join(f"{dep} ({flt}: {detail})" for dep, flt, detail in self.rejections)
        super().__init__(f"no deployment of model group {model_group!r} can serve this request: {reasons}")

    def details(self) -> Sequence[Message]:
        metadata = {"model_group": self.model_group}
        metadata.update({f"rejected.{dep}": f"{flt}: {detail}" for dep, flt, detail in self.rejections})
        info = self.error_info(metadata)
        # Attempts made before routing found nothing left (rounds of waiting for capacity).
        return [info, responses.attempt_log(self.attempts)] if self.attempts else [info]


class NoHealthyDeployment(NoEligibleDeployment):
    """Every deployment that could serve the request is out of rotation for now (open circuit,
    ejected as an outlier), with no time known when one returns."""

    code = grpc.StatusCode.UNAVAILABLE
    reason = "NO_HEALTHY_DEPLOYMENT"


class BudgetExhausted(NoEligibleDeployment):
    """Every candidate is out of rate-limit budget (its own, the tenant's or the key's) for now."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    reason = "RATE_LIMITED"

    def __init__(self, model_group: str, rejections: Sequence[tuple[str, str, str]], retry_after_s: float) -> None:
        super().__init__(model_group, rejections)
        self.retry_after_s = retry_after_s

    def details(self) -> Sequence[Message]:
        info, *log = super().details()
        return [info, retry_info(self.retry_after_s), *log]


def retry_info(seconds: float) -> error_details_pb2.RetryInfo:
    delay = duration_pb2.Duration()
    delay.FromMilliseconds(math.ceil(seconds * 1000))
    return error_details_pb2.RetryInfo(retry_delay=delay)


class TooManyCalls(GatewayError):
    """One client holds as many calls as it may at once (server.clients.max_calls_per_peer)."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED

    def __init__(self, limit: int) -> None:
        super().__init__(f"this client already has {limit} calls in progress, the most it may have at once")

    reason = "TOO_MANY_CALLS"


class ClientNotReading(GatewayError):
    """A stream's client took no message for the write timeout; the call ends, its upstream
    request is closed and its lease given back."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    reason = "CLIENT_NOT_READING"

    def __init__(self, timeout_s: float) -> None:
        super().__init__(f"the client read nothing for {timeout_s:g}s; the stream was ended")


# The status a failed request gets from the class of its last upstream failure (UNAVAILABLE
# for the rest). An upstream timeout is UNAVAILABLE, not DEADLINE_EXCEEDED: that code is kept
# for the client's own deadline, so a client can tell its deadline from the gateway's limits.
_STATUS_OF_OUTCOME = {
    pb.OUTCOME_RATE_LIMITED: grpc.StatusCode.RESOURCE_EXHAUSTED,
    pb.OUTCOME_BAD_REQUEST: grpc.StatusCode.INVALID_ARGUMENT,
    pb.OUTCOME_CONTEXT_WINDOW_EXCEEDED: grpc.StatusCode.INVALID_ARGUMENT,
    pb.OUTCOME_CONTENT_FILTERED: grpc.StatusCode.FAILED_PRECONDITION,
}


class UpstreamFailed(GatewayError):
    """Every attempted deployment failed (or the deadline left no time for more)."""

    reason = "UPSTREAM_FAILED"

    def __init__(
        self,
        attempts: Sequence[AttemptRecord],
        *,
        retry_after_s: float | None = None,
        why: str = "",
        deadline_exceeded: bool = False,
        outcome: pb.Outcome | None = None,
    ) -> None:
        """`outcome` decides the status; by default the last attempt's that was not cancelled."""
        self.attempts = list(attempts)
        self.retry_after_s = retry_after_s
        self.deadline_exceeded = deadline_exceeded
        if outcome is None:
            ended = [a.outcome for a in self.attempts if a.outcome != pb.OUTCOME_CANCELLED]
            outcome = ended[-1] if ended else pb.OUTCOME_UNSPECIFIED
        if deadline_exceeded:
            self.code = grpc.StatusCode.DEADLINE_EXCEEDED
        else:
            self.code = _STATUS_OF_OUTCOME.get(outcome, grpc.StatusCode.UNAVAILABLE)
        tried = "; ".join(f"{a.deployment}: {a.error}" for a in self.attempts) or "no deployment tried"
        super().__init__(f"{why or 'all deployments failed'} ({tried})")

    def details(self) -> Sequence[Message]:
        metadata = {f"attempt.{i}": f"{a.deployment} {pb.Outcome.Name(a.outcome)}" for i, a in enumerate(self.attempts)}
        details: list[Message] = [
            self.error_info(metadata),
            responses.attempt_log(self.attempts),
        ]
        if self.retry_after_s is not None:
            details.append(retry_info(self.retry_after_s))
        return details


class StreamInterrupted(GatewayError):
    """A stream failed after content had been sent, so it cannot fall back."""

    code = grpc.StatusCode.UNAVAILABLE
    reason = "STREAM_INTERRUPTED"

    def __init__(
        self, deployment: str, deltas_sent: int, cause: BaseException, attempts: Sequence[AttemptRecord] = ()
    ) -> None:
        self.deployment = deployment
        self.deltas_sent = deltas_sent
        self.attempts = list(attempts)
        super().__init__(f"stream from {deployment} failed after {deltas_sent} content deltas: {cause}")

    def details(self) -> Sequence[Message]:
        metadata = {"deployment": self.deployment, "deltas_sent": str(self.deltas_sent)}
        return [
            self.error_info(metadata),
            responses.attempt_log(self.attempts),
        ]


def _rich_status(error: GatewayError) -> tuple[grpc.StatusCode, str, tuple[tuple[str, bytes], ...]]:
    # Upstream text is redacted where it enters (UpstreamError); this is the last look before
    # anything leaves the process.
    message = redact(str(error))
    status = status_pb2.Status(code=error.code.value[0], message=message)
    for detail in error.details():
        packed = any_pb2.Any()
        packed.Pack(detail)
        status.details.append(packed)
    return error.code, message, (("grpc-status-details-bin", status.SerializeToString()),)


async def _abort(context: grpc.aio.ServicerContext, error: GatewayError, call: Call) -> None:
    code, message, trailers = _rich_status(error)
    call.error = message
    await context.abort(code, message, trailing_metadata=(*trailers, (REQUEST_ID, call.request_id)))


Request = TypeVar("Request")
Response = TypeVar("Response")


class Measured(Protocol):
    """A servicer whose calls its router counts (see `Router.record_call`) and, when there is
    one, the ledger records."""

    router: router_core.Router
    ledger: Ledger | None


Servicer = TypeVar("Servicer", bound=Measured)
ServicerMethod = Callable[[Servicer, Request, grpc.aio.ServicerContext], Awaitable[Response]]
CallMethod = Callable[[Servicer, Request, grpc.aio.ServicerContext, Call], Awaitable[Response]]


def call_errors(method: CallMethod[Servicer, Request, Response]) -> ServicerMethod[Servicer, Request, Response]:
    """A servicer method as gRPC calls it: named by a request id (the client's, or a new one)
    that goes back in the trailing metadata, its GatewayErrors turned into rich statuses (a
    unary one, or a streaming one that writes its responses rather than yielding them), and one
    access-log line and one count by the router when it ends, however it ends. The method gets
    the `Call` to fill in."""

    @functools.wraps(method)
    async def wrapper(self: Servicer, request: Request, context: grpc.aio.ServicerContext) -> Response:
        call = Call(method.__name__, request_id(context))
        context.set_trailing_metadata(((REQUEST_ID, call.request_id),))
        status = grpc.StatusCode.UNKNOWN  # an exception no handler expected
        try:
            response = await method(self, request, context, call)
            status = grpc.StatusCode.OK
            return response
        except GatewayError as error:
            status = error.code
            await _abort(context, error, call)
            raise AssertionError("context.abort returned") from error
        except asyncio.CancelledError:
            status = grpc.StatusCode.CANCELLED
            raise
        finally:
            log_call(call, status.name)
            if self.ledger is not None:
                self.ledger.record(call, status.name)
            if call.method in router_core.CALL_METHODS:  # the rest (Feedback) are not routed calls
                self.router.record_call(
                    call.model_group,
                    call.method,
                    status.value[0],
                    call.elapsed_s(),
                    retries=call.retries,
                    fallbacks=call.fallbacks,
                    hedges=call.hedges,
                )

    return wrapper
