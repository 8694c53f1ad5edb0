// Package netguard hardens a server's listening socket against running
// out of resources. Listen wraps a net.Listener so that its Accept rides
// out transient failures (out of file descriptors, a connection reset
// before it was accepted) instead of ending the server's accept loop, and
// so that at most a set number of accepted connections are open at once:
// a flood of connections (a misbehaving client, a port scan, an attack
// before any TLS handshake) cannot exhaust the process's file descriptors
// or memory and take every other client down with it.
package netguard

import (
	"errors"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Options configure Listen.
type Options struct {
	// MaxConns caps the accepted connections open at once; a connection
	// over the cap is closed as soon as it is accepted. 0 = no cap.
	MaxConns int
	// Log receives accept failures (once per burst) and refused
	// connections; nil discards them.
	Log *slog.Logger
}

// Backoff bounds after a failed Accept: the wait starts at minDelay and
// doubles up to maxDelay while the failures last, so a process out of
// file descriptors neither spins on the CPU nor stalls for long once
// descriptors are free again.
const (
	minDelay = 5 * time.Millisecond
	maxDelay = time.Second
)

// refusalLogEvery spaces the log lines about refused connections, so a
// flood of connections cannot flood the log as well.
const refusalLogEvery = time.Second

// Listen returns ln guarded as Options say. Closing the returned listener
// closes ln; connections it accepted stay open, each counted until it is
// closed.
func Listen(ln net.Listener, opts Options) net.Listener {
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &listener{Listener: ln, max: int64(max(opts.MaxConns, 0)), log: log, closed: make(chan struct{})}
}

type listener struct {
	net.Listener
	max int64 // 0 = no cap
	log *slog.Logger

	open      atomic.Int64 // accepted connections not yet closed
	closeOnce sync.Once
	closed    chan struct{} // closed by Close: Accept stops retrying

	mu          sync.Mutex // guards the refusal log's rate limit
	lastRefusal time.Time  // when a refusal was last logged
	refused     int        // refusals since then, not yet logged
}

// Accept waits for the next connection under the cap. Only a closed
// listener makes it return an error; any other failure is logged, waited
// out and retried.
func (l *listener) Accept() (net.Conn, error) {
	var delay time.Duration
	failures := 0
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			if l.isClosed() || errors.Is(err, net.ErrClosed) {
				return nil, err
			}
			// EMFILE, ENFILE, ENOBUFS, ECONNABORTED and the like: the
			// listening socket is still good, and the connection waiting
			// in its backlog is accepted once the process has room again.
			if failures == 0 {
				l.log.Warn("accepting connections failed; retrying with backoff (if the process is out of file descriptors, raise its limit or lower the server's max_connections)",
					"address", l.Addr().String(), "error", err.Error())
			}
			failures++
			delay = min(max(2*delay, minDelay), maxDelay)
			select {
			case <-time.After(delay):
			case <-l.closed:
				return nil, net.ErrClosed
			}
			continue
		}
		if failures > 0 {
			l.log.Info("accepting connections again", "address", l.Addr().String(), "failures", failures)
			failures, delay = 0, 0
		}
		if l.max == 0 {
			return c, nil
		}
		if n := l.open.Add(1); n > l.max {
			l.open.Add(-1)
			c.Close()
			l.refuse(c.RemoteAddr(), n-1)
			continue
		}
		return &conn{Conn: c, l: l}, nil
	}
}

// refuse logs a connection closed over the cap, at most once per
// refusalLogEvery, with how many were refused since the last line.
func (l *listener) refuse(from net.Addr, open int64) {
	l.mu.Lock()
	l.refused++
	now := time.Now()
	if now.Sub(l.lastRefusal) < refusalLogEvery {
		l.mu.Unlock()
		return
	}
	n := l.refused
	l.refused, l.lastRefusal = 0, now
	l.mu.Unlock()
	l.log.Warn("connection refused: "+strconv.FormatInt(open, 10)+" connections open, the server's max_connections",
		"from", addrString(from), "refused", n)
}

// Close closes the underlying listener and stops Accept, even one waiting
// out a failure.
func (l *listener) Close() error {
	l.closeOnce.Do(func() { close(l.closed) })
	return l.Listener.Close()
}

func (l *listener) isClosed() bool {
	select {
	case <-l.closed:
		return true
	default:
		return false
	}
}

// conn is an accepted connection counted against the cap until closed.
type conn struct {
	net.Conn
	l    *listener
	once sync.Once
}

// Close closes the connection; the first call gives its place under the
// cap back, later ones change nothing.
func (c *conn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.l.open.Add(-1) })
	return err
}

// NetConn returns the accepted connection underneath, as tls.Conn's does.
func (c *conn) NetConn() net.Conn { return c.Conn }

func addrString(a net.Addr) string {
	if a == nil {
		return "unknown"
	}
	return a.String()
}
