"""Switchboard's routing core (Rust). Build a Router once from JSON config, then
route requests and record their outcomes from any thread."""

import os
from collections.abc import Mapping, Sequence
from typing import Literal, Self, SupportsIndex, final, overload

_HealthNewsKind = Literal["circuit_open", "circuit_closed", "cooling_down"]

__all__ = [
    "CALL_METHODS",
    "DEPLOYMENT_KEYS",
    "DURATION_BOUNDS_S",
    "TOKEN_BOUNDS",
    "BudgetHold",
    "BudgetRefusal",
    "CallMeasures",
    "Candidate",
    "Candidates",
    "CandidatesIterator",
    "ConfigError",
    "Decision",
    "DeploymentMeasures",
    "DeploymentStats",
    "DeploymentUnavailableError",
    "Distribution",
    "Hedge",
    "Lease",
    "PooledBudget",
    "Rejection",
    "Router",
    "RouterError",
    "ShadowCopy",
    "UnknownDeploymentError",
    "UnknownModelGroupError",
    "describe_config",
    "estimate_tokens",
]

DEPLOYMENT_KEYS: tuple[str, ...]
"""The keys of a deployment that routing reads; a front end whose deployments carry more (how
to reach the provider) hands these to the router and keeps the rest."""

CALL_METHODS: tuple[str, ...]
"""The service's methods whose calls ``Router.record_call`` counts."""

DURATION_BOUNDS_S: tuple[float, ...]
"""The OpenTelemetry GenAI conventions' advisory bounds for durations, in seconds."""

TOKEN_BOUNDS: tuple[float, ...]
"""The conventions' advisory bounds for token counts (powers of 4)."""

def describe_config(config_json: str, *, without: Sequence[str] = ()) -> str:
    """What a config compiles to, as JSON text: ``config`` holds every deployment with its
    defaults filled in, the model groups with their strategies, the default group, and the
    policies in the order they are tried with the strategy each uses; ``left_out`` what leaving
    the deployments ``without`` removed (``deployments``, ``model_groups``, ``policies``, and
    ``fallbacks`` as [policy id, index]). Raises ConfigError naming the key, as Router does."""

def estimate_tokens(texts: Sequence[str], *, messages: int = 0, images: int = 0) -> int:
    """Estimated input tokens of a request: its ``texts`` (message parts, tool-call names and
    arguments, tool definitions as JSON), plus 4 per message and 765 per image.

    Counts the way BPE tokenizers of the cl100k/o200k kind split text (words, digit groups,
    punctuation runs, line breaks, CJK and other scripts), within a few percent of them for
    English, code and JSON. Each deployment's router calibrates it against the input tokens its
    provider reports (``DeploymentStats.input_token_ratio``)."""

