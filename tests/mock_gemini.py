"""A local server speaking Google's Gemini API (Generative Language API v1beta), for tests.

Endpoints: `POST /v1beta/models/{model}:generateContent` and
`POST /v1beta/models/{model}:streamGenerateContent`, server-sent events with `?alt=sse`
(`data: <GenerateContentResponse>` + CRLF CRLF, no end sentinel), otherwise one JSON array
streamed element by element, as the API does. The key comes in `x-goog-api-key` (or `?key=`).

It checks requests the way the API does and answers with Google's error body
(`{"error": {"code", "message", "status", "details"?}}`, pretty-printed like the API's):

- a missing key is a 403 PERMISSION_DENIED ("Method doesn't allow unregistered callers ..."), a
  wrong one a 400 INVALID_ARGUMENT with an `ErrorInfo` detail of reason API_KEY_INVALID;
- the body is read as the API's proto-JSON parser reads it: camelCase and snake_case names both
  work, unknown names are `Invalid JSON payload received. Unknown name "x" at 'generation_config':
  Cannot find field.`, wrong types `Invalid value at '<path>' (<TYPE>), <value>`, a second data
  field in a part `... oneof field 'data' is already set. Cannot set '<key>'` (all of them, joined
  by newlines, with a `BadRequest` detail listing each);
- then its checks, `* GenerateContentRequest.<path>: <problem>` lines: contents not specified,
  empty parts, parts without data, function names, function parameter schemas, response MIME
  types, sampling ranges, stop sequences, schemas without JSON output, function calling config;
- then roles ("Please use a valid role: user, model.") and the order of function turns (a
  function response must answer the function call turn right before it, with as many parts).

The messages copy the API's own wording where it is known (see tests/fixtures/gemini/README.md);
the rest follow its pattern and are marked "mock wording" below.

Answers are deterministic:

- text "<reply_prefix><last user text>" (finishReason STOP), cut before the first stop sequence
  it contains (STOP too, as the API reports), or to `maxOutputTokens` words (MAX_TOKENS);
- a `functionCall` of the first allowed (mode ANY/VALIDATED) or else first declared function,
  args `{"text": <last user text>}`, finishReason STOP (the API has no tool-call reason), when
  functions are declared, mode is not NONE and the last user turn holds no function response;
- "<reply_prefix>tool said: <json of the first functionResponse.response>" after a response;
- `{"answer": <that text>}` as JSON text under responseMimeType application/json;
- `block_prompt`: `promptFeedback` with blockReason SAFETY and no candidates (HTTP 200);
- `safety_stop`: a candidate ending with finishReason SAFETY and its safety ratings.

Usage: `len(json.dumps(contents)) // 4` prompt tokens, one candidate token per word (per
space-separated piece of `json.dumps(args)` for a call), `cached_tokens` as cached content;
zero counts are left out as the API leaves them out.

Streams send one response per word (`candidates[0].content.parts[0].text` is the piece), a
function call whole in one; every chunk carries usageMetadata with the counts so far, the last
also finishReason. A `fault` makes the mock misbehave the ways the real upstream does; the API
reports an error after the 200 as a bare pretty-printed JSON object after the last event, not as
an event.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import re
from dataclasses import dataclass, field, replace
from typing import Any, Final, Literal

from aiohttp import web

from tests.loopback import LoopbackServer

API_PREFIX = "/v1beta/models/"
METHODS = ("generateContent", "streamGenerateContent")
PROTO_PACKAGE = "type.googleapis.com/google.ai.generativelanguage.v1beta"
# google.rpc.Code names for HTTP statuses (googleapis google/rpc/code.proto); 402 per the Gemini API errors page.
STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    402: "RESOURCE_EXHAUSTED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
API_KEY_INVALID = "API key not valid. Please pass a valid API key."
UNREGISTERED_CALLER = (
    "Method doesn't allow unregistered callers (callers without established identity). "
    "Please use API Key or other form of API consumer identity to call this API."
)
PROMPT_TOO_LONG = "The input token count (1200000) exceeds the maximum number of tokens allowed (1048575)."
OVERLOADED = "The model is overloaded. Please try again later."
INVALID_ROLE = "Please use a valid role: user, model."
RESPONSE_AFTER_CALL = "Please ensure that function response turn comes immediately after a function call turn."
CALL_AFTER_USER = (
    "Please ensure that function call turn comes immediately after a user turn or after a function response turn."
)
RESPONSE_COUNT = (
    "Please ensure that the number of function response parts is equal to the number of function call parts "
    "of the function call turn."
)
FUNCTION_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_.:-]{0,63}")
INVALID_FUNCTION_NAME = (
    "Invalid function name. Must start with a letter or an underscore. Must be alphameric (a-z, A-Z, 0-9), "
    "underscores (_), dots (.), colons (:), or dashes (-), with a maximum length of 64."
)
RESPONSE_MIME_TYPES = ("text/plain", "application/json", "application/xml", "application/yaml", "text/x.enum")
INVALID_MIME_TYPE = (
    "allowed mimetypes are `text/plain`, `application/json`, `application/xml`, `application/yaml` and `text/x.enum`."
)
SCHEMA_MIME_TYPES = ("application/json", "text/x.enum")
MAX_STOP_SEQUENCES = 5
# The Part oneof 'data'; thought, thoughtSignature, videoMetadata, partMetadata, mediaResolution go beside it.
DATA_FIELDS = (
    "text",
    "inlineData",
    "fileData",
    "functionCall",
    "functionResponse",
    "executableCode",
    "codeExecutionResult",
)
SAFETY_CATEGORIES = (
    "HARM_CATEGORY_SEXUALLY_EXPLICIT",
    "HARM_CATEGORY_HATE_SPEECH",
    "HARM_CATEGORY_HARASSMENT",
    "HARM_CATEGORY_DANGEROUS_CONTENT",
)
JSON_CONTENT_TYPE = "application/json; charset=UTF-8"
SSE_CONTENT_TYPE = "text/event-stream"
MALFORMED = "{not json"

FinalChunk = Literal["merged", "empty_text", "no_content"]


@dataclass
class Fault:
    """How the next requests fail, after validation. `status` answers with that HTTP status, its google.rpc
    status name (or `status_name`), `message` and `details` (plus a RetryInfo detail when `retry_delay_s` is
    set); `prompt_too_long` answers the API's 400 for an oversized prompt; `hang_s` waits before answering.
    In streams, counting chunks from 0: `cut_after` ends the body after that many chunks without the one
    holding finishReason, `malformed_after` sends a non-JSON chunk and ends, `error_after` sends an error
    (`error_code`, `error_message`) and ends: as the bare pretty-printed JSON object the API sends after
    the last event, or as a `data:` event when `error_as_event` is set."""

    status: int = 0
    status_name: str | None = None
    message: str = "mock failure"
    details: list[dict[str, Any]] = field(default_factory=list)
    retry_delay_s: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    hang_s: float = 0.0
    cut_after: int | None = None
    malformed_after: int | None = None
    error_after: int | None = None
    error_code: int = 503
    error_message: str = OVERLOADED
    error_as_event: bool = False
    prompt_too_long: bool = False


def status_name_for(status: int) -> str:
    """The google.rpc status name of an HTTP status; other 4XX are FAILED_PRECONDITION, other 5XX UNKNOWN."""
    return STATUS_NAMES.get(status) or ("FAILED_PRECONDITION" if status < 500 else "UNKNOWN")


def error_body(code: int, message: str, status: str | None = None, details: list[Any] | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message, "status": status or status_name_for(code)}
    if details:
        error["details"] = details
    return {"error": error}


class MockGemini(LoopbackServer):
    def __init__(
        self,
        *,
        api_key: str | None = None,
        reply_prefix: str = "mock: ",
        chunk_delay_s: float = 0.0,
        cached_tokens: int = 0,
        models: set[str] | None = None,
    ) -> None:
        super().__init__()
        self.api_key = api_key
        self.reply_prefix = reply_prefix
        self.chunk_delay_s = chunk_delay_s
        self.cached_tokens = cached_tokens
        # When set, other model names are a 404 NOT_FOUND as the API answers them.
        self.models = models
        self.block_prompt = False
        self.safety_stop = False
        # Words of the answer streamed (and kept in the unary candidate) before a safety stop.
        self.safety_stop_words = 0
        # Gemini 3 models give calls ids and thought signatures; older ones give neither.
        self.function_call_ids = False
        self.thought_signature: str | None = None
        # Where a stream reports finishReason: on its last content chunk (as the API mostly does) or in one more
        # chunk with an empty text part, or with no content at all (both seen from the API too).
        self.final_chunk: FinalChunk = "merged"
        self.fault: Fault | None = None
        # Bodies of the requests that parsed as JSON; headers (lower-cased names) and path+query of every request.
        self.requests: list[Any] = []
        self.headers: list[dict[str, str]] = []
        self.urls: list[str] = []
        self.requests_received = 0
        self.responses_made = 0
        self.function_calls_made = 0

    @property
    def base_url(self) -> str:
        """The API root: clients append /v1beta/models/{model}:generateContent."""
        return f"http://127.0.0.1:{self.port}"

    def routes(self, router: web.UrlDispatcher) -> None:
        router.add_route("*", "/{tail:.*}", self._handle)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.requests_received += 1
        self.headers.append({name.lower(): value for name, value in request.headers.items()})
        self.urls.append(request.path_qs)
        target = _route(request)
        if target is None:
            return _not_found_page(request.path)
        model, method = target
        raw = await request.read()
        try:
            # An empty body is an empty message to the API's parser.
            body: Any = json.loads(raw) if raw.strip() else {}
        except ValueError:
            parsed = False
        else:
            parsed = True
            self.requests.append(body)
        if self.api_key:
            key = request.headers.get("x-goog-api-key") or request.query.get("key")
            if not key:
                return _error(403, UNREGISTERED_CALLER)
            if key != self.api_key:
                return _error(400, API_KEY_INVALID, details=_api_key_invalid_details())
        alt = request.query.get("alt", "json")
        if alt not in ("json", "sse"):
            # Mock wording: the API's message for other `alt` values (proto, media) is not documented.
            return _error(400, f"Invalid value for alt: {alt}. Supported values are json and sse.")
        if not parsed:
            text = raw.decode(errors="replace").strip().splitlines()[0][:80]
            # The API's parser says which token it met; the mock does not parse that closely.
            return _parse_error([("", f"Invalid JSON payload received. Unexpected token.\n{text}\n^")])
        if not isinstance(body, dict):
            return _parse_error(
                [("", 'Invalid JSON payload received. Unknown name "": Root element must be a message.')]
            )
        parser = _Parser()
        req = parser.message(body, "GenerateContentRequest", "")
        if parser.violations:
            return _parse_error(parser.violations)
        if self.models is not None and model not in self.models:
            return _error(
                404,
                f"models/{model} is not found for API version v1beta, or is not supported for {method}. "
                "Call ListModels to see the list of available models and their supported methods.",
            )
        problem = _validate(req)
        if problem:
            return _error(400, problem)
        fault = self.fault
        if fault and fault.hang_s:
            await asyncio.sleep(fault.hang_s)
        if fault and fault.prompt_too_long:
            return _error(400, PROMPT_TOO_LONG, headers=fault.headers)
        if fault and fault.status:
            details = list(fault.details)
            if fault.retry_delay_s is not None:
                details.append(
                    {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": f"{fault.retry_delay_s}s"}
                )
            return _error(fault.status, fault.message, fault.status_name, details, fault.headers)
        return await self._answer(request, model, req, body.get("contents"), method, alt == "sse", fault)

    async def _answer(
        self,
        request: web.Request,
        model: str,
        req: dict[str, Any],
        raw_contents: Any,
        method: str,
        sse: bool,
        fault: Fault | None,
    ) -> web.StreamResponse:
        self.responses_made += 1
        tail = {"modelVersion": model, "responseId": f"mock-resp-{self.responses_made}"}
        prompt = len(json.dumps(raw_contents)) // 4
        if self.block_prompt:
            blocked = {
                "promptFeedback": {"blockReason": "SAFETY", "safetyRatings": _safety_ratings(blocked=False)},
                "usageMetadata": self._usage(prompt, 0),
                **tail,
            }
            if method == "generateContent":
                return _json_response(blocked)
            return await self._stream(request, [blocked], sse, fault)
        reply = self._reply(req)
        if method == "generateContent":
            candidate = _candidate(reply.parts, reply.finish, reply.ratings)
            return _json_response(
                {"candidates": [candidate], "usageMetadata": self._usage(prompt, reply.tokens), **tail}
            )
        chunks = []
        for i, (piece, tokens) in enumerate(reply.pieces):
            last = i == len(reply.pieces) - 1
            candidate = _candidate(piece, reply.finish if last else None, reply.ratings if last else None)
            chunks.append({"candidates": [candidate], "usageMetadata": self._usage(prompt, tokens), **tail})
        return await self._stream(request, chunks, sse, fault)

    def _reply(self, req: dict[str, Any]) -> _Reply:
        contents: list[dict[str, Any]] = req["contents"]
        config: dict[str, Any] = req.get("generationConfig", {})
        limit: int | None = config.get("maxOutputTokens")
        name = _function_to_call(req)
        if name is not None and not self.safety_stop:
            self.function_calls_made += 1
            call: dict[str, Any] = {"name": name, "args": {"text": _text_of(_last_user(contents))}}
            if self.function_call_ids:
                call = {"id": f"mock-call-{self.function_calls_made}", **call}
            part: dict[str, Any] = {"functionCall": call}
            if self.thought_signature is not None:
                part["thoughtSignature"] = self.thought_signature
            tokens = len(json.dumps(call["args"]).split(" "))
            if limit is not None and tokens > limit:
                # Out of tokens before the call is whole: the API sends a content with a role and no parts.
                return _Reply([], "MAX_TOKENS", limit, [([], limit)])
            return _Reply([part], "STOP", tokens, [([part], tokens)])
        text = _reply_text(req, self.reply_prefix)
        finish = "STOP"
        hits = [(text.find(s), s) for s in config.get("stopSequences", []) if s and s in text]
        if hits:
            text = text[: min(hits)[0]]
        words = text.split(" ") if text else []
        if limit is not None and len(words) > limit:
            words, finish = words[:limit], "MAX_TOKENS"
        ratings = None
        if self.safety_stop:
            words, finish, ratings = words[: self.safety_stop_words], "SAFETY", _safety_ratings(blocked=True)
        pieces: list[tuple[list[dict[str, Any]] | None, int]] = [
            ([{"text": word if i == 0 else " " + word}], i + 1) for i, word in enumerate(words)
        ]
        parts: list[dict[str, Any]] | None = [{"text": " ".join(words)}]
        if self.safety_stop:
            # The stopped candidate carries no content of its own; in a stream it comes after the words sent.
            pieces.append((None, len(words)))
            parts = parts if words else None
        elif not pieces:
            pieces = [([{"text": ""}], 0)]
        elif self.final_chunk == "empty_text":
            pieces.append(([{"text": ""}], len(words)))
        elif self.final_chunk == "no_content":
            pieces.append((None, len(words)))
        return _Reply(parts, finish, len(words), pieces, ratings)

    def _usage(self, prompt: int, output: int) -> dict[str, Any]:
        usage: dict[str, Any] = {"promptTokenCount": prompt}
        if output:
            usage["candidatesTokenCount"] = output
        usage["totalTokenCount"] = prompt + output
        if self.cached_tokens > 0:
            usage["cachedContentTokenCount"] = self.cached_tokens
        usage["promptTokensDetails"] = [{"modality": "TEXT", "tokenCount": prompt}]
        return usage

    async def _stream(
        self, request: web.Request, chunks: list[dict[str, Any]], sse: bool, fault: Fault | None
    ) -> web.StreamResponse:
        content_type = SSE_CONTENT_TYPE if sse else JSON_CONTENT_TYPE
        response = web.StreamResponse(headers={"Content-Type": content_type, "Cache-Control": "no-cache"})
        await response.prepare(request)

        async def send(text: str) -> None:
            await response.write(text.encode())
            if self.chunk_delay_s:
                await asyncio.sleep(self.chunk_delay_s)

        def event(data: str) -> str:
            return f"data: {data}\r\n\r\n"

        if not sse:
            await send("[")
        for i, chunk in enumerate(chunks):
            separator = "" if sse or i == 0 else ",\r\n"
            if fault and fault.cut_after == i:
                return response
            if fault and fault.malformed_after == i:
                await send(event(MALFORMED) if sse else separator + MALFORMED)
                return response
            if fault and fault.error_after == i:
                error = error_body(fault.error_code, fault.error_message)
                if not sse:
                    await send(separator + _pretty(error) + "]")
                elif fault.error_as_event:
                    await send(event(_compact(error)))
                else:
                    await send(_pretty(error) + "\n")
                return response
            await send(event(_compact(chunk)) if sse else separator + _pretty(chunk))
        if not sse:
            await send("]")
        return response


@dataclass
class _Reply:
    """An answer: the unary candidate's parts (None: no content), its finish reason and token count, and the
    stream's pieces (parts of each chunk, with the candidate tokens counted up to it)."""

    parts: list[dict[str, Any]] | None
    finish: str
    tokens: int
    pieces: list[tuple[list[dict[str, Any]] | None, int]]
    ratings: list[dict[str, Any]] | None = None


