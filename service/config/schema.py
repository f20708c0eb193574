"""What the service itself reads from the config, checked here: how to listen, how to retry,
and for each deployment how to reach its provider. Everything routing reads (a deployment's
`router_core.DEPLOYMENT_KEYS`, model groups, policies, scoring, rate limits, health) is the
Rust core's to check and to default."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    HttpUrl,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    TypeAdapter,
)

from service.threads import HelperPolicy

DEFAULT_LISTEN = "127.0.0.1:50051"
# What goes into an HTTP header: a token for its name; no line break or NUL in its value, which
# would otherwise pass the config and fail every call.
HeaderName = Annotated[str, Field(min_length=1, pattern=r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")]
HeaderValue = Annotated[str, Field(pattern=r"^[^\r\n\x00]*$")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RequestLimits(_Strict):
    """The most a request may hold, checked first and cheaply, before any other work: a few
    cheap requests must not be able to stall the event loop or fill the memory."""

    max_messages: PositiveInt = 1000
    max_parts_per_message: PositiveInt = 64
    max_tools: PositiveInt = 128
    # Text in message parts, tool-call arguments and tool descriptions, in bytes.
    max_text_bytes: PositiveInt = 2 * 1024 * 1024
    # JSON Schemas (tool parameters, response_format.schema): nesting and values in each.
    max_schema_depth: PositiveInt = 20
    max_schema_values: PositiveInt = 10_000
    # Metadata entries, and the tags, required capabilities and allowed regions of routing.
    max_metadata_entries: PositiveInt = 64
    max_list_entries: PositiveInt = 64


class ClientLimits(_Strict):
    """How much of the gateway one client may hold, and for how long."""

    # Calls at once on one HTTP/2 connection (its SETTINGS_MAX_CONCURRENT_STREAMS).
    max_streams_per_connection: PositiveInt = 100
    # Chat and ChatStream calls at once from one address, over all its connections.
    max_calls_per_peer: PositiveInt = 200
    # A stream whose client has not taken its next message in this long (HTTP/2 flow control
    # holds the write) ends, giving back its upstream request and its lease.
    write_timeout_s: PositiveFloat = 10.0


class TlsSettings(_Strict):
    """TLS on the gRPC port: the server's certificate chain and key (PEM files), and, for mutual
    TLS, the CA whose certificates clients must present. A relative path is taken from the config
    file's directory. The files are read again on every reload."""

    cert_file: Path
    key_file: Path
    client_ca_file: Path | None = None


class ServerSettings(_Strict):
    """How the gRPC server listens and shuts down, and how much one request may ask of it."""

    listen: str = DEFAULT_LISTEN
    # On SIGTERM: report NOT_SERVING and keep serving this long, so that load balancers stop
    # sending new calls, then stop taking calls and give those in flight grace_period_s.
    drain_delay_s: NonNegativeFloat = 5.0
    grace_period_s: PositiveFloat = 10.0
    # How often the config file is looked at for changes, which reload it (SIGHUP always does);
    # 0: never.
    watch_interval_s: NonNegativeFloat = 1.0
    # How a worker's threads other than its event loop's (grpc's, the log writer's, ...) are
    # scheduled: `batch` (Linux's SCHED_BATCH), so that on a busy core they wait for the loop
    # rather than preempt it (service/threads.py), or `normal`. Read at start.
    helper_thread_policy: HelperPolicy = "batch"
    limits: RequestLimits = RequestLimits()
    clients: ClientLimits = ClientLimits()
    # host:port of the Admin API (switchboard.admin.v1), a gRPC server apart from the data plane;
    # off when unset. It can reload the config and shows every deployment: keep it on loopback.
    admin_listen: Annotated[str, Field(pattern=r"^\S+:\d+$")] | None = None
    # TLS (and mutual TLS) on `listen`; plaintext when unset.
    tls: TlsSettings | None = None


class _ProviderBase(_Strict):
    """How to reach a deployment, whatever its provider."""

    model: str = Field(min_length=1)
    timeout_s: PositiveFloat = 60.0
    # Streams: a first token later than this, or a pause between chunks longer than this, is a
    # timeout (before the first token the call falls over to the next candidate). Unset: timeout_s.
    first_token_timeout_s: PositiveFloat | None = None
    stall_timeout_s: PositiveFloat | None = None


class EchoDeployment(_ProviderBase):
    """A built-in deterministic model that repeats the last user message (offline use, tests)."""

    type: Literal["echo"]