@final
class Router:
    def __new__(
        cls,
        config_json: str,
        *,
        manual_clock: bool = False,
        without: Sequence[str] = (),
        shared_state: str | os.PathLike[str] | None = None,
    ) -> Router:
        """Parse and compile a config; raises ConfigError naming the offending key.

        With ``manual_clock`` time stands still until ``advance_clock`` (tests). The deployments
        ``without`` are left out, with whatever names only them (``describe_config``). With
        ``shared_state`` (a file path, normally under /dev/shm, created if missing) the router's
        state (rate limits, circuit breakers, cool-downs, latency estimates, counters, attempts
        in flight, round-robin positions, token calibration) lives in that file, and every
        process whose router opens it decides as one with it (OSError if it cannot be opened)."""
    def advance_clock(self, seconds: float) -> None:
        """Move a manual clock forward; ValueError on a real one."""
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
        preference: Literal["cost", "latency"] | None = None,
        seed: int | None = None,
        dry_run: bool = False,
    ) -> Decision:
        """Order the deployments for one request.

        The first policy whose condition matches decides; with none matching,
        ``model`` names the group (or "auto", the default group) and its own
        strategy orders it. ``input_tokens`` is the estimate (``estimate_tokens``);
        each deployment scales it by its calibration for its context window and
        its reservation. ``max_output_tokens`` 0 means unknown. Unknown
        capability or region names match no deployment; an empty ``regions``
        allows any. ``max_cost_usd`` removes deployments whose estimated cost
        for this request is higher. The same ``affinity_key`` keeps the same
        deployment first while it qualifies. A ``preference`` orders the candidates
        cheapest first (lowest_cost) or fastest first (lowest_latency) instead of by the
        plan's strategy. A ``seed`` makes the order
        deterministic; ``dry_run`` explains without side effects. Raises
        UnknownModelGroupError when no policy matches and the group is unknown.
        """
    def reserve(
        self, deployment: str, *, tokens: int = 0, input_tokens: int = 0, tenant: str = "", api_key: str = ""
    ) -> Lease:
        """A lease on ``deployment`` for a fallback attempt (``tokens``: the estimate,
        input plus max output). ``input_tokens``, the input part if known, is reserved
        as the deployment counts it (calibrated), and the outcome's reported input
        then calibrates it. Raises DeploymentUnavailableError or UnknownDeploymentError."""
    def reserve_shadow(self, deployment: str, *, tokens: int = 0, input_tokens: int = 0) -> Lease:
        """A lease on ``deployment`` for a shadow call: only the deployment's budget is
        reserved, and it is refused (DeploymentUnavailableError) while that budget is within
        the share kept for callers (one ``priority_reserve`` more than the lowest priority
        leaves), or while a half-open breaker waits for a caller's probe."""
    def record(
        self,
        lease: Lease,
        *,
        outcome: str,
        latency_ms: float,
        ttft_ms: float | None = None,
        input_tokens: int = 0,
        output_tokens: int = 0,
        retry_after_s: float | None = None,
    ) -> float:
        """Settle a lease with its attempt's outcome class (ok, rate_limited,
        overloaded, server_error, timeout, connection_error,
        context_window_exceeded, content_filtered, auth_error, bad_request,
        protocol_error). An "ok" that reports ``input_tokens`` calibrates the
        deployment's input estimate. Returns what the tokens used cost, in USD, at
        the deployment's prices when the lease was taken. ValueError for an unknown
        class, a bad latency, or a lease already settled."""
    def release(self, lease: Lease) -> None:
        """Give back a lease whose attempt produced no outcome; a no-op if settled. A lease
        that is garbage collected unsettled gives itself back the same way."""
    def cooling_down_for_s(self, deployment: str) -> float | None:
        """Seconds until the deployment's rate-limit cool-down (a provider's 429) ends, or None
        when it is not cooling down."""
    def latency_tail_ms(self, deployment: str, *, first_token: bool) -> float | None:
        """The deployment's tail estimate in ms (mean + 2 deviations) of its time to first
        token when ``first_token``, else of its whole latency: how long to wait before
        hedging an attempt on it. None before its first successful outcome that measured
        it (a ``ttft_ms``, for the first token). Raises UnknownDeploymentError."""
    def set_drained(self, deployment: str, drained: bool) -> None:
        """Take the deployment out of rotation (``drained=True``: no new attempt goes to it,
        those under way finish) or put it back. It holds across reloads and for every
        process sharing the router's region. Raises UnknownDeploymentError."""
    def stats(self) -> list[DeploymentStats]:
        """One snapshot per deployment of the current config, in config order."""
    def reserve_budget(
        self,
        owners: Sequence[tuple[str, float | None, float | None, float | None]],
        amount_usd: float,
        *,
        now_s: float | None = None,
    ) -> BudgetHold | BudgetRefusal:
        """Reserve ``amount_usd`` on the budget of every one of ``owners``, each (key, daily_usd,
        monthly_usd, total_usd) with None for no bound, or on none: a BudgetHold, or the
        BudgetRefusal naming the first budget with too little left. Days and months are UTC's;
        ``now_s`` is seconds since the epoch (default now). In a shared region the budgets are
        the host's."""
    def cost_usd(self, deployment: str, input_tokens: int, output_tokens: int) -> float:
        """What the tokens cost on ``deployment`` at its current prices, in USD (the formula leases
        settle with). Raises UnknownDeploymentError."""
    def seed_budget(
        self,
        owner: tuple[str, float | None, float | None, float | None],
        spent_usd: tuple[float, float, float],
        *,
        now_s: float | None = None,
    ) -> None:
        """Count at least ``spent_usd`` (the day's, the month's, in all) as the owner's spending:
        what a ledger recorded before this router began. The larger is kept, not the sum, so
        every worker of a host may seed the same budget."""
    def set_budgets_pooled(self, pooled: bool) -> None:
        """Whether reservations also need this host's allowance of each budget, drawn from a pool
        the hosts of a cluster share (``grant_dollars``)."""
    def grant_dollars(self, owner: str, nanos: int, day: int, month: int, pool_left_nanos: int, period: str) -> bool:
        """Adds ``nanos`` drawn from the pool for ``day`` of ``month`` to this host's allowance of
        ``owner``'s budget; the pool had ``pool_left_nanos`` left beside it, bound by ``period``.
        False for an unknown owner."""
    def take_back_dollars(
        self, owner: str, keep_nanos: int, *, now_s: float | None = None
    ) -> list[tuple[int, int, int]]:
        """What goes back to the pool from this host's allowance of ``owner``'s budget: what
        belongs to a day that is over, what is above ``keep_nanos``, and any debt (negative); each
        with the day and month it was drawn for. Empty when nothing goes back."""
    def pooled_budget(self, owner: str, *, now_s: float | None = None) -> PooledBudget | None:
        """``owner``'s budget as this host sees it, or None when it has none."""
    def budget_spent(self, owner: str, *, now_s: float | None = None) -> tuple[float, float, float] | None:
        """What ``owner`` spent (reservations included) in the day, the month and in all, in USD;
        None before its first reservation in this router."""
    def measures(self) -> list[DeploymentMeasures]:
        """Every deployment's attempts as distributions, in config order. In a shared region,
        the host's: every process sharing it reports the same."""
    def record_call(
        self,
        model_group: str,
        method: str,
        status: int,
        duration_s: float,
        *,
        retries: int = 0,
        fallbacks: int = 0,
        hedges: int = 0,
    ) -> None:
        """Count one call to ``method`` (one of CALL_METHODS) that ended with gRPC status code
        ``status`` after ``duration_s``, and the attempts it made beyond the first (on the same
        deployment again, on the next candidate, alongside a slow one), under ``model_group``;
        a name that is no group of the
        config counts as "" (reaching none), so clients' text never adds a series. ValueError
        for an unknown method or status, or a duration that is not a finite number >= 0."""
    def call_measures(self) -> list[CallMeasures]:
        """Calls per model group and method, for those with any, in config order; calls that
        reached no group last, as group ""."""
    def reload(self, config_json: str, *, without: Sequence[str] = ()) -> None:
        """Swap in a new config atomically, keeping the stats of deployment ids that
        still exist; ``without`` as for the constructor. On ConfigError the current config
        stays in place."""
    def set_refill_share(self, share: float) -> None:
        """From now on every rate limit refills itself at ``share`` (0..1) of its rate, up
        to that share of its capacity. At 0 a cluster link feeds the buckets with
        ``grant`` and what each held is dropped. Raises ValueError outside [0, 1]."""
    @property
    def refill_share(self) -> float: ...
    def budgets(self) -> list[tuple[str, Literal["requests", "tokens"], int, float]]:
        """Every rate-limit bucket as ``(key, kind, per_minute, level)``: key is
        ``deployment/<id>``, ``tenant/<name>`` or ``api_key/<name>``; level is what it
        holds now, negative in debt."""
    def grant(self, key: str, kind: Literal["requests", "tokens"], amount: int) -> int:
        """Add up to ``amount`` to a bucket as ``budgets`` names it and return how much it
        took (its capacity bounds it); 0 for a key the config no longer has."""
    def take_back(self, key: str, kind: Literal["requests", "tokens"]) -> int:
        """Empty a bucket and return the whole requests or tokens it held."""
    def health_news(self) -> list[tuple[str, _HealthNewsKind, float]]:
        """What changed in the deployments' own health since the last call, as
        ``(deployment, kind, seconds)``: how long another host should keep it out
        (``circuit_open``, ``cooling_down``), or ``circuit_closed`` to let it back in."""
    def retell_health(self) -> None:
        """Make the next ``health_news`` tell again every circuit still open and every
        cool-down still running, for a link that may have lost news."""
    def hear(self, deployment: str, kind: _HealthNewsKind, seconds: float) -> bool:
        """Apply another host's news of a deployment, as ``health_news`` gives it; False
        when this router has no such deployment. Raises ValueError for an unknown kind
        or seconds outside [0, 86400]."""
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
    def candidates(self) -> Candidates:
        """Deployments to try, best first; empty when all were rejected. Drawn as they
        are asked for: the first when routed, the others as a fallback reaches them."""
    @property
    def rejected(self) -> tuple[Rejection, ...]:
        """Every deployment left out, in the plan's order: reading it draws every candidate."""
    @property
    def drawn(self) -> tuple[tuple[Candidate, ...], tuple[Rejection, ...]]:
        """The candidates drawn so far and the rejections met drawing them, drawing no more."""
    @property
    def lease(self) -> Lease | None:
        """Held for the first candidate; None for a dry run or when none could be leased."""
    @property
    def retry_after_s(self) -> float | None:
        """When every candidate was out of budget: seconds until one could serve."""
    @property
    def hedge(self) -> Hedge | None:
        """The matched policy's hedging; None without a policy or when it does not hedge."""
    @property
    def content_fallback(self) -> Literal["none", "next_tier", "next"]:
        """What a content refusal does, per the matched policy: "none" fails the request
        (also without a policy), "next_tier" goes on to the first candidate of a later
        tier, "next" to the next candidate whatever its tier."""
    @property
    def experiment(self) -> tuple[str, str] | None:
        """(experiment id, variant name) when the matched policy has an experiment: the
        variant the request's sticky key hashes to (the same on every process), or a random
        one when the request has no value for the key. None otherwise."""
    @property
    def shadow(self) -> ShadowCopy | None:
        """Where to copy the request, when the matched policy has a shadow and this request
        was sampled (never for a dry run)."""

