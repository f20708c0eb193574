package dev.switchboard.example;

import com.google.protobuf.Any;
import com.google.protobuf.InvalidProtocolBufferException;
import com.google.rpc.BadRequest;
import com.google.rpc.ErrorInfo;
import com.google.rpc.RetryInfo;
import dev.switchboard.api.v1.AttemptLog;
import dev.switchboard.api.v1.ChatRequest;
import dev.switchboard.api.v1.ChatResponse;
import dev.switchboard.api.v1.ChatStreamResponse;
import dev.switchboard.api.v1.ContentPart;
import dev.switchboard.api.v1.GatewayGrpc;
import dev.switchboard.api.v1.Message;
import dev.switchboard.api.v1.Role;
import dev.switchboard.api.v1.RouteRequest;
import dev.switchboard.api.v1.RouteResponse;
import io.grpc.Grpc;
import io.grpc.InsecureChannelCredentials;
import io.grpc.ManagedChannel;
import io.grpc.StatusRuntimeException;
import io.grpc.protobuf.StatusProto;
import java.util.Iterator;
import java.util.concurrent.TimeUnit;
import java.util.stream.Collectors;

/**
 * Calling Switchboard from Java with grpc-java: Chat, ChatStream, Route, and an error with its
 * details decoded, each call under a deadline. Run a gateway ({@code make serve}), then:
 *
 * <pre>java -cp "target/classes:target/lib/*" dev.switchboard.example.Example 127.0.0.1:50051 echo</pre>
 */
public final class Example {
  private Example() {}

  public static void main(String[] args) throws InterruptedException {
    String target = args.length > 0 ? args[0] : "127.0.0.1:50051";
    String model = args.length > 1 ? args[1] : "echo";
    ManagedChannel channel = Grpc.newChannelBuilder(target, InsecureChannelCredentials.create()).build();
    try {
      GatewayGrpc.GatewayBlockingStub gateway = GatewayGrpc.newBlockingStub(channel);
      chat(gateway, model);
      stream(gateway, model);
      route(gateway, model);
      decodedError(gateway);
    } finally {
      channel.shutdownNow().awaitTermination(5, TimeUnit.SECONDS);
    }
  }

  /** The deadline each call gets: a stub's deadline starts when the call does. */
  private static GatewayGrpc.GatewayBlockingStub within(GatewayGrpc.GatewayBlockingStub gateway) {
    return gateway.withDeadlineAfter(10, TimeUnit.SECONDS);
  }

  private static Message user(String text) {
    return Message.newBuilder()
        .setRole(Role.ROLE_USER)
        .addContent(ContentPart.newBuilder().setText(text))
        .build();
  }

  private static String text(Message message) {
    return message.getContentList().stream().map(ContentPart::getText).collect(Collectors.joining());
  }

  private static void chat(GatewayGrpc.GatewayBlockingStub gateway, String model) {
    ChatResponse answer =
        within(gateway).chat(ChatRequest.newBuilder().setModel(model).addMessages(user("hello from Java")).build());
    System.out.printf(
        "chat: %s (deployment %s, %d tokens out)%n",
        text(answer.getMessage()), answer.getServed().getDeployment(), answer.getUsage().getOutputTokens());
  }

  private static void stream(GatewayGrpc.GatewayBlockingStub gateway, String model) {
    Iterator<ChatStreamResponse> events =
        within(gateway).chatStream(ChatRequest.newBuilder().setModel(model).addMessages(user("one two three")).build());
    StringBuilder answer = new StringBuilder();
    String deployment = "";
    String finish = "";
    while (events.hasNext()) {
      ChatStreamResponse event = events.next();
      switch (event.getEventCase()) {
        case START -> deployment = event.getStart().getServed().getDeployment();
        case DELTA -> answer.append(event.getDelta().getText());
        case END -> finish = event.getEnd().getFinishReason().name();
        default -> { }
      }
    }
    System.out.printf("stream: %s (deployment %s, %s)%n", answer, deployment, finish);
  }

  private static void route(GatewayGrpc.GatewayBlockingStub gateway, String model) {
    RouteResponse decision =
        within(gateway).route(RouteRequest.newBuilder().setModel(model).setInputTokens(100).build());
    String first = decision.getCandidatesCount() > 0 ? decision.getCandidates(0).getDeployment() : "none";
    System.out.printf(
        "route: group %s, first %s of %d candidates (%s)%n",
        decision.getModelGroup(), first, decision.getCandidatesCount(), decision.getStrategy());
  }

  /** Asks for a model group that does not exist and prints what the error's details say. */
  private static void decodedError(GatewayGrpc.GatewayBlockingStub gateway) {
    try {
      within(gateway).chat(ChatRequest.newBuilder().setModel("no-such-group").addMessages(user("hello")).build());
    } catch (StatusRuntimeException error) {
      System.out.printf("error: %s%n", error.getStatus().getCode());
      com.google.rpc.Status status = StatusProto.fromThrowable(error);
      if (status == null) {
        return;
      }
      for (Any detail : status.getDetailsList()) {
        try {
          if (detail.is(BadRequest.class)) {
            for (BadRequest.FieldViolation v : detail.unpack(BadRequest.class).getFieldViolationsList()) {
              System.out.printf("  bad request: %s: %s%n", v.getField(), v.getDescription());
            }
          } else if (detail.is(ErrorInfo.class)) {
            ErrorInfo info = detail.unpack(ErrorInfo.class);
            System.out.printf("  error info: %s (%s)%n", info.getReason(), info.getDomain());
          } else if (detail.is(RetryInfo.class)) {
            System.out.printf("  retry after: %ds%n", detail.unpack(RetryInfo.class).getRetryDelay().getSeconds());
          } else if (detail.is(AttemptLog.class)) {
            detail.unpack(AttemptLog.class).getAttemptsList().forEach(
                a -> System.out.printf("  attempt: %s %s%n", a.getDeployment(), a.getOutcome()));
          }
        } catch (InvalidProtocolBufferException unreadable) {
          System.out.printf("  unreadable detail %s%n", detail.getTypeUrl());
        }
      }
    }
  }
}
