// A thin TypeScript client for Switchboard's Gateway API, over @grpc/grpc-js and the contract's
// protos (shipped in this package).
//
//   const client = new Client("127.0.0.1:50051");
//   const answer = await client.chat("hello", { model: "auto" });   // answer.text
//   for await (const piece of client.stream("hello")) process.stdout.write(piece);
//
// A failed call rejects with SwitchboardError, its details decoded (the ErrorInfo reason, field
// violations, when to retry, every attempt). Retries and fallbacks are the gateway's: the client
// makes one call per method call. For anything else, `client.raw` is the loaded Gateway client,
// and its messages take the contract's field names (`max_tokens`) and enum names.
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { getProtoPath } from "google-proto-files";
import protobuf from "protobufjs";
import { fileURLToPath } from "node:url";

const PROTOS = fileURLToPath(new URL("../protos/", import.meta.url));
const DETAILS_TRAILER = "grpc-status-details-bin";

// The options that keep the contract's shape: field names as the proto spells them (with the
// default, camelCase, `max_tokens` would be silently dropped), enums by name, 64-bit integers
// as strings, defaults filled in, a oneof's name set to the field present.
export const LOADER_OPTIONS: protoLoader.Options = {
  keepCase: true,
  enums: String,
  longs: String,
  defaults: true,
  oneofs: true,
  includeDirs: [PROTOS],
};

// The contract's messages as the loader gives them (field names as in the proto).
export type Message = { role: string; content: { text?: string }[]; [field: string]: unknown };
export type ChatResponse = {
  id: string;
  served: { model_group: string; deployment: string; provider: string; provider_model: string; experiment: string; variant: string };
  message: Message & { tool_calls: { id: string; name: string; arguments: string }[] };
  finish_reason: string;
  usage: { input_tokens: number; output_tokens: number; cached_input_tokens: number };
  cost_usd: number;
  [field: string]: unknown;
};
export type StreamStart = { id: string; served: ChatResponse["served"]; [field: string]: unknown };
export type StreamEnd = { finish_reason: string; usage: ChatResponse["usage"]; cost_usd: number; [field: string]: unknown };
export type RouteResponse = {
  model_group: string;
  strategy: string;
  candidates: { deployment: string; score: number; provider: string }[];
  rejected: { deployment: string; filter: string; detail: string }[];
  [field: string]: unknown;
};
export type Attempt = { deployment: string; outcome: string; latency_ms: number; upstream_status: number; error: string };

export interface CallOptions {
  /** A model group, or "auto" (the default) for the gateway's default group. */
  model?: string;
  /** A system message before the prompt. */
  system?: string;
  maxTokens?: number;
  temperature?: number;
  metadata?: Record<string, string>;
  /** This call's deadline, instead of the client's. */
  timeoutMs?: number;
}

export interface ClientOptions {
  /** Sent as `authorization: Bearer <key>`. */
  apiKey?: string;
  /** TLS (grpc.credentials.createSsl(...)); plaintext without. */
  credentials?: grpc.ChannelCredentials;
  /** Each call's deadline unless it names its own (default 60 s). */
  timeoutMs?: number;
}

/** A call the gateway refused or could not serve, with what its error details say. */
export class SwitchboardError extends Error {
  /** The gRPC status, by name ("INVALID_ARGUMENT"). */
  readonly code: string;
  /** The ErrorInfo's reason (a value of the contract's ErrorReason, without its prefix); "" without one. */
  reason = "";
  metadata: Record<string, string> = {};
  fieldViolations: { field: string; description: string }[] = [];
  /** When trying again could succeed (RetryInfo), in seconds. */
  retryAfterS: number | null = null;
  attempts: Attempt[] = [];

  constructor(error: grpc.ServiceError) {
    super(error.details || error.message);
    this.name = "SwitchboardError";
    this.code = grpc.status[error.code] ?? String(error.code);
    for (const [type, detail] of decodedDetails(error)) {
      if (type === "google.rpc.ErrorInfo") {
        this.reason = detail.reason ?? "";
        this.metadata = detail.metadata ?? {};
      } else if (type === "google.rpc.BadRequest") {
        this.fieldViolations = (detail.fieldViolations ?? []).map((v: any) => ({ field: v.field, description: v.description }));
      } else if (type === "google.rpc.RetryInfo") {
        const delay = detail.retryDelay ?? {};
        this.retryAfterS = Number(delay.seconds ?? 0) + Number(delay.nanos ?? 0) / 1e9;
      } else if (type === "switchboard.v1.AttemptLog") {
        this.attempts = detail.attempts ?? [];
      }
    }
  }
}

let detailsRoot: protobuf.Root | undefined;

/** The google.rpc protos (googleapis', from google-proto-files) and the contract, for the details. */
function details(): protobuf.Root {
  if (detailsRoot === undefined) {
    const root = new protobuf.Root();
    root.resolvePath = (_origin, target) =>
      target.startsWith("google/rpc/") ? getProtoPath(target.slice("google/".length)) : `${PROTOS}${target}`;
    root.loadSync(["google/rpc/status.proto", "google/rpc/error_details.proto", "switchboard/v1/gateway.proto"]);
    detailsRoot = root;
  }
  return detailsRoot;
}

