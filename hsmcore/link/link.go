// Package link keeps a connection to one HSM's door over nested TLS and
// the rpc protocol: it redials with backoff, reports the HSM down while it
// cannot reach it, and says which TLS layer failed. The client library
// reaches servers through it, and so does a server its peers.
package link

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hsmsh/hsmsh/hsmcore/nestedtls"
	"github.com/hsmsh/hsmsh/hsmcore/protocol"
	"github.com/hsmsh/hsmsh/hsmcore/rpc"
)

// Node is an HSM the client library reaches over the nested TLS
// connection and the rpc protocol: an HSM server in remote mode, or an
// in-process HSM behind an in-memory pipe in the embedded mode's default
// transport. It keeps one connection (many requests in flight on it),
// redials with backoff when the connection goes, and reports the HSM down
// while it cannot reach it, so that routing goes around it.
type Node struct {
	id, addr string
	dial     func(ctx context.Context) (net.Conn, nestedtls.Info, error)
	// timeout bounds one request; a server that does not answer in time
	// is taken as gone and redialled.
	timeout time.Duration
	// Notify, if set before Start, hears when the HSM goes down or comes back.
	Notify func(protocol.Event)

	up     atomic.Bool
	dialMu sync.Mutex // one dial at a time

	mu      sync.Mutex
	client  *rpc.Client
	tls     nestedtls.Info // the last handshake, good or failed
	lastErr error          // why the node is down
	backoff time.Duration
	retryAt time.Time // no redial before this, unless forced
	closed  bool
	state   protocol.HSMState // what notify last said
	stop    chan struct{}
	wake    chan struct{} // a call found the connection gone
}

// Backoff bounds for redialling an HSM.
const (
	minBackoff = 100 * time.Millisecond
	maxBackoff = 5 * time.Second
)

func New(id, addr string, timeout time.Duration, dial func(context.Context) (net.Conn, nestedtls.Info, error)) *Node {
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	n := &Node{id: id, addr: addr, dial: dial, timeout: timeout, stop: make(chan struct{}), wake: make(chan struct{}, 1)}
	n.lastErr = errors.New("not connected yet")
	return n
}

// start makes the first connection (waiting up to wait for it) and keeps
// the node connected in the background from then on.
func (n *Node) Start(wait time.Duration) {
	if wait > 0 {
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		n.connect(ctx)
		cancel()
	}
	go n.keepAlive()
}

// keepAlive redials a lost connection with exponential backoff, so the
// node comes back up on its own when its server does, and the panes show
// it without a command having to fail first.
func (n *Node) keepAlive() {
	for {
		n.mu.Lock()
		c, wait := n.client, time.Until(n.retryAt)
		n.mu.Unlock()
		var done <-chan struct{}
		if c != nil {
			done = c.Done()
		}
		var timer <-chan time.Time
		var t *time.Timer
		if c == nil {
			t = time.NewTimer(max(wait, time.Millisecond))
			timer = t.C
		}
		select {
		case <-n.stop:
			return
		case <-done:
			n.lost(c, c.Err())
		case <-n.wake:
		case <-timer:
			ctx, cancel := context.WithTimeout(context.Background(), min(n.timeout, 10*time.Second))
			n.connect(ctx)
			cancel()
		}
		if t != nil {
			t.Stop()
		}
	}
}

// connect dials once, unless a connection is up already.
func (n *Node) connect(ctx context.Context) (*rpc.Client, error) {
	n.dialMu.Lock()
	defer n.dialMu.Unlock()
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return nil, fmt.Errorf("%s: the client is closed", n.id)
	}
	if n.client != nil {
		c := n.client
		n.mu.Unlock()
		return c, nil
	}
	n.mu.Unlock()
	conn, info, err := n.dial(ctx)
	n.mu.Lock()
	defer n.mu.Unlock()
	n.tls = info
	if err != nil {
		n.lastErr = err
		n.backoff = min(max(2*n.backoff, minBackoff), maxBackoff)
		n.retryAt = time.Now().Add(n.backoff)
		n.up.Store(false)
		n.announce(protocol.StateDown, err.Error())
		return nil, err
	}
	if n.closed {
		conn.Close()
		return nil, fmt.Errorf("%s: the client is closed", n.id)
	}
	n.client = rpc.NewClient(conn)
	n.lastErr, n.backoff = nil, 0
	n.up.Store(true)
	n.announce(protocol.StateActive, "connected to "+n.addr)
	return n.client, nil
}

