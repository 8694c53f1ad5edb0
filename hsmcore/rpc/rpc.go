// Package rpc carries requests and responses between an hsmsh client and
// an HSM server over one connection (in the remote mode, the inner TLS
// connection). Requests are protocol buffers in wire frames (hsmsh.proto's
// Request and Error; the arguments and answers inside are bytes, in the
// call's own encoding, which package protocol chooses); each has an id, so many
// can be in flight on one connection and answers may come back in any
// order. A peer that sends garbage, an oversize frame, or stalls in the
// middle of a frame is dropped without harming other connections.
package rpc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/hsmsh/hsmsh/hsmcore/protocol/pb"
	"github.com/hsmsh/hsmsh/hsmcore/wire"
)

// RemoteError is an error the server returned for one request; the
// connection is still good. Code, when the handler set one, lets the
// client tell kinds of failure apart (a key the HSM does not hold, an
// invalid request) without parsing the message.
type RemoteError struct {
	Code    string
	Message string
}

func (e *RemoteError) Error() string { return e.Message }

// errorPayload encodes an error for an error frame (hsmsh.proto's Error):
// a handler's code, if it set one, and the error's text.
func errorPayload(err error) []byte {
	m := &pb.Error{Message: strings.ToValidUTF8(err.Error(), "?")}
	var re *RemoteError
	if errors.As(err, &re) {
		m.Code = re.Code
	}
	b, e := proto.Marshal(m)
	if e != nil {
		b, _ = proto.Marshal(&pb.Error{Message: "an error this server could not encode"})
	}
	return b
}

// textFrame is an error frame that carries only a message.
func textFrame(id uint32, msg string) wire.Frame {
	return wire.Frame{Kind: wire.KindError, ID: id, Payload: errorPayload(errors.New(msg))}
}

// decodeError reads an error frame's payload.
func decodeError(p []byte) *RemoteError {
	var m pb.Error
	if err := proto.Unmarshal(p, &m); err != nil {
		return &RemoteError{Message: fmt.Sprintf("the HSM sent an error frame this hsmsh cannot read (%d bytes: %v)", len(p), err)}
	}
	return &RemoteError{Code: m.Code, Message: m.Message}
}

// ErrClosed is returned for calls on a connection that has gone.
var ErrClosed = errors.New("connection to the HSM is closed")

// ErrIdle is wrapped by the error that ends a connection the server closed
// because it carried no request for ServerOptions.IdleTimeout: Serve
// returns it, and so does a Client's Err once the server has said so. It
// is routine, not a fault, and the client may simply dial again.
var ErrIdle = errors.New("idle timeout")

// idleGoodbye starts the message of the goodbye frame for an idle
// connection, so that the client can tell it from a fault (ErrIdle).
const idleGoodbye = "closing the idle connection: "

// Client sends requests on one connection.
type Client struct {
	conn net.Conn
	wmu  sync.Mutex // one frame written at a time

	mu      sync.Mutex
	next    uint32
	pending map[uint32]chan wire.Frame
	err     error // why the connection ended
	done    chan struct{}
}

// NewClient starts reading answers from conn.
func NewClient(conn net.Conn) *Client {
	c := &Client{conn: conn, pending: map[uint32]chan wire.Frame{}, done: make(chan struct{})}
	go c.readLoop()
	return c
}

func (c *Client) readLoop() {
	var err error
	for {
		var f wire.Frame
		f, err = wire.Read(c.conn, 0)
		if err != nil {
			break
		}
		if f.ID == 0 && f.Kind == wire.KindError {
			// The server says why it is hanging up.
			why := decodeError(f.Payload).Message
			err = fmt.Errorf("the HSM server closed the connection: %s", why)
			if strings.HasPrefix(why, idleGoodbye) {
				err = fmt.Errorf("%w: %w", err, ErrIdle)
			}
			break
		}
		c.mu.Lock()
		ch := c.pending[f.ID]
		delete(c.pending, f.ID)
		c.mu.Unlock()
		if ch != nil {
			ch <- f
		}
	}
	if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) {
		err = ErrClosed
	}
	c.mu.Lock()
	c.err = err
	for id, ch := range c.pending {
		close(ch)
		delete(c.pending, id)
	}
	c.mu.Unlock()
	close(c.done)
}

