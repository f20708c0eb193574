"""Where each deployment's secret comes from. An API key is read from the environment variable
the config names. AWS credentials are read from the variables the deployment names when they
are set, else found by botocore's own chain — a named profile, SSO, an assumed role, web
identity, a credential process, and the instance or container role only when the deployment
opts in — and refreshed by botocore before they expire, so temporary STS credentials do not
take a deployment out."""

from __future__ import annotations

from collections.abc import Mapping

from botocore.credentials import Credentials  # type: ignore[import-untyped]
from botocore.exceptions import BotoCoreError  # type: ignore[import-untyped]

from service.config.schema import AnyProvider, BedrockDeployment

# botocore's providers that ask the network for the machine's own role: opt-in.
_INSTANCE_ROLES = ("container-role", "iam-role")


def api_key(settings: AnyProvider, environ: Mapping[str, str]) -> str | None:
    name = getattr(settings, "api_key_env", None)
    return environ.get(name) if name else None


def aws_credentials(settings: BedrockDeployment, environ: Mapping[str, str]) -> Credentials | None:
    """Static credentials from the variables `settings` names, when both are set; else what
    botocore's chain finds (refreshable when temporary), or None."""
    access_key, secret_key = environ.get(settings.access_key_env), environ.get(settings.secret_key_env)
    if access_key and secret_key:
        return Credentials(access_key, secret_key, environ.get(settings.session_token_env) or None)
    # Imported here: botocore's session brings its whole client machinery into every worker's
    # memory, and only a Bedrock deployment without static keys needs it.
    import botocore.session  # type: ignore[import-untyped]

    try:
        session = botocore.session.Session(profile=settings.aws_profile)
        resolver = session.get_component("credential_provider")
        # The variables were looked up above, by the names the deployment gives.
        resolver.remove("env")
        if not settings.instance_metadata:
            for name in _INSTANCE_ROLES:
                resolver.remove(name)
        return session.get_credentials()
    except BotoCoreError:  # a profile that does not exist, a broken config file
        return None


def missing_credentials(settings: AnyProvider, environ: Mapping[str, str]) -> str | None:
    """What to set for the deployment to have its credentials, or None when it has them."""
    if isinstance(settings, BedrockDeployment):
        if aws_credentials(settings, environ) is not None:
            return None
        chain = f"profile {settings.aws_profile!r}" if settings.aws_profile else "a profile, SSO or web identity"
        return f"AWS credentials ({settings.access_key_env} and {settings.secret_key_env}, or {chain})"
    name = getattr(settings, "api_key_env", None)
    if name and not environ.get(name):
        return f"environment variable {name}"
    return None


def malformed_credentials(settings: AnyProvider, environ: Mapping[str, str]) -> str | None:
    """The variable whose value cannot go into a header (a line break or NUL: an editor's
    trailing newline, a pasted key), or None."""
    for name in _secret_variables(settings):
        value = environ.get(name)
        if value is not None and any(c in value for c in "\r\n\x00"):
            return name
    return None


def secret_for(settings: AnyProvider, environ: Mapping[str, str]) -> tuple[str | None, ...]:
    """What a provider for `settings` is built with from the environment: one built from equal
    settings and an equal secret is the same provider. (Credentials from botocore's chain are
    the provider's to refresh, so only the variables count.)"""
    return tuple(environ.get(name) for name in _secret_variables(settings))


def _secret_variables(settings: AnyProvider) -> tuple[str, ...]:
    """The environment variables holding the deployment's secrets."""
    if isinstance(settings, BedrockDeployment):
        return (settings.access_key_env, settings.secret_key_env, settings.session_token_env)
    name = getattr(settings, "api_key_env", None)
    return (name,) if name else ()
