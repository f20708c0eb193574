"""A config against the environment: each deployment's credentials must be set, or the
deployment is left out of routing when it says it may be (`skip_without_key`)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from importlib import resources
from pathlib import Path

import router_core
from service.config.credentials import malformed_credentials, missing_credentials
from service.config.document import parse_config
from service.config.model import Config, ConfigError

EMBEDDED_DEFAULT = "default_config.yaml"


def load_config(path: Path | None = None, environ: Mapping[str, str] = os.environ) -> Config:
    """Read, validate and resolve a config file, or the embedded default when `path` is None."""
    if path is None:
        source = "<embedded default>"
        text = resources.files("service").joinpath(EMBEDDED_DEFAULT).read_text()
    else:
        source = str(path)
        try:
            text = path.read_text()
        except OSError as error:
            raise ConfigError(f"cannot read config {source}: {error.strerror}") from error
    return resolve_environment(parse_config(text, source), environ)


def resolve_environment(config: Config, environ: Mapping[str, str]) -> Config:
    """Checks that every deployment's credentials are set, leaving out those that may be skipped
    (and, in the core, whatever named only them)."""
    left_out = []
    for deployment in config.deployments():
        malformed = malformed_credentials(deployment.provider, environ)
        if malformed is not None:
            raise ConfigError(
                f"deployment {deployment.id!r}: environment variable {malformed} holds a line break or NUL, "
                "which no HTTP header can carry"
            )
        missing = missing_credentials(deployment.provider, environ)
        if missing is None:
            continue
        if not getattr(deployment.provider, "skip_without_key", False):
            raise ConfigError(
                f"deployment {deployment.id!r}: {missing} is not set "
                "(set it, or mark the deployment skip_without_key: true)"
            )
        left_out.append(deployment.id)
    if len(left_out) == len(config.deployments()):
        raise ConfigError("no deployment is usable: every one is missing its API key")
    if not left_out:
        return config  # already described by the core as it is
    try:
        return config.leaving_out(tuple(left_out))
    except router_core.ConfigError as error:
        missing = ", ".join(left_out)
        raise ConfigError(f"{error}, once those missing their credentials ({missing}) are left out") from None