// Call sends method with its encoded args and returns the encoded answer.
// It honours ctx's deadline and cancellation. An error the server
// returned for this call is a *RemoteError.
func (c *Client) Call(ctx context.Context, method string, args []byte) ([]byte, error) {
	payload, err := proto.Marshal(&pb.Request{Method: method, Args: args})
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", method, err)
	}
	ch := make(chan wire.Frame, 1)
	c.mu.Lock()
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		return nil, err
	}
	c.next++
	id := c.next
	c.pending[id] = ch
	c.mu.Unlock()

	c.wmu.Lock()
	if dl, ok := ctx.Deadline(); ok {
		c.conn.SetWriteDeadline(dl)
	} else {
		c.conn.SetWriteDeadline(time.Time{})
	}
	err = wire.Write(c.conn, wire.Frame{Kind: wire.KindRequest, ID: id, Payload: payload})
	c.wmu.Unlock()
	if err != nil {
		c.forget(id)
		// The server may have hung up with a reason while we wrote; that
		// reason says more than the broken write.
		select {
		case <-c.done:
		case <-time.After(time.Second):
		}
		c.conn.Close() // a half-written frame leaves the stream unusable
		if why := c.Err(); why != nil && why != ErrClosed {
			return nil, fmt.Errorf("send %s: %w", method, why)
		}
		return nil, fmt.Errorf("send %s: %w", method, err)
	}
	select {
	case f, ok := <-ch:
		if !ok {
			c.mu.Lock()
			err := c.err
			c.mu.Unlock()
			return nil, err
		}
		switch f.Kind {
		case wire.KindError:
			return nil, decodeError(f.Payload)
		case wire.KindResponse:
			return f.Payload, nil
		}
		return nil, fmt.Errorf("unexpected %d frame in answer to %s", f.Kind, method)
	case <-ctx.Done():
		c.forget(id)
		return nil, fmt.Errorf("%s: %w", method, ctx.Err())
	}
}

func (c *Client) forget(id uint32) {
	c.mu.Lock()
	delete(c.pending, id)
	c.mu.Unlock()
}

// Done is closed when the connection has ended; Err says why.
func (c *Client) Done() <-chan struct{} { return c.done }

// Err is why the connection ended, nil while it is up.
func (c *Client) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// Close ends the connection; calls in flight fail with ErrClosed.
func (c *Client) Close() error { return c.conn.Close() }

// Handler answers one request: its encoded answer, or an error whose text
// (and code, for a *RemoteError) goes back to the client.
type Handler func(ctx context.Context, method string, args []byte) ([]byte, error)

// ServerOptions bound what one connection may cost the server.
type ServerOptions struct {
	// FrameTimeout is how long a started frame may take to arrive whole;
	// a slower peer is dropped (slow-loris). Default 10s.
	FrameTimeout time.Duration
	// IdleTimeout closes a connection that has had no request in flight
	// and has sent no frame for that long, so abandoned connections (a
	// client that vanished without closing) do not hold the server's
	// resources forever. A long request in flight never counts as idle.
	// 0 = never.
	IdleTimeout time.Duration
	// MaxInFlight bounds concurrent requests per connection. Default 64.
	MaxInFlight int
	MaxPayload  int
	// Log receives a handler's panic, with its stack; nil discards it.
	// The client only learns that the call failed, not the details.
	Log *slog.Logger
}