def _route(request: web.Request) -> tuple[str, str] | None:
    """The model and method of a POST to /v1beta/models/{model}:{method}, None for any other request."""
    path = request.path
    if request.method != "POST" or not path.startswith(API_PREFIX):
        return None
    model, _, method = path[len(API_PREFIX) :].rpartition(":")
    if not model or "/" in model or method not in METHODS:
        return None
    return model, method


def _pretty(payload: Any) -> str:
    """JSON as the API prints response bodies: two-space indents."""
    return json.dumps(payload, indent=2, ensure_ascii=False)


def _compact(payload: Any) -> str:
    """JSON as the API prints stream events: `": "` after keys, `","` between items."""
    return json.dumps(payload, separators=(",", ": "), ensure_ascii=False)


def _json_response(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status,
        body=(_pretty(payload) + "\n").encode(),
        headers={**(headers or {}), "Content-Type": JSON_CONTENT_TYPE},
    )


def _error(
    status: int,
    message: str,
    status_name: str | None = None,
    details: list[Any] | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    return _json_response(error_body(status, message, status_name, details), status, headers)


def _parse_error(violations: list[tuple[str, str]]) -> web.Response:
    """The API's 400 for a body its JSON parser refuses: every problem, and a BadRequest detail listing them."""
    described = [
        {"field": where, "description": text} if where else {"description": text} for where, text in violations
    ]
    details = [{"@type": "type.googleapis.com/google.rpc.BadRequest", "fieldViolations": described}]
    return _error(400, "\n".join(text for _, text in violations), details=details)


def _api_key_invalid_details() -> list[dict[str, Any]]:
    return [
        {
            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
            "reason": "API_KEY_INVALID",
            "domain": "googleapis.com",
            "metadata": {"service": "generativelanguage.googleapis.com"},
        },
        {"@type": "type.googleapis.com/google.rpc.LocalizedMessage", "locale": "en-US", "message": API_KEY_INVALID},
    ]


def _not_found_page(path: str) -> web.Response:
    """Google's front end answers unknown paths with an HTML page, not a JSON error."""
    page = (
        "<!DOCTYPE html>\n<html lang=en>\n  <meta charset=utf-8>\n  <title>Error 404 (Not Found)!!1</title>\n"
        "  <p><b>404.</b> <ins>That\u2019s an error.</ins>\n"
        f"  <p>The requested URL <code>{path}</code> was not found on this server.  "
        "<ins>That\u2019s all we know.</ins>\n"
    )
    return web.Response(status=404, body=page.encode(), headers={"Content-Type": "text/html; charset=UTF-8"})


def _candidate(
    parts: list[dict[str, Any]] | None, finish: str | None, ratings: list[dict[str, Any]] | None
) -> dict[str, Any]:
    candidate: dict[str, Any] = {}
    if parts is not None:
        # An empty repeated field is left out of proto JSON: a content without parts is just its role.
        candidate["content"] = {"parts": parts, "role": "model"} if parts else {"role": "model"}
    if finish:
        candidate["finishReason"] = finish
    candidate["index"] = 0
    if ratings:
        candidate["safetyRatings"] = ratings
    return candidate


def _safety_ratings(*, blocked: bool) -> list[dict[str, Any]]:
    """Ratings with the last category HIGH (and, on a stopped candidate, marked blocked)."""
    ratings: list[dict[str, Any]] = [{"category": c, "probability": "NEGLIGIBLE"} for c in SAFETY_CATEGORIES[:-1]]
    high: dict[str, Any] = {"category": SAFETY_CATEGORIES[-1], "probability": "HIGH"}
    if blocked:
        high["blocked"] = True
    return [*ratings, high]


def _parts(content: dict[str, Any]) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = content.get("parts", [])
    return parts


def _last_user(contents: list[dict[str, Any]]) -> dict[str, Any]:
    """The last content with the user role (which a content without a role has)."""
    users = [content for content in contents if content.get("role", "user") in ("user", "")]
    return users[-1] if users else {}


def _text_of(content: dict[str, Any]) -> str:
    return " ".join(part["text"] for part in _parts(content) if "text" in part)


def _function_to_call(req: dict[str, Any]) -> str | None:
    """The function the model calls instead of answering, if it does."""
    names = [d["name"] for tool in req.get("tools", []) for d in tool.get("functionDeclarations", [])]
    if not names:
        return None
    config: dict[str, Any] = req.get("toolConfig", {}).get("functionCallingConfig", {})
    mode = config.get("mode", "AUTO")
    if mode == "NONE":
        return None
    # The API in mode ANY calls again after a function response; like the other mocks, this one answers it.
    if any("functionResponse" in part for part in _parts(_last_user(req["contents"]))):
        return None
    allowed: list[str] = config.get("allowedFunctionNames", [])
    if mode in ("ANY", "VALIDATED") and allowed:
        return allowed[0]
    return str(names[0])


def _reply_text(req: dict[str, Any], prefix: str) -> str:
    last = _last_user(req["contents"])
    responses = [part["functionResponse"] for part in _parts(last) if "functionResponse" in part]
    if responses:
        text = f"{prefix}tool said: {json.dumps(responses[0].get('response', {}))}"
    else:
        text = prefix + _text_of(last)
    config: dict[str, Any] = req.get("generationConfig", {})
    mime = config.get("responseMimeType")
    if mime == "application/json":
        return json.dumps({"answer": text})
    values = config.get("responseSchema", {}).get("enum")
    if mime == "text/x.enum" and values:
        return str(values[0])
    return text


# The request as the API's proto-JSON parser reads it: messages, their fields (camelCase JSON names) and kinds.


@dataclass(frozen=True)
class _Kind:
    base: str  # string bool int32 int64 float double bytes enum message struct value
    name: str = ""  # of the enum or message
    repeated: bool = False
    mapped: bool = False  # map<string, this kind>


STRING = _Kind("string")
BOOL = _Kind("bool")
INT32 = _Kind("int32")
INT64 = _Kind("int64")
FLOAT = _Kind("float")
DOUBLE = _Kind("double")
BYTES = _Kind("bytes")
STRUCT = _Kind("struct")  # google.protobuf.Struct: a JSON object
VALUE = _Kind("value")  # google.protobuf.Value, or a part of the API the mock does not look into


def _message(name: str) -> _Kind:
    return _Kind("message", name)


def _enum(name: str) -> _Kind:
    return _Kind("enum", name)


def _list(kind: _Kind) -> _Kind:
    return replace(kind, repeated=True)


# ai.google.dev/api/generate-content and /api/caching (Content, Part, Tool, Schema), as google-genai sends them.
MESSAGES: dict[str, dict[str, _Kind]] = {
    "GenerateContentRequest": {
        "model": STRING,
        "contents": _list(_message("Content")),
        "tools": _list(_message("Tool")),
        "toolConfig": _message("ToolConfig"),
        "safetySettings": _list(_message("SafetySetting")),
        "systemInstruction": _message("Content"),
        "generationConfig": _message("GenerationConfig"),
        "cachedContent": STRING,
    },
    "Content": {"parts": _list(_message("Part")), "role": STRING},
    "Part": {
        "text": STRING,
        "inlineData": _message("Blob"),
        "fileData": _message("FileData"),
        "functionCall": _message("FunctionCall"),
        "functionResponse": _message("FunctionResponse"),
        "executableCode": _message("ExecutableCode"),
        "codeExecutionResult": _message("CodeExecutionResult"),
        "thought": BOOL,
        "thoughtSignature": BYTES,
        "videoMetadata": _message("VideoMetadata"),
        "partMetadata": STRUCT,
        "mediaResolution": VALUE,
    },
    "Blob": {"mimeType": STRING, "data": BYTES},
    "FileData": {"mimeType": STRING, "fileUri": STRING},
    "FunctionCall": {"id": STRING, "name": STRING, "args": STRUCT},
    "FunctionResponse": {
        "id": STRING,
        "name": STRING,
        "response": STRUCT,
        "parts": _list(VALUE),
        "willContinue": BOOL,
        "scheduling": _enum("FunctionResponse.Scheduling"),
    },
    "ExecutableCode": {"language": _enum("ExecutableCode.Language"), "code": STRING},
    "CodeExecutionResult": {"outcome": _enum("CodeExecutionResult.Outcome"), "output": STRING},
    "VideoMetadata": {"startOffset": STRING, "endOffset": STRING, "fps": DOUBLE},
    "Tool": {
        "functionDeclarations": _list(_message("FunctionDeclaration")),
        "googleSearchRetrieval": VALUE,
        "codeExecution": VALUE,
        "googleSearch": VALUE,
        "urlContext": VALUE,
        "computerUse": VALUE,
        "fileSearch": VALUE,
        "googleMaps": VALUE,
    },
    "FunctionDeclaration": {
        "name": STRING,
        "description": STRING,
        "behavior": _enum("FunctionDeclaration.Behavior"),
        "parameters": _message("Schema"),
        "parametersJsonSchema": VALUE,
        "response": _message("Schema"),
        "responseJsonSchema": VALUE,
    },
    "Schema": {
        "type": _enum("Type"),
        "format": STRING,
        "title": STRING,
        "description": STRING,
        "nullable": BOOL,
        "enum": _list(STRING),
        "maxItems": INT64,
        "minItems": INT64,
        "properties": replace(_message("Schema"), mapped=True),
        "required": _list(STRING),
        "minProperties": INT64,
        "maxProperties": INT64,
        "minLength": INT64,
        "maxLength": INT64,
        "pattern": STRING,
        "example": VALUE,
        "anyOf": _list(_message("Schema")),
        "propertyOrdering": _list(STRING),
        "default": VALUE,
        "items": _message("Schema"),
        "minimum": DOUBLE,
        "maximum": DOUBLE,
    },
    "ToolConfig": {"functionCallingConfig": _message("FunctionCallingConfig"), "retrievalConfig": VALUE},
    "FunctionCallingConfig": {"mode": _enum("FunctionCallingConfig.Mode"), "allowedFunctionNames": _list(STRING)},
    "SafetySetting": {"category": _enum("HarmCategory"), "threshold": _enum("SafetySetting.HarmBlockThreshold")},
    "GenerationConfig": {
        "stopSequences": _list(STRING),
        "responseMimeType": STRING,
        "responseSchema": _message("Schema"),
        "responseJsonSchema": VALUE,
        "responseModalities": _list(_enum("GenerationConfig.Modality")),
        "candidateCount": INT32,
        "maxOutputTokens": INT32,
        "temperature": FLOAT,
        "topP": FLOAT,
        "topK": INT32,
        "seed": INT32,
        "presencePenalty": FLOAT,
        "frequencyPenalty": FLOAT,
        "responseLogprobs": BOOL,
        "logprobs": INT32,
        "enableEnhancedCivicAnswers": BOOL,
        "speechConfig": VALUE,
        "thinkingConfig": _message("ThinkingConfig"),
        "imageConfig": VALUE,
        "mediaResolution": _enum("GenerationConfig.MediaResolution"),
    },
    "ThinkingConfig": {"includeThoughts": BOOL, "thinkingBudget": INT32, "thinkingLevel": VALUE},
}
# Values in number order (a JSON enum may be its name, in any case, or its number).
ENUMS: dict[str, tuple[str, ...]] = {
    "Type": ("TYPE_UNSPECIFIED", "STRING", "NUMBER", "INTEGER", "BOOLEAN", "ARRAY", "OBJECT", "NULL"),
    "FunctionCallingConfig.Mode": ("MODE_UNSPECIFIED", "AUTO", "ANY", "NONE", "VALIDATED"),
    "HarmCategory": (
        "HARM_CATEGORY_UNSPECIFIED",
        "HARM_CATEGORY_DEROGATORY",
        "HARM_CATEGORY_TOXICITY",
        "HARM_CATEGORY_VIOLENCE",
        "HARM_CATEGORY_SEXUAL",
        "HARM_CATEGORY_MEDICAL",
        "HARM_CATEGORY_DANGEROUS",
        "HARM_CATEGORY_HARASSMENT",
        "HARM_CATEGORY_HATE_SPEECH",
        "HARM_CATEGORY_SEXUALLY_EXPLICIT",
        "HARM_CATEGORY_DANGEROUS_CONTENT",
        "HARM_CATEGORY_CIVIC_INTEGRITY",
    ),
    "SafetySetting.HarmBlockThreshold": (
        "HARM_BLOCK_THRESHOLD_UNSPECIFIED",
        "BLOCK_LOW_AND_ABOVE",
        "BLOCK_MEDIUM_AND_ABOVE",
        "BLOCK_ONLY_HIGH",
        "BLOCK_NONE",
        "OFF",
    ),
    "GenerationConfig.Modality": ("MODALITY_UNSPECIFIED", "TEXT", "IMAGE", "AUDIO"),
    "GenerationConfig.MediaResolution": (
        "MEDIA_RESOLUTION_UNSPECIFIED",
        "MEDIA_RESOLUTION_LOW",
        "MEDIA_RESOLUTION_MEDIUM",
        "MEDIA_RESOLUTION_HIGH",
    ),
    "FunctionDeclaration.Behavior": ("UNSPECIFIED", "BLOCKING", "NON_BLOCKING"),
    "FunctionResponse.Scheduling": ("SCHEDULING_UNSPECIFIED", "SILENT", "WHEN_IDLE", "INTERRUPT"),
    "ExecutableCode.Language": ("LANGUAGE_UNSPECIFIED", "PYTHON"),
    "CodeExecutionResult.Outcome": (
        "OUTCOME_UNSPECIFIED",
        "OUTCOME_OK",
        "OUTCOME_FAILED",
        "OUTCOME_DEADLINE_EXCEEDED",
    ),
}
SCALAR_TYPES = {
    "string": "TYPE_STRING",
    "bool": "TYPE_BOOL",
    "int32": "TYPE_INT32",
    "int64": "TYPE_INT64",
    "float": "TYPE_FLOAT",
    "double": "TYPE_DOUBLE",
    "bytes": "TYPE_BYTES",
}
INTEGER = re.compile(r"-?\d+")
_MISSING: Final = object()


def _snake(name: str) -> str:
    return re.sub(r"([A-Z])", r"_\1", name).lower()


# Each message's accepted names (JSON name and proto name) to its JSON name.
FIELD_NAMES = {
    message: {alias: name for name in fields for alias in (name, _snake(name))} for message, fields in MESSAGES.items()
}


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _at(path: str) -> str:
    return f" at '{path}'" if path else ""


def _type_of(kind: _Kind) -> str:
    if kind.base in ("message", "enum"):
        return f"{PROTO_PACKAGE}.{kind.name}"
    if kind.base == "struct":
        return "type.googleapis.com/google.protobuf.Struct"
    return SCALAR_TYPES[kind.base]


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and INTEGER.fullmatch(value):
        return int(value)
    return None


def _as_float(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _is_base64(text: str) -> bool:
    padded = text + "=" * (-len(text) % 4)
    for altchars in (None, b"-_"):
        try:
            base64.b64decode(padded, altchars=altchars, validate=True)
        except (binascii.Error, ValueError):
            continue
        return True
    return False


class _Parser:
    """Reads a body into messages with JSON names, collecting what the API's parser refuses: (field path, text)."""

    def __init__(self) -> None:
        self.violations: list[tuple[str, str]] = []

    def message(self, value: dict[str, Any], name: str, path: str) -> dict[str, Any]:
        kinds = MESSAGES[name]
        names = FIELD_NAMES[name]
        out: dict[str, Any] = {}
        data: str | None = None
        for key, item in value.items():
            json_name = names.get(key)
            if json_name is None:
                self.violations.append(
                    (path, f'Invalid JSON payload received. Unknown name "{key}"{_at(path)}: Cannot find field.')
                )
                continue
            if name == "Part" and json_name in DATA_FIELDS:
                if data is not None:
                    problem = (
                        f"Invalid value at '{path}' (oneof), oneof field 'data' is already set. Cannot set '{key}'"
                    )
                    self.violations.append((path, problem))
                    continue
                data = key
            if item is None:
                continue
            parsed = self.field(item, kinds[json_name], _join(path, _snake(json_name)), key, path)
            if parsed is not _MISSING:
                out[json_name] = parsed
        return out

    def field(self, value: Any, kind: _Kind, path: str, key: str, parent: str) -> Any:
        if kind.repeated:
            if not isinstance(value, list):
                return self.invalid(path, kind, value)
            items = [self.single(item, kind, f"{path}[{i}]") for i, item in enumerate(value)]
            return [item for item in items if item is not _MISSING]
        if kind.mapped:
            if not isinstance(value, dict):
                return self.invalid(path, kind, value)
            entries = {k: self.single(item, kind, f"{path}[{i}].value") for i, (k, item) in enumerate(value.items())}
            return {k: item for k, item in entries.items() if item is not _MISSING}
        if isinstance(value, list) and kind.base != "value":
            problem = (
                f'Invalid JSON payload received. Unknown name "{key}"{_at(parent)}: '
                "Proto field is not repeating, cannot start list."
            )
            self.violations.append((parent, problem))
            return _MISSING
        return self.single(value, kind, path)

    def single(self, value: Any, kind: _Kind, path: str) -> Any:
        base = kind.base
        if base == "value":
            return value
        if base == "message" and isinstance(value, dict):
            return self.message(value, kind.name, path)
        if base == "struct" and isinstance(value, dict):
            return value
        if base == "string" and isinstance(value, str):
            return value
        if base == "bool" and isinstance(value, bool):
            return value
        if base in ("int32", "int64"):
            number = _as_int(value)
            if number is not None and (base == "int64" or -(2**31) <= number < 2**31):
                return number
        if base in ("float", "double"):
            real = _as_float(value)
            if real is not None:
                return real
        if base == "bytes" and isinstance(value, str):
            if _is_base64(value):
                return value
            self.violations.append(
                (path, f"Invalid value at '{path}' (TYPE_BYTES), Base64 decoding failed for {json.dumps(value)}")
            )
            return _MISSING
        if base == "enum":
            values = ENUMS[kind.name]
            if isinstance(value, str) and value.upper() in values:
                return value.upper()
            if _as_int(value) is not None and not isinstance(value, str) and 0 <= value < len(values):
                return values[int(value)]
        return self.invalid(path, kind, value)

    def invalid(self, path: str, kind: _Kind, value: Any) -> object:
        if isinstance(value, dict) and kind.base not in ("message", "struct"):
            shown = "Starting an object on a scalar field"
        else:
            shown = json.dumps(value)
        self.violations.append((path, f"Invalid value at '{path}' ({_type_of(kind)}), {shown}"))
        return _MISSING


# Then the API's own checks of the parsed request.


def _validate(req: dict[str, Any]) -> str | None:
    """Why the API refuses a parsed request with a 400, in its words; None when it would not."""
    problems: list[str] = []
    contents: list[dict[str, Any]] = req.get("contents", [])
    if not contents:
        problems.append("contents: contents is not specified")
    for i, content in enumerate(contents):
        if not _parts(content):
            problems.append(f"contents[{i}].parts: contents.parts must not be empty.")
        for j, part in enumerate(_parts(content)):
            _part_problems(part, f"contents[{i}].parts[{j}]", problems)
    for j, part in enumerate(_parts(req.get("systemInstruction", {}))):
        _part_problems(part, f"system_instruction.parts[{j}]", problems)
    names = _tool_problems(req.get("tools", []), problems)
    _tool_config_problems(req.get("toolConfig", {}), names, problems)
    _generation_problems(req.get("generationConfig", {}), problems)
    if problems:
        return "".join(f"* GenerateContentRequest.{problem}\n" for problem in problems)
    if any(content.get("role", "user") not in ("user", "model", "") for content in contents):
        return INVALID_ROLE
    return _turn_problem(contents)


def _part_problems(part: dict[str, Any], path: str, problems: list[str]) -> None:
    if not any(name in part for name in DATA_FIELDS):
        problems.append(f"{path}.data: required oneof field 'data' must have one initialized field")
    # Mock wording from here on in this function ("must be specified" is the API's phrase for a missing type).
    required = {
        "inlineData": ("inline_data", ("mimeType", "data")),
        "fileData": ("file_data", ("fileUri",)),
        "functionCall": ("function_call", ("name",)),
        "functionResponse": ("function_response", ("name", "response")),
    }
    for json_name, (proto_name, fields) in required.items():
        for name in fields:
            if json_name in part and name not in part[json_name]:
                problems.append(f"{path}.{proto_name}.{_snake(name)}: must be specified")


def _tool_problems(tools: list[dict[str, Any]], problems: list[str]) -> list[str]:
    """Problems of the function declarations; returns the names declared."""
    names: list[str] = []
    for i, tool in enumerate(tools):
        for j, declaration in enumerate(tool.get("functionDeclarations", [])):
            path = f"tools[{i}].function_declarations[{j}]"
            name = declaration.get("name", "")
            if not FUNCTION_NAME.fullmatch(name):
                problems.append(f"{path}.name: {INVALID_FUNCTION_NAME}")
            elif name in names:
                problems.append(f"{path}.name: Duplicate function declaration found: {name}")  # Mock wording.
            names.append(name)
            if "parameters" in declaration and "parametersJsonSchema" in declaration:
                # Mock wording: the reference says the two are mutually exclusive.
                problems.append(
                    f"{path}.parameters_json_schema: parameters and parameters_json_schema are mutually exclusive"
                )
            for schema in ("parameters", "response"):
                if schema in declaration:
                    _schema_problems(declaration[schema], f"{path}.{schema}", problems)
    return names


def _schema_problems(schema: dict[str, Any], path: str, problems: list[str]) -> None:
    kind = schema.get("type", "TYPE_UNSPECIFIED")
    properties: dict[str, Any] = schema.get("properties", {})
    if kind == "TYPE_UNSPECIFIED" and not schema.get("anyOf"):
        problems.append(f"{path}.type: must be specified")
    if kind == "OBJECT" and not properties:
        problems.append(f"{path}.properties: should be non-empty for OBJECT type")
    if properties and kind != "OBJECT":
        problems.append(f"{path}.properties: only allowed for OBJECT type")
    if kind == "ARRAY" and "items" not in schema:
        problems.append(f"{path}.items: missing field.")
    for i, value in enumerate(schema.get("enum", [])):
        if not value:
            problems.append(f"{path}.enum[{i}]: cannot be empty")
    for name, inner in properties.items():
        _schema_problems(inner, f"{path}.properties[{name}]", problems)
    if "items" in schema:
        _schema_problems(schema["items"], f"{path}.items", problems)
    for i, inner in enumerate(schema.get("anyOf", [])):
        _schema_problems(inner, f"{path}.any_of[{i}]", problems)


def _tool_config_problems(config: dict[str, Any], names: list[str], problems: list[str]) -> None:
    calling: dict[str, Any] = config.get("functionCallingConfig", {})
    allowed: list[str] = calling.get("allowedFunctionNames", [])
    path = "tool_config.function_calling_config.allowed_function_names"
    # Mock wording for both: the reference says to set the names only with mode ANY (or VALIDATED).
    if allowed and calling.get("mode", "AUTO") not in ("ANY", "VALIDATED"):
        problems.append(f"{path}: allowed_function_names may only be set when mode is ANY or VALIDATED")
    for i, name in enumerate(allowed):
        if name not in names:
            problems.append(f"{path}[{i}]: function {name} is not declared in tools")


def _generation_problems(config: dict[str, Any], problems: list[str]) -> None:
    path = "generation_config"
    mime = config.get("responseMimeType")
    if mime is not None and mime not in RESPONSE_MIME_TYPES:
        problems.append(f"{path}.response_mime_type: {INVALID_MIME_TYPE}")
    # Mock wording below, after the API's "thinking_budget must be in the range [-1, 65535]".
    for name, low, high in (("temperature", 0.0, 2.0), ("topP", 0.0, 1.0)):
        value = config.get(name)
        if value is not None and not low <= value <= high:
            problems.append(f"{path}.{_snake(name)}: {_snake(name)} must be in the range [{low}, {high}]")
    for name in ("topK", "candidateCount", "maxOutputTokens"):
        value = config.get(name)
        if value is not None and (value < 1 if name == "maxOutputTokens" else value < 0):
            problems.append(f"{path}.{_snake(name)}: {_snake(name)} must be positive")
    if config.get("candidateCount", 1) > 1:
        problems.append(f"{path}.candidate_count: this mock generates one candidate only")
    if len(config.get("stopSequences", [])) > MAX_STOP_SEQUENCES:
        problems.append(f"{path}.stop_sequences: at most {MAX_STOP_SEQUENCES} stop sequences are allowed")
    if "responseSchema" in config:
        if "responseJsonSchema" in config:
            problems.append(
                f"{path}.response_json_schema: response_schema and response_json_schema are mutually exclusive"
            )
        if mime not in SCHEMA_MIME_TYPES:
            problems.append(f"{path}.response_schema: response_mime_type must be one of {', '.join(SCHEMA_MIME_TYPES)}")
        _schema_problems(config["responseSchema"], f"{path}.response_schema", problems)
    if "responseJsonSchema" in config and mime != "application/json":
        problems.append(f"{path}.response_json_schema: response_mime_type must be application/json")


def _turn_problem(contents: list[dict[str, Any]]) -> str | None:
    """A function response must answer the function call turn just before it, part for part (and, in this mock,
    name for name); a function call turn must follow a user turn."""
    for i, content in enumerate(contents):
        previous = contents[i - 1] if i else {}
        calls = [part["functionCall"] for part in _parts(content) if "functionCall" in part]
        responses = [part["functionResponse"] for part in _parts(content) if "functionResponse" in part]
        if responses:
            asked = [part["functionCall"] for part in _parts(previous) if "functionCall" in part]
            if previous.get("role") != "model" or not asked:
                return RESPONSE_AFTER_CALL
            if len(responses) != len(asked):
                return RESPONSE_COUNT
            if any(response["name"] not in {call["name"] for call in asked} for response in responses):
                return RESPONSE_AFTER_CALL
        if calls and content.get("role") == "model" and (not i or previous.get("role", "user") not in ("user", "")):
            return CALL_AFTER_USER
    return None
