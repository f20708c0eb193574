"""Amazon Bedrock's Converse and ConverseStream APIs
(https://docs.aws.amazon.com/bedrock/latest/APIReference/API_runtime_Converse.html).

Requests are signed with SigV4 by botocore's signer, and streams are AWS event-stream
frames decoded by botocore's parser: no hand-rolled crypto or framing. System prompts
go in `system`, tool calls are `toolUse` blocks answered by `toolResult` blocks in the
next user turn; what Converse cannot take (penalties, seeds, JSON response formats,
image URLs, temperatures above 1, forbidding tools) is refused, not dropped.
"""

from __future__ import annotations

import asyncio
import base64
import json
import urllib.parse
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Iterator, Mapping
from typing import Any

from botocore.auth import SigV4Auth  # type: ignore[import-untyped]
from botocore.awsrequest import AWSRequest  # type: ignore[import-untyped]
from botocore.credentials import (  # type: ignore[import-untyped]
    Credentials,
    ReadOnlyCredentials,
    RefreshableCredentials,
)
from botocore.eventstream import EventStreamBuffer, ParserError  # type: ignore[import-untyped]
from botocore.exceptions import BotoCoreError  # type: ignore[import-untyped]
from google.protobuf import json_format
from yarl import URL

from service.api.switchboard.v1 import gateway_pb2 as pb
from service.config import BedrockDeployment
from service.outcomes import Completion, StreamEvent, StreamFinished, UpstreamError, Usage, usage_with_cache
from service.providers.events import PendingDelta, batched_deltas, too_large
from service.providers.http import HttpClient, classified_error, error_body, json_object
from service.providers.translate import NO_PENALTIES_OR_SEED, merged_turns, unsupported_sampling
from service.redaction import SECRETS

_STOP_REASONS: dict[str, pb.FinishReason] = {
    "end_turn": pb.FINISH_REASON_STOP,
    "stop_sequence": pb.FINISH_REASON_STOP,
    "max_tokens": pb.FINISH_REASON_LENGTH,
    "model_context_window_exceeded": pb.FINISH_REASON_LENGTH,
    "tool_use": pb.FINISH_REASON_TOOL_CALLS,
    "guardrail_intervened": pb.FINISH_REASON_CONTENT_FILTER,
    "content_filtered": pb.FINISH_REASON_CONTENT_FILTER,
}
_IMAGE_FORMATS = {"image/png": "png", "image/jpeg": "jpeg", "image/gif": "gif", "image/webp": "webp"}
# Exceptions named in an event stream, with the HTTP status they stand for.
_STREAM_EXCEPTIONS = {
    "throttlingException": 429,
    "serviceUnavailableException": 503,
    "internalServerException": 500,
    "modelStreamErrorException": 500,
    "validationException": 400,
}


