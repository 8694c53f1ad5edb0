package rpc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hsmsh/hsmsh/hsmcore/wire"
)

// echo answers "echo" with its argument after the given delay, and
// "fail" with an error.
func echo(ctx context.Context, method string, args json.RawMessage) (any, error) {
	var a struct {
		N     int
		Delay time.Duration
	}
	json.Unmarshal(args, &a)
	switch method {
	case "echo":
		select {
		case <-time.After(a.Delay):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		return a.N, nil
	case "fail":
		return nil, errors.New("key 0x0000000000000001 not found on hsm-2")
	}
	return nil, fmt.Errorf("unknown method %q", method)
}

func pair(t *testing.T, opt ServerOptions) (*Client, chan error) {
	t.Helper()
	cs, ss := net.Pipe()
	done := make(chan error, 1)
	go func() { done <- Serve(context.Background(), ss, jsonHandler(echo), opt) }()
	c := NewClient(cs)
	t.Cleanup(func() { c.Close() })
	return c, done
}

func TestConcurrentCallsAnswerOutOfOrder(t *testing.T) {
	c, _ := pair(t, ServerOptions{})
	var wg sync.WaitGroup
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			var got int
			// Later calls finish first.
			err := call(c, context.Background(), "echo", map[string]any{"N": i, "Delay": time.Duration(20-i) * time.Millisecond}, &got)
			if err != nil || got != i {
				t.Errorf("call %d: %d, %v", i, got, err)
			}
		}(i)
	}
	wg.Wait()
}

func TestErrorsAndDeadlines(t *testing.T) {
	c, _ := pair(t, ServerOptions{})
	err := call(c, context.Background(), "fail", nil, nil)
	var re *RemoteError
	if !errors.As(err, &re) || re.Message != "key 0x0000000000000001 not found on hsm-2" {
		t.Errorf("remote error: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	if err := call(c, ctx, "echo", map[string]any{"Delay": time.Second}, nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("deadline: %v", err)
	}
	// The connection survives both.
	var n int
	if err := call(c, context.Background(), "echo", map[string]any{"N": 7}, &n); err != nil || n != 7 {
		t.Errorf("after errors: %d %v", n, err)
	}
}

func TestBadPeersAreDropped(t *testing.T) {
	tests := []struct {
		name string
		send func(net.Conn)
		want string
	}{
		{"garbage", func(c net.Conn) { c.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n")) }, "bad magic"},
		{"oversize", func(c net.Conn) {
			c.Write([]byte{'H', 'S', wire.Version, byte(wire.KindRequest), 0, 0, 0, 1, 0x7f, 0xff, 0xff, 0xff})
		}, "the limit is"},
		{"slow loris", func(c net.Conn) { c.Write([]byte{'H', 'S', wire.Version}) }, "stalled in the middle of a frame"},
		{"other version", func(c net.Conn) { c.Write([]byte{'H', 'S', 42, 1, 0, 0, 0, 1, 0, 0, 0, 0}) }, "version 42"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// A good client on its own connection is not disturbed.
			good, _ := pair(t, ServerOptions{})
			cs, ss := net.Pipe()
			defer cs.Close()
			done := make(chan error, 1)
			go func() {
				done <- Serve(context.Background(), ss, jsonHandler(echo), ServerOptions{FrameTimeout: 100 * time.Millisecond})
			}()
			go func() {
				// Drain what the server says back.
				buf := make([]byte, 4096)
				for {
					if _, err := cs.Read(buf); err != nil {
						return
					}
				}
			}()
			tt.send(cs)
			select {
			case err := <-done:
				if err == nil || !strings.Contains(err.Error(), tt.want) {
					t.Errorf("server ended with %v, want %q", err, tt.want)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("the server kept the bad connection")
			}
			var n int
			if err := call(good, context.Background(), "echo", map[string]any{"N": 3}, &n); err != nil || n != 3 {
				t.Errorf("the good client suffered: %d %v", n, err)
			}
		})
	}
}

func TestClosedConnection(t *testing.T) {
	c, _ := pair(t, ServerOptions{})
	c.Close()
	<-c.Done()
	if err := call(c, context.Background(), "echo", nil, nil); err == nil {
		t.Error("call on a closed connection succeeded")
	}
}

func TestServerSaysWhyItHangsUp(t *testing.T) {
	cs, ss := net.Pipe()
	go Serve(context.Background(), ss, jsonHandler(echo), ServerOptions{MaxPayload: 8})
	c := NewClient(cs)
	defer c.Close()
	err := call(c, context.Background(), "echo", map[string]any{"N": 123456789}, nil)
	if err == nil || !strings.Contains(err.Error(), "closed the connection") || !strings.Contains(err.Error(), "the limit is 8") {
		t.Errorf("err = %v", err)
	}
}

// Ending Serve's context stops it reading, but a request in flight still
// gets its answer, and then the client is told the server is going.
func TestShutdownAnswersRequestsInFlight(t *testing.T) {
	cs, ss := net.Pipe()
	ctx, cancel := context.WithCancel(context.Background())
	started := make(chan struct{})
	slow := func(ctx context.Context, method string, args json.RawMessage) (any, error) {
		close(started)
		time.Sleep(100 * time.Millisecond) // work that does not stop halfway
		return "done", nil
	}
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, ss, jsonHandler(slow), ServerOptions{}) }()
	c := NewClient(cs)
	defer c.Close()
	answer := make(chan error, 1)
	var got string
	go func() { answer <- call(c, context.Background(), "work", nil, &got) }()
	<-started
	cancel()
	if err := <-answer; err != nil || got != "done" {
		t.Fatalf("the request in flight: %q, %v", got, err)
	}
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("Serve returned %v", err)
	}
	select {
	case <-c.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the client did not hear the server go")
	}
	if err := c.Err(); err == nil || !strings.Contains(err.Error(), "the HSM server is shutting down") {
		t.Errorf("client's reason: %v", err)
	}
}