@final
class ShadowCopy:
    """A policy's shadow for one sampled request: the deployments to copy it to, each
    leased with ``Router.reserve_shadow``, and the policy's bound on shadow calls in
    flight (per process)."""

    @property
    def deployments(self) -> tuple[str, ...]: ...
    @property
    def max_in_flight(self) -> int: ...

@final
class Hedge:
    """When a first attempt has not answered (its first token, for a stream) within its
    deployment's tail estimate (``Router.latency_tail_ms``) clamped to [``min_delay_ms``,
    ``max_delay_ms``], or ``max_delay_ms`` without an estimate, start the next candidate
    alongside and keep whichever answers first."""

    @property
    def min_delay_ms(self) -> float: ...
    @property
    def max_delay_ms(self) -> float: ...
    @property
    def max_hedges(self) -> int:
        """Most extra attempts per request, 1 to 3."""

@final
class Lease:
    @property
    def deployment(self) -> str: ...
    @property
    def tokens(self) -> int:
        """Tokens reserved: the input estimate as the deployment counts it
        (calibrated), plus max output."""
    @property
    def is_probe(self) -> bool:
        """This attempt probes a half-open circuit."""
    @property
    def active(self) -> bool:
        """False once recorded or released."""

@final
class Candidates:
    """A decision's candidates, best first, drawn as they are asked for: an index draws up
    to it, iteration one at a time; len(), a negative index, a slice or repr() draw all."""
    def __len__(self) -> int: ...
    def __bool__(self) -> bool: ...
    @overload
    def __getitem__(self, key: SupportsIndex, /) -> Candidate: ...
    @overload
    def __getitem__(self, key: slice, /) -> tuple[Candidate, ...]: ...
    def __iter__(self) -> CandidatesIterator: ...
    @property
    def drawn(self) -> tuple[Candidate, ...]:
        """The candidates drawn so far, drawing no more."""

