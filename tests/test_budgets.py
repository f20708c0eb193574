"""Budgets in dollars: a tenant's (from the config) and a key's (made with it), reserved at each
call's estimated cost and settled by its actual cost, refusing at the right cent with the period
and when it starts again."""

from __future__ import annotations

import time
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2

from service.api.switchboard.v1 import gateway_pb2 as pb
from tests.conftest import status_details
from tests.keyed import StartKeyed, bearer, refused
from tests.redis_server import RedisServer
from tests.test_e2e import chat_request

# A dollar per token each way, so that costs are whole numbers of dollars.
PRICED = """
model_groups:
  - name: chat
    deployments:
      - {id: priced, type: echo, model: echo, region: eu, context_window: 1000,
         input_price_per_mtok: 1000000, output_price_per_mtok: 1000000}
"""


def with_budget(tmp_path: Path, budget: str) -> str:
    return f"""
server: {{admin_listen: '127.0.0.1:0'}}
auth: {{mode: keys, admin_key_env: SWITCHBOARD_ADMIN_KEY}}
store: {{path: '{tmp_path / "keys.db"}'}}
tenants:
  acme: {{budget: {budget}}}
  beta: {{}}
{PRICED}"""


def limited(max_tokens: int | None = None) -> pb.ChatRequest:
    request = chat_request(model="chat", text="hi")
    if max_tokens is not None:
        request.params.max_tokens = max_tokens
    return request


async def test_a_tenants_daily_budget_refuses_at_the_right_cent(tmp_path: Path, start_keyed: StartKeyed) -> None:
    gateway = await start_keyed(with_budget(tmp_path, "{daily_usd: 40}"))
    key = (await gateway.create_key("acme")).secret
    spent = 0.0
    while True:
        try:
            answer = await gateway.stub.Chat(limited(max_tokens=5), metadata=(("authorization", f"Bearer {key}"),))
        except grpc.aio.AioRpcError as error:
            refusal = error
            break
        assert answer.cost_usd > 0
        spent += answer.cost_usd
        assert spent <= 40 + answer.cost_usd, "admitted only while its estimate fitted"
    assert refusal.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    info, retry = status_details(refusal)
    assert isinstance(info, error_details_pb2.ErrorInfo) and info.reason == "BUDGET_EXCEEDED"
    assert (info.metadata["owner"], info.metadata["period"]) == ("tenant/acme", "daily")
    assert float(info.metadata["left_usd"]) == pytest.approx(max(0.0, 40 - spent), abs=1e-9), "to the cent"
    midnight = time.strftime("%Y-%m-%dT00:00:00Z", time.gmtime(time.time() + 86_400))
    assert info.metadata["resets_at"] == midnight
    assert isinstance(retry, error_details_pb2.RetryInfo) and 0 < retry.retry_delay.seconds <= 86_400
    assert "tenant acme's daily budget of 40.00 USD" in (refusal.details() or "")
    beta = (await gateway.create_key("beta")).secret
    await gateway.chat(beta, model="chat")  # another tenant spends its own


async def test_the_actual_cost_settles_what_the_estimate_reserved(tmp_path: Path, start_keyed: StartKeyed) -> None:
    """Without max_tokens the estimate is the input alone; the answer's output is paid after."""
    gateway = await start_keyed(with_budget(tmp_path, "{total_usd: 1000}"))
    key = (await gateway.create_key("acme")).secret
    answer = await gateway.chat(key, model="chat", text="hi")
    router = gateway.gateway.router
    spent = router.budget_spent("tenant/acme")
    assert spent is not None and spent[2] == pytest.approx(answer.cost_usd), "the reservation became the cost"
    assert answer.usage.output_tokens > 0


async def test_a_keys_own_budget_binds_beside_its_tenants(tmp_path: Path, start_keyed: StartKeyed) -> None:
    gateway = await start_keyed(with_budget(tmp_path, "{monthly_usd: 100000}"))
    small = await gateway.create_key("acme", total_usd=1.5)
    assert small.key.total_usd == 1.5
    error = await refused(gateway.chat(small.secret, model="chat"))
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    (info, *_) = status_details(error)
    assert isinstance(info, error_details_pb2.ErrorInfo)
    assert (info.metadata["owner"], info.metadata["period"]) == (f"key/{small.key.id}", "total")
    assert "resets_at" not in info.metadata, "a total never starts again"
    roomy = (await gateway.create_key("acme")).secret
    await gateway.chat(roomy, model="chat")
    invalid = await refused(gateway.create_key("acme", daily_usd=-1.0))
    assert invalid.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_a_refused_call_gives_its_lease_back(tmp_path: Path, start_keyed: StartKeyed) -> None:
    gateway = await start_keyed(with_budget(tmp_path, "{daily_usd: 0.5}"))
    key = (await gateway.create_key("acme")).secret
    assert (await refused(gateway.chat(key, model="chat"))).code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert {s.in_flight for s in gateway.gateway.router.stats()} == {0}
    spent = gateway.gateway.router.budget_spent("tenant/acme")
    assert spent == (0.0, 0.0, 0.0), "nothing reserved by the refused call"


async def test_a_restart_counts_what_the_ledger_recorded_into_the_budgets(
    tmp_path: Path, start_keyed: StartKeyed
) -> None:
    yaml = with_budget(tmp_path, "{daily_usd: 1000}") + "\nledger: {enabled: true}\n"
    first = await start_keyed(yaml)
    key = await first.create_key("acme", daily_usd=500.0)
    costs = [(await first.chat(key.secret, model="chat")).cost_usd for _ in range(3)]
    await first.gateway.stop(0)
    second = await start_keyed(yaml)
    router = second.gateway.router
    for owner in ("tenant/acme", f"key/{key.key.id}"):
        spent = router.budget_spent(owner)
        assert spent is not None and spent[0] == pytest.approx(sum(costs)), owner


async def test_two_hosts_on_one_redis_spend_one_tenant_budget_to_the_cent(
    redis_server: RedisServer, tmp_path: Path, start_keyed: StartKeyed
) -> None:
    """Two gateways (as two hosts run them) share the store and Redis; calls alternate between
    them until one is refused. Together they admit what the budget holds and not a cent more."""
    yaml = with_budget(tmp_path, "{daily_usd: 40}") + f"\nstate: {{backend: redis, url: '{redis_server.url}'}}\n"
    hosts = [await start_keyed(yaml), await start_keyed(yaml)]
    key = (await hosts[0].create_key("acme")).secret
    await hosts[1].gateway.keys.refresh()  # type: ignore[union-attr]  # else within a second
    spent, calls = 0.0, 0
    while True:
        try:
            answer = await hosts[calls % 2].stub.Chat(limited(max_tokens=5), metadata=bearer(key))
        except grpc.aio.AioRpcError as error:
            refusal = error
            break
        spent += answer.cost_usd
        calls += 1
    assert calls > 2 and spent <= 40, refusal.details()
    info, _ = status_details(refusal)
    assert isinstance(info, error_details_pb2.ErrorInfo) and info.reason == "BUDGET_EXCEEDED"
    assert float(info.metadata["left_usd"]) < float(info.metadata["asked_usd"])
    assert float(info.metadata["left_usd"]) == pytest.approx(40 - spent, abs=1e-9), "to the cent"
