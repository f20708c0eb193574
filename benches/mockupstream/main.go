// A fast OpenAI-compatible upstream for benchmarks: answers POST
// /v1/chat/completions at once, unary JSON or a 50-chunk SSE stream with a
// usage chunk and [DONE], so that the gateway, not the upstream, is measured.
// A request's max_tokens, when set, is the number of chunks instead (a stream
// as long as a benchmark needs), and a stream ends when its client has gone.
//
//	mockupstream PORT
package main

import (
	"encoding/json"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"strings"
)

const chunks = 50

type request struct {
	Model     string `json:"model"`
	Stream    bool   `json:"stream"`
	MaxTokens int    `json:"max_tokens"`
}

func main() {
	if len(os.Args) != 2 {
		log.Fatal("usage: mockupstream PORT")
	}
	listener, err := net.Listen("tcp", "127.0.0.1:"+os.Args[1])
	if err != nil {
		log.Fatal(err)
	}
	http.HandleFunc("/v1/chat/completions", complete)
	fmt.Printf("mock listening on %s\n", listener.Addr())
	log.Fatal(http.Serve(listener, nil))
}

func complete(w http.ResponseWriter, r *http.Request) {
	var req request
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil || req.Model == "" {
		http.Error(w, `{"error": {"message": "bad request", "type": "invalid_request_error"}}`, http.StatusBadRequest)
		return
	}
	if !req.Stream {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"id":"chatcmpl-bench","object":"chat.completion","created":1700000000,"model":%q,`+
			`"choices":[{"index":0,"message":{"role":"assistant","content":%q},"finish_reason":"stop"}],`+
			`"usage":{"prompt_tokens":12,"completion_tokens":%d,"total_tokens":%d}}`,
			req.Model, strings.Repeat("token ", chunks), chunks, chunks+12)
		return
	}
	flusher, _ := w.(http.Flusher)
	w.Header().Set("Content-Type", "text/event-stream")
	prefix := fmt.Sprintf(`{"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1700000000,"model":%q,`, req.Model)
	count := chunks
	if req.MaxTokens > 0 {
		count = req.MaxTokens
	}
	for i := 0; i < count; i++ {
		_, err := fmt.Fprintf(w, "data: %s\"choices\":[{\"index\":0,\"delta\":{\"content\":\"token \"},\"finish_reason\":null}]}\n\n", prefix)
		if err != nil {
			return
		}
		flusher.Flush()
	}
	fmt.Fprintf(w, "data: %s\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n", prefix)
	fmt.Fprintf(w, "data: %s\"choices\":[],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":%d,\"total_tokens\":%d}}\n\n", prefix, count, count+12)
	fmt.Fprint(w, "data: [DONE]\n\n")
	flusher.Flush()
}