// Serve answers requests on conn until it ends, running up to
// MaxInFlight handlers at once, and closes conn. It returns why the
// connection ended: nil for a clean close by the peer, ctx's error when
// ctx ended (after answering the requests in flight), an error wrapping
// ErrIdle after IdleTimeout. A handler that panics fails its own call
// with an error; the connection and the other calls carry on.
func Serve(ctx context.Context, conn net.Conn, h Handler, opt ServerOptions) error {
	if opt.FrameTimeout <= 0 {
		opt.FrameTimeout = 10 * time.Second
	}
	if opt.MaxInFlight <= 0 {
		opt.MaxInFlight = 64
	}
	log := opt.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	// The connection is closed when Serve returns, after the answers to
	// requests in flight: a dropped peer is dropped, however it behaves.
	defer conn.Close()
	// When ctx ends, reading stops (a deadline in the past), but requests
	// in flight still get their answers before Serve returns: a shutdown
	// does not drop what the HSM has already done.
	var dmu sync.Mutex
	stopping := false
	setReadDeadline := func(t time.Time) {
		dmu.Lock()
		defer dmu.Unlock()
		if !stopping {
			conn.SetReadDeadline(t)
		}
	}
	served := make(chan struct{})
	defer close(served)
	go func() {
		select {
		case <-ctx.Done():
			dmu.Lock()
			stopping = true
			conn.SetReadDeadline(time.Now())
			dmu.Unlock()
		case <-served:
		}
	}()
	var wmu sync.Mutex
	reply := func(f wire.Frame) {
		wmu.Lock()
		defer wmu.Unlock()
		timeout := opt.FrameTimeout
		if f.ID == 0 {
			// A goodbye to a misbehaving peer: worth a moment, not more.
			timeout = min(timeout, time.Second)
		}
		conn.SetWriteDeadline(time.Now().Add(timeout))
		if err := wire.Write(conn, f); err != nil {
			conn.Close()
		}
	}
	sem := make(chan struct{}, opt.MaxInFlight)
	r := &deadlineReader{conn: conn, set: setReadDeadline, idle: opt.IdleTimeout, frame: opt.FrameTimeout}
	// Requests run on workers that live as long as the connection: a new
	// goroutine per request would grow a fresh stack for every call, a
	// cost the profile of the sign path showed. Workers start as requests
	// need them, up to MaxInFlight, and end with the connection.
	type job struct {
		id  uint32
		req *pb.Request
	}
	jobs := make(chan job)
	workers := 0
	defer close(jobs) // after wg.Wait below: no job is left to take
	var wg sync.WaitGroup
	defer wg.Wait()
	run := func(j job) {
		defer func() { r.end(); <-sem; wg.Done() }()
		b, err := answer(ctx, h, j.req, log)
		if err != nil {
			reply(wire.Frame{Kind: wire.KindError, ID: j.id, Payload: errorPayload(err)})
			return
		}
		reply(wire.Frame{Kind: wire.KindResponse, ID: j.id, Payload: b})
	}
	worker := func(first job) {
		run(first)
		for j := range jobs {
			run(j)
		}
	}
	for {
		r.start()
		f, err := wire.Read(r, opt.MaxPayload)
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			if ctx.Err() != nil {
				wg.Wait()
				reply(textFrame(0, "the HSM server is shutting down"))
				return ctx.Err()
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				if r.frameBegun() {
					err = fmt.Errorf("the peer stalled in the middle of a frame for more than %v: %w", opt.FrameTimeout, err)
				} else {
					// Say so in a way the client recognises (ErrIdle):
					// an idle close is routine, not a fault.
					msg := fmt.Sprintf("no request for %v, the server's idle timeout", opt.IdleTimeout)
					reply(textFrame(0, idleGoodbye+msg))
					return fmt.Errorf("%s: %w", msg, ErrIdle)
				}
			}
			// Say why before hanging up, when the stream still allows it.
			reply(textFrame(0, "closing the connection: "+err.Error()))
			return err
		}
		switch f.Kind {
		case wire.KindPing:
			reply(wire.Frame{Kind: wire.KindPong, ID: f.ID})
			continue
		case wire.KindRequest:
		default:
			reply(textFrame(f.ID, fmt.Sprintf("a client may not send frame kind %d", f.Kind)))
			continue
		}
		req := new(pb.Request)
		if err := proto.Unmarshal(f.Payload, req); err != nil || req.Method == "" {
			reply(textFrame(f.ID, "the request is not an hsmsh Request message (hsmsh.proto: a method and its arguments)"))
			continue
		}
		sem <- struct{}{}
		wg.Add(1)
		// Counted before the next read starts, so that the idle timer is
		// off while this request runs.
		r.begin()
		j := job{f.ID, req}
		select {
		case jobs <- j: // an idle worker takes it
		default:
			if workers < opt.MaxInFlight {
				workers++
				go worker(j)
			} else {
				// Every worker is busy; the semaphore says one is about
				// to finish, and it takes this job next.
				jobs <- j
			}
		}
	}
}

// answer runs the handler for one request and encodes its reply. A panic
// in the handler (or in encoding what it returned) fails this request
// only: without the recover, one faulty method would kill the whole
// server process, and with it every client's connection.
func answer(ctx context.Context, h Handler, req *pb.Request, log *slog.Logger) (b []byte, err error) {
	defer func() {
		if r := recover(); r != nil {
			log.Error("a request handler panicked; the call failed, the server carries on",
				"method", req.Method, "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
			b, err = nil, fmt.Errorf("internal error in %s: the HSM server recovered from a fault; see its log", req.Method)
		}
	}()
	return h(ctx, req.Method, req.Args)
}

// deadlineReader gives the first byte of a frame the idle timeout and the
// rest of it the frame timeout, so a peer cannot hold a half-sent frame.
// While requests are in flight the idle timeout is off: a client waiting
// for a slow answer is not idle. It starts again, from the moment the
// last answer is ready, if no frame has begun by then.
type deadlineReader struct {
	conn        net.Conn
	set         func(time.Time) // sets the read deadline unless stopping
	idle, frame time.Duration

	mu       sync.Mutex // guards what follows, and orders deadline changes
	begun    bool       // the current frame has started arriving
	inFlight int        // requests being answered
}

// start is called before each frame is read.
func (r *deadlineReader) start() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.begun = false
	r.setIdle()
}

// setIdle sets the deadline for a frame that has not begun; r.mu is held.
func (r *deadlineReader) setIdle() {
	if r.idle > 0 && r.inFlight == 0 {
		r.set(time.Now().Add(r.idle))
	} else {
		r.set(time.Time{})
	}
}

// begin counts a request in flight.
func (r *deadlineReader) begin() {
	r.mu.Lock()
	r.inFlight++
	r.mu.Unlock()
}

// end counts a request answered; the last one restarts the idle timer if
// the reader is waiting for a frame that has not begun.
func (r *deadlineReader) end() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.inFlight--
	if r.inFlight == 0 && !r.begun {
		r.setIdle()
	}
}

func (r *deadlineReader) frameBegun() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.begun
}

func (r *deadlineReader) Read(p []byte) (int, error) {
	n, err := r.conn.Read(p)
	if n > 0 {
		r.mu.Lock()
		if !r.begun {
			r.begun = true
			r.set(time.Now().Add(r.frame))
		}
		r.mu.Unlock()
	}
	return n, err
}
