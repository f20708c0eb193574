"""The `switchboard` command."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from service import __version__
from service.config import ConfigError, load_config
from service.config.report import compiled_report
from service.logs import LogSettings, configure_logging, resolved
from service.server import run_gateway
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
        "--workers",
        type=int,
        default=1,
        help="gateway processes sharing the port (SO_REUSEPORT) and their rate-limit budgets (default 1)",
    )
    check = commands.add_parser("check-config", help="validate a config file and print what it compiles to")
    check.add_argument("config", type=Path)
    options = parser.parse_args(argv)

    log_settings = LogSettings(getattr(options, "log_level", "INFO"), resolved(getattr(options, "log_format", "auto")))
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
    if options.workers > 1 and config.telemetry.metrics_listen:
        # Each worker would count its own calls on one port: a scrape would see one at random.
        print("switchboard: telemetry.metrics_listen does not work with --workers yet", file=sys.stderr)
        return 2
    try:
        if options.workers > 1:
            return run_workers(config, listen, options.workers, log_settings, config_path=options.config)
        run_gateway(config, listen, config_path=options.config)
    except OSError as error:
        print(f"switchboard: {error}", file=sys.stderr)
        return 1
    return 0