// lost drops a connection that failed, so the next call or the keep-alive
// loop dials a new one.
func (n *Node) lost(c *rpc.Client, why error) {
	n.mu.Lock()
	if n.client == c && c != nil && errors.Is(why, rpc.ErrIdle) {
		// The server closed a connection that had been idle for its
		// idle_timeout: nothing is wrong, and the HSM is not down. The
		// next call (or the keep-alive loop) dials again at once.
		n.client = nil
		n.lastErr = why
		n.backoff, n.retryAt = 0, time.Now()
		c.Close()
	} else if n.client == c && c != nil {
		n.client = nil
		n.lastErr = why
		n.backoff = minBackoff
		n.retryAt = time.Now().Add(n.backoff)
		n.up.Store(false)
		c.Close()
		n.announce(protocol.StateDown, fmt.Sprint(why))
	}
	n.mu.Unlock()
	select {
	case n.wake <- struct{}{}:
	default:
	}
}

// announce tells Notify of a change of state; n.mu is held.
func (n *Node) announce(st protocol.HSMState, detail string) {
	if n.state == st || n.Notify == nil || n.closed {
		return
	}
	n.state = st
	kind := protocol.EventHSMUp
	if st == protocol.StateDown {
		kind = protocol.EventHSMDown
	}
	n.Notify(protocol.Event{Kind: kind, HSM: n.id, Detail: detail})
}

// call sends one request. A connection-level failure (not an error the
// HSM returned) marks the node down; the keep-alive loop redials.
func (n *Node) Call(method string, args, reply any) error {
	n.mu.Lock()
	c, last := n.client, n.lastErr
	n.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), n.timeout)
	defer cancel()
	if c == nil && errors.Is(last, rpc.ErrIdle) {
		c, _ = n.connect(ctx)
	}
	if c == nil {
		return &protocol.DownError{ID: n.id, Why: last}
	}
	in, err := protocol.EncodeArgs(method, args)
	if err != nil {
		return fmt.Errorf("encode %s: %w", method, err)
	}
	out, err := c.Call(ctx, method, in)
	if err == nil {
		if err := protocol.DecodeAnswer(method, out, reply); err != nil {
			return fmt.Errorf("%w: the answer of %s to %s: %w", protocol.ErrInvalid, n.id, method, err)
		}
		return nil
	}
	var re *rpc.RemoteError
	if errors.As(err, &re) {
		return protocol.RemoteError(re)
	}
	n.lost(c, err)
	return &protocol.DownError{ID: n.id, Why: err}
}

func (n *Node) ID() string { return n.id }

// Redial dials a lost connection now rather than when its backoff ends:
// the HSM was just heard from (it called this one), so it is back.
func (n *Node) Redial() {
	n.mu.Lock()
	if n.client != nil || n.closed {
		n.mu.Unlock()
		return
	}
	n.backoff, n.retryAt = 0, time.Now()
	n.mu.Unlock()
	select {
	case n.wake <- struct{}{}:
	default:
	}
}

// downWhy is why the node is down: the last connection's failure, with
// the TLS layer that refused it.
func (n *Node) DownWhy() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.lastErr == nil {
		return "not answering"
	}
	var le *nestedtls.LayerError
	if errors.As(n.lastErr, &le) {
		return fmt.Sprintf("%s layer failed: %v", le.Layer, le.Err)
	}
	return n.lastErr.Error()
}
func (n *Node) Up() bool { return n.up.Load() }

func (n *Node) Close() error {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return nil
	}
	n.closed = true
	c := n.client
	n.client = nil
	n.up.Store(false)
	close(n.stop)
	n.mu.Unlock()
	if c != nil {
		// A failure here is at most a close_notify the peer did not take:
		// the connection is gone either way.
		c.Close()
	}
	return nil
}

// TLS returns the last handshake's layers and, when the HSM cannot be
// reached, why.
func (n *Node) TLS() (nestedtls.Info, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.tls, n.lastErr
}

// tlsSummary is the one-line TLS state of cluster hsm-info.
func (n *Node) TLSSummary() string {
	info, err := n.TLS()
	if err != nil {
		var le *nestedtls.LayerError
		if errors.As(err, &le) {
			return n.DownWhy()
		}
		return "not connected: " + err.Error()
	}
	return fmt.Sprintf("outer %s · inner %s · %s %s", info.Outer.Status, info.Inner.Status, info.Inner.Version, info.Inner.Cipher)
}

func (n *Node) Info() protocol.HSMInfo {
	info := protocol.HSMInfo{ID: n.id, State: protocol.StateDown, Address: n.addr}
	var got protocol.HSMInfo
	if err := n.Call(protocol.CallInfo, nil, &got); err == nil {
		info = got
		info.ID, info.Address = n.id, n.addr
	}
	info.TLS = n.TLSSummary()
	if !n.Up() {
		info.State = protocol.StateDown
	}
	return info
}

// Addr is where the node connects: an address, or a description of the
// in-memory pipe.
func (n *Node) Addr() string { return n.addr }

// Dial is a node for an HSM server at addr, reached over nested TLS.
func Dial(id, addr string, cfg nestedtls.ClientConfig, timeout time.Duration) *Node {
	return New(id, addr, timeout, func(ctx context.Context) (net.Conn, nestedtls.Info, error) {
		return nestedtls.Dial(ctx, addr, cfg)
	})
}
