// A compiled load generator for the chat benchmarks: it sends one fixed
// request over and over from CONCURRENCY goroutines and reports throughput
// and latency percentiles. It exists so that the numbers measure the server:
// a Python asyncio client sharing the machine's cores cost more CPU per
// request than the gateway and dominated the results.
//
//	loadgen -mode {http-unary|http-stream|grpc-unary|grpc-stream} -target ADDR -c CONCURRENCY -n TOTAL [-warmup N] [-conns N] -body FILE
//
// http modes POST FILE (JSON) to http://ADDR/v1/chat/completions; grpc modes
// send FILE (a serialized switchboard.v1.ChatRequest) to the Gateway's Chat or
// ChatStream without generated stubs. Unary requests report latency; streams
// report time to first token (first content line, or first StreamDelta) and to
// last token (end of the body or stream). Prints one JSON object; on any error
// prints the first one to stderr and exits 1.
package main

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/encoding/protowire"
)

// sample is one request's time to first token and to last token.
type sample struct{ first, last time.Duration }

// call sends one request and returns its timings.
type call func() (sample, error)

// rawCodec passes pre-serialized protobuf bytes through unchanged: Marshal
// takes a []byte, Unmarshal fills a *[]byte.
type rawCodec struct{}

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	return mem.BufferSlice{mem.SliceBuffer(v.([]byte))}, nil
}

func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	*v.(*[]byte) = data.Materialize() // a copy: data is freed on return
	return nil
}

// Name makes the content type application/grpc+proto, which the bytes are.
func (rawCodec) Name() string { return "proto" }

func main() {
	log.SetFlags(0)
	log.SetPrefix("loadgen: ")
	mode := flag.String("mode", "", "http-unary, http-stream, grpc-unary or grpc-stream")
	target := flag.String("target", "", "host:port of the server")
	concurrency := flag.Int("c", 1, "requests in flight at once")
	total := flag.Int("n", 1000, "requests measured")
	warmup := flag.Int("warmup", -1, "requests sent first and discarded (default n/20, at least 20)")
	bodyFile := flag.String("body", "", "request body: JSON (http) or serialized ChatRequest (grpc)")
	conns := flag.Int("conns", 1, "grpc modes: connections, used in turn (several workers on one port each take whole connections)")
	var headers []string
	flag.Func("H", `a header (HTTP) or metadata (gRPC) sent with every request, "name: value"; may repeat`, func(h string) error {
		name, value, ok := strings.Cut(h, ":")
		if !ok {
			return fmt.Errorf("%q is not name: value", h)
		}
		headers = append(headers, strings.ToLower(strings.TrimSpace(name)), strings.TrimSpace(value))
		return nil
	})
	flag.Parse()
	if *target == "" || *bodyFile == "" || *concurrency < 1 || *total < 1 {
		flag.Usage()
		os.Exit(2)
	}
	if *warmup < 0 {
		*warmup = max(20, *total/20)
	}
	body, err := os.ReadFile(*bodyFile)
	if err != nil {
		log.Fatal(err)
	}

	var send call
	switch *mode {
	case "http-unary", "http-stream":
		client := &http.Client{Transport: &http.Transport{
			MaxIdleConns: *concurrency, MaxIdleConnsPerHost: *concurrency, DisableCompression: true,
		}}
		send = httpCall(client, "http://"+*target+"/v1/chat/completions", body, *mode == "http-stream", headers)
	case "grpc-unary", "grpc-stream":
		sends := make([]call, max(1, *conns))
		for i := range sends {
			conn, err := grpc.NewClient(*target,
				grpc.WithTransportCredentials(insecure.NewCredentials()),
				grpc.WithDefaultCallOptions(grpc.ForceCodecV2(rawCodec{})))
			if err != nil {
				log.Fatal(err)
			}
			defer conn.Close()
			sends[i] = grpcCall(conn, body, *mode == "grpc-stream", headers)
		}
		var turn atomic.Uint64
		send = func() (sample, error) { return sends[turn.Add(1)%uint64(len(sends))]() }
	default:
		log.Fatalf("unknown -mode %q", *mode)
	}

	run(send, *concurrency, *warmup)
	started := time.Now()
	samples, errors, firstErr := run(send, *concurrency, *total)
	wall := time.Since(started)

	firsts := make([]time.Duration, len(samples))
	lasts := make([]time.Duration, len(samples))
	for i, s := range samples {
		firsts[i], lasts[i] = s.first, s.last
	}
	out, _ := json.Marshal(struct {
		RPS      float64 `json:"rps"`
		TTFTP50  float64 `json:"ttft_p50_ms"`
		TTFTP99  float64 `json:"ttft_p99_ms"`
		P50      float64 `json:"p50_ms"`
		P99      float64 `json:"p99_ms"`
		Requests int     `json:"requests"`
		Errors   int     `json:"errors"`
	}{float64(*total) / wall.Seconds(), percentile(firsts, 0.50), percentile(firsts, 0.99),
		percentile(lasts, 0.50), percentile(lasts, 0.99), *total, errors})
	fmt.Println(string(out))
	if errors > 0 {
		fmt.Fprintf(os.Stderr, "loadgen: %d of %d requests failed; first: %v\n", errors, *total, firstErr)
		os.Exit(1)
	}
}

