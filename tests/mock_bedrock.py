"""A local server speaking the Amazon Bedrock Runtime Converse and ConverseStream APIs, for tests.

Routes (botocore's bedrock-runtime service-2.json, operations Converse and ConverseStream):
`POST /model/{modelId}/converse` answers JSON; `POST /model/{modelId}/converse-stream` answers
`application/vnd.amazon.eventstream` frames. The model id may be percent-encoded (botocore sends
`anthropic.claude-3-haiku-20240307-v1%3A0`); the route is matched on the raw path, so `%2F` in an ARN works.

Authentication is SigV4, verified for real: every request needs `Authorization: AWS4-HMAC-SHA256
Credential=<AK>/<date>/<region>/bedrock/aws4_request, SignedHeaders=..., Signature=...` and `X-Amz-Date` (or
`Date`); the mock rebuilds the request from the headers it names and recomputes the signature with botocore's
`SigV4Auth` (`sign()` below signs the same way). Refusals are 403s: no Authorization header is
MissingAuthenticationTokenException, an unknown access key or session token UnrecognizedClientException, a
wrong signature (the AWS text, with the canonical request and string to sign it expected), a scope for another
region/service/date or a date more than 5 minutes off InvalidSignatureException, a malformed header
IncompleteSignatureException. (Recent reports of Bedrock answering a missing header show a 403
AccessDeniedException `{"Message": "Authorization header is missing"}` instead: treat any 403 alike.)

Every error is what botocore's rest-json parser reads: a JSON body `{"message": ...}` and an
`x-amzn-ErrorType: <Name>:http://internal.amazon.com/coral/<namespace>/` header (botocore keeps the part before
the colon as the error code), plus `x-amzn-RequestId` on every response.

Validation (400) checks the model's shapes first, then Bedrock's own rules, and answers the first problem.
- Constraint violations use the service's Coral wording, 1-based with `.member`:
  "1 validation error detected: Value '0' at 'inferenceConfig.maxTokens' failed to satisfy constraint: Member
  must have value greater than or equal to 1" (ranges, lengths, patterns and enums from service-2.json; the
  role enum reads [user, assistant] as the service says, though the model lists `system` too).
- Bedrock's rules use its messages, 0-based: a conversation starting with an assistant turn, roles not
  alternating, empty content, blank text, toolUse/toolResult blocks without `toolConfig`, toolResult blocks
  outnumbering the previous turn's toolUse blocks or missing some of its ids, toolResult `json` that is not an
  object, an empty error toolResult, `additionalModelRequestFields` keys clashing with Converse fields.
- Unknown top-level fields answer what Bedrock was seen answering (the model's "Extra inputs are not
  permitted"); unknown nested keys and tagged unions with zero or several members answer botocore's own
  client-side wording (ValidationException), JSON of the wrong type a SerializationException (mock wording).

Answers are deterministic:
- text "<reply_prefix><last user text>" (stopReason end_turn), cut before the earliest stop sequence it
  contains (stop_sequence), then to `maxTokens` words (max_tokens);
- a toolUse block calling the forced (`toolChoice.tool`), else the first, toolSpec with input
  `{"text": <last user text>}` (tool_use) when tools are declared and the last message is the user's without
  toolResult blocks;
- "<reply_prefix>tool said: <first text of the first toolResult>" after toolResult blocks;
- `guardrail = True`: the guardrail's default blocked text, stopReason guardrail_intervened;
  `content_filtered = True`: no content, stopReason content_filtered.
Usage is `len(json.dumps(messages)) // 4` input tokens, one output token per word (or 8-character tool input
fragment), `cached_tokens` as cacheReadInputTokens; metrics `{"latencyMs": 1}`.

Streams are event-stream frames, each with headers `:event-type`, `:content-type: application/json` and
`:message-type: event` and the event member's JSON as payload: messageStart, then for a tool call
contentBlockStart (text blocks get none: ContentBlockStart has only toolUse/toolResult/image members),
contentBlockDelta per word (or tool input fragment), contentBlockStop, messageStop, metadata. The real
service also pads payloads with a random `"p"` field; the mock does not. A `fault` makes it misbehave.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime
import hmac
import json
import re
import struct
import zlib
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any, NamedTuple, cast
from urllib.parse import unquote

from aiohttp import web
from botocore.auth import SigV4Auth  # type: ignore[import-untyped]
from botocore.awsrequest import AWSRequest  # type: ignore[import-untyped]
from botocore.credentials import Credentials  # type: ignore[import-untyped]

from tests.loopback import LoopbackServer

SERVICE = "bedrock"
# Made-up credentials in the shapes of real ones (20-character key id, 40-character secret).
ACCESS_KEY = "AKIAMOCKBEDROCK00001"
SECRET_KEY = "mockSecretKeyForTestsOnly/0000000000000+"
REGION = "us-east-1"
EVENT_STREAM = "application/vnd.amazon.eventstream"
SIGV4_TIMESTAMP = "%Y%m%dT%H%M%SZ"
MAX_SKEW = datetime.timedelta(minutes=5)
ROUTE = re.compile(r"/model/([^/]+)/(converse|converse-stream)")
# x-amzn-ErrorType namespaces: Bedrock's own exceptions, and Coral's for authentication.
BEDROCK_ERRORS = "http://internal.amazon.com/coral/com.amazon.bedrock/"
CORAL_ERRORS = "http://internal.amazon.com/coral/com.amazon.coral.service/"
# The Converse/ConverseStream errors of service-2.json by HTTP status (429 is also ModelNotReadyException).
EXCEPTIONS = {
    400: "ValidationException",
    403: "AccessDeniedException",
    404: "ResourceNotFoundException",
    408: "ModelTimeoutException",
    424: "ModelErrorException",
    429: "ThrottlingException",
    500: "InternalServerException",
    503: "ServiceUnavailableException",
}
# The exception members of ConverseStreamOutput: the `:exception-type` of an exception frame.
STREAM_EXCEPTIONS = (
    "internalServerException",
    "modelStreamErrorException",
    "validationException",
    "throttlingException",
    "serviceUnavailableException",
)
PROMPT_TOO_LONG = "Input is too long for requested model."
INVALID_MODEL = "The provided model identifier is invalid."
# The blocked-input message a Bedrock guardrail answers when none is configured.
GUARDRAIL_TEXT = "Sorry, the model cannot answer this question."
SIGNATURE_MISMATCH = (
    "The request signature we calculated does not match the signature you provided. Check your AWS Secret "
    "Access Key and signing method. Consult the service documentation for details."
)
INVALID_TOKEN = "The security token included in the request is invalid."
JSON_FRAGMENT_CHARS = 8

TOP_LEVEL = (
    "messages",
    "system",
    "inferenceConfig",
    "toolConfig",
    "guardrailConfig",
    "additionalModelRequestFields",
    "promptVariables",
    "additionalModelResponseFieldPaths",
    "requestMetadata",
    "performanceConfig",
    "serviceTier",
    "outputConfig",
    "projectIdentifier",
)
ROLES = ("user", "assistant")
BLOCK_MEMBERS = (
    "text",
    "image",
    "document",
    "video",
    "audio",
    "toolUse",
    "toolResult",
    "guardContent",
    "cachePoint",
    "reasoningContent",
    "citationsContent",
    "searchResult",
    "toolAddition",
    "toolRemoval",
)
SYSTEM_MEMBERS = ("text", "guardContent", "cachePoint")
RESULT_MEMBERS = ("json", "text", "image", "document", "video", "searchResult")
IMAGE_FORMATS = ("png", "jpeg", "gif", "webp")
TOOL_NAME = "[a-zA-Z0-9_-]+"
TOOL_USE_ID = "[a-zA-Z0-9_.:-]+"
GUARDRAIL_ID = r"(|([a-z0-9]+)|(arn:aws(-[^:]+)?:bedrock:[a-z0-9-]{1,20}:[0-9]{12}:guardrail/[a-z0-9]+))"
GUARDRAIL_VERSION = "(|([1-9][0-9]{0,7})|(DRAFT))"
METADATA_KEY = r"[a-zA-Z0-9\s:_@$#=/+,-.]{1,256}"
METADATA_VALUE = r"[a-zA-Z0-9\s:_@$#=/+,-.]{0,256}"
# additionalModelRequestFields keys that clash with what Converse itself sets (Anthropic's field names), and
# whether the request sets it.
CONVERSE_FIELDS = {
    "messages": lambda body: True,
    "system": lambda body: bool(body.get("system")),
    "max_tokens": lambda body: "maxTokens" in (body.get("inferenceConfig") or {}),
    "temperature": lambda body: "temperature" in (body.get("inferenceConfig") or {}),
    "top_p": lambda body: "topP" in (body.get("inferenceConfig") or {}),
    "stop_sequences": lambda body: "stopSequences" in (body.get("inferenceConfig") or {}),
    "tools": lambda body: bool(body.get("toolConfig")),
    "tool_choice": lambda body: "toolChoice" in (body.get("toolConfig") or {}),
}


@dataclass
class Fault:
    """How the next requests fail. `status` answers with that HTTP status and its exception (`EXCEPTIONS`, or
    `error_type`); `prompt_too_long` answers Bedrock's 400 for an oversized prompt; `hang_s` waits before
    answering. In streams, after that many content deltas: `cut_after` ends the body without messageStop,
    `malformed_after` sends a frame with a bad message CRC (`malformed="crc"`) or a non-JSON payload
    (`malformed="json"`) and ends, `exception_after` sends an exception frame of `stream_exception` with
    `{"message": message}` and ends."""

    status: int = 0
    error_type: str | None = None
    message: str = "mock failure"
    headers: dict[str, str] = field(default_factory=dict)
    hang_s: float = 0.0
    cut_after: int | None = None
    malformed_after: int | None = None
    malformed: str = "crc"
    exception_after: int | None = None
    stream_exception: str = "throttlingException"
    prompt_too_long: bool = False


class Refusal(NamedTuple):
    """Why a request is refused: the exception name and its message."""

    kind: str
    message: str


@dataclass
class _Answer:
    content: list[dict[str, Any]]
    stop_reason: str
    start: dict[str, Any] | None
    deltas: list[dict[str, Any]]
    output_tokens: int
    additional: dict[str, Any] | None


def exception_for(status: int) -> str:
    """The Bedrock exception of an HTTP status; other 4XX are ValidationException, other 5XX InternalServer."""
    return EXCEPTIONS.get(status) or ("InternalServerException" if status >= 500 else "ValidationException")


def encode_event(headers: dict[str, str], payload: bytes) -> bytes:
    """One event-stream message: prelude (total length, headers length: u32 BE), prelude CRC32, headers
    (name length u8, name, type 7 = string, value length u16 BE, value), payload, message CRC32."""
    encoded = b"".join(_encode_header(name, value) for name, value in headers.items())
    prelude = struct.pack(">II", 16 + len(encoded) + len(payload), len(encoded))
    message = prelude + struct.pack(">I", zlib.crc32(prelude)) + encoded + payload
    return message + struct.pack(">I", zlib.crc32(message))


def _encode_header(name: str, value: str) -> bytes:
    raw_name, raw_value = name.encode(), value.encode()
    return struct.pack(">B", len(raw_name)) + raw_name + b"\x07" + struct.pack(">H", len(raw_value)) + raw_value


def event_frame(event_type: str, payload: dict[str, Any]) -> bytes:
    """An event message as ConverseStream sends it (the member's JSON, compact)."""
    headers = {":event-type": event_type, ":content-type": "application/json", ":message-type": "event"}
    return encode_event(headers, _compact(payload).encode())


def exception_frame(exception_type: str, message: str) -> bytes:
    """An exception message: botocore raises EventStreamError with `:exception-type` as the code."""
    headers = {":exception-type": exception_type, ":content-type": "application/json", ":message-type": "exception"}
    return encode_event(headers, _compact({"message": message}).encode())


def sign(
    method: str,
    url: str,
    headers: dict[str, str],
    body: bytes | str,
    access_key: str = ACCESS_KEY,
    secret_key: str = SECRET_KEY,
    region: str = REGION,
    *,
    session_token: str | None = None,
    timestamp: str | None = None,
) -> dict[str, str]:
    """`headers` plus the SigV4 ones (X-Amz-Date, Authorization, X-Amz-Security-Token with a session token),
    signed by botocore for the `bedrock` service over every header given, the URL's host and the body.
    `timestamp` ("20240101T000000Z") signs as of that time instead of now."""
    data = body.encode() if isinstance(body, str) else body
    request = AWSRequest(method=method, url=url, headers=dict(headers), data=data)
    signer = SigV4Auth(Credentials(access_key, secret_key, session_token), SERVICE, region)
    if timestamp is None:
        signer.add_auth(request)
    else:
        # add_auth with its clock replaced: the same steps, on botocore's own helpers.
        request.context["timestamp"] = timestamp
        signer._modify_request_before_signing(request)
        signature = signer.signature(signer.string_to_sign(request, signer.canonical_request(request)), request)
        signer._inject_signature_to_request(request, signature)
    return {str(name): str(value) for name, value in request.headers.items()}


class MockBedrock(LoopbackServer):
    def __init__(
        self,
        *,
        access_key: str = ACCESS_KEY,
        secret_key: str = SECRET_KEY,
        region: str = REGION,
        session_token: str | None = None,
        reply_prefix: str = "mock: ",
        chunk_delay_s: float = 0.0,
        cached_tokens: int = 0,
        models: set[str] | None = None,
    ) -> None:
        super().__init__()
        self.access_key = access_key
        self.secret_key = secret_key
        self.region = region
        self.session_token = session_token
        self.reply_prefix = reply_prefix
        self.chunk_delay_s = chunk_delay_s
        self.cached_tokens = cached_tokens
        # With a set, other model ids are a 400 "The provided model identifier is invalid."
        self.models = models
        self.guardrail = False
        self.content_filtered = False
        self.fault: Fault | None = None
        # Bodies of the requests that parsed as JSON, the headers (lower-cased names) of every request, and the
        # decoded model id of every request that reached an operation.
        self.requests: list[Any] = []
        self.headers: list[dict[str, str]] = []
        self.model_ids: list[str] = []
        self.requests_received = 0
        self.tool_uses_made = 0

    @property
    def base_url(self) -> str:
        """The endpoint root: clients append /model/{modelId}/converse."""
        return f"http://127.0.0.1:{self.port}"

    def routes(self, router: web.UrlDispatcher) -> None:
        router.add_route("*", "/{tail:.*}", self._handle)

    def _request_id(self) -> str:
        self.requests_received += 1
        return f"00000000-0000-4000-8000-{self.requests_received:012d}"

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        request_id = self._request_id()
        self.headers.append({name.lower(): value for name, value in request.headers.items()})
        raw = await request.read()
        try:
            body: Any = json.loads(raw)
        except ValueError:
            body = None
        else:
            self.requests.append(body)
        refusal = self._authenticate(request, raw)
        if refusal:
            return _error(403, refusal, request_id, namespace=CORAL_ERRORS)
        route = ROUTE.fullmatch(request.raw_path.split("?", 1)[0])
        if request.method != "POST" or route is None:
            # Mock wording: the service's answer to an unknown operation is not documented.
            return _error(404, Refusal("UnknownOperationException", "Unknown operation"), request_id, CORAL_ERRORS)
        model_id, stream = unquote(route[1]), route[2] == "converse-stream"
        self.model_ids.append(model_id)
        if body is None:
            # Mock wording, like the above.
            return _error(400, Refusal("SerializationException", "The request body is not valid JSON."), request_id)
        refusal = _validate(body, stream=stream)
        if refusal:
            return _error(400, refusal, request_id)
        if self.models is not None and model_id not in self.models:
            return _error(400, Refusal("ValidationException", INVALID_MODEL), request_id)
        fault = self.fault
        if fault and fault.hang_s:
            await asyncio.sleep(fault.hang_s)
        if fault and fault.prompt_too_long:
            return _error(400, Refusal("ValidationException", PROMPT_TOO_LONG), request_id, headers=fault.headers)
        if fault and fault.status:
            kind = fault.error_type or exception_for(fault.status)
            return _error(fault.status, Refusal(kind, fault.message), request_id, headers=fault.headers)
        answer = self._answer(body)
        usage = self._usage(body, answer.output_tokens)
        if stream:
            return await self._stream(request, request_id, answer, usage, fault)
        response: dict[str, Any] = {
            "output": {"message": {"role": "assistant", "content": answer.content}},
            "stopReason": answer.stop_reason,
            "usage": usage,
            "metrics": {"latencyMs": 1},
        }
        if answer.additional is not None:
            response["additionalModelResponseFields"] = answer.additional
        return _json(200, response, {"x-amzn-RequestId": request_id})

    def _authenticate(self, request: web.Request, body: bytes) -> Refusal | None:
        """Why AWS would refuse this request's SigV4 signature, or None."""
        authorization = request.headers.get("Authorization")
        if not authorization:
            return Refusal("MissingAuthenticationTokenException", "Missing Authentication Token")
        scheme, _, rest = authorization.partition(" ")
        parts: dict[str, str] = {}
        for part in rest.split(","):
            key, _, value = part.strip().partition("=")
            parts[key] = value
        timestamp = _request_timestamp(request)
        missing = [
            f"Authorization header requires '{name}' parameter."
            for name in ("Credential", "Signature", "SignedHeaders")
            if not parts.get(name)
        ]
        if timestamp is None:
            missing.append("Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header.")
        if scheme != "AWS4-HMAC-SHA256" or missing or timestamp is None:
            return Refusal("IncompleteSignatureException", " ".join([*missing, f"Authorization={authorization}"]))
        access_key, _, scope = parts["Credential"].partition("/")
        if access_key != self.access_key or request.headers.get("X-Amz-Security-Token") != self.session_token:
            return Refusal("UnrecognizedClientException", INVALID_TOKEN)
        refusal = _check_scope(scope, timestamp, self.region) or _check_clock(timestamp)
        if refusal:
            return refusal
        signed = parts["SignedHeaders"].split(";")
        host = request.headers.get("Host", request.host)
        rebuilt = AWSRequest(
            method=request.method,
            url=f"http://{host}{request.raw_path}",
            headers={name: request.headers.get(name, "") for name in signed},
            data=body,
        )
        rebuilt.context["timestamp"] = timestamp
        signer = SigV4Auth(Credentials(self.access_key, self.secret_key, self.session_token), SERVICE, self.region)
        canonical = cast(str, signer.canonical_request(rebuilt))
        string_to_sign = cast(str, signer.string_to_sign(rebuilt, canonical))
        expected = cast(str, signer.signature(string_to_sign, rebuilt))
        if hmac.compare_digest(expected.encode(), parts["Signature"].encode()):
            return None
        return Refusal(
            "InvalidSignatureException",
            f"{SIGNATURE_MISMATCH}\n\nThe Canonical String for this request should have been\n'{canonical}'\n\n"
            f"The String-to-Sign should have been\n'{string_to_sign}'\n",
        )

    def _answer(self, body: dict[str, Any]) -> _Answer:
        inference = body.get("inferenceConfig") or {}
        max_tokens: int | None = inference.get("maxTokens")
        wanted = body.get("additionalModelResponseFieldPaths") or []
        if self.content_filtered:
            return _Answer([], "content_filtered", None, [], 0, None)
        tool = None if self.guardrail else _tool_to_call(body)
        if tool is not None:
            self.tool_uses_made += 1
            tool_use_id = f"tooluse_mock_{self.tool_uses_made}"
            tool_input: dict[str, Any] = {"text": _last_user_text(body["messages"])}
            arguments = json.dumps(tool_input)
            fragments = [arguments[i : i + JSON_FRAGMENT_CHARS] for i in range(0, len(arguments), JSON_FRAGMENT_CHARS)]
            stop_reason = "tool_use"
            # One output token per fragment: a small maxTokens truncates the input, which then is no object.
            if max_tokens is not None and len(fragments) > max_tokens:
                fragments, stop_reason, tool_input = fragments[:max_tokens], "max_tokens", {}
            return _Answer(
                [{"toolUse": {"toolUseId": tool_use_id, "name": tool, "input": tool_input}}],
                stop_reason,
                {"toolUse": {"toolUseId": tool_use_id, "name": tool}},
                [{"toolUse": {"input": fragment}} for fragment in fragments],
                len(fragments),
                None,
            )
        sequence: str | None = None
        if self.guardrail:
            text, stop_reason = GUARDRAIL_TEXT, "guardrail_intervened"
        else:
            text, stop_reason, sequence = _reply_text(body, self.reply_prefix)
        words = text.split(" ") if text else []
        if max_tokens is not None and len(words) > max_tokens:
            words, stop_reason, sequence = words[:max_tokens], "max_tokens", None
        text = " ".join(words)
        deltas = [{"text": word if i == 0 else " " + word} for i, word in enumerate(words)]
        additional = {"stop_sequence": sequence} if "/stop_sequence" in wanted else None
        return _Answer([{"text": text}] if text else [], stop_reason, None, deltas, len(words), additional)

    def _usage(self, body: dict[str, Any], output_tokens: int) -> dict[str, int]:
        input_tokens = len(json.dumps(body.get("messages") or [])) // 4
        return {
            "inputTokens": input_tokens,
            "outputTokens": output_tokens,
            "totalTokens": input_tokens + output_tokens,
            "cacheReadInputTokens": self.cached_tokens,
            "cacheWriteInputTokens": 0,
        }

    async def _stream(
        self, request: web.Request, request_id: str, answer: _Answer, usage: dict[str, int], fault: Fault | None
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": EVENT_STREAM, "x-amzn-RequestId": request_id})
        await response.prepare(request)

        async def send(frame: bytes) -> None:
            await response.write(frame)
            if self.chunk_delay_s:
                await asyncio.sleep(self.chunk_delay_s)

        await send(event_frame("messageStart", {"role": "assistant"}))
        if answer.start is not None:
            await send(event_frame("contentBlockStart", {"contentBlockIndex": 0, "start": answer.start}))
        for i, delta in enumerate(answer.deltas):
            if fault and fault.cut_after == i:
                return response
            if fault and fault.malformed_after == i:
                await send(_malformed_frame(fault.malformed))
                return response
            if fault and fault.exception_after == i:
                await send(exception_frame(fault.stream_exception, fault.message))
                return response
            await send(event_frame("contentBlockDelta", {"contentBlockIndex": 0, "delta": delta}))
        if answer.content:
            await send(event_frame("contentBlockStop", {"contentBlockIndex": 0}))
        stop: dict[str, Any] = {"stopReason": answer.stop_reason}
        if answer.additional is not None:
            stop["additionalModelResponseFields"] = answer.additional
        await send(event_frame("messageStop", stop))
        await send(event_frame("metadata", {"usage": usage, "metrics": {"latencyMs": 1}}))
        return response


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def _error(
    status: int,
    refusal: Refusal,
    request_id: str,
    namespace: str = BEDROCK_ERRORS,
    headers: dict[str, str] | None = None,
) -> web.Response:
    return _json(
        status,
        {"message": refusal.message},
        {**(headers or {}), "x-amzn-RequestId": request_id, "x-amzn-ErrorType": f"{refusal.kind}:{namespace}"},
    )


def _json(status: int, value: Any, headers: dict[str, str]) -> web.Response:
    """Compact JSON with the service's bare `Content-Type: application/json` (no charset)."""
    return web.Response(
        status=status, body=_compact(value).encode(), headers={**headers, "Content-Type": "application/json"}
    )


def _malformed_frame(kind: str) -> bytes:
    if kind == "json":
        headers = {":event-type": "contentBlockDelta", ":content-type": "application/json", ":message-type": "event"}
        return encode_event(headers, b"{not json")
    frame = bytearray(event_frame("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "x"}}))
    frame[-1] ^= 0xFF
    return bytes(frame)


def _request_timestamp(request: web.Request) -> str | None:
    """The signing time, from X-Amz-Date or else the Date header, as SigV4 writes it."""
    amz_date = request.headers.get("X-Amz-Date")
    if amz_date:
        return amz_date
    date = request.headers.get("Date")
    if not date:
        return None
    try:
        return parsedate_to_datetime(date).astimezone(datetime.UTC).strftime(SIGV4_TIMESTAMP)
    except (TypeError, ValueError):
        return None


def _check_scope(scope: str, timestamp: str, region: str) -> Refusal | None:
    date, _, rest = scope.partition("/")
    scope_region, _, rest = rest.partition("/")
    service, _, terminator = rest.partition("/")
    if date != timestamp[:8]:
        return Refusal(
            "InvalidSignatureException",
            f"Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: "
            f"'{date}' != '{timestamp[:8]}', from '{timestamp}'.",
        )
    if scope_region != region:
        return Refusal(
            "InvalidSignatureException", f"Credential should be scoped to a valid region, not '{scope_region}'. "
        )
    if service != SERVICE:
        return Refusal("InvalidSignatureException", f"Credential should be scoped to correct service: '{SERVICE}'. ")
    if terminator != "aws4_request":
        return Refusal(
            "IncompleteSignatureException", "Credential should be scoped with a valid terminator: 'aws4_request'."
        )
    return None


def _check_clock(timestamp: str) -> Refusal | None:
    try:
        signed_at = datetime.datetime.strptime(timestamp, SIGV4_TIMESTAMP).replace(tzinfo=datetime.UTC)
    except ValueError:
        return Refusal("IncompleteSignatureException", f"Date must be in ISO-8601 'basic format'. Got '{timestamp}'.")
    now = datetime.datetime.now(datetime.UTC)
    shown = now.strftime(SIGV4_TIMESTAMP)
    if signed_at < now - MAX_SKEW:
        earliest = (now - MAX_SKEW).strftime(SIGV4_TIMESTAMP)
        return Refusal(
            "InvalidSignatureException",
            f"Signature expired: {timestamp} is now earlier than {earliest} ({shown} - 5 min.)",
        )
    if signed_at > now + MAX_SKEW:
        latest = (now + MAX_SKEW).strftime(SIGV4_TIMESTAMP)
        return Refusal(
            "InvalidSignatureException",
            f"Signature not yet current: {timestamp} is still later than {latest} ({shown} + 5 min.)",
        )
    return None


# Answers.


def _text_of(blocks: list[dict[str, Any]]) -> str:
    return " ".join(block["text"] for block in blocks if "text" in block)


def _last_user_text(messages: list[dict[str, Any]]) -> str:
    for message in reversed(messages):
        if message["role"] == "user":
            return _text_of(message["content"])
    return ""


def _tool_results(message: dict[str, Any]) -> list[dict[str, Any]]:
    return [block["toolResult"] for block in message["content"] if "toolResult" in block]


def _tool_to_call(body: dict[str, Any]) -> str | None:
    """The name of the tool the model calls instead of answering, if it does."""
    config = body.get("toolConfig")
    last = body["messages"][-1]
    if not config or last["role"] != "user" or _tool_results(last):
        return None
    names = [tool["toolSpec"]["name"] for tool in config["tools"] if "toolSpec" in tool]
    if not names:
        return None
    choice = config.get("toolChoice") or {}
    if "tool" in choice:
        return str(choice["tool"]["name"])
    return str(names[0])


def _result_text(result: dict[str, Any]) -> str:
    for part in result["content"]:
        if "text" in part:
            return str(part["text"])
    for part in result["content"]:
        if "json" in part:
            return json.dumps(part["json"])
    return ""


def _reply_text(body: dict[str, Any], prefix: str) -> tuple[str, str, str | None]:
    """The text answer, its stop reason and the stop sequence that cut it, if one did."""
    last = body["messages"][-1]
    results = _tool_results(last) if last["role"] == "user" else []
    said = "tool said: " + _result_text(results[0]) if results else _last_user_text(body["messages"])
    text = prefix + said
    sequences = (body.get("inferenceConfig") or {}).get("stopSequences") or []
    hits = [(text.find(sequence), sequence) for sequence in sequences if sequence in text]
    if hits:
        at, sequence = min(hits)
        return text[:at], "stop_sequence", sequence
    return text, "end_turn", None


# Validation: the model's shapes (Coral's constraint wording, 1-based `.member` paths), then Bedrock's rules.


def _type_error(name: str, value: Any, expected: str) -> Refusal:
    # Mock wording: the service's text for JSON of the wrong type is not documented.
    return Refusal(
        "SerializationException", f"Invalid type for parameter {name}, value: {_compact(value)}, expected: {expected}"
    )


def _unknown_key(name: str, key: str, members: tuple[str, ...]) -> Refusal:
    # botocore's client-side wording (validate.py): the service's own is not documented.
    return Refusal("ValidationException", f'Unknown parameter in {name}: "{key}", must be one of: {", ".join(members)}')


def _constraint(shown: str, path: str, rule: str) -> Refusal:
    return Refusal(
        "ValidationException",
        f"1 validation error detected: Value {shown} at '{path}' failed to satisfy constraint: Member must {rule}",
    )


def _null(path: str) -> Refusal:
    return _constraint("null", path, "not be null")


def _structure(value: Any, name: str, members: tuple[str, ...]) -> Refusal | None:
    if not isinstance(value, dict):
        return _type_error(name, value, "object")
    for key in value:
        if key not in members:
            return _unknown_key(name, key, members)
    return None


def _union(value: Any, name: str, members: tuple[str, ...]) -> Refusal | str:
    """The member a tagged union sets, or why it is refused (botocore's client-side wording)."""
    refusal = _structure(value, name, members)
    if refusal:
        return refusal
    if len(value) != 1:
        keys = ", ".join(members)
        if not value:
            return Refusal(
                "ValidationException", f"Must set one of the following keys for tagged union structure {name}: {keys}."
            )
        return Refusal(
            "ValidationException",
            f"Invalid number of parameters set for tagged union structure {name}. Can only set one of the "
            f"following keys: {keys}.",
        )
    return str(next(iter(value)))


def _string(
    value: Any,
    name: str,
    path: str,
    *,
    min_length: int = 0,
    max_length: int | None = None,
    pattern: str | None = None,
    enum: tuple[str, ...] | None = None,
) -> Refusal | None:
    if not isinstance(value, str):
        return _type_error(name, value, "string")
    shown = f"'{value}'"
    if enum is not None and value not in enum:
        return _constraint(shown, path, f"satisfy enum value set: [{', '.join(enum)}]")
    if len(value) < min_length:
        return _constraint(shown, path, f"have length greater than or equal to {min_length}")
    if max_length is not None and len(value) > max_length:
        return _constraint(shown, path, f"have length less than or equal to {max_length}")
    if pattern is not None and not re.fullmatch(pattern, value):
        return _constraint(shown, path, f"satisfy regular expression pattern: {pattern}")
    return None


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _validate(body: Any, *, stream: bool) -> Refusal | None:
    """Why Bedrock would refuse this Converse(Stream) body with a 400, in its words; None when it would not."""
    if not isinstance(body, dict):
        return _type_error("input", body, "object")
    for key in body:
        if key not in TOP_LEVEL:
            # What Bedrock answered for an unknown top-level field sent to an Anthropic model.
            return Refusal(
                "ValidationException", f"The model returned the following errors: {key}: Extra inputs are not permitted"
            )
    return (
        _validate_messages(body.get("messages"))
        or _validate_system(body.get("system"))
        or _validate_inference(body.get("inferenceConfig"))
        or _validate_tool_config(body.get("toolConfig"))
        or _validate_guardrail(body.get("guardrailConfig"), stream=stream)
        or _validate_extras(body)
        or _validate_conversation(body)
    )


def _validate_messages(messages: Any) -> Refusal | None:
    if messages is None:
        return None
    if not isinstance(messages, list):
        return _type_error("messages", messages, "list")
    for i, message in enumerate(messages):
        name, path = f"messages[{i}]", f"messages.{i + 1}.member"
        refusal = _structure(message, name, ("role", "content"))
        if refusal:
            return refusal
        if message.get("role") is None:
            return _null(f"{path}.role")
        refusal = _string(message["role"], f"{name}.role", f"{path}.role", enum=ROLES)
        if refusal:
            return refusal
        content = message.get("content")
        if content is None:
            return _null(f"{path}.content")
        if not isinstance(content, list):
            return _type_error(f"{name}.content", content, "list")
        for j, block in enumerate(content):
            refusal = _validate_block(block, f"{name}.content[{j}]", f"{path}.content.{j + 1}.member")
            if refusal:
                return refusal
    return None


def _validate_block(block: Any, name: str, path: str) -> Refusal | None:
    kind = _union(block, name, BLOCK_MEMBERS)
    if isinstance(kind, Refusal):
        return kind
    value = block[kind]
    if kind == "text":
        return None if isinstance(value, str) else _type_error(f"{name}.text", value, "string")
    if kind == "image":
        return _validate_image(value, f"{name}.image", f"{path}.image")
    if kind == "toolUse":
        return _validate_tool_use(value, f"{name}.toolUse", f"{path}.toolUse")
    if kind == "toolResult":
        return _validate_tool_result(value, f"{name}.toolResult", f"{path}.toolResult")
    if kind == "cachePoint":
        return _validate_cache_point(value, f"{name}.cachePoint", f"{path}.cachePoint")
    # document, video, audio, guardContent, reasoningContent, ...: accepted as the model allows, unchecked.
    return None if isinstance(value, dict) else _type_error(f"{name}.{kind}", value, "object")


def _validate_image(image: Any, name: str, path: str) -> Refusal | None:
    refusal = _structure(image, name, ("format", "source", "error"))
    if refusal:
        return refusal
    if image.get("format") is None:
        return _null(f"{path}.format")
    refusal = _string(image["format"], f"{name}.format", f"{path}.format", enum=IMAGE_FORMATS)
    if refusal:
        return refusal
    if image.get("source") is None:
        return _null(f"{path}.source")
    source = image["source"]
    kind = _union(source, f"{name}.source", ("bytes", "s3Location"))
    if isinstance(kind, Refusal):
        return kind
    if kind == "s3Location":
        location = source["s3Location"]
        refusal = _structure(location, f"{name}.source.s3Location", ("uri", "bucketOwner"))
        if refusal:
            return refusal
        if location.get("uri") is None:
            return _null(f"{path}.source.s3Location.uri")
        return _string(location["uri"], f"{name}.source.s3Location.uri", f"{path}.source.s3Location.uri")
    data = source["bytes"]
    if not isinstance(data, str):
        return _type_error(f"{name}.source.bytes", data, "base64 string")
    try:
        decoded = base64.b64decode(data, validate=True)
    except binascii.Error:
        # Mock wording: blobs travel as base64 in JSON; the service's text for bad base64 is not documented.
        return Refusal("SerializationException", f"Invalid base64 at {name}.source.bytes")
    if not decoded:
        # ImageSource is sensitive: Coral leaves the value out.
        return Refusal(
            "ValidationException",
            f"1 validation error detected: Value at '{path}.source.bytes' failed to satisfy constraint: "
            "Member must have length greater than or equal to 1",
        )
    return None


def _validate_tool_use(tool_use: Any, name: str, path: str) -> Refusal | None:
    refusal = _structure(tool_use, name, ("toolUseId", "name", "input", "type"))
    if refusal:
        return refusal
    for member in ("toolUseId", "name", "input"):
        if tool_use.get(member) is None:
            return _null(f"{path}.{member}")
    return (
        _string(
            tool_use["toolUseId"],
            f"{name}.toolUseId",
            f"{path}.toolUseId",
            min_length=1,
            max_length=64,
            pattern=TOOL_USE_ID,
        )
        or _string(tool_use["name"], f"{name}.name", f"{path}.name", min_length=1, max_length=64, pattern=TOOL_NAME)
        or (
            _string(tool_use["type"], f"{name}.type", f"{path}.type", enum=("server_tool_use",))
            if tool_use.get("type") is not None
            else None
        )
    )


def _validate_tool_result(result: Any, name: str, path: str) -> Refusal | None:
    refusal = _structure(result, name, ("toolUseId", "content", "status", "type"))
    if refusal:
        return refusal
    if result.get("toolUseId") is None:
        return _null(f"{path}.toolUseId")
    refusal = _string(
        result["toolUseId"], f"{name}.toolUseId", f"{path}.toolUseId", min_length=1, max_length=64, pattern=TOOL_USE_ID
    )
    if refusal:
        return refusal
    if result.get("content") is None:
        return _null(f"{path}.content")
    content = result["content"]
    if not isinstance(content, list):
        return _type_error(f"{name}.content", content, "list")
    for k, part in enumerate(content):
        inner, inner_path = f"{name}.content[{k}]", f"{path}.content.{k + 1}.member"
        kind = _union(part, inner, RESULT_MEMBERS)
        if isinstance(kind, Refusal):
            return kind
        value = part[kind]
        if kind == "text" and not isinstance(value, str):
            return _type_error(f"{inner}.text", value, "string")
        if kind == "image":
            refusal = _validate_image(value, f"{inner}.image", f"{inner_path}.image")
            if refusal:
                return refusal
        if kind in ("document", "video", "searchResult") and not isinstance(value, dict):
            return _type_error(f"{inner}.{kind}", value, "object")
    if result.get("status") is not None:
        return _string(result["status"], f"{name}.status", f"{path}.status", enum=("success", "error"))
    return None


def _validate_cache_point(point: Any, name: str, path: str) -> Refusal | None:
    refusal = _structure(point, name, ("type", "ttl"))
    if refusal:
        return refusal
    if point.get("type") is None:
        return _null(f"{path}.type")
    return _string(point["type"], f"{name}.type", f"{path}.type", enum=("default",))


def _validate_system(system: Any) -> Refusal | None:
    if system is None:
        return None
    if not isinstance(system, list):
        return _type_error("system", system, "list")
    for i, block in enumerate(system):
        name, path = f"system[{i}]", f"system.{i + 1}.member"
        kind = _union(block, name, SYSTEM_MEMBERS)
        if isinstance(kind, Refusal):
            return kind
        if kind == "text":
            refusal = _string(block["text"], f"{name}.text", f"{path}.text", min_length=1)
        elif kind == "cachePoint":
            refusal = _validate_cache_point(block["cachePoint"], f"{name}.cachePoint", f"{path}.cachePoint")
        else:
            refusal = None if isinstance(block[kind], dict) else _type_error(f"{name}.{kind}", block[kind], "object")
        if refusal:
            return refusal
    return None


def _validate_inference(config: Any) -> Refusal | None:
    if config is None:
        return None
    refusal = _structure(config, "inferenceConfig", ("maxTokens", "temperature", "topP", "stopSequences"))
    if refusal:
        return refusal
    max_tokens = config.get("maxTokens")
    if max_tokens is not None:
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool):
            return _type_error("inferenceConfig.maxTokens", max_tokens, "integer")
        if max_tokens < 1:
            return _constraint(f"'{max_tokens}'", "inferenceConfig.maxTokens", "have value greater than or equal to 1")
    for member in ("temperature", "topP"):
        value = config.get(member)
        if value is None:
            continue
        if not _is_number(value):
            return _type_error(f"inferenceConfig.{member}", value, "float")
        if value < 0:
            return _constraint(
                f"'{float(value)}'", f"inferenceConfig.{member}", "have value greater than or equal to 0"
            )
        if value > 1:
            return _constraint(f"'{float(value)}'", f"inferenceConfig.{member}", "have value less than or equal to 1")
    sequences = config.get("stopSequences")
    if sequences is None:
        return None
    if not isinstance(sequences, list):
        return _type_error("inferenceConfig.stopSequences", sequences, "list")
    if len(sequences) > 2500:
        return _constraint(f"'{sequences}'", "inferenceConfig.stopSequences", "have length less than or equal to 2500")
    for i, sequence in enumerate(sequences):
        refusal = _string(
            sequence,
            f"inferenceConfig.stopSequences[{i}]",
            f"inferenceConfig.stopSequences.{i + 1}.member",
            min_length=1,
        )
        if refusal:
            return refusal
    return None


def _validate_tool_config(config: Any) -> Refusal | None:
    if config is None:
        return None
    refusal = _structure(config, "toolConfig", ("tools", "toolChoice"))
    if refusal:
        return refusal
    tools = config.get("tools")
    if tools is None:
        return _null("toolConfig.tools")
    if not isinstance(tools, list):
        return _type_error("toolConfig.tools", tools, "list")
    if not tools:
        return _constraint("'[]'", "toolConfig.tools", "have length greater than or equal to 1")
    for i, tool in enumerate(tools):
        refusal = _validate_tool(tool, f"toolConfig.tools[{i}]", f"toolConfig.tools.{i + 1}.member")
        if refusal:
            return refusal
    choice = config.get("toolChoice")
    if choice is None:
        return None
    kind = _union(choice, "toolConfig.toolChoice", ("auto", "any", "tool"))
    if isinstance(kind, Refusal):
        return kind
    if kind != "tool":
        return _structure(choice[kind], f"toolConfig.toolChoice.{kind}", ())
    specific = choice["tool"]
    refusal = _structure(specific, "toolConfig.toolChoice.tool", ("name",))
    if refusal:
        return refusal
    if specific.get("name") is None:
        return _null("toolConfig.toolChoice.tool.name")
    return _string(
        specific["name"], "toolConfig.toolChoice.tool.name", "toolConfig.toolChoice.tool.name",
        min_length=1, max_length=64, pattern=TOOL_NAME,
    )  # fmt: skip


def _validate_tool(tool: Any, name: str, path: str) -> Refusal | None:
    kind = _union(tool, name, ("toolSpec", "systemTool", "cachePoint"))
    if isinstance(kind, Refusal):
        return kind
    if kind == "cachePoint":
        return _validate_cache_point(tool["cachePoint"], f"{name}.cachePoint", f"{path}.cachePoint")
    if kind == "systemTool":
        return (
            None
            if isinstance(tool["systemTool"], dict)
            else _type_error(f"{name}.systemTool", tool["systemTool"], "object")
        )
    spec, name, path = tool["toolSpec"], f"{name}.toolSpec", f"{path}.toolSpec"
    refusal = _structure(spec, name, ("name", "description", "inputSchema", "strict"))
    if refusal:
        return refusal
    if spec.get("name") is None:
        return _null(f"{path}.name")
    refusal = _string(spec["name"], f"{name}.name", f"{path}.name", min_length=1, max_length=64, pattern=TOOL_NAME)
    if refusal:
        return refusal
    if spec.get("description") is not None:
        refusal = _string(spec["description"], f"{name}.description", f"{path}.description", min_length=1)
        if refusal:
            return refusal
    if spec.get("strict") is not None and not isinstance(spec["strict"], bool):
        return _type_error(f"{name}.strict", spec["strict"], "boolean")
    if spec.get("inputSchema") is None:
        return _null(f"{path}.inputSchema")
    kind = _union(spec["inputSchema"], f"{name}.inputSchema", ("json",))
    return kind if isinstance(kind, Refusal) else None


def _validate_guardrail(config: Any, *, stream: bool) -> Refusal | None:
    if config is None:
        return None
    members = ("guardrailIdentifier", "guardrailVersion", "trace")
    refusal = _structure(config, "guardrailConfig", (*members, "streamProcessingMode") if stream else members)
    if refusal:
        return refusal
    for member in (*members, "streamProcessingMode"):
        value = config.get(member)
        if value is None:
            continue
        path = f"guardrailConfig.{member}"
        if member == "guardrailIdentifier":
            refusal = _string(value, path, path, max_length=2048, pattern=GUARDRAIL_ID)
        elif member == "guardrailVersion":
            refusal = _string(value, path, path, pattern=GUARDRAIL_VERSION)
        elif member == "trace":
            refusal = _string(value, path, path, enum=("enabled", "disabled", "enabled_full"))
        else:
            refusal = _string(value, path, path, enum=("sync", "async"))
        if refusal:
            return refusal
    return None


def _validate_extras(body: dict[str, Any]) -> Refusal | None:
    """additionalModelRequestFields, additionalModelResponseFieldPaths, promptVariables, requestMetadata,
    performanceConfig, serviceTier, outputConfig and projectIdentifier: their shapes only."""
    extra = body.get("additionalModelRequestFields")
    if extra is not None and not isinstance(extra, dict):
        return _type_error("additionalModelRequestFields", extra, "object")
    paths = body.get("additionalModelResponseFieldPaths")
    if paths is not None:
        if not isinstance(paths, list):
            return _type_error("additionalModelResponseFieldPaths", paths, "list")
        if len(paths) > 10:
            return _constraint(
                f"'{paths}'", "additionalModelResponseFieldPaths", "have length less than or equal to 10"
            )
        for i, item in enumerate(paths):
            refusal = _string(
                item, f"additionalModelResponseFieldPaths[{i}]", f"additionalModelResponseFieldPaths.{i + 1}.member",
                min_length=1, max_length=256,
            )  # fmt: skip
            if refusal:
                return refusal
    variables = body.get("promptVariables")
    if variables is not None:
        if not isinstance(variables, dict):
            return _type_error("promptVariables", variables, "object")
        for key, value in variables.items():
            kind = _union(value, f"promptVariables.{key}", ("text",))
            if isinstance(kind, Refusal):
                return kind
            if not isinstance(value["text"], str):
                return _type_error(f"promptVariables.{key}.text", value["text"], "string")
    refusal = _validate_metadata(body.get("requestMetadata"))
    if refusal:
        return refusal
    performance = body.get("performanceConfig")
    if performance is not None:
        refusal = _structure(performance, "performanceConfig", ("latency",))
        if refusal:
            return refusal
        if performance.get("latency") is not None:
            path = "performanceConfig.latency"
            refusal = _string(performance["latency"], path, path, enum=("standard", "optimized"))
            if refusal:
                return refusal
    tier = body.get("serviceTier")
    if tier is not None:
        refusal = _structure(tier, "serviceTier", ("type",))
        if refusal:
            return refusal
        if tier.get("type") is None:
            return _null("serviceTier.type")
        refusal = _string(
            tier["type"], "serviceTier.type", "serviceTier.type", enum=("priority", "default", "flex", "reserved")
        )
        if refusal:
            return refusal
    output = body.get("outputConfig")
    if output is not None and not isinstance(output, dict):
        return _type_error("outputConfig", output, "object")
    project = body.get("projectIdentifier")
    if project is not None:
        return _string(project, "projectIdentifier", "projectIdentifier", min_length=1, max_length=2048)
    return None


def _validate_metadata(metadata: Any) -> Refusal | None:
    if metadata is None:
        return None
    if not isinstance(metadata, dict):
        return _type_error("requestMetadata", metadata, "object")
    # RequestMetadata is sensitive: Coral leaves the value out.
    prefix = "1 validation error detected: Value at 'requestMetadata' failed to satisfy constraint: "
    if not 1 <= len(metadata) <= 16:
        bound = "greater than or equal to 1" if not metadata else "less than or equal to 16"
        return Refusal("ValidationException", f"{prefix}Member must have length {bound}")
    for key, value in metadata.items():
        if not isinstance(value, str):
            return _type_error(f"requestMetadata.{key}", value, "string")
        if not re.fullmatch(METADATA_KEY, key):
            return Refusal(
                "ValidationException",
                f"{prefix}Map keys must satisfy constraint: [Member must satisfy regular expression pattern: "
                f"{METADATA_KEY}]",
            )
        if not re.fullmatch(METADATA_VALUE, value):
            return Refusal(
                "ValidationException",
                f"{prefix}Map values must satisfy constraint: [Member must satisfy regular expression pattern: "
                f"{METADATA_VALUE}]",
            )
    return None


def _validate_conversation(body: dict[str, Any]) -> Refusal | None:
    """Bedrock's own rules over a body of valid shapes, in its words (0-based paths)."""
    messages: list[dict[str, Any]] = body.get("messages") or []
    if not messages or messages[0]["role"] != "user":
        return Refusal(
            "ValidationException",
            "A conversation must start with a user message. Try again with a conversation that starts with a user "
            "message.",
        )
    for i, message in enumerate(messages):
        if not message["content"]:
            return Refusal(
                "ValidationException",
                f"The content field in the Message object at messages.{i} is empty. Add a ContentBlock object to "
                "the content field and try again.",
            )
        if i and message["role"] == messages[i - 1]["role"]:
            return Refusal(
                "ValidationException",
                "A conversation must alternate between user and assistant roles. Make sure the conversation "
                "alternates between user and assistant roles and try again.",
            )
        for j, block in enumerate(message["content"]):
            if "text" in block and not block["text"].strip():
                return Refusal(
                    "ValidationException",
                    f"The text field in the ContentBlock object at messages.{i}.content.{j} is blank. Add text to "
                    "the text field, and try again.",
                )
    uses_tools = any(
        "toolUse" in block or "toolResult" in block for message in messages for block in message["content"]
    )
    if uses_tools and not body.get("toolConfig"):
        return Refusal(
            "ValidationException",
            "The toolConfig field must be defined when using toolUse and toolResult content blocks.",
        )
    return _validate_tool_turns(messages) or _validate_tool_choice(body) or _validate_conflicts(body)


def _validate_tool_turns(messages: list[dict[str, Any]]) -> Refusal | None:
    """Each turn's toolResult blocks answer exactly the previous turn's toolUse blocks."""
    for i, message in enumerate(messages):
        previous = messages[i - 1]["content"] if i else []
        asked = [block["toolUse"]["toolUseId"] for block in previous if "toolUse" in block]
        results = [(j, block["toolResult"]) for j, block in enumerate(message["content"]) if "toolResult" in block]
        if len(results) > len(asked):
            return Refusal(
                "ValidationException",
                f"The number of toolResult blocks at messages.{i}.content exceeds the number of toolUse blocks of "
                "previous turn.",
            )
        answered = {result["toolUseId"] for _, result in results}
        missing = [tool_use_id for tool_use_id in asked if tool_use_id not in answered]
        if missing:
            return Refusal(
                "ValidationException",
                f"Expected toolResult blocks at messages.{i}.content for the following Ids: {', '.join(missing)}",
            )
        for j, result in results:
            where = f"messages.{i}.content.{j}.toolResult"
            if not result["content"] and result.get("status") == "error":
                return Refusal(
                    "ValidationException", f"The content field at {where} cannot be empty when status value is error."
                )
            for k, part in enumerate(result["content"]):
                if "json" in part and not isinstance(part["json"], dict):
                    return Refusal(
                        "ValidationException",
                        f"The format of the value at {where}.content.{k}.json is invalid. Provide a json object for "
                        "the field and try again.",
                    )
    return None


def _validate_tool_choice(body: dict[str, Any]) -> Refusal | None:
    config = body.get("toolConfig") or {}
    choice = config.get("toolChoice") or {}
    if "tool" not in choice:
        return None
    names = [tool["toolSpec"]["name"] for tool in config["tools"] if "toolSpec" in tool]
    if choice["tool"]["name"] in names:
        return None
    # Mock wording: the service's text for a forced tool that is not declared is not documented.
    return Refusal("ValidationException", f"The tool {choice['tool']['name']} in toolChoice is not defined in tools.")


def _validate_conflicts(body: dict[str, Any]) -> Refusal | None:
    for key in body.get("additionalModelRequestFields") or {}:
        taken = CONVERSE_FIELDS.get(key)
        if taken is not None and taken(body):
            return Refusal("ValidationException", f"The additional field {key} conflicts with an existing field.")
    return None
