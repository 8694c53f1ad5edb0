package rpc

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/hsmsh/hsmsh/internal/syncbuf"
)

// syncBuffer is a log sink that handler goroutines may write concurrently.
type syncBuffer = syncbuf.Buffer

// badJSON panics when encoded: a fault in the reply, not in the handler.
type badJSON struct{}

func (badJSON) MarshalJSON() ([]byte, error) { panic("MarshalJSON blew up") }

// A panicking handler fails its own call with an error frame; the
// connection, the server and the other calls carry on, and the panic and
// its stack go to the server's log (not to the client).
func TestHandlerPanicFailsOnlyThatCall(t *testing.T) {
	tests := []struct {
		name      string
		method    string
		handler   func() (any, error)
		wantInLog string
	}{
		{"panic with a string", "key.generate", func() (any, error) { panic("boom") }, "boom"},
		{"panic with an error", "user.create", func() (any, error) { panic(errors.New("bad state")) }, "bad state"},
		{"runtime fault", "key.list", func() (any, error) {
			var m map[string]int
			set := func(k string) { m[k] = 1 } // assignment to entry in nil map
			set("x")
			return m, nil
		}, "nil map"},
		{"nil pointer", "session.open", func() (any, error) {
			var p *struct{ n int }
			return p.n, nil
		}, "nil pointer"},
		{"fault while encoding the reply", "key.get", func() (any, error) { return badJSON{}, nil }, "MarshalJSON blew up"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := func(ctx context.Context, method string, args json.RawMessage) (any, error) {
				if method == tt.method {
					return tt.handler()
				}
				return echo(ctx, method, args)
			}
			var logs syncBuffer
			cs, ss := net.Pipe()
			done := make(chan error, 1)
			go func() {
				done <- Serve(context.Background(), ss, jsonHandler(h), ServerOptions{Log: slog.New(slog.NewTextHandler(&logs, nil))})
			}()
			c := NewClient(cs)
			defer c.Close()

			// A slow call in flight while the other one panics.
			slow := make(chan error, 1)
			go func() {
				var n int
				err := call(c, context.Background(), "echo", map[string]any{"N": 5, "Delay": 100 * time.Millisecond}, &n)
				if err == nil && n != 5 {
					err = errors.New("wrong answer")
				}
				slow <- err
			}()

			err := call(c, context.Background(), tt.method, nil, nil)
			want := "internal error in " + tt.method + ": the HSM server recovered from a fault; see its log"
			var re *RemoteError
			if !errors.As(err, &re) || re.Message != want {
				t.Fatalf("the faulty call returned %v, want the remote error %q", err, want)
			}
			if strings.Contains(err.Error(), tt.wantInLog) {
				t.Errorf("the client was told the panic's details: %v", err)
			}
			if err := <-slow; err != nil {
				t.Errorf("the call in flight alongside failed: %v", err)
			}
			var n int
			if err := call(c, context.Background(), "echo", map[string]any{"N": 9}, &n); err != nil || n != 9 {
				t.Errorf("the connection did not survive the panic: %d, %v", n, err)
			}
			select {
			case err := <-done:
				t.Errorf("Serve returned after the panic: %v", err)
			default:
			}
			log := logs.String()
			for _, w := range []string{"panicked", "method=" + tt.method, tt.wantInLog, "stack=", "goroutine "} {
				if !strings.Contains(log, w) {
					t.Errorf("the log lacks %q:\n%s", w, log)
				}
			}
		})
	}
}

// A nil Log is allowed: the panic is still recovered.
func TestHandlerPanicWithoutLog(t *testing.T) {
	cs, ss := net.Pipe()
	h := func(ctx context.Context, method string, args json.RawMessage) (any, error) { panic("no log") }
	go Serve(context.Background(), ss, jsonHandler(h), ServerOptions{})
	c := NewClient(cs)
	defer c.Close()
	for range 2 {
		if err := call(c, context.Background(), "m", nil, nil); err == nil || !strings.Contains(err.Error(), "internal error in m") {
			t.Fatalf("call: %v", err)
		}
	}
}

// IdleTimeout closes a connection that has nothing in flight and sends
// nothing, and only such a connection.
func TestIdleTimeout(t *testing.T) {
	const idle = 300 * time.Millisecond
	tests := []struct {
		name     string
		idle     time.Duration
		use      func(t *testing.T, c *Client) // what the client does first
		wantIdle bool                          // the server then closes the connection as idle
		within   time.Duration                 // how long to wait for that
	}{
		{"silent connection is closed", idle, func(*testing.T, *Client) {}, true, 5 * time.Second},
		{"closed after its last answer", idle, func(t *testing.T, c *Client) {
			if err := call(c, context.Background(), "echo", map[string]any{"N": 1}, nil); err != nil {
				t.Fatal(err)
			}
		}, true, 5 * time.Second},
		{"a long request in flight is not idle", idle, func(t *testing.T, c *Client) {
			var n int
			err := call(c, context.Background(), "echo", map[string]any{"N": 4, "Delay": 4 * idle}, &n)
			if err != nil || n != 4 {
				t.Fatalf("a request longer than the idle timeout: %d, %v", n, err)
			}
		}, true, 5 * time.Second},
		{"a steady client is not idle", idle, func(t *testing.T, c *Client) {
			for i := range 6 {
				time.Sleep(idle / 5)
				if err := call(c, context.Background(), "echo", map[string]any{"N": i}, nil); err != nil {
					t.Fatalf("call %d after %v: %v", i, time.Duration(i)*idle/5, err)
				}
			}
		}, true, 5 * time.Second},
		{"0 never closes", 0, func(*testing.T, *Client) {}, false, 3 * idle},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cs, ss := net.Pipe()
			done := make(chan error, 1)
			go func() {
				done <- Serve(context.Background(), ss, jsonHandler(echo), ServerOptions{IdleTimeout: tt.idle})
			}()
			c := NewClient(cs)
			defer c.Close()
			tt.use(t, c)
			used := time.Now()
			select {
			case err := <-done:
				if !tt.wantIdle {
					t.Fatalf("Serve ended with %v; IdleTimeout 0 must keep the connection", err)
				}
				if !errors.Is(err, ErrIdle) {
					t.Errorf("Serve ended with %v, want ErrIdle", err)
				}
				if waited := time.Since(used); waited < tt.idle/2 {
					t.Errorf("closed %v after the last use, before the idle timeout %v", waited, tt.idle)
				}
			case <-time.After(tt.within):
				if tt.wantIdle {
					t.Fatalf("the idle connection was still open after %v", tt.within)
				}
				var n int
				if err := call(c, context.Background(), "echo", map[string]any{"N": 2}, &n); err != nil || n != 2 {
					t.Errorf("after a silence: %d, %v", n, err)
				}
				return
			}
			select {
			case <-c.Done():
			case <-time.After(5 * time.Second):
				t.Fatal("the client did not hear the server close")
			}
			if err := c.Err(); !errors.Is(err, ErrIdle) || !strings.Contains(err.Error(), "idle timeout") {
				t.Errorf("the client's reason: %v, want ErrIdle and a message naming the idle timeout", err)
			}
		})
	}
}
