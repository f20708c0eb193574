// Calling Switchboard from Node.js and TypeScript with @grpc/grpc-js: Chat, ChatStream, Route,
// and an error with its details decoded, each call under a deadline. Types are generated from
// protos/ by proto-loader-gen-types (`npm run build`). Run a gateway (`make serve`), then:
//
//   node dist/example.js --target 127.0.0.1:50051 --model echo
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { getProtoPath } from "google-proto-files";
import protobuf from "protobufjs";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";

import type { ProtoGrpcType } from "./gen/gateway";
import type { ChatRequest } from "./gen/switchboard/v1/ChatRequest";
import type { ChatResponse__Output } from "./gen/switchboard/v1/ChatResponse";
import type { GatewayClient } from "./gen/switchboard/v1/Gateway";
import type { Message, Message__Output } from "./gen/switchboard/v1/Message";
import type { RouteRequest } from "./gen/switchboard/v1/RouteRequest";
import type { RouteResponse__Output } from "./gen/switchboard/v1/RouteResponse";

const PROTOS = fileURLToPath(new URL("../../../protos/", import.meta.url));

// The loader options that keep the contract's shape: field names as the proto spells them
// (`max_tokens`: with the default, camelCase, a snake_case field is silently dropped), enums by
// name rather than number, 64-bit integers as strings, defaults filled in, and a oneof's name
// set to the field present. proto-loader-gen-types is given the same ones.
const LOADER: protoLoader.Options = {
  keepCase: true,
  enums: String,
  longs: String,
  defaults: true,
  oneofs: true,
  includeDirs: [PROTOS],
};

// The error details travel as a google.rpc.Status in the `grpc-status-details-bin` trailer; its
// details are Any messages of google.rpc (googleapis' protos, from google-proto-files) and of the
// contract (AttemptLog).
const DETAILS = new protobuf.Root();
DETAILS.resolvePath = (_origin, target) =>
  target.startsWith("google/rpc/") ? getProtoPath(target.slice("google/".length)) : `${PROTOS}${target}`;
DETAILS.loadSync(["google/rpc/status.proto", "google/rpc/error_details.proto", "switchboard/v1/gateway.proto"]);
const STATUS = DETAILS.lookupType("google.rpc.Status");

function deadline(seconds: number): grpc.CallOptions {
  return { deadline: new Date(Date.now() + seconds * 1000) };
}

function userMessage(text: string): Message {
  return { role: "ROLE_USER", content: [{ text }] };
}

function text(message: Message__Output | null): string {
  return (message?.content ?? []).map((part) => part.text ?? "").join("");
}

function chat(client: GatewayClient, request: ChatRequest): Promise<ChatResponse__Output> {
  return new Promise((resolve, reject) =>
    client.Chat(request, deadline(10), (error, answer) => (error ? reject(error) : resolve(answer!))),
  );
}

function route(client: GatewayClient, request: RouteRequest): Promise<RouteResponse__Output> {
  return new Promise((resolve, reject) =>
    client.Route(request, deadline(10), (error, answer) => (error ? reject(error) : resolve(answer!))),
  );
}

// Decodes what an error's details say: one line each.
function details(error: grpc.ServiceError): string[] {
  const [bytes] = error.metadata.get("grpc-status-details-bin");
  if (!(bytes instanceof Buffer)) return [];
  const status = STATUS.toObject(STATUS.decode(bytes)) as { details?: { type_url: string; value: Uint8Array }[] };
  return (status.details ?? []).map((any) => {
    const type = DETAILS.lookupType(any.type_url.split("/").pop()!);
    const detail = type.toObject(type.decode(any.value), { enums: String }) as Record<string, any>;
    switch (type.fullName) {
      case ".google.rpc.BadRequest":
        return detail.fieldViolations
          .map((v: { field: string; description: string }) => `  bad request: ${v.field}: ${v.description}`)
          .join("\n");
      case ".google.rpc.ErrorInfo":
        return `  error info: ${detail.reason} (${detail.domain})`;
      case ".google.rpc.RetryInfo":
        return `  retry after: ${detail.retryDelay?.seconds ?? 0}s`;
      case ".switchboard.v1.AttemptLog":
        return detail.attempts.map((a: { deployment: string; outcome: string }) => `  attempt: ${a.deployment} ${a.outcome}`).join("\n");
      default:
        return `  ${type.fullName}`;
    }
  });
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: { target: { type: "string", default: "127.0.0.1:50051" }, model: { type: "string", default: "echo" } },
  });
  const model = values.model!;
  const definition = protoLoader.loadSync("switchboard/v1/gateway.proto", LOADER);
  const loaded = grpc.loadPackageDefinition(definition) as unknown as ProtoGrpcType;
  const client = new loaded.switchboard.v1.Gateway(values.target!, grpc.credentials.createInsecure());

  const answer = await chat(client, {
    model,
    messages: [userMessage("hello from Node")],
    params: { max_tokens: 50 },
  });
  console.log(`chat: ${text(answer.message)} (deployment ${answer.served?.deployment}, ${answer.usage?.output_tokens} tokens out)`);

  let streamed = "";
  let deployment = "";
  let finish = "";
  const stream = client.ChatStream({ model, messages: [userMessage("one two three")] }, deadline(10));
  for await (const event of stream) {
    if (event.event === "start") deployment = event.start?.served?.deployment ?? "";
    else if (event.event === "delta") streamed += event.delta?.text ?? "";
    else if (event.event === "end") finish = String(event.end?.finish_reason);
  }
  console.log(`stream: ${streamed} (deployment ${deployment}, ${finish})`);

  const decision = await route(client, { model, input_tokens: 100 });
  const first = decision.candidates[0]?.deployment ?? "none";
  console.log(`route: group ${decision.model_group}, first ${first} of ${decision.candidates.length} candidates (${decision.strategy})`);

  try {
    await chat(client, { model: "no-such-group", messages: [userMessage("hello")] });
  } catch (error) {
    const failed = error as grpc.ServiceError;
    console.log(`error: ${grpc.status[failed.code]}`);
    for (const line of details(failed)) console.log(line);
  }
  client.close();
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
