"""How a caller is refused: no valid credential (UNAUTHENTICATED), a tenant asking for what it
may not use (PERMISSION_DENIED, naming what was refused), or an address that failed too often
(RESOURCE_EXHAUSTED, with when to try again)."""

from __future__ import annotations

from collections.abc import Sequence

import grpc
from google.protobuf.message import Message
from google.rpc import error_details_pb2

from service.errors import ERROR_DOMAIN, GatewayError, retry_info


class Unauthenticated(GatewayError):
    code = grpc.StatusCode.UNAUTHENTICATED

    def details(self) -> Sequence[Message]:
        return [error_details_pb2.ErrorInfo(reason="UNAUTHENTICATED", domain=ERROR_DOMAIN)]


class PermissionDenied(GatewayError):
    code = grpc.StatusCode.PERMISSION_DENIED

    def details(self) -> Sequence[Message]:
        return [error_details_pb2.ErrorInfo(reason="PERMISSION_DENIED", domain=ERROR_DOMAIN)]


class TooManyFailures(GatewayError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED

    def __init__(self, wait_s: float) -> None:
        self.wait_s = wait_s
        super().__init__(f"too many failed authentications from this address; try again in {wait_s:.0f}s")

    def details(self) -> Sequence[Message]:
        info = error_details_pb2.ErrorInfo(reason="TOO_MANY_AUTH_FAILURES", domain=ERROR_DOMAIN)
        return [info, retry_info(self.wait_s)]
