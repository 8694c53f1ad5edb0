package netguard

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hsmsh/hsmsh/internal/syncbuf"
)

// logBuffer is a log sink safe for the accept loop and the test at once.
type logBuffer = syncbuf.Buffer

func loggerTo(l *logBuffer) *slog.Logger { return slog.New(slog.NewTextHandler(l, nil)) }

// fakeListener fails its first len(errs) Accepts with those errors (all of
// them, forever, if forever is set), then hands out conns.
type fakeListener struct {
	mu      sync.Mutex
	errs    []error
	forever error
	calls   int
	conns   chan net.Conn
	closed  chan struct{}
	once    sync.Once
}

func newFake(errs ...error) *fakeListener {
	return &fakeListener{errs: errs, conns: make(chan net.Conn, 4), closed: make(chan struct{})}
}

func (f *fakeListener) Accept() (net.Conn, error) {
	f.mu.Lock()
	f.calls++
	select {
	case <-f.closed:
		f.mu.Unlock()
		return nil, &net.OpError{Op: "accept", Net: "tcp", Err: net.ErrClosed}
	default:
	}
	if f.forever != nil {
		f.mu.Unlock()
		return nil, f.forever
	}
	if len(f.errs) > 0 {
		err := f.errs[0]
		f.errs = f.errs[1:]
		f.mu.Unlock()
		return nil, err
	}
	f.mu.Unlock()
	select {
	case c := <-f.conns:
		return c, nil
	case <-f.closed:
		return nil, &net.OpError{Op: "accept", Net: "tcp", Err: net.ErrClosed}
	}
}

func (f *fakeListener) Close() error {
	f.once.Do(func() { close(f.closed) })
	return nil
}

func (f *fakeListener) Addr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 2223} }

func (f *fakeListener) Calls() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls
}

// acceptErr is an accept failure as the net package reports it.
func acceptErr(errno syscall.Errno) error {
	return &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", errno)}
}

// Accept rides out failures that leave the listening socket usable:
// it backs off, logs once per burst, and then returns the connection.
func TestAcceptSurvivesErrors(t *testing.T) {
	tests := []struct {
		name string
		errs []error
	}{
		{"too many open files", []error{acceptErr(syscall.EMFILE), acceptErr(syscall.EMFILE), acceptErr(syscall.EMFILE)}},
		{"too many open files in system", []error{acceptErr(syscall.ENFILE), acceptErr(syscall.ENFILE)}},
		{"connection aborted", []error{acceptErr(syscall.ECONNABORTED)}},
		{"no buffer space", []error{acceptErr(syscall.ENOBUFS), acceptErr(syscall.ENOMEM)}},
		{"unknown failure", []error{errors.New("something odd"), acceptErr(syscall.EMFILE)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFake(tt.errs...)
			a, b := net.Pipe()
			defer a.Close()
			defer b.Close()
			f.conns <- a
			var logs logBuffer
			ln := Listen(f, Options{Log: loggerTo(&logs)})
			start := time.Now()
			c, err := ln.Accept()
			took := time.Since(start)
			if err != nil {
				t.Fatalf("Accept gave up after %d failures: %v", len(tt.errs), err)
			}
			if c != a {
				t.Errorf("Accept returned %v, want the fake's connection", c)
			}
			// Backing off: 5 ms, doubling, before each retry.
			var want time.Duration
			d := time.Duration(0)
			for range tt.errs {
				d = min(max(2*d, minDelay), maxDelay)
				want += d
			}
			if took < want {
				t.Errorf("Accept retried %d failures in %v; backing off takes at least %v", len(tt.errs), took, want)
			}
			log := logs.String()
			if n := strings.Count(log, "accepting connections failed"); n != 1 {
				t.Errorf("logged the burst of %d failures %d times, want once:\n%s", len(tt.errs), n, log)
			}
			if !strings.Contains(log, tt.errs[0].Error()) {
				t.Errorf("the log does not say what failed (%v):\n%s", tt.errs[0], log)
			}
			if !strings.Contains(log, "accepting connections again") {
				t.Errorf("the log does not say accepting recovered:\n%s", log)
			}
			ln.Close()
			if _, err := ln.Accept(); err == nil {
				t.Error("Accept on a closed listener succeeded")
			}
		})
	}
}