// run sends total requests from concurrency goroutines that share a counter,
// and returns the successful samples, the error count and the first error.
func run(send call, concurrency, total int) ([]sample, int, error) {
	var next atomic.Int64
	var mu sync.Mutex
	var wg sync.WaitGroup
	samples := make([]sample, 0, total)
	errors, firstErr := 0, error(nil)
	for range concurrency {
		wg.Go(func() {
			mine := make([]sample, 0, total/concurrency+1)
			failed, firstFail := 0, error(nil)
			for next.Add(1) <= int64(total) {
				s, err := send()
				if err != nil {
					failed++
					firstFail = cmp.Or(firstFail, err)
					continue
				}
				mine = append(mine, s)
			}
			mu.Lock()
			samples = append(samples, mine...)
			errors += failed
			firstErr = cmp.Or(firstErr, firstFail)
			mu.Unlock()
		})
	}
	wg.Wait()
	return samples, errors, firstErr
}

// percentile returns the q-quantile in milliseconds by linear interpolation
// between closest ranks, the "inclusive" method (Python's
// statistics.quantiles(method="inclusive"), numpy's default): the value at
// position q*(n-1) of the sorted samples. 0 when there are none.
func percentile(values []time.Duration, q float64) float64 {
	if len(values) == 0 {
		return 0
	}
	slices.Sort(values)
	pos := q * float64(len(values)-1)
	low := int(pos)
	high := min(low+1, len(values)-1)
	frac := pos - float64(low)
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	return ms(values[low]) + frac*(ms(values[high])-ms(values[low]))
}

func httpCall(client *http.Client, url string, body []byte, stream bool, headers []string) call {
	return func() (sample, error) {
		started := time.Now()
		req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
		if err != nil {
			return sample{}, err
		}
		req.Header.Set("Content-Type", "application/json")
		for i := 0; i+1 < len(headers); i += 2 {
			req.Header.Set(headers[i], headers[i+1])
		}
		resp, err := client.Do(req)
		if err != nil {
			return sample{}, err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
			return sample{}, fmt.Errorf("HTTP %d: %s", resp.StatusCode, msg)
		}
		if !stream {
			if _, err := io.Copy(io.Discard, resp.Body); err != nil {
				return sample{}, err
			}
			elapsed := time.Since(started)
			return sample{elapsed, elapsed}, nil
		}
		var first time.Duration
		done := false
		lines := bufio.NewScanner(resp.Body)
		lines.Buffer(make([]byte, 64*1024), 4*1024*1024)
		for lines.Scan() {
			line := lines.Text()
			if first == 0 && strings.HasPrefix(line, "data: ") && strings.Contains(line, `"content"`) {
				first = time.Since(started)
			}
			done = done || line == "data: [DONE]"
		}
		if err := lines.Err(); err != nil {
			return sample{}, err
		}
		last := time.Since(started)
		if first == 0 || !done {
			return sample{}, fmt.Errorf("stream without content or [DONE] (content: %v, done: %v)", first != 0, done)
		}
		return sample{first, last}, nil
	}
}

func grpcCall(conn *grpc.ClientConn, body []byte, stream bool, headers []string) call {
	ctx := metadata.AppendToOutgoingContext(context.Background(), headers...)
	desc := &grpc.StreamDesc{ServerStreams: true}
	return func() (sample, error) {
		started := time.Now()
		var reply []byte
		if !stream {
			if err := conn.Invoke(ctx, "/switchboard.v1.Gateway/Chat", body, &reply); err != nil {
				return sample{}, err
			}
			elapsed := time.Since(started)
			return sample{elapsed, elapsed}, nil
		}
		s, err := conn.NewStream(ctx, desc, "/switchboard.v1.Gateway/ChatStream")
		if err != nil {
			return sample{}, err
		}
		// io.EOF here means the server ended the call: RecvMsg has its status.
		if err := s.SendMsg(body); err != nil && err != io.EOF {
			return sample{}, err
		}
		if err := s.CloseSend(); err != nil {
			return sample{}, err
		}
		var first time.Duration
		for {
			if err := s.RecvMsg(&reply); err == io.EOF {
				break
			} else if err != nil {
				return sample{}, err
			}
			// ChatStreamResponse is a oneof: field 2 is a StreamDelta.
			if num, _, n := protowire.ConsumeTag(reply); first == 0 && n > 0 && num == 2 {
				first = time.Since(started)
			}
		}
		last := time.Since(started)
		if first == 0 {
			return sample{}, fmt.Errorf("stream without a StreamDelta")
		}
		return sample{first, last}, nil
	}
}
