"""A gateway whose callers present API keys, for the tests of identity, budgets and the store:
its data plane and Admin API, a key made through the latter, and the credentials it runs with."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import grpc
import pytest

from service.api.switchboard.admin.v1 import admin_pb2, admin_pb2_grpc
from service.api.switchboard.v1 import gateway_pb2 as pb
from service.api.switchboard.v1 import gateway_pb2_grpc as pb_grpc
from service.server import Gateway
from tests.test_e2e import chat_request

SECRET = "s" * 40
ADMIN_KEY = "admin-credential-0123456789abcdef"
ENVIRON = {"SWITCHBOARD_AUTH_SECRET": SECRET, "SWITCHBOARD_ADMIN_KEY": ADMIN_KEY}


@dataclass
class Keyed:
    gateway: Gateway
    data: grpc.aio.Channel
    admin_channel: grpc.aio.Channel

    @property
    def stub(self) -> pb_grpc.GatewayStub:
        return pb_grpc.GatewayStub(self.data)

    @property
    def admin(self) -> admin_pb2_grpc.AdminStub:
        return admin_pb2_grpc.AdminStub(self.admin_channel)

    async def create_key(self, tenant: str, **fields: object) -> admin_pb2.CreateKeyResponse:
        request = admin_pb2.CreateKeyRequest(tenant=tenant, **fields)  # type: ignore[arg-type]
        response: admin_pb2.CreateKeyResponse = await self.admin.CreateKey(request, metadata=bearer(ADMIN_KEY))
        return response

    async def chat(self, key: str | None, **request: object) -> pb.ChatResponse:
        metadata = bearer(key) if key else ()
        response: pb.ChatResponse = await self.stub.Chat(chat_request(**request), metadata=metadata)  # type: ignore[arg-type]
        return response


def bearer(key: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {key}"),)


StartKeyed = Callable[[str], Awaitable[Keyed]]


async def refused(call: object) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call  # type: ignore[misc]
    return raised.value