class PooledDeployment(_ProviderBase):
    """A deployment reached over a pool of HTTP connections."""

    max_connections: PositiveInt = 100
    # How long a call waits for one of those connections. Running out is this gateway's own
    # limit, not the deployment's failure: the call goes on to the next candidate and the
    # deployment's health learns nothing from it.
    pool_wait_s: PositiveFloat = 1.0
    # The most of an answer held at once, decompressed: a whole unary body, or one event of a
    # stream. A larger one is a protocol error, so an upstream cannot make a call hold more.
    max_response_bytes: PositiveInt = 16 * 1024 * 1024


class _HttpDeployment(PooledDeployment):
    """A deployment reached over HTTP with an API key."""

    api_key_env: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    # Leave the deployment out, instead of failing, when its key is not set.
    skip_without_key: bool = False


class OpenAICompatibleDeployment(_HttpDeployment):
    """Any server speaking the OpenAI chat completions protocol. The servers differ in small
    ways, which these settings absorb rather than copies of the adapter."""

    type: Literal["openai_compatible"]
    base_url: HttpUrl
    # The key goes in this header after this prefix ("Authorization: Bearer sk-…" for most).
    api_key_header: HeaderName = "Authorization"
    api_key_prefix: HeaderValue = "Bearer "
    # Ask for usage in the last stream chunk (stream_options.include_usage); some servers reject it.
    stream_usage: bool = True
    # OpenAI's reasoning models take max_completion_tokens instead of max_tokens.
    max_tokens_field: Literal["max_tokens", "max_completion_tokens"] = "max_tokens"
    # Sent with every request, e.g. OpenRouter's HTTP-Referer and X-Title.
    extra_headers: dict[HeaderName, HeaderValue] = Field(default_factory=dict)


class AzureOpenAIDeployment(_HttpDeployment):
    """Azure OpenAI: the model deployment is in the URL, the key in an `api-key` header."""

    type: Literal["azure_openai"]
    # https://<resource>.openai.azure.com
    endpoint: HttpUrl
    # The name of the deployment in the Azure resource (`model` names the model it serves).
    azure_deployment: str = Field(min_length=1)
    api_version: str = "2024-10-21"
    stream_usage: bool = True


class AnthropicDeployment(_HttpDeployment):
    """Anthropic's Messages API."""

    type: Literal["anthropic"]
    base_url: HttpUrl = HttpUrl("https://api.anthropic.com")
    anthropic_version: str = "2023-06-01"
    # The API requires max_tokens; this is sent when the request does not set one.
    default_max_tokens: PositiveInt = 4096


class GeminiDeployment(_HttpDeployment):
    """Google's Gemini API (Generative Language API), key in `x-goog-api-key`."""

    type: Literal["gemini"]
    base_url: HttpUrl = HttpUrl("https://generativelanguage.googleapis.com")
    api_version: str = "v1beta"


class BedrockDeployment(PooledDeployment):
    """Amazon Bedrock's Converse API, signed with SigV4 from credentials in the environment."""

    type: Literal["bedrock"]
    # The AWS region the model runs in (`region` is the routing label, as for every deployment).
    aws_region: str = Field(min_length=1)
    # Default: https://bedrock-runtime.<aws_region>.amazonaws.com
    endpoint_url: HttpUrl | None = None
    # Static credentials, from these variables when both keys are set; otherwise botocore's chain
    # finds them (a profile, SSO, an assumed role, web identity, a credential process) and
    # refreshes them before they expire.
    access_key_env: str = "AWS_ACCESS_KEY_ID"
    secret_key_env: str = "AWS_SECRET_ACCESS_KEY"
    session_token_env: str = "AWS_SESSION_TOKEN"
    # The profile of ~/.aws/config the chain reads (default: AWS_PROFILE, else "default").
    aws_profile: str | None = None
    # Let the chain ask the instance or container metadata endpoint for the machine's role.
    instance_metadata: bool = False
    # Leave the deployment out, instead of failing, when its credentials are not set.
    skip_without_key: bool = False


AnyProvider = (
    EchoDeployment
    | OpenAICompatibleDeployment
    | AzureOpenAIDeployment
    | AnthropicDeployment
    | GeminiDeployment
    | BedrockDeployment
)
PROVIDER = TypeAdapter[AnyProvider](Annotated[AnyProvider, Field(discriminator="type")])
PROVIDER_TYPES = frozenset({"echo", "openai_compatible", "azure_openai", "anthropic", "gemini", "bedrock"})

RetryableOutcome = Literal[
    "rate_limited", "overloaded", "server_error", "timeout", "connection_error", "protocol_error"
]
_RETRIED_BY_DEFAULT: list[RetryableOutcome] = ["rate_limited", "overloaded", "server_error", "connection_error"]