@final
class CandidatesIterator:
    def __iter__(self) -> CandidatesIterator: ...
    def __next__(self) -> Candidate: ...

@final
class Candidate:
    @property
    def deployment(self) -> str: ...
    @property
    def score(self) -> float:
        """In [0, 1], higher is better. weighted: the share of the tier's weight not yet
        drawn when it was drawn (1.0 for the first); priority: 1 / (1 + priority);
        round_robin: 1 - (its position from the turn's start) / (members)."""
    @property
    def tier(self) -> int:
        """0 for the policy's (or model group's) own targets, n for its n-th fallback
        tier that added deployments."""

@final
class Rejection:
    @property
    def deployment(self) -> str: ...
    @property
    def filter(self) -> str:
        """The filter that failed: "context_window", "capabilities", "region",
        "cost", "health" or "rate_limit"."""
    @property
    def detail(self) -> str: ...

@final
class DeploymentStats:
    @property
    def deployment(self) -> str: ...
    @property
    def requests(self) -> int:
        """Attempts recorded."""
    @property
    def failures(self) -> int:
        """Attempts whose outcome was not "ok"."""
    @property
    def in_flight(self) -> int:
        """Leases taken and not yet recorded or released."""
    @property
    def input_tokens(self) -> int: ...
    @property
    def output_tokens(self) -> int: ...
    @property
    def state(self) -> str:
        """The circuit breaker: "closed", "open" or "half_open"."""
    @property
    def unavailable_reason(self) -> str | None:
        """Why it is out of rotation now, if it is."""
    @property
    def unavailable_for_s(self) -> float | None: ...
    @property
    def consecutive_failures(self) -> int: ...
    @property
    def error_rate(self) -> float | None:
        """Failed share of the breaker's error window; None when empty."""
    @property
    def ewma_latency_ms(self) -> float | None:
        """Moving average of successful latencies (alpha 0.2)."""
    @property
    def tail_latency_ms(self) -> float | None:
        """About the 95th percentile: mean + 2 deviations."""
    @property
    def ewma_ttft_ms(self) -> float | None:
        """Moving average of successful times to first token (alpha 0.2)."""
    @property
    def tail_ttft_ms(self) -> float | None:
        """Time to first token's tail, as ``tail_latency_ms`` is latency's."""
    @property
    def headroom(self) -> float:
        """Rate-limit budget left, in [0, 1]."""
    @property
    def input_token_ratio(self) -> float:
        """Moving average of reported / estimated input tokens over successful
        attempts, in [0.25, 4]; it scales the estimate for this deployment. 1.0
        until calibrated."""

