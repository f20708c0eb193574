"""Switchboard's routing core (Rust). Build a Router once from JSON config, then
route requests and record their outcomes from any thread."""

from collections.abc import Mapping, Sequence
from typing import Self, final

__all__ = [
    "Candidate",
    "ConfigError",
    "Decision",
    "DeploymentStats",
    "Rejection",
    "Router",
    "RouterError",
    "UnknownDeploymentError",
    "UnknownModelGroupError",
]

@final
class Router:
    def __new__(cls, config_json: str) -> Router:
        """Parse and compile a config; raises ConfigError naming the offending key."""
    def route(
        self,
        model: str,
        *,
        input_tokens: int = 0,
        max_output_tokens: int = 0,
        capabilities: Sequence[str] = (),
        regions: Sequence[str] = (),
        tenant: str = "",
        api_key: str = "",
        task: str = "",
        tags: Sequence[str] = (),
        metadata: Mapping[str, str] | None = None,
        max_cost_usd: float | None = None,
        latency_target_ms: float | None = None,
        affinity_key: str = "",
        seed: int | None = None,
        dry_run: bool = False,
    ) -> Decision:
        """Order the deployments for one request.

        The first policy whose condition matches decides; with none matching,
        ``model`` names the group (or "auto", the default group) and its own
        strategy orders it. ``max_output_tokens`` 0 means unknown. Unknown
        capability or region names match no deployment; an empty ``regions``
        allows any. ``max_cost_usd`` removes deployments whose estimated cost
        for this request is higher. The same ``affinity_key`` keeps the same
        deployment first while it qualifies. A ``seed`` makes the order
        deterministic; ``dry_run`` explains without side effects. Raises
        UnknownModelGroupError when no policy matches and the group is unknown.
        """
    def record(
        self,
        deployment: str,
        *,
        success: bool,
        latency_ms: float,
        input_tokens: int = 0,
        output_tokens: int = 0,
    ) -> None:
        """Count one attempt's outcome. Raises UnknownDeploymentError, and
        ValueError for a negative or non-finite latency."""
    def stats(self) -> list[DeploymentStats]:
        """One snapshot per deployment of the current config, in config order."""
    def reload(self, config_json: str) -> None:
        """Swap in a new config atomically, keeping the stats of deployment ids that
        still exist. On ConfigError the current config stays in place."""
    def model_groups(self) -> dict[str, list[str]]:
        """Group name -> deployment ids (priority groups list them by priority)."""
    @property
    def default_group(self) -> str | None: ...

@final
class Decision:
    @property
    def model_group(self) -> str: ...
    @property
    def policy(self) -> str | None:
        """The policy that decided; None when the model group's own strategy did."""
    @property
    def strategy(self) -> str:
        """weighted, priority, round_robin, least_in_flight, lowest_cost,
        lowest_latency, usage_headroom or balanced."""
    @property
    def candidates(self) -> tuple[Candidate, ...]:
        """Deployments to try, best first; empty when all were rejected."""
    @property
    def rejected(self) -> tuple[Rejection, ...]: ...

@final
class Candidate:
    @property
    def deployment(self) -> str: ...
    @property
    def score(self) -> float:
        """In [0, 1], higher is better. weighted: the random key u**(1/weight);
        priority: 1 / (1 + priority)."""

@final
class Rejection:
    @property
    def deployment(self) -> str: ...
    @property
    def filter(self) -> str:
        """The filter that failed: "context_window", "capabilities", "region" or "cost"."""
    @property
    def detail(self) -> str: ...

@final
class DeploymentStats:
    @property
    def deployment(self) -> str: ...
    @property
    def requests(self) -> int: ...
    @property
    def failures(self) -> int: ...
    @property
    def consecutive_failures(self) -> int: ...
    @property
    def ewma_latency_ms(self) -> float | None:
        """Exponentially weighted (alpha 0.2); None before the first outcome."""
    @property
    def input_tokens(self) -> int: ...
    @property
    def output_tokens(self) -> int: ...

class RouterError(Exception):
    """Base class of every error raised by the router."""

    def __new__(cls, *args: object) -> Self: ...

class ConfigError(RouterError, ValueError):
    """The config JSON is malformed or invalid; the message names the key."""

@final
class UnknownModelGroupError(RouterError):
    def __new__(cls, name: str, known: Sequence[str]) -> Self: ...
    @property
    def name(self) -> str: ...
    @property
    def known(self) -> list[str]:
        """The configured group names, sorted."""

@final
class UnknownDeploymentError(RouterError):
    def __new__(cls, deployment: str) -> Self: ...
    @property
    def deployment(self) -> str: ...
