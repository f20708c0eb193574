import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GetStatsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetStatsResponse(_message.Message):
    __slots__ = ("deployments", "calls")
    DEPLOYMENTS_FIELD_NUMBER: _ClassVar[int]
    CALLS_FIELD_NUMBER: _ClassVar[int]
    deployments: _containers.RepeatedCompositeFieldContainer[DeploymentStats]
    calls: _containers.RepeatedCompositeFieldContainer[CallStats]
    def __init__(self, deployments: _Optional[_Iterable[_Union[DeploymentStats, _Mapping]]] = ..., calls: _Optional[_Iterable[_Union[CallStats, _Mapping]]] = ...) -> None: ...

class DeploymentStats(_message.Message):
    __slots__ = ("deployment", "requests", "failures", "in_flight", "input_tokens", "output_tokens", "circuit_state", "unavailable_reason", "unavailable_for_s", "consecutive_failures", "error_rate", "ewma_latency_ms", "tail_latency_ms", "ewma_ttft_ms", "tail_ttft_ms", "headroom", "input_token_ratio", "outcomes", "latency_ms", "ttft_ms", "cost_usd")
    class OutcomesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    FAILURES_FIELD_NUMBER: _ClassVar[int]
    IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    CIRCUIT_STATE_FIELD_NUMBER: _ClassVar[int]
    UNAVAILABLE_REASON_FIELD_NUMBER: _ClassVar[int]
    UNAVAILABLE_FOR_S_FIELD_NUMBER: _ClassVar[int]
    CONSECUTIVE_FAILURES_FIELD_NUMBER: _ClassVar[int]
    ERROR_RATE_FIELD_NUMBER: _ClassVar[int]
    EWMA_LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    TAIL_LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    EWMA_TTFT_MS_FIELD_NUMBER: _ClassVar[int]
    TAIL_TTFT_MS_FIELD_NUMBER: _ClassVar[int]
    HEADROOM_FIELD_NUMBER: _ClassVar[int]
    INPUT_TOKEN_RATIO_FIELD_NUMBER: _ClassVar[int]
    OUTCOMES_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    TTFT_MS_FIELD_NUMBER: _ClassVar[int]
    COST_USD_FIELD_NUMBER: _ClassVar[int]
    deployment: str
    requests: int
    failures: int
    in_flight: int
    input_tokens: int
    output_tokens: int
    circuit_state: str
    unavailable_reason: str
    unavailable_for_s: float
    consecutive_failures: int
    error_rate: float
    ewma_latency_ms: float
    tail_latency_ms: float
    ewma_ttft_ms: float
    tail_ttft_ms: float
    headroom: float
    input_token_ratio: float
    outcomes: _containers.ScalarMap[str, int]
    latency_ms: Percentiles
    ttft_ms: Percentiles
    cost_usd: float
    def __init__(self, deployment: _Optional[str] = ..., requests: _Optional[int] = ..., failures: _Optional[int] = ..., in_flight: _Optional[int] = ..., input_tokens: _Optional[int] = ..., output_tokens: _Optional[int] = ..., circuit_state: _Optional[str] = ..., unavailable_reason: _Optional[str] = ..., unavailable_for_s: _Optional[float] = ..., consecutive_failures: _Optional[int] = ..., error_rate: _Optional[float] = ..., ewma_latency_ms: _Optional[float] = ..., tail_latency_ms: _Optional[float] = ..., ewma_ttft_ms: _Optional[float] = ..., tail_ttft_ms: _Optional[float] = ..., headroom: _Optional[float] = ..., input_token_ratio: _Optional[float] = ..., outcomes: _Optional[_Mapping[str, int]] = ..., latency_ms: _Optional[_Union[Percentiles, _Mapping]] = ..., ttft_ms: _Optional[_Union[Percentiles, _Mapping]] = ..., cost_usd: _Optional[float] = ...) -> None: ...

class Percentiles(_message.Message):
    __slots__ = ("p50", "p95", "p99")
    P50_FIELD_NUMBER: _ClassVar[int]
    P95_FIELD_NUMBER: _ClassVar[int]
    P99_FIELD_NUMBER: _ClassVar[int]
    p50: float
    p95: float
    p99: float
    def __init__(self, p50: _Optional[float] = ..., p95: _Optional[float] = ..., p99: _Optional[float] = ...) -> None: ...