@final
class BudgetHold:
    """Dollars reserved for one call. ``settle`` with what it cost; ``release`` (or dropping
    it) gives the reservation back."""

    @property
    def reserved_usd(self) -> float:
        """What was reserved (0 once settled or released)."""
    def settle(self, actual_usd: float, *, now_s: float | None = None) -> None: ...
    def release(self) -> None: ...

@final
class BudgetRefusal:
    """Why a reservation was refused."""

    @property
    def owner_index(self) -> int: ...
    @property
    def period(self) -> str:
        """daily, monthly or total."""
    @property
    def limit_usd(self) -> float: ...
    @property
    def left_usd(self) -> float: ...
    @property
    def asked_usd(self) -> float: ...
    @property
    def resets_at_s(self) -> float | None:
        """When the period starts again (seconds since the epoch); None for the total."""
    @property
    def pooled(self) -> bool:
        """For want of this host's allowance of a pooled budget: a fresh draw from the pool may
        admit it."""

@final
class PooledBudget:
    """One owner's budget as this host sees it, for the link that pools it with other hosts'."""

    @property
    def owner(self) -> str: ...
    @property
    def daily_usd(self) -> float | None: ...
    @property
    def monthly_usd(self) -> float | None: ...
    @property
    def total_usd(self) -> float | None: ...
    @property
    def day(self) -> int:
        """Today, in days since the epoch (UTC)."""
    @property
    def month(self) -> int:
        """This month, in months since January 1970."""
    @property
    def spent_nanos(self) -> tuple[int, int, int]:
        """What this host counts as spent in the day, the month and in all, in nano-USD."""
    @property
    def allowance_nanos(self) -> int:
        """What this host holds of the pool, in nano-USD (negative: what it owes)."""
    @property
    def allowance_day(self) -> int: ...
    @property
    def allowance_month(self) -> int: ...

