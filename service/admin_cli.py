"""The commands that call a running gateway's Admin API: `stats` (GetStats as JSON), `keys
create | revoke | list`, `spend` and `compare`. The Admin API's credential is read from the environment variable
`--credential-env` names (SWITCHBOARD_ADMIN_KEY by default), and sent when set."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.json_format import MessageToJson
from google.protobuf.message import Message

from service.api.switchboard.admin.v1 import admin_pb2, admin_pb2_grpc
from service.comparison_report import SUFFIXES as REPORT_SUFFIXES
from service.comparison_report import render

DEFAULT_CREDENTIAL_ENV = "SWITCHBOARD_ADMIN_KEY"
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def add_admin_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    stats = commands.add_parser("stats", help="print every deployment's live figures as JSON (the Admin API)")
    _admin_arguments(stats)
    keys = commands.add_parser("keys", help="make, revoke and list API keys (the Admin API)")
    actions = keys.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create", help="make a key for a tenant; its secret is printed only now")
    create.add_argument("--tenant", required=True)
    create.add_argument("--name", default="", help="a label for people")
    create.add_argument("--expires-in", type=_duration, help="e.g. 90d, 12h; default: never")
    for period in ("daily", "monthly", "total"):
        create.add_argument(f"--{period}-usd", type=float, help=f"the key's own {period} budget in USD")
    revoke = actions.add_parser("revoke", help="stop a key from working, on every worker within a second")
    revoke.add_argument("id", help="the key's id (sb-<id>-…)")
    listing = actions.add_parser("list", help="the keys, never their secrets")
    listing.add_argument("--tenant", default="", help="one tenant's (default: all)")
    for action in (create, revoke, listing):
        _admin_arguments(action)
    spend = commands.add_parser("spend", help="the ledger's calls, tokens and cost per day (the Admin API)")
    spend.add_argument("--tenant", default="", help="one tenant's (default: all)")
    spend.add_argument("--key", default="", help="one key's, by id (default: all)")
    spend.add_argument("--since", type=_duration, default=timedelta(days=30), help="e.g. 7d, 12h (default 30d)")
    _admin_arguments(spend)
    compare = commands.add_parser(
        "compare",
        help="compare deployments, or a policy's experiment variants and shadows, on the calls they served,"
        " with 95%% intervals (the Admin API)",
    )
    compare.add_argument("deployments", nargs="*", help="2 to 8 deployment ids; the first is the baseline")
    compare.add_argument("--policy", default="", help="a policy with an experiment or a shadow, instead")
    compare.add_argument("--since", type=_duration, default=timedelta(hours=1), help="e.g. 1h, 7d (default 1h)")
    compare.add_argument("--out", type=Path, help="also write a report with the distributions: .html, .png or .svg")
    _admin_arguments(compare)


def credential_metadata(env: str) -> tuple[tuple[str, str], ...]:
    credential = os.environ.get(env)
    return (("authorization", f"Bearer {credential}"),) if credential else ()


def run_admin_command(options: argparse.Namespace) -> int:
    if options.command == "stats":
        return _call(options, lambda stub, **kw: stub.GetStats(admin_pb2.GetStatsRequest(), **kw))
    if options.command == "spend":
        asked = admin_pb2.GetSpendRequest(tenant=options.tenant, key_id=options.key)
        asked.since.FromDatetime(datetime.now(UTC) - options.since)
        return _call(options, lambda stub, **kw: stub.GetSpend(asked, **kw))
    if options.command == "compare":
        return _compare(options)
    if options.action == "create":
        request = admin_pb2.CreateKeyRequest(tenant=options.tenant, name=options.name)
        for period in ("daily", "monthly", "total"):
            if getattr(options, f"{period}_usd") is not None:
                setattr(request, f"{period}_usd", getattr(options, f"{period}_usd"))
        if options.expires_in is not None:
            request.expires_at.FromDatetime(datetime.now(UTC) + options.expires_in)
        print("switchboard: the key's secret is shown only now; keep it safe", file=sys.stderr)
        return _call(options, lambda stub, **kw: stub.CreateKey(request, **kw))
    if options.action == "revoke":
        return _call(options, lambda stub, **kw: stub.RevokeKey(admin_pb2.RevokeKeyRequest(id=options.id), **kw))
    return _call(options, lambda stub, **kw: stub.ListKeys(admin_pb2.ListKeysRequest(tenant=options.tenant), **kw))


def _admin_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--admin", required=True, help="HOST:PORT of the gateway's server.admin_listen")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the answer (default 5)")
    parser.add_argument(
        "--credential-env",
        default=DEFAULT_CREDENTIAL_ENV,
        help=f"the variable holding the Admin API's credential (default {DEFAULT_CREDENTIAL_ENV})",
    )


def _compare(options: argparse.Namespace) -> int:
    if options.out is not None and options.out.suffix.lower() not in REPORT_SUFFIXES:
        print(f"switchboard: --out: {options.out.name} is none of {', '.join(REPORT_SUFFIXES)}", file=sys.stderr)
        return 2
    asked = admin_pb2.CompareDeploymentsRequest(deployments=options.deployments, policy=options.policy)
    asked.since.FromDatetime(datetime.now(UTC) - options.since)
    answer = _answer(options, lambda stub, **kw: stub.CompareDeployments(asked, **kw))
    if answer is None:
        return 1
    _print(answer)
    if options.out is not None:
        what = f"policy {options.policy}" if options.policy else ", ".join(options.deployments)
        try:
            render(answer, options.out, title=f"Switchboard: {what}", generated_at=datetime.now(UTC))
        except (RuntimeError, OSError) as error:
            print(f"switchboard: --out: {error}", file=sys.stderr)
            return 1
        print(f"switchboard: wrote {options.out}", file=sys.stderr)
    return 0


def _call(options: argparse.Namespace, method: Callable[..., Message]) -> int:
    answer = _answer(options, method)
    if answer is None:
        return 1
    _print(answer)
    return 0


def _answer(options: argparse.Namespace, method: Callable[..., Message]) -> Any:
    """The Admin API's answer; None, said on stderr, when it fails."""
    with grpc.insecure_channel(options.admin) as channel:
        try:
            return method(
                admin_pb2_grpc.AdminStub(channel),
                timeout=options.timeout,
                metadata=credential_metadata(options.credential_env),
            )
        except grpc.RpcError as error:
            print(f"switchboard: {options.admin}: {error.code().name}: {error.details()}", file=sys.stderr)
            return None


def _print(answer: Message) -> None:
    print(MessageToJson(answer, preserving_proto_field_name=True, always_print_fields_with_no_presence=True))


def _duration(text: str) -> timedelta:
    number, unit = text[:-1], text[-1:]
    if unit not in _UNITS or not number.replace(".", "", 1).isdigit():
        raise argparse.ArgumentTypeError(f"{text!r}: a number and a unit (s, m, h or d), e.g. 90d")
    return timedelta(seconds=float(number) * _UNITS[unit])