// jsonHandler adapts a handler of Go values to a Handler, encoding its
// answers as JSON: these tests' stand-in for package protocol's codec,
// which rpc leaves to its callers.
func jsonHandler(f func(ctx context.Context, method string, args json.RawMessage) (any, error)) Handler {
	return func(ctx context.Context, method string, args []byte) ([]byte, error) {
		out, err := f(ctx, method, args)
		if err != nil {
			return nil, err
		}
		return json.Marshal(out)
	}
}

// call is Client.Call with JSON arguments and answer.
func call(c *Client, ctx context.Context, method string, args, reply any) error {
	in, err := json.Marshal(args)
	if err != nil {
		return err
	}
	out, err := c.Call(ctx, method, in)
	if err != nil || reply == nil {
		return err
	}
	return json.Unmarshal(out, reply)
}

// A request frame whose payload is not a Request message, or that names
// no method, is answered with an error saying so, and the connection
// carries on; an error frame this client cannot read says that too.
func TestGarbageRequestIsRefusedAndConnectionLives(t *testing.T) {
	cs, ss := net.Pipe()
	go Serve(context.Background(), ss, jsonHandler(echo), ServerOptions{})
	defer cs.Close()
	for _, payload := range [][]byte{{0xff, 0xff, 0xff}, {}, []byte(`{"method":"echo"}`)} {
		if err := wire.Write(cs, wire.Frame{Kind: wire.KindRequest, ID: 7, Payload: payload}); err != nil {
			t.Fatal(err)
		}
		f, err := wire.Read(cs, 0)
		if err != nil {
			t.Fatal(err)
		}
		if f.Kind != wire.KindError || f.ID != 7 {
			t.Fatalf("payload %q: got frame kind %d id %d, want an error for 7", payload, f.Kind, f.ID)
		}
		if msg := decodeError(f.Payload).Message; !strings.Contains(msg, "not an hsmsh Request message") {
			t.Errorf("payload %q: %q", payload, msg)
		}
	}
	// The same connection still serves a good request.
	c := NewClient(cs)
	var n int
	if err := call(c, context.Background(), "echo", map[string]any{"N": 5}, &n); err != nil || n != 5 {
		t.Errorf("after the garbage: %d, %v", n, err)
	}
	if re := decodeError([]byte{0x0a, 0x05, 'x'}); !strings.Contains(re.Message, "cannot read") {
		t.Errorf("an unreadable error frame: %q", re.Message)
	}
}
