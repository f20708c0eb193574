"""The `switchboard` command."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import grpc
from google.protobuf.json_format import MessageToJson

from service import __version__
from service.api.switchboard.admin.v1 import admin_pb2, admin_pb2_grpc
from service.config import ConfigError, load_config
from service.config.report import compiled_report
from service.logs import LogSettings, configure_logging, resolved
from service.server import run_gateway
from service.tls import TlsFiles, warn_if_exposed
from service.top import run_top
from service.workers import run_workers


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="switchboard", description="LLM routing gateway (gRPC).")
    parser.add_argument("--version", action="version", version=f"switchboard {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("serve", help="run the gateway")
    run.add_argument("--config", type=Path, help="YAML config file (default: the embedded default config)")
    run.add_argument("--listen", help="HOST:PORT to listen on (default: the config's server.listen, 127.0.0.1:50051)")
    run.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    run.add_argument(
        "--log-format",
        default="auto",
        choices=["auto", "json", "text"],
        help="one JSON object per line, or text; auto (default): text on a terminal, JSON otherwise",
    )
    run.add_argument(
        "--access-log",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="one line per call (logger switchboard.access), whatever --log-level is (default: on)",
    )
    run.add_argument(
        "--workers",
        type=int,
        default=1,
        help="gateway processes sharing the port (SO_REUSEPORT) and their rate-limit budgets (default 1)",
    )
    check = commands.add_parser("check-config", help="validate a config file and print what it compiles to")
    check.add_argument("config", type=Path)
    stats = commands.add_parser("stats", help="print every deployment's live figures as JSON (the Admin API)")
    stats.add_argument("--admin", required=True, help="HOST:PORT of the gateway's server.admin_listen")
    stats.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the answer (default 5)")
    top = commands.add_parser("top", help="a live table of every deployment's figures (the Admin API)")
    top.add_argument("--admin", required=True, help="HOST:PORT of the gateway's server.admin_listen")
    top.add_argument("--interval", type=float, default=1.0, help="seconds between refreshes (default 1)")
    top.add_argument("--sort", default="requests", help="the column to sort by first (default requests)")
    options = parser.parse_args(argv)
    if options.command == "stats":
        return print_stats(options.admin, options.timeout)
    if options.command == "top":
        try:
            return run_top(options.admin, max(0.1, options.interval), options.sort)
        except KeyboardInterrupt:
            return 0

    log_settings = LogSettings(
        getattr(options, "log_level", "INFO"),
        resolved(getattr(options, "log_format", "auto")),
        getattr(options, "access_log", True),
    )
    configure_logging(log_settings)
    try:
        config = load_config(options.config)
    except ConfigError as error:
        print(f"switchboard: {error}", file=sys.stderr)
        return 2
    if options.command == "check-config":
        print(compiled_report(config))
        return 0
    listen = options.listen or config.server.listen
    if options.workers < 1:
        parser.error("--workers must be at least 1")
    try:
        if config.server.tls is not None:  # refused here once, not by each worker
            TlsFiles.read(config.server.tls, None if options.config is None else options.config.parent)
        warn_if_exposed(listen, config.server.tls)
        if options.workers > 1:
            return run_workers(config, listen, options.workers, log_settings, config_path=options.config)
        run_gateway(config, listen, config_path=options.config)
    except ConfigError as error:  # what only serving reads: the TLS files
        print(f"switchboard: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        print(f"switchboard: {error}", file=sys.stderr)
        return 1
    return 0


def print_stats(admin: str, timeout_s: float) -> int:
    with grpc.insecure_channel(admin) as channel:
        try:
            stats = admin_pb2_grpc.AdminStub(channel).GetStats(admin_pb2.GetStatsRequest(), timeout=timeout_s)
        except grpc.RpcError as error:
            print(f"switchboard: {admin}: {error.code().name}: {error.details()}", file=sys.stderr)
            return 1
    print(MessageToJson(stats, preserving_proto_field_name=True, always_print_fields_with_no_presence=True))
    return 0