class RetrySettings(_Strict):
    """Retrying a failed attempt on the same deployment before falling back to the next one."""

    # Extra attempts on the same deployment (0: fall back at once).
    same_deployment: NonNegativeInt = 0
    # The outcome classes retried in place; the others fall back (or fail) as before.
    # (Not `on`: YAML reads that key as true.)
    retry_on: list[RetryableOutcome] = Field(default_factory=lambda: list(_RETRIED_BY_DEFAULT))
    # Exponential backoff with full jitter: a random wait up to initial * 2^n, capped at max.
    # A Retry-After longer than backoff_max_s is not waited for: the call falls back instead.
    backoff_initial_s: PositiveFloat = 0.1
    backoff_max_s: PositiveFloat = 2.0
    # No attempt, retry or fallback, starts later than this after the call began (and never
    # past the client's deadline).
    total_budget_s: PositiveFloat | None = None
    # When every candidate is rate limited (a provider's Retry-After, or out of this gateway's
    # rpm/tpm budget) with a known wait, wait up to this long in all and route again, instead
    # of failing at once with RESOURCE_EXHAUSTED. 0: fail at once.
    wait_for_capacity_s: NonNegativeFloat = 0.0
    # Time kept back from the client's deadline, so that the answer, or the error listing every
    # attempt, reaches the client before its own timer fires. Larger survives a slower network
    # between client and gateway; every attempt has that much less time.
    deadline_margin_s: NonNegativeFloat = 0.05


class StateSettings(_Strict):
    """Where the router's state is shared beyond one host. `local`: each host keeps its own (the
    workers of one `serve --workers N` always share theirs). `redis`: the hosts draw their rate
    limits from buckets in Redis (or Valkey), and their budgets in dollars from pools there, and
    tell each other of opened circuits and cool-downs, off the request path but for a call whose
    dollar allowance ran short (service/cluster)."""

    backend: Literal["local", "redis"] = "local"
    # redis://[:password@]host:port[/db], rediss:// for TLS, unix:// for a socket.
    url: Annotated[str, Field(pattern=r"^(rediss?|unix)://\S+$")] | None = None
    # Prefixes every key and channel, so that several clusters can share one Redis.
    namespace: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")] = "switchboard"
    # How much of each limit a host draws at once, as a part of one minute's limit (at least 1
    # request or token), or of a budget in dollars, as a part of its smallest bound: larger costs
    # fewer Redis calls and may leave more budget idle in hosts that do not use it (at most this
    # much per host and limit; two slices per budget, until an owner goes idle).
    slice: Annotated[float, Field(gt=0, le=0.5)] = 0.01
    # How often each host looks at its buckets, draws, and passes on its health news.
    interval_s: Annotated[float, Field(ge=0.001, le=1.0)] = 0.02
    # Every Redis call gives up after this long, so that a slow Redis holds up nothing.
    timeout_s: Annotated[float, Field(gt=0, le=10.0)] = 0.25
    # While Redis cannot be reached, each host refills every limit by itself at this part of
    # its rate. `auto`: one over the number of hosts last seen drawing (1 if none was).
    fallback_share: Literal["auto"] | Annotated[float, Field(gt=0, le=1)] = "auto"

    def model_post_init(self, context: object, /) -> None:
        if self.backend == "redis" and self.url is None:
            raise ValueError("state.url is required with backend: redis")


class TelemetrySettings(_Strict):
    """Traces (service/telemetry.py), exported over OTLP when `otlp_endpoint` is set, and
    metrics (service/metrics.py), scraped at `metrics_listen` or pushed over OTLP: neither made
    when not asked for."""

    # host:port of an OTLP receiver (a collector): 127.0.0.1:4317 for gRPC, :4318 for HTTP.
    otlp_endpoint: Annotated[str, Field(pattern=r"^\S+:\d+$")] | None = None
    # OTLP over gRPC, or protobuf over HTTP (POST /v1/traces and /v1/metrics).
    otlp_protocol: Literal["grpc", "http/protobuf"] = "grpc"
    # Plaintext to the receiver (a collector beside the gateway); false: TLS.
    insecure: bool = True
    service_name: Annotated[str, Field(min_length=1, max_length=128)] = "switchboard"
    # The share of calls traced, unless the caller's traceparent already decided: a traced call
    # costs the worker about 40% more CPU, a sampled-out one about 1% (benches/telemetry.py).
    trace_sample_ratio: Annotated[float, Field(ge=0, le=1)] = 1.0
    # host:port where Prometheus scrapes /metrics (HTTP); off when unset. Loopback unless the
    # scraper is elsewhere: the figures name every deployment.
    metrics_listen: Annotated[str, Field(pattern=r"^\S+:\d+$")] | None = None
    # With `otlp_endpoint`: metrics pushed there this often too (0: traces only).
    metrics_push_interval_s: Annotated[float, Field(ge=0, le=3600)] = 0.0


