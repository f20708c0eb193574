"""What knowing the caller costs a gateway worker: CPU per unary Chat with API keys checked,
the ledger written, a budget kept, or several, against none, in turns.

    .venv/bin/python -m benches.tenancy            # 10 000 chats per run, 5 runs each
    .venv/bin/python -m benches.tenancy --quick    # 300 chats, 1 run each (CI)

One worker pinned to CPU 0 serves benches/loadgen's unary Chats (concurrency 16, each with the
`authorization` header when keys are on) to benches/mockupstream on CPU 1.

- keys: auth.mode keys with one tenant, the key made through the Admin API;
- ledger: every call recorded in the SQLite store (batches of 1 s);
- budget: the tenant has a daily budget, reserved and settled per call.

The worker's CPU time (user + system, from /proc) is read around each run.
Results: benches/results/tenancy.json (tenancy-quick.json with --quick).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

import grpc

from benches.chat import gateway_config, request_bodies
from benches.harness import free_port, gateway, mock_upstream, report_cpu_per_chat
from benches.telemetry import cpu_per_chat_ms
from service.api.switchboard.admin.v1 import admin_pb2, admin_pb2_grpc

ADMIN_KEY = "bench-admin-credential-0123456789"


def modes(folder: Path, admin_port: int) -> dict[str, str]:
    store = f"store: {{path: '{folder / 'store.db'}'}}\n"
    keys = (
        f"server: {{admin_listen: '127.0.0.1:{admin_port}'}}\n"
        "auth: {mode: keys, admin_key_env: SWITCHBOARD_ADMIN_KEY}\ntenants: {bench: {}}\n"
    )
    ledger = "ledger: {enabled: true}\n"
    budgeted = keys.replace("tenants: {bench: {}}", "tenants: {bench: {budget: {daily_usd: 1000000}}}")
    return {
        "off": "",
        "keys": keys + store,
        "ledger": ledger + store,
        "keys+ledger": keys + ledger + store,
        "keys+ledger+budget": budgeted + ledger + store,
    }


def new_key(admin_port: int) -> str:
    with grpc.insecure_channel(f"127.0.0.1:{admin_port}") as channel:
        made = admin_pb2_grpc.AdminStub(channel).CreateKey(
            admin_pb2.CreateKeyRequest(tenant="bench"), metadata=(("authorization", f"Bearer {ADMIN_KEY}"),)
        )
    return str(made.secret)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="300 chats, one run each (smoke test)")
    options = parser.parse_args()
    total, runs = (300, 1) if options.quick else (10_000, 5)
    os.environ.update({"SWITCHBOARD_AUTH_SECRET": "b" * 40, "SWITCHBOARD_ADMIN_KEY": ADMIN_KEY})
    upstream_port, admin_port = free_port(), free_port()
    with (
        tempfile.TemporaryDirectory() as folder,
        request_bodies() as bodies,
        mock_upstream(upstream_port),
    ):
        configs = modes(Path(folder), admin_port)
        costs: dict[str, list[float]] = {mode: [] for mode in configs}
        for _ in range(runs):
            for mode, extra in configs.items():
                port = free_port()
                with gateway(extra + gateway_config(upstream_port), port) as worker:
                    headers = [f"authorization: Bearer {new_key(admin_port)}"] if "keys" in mode else []
                    cpu_per_chat_ms(worker, port, bodies["grpc"], min(total, 500), headers)  # warm up
                    costs[mode].append(cpu_per_chat_ms(worker, port, bodies["grpc"], total, headers))
            print(json.dumps({k: round(v[-1], 4) for k, v in costs.items()}), flush=True)
    report_cpu_per_chat(costs, total, "tenancy-quick.json" if options.quick else "tenancy.json")


if __name__ == "__main__":
    main()