@final
class Distribution:
    """Counts per bucket of a histogram read at one moment: ``counts[i]`` values were at most
    ``bounds[i]`` and above the bound before it; the last count, above every bound. Durations
    are in seconds."""

    @property
    def bounds(self) -> list[float]: ...
    @property
    def counts(self) -> list[int]: ...
    @property
    def sum(self) -> float: ...
    @property
    def count(self) -> int: ...
    def quantile(self, q: float) -> float | None:
        """The value below which a share ``q`` (0 to 1) of the values fall, interpolated
        within its bucket; the last bound when above them all; None when empty or ``q`` is
        out of range."""
    def coarsened(self) -> Distribution:
        """The same values counted at DURATION_BOUNDS_S, for exporters; ValueError unless
        these are durations at finer bounds."""

@final
class DeploymentMeasures:
    @property
    def deployment(self) -> str: ...
    @property
    def outcomes(self) -> dict[str, int]:
        """Attempts per outcome class, for the classes that ended any."""
    @property
    def cost_usd(self) -> float:
        """What the answers cost at the deployment's prices."""
    @property
    def latency(self) -> Distribution:
        """Durations of successful attempts, in quarter-octave buckets (0.625 ms to 81.92 s):
        percentiles within about 10%."""
    @property
    def first_token(self) -> Distribution:
        """Times to the first token of successful streamed attempts, likewise."""
    @property
    def failed_latency(self) -> dict[str, Distribution]:
        """Durations of failed attempts per outcome class, at DURATION_BOUNDS_S."""
    @property
    def input_tokens(self) -> Distribution:
        """Input tokens per successful attempt, at TOKEN_BOUNDS."""
    @property
    def output_tokens(self) -> Distribution: ...

@final
class CallMeasures:
    @property
    def model_group(self) -> str:
        """ "" for calls that reached no model group."""
    @property
    def method(self) -> str: ...
    @property
    def statuses(self) -> dict[int, int]:
        """Calls per gRPC status code number, for the codes that ended any."""
    @property
    def duration(self) -> Distribution:
        """At DURATION_BOUNDS_S."""
    @property
    def retries(self) -> int:
        """Attempts on a deployment again after it failed, over the calls."""
    @property
    def fallbacks(self) -> int:
        """Attempts on the next candidate after one failed, over the calls."""
    @property
    def hedges(self) -> int:
        """Attempts started alongside one that had not answered in time, over the calls."""

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

@final
class DeploymentUnavailableError(RouterError):
    def __new__(
        cls, deployment: str, detail: str, retry_after_s: float | None = None, rate_limited: bool = False
    ) -> Self: ...
    @property
    def deployment(self) -> str: ...
    @property
    def detail(self) -> str: ...
    @property
    def retry_after_s(self) -> float | None:
        """When the same lease could succeed; None if waiting cannot help."""
    @property
    def rate_limited(self) -> bool:
        """Refused by a budget or a provider's 429 cool-down, not for being out of rotation
        (open circuit, latency outlier, rejected credentials)."""