function decodedDetails(error: grpc.ServiceError): [string, any][] {
  const [bytes] = error.metadata?.get(DETAILS_TRAILER) ?? [];
  if (!(bytes instanceof Buffer)) return [];
  try {
    const root = details();
    const Status = root.lookupType("google.rpc.Status");
    const status = Status.toObject(Status.decode(bytes)) as { details?: { type_url: string; value: Uint8Array }[] };
    return (status.details ?? []).flatMap((any): [string, any][] => {
      const name = any.type_url.split("/").pop() ?? "";
      const type = root.lookup(name);
      if (!(type instanceof protobuf.Type)) return [];
      return [[name, type.toObject(type.decode(any.value), { enums: String, longs: String, defaults: true })]];
    });
  } catch {
    return []; // details that do not decode leave the status's code and message
  }
}

/** An answer: its text, and the whole ChatResponse. */
export class Answer {
  constructor(readonly response: ChatResponse) {}

  get text(): string {
    return messageText(this.response.message);
  }

  /** The gateway's id for the call (for feedback, and its logs). */
  get id(): string {
    return this.response.id;
  }

  get deployment(): string {
    return this.response.served?.deployment ?? "";
  }
}

/** A ChatStream as an async iterable of the answer's text; `start` and `end` once they came. */
export class Stream implements AsyncIterable<string> {
  start: StreamStart | null = null;
  end: StreamEnd | null = null;

  constructor(private readonly call: grpc.ClientReadableStream<any>) {}

  async *[Symbol.asyncIterator](): AsyncIterator<string> {
    try {
      for await (const event of this.call) {
        if (event.event === "start") this.start = event.start;
        else if (event.event === "end") this.end = event.end;
        else if (event.delta?.text) yield event.delta.text as string;
      }
    } catch (error) {
      throw isServiceError(error) ? new SwitchboardError(error) : error;
    }
  }

  /** The whole answer's text, once the stream has ended. */
  async text(): Promise<string> {
    let whole = "";
    for await (const piece of this) whole += piece;
    return whole;
  }

  /** Stops the stream: the gateway closes its upstream call. */
  cancel(): void {
    this.call.cancel();
  }
}

export class Client {
  /** The loaded Gateway client, for everything the thin methods leave out. */
  readonly raw: any;
  private readonly timeoutMs: number;
  private readonly metadata: grpc.Metadata;

  constructor(target = "127.0.0.1:50051", options: ClientOptions = {}) {
    const definition = protoLoader.loadSync("switchboard/v1/gateway.proto", LOADER_OPTIONS);
    const loaded = grpc.loadPackageDefinition(definition) as any;
    this.raw = new loaded.switchboard.v1.Gateway(target, options.credentials ?? grpc.credentials.createInsecure());
    this.timeoutMs = options.timeoutMs ?? 60_000;
    this.metadata = new grpc.Metadata();
    if (options.apiKey) this.metadata.set("authorization", `Bearer ${options.apiKey}`);
  }

  close(): void {
    this.raw.close();
  }

  /** One answer to `prompt` (a user message's text, or whole messages). */
  chat(prompt: string | Message[], options: CallOptions = {}): Promise<Answer> {
    return new Promise((resolve, reject) =>
      this.raw.Chat(chatRequest(prompt, options), this.metadata, this.deadline(options), (error: any, response: ChatResponse) =>
        error ? reject(new SwitchboardError(error)) : resolve(new Answer(response)),
      ),
    );
  }

  /** The answer to `prompt` as it comes: iterate the Stream for its text. */
  stream(prompt: string | Message[], options: CallOptions = {}): Stream {
    return new Stream(this.raw.ChatStream(chatRequest(prompt, options), this.metadata, this.deadline(options)));
  }

  /** Where `prompt` would be routed, without calling any provider. */
  route(prompt: string | Message[], options: CallOptions = {}): Promise<RouteResponse> {
    const request = { model: options.model ?? "auto", messages: messages(prompt, options.system) };
    return new Promise((resolve, reject) =>
      this.raw.Route(request, this.metadata, this.deadline(options), (error: any, response: RouteResponse) =>
        error ? reject(new SwitchboardError(error)) : resolve(response),
      ),
    );
  }

  /** Reports on an answered call (`Answer.id`): a score, a label, a comment. */
  feedback(requestId: string, report: { score?: number; label?: string; comment?: string }, options: CallOptions = {}): Promise<void> {
    const request = { request_id: requestId, ...report };
    return new Promise((resolve, reject) =>
      this.raw.Feedback(request, this.metadata, this.deadline(options), (error: any) =>
        error ? reject(new SwitchboardError(error)) : resolve(),
      ),
    );
  }

  private deadline(options: CallOptions): grpc.CallOptions {
    return { deadline: new Date(Date.now() + (options.timeoutMs ?? this.timeoutMs)) };
  }
}

/** The ChatRequest for a prompt, with the contract's field names. */
export function chatRequest(prompt: string | Message[], options: CallOptions = {}): Record<string, unknown> {
  const params: Record<string, number> = {};
  if (options.maxTokens !== undefined) params.max_tokens = options.maxTokens;
  if (options.temperature !== undefined) params.temperature = options.temperature;
  return {
    model: options.model ?? "auto",
    messages: messages(prompt, options.system),
    params,
    metadata: options.metadata ?? {},
  };
}

function messages(prompt: string | Message[], system?: string): Message[] {
  const first: Message[] = system ? [{ role: "ROLE_SYSTEM", content: [{ text: system }] }] : [];
  return typeof prompt === "string" ? [...first, { role: "ROLE_USER", content: [{ text: prompt }] }] : [...first, ...prompt];
}

/** A message's text: its text parts, joined. */
export function messageText(message: { content?: { text?: string }[] } | null | undefined): string {
  return (message?.content ?? []).map((part) => part.text ?? "").join("");
}

function isServiceError(error: unknown): error is grpc.ServiceError {
  return typeof error === "object" && error !== null && "code" in error && "metadata" in error;
}