class BedrockProvider:
    """`credentials`: static, or botocore's refreshable ones (service.config.aws_credentials),
    read afresh for every request; None fails every call as an auth error."""

    def __init__(self, deployment: BedrockDeployment, credentials: Credentials | None) -> None:
        endpoint = str(deployment.endpoint_url or f"https://bedrock-runtime.{deployment.aws_region}.amazonaws.com")
        # Model ids hold ':' ("…-v1:0"); the path carries it escaped, and the signature covers that path.
        base = endpoint.rstrip("/") + "/model/" + urllib.parse.quote(deployment.model, safe="")
        self._url = base + "/converse"
        self._stream_url = base + "/converse-stream"
        self._credentials = credentials
        self._region = deployment.aws_region
        self._client = HttpClient(deployment, headers={}, http_error=_http_error)

    async def complete(self, request: pb.ChatRequest) -> Completion:
        url, data, headers = await self._signed(self._url, _body(request))
        async with self._client.post_signed(url, data, headers) as response:
            raw = await self._client.body(response)
            request_id = response.headers.get("x-amzn-RequestId", "")
        try:
            data_out = json.loads(raw)
            blocks = data_out["output"]["message"]["content"]
            text = "".join(block["text"] for block in blocks if "text" in block)
            tool_calls = tuple(
                pb.ToolCall(
                    id=block["toolUse"]["toolUseId"],
                    name=block["toolUse"]["name"],
                    arguments=json.dumps(block["toolUse"]["input"]),
                )
                for block in blocks
                if "toolUse" in block
            )
            stop_reason = str(data_out.get("stopReason") or "")
        except (ValueError, KeyError, TypeError) as error:
            raise UpstreamError(pb.OUTCOME_PROTOCOL_ERROR, f"unexpected response body: {error!r}") from error
        if stop_reason in ("content_filtered", "guardrail_intervened") and not text and not tool_calls:
            raise UpstreamError(pb.OUTCOME_CONTENT_FILTERED, f"the answer was withheld: stopReason {stop_reason}")
        return Completion(
            text=text,
            tool_calls=tool_calls,
            finish_reason=_STOP_REASONS.get(stop_reason, pb.FINISH_REASON_UNSPECIFIED),
            usage=_usage(data_out.get("usage")),
            provider_request_id=request_id,
        )

    async def stream(self, request: pb.ChatRequest) -> AsyncGenerator[StreamEvent, None]:
        url, data, headers = await self._signed(self._stream_url, _body(request))
        state = _StreamState()
        async with self._client.post_signed(url, data, headers) as response:
            state.request_id = response.headers.get("x-amzn-RequestId", "")
            frames = _frames(self._client.chunks(response), self._client.max_response_bytes)
            async for delta in batched_deltas(frames, state.take):
                yield delta
            # Checked inside: a failure after the 200 reports the 200 the upstream sent.
            if not state.stop_reason:
                raise UpstreamError(pb.OUTCOME_PROTOCOL_ERROR, "stream ended before messageStop")
        yield StreamFinished(
            finish_reason=_STOP_REASONS.get(state.stop_reason, pb.FINISH_REASON_UNSPECIFIED),
            usage=state.usage,
            provider_request_id=state.request_id,
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def _signed(self, url: str, body: dict[str, Any]) -> tuple[URL, bytes, dict[str, str]]:
        data = json.dumps(body).encode()
        signed = AWSRequest(method="POST", url=url, data=data, headers={"Content-Type": "application/json"})
        SigV4Auth(await self._current_credentials(), "bedrock", self._region).add_auth(signed)
        # Sent exactly as signed: yarl must not re-encode the escaped model id.
        return URL(url, encoded=True), data, dict(signed.headers.items())

    async def _current_credentials(self) -> ReadOnlyCredentials:
        """The credentials to sign with now. Refreshing them may ask STS or SSO over the network,
        so it runs off the event loop; in between it is a lock-free read."""
        if self._credentials is None:
            raise UpstreamError(pb.OUTCOME_AUTH_ERROR, "no AWS credentials were found for this deployment")
        try:
            if isinstance(self._credentials, RefreshableCredentials) and self._credentials.refresh_needed():
                frozen = await asyncio.to_thread(self._credentials.get_frozen_credentials)
            else:
                frozen = self._credentials.get_frozen_credentials()
        except BotoCoreError as error:
            raise UpstreamError(pb.OUTCOME_AUTH_ERROR, f"refreshing the AWS credentials failed: {error}") from error
        # Credentials from the chain change as they refresh; the token travels in a header that
        # an upstream may reflect.
        SECRETS.add((frozen.secret_key, frozen.token))
        return frozen


def _body(request: pb.ChatRequest) -> dict[str, Any]:
    _refuse_what_converse_cannot_do(request)
    params = request.params
    body: dict[str, Any] = {"messages": merged_turns(request.messages, _blocks)}
    system = [{"text": part.text} for m in request.messages if m.role == pb.ROLE_SYSTEM for part in m.content]
    if system:
        body["system"] = system
    inference: dict[str, Any] = {}
    if params.HasField("max_tokens"):
        inference["maxTokens"] = params.max_tokens
    if params.HasField("temperature"):
        inference["temperature"] = params.temperature
    if params.HasField("top_p"):
        inference["topP"] = params.top_p
    if params.stop:
        inference["stopSequences"] = list(params.stop)
    if inference:
        body["inferenceConfig"] = inference
    if request.tools or any(m.tool_calls for m in request.messages):
        # Converse wants the tools declared whenever the conversation holds tool blocks.
        tool_config: dict[str, Any] = {"tools": [_tool(tool) for tool in request.tools]}
        if request.HasField("tool_choice"):
            choice = request.tool_choice
            if choice.WhichOneof("choice") == "tool_name":
                tool_config["toolChoice"] = {"tool": {"name": choice.tool_name}}
            elif choice.mode == pb.TOOL_CHOICE_MODE_REQUIRED:
                tool_config["toolChoice"] = {"any": {}}
            elif choice.mode == pb.TOOL_CHOICE_MODE_AUTO:
                tool_config["toolChoice"] = {"auto": {}}
        body["toolConfig"] = tool_config
    return body


def _refuse_what_converse_cannot_do(request: pb.ChatRequest) -> None:
    problems = unsupported_sampling(request, NO_PENALTIES_OR_SEED)
    if request.tool_choice.WhichOneof("choice") == "mode" and request.tool_choice.mode == pb.TOOL_CHOICE_MODE_NONE:
        problems.append("tool_choice NONE")
    if any(part.image.WhichOneof("source") == "url" for m in request.messages for part in m.content):
        problems.append("image URLs (send the image's bytes)")
    if problems:
        unsupported = ", ".join(problems)
        raise UpstreamError(pb.OUTCOME_BAD_REQUEST, f"Bedrock's Converse API does not support {unsupported}")


def _blocks(message: pb.Message) -> list[dict[str, Any]]:
    if message.role == pb.ROLE_TOOL:
        text = "".join(part.text for part in message.content)
        return [{"toolResult": {"toolUseId": message.tool_call_id, "content": [{"text": text}]}}]
    blocks = [_content_block(part) for part in message.content]
    blocks += [
        {"toolUse": {"toolUseId": c.id, "name": c.name, "input": json.loads(c.arguments or "{}")}}
        for c in message.tool_calls
    ]
    return blocks


def _content_block(part: pb.ContentPart) -> dict[str, Any]:
    if part.WhichOneof("part") == "text":
        return {"text": part.text}
    image_format = _IMAGE_FORMATS.get(part.image.mime_type)
    if image_format is None:
        wanted = "png, jpeg, gif or webp"
        raise UpstreamError(pb.OUTCOME_BAD_REQUEST, f"Bedrock takes {wanted} images, not {part.image.mime_type!r}")
    return {"image": {"format": image_format, "source": {"bytes": base64.b64encode(part.image.data).decode()}}}


def _tool(tool: pb.Tool) -> dict[str, Any]:
    schema = json_format.MessageToDict(tool.parameters) if tool.parameters.fields else {}
    spec: dict[str, Any] = {"name": tool.name, "inputSchema": {"json": schema or {"type": "object", "properties": {}}}}
    if tool.description:
        spec["description"] = tool.description
    return {"toolSpec": spec}


def _usage(raw: Any) -> Usage:
    if not isinstance(raw, dict):
        return Usage()
    return usage_with_cache(
        int(raw.get("inputTokens") or 0),
        int(raw.get("outputTokens") or 0),
        int(raw.get("cacheReadInputTokens") or 0),
        int(raw.get("cacheWriteInputTokens") or 0),
    )


async def _frames(
    chunks: AsyncIterable[bytes], max_frame_bytes: int
) -> AsyncIterator[Iterator[tuple[Mapping[str, Any], bytes]]]:
    """For each chunk read, the event-stream frames it completed (headers and payload), so that
    frames that arrived in one read go on as one delta. A frame larger than `max_frame_bytes`
    is a protocol error as soon as that much of it is held."""
    buffer = EventStreamBuffer()
    unparsed = _Unparsed()
    async for chunk in chunks:
        buffer.add_data(chunk)
        unparsed.bytes += len(chunk)
        # The buffer keeps what of it is not parsed yet; the read itself is not held while its
        # frames are handed on, which may take as long as the client takes to read.
        del chunk
        yield _completed(buffer, unparsed, max_frame_bytes)


class _Unparsed:
    """The bytes of a stream not yet parsed into frames."""

    bytes = 0


def _completed(
    buffer: EventStreamBuffer, unparsed: _Unparsed, max_frame_bytes: int
) -> Iterator[tuple[Mapping[str, Any], bytes]]:
    # Raised while the batch is read, so that the frames before a bad one still go on.
    try:
        for frame in buffer:
            unparsed.bytes -= frame.prelude.total_length
            yield frame.headers, frame.payload
    except ParserError as error:
        raise UpstreamError(pb.OUTCOME_PROTOCOL_ERROR, f"bad event-stream frame: {error}") from error
    if unparsed.bytes > max_frame_bytes:
        raise too_large("an event-stream frame", max_frame_bytes)


class _StreamState:
    def __init__(self) -> None:
        self.request_id = ""
        self.stop_reason = ""
        self.usage = Usage()
        self._tool_index: dict[int, int] = {}

    def take(self, frame: tuple[Mapping[str, Any], bytes], pending: PendingDelta) -> None:
        headers, payload = frame
        event = json_object(payload, "event payload")
        if headers.get(":message-type") == "exception":
            kind = str(headers.get(":exception-type") or "")
            message = str(event.get("message") or event.get("Message") or payload[:300].decode(errors="replace"))
            raise classified_error(_STREAM_EXCEPTIONS.get(kind, 500), message, kind=kind)
        match headers.get(":event-type"):
            case "contentBlockStart":
                tool = (event.get("start") or {}).get("toolUse")
                if tool:
                    position = len(self._tool_index)
                    self._tool_index[int(event.get("contentBlockIndex", -1))] = position
                    tool_use = pb.ToolCallDelta(index=position, id=str(tool["toolUseId"]), name=str(tool["name"]))
                    pending.calls.append(tool_use)
            case "contentBlockDelta":
                delta = event.get("delta") or {}
                if delta.get("text"):
                    pending.texts.append(str(delta["text"]))
                elif piece := (delta.get("toolUse") or {}).get("input"):
                    call = self._tool_index.get(int(event.get("contentBlockIndex", -1)))
                    if call is None:
                        raise UpstreamError(pb.OUTCOME_PROTOCOL_ERROR, "toolUse input outside a toolUse block")
                    pending.add_arguments(call, piece)
            case "messageStop":
                self.stop_reason = str(event.get("stopReason") or "")
            case "metadata":
                self.usage = _usage(event.get("usage"))
            case _:
                pass  # messageStart, contentBlockStop and event types added later


def _http_error(status: int, headers: Mapping[str, str], text: str) -> UpstreamError:
    # botocore reads the error's name from this header first ("Name:http://internal.amazon.com/…").
    kind = headers.get("x-amzn-ErrorType", "").split(":", 1)[0]
    body = error_body(text)
    message = text[:300]
    if isinstance(body, dict):
        message = str(body.get("message") or body.get("Message") or message)
        kind = kind or str(body.get("__type") or "").rsplit("#", 1)[-1]
    if kind == "ModelTimeoutException":
        return UpstreamError(pb.OUTCOME_TIMEOUT, message, status=status)
    if kind in ("ThrottlingException", "ServiceQuotaExceededException") and status != 429:
        status = 429
    if kind in ("ModelNotReadyException",):
        status = 503
    return classified_error(status, f"{kind}: {message}" if kind else message, kind=kind, headers=headers)
