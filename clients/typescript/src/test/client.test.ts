// The client against a live gateway with the embedded default config (its `echo` group), named by
// SWITCHBOARD_TARGET; tests/test_client.py starts one and runs `npm test` with it.
import assert from "node:assert/strict";
import { after, test } from "node:test";

import { Client, SwitchboardError } from "../index.js";

const target = process.env.SWITCHBOARD_TARGET;
if (!target) throw new Error("set SWITCHBOARD_TARGET to a running gateway's host:port");
const client = new Client(target, { timeoutMs: 10_000 });
after(() => client.close());

test("chat answers text, and the contract's field names reach the gateway", async () => {
  const answer = await client.chat("one two three", { model: "echo" });
  assert.equal(answer.text, "one two three");
  assert.equal(answer.deployment, "echo");
  assert.equal(answer.id.length, 32);
  // max_tokens, as the proto spells it: the echo truncates to that many words.
  const cut = await client.chat("one two three", { model: "echo", maxTokens: 2 });
  assert.equal(cut.text, "one two");
  assert.equal(cut.response.finish_reason, "FINISH_REASON_LENGTH", "enums by name");
});

test("stream yields the text as it comes, with its start and end", async () => {
  const stream = client.stream("alpha beta", { model: "echo" });
  const pieces: string[] = [];
  for await (const piece of stream) pieces.push(piece);
  assert.equal(pieces.join(""), "alpha beta");
  assert.ok(pieces.length >= 2, "more than one piece");
  assert.equal(stream.start?.served.deployment, "echo");
  assert.equal(stream.end?.finish_reason, "FINISH_REASON_STOP");
});

test("route names the candidates", async () => {
  const decision = await client.route("hi", { model: "echo" });
  assert.deepEqual(decision.candidates.map((c) => c.deployment), ["echo"]);
});

test("errors reject with their details decoded", async () => {
  await assert.rejects(client.chat("hi", { model: "no-such-group" }), (error: unknown) => {
    assert.ok(error instanceof SwitchboardError);
    assert.equal(error.code, "INVALID_ARGUMENT");
    assert.equal(error.fieldViolations[0]?.field, "model");
    assert.match(error.fieldViolations[0]?.description ?? "", /unknown model group 'no-such-group'/);
    return true;
  });
  await assert.rejects(client.feedback("some-call", { score: 1 }), (error: unknown) => {
    assert.ok(error instanceof SwitchboardError);
    assert.deepEqual([error.code, error.reason], ["FAILED_PRECONDITION", "NOT_ENABLED"]);
    return true;
  });
  await assert.rejects(client.stream("hi", { model: "no-such-group" }).text(), (error: unknown) => {
    assert.ok(error instanceof SwitchboardError);
    assert.equal(error.code, "INVALID_ARGUMENT");
    return true;
  });
});

test("each call has a deadline", async () => {
  const hurried = new Client(target, { timeoutMs: 10_000 });
  try {
    await assert.rejects(hurried.chat("hi", { model: "echo", timeoutMs: 0 }), (error: unknown) => {
      assert.ok(error instanceof SwitchboardError);
      assert.equal(error.code, "DEADLINE_EXCEEDED");
      return true;
    });
  } finally {
    hurried.close();
  }
});