// The backoff doubles from 5 ms and stops at 1 s, so a long outage costs
// about one retry a second, not a spinning CPU; and Close ends an Accept
// that is waiting out a failure.
func TestAcceptBacksOffUntilClosed(t *testing.T) {
	f := newFake()
	f.forever = acceptErr(syscall.EMFILE)
	var logs logBuffer
	ln := Listen(f, Options{Log: loggerTo(&logs)})
	done := make(chan error, 1)
	go func() {
		_, err := ln.Accept()
		done <- err
	}()
	time.Sleep(1500 * time.Millisecond)
	// 5+10+20+...+640 ms is 1.275 s for 8 tries, then 1 s steps: about 9
	// or 10 calls in 1.5 s; a spinning loop makes thousands.
	if n := f.Calls(); n < 5 || n > 15 {
		t.Errorf("Accept was tried %d times in 1.5 s of failures, want about 10", n)
	}
	ln.Close()
	select {
	case err := <-done:
		if !errors.Is(err, net.ErrClosed) {
			t.Errorf("Accept after Close returned %v, want net.ErrClosed", err)
		}
	case <-time.After(time.Second / 2):
		t.Fatal("Close did not end an Accept waiting out a failure")
	}
	if n := strings.Count(logs.String(), "accepting connections failed"); n != 1 {
		t.Errorf("one long burst logged %d times, want once", n)
	}
}

// A listener closed underneath (not through the guard) ends Accept too,
// with the underlying error.
func TestAcceptEndsWhenListenerCloses(t *testing.T) {
	f := newFake(acceptErr(syscall.EMFILE))
	ln := Listen(f, Options{})
	done := make(chan error, 1)
	go func() {
		_, err := ln.Accept()
		done <- err
	}()
	time.Sleep(20 * time.Millisecond)
	f.Close()
	select {
	case err := <-done:
		if !errors.Is(err, net.ErrClosed) {
			t.Errorf("Accept returned %v, want the closed listener's error", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("Accept kept retrying on a closed listener")
	}
}

// MaxConns caps the connections open at once on a real loopback listener:
// one over the cap is closed at once and logged, and closing an accepted
// connection (once or twice) frees exactly one place.
func TestMaxConns(t *testing.T) {
	tests := []struct {
		name    string
		max     int
		dials   int // connections made while none is closed
		refused int // how many of them the cap refuses
	}{
		{"under the cap", 3, 2, 0},
		{"at the cap", 2, 2, 0},
		{"over the cap", 2, 4, 2},
		{"cap of one", 1, 3, 2},
		{"no cap", 0, 20, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			raw, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			var logs logBuffer
			ln := Listen(raw, Options{MaxConns: tt.max, Log: loggerTo(&logs)})
			defer ln.Close()
			accepted := make(chan net.Conn, 100)
			go func() {
				for {
					c, err := ln.Accept()
					if err != nil {
						return
					}
					accepted <- c
				}
			}()
			var clients []net.Conn
			defer func() {
				for _, c := range clients {
					c.Close()
				}
			}()
			var open []net.Conn // server side of the accepted ones
			// dial connects and says whether the guard handed the connection
			// to Accept's caller or closed it at once.
			dial := func() (net.Conn, bool) {
				c, err := net.Dial("tcp", raw.Addr().String())
				if err != nil {
					t.Fatal(err)
				}
				clients = append(clients, c)
				hungUp := make(chan error, 1)
				go func() {
					// Returns when the server closes, or at cleanup.
					_, err := c.Read(make([]byte, 1))
					hungUp <- err
				}()
				select {
				case s := <-accepted:
					open = append(open, s)
					return c, true
				case err := <-hungUp:
					if err != io.EOF && !errors.Is(err, syscall.ECONNRESET) {
						t.Errorf("a refused connection read %v, want EOF or a reset", err)
					}
					return c, false
				case <-time.After(10 * time.Second):
					t.Fatal("a connection was neither accepted nor closed")
					return nil, false
				}
			}
			refused := 0
			for range tt.dials {
				if _, ok := dial(); !ok {
					refused++
				}
			}
			if refused != tt.refused {
				t.Fatalf("%d of %d connections refused, want %d", refused, tt.dials, tt.refused)
			}
			if tt.refused > 0 {
				want := fmt.Sprintf("connection refused: %d connections open, the server's max_connections", tt.max)
				if !strings.Contains(logs.String(), want) {
					t.Errorf("the log lacks %q:\n%s", want, logs.String())
				}
			} else if strings.Contains(logs.String(), "refused") {
				t.Errorf("refusals logged under the cap:\n%s", logs.String())
			}
			if tt.max == 0 {
				return
			}
			// Closing an accepted connection twice frees one place, not two:
			// after it the cap admits exactly tt.max-live more.
			open[0].Close()
			open[0].Close()
			live := len(open) - 1
			for ; live < tt.max; live++ {
				if _, ok := dial(); !ok {
					t.Fatalf("refused with %d of %d open: Close freed no place", live, tt.max)
				}
			}
			if _, ok := dial(); ok {
				t.Fatal("a second Close of one connection freed a second place")
			}
		})
	}
}