class AuthSettings(_Strict):
    """Who may call: `none` (anyone who reaches the port; the embedded default, on loopback),
    `keys` (`authorization: Bearer <key>`, a key made by the Admin API, naming its tenant),
    `mtls` (a client certificate from `server.tls.client_ca_file`, its common name naming the
    tenant) or `keys+mtls` (both, naming one tenant)."""

    mode: Literal["none", "keys", "mtls", "keys+mtls"] = "none"
    # The environment variable holding the server secret that keys are hashed with (32 bytes or
    # more): the store keeps only those hashes.
    secret_env: Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")] = "SWITCHBOARD_AUTH_SECRET"
    # The environment variable holding the Admin API's credential (a Bearer token); required
    # with `server.admin_listen` unless the mode is none. Data-plane keys never work there.
    admin_key_env: Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")] | None = None
    # Failed attempts one peer address may make in a minute; then it is refused for the rest.
    max_failures_per_minute: PositiveInt = 10


class BudgetSettings(_Strict):
    """What an owner may spend in US dollars: per UTC day, per calendar month (UTC) and in all.
    A call is refused when its estimated cost (its input estimate and `max_tokens` at the first
    candidate's prices) is more than what is left; its actual cost then settles it."""

    daily_usd: PositiveFloat | None = None
    monthly_usd: PositiveFloat | None = None
    total_usd: PositiveFloat | None = None

    def bounds(self) -> tuple[float | None, float | None, float | None]:
        return self.daily_usd, self.monthly_usd, self.total_usd


class TenantSettings(_Strict):
    """What one tenant may use. Unset lists allow everything; regions are a hard constraint,
    intersected with the request's and the policy's, never relaxed by a fallback."""

    # Unset: every group, every region; given, at least one.
    model_groups: Annotated[list[str], Field(min_length=1)] | None = None
    regions: Annotated[list[str], Field(min_length=1)] | None = None
    # Requests and tokens per minute, as `rate_limits.tenants` gives them (across workers and hosts).
    rpm: PositiveInt | None = None
    tpm: PositiveInt | None = None
    # When a deployment's rpm/tpm runs low, lower priorities stop first: each leaves
    # `rate_limits.priority_reserve` (default 0.2) of it for every priority above its own that
    # some tenant has (`normal` always counts). Tenants' own rpm/tpm and budgets are their own.
    priority: Literal["high", "normal", "low"] = "normal"
    # Matched by policies as request metadata (`when: {metadata: {...}}`); a client's own
    # metadata cannot override these.
    metadata: dict[str, str] = {}
    budget: BudgetSettings | None = None


class StoreSettings(_Strict):
    """Where keys (and the ledger) are kept: a SQLite file (relative to the config's directory),
    or PostgreSQL."""

    backend: Literal["sqlite", "postgres"] = "sqlite"
    path: Path = Path("switchboard.db")
    # PostgreSQL: the environment variable holding its URL (postgresql://user:password@host/db).
    url_env: Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")] | None = None
    # How often keys are read again: a revoked key stops working within this.
    refresh_interval_s: Annotated[float, Field(gt=0, le=60)] = 0.5


class LedgerSettings(_Strict):
    """Every call's tenant, key, model group, deployment, outcome, tokens and cost, written to the
    store in batches off the request path. A crash loses at most the last batch interval; a
    store that cannot be written (a full disk, a database away) never fails or slows a call:
    records wait in a bounded buffer, and those past it are counted and logged."""

    enabled: bool = False
    batch_interval_s: Annotated[float, Field(gt=0, le=60)] = 1.0
    max_buffered: Annotated[int, Field(ge=1, le=10_000_000)] = 100_000


class ServiceSections(_Strict):
    """The top level of the file: the service's own sections, typed; routing's, handed on."""

    server: ServerSettings = ServerSettings()
    retries: RetrySettings = RetrySettings()
    state: StateSettings = StateSettings()
    telemetry: TelemetrySettings = TelemetrySettings()
    auth: AuthSettings = AuthSettings()
    tenants: dict[Annotated[str, Field(min_length=1, max_length=128)], TenantSettings] = {}
    store: StoreSettings = StoreSettings()
    ledger: LedgerSettings = LedgerSettings()
    # The Rust core's: checked there, with the key and line of each mistake mapped back here.
    default_group: object = None
    deployments: object = None
    model_groups: object = None
    policies: object = None
    scoring: object = None
    rate_limits: object = None
    health: object = None
    custom_capabilities: object = None