class CallStats(_message.Message):
    __slots__ = ("model_group", "method", "statuses", "duration_ms", "retries", "fallbacks", "hedges")
    class StatusesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    MODEL_GROUP_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    STATUSES_FIELD_NUMBER: _ClassVar[int]
    DURATION_MS_FIELD_NUMBER: _ClassVar[int]
    RETRIES_FIELD_NUMBER: _ClassVar[int]
    FALLBACKS_FIELD_NUMBER: _ClassVar[int]
    HEDGES_FIELD_NUMBER: _ClassVar[int]
    model_group: str
    method: str
    statuses: _containers.ScalarMap[str, int]
    duration_ms: Percentiles
    retries: int
    fallbacks: int
    hedges: int
    def __init__(self, model_group: _Optional[str] = ..., method: _Optional[str] = ..., statuses: _Optional[_Mapping[str, int]] = ..., duration_ms: _Optional[_Union[Percentiles, _Mapping]] = ..., retries: _Optional[int] = ..., fallbacks: _Optional[int] = ..., hedges: _Optional[int] = ...) -> None: ...

class ReloadConfigRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ReloadConfigResponse(_message.Message):
    __slots__ = ("applied", "error", "added", "removed", "changed")
    APPLIED_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    ADDED_FIELD_NUMBER: _ClassVar[int]
    REMOVED_FIELD_NUMBER: _ClassVar[int]
    CHANGED_FIELD_NUMBER: _ClassVar[int]
    applied: bool
    error: str
    added: _containers.RepeatedScalarFieldContainer[str]
    removed: _containers.RepeatedScalarFieldContainer[str]
    changed: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, applied: _Optional[bool] = ..., error: _Optional[str] = ..., added: _Optional[_Iterable[str]] = ..., removed: _Optional[_Iterable[str]] = ..., changed: _Optional[_Iterable[str]] = ...) -> None: ...

class DrainRequest(_message.Message):
    __slots__ = ("deployment",)
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    deployment: str
    def __init__(self, deployment: _Optional[str] = ...) -> None: ...

class DrainResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class UndrainRequest(_message.Message):
    __slots__ = ("deployment",)
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    deployment: str
    def __init__(self, deployment: _Optional[str] = ...) -> None: ...

class UndrainResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Key(_message.Message):
    __slots__ = ("id", "tenant", "name", "created_at", "expires_at", "revoked_at", "state", "daily_usd", "monthly_usd", "total_usd")
    ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    REVOKED_AT_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    DAILY_USD_FIELD_NUMBER: _ClassVar[int]
    MONTHLY_USD_FIELD_NUMBER: _ClassVar[int]
    TOTAL_USD_FIELD_NUMBER: _ClassVar[int]
    id: str
    tenant: str
    name: str
    created_at: _timestamp_pb2.Timestamp
    expires_at: _timestamp_pb2.Timestamp
    revoked_at: _timestamp_pb2.Timestamp
    state: str
    daily_usd: float
    monthly_usd: float
    total_usd: float
    def __init__(self, id: _Optional[str] = ..., tenant: _Optional[str] = ..., name: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., revoked_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., state: _Optional[str] = ..., daily_usd: _Optional[float] = ..., monthly_usd: _Optional[float] = ..., total_usd: _Optional[float] = ...) -> None: ...

class CreateKeyRequest(_message.Message):
    __slots__ = ("tenant", "name", "expires_at", "daily_usd", "monthly_usd", "total_usd")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    DAILY_USD_FIELD_NUMBER: _ClassVar[int]
    MONTHLY_USD_FIELD_NUMBER: _ClassVar[int]
    TOTAL_USD_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    name: str
    expires_at: _timestamp_pb2.Timestamp
    daily_usd: float
    monthly_usd: float
    total_usd: float
    def __init__(self, tenant: _Optional[str] = ..., name: _Optional[str] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., daily_usd: _Optional[float] = ..., monthly_usd: _Optional[float] = ..., total_usd: _Optional[float] = ...) -> None: ...

class CreateKeyResponse(_message.Message):
    __slots__ = ("key", "secret")
    KEY_FIELD_NUMBER: _ClassVar[int]
    SECRET_FIELD_NUMBER: _ClassVar[int]
    key: Key
    secret: str
    def __init__(self, key: _Optional[_Union[Key, _Mapping]] = ..., secret: _Optional[str] = ...) -> None: ...

class RevokeKeyRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class RevokeKeyResponse(_message.Message):
    __slots__ = ("key",)
    KEY_FIELD_NUMBER: _ClassVar[int]
    key: Key
    def __init__(self, key: _Optional[_Union[Key, _Mapping]] = ...) -> None: ...

class ListKeysRequest(_message.Message):
    __slots__ = ("tenant",)
    TENANT_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    def __init__(self, tenant: _Optional[str] = ...) -> None: ...

class ListKeysResponse(_message.Message):
    __slots__ = ("keys",)
    KEYS_FIELD_NUMBER: _ClassVar[int]
    keys: _containers.RepeatedCompositeFieldContainer[Key]
    def __init__(self, keys: _Optional[_Iterable[_Union[Key, _Mapping]]] = ...) -> None: ...

class GetSpendRequest(_message.Message):
    __slots__ = ("tenant", "key_id", "since")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    key_id: str
    since: _timestamp_pb2.Timestamp
    def __init__(self, tenant: _Optional[str] = ..., key_id: _Optional[str] = ..., since: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class SpendRow(_message.Message):
    __slots__ = ("day", "tenant", "key_id", "model_group", "calls", "input_tokens", "output_tokens", "cost_usd", "shadow")
    DAY_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_GROUP_FIELD_NUMBER: _ClassVar[int]
    CALLS_FIELD_NUMBER: _ClassVar[int]
    INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COST_USD_FIELD_NUMBER: _ClassVar[int]
    SHADOW_FIELD_NUMBER: _ClassVar[int]
    day: str
    tenant: str
    key_id: str
    model_group: str
    calls: int
    input_tokens: int
    output_tokens: int
    cost_usd: float
    shadow: bool
    def __init__(self, day: _Optional[str] = ..., tenant: _Optional[str] = ..., key_id: _Optional[str] = ..., model_group: _Optional[str] = ..., calls: _Optional[int] = ..., input_tokens: _Optional[int] = ..., output_tokens: _Optional[int] = ..., cost_usd: _Optional[float] = ..., shadow: _Optional[bool] = ...) -> None: ...

class GetSpendResponse(_message.Message):
    __slots__ = ("rows", "total_cost_usd", "shadow_cost_usd")
    ROWS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_COST_USD_FIELD_NUMBER: _ClassVar[int]
    SHADOW_COST_USD_FIELD_NUMBER: _ClassVar[int]
    rows: _containers.RepeatedCompositeFieldContainer[SpendRow]
    total_cost_usd: float
    shadow_cost_usd: float
    def __init__(self, rows: _Optional[_Iterable[_Union[SpendRow, _Mapping]]] = ..., total_cost_usd: _Optional[float] = ..., shadow_cost_usd: _Optional[float] = ...) -> None: ...

class CompareDeploymentsRequest(_message.Message):
    __slots__ = ("deployments", "since", "policy")
    DEPLOYMENTS_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    deployments: _containers.RepeatedScalarFieldContainer[str]
    since: _timestamp_pb2.Timestamp
    policy: str
    def __init__(self, deployments: _Optional[_Iterable[str]] = ..., since: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., policy: _Optional[str] = ...) -> None: ...

class Interval(_message.Message):
    __slots__ = ("estimate", "low", "high")
    ESTIMATE_FIELD_NUMBER: _ClassVar[int]
    LOW_FIELD_NUMBER: _ClassVar[int]
    HIGH_FIELD_NUMBER: _ClassVar[int]
    estimate: float
    low: float
    high: float
    def __init__(self, estimate: _Optional[float] = ..., low: _Optional[float] = ..., high: _Optional[float] = ...) -> None: ...

class ComparedDeployment(_message.Message):
    __slots__ = ("deployment", "calls", "success_rate", "latency_p50_ms", "latency_p95_ms", "cost_per_call_usd", "cost_per_1k_output_usd", "feedback_score", "scored_calls", "verdict", "ttft_p50_ms", "ttft_p95_ms", "agreement_rate", "compared_answers", "latency_ms", "ttft_ms", "side")
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    CALLS_FIELD_NUMBER: _ClassVar[int]
    SUCCESS_RATE_FIELD_NUMBER: _ClassVar[int]
    LATENCY_P50_MS_FIELD_NUMBER: _ClassVar[int]
    LATENCY_P95_MS_FIELD_NUMBER: _ClassVar[int]
    COST_PER_CALL_USD_FIELD_NUMBER: _ClassVar[int]
    COST_PER_1K_OUTPUT_USD_FIELD_NUMBER: _ClassVar[int]
    FEEDBACK_SCORE_FIELD_NUMBER: _ClassVar[int]
    SCORED_CALLS_FIELD_NUMBER: _ClassVar[int]
    VERDICT_FIELD_NUMBER: _ClassVar[int]
    TTFT_P50_MS_FIELD_NUMBER: _ClassVar[int]
    TTFT_P95_MS_FIELD_NUMBER: _ClassVar[int]
    AGREEMENT_RATE_FIELD_NUMBER: _ClassVar[int]
    COMPARED_ANSWERS_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    TTFT_MS_FIELD_NUMBER: _ClassVar[int]
    SIDE_FIELD_NUMBER: _ClassVar[int]
    deployment: str
    calls: int
    success_rate: Interval
    latency_p50_ms: Interval
    latency_p95_ms: Interval
    cost_per_call_usd: Interval
    cost_per_1k_output_usd: Interval
    feedback_score: Interval
    scored_calls: int
    verdict: _containers.RepeatedScalarFieldContainer[str]
    ttft_p50_ms: Interval
    ttft_p95_ms: Interval
    agreement_rate: Interval
    compared_answers: int
    latency_ms: Histogram
    ttft_ms: Histogram
    side: str
    def __init__(self, deployment: _Optional[str] = ..., calls: _Optional[int] = ..., success_rate: _Optional[_Union[Interval, _Mapping]] = ..., latency_p50_ms: _Optional[_Union[Interval, _Mapping]] = ..., latency_p95_ms: _Optional[_Union[Interval, _Mapping]] = ..., cost_per_call_usd: _Optional[_Union[Interval, _Mapping]] = ..., cost_per_1k_output_usd: _Optional[_Union[Interval, _Mapping]] = ..., feedback_score: _Optional[_Union[Interval, _Mapping]] = ..., scored_calls: _Optional[int] = ..., verdict: _Optional[_Iterable[str]] = ..., ttft_p50_ms: _Optional[_Union[Interval, _Mapping]] = ..., ttft_p95_ms: _Optional[_Union[Interval, _Mapping]] = ..., agreement_rate: _Optional[_Union[Interval, _Mapping]] = ..., compared_answers: _Optional[int] = ..., latency_ms: _Optional[_Union[Histogram, _Mapping]] = ..., ttft_ms: _Optional[_Union[Histogram, _Mapping]] = ..., side: _Optional[str] = ...) -> None: ...

class Histogram(_message.Message):
    __slots__ = ("bounds", "counts")
    BOUNDS_FIELD_NUMBER: _ClassVar[int]
    COUNTS_FIELD_NUMBER: _ClassVar[int]
    bounds: _containers.RepeatedScalarFieldContainer[float]
    counts: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, bounds: _Optional[_Iterable[float]] = ..., counts: _Optional[_Iterable[int]] = ...) -> None: ...

class Comparison(_message.Message):
    __slots__ = ("kind", "title", "sides")
    KIND_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    SIDES_FIELD_NUMBER: _ClassVar[int]
    kind: str
    title: str
    sides: _containers.RepeatedCompositeFieldContainer[ComparedDeployment]
    def __init__(self, kind: _Optional[str] = ..., title: _Optional[str] = ..., sides: _Optional[_Iterable[_Union[ComparedDeployment, _Mapping]]] = ...) -> None: ...

class CompareDeploymentsResponse(_message.Message):
    __slots__ = ("deployments", "method", "comparisons")
    DEPLOYMENTS_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    COMPARISONS_FIELD_NUMBER: _ClassVar[int]
    deployments: _containers.RepeatedCompositeFieldContainer[ComparedDeployment]
    method: str
    comparisons: _containers.RepeatedCompositeFieldContainer[Comparison]
    def __init__(self, deployments: _Optional[_Iterable[_Union[ComparedDeployment, _Mapping]]] = ..., method: _Optional[str] = ..., comparisons: _Optional[_Iterable[_Union[Comparison, _Mapping]]] = ...) -> None: ...
