// Calling Switchboard from Go: Chat, ChatStream, Route, and an error with its details decoded,
// each call under a deadline. Run a gateway (`make serve`), then:
//
//	go run . -target 127.0.0.1:50051 -model echo
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"strings"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	switchboardv1 "switchboard-example/gen/switchboard/v1"
)

func main() {
	target := flag.String("target", "127.0.0.1:50051", "the gateway's host:port")
	model := flag.String("model", "echo", "a model group, or auto")
	flag.Parse()

	conn, err := grpc.NewClient(*target, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		log.Fatalf("connect: %v", err)
	}
	defer conn.Close()
	client := switchboardv1.NewGatewayClient(conn)

	if err := chat(client, *model); err != nil {
		log.Fatalf("chat: %v", err)
	}
	if err := chatStream(client, *model); err != nil {
		log.Fatalf("stream: %v", err)
	}
	if err := route(client, *model); err != nil {
		log.Fatalf("route: %v", err)
	}
	decodedError(client)
}

// userMessage is one user turn of plain text.
func userMessage(text string) *switchboardv1.Message {
	return &switchboardv1.Message{
		Role:    switchboardv1.Role_ROLE_USER,
		Content: []*switchboardv1.ContentPart{{Part: &switchboardv1.ContentPart_Text{Text: text}}},
	}
}

// text joins the text parts of a message.
func text(message *switchboardv1.Message) string {
	var parts []string
	for _, part := range message.GetContent() {
		parts = append(parts, part.GetText())
	}
	return strings.Join(parts, "")
}

func chat(client switchboardv1.GatewayClient, model string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	answer, err := client.Chat(ctx, &switchboardv1.ChatRequest{
		Model:    model,
		Messages: []*switchboardv1.Message{userMessage("hello from Go")},
	})
	if err != nil {
		return err
	}
	fmt.Printf("chat: %s (deployment %s, %d tokens out)\n",
		text(answer.GetMessage()), answer.GetServed().GetDeployment(), answer.GetUsage().GetOutputTokens())
	return nil
}

func chatStream(client switchboardv1.GatewayClient, model string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stream, err := client.ChatStream(ctx, &switchboardv1.ChatRequest{
		Model:    model,
		Messages: []*switchboardv1.Message{userMessage("one two three")},
	})
	if err != nil {
		return err
	}
	var deployment, finish string
	var answer strings.Builder
	for {
		event, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		switch e := event.GetEvent().(type) {
		case *switchboardv1.ChatStreamResponse_Start:
			deployment = e.Start.GetServed().GetDeployment()
		case *switchboardv1.ChatStreamResponse_Delta:
			answer.WriteString(e.Delta.GetText())
		case *switchboardv1.ChatStreamResponse_End:
			finish = e.End.GetFinishReason().String()
		}
	}
	fmt.Printf("stream: %s (deployment %s, %s)\n", answer.String(), deployment, finish)
	return nil
}

func route(client switchboardv1.GatewayClient, model string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	decision, err := client.Route(ctx, &switchboardv1.RouteRequest{Model: model, InputTokens: 100})
	if err != nil {
		return err
	}
	first := "none"
	if candidates := decision.GetCandidates(); len(candidates) > 0 {
		first = candidates[0].GetDeployment()
	}
	fmt.Printf("route: group %s, first %s of %d candidates (%s)\n",
		decision.GetModelGroup(), first, len(decision.GetCandidates()), decision.GetStrategy())
	return nil
}

// decodedError asks for a model group that does not exist and prints what the error's details say.
func decodedError(client switchboardv1.GatewayClient) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := client.Chat(ctx, &switchboardv1.ChatRequest{
		Model:    "no-such-group",
		Messages: []*switchboardv1.Message{userMessage("hello")},
	})
	st := status.Convert(err)
	fmt.Printf("error: %s\n", st.Code())
	for _, detail := range st.Details() {
		switch d := detail.(type) {
		case *errdetails.BadRequest:
			for _, violation := range d.GetFieldViolations() {
				fmt.Printf("  bad request: %s: %s\n", violation.GetField(), violation.GetDescription())
			}
		case *errdetails.ErrorInfo:
			fmt.Printf("  error info: %s (%s)\n", d.GetReason(), d.GetDomain())
		case *errdetails.RetryInfo:
			fmt.Printf("  retry after: %s\n", d.GetRetryDelay().AsDuration())
		case *switchboardv1.AttemptLog:
			for _, attempt := range d.GetAttempts() {
				fmt.Printf("  attempt: %s %s\n", attempt.GetDeployment(), attempt.GetOutcome())
			}
		}
	}
}
