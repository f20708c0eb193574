"""The `switchboard` command."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from service import __version__
from service.admin_cli import DEFAULT_CREDENTIAL_ENV, add_admin_commands, credential_metadata, run_admin_command
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
    add_admin_commands(commands)
    top = commands.add_parser("top", help="a live table of every deployment's figures (the Admin API)")
    top.add_argument("--admin", required=True, help="HOST:PORT of the gateway's server.admin_listen")
    top.add_argument("--interval", type=float, default=1.0, help="seconds between refreshes (default 1)")
    top.add_argument("--sort", default="requests", help="the column to sort by first (default requests)")
    top.add_argument("--credential-env", default=DEFAULT_CREDENTIAL_ENV, help="as for stats")
    options = parser.parse_args(argv)
    if options.command in ("stats", "keys", "spend", "compare"):
        return run_admin_command(options)
    if options.command == "top":
        try:
            metadata = credential_metadata(options.credential_env)
            return run_top(options.admin, max(0.1, options.interval), options.sort, metadata)
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
        if config.server.admin_listen is not None:
            warn_if_exposed(config.server.admin_listen, None, what="the Admin API")
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
