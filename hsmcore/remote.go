package hsmcore

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hsmsh/hsmsh/hsmcore/authsession"
	"github.com/hsmsh/hsmsh/hsmcore/nestedtls"
	"github.com/hsmsh/hsmsh/hsmcore/quorum"
	"github.com/hsmsh/hsmsh/hsmcore/rpc"
)

// remoteNode is an HSM the client library reaches over the nested TLS
// connection and the rpc protocol: an HSM server in remote mode, or an
// in-process HSM behind an in-memory pipe in the embedded mode's default
// transport. It keeps one connection (many requests in flight on it),
// redials with backoff when the connection goes, and reports the HSM down
// while it cannot reach it, so that routing goes around it.
type remoteNode struct {
	id, addr string
	dial     func(ctx context.Context) (net.Conn, nestedtls.Info, error)
	// timeout bounds one request; a server that does not answer in time
	// is taken as gone and redialled.
	timeout time.Duration
	// notify, if set, hears when the HSM goes down or comes back.
	notify func(Event)

	up     atomic.Bool
	dialMu sync.Mutex // one dial at a time

	mu      sync.Mutex
	client  *rpc.Client
	tls     nestedtls.Info // the last handshake, good or failed
	lastErr error          // why the node is down
	backoff time.Duration
	retryAt time.Time // no redial before this, unless forced
	closed  bool
	state   HSMState // what notify last said
	stop    chan struct{}
	wake    chan struct{} // a call found the connection gone
}

// Backoff bounds for redialling an HSM.
const (
	minBackoff = 100 * time.Millisecond
	maxBackoff = 5 * time.Second
)

func newRemoteNode(id, addr string, timeout time.Duration, dial func(context.Context) (net.Conn, nestedtls.Info, error)) *remoteNode {
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	n := &remoteNode{id: id, addr: addr, dial: dial, timeout: timeout, stop: make(chan struct{}), wake: make(chan struct{}, 1)}
	n.lastErr = errors.New("not connected yet")
	return n
}

// start makes the first connection (waiting up to wait for it) and keeps
// the node connected in the background from then on.
func (n *remoteNode) start(wait time.Duration) {
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
func (n *remoteNode) keepAlive() {
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
func (n *remoteNode) connect(ctx context.Context) (*rpc.Client, error) {
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
		n.announce(StateDown, err.Error())
		return nil, err
	}
	if n.closed {
		conn.Close()
		return nil, fmt.Errorf("%s: the client is closed", n.id)
	}
	n.client = rpc.NewClient(conn)
	n.lastErr, n.backoff = nil, 0
	n.up.Store(true)
	n.announce(StateActive, "connected to "+n.addr)
	return n.client, nil
}

// lost drops a connection that failed, so the next call or the keep-alive
// loop dials a new one.
func (n *remoteNode) lost(c *rpc.Client, why error) {
	n.mu.Lock()
	if n.client == c && c != nil {
		n.client = nil
		n.lastErr = why
		n.backoff = minBackoff
		n.retryAt = time.Now().Add(n.backoff)
		n.up.Store(false)
		c.Close()
		n.announce(StateDown, fmt.Sprint(why))
	}
	n.mu.Unlock()
	select {
	case n.wake <- struct{}{}:
	default:
	}
}

// announce tells notify of a change of state; n.mu is held.
func (n *remoteNode) announce(st HSMState, detail string) {
	if n.state == st || n.notify == nil || n.closed {
		return
	}
	n.state = st
	kind := EventHSMUp
	if st == StateDown {
		kind = EventHSMDown
	}
	n.notify(Event{Kind: kind, HSM: n.id, Detail: detail})
}

// call sends one request. A connection-level failure (not an error the
// HSM returned) marks the node down; the keep-alive loop redials.
func (n *remoteNode) call(method string, args, reply any) error {
	n.mu.Lock()
	c, last := n.client, n.lastErr
	n.mu.Unlock()
	if c == nil {
		return &downError{id: n.id, why: last}
	}
	ctx, cancel := context.WithTimeout(context.Background(), n.timeout)
	defer cancel()
	err := c.Call(ctx, method, args, reply)
	if err == nil {
		return nil
	}
	var re *rpc.RemoteError
	if errors.As(err, &re) {
		return remoteErr(re)
	}
	n.lost(c, err)
	return &downError{id: n.id, why: err}
}

func (n *remoteNode) ID() string { return n.id }
func (n *remoteNode) Up() bool   { return n.up.Load() }

func (n *remoteNode) Close() error {
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
func (n *remoteNode) TLS() (nestedtls.Info, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.tls, n.lastErr
}

// tlsSummary is the one-line TLS state of cluster hsm-info.
func (n *remoteNode) tlsSummary() string {
	info, err := n.TLS()
	if err != nil {
		var le *nestedtls.LayerError
		if errors.As(err, &le) {
			return fmt.Sprintf("%s layer failed: %v", le.Layer, le.Err)
		}
		return "not connected: " + err.Error()
	}
	return fmt.Sprintf("outer %s · inner %s · %s %s", info.Outer.Status, info.Inner.Status, info.Inner.Version, info.Inner.Cipher)
}

func (n *remoteNode) Info() HSMInfo {
	info := HSMInfo{ID: n.id, State: StateDown, Address: n.addr}
	var got HSMInfo
	if err := n.call(mInfo, nil, &got); err == nil {
		info = got
		info.ID, info.Address = n.id, n.addr
	}
	info.TLS = n.tlsSummary()
	if !n.Up() {
		info.State = StateDown
	}
	return info
}

func (n *remoteNode) PutKeys(recs []*keyRecord) error { return callFunc(n.call).PutKeys(recs) }

func (n *remoteNode) UpdateMeta(r *keyRecord) error { return callFunc(n.call).UpdateMeta(r) }

func (n *remoteNode) KeyMeta(ref Ref) (*keyRecord, error) { return callFunc(n.call).KeyMeta(ref) }

func (n *remoteNode) TokenKeys(refs []Ref) []*keyRecord { return callFunc(n.call).TokenKeys(refs) }

func (n *remoteNode) Has(ref Ref) bool { return callFunc(n.call).Has(ref) }

func (n *remoteNode) RefTaken(ref Ref) bool { return callFunc(n.call).RefTaken(ref) }

func (n *remoteNode) DeleteKey(ref Ref) error { return callFunc(n.call).DeleteKey(ref) }

func (n *remoteNode) Snapshot(f Filter) ([]*keyRecord, error) { return callFunc(n.call).Snapshot(f) }

func (n *remoteNode) TokenState() ([]Ref, map[Ref]time.Time) { return callFunc(n.call).TokenState() }

func (n *remoteNode) DestroySession(session string) int {
	return callFunc(n.call).DestroySession(session)
}

func (n *remoteNode) Sign(req SignRequest) ([]byte, error) { return callFunc(n.call).Sign(req) }

func (n *remoteNode) Verify(req SignRequest, sig []byte) error {
	return callFunc(n.call).Verify(req, sig)
}

func (n *remoteNode) PublicKeyPEM(ref Ref) ([]byte, error) { return callFunc(n.call).PublicKeyPEM(ref) }

func (n *remoteNode) UserState() (map[string]*userRecord, map[string]int64) {
	return callFunc(n.call).UserState()
}

func (n *remoteNode) PutUser(u *userRecord) error { return callFunc(n.call).PutUser(u) }

func (n *remoteNode) DeleteUser(name string, at int64) error {
	return callFunc(n.call).DeleteUser(name, at)
}

func (n *remoteNode) UnshareAll(username string) error { return callFunc(n.call).UnshareAll(username) }

func (n *remoteNode) Owns(username string) bool { return callFunc(n.call).Owns(username) }

func (n *remoteNode) QuorumState() (quorumState, error) {
	var st quorumState
	err := n.call(mQuorumState, nil, &st)
	return st, err
}

func (n *remoteNode) PutQuorumSettings(s quorumSettings) error {
	return n.call(mPutQuorum, s, nil)
}

func (n *remoteNode) PutToken(t *tokenRecord) error { return n.call(mPutToken, t, nil) }

func (n *remoteNode) UseToken(nonce string, at time.Time) error {
	return n.call(mUseToken, useTokenArgs{Nonce: nonce, At: at}, nil)
}

func (n *remoteNode) DeleteTokens(requester string) (int, error) {
	var count int
	err := n.call(mDeleteTokens, requester, &count)
	return count, err
}

func (n *remoteNode) Approve(req approvalRequest) (approvalResult, error) {
	var res approvalResult
	err := n.call(mApprove, req, &res)
	return res, err
}

func (n *remoteNode) RegisterQuorumKey(username string, pubPEM, file []byte) (*userRecord, error) {
	var u userRecord
	if err := n.call(mRegisterQuorum, registerArgs{Username: username, PubPEM: pubPEM, File: file}, &u); err != nil {
		return nil, err
	}
	return &u, nil
}

func (n *remoteNode) DomainInfo() (domainInfo, error) {
	var d domainInfo
	err := n.call(mDomainInfo, nil, &d)
	return d, err
}

func (n *remoteNode) CreateDomain(members map[string][]byte) error {
	return n.call(mCreateDomain, members, nil)
}

func (n *remoteNode) AddMembers(members map[string][]byte) error {
	return n.call(mAddMembers, members, nil)
}

func (n *remoteNode) ExportDomain(to string) (*authsession.WrappedDomain, error) {
	var w authsession.WrappedDomain
	if err := n.call(mExportDomain, to, &w); err != nil {
		return nil, err
	}
	return &w, nil
}

func (n *remoteNode) ImportDomain(w *authsession.WrappedDomain, members map[string][]byte) error {
	return n.call(mImportDomain, importDomainArgs{Wrapped: w, Members: members}, nil)
}

func (n *remoteNode) Handshake(a handshakeArgs) (*authsession.Reply, error) {
	var r authsession.Reply
	if err := n.call(mHandshake, a, &r); err != nil {
		return nil, err
	}
	return &r, nil
}

func (n *remoteNode) Authenticate(a authArgs) (authsession.Envelope, error) {
	var e authsession.Envelope
	err := n.call(mAuthenticate, a, &e)
	return e, err
}

func (n *remoteNode) EndSession(sid string) error { return n.call(mEndSession, sid, nil) }

func (n *remoteNode) Backup(a backupArgs) ([]byte, error) { return callFunc(n.call).Backup(a) }
func (n *remoteNode) ExportWrapped(ref Ref) (*wrappedKey, error) {
	return callFunc(n.call).ExportWrapped(ref)
}
func (n *remoteNode) ImportWrapped(w *wrappedKey, owner string) error {
	return callFunc(n.call).ImportWrapped(w, owner)
}

func (n *remoteNode) Enveloped(env authsession.Envelope) (authsession.Envelope, error) {
	var out authsession.Envelope
	err := n.call(mEnveloped, env, &out)
	return out, err
}

// downError is an HSM that cannot be reached, or that says it is down.
type downError struct {
	id  string
	why error
}

func (e *downError) Error() string {
	if e.why == nil {
		return e.id + " is down"
	}
	return fmt.Sprintf("%s is down: %v", e.id, e.why)
}

func (e *downError) Unwrap() error { return e.why }

// Error codes an HSM puts on the errors it returns, so that the client
// library can tell them apart after they crossed the wire.
const (
	codeKeyNotFound  = "key-not-found"
	codeInvalid      = "invalid"
	codePermission   = "permission"
	codeDown         = "down"
	codeUserNotFound = "user-not-found"
	codeApproval     = "approval-required"
	codeExpired      = "session-expired"
	codeRenegotiate  = "session-renegotiate"
	codeOther        = "error"
)

var codeSentinels = map[string]error{
	codeKeyNotFound:  ErrKeyNotFound,
	codeInvalid:      ErrInvalid,
	codePermission:   ErrPermission,
	codeUserNotFound: ErrUserNotFound,
	codeApproval:     quorum.ErrApprovalRequired,
	codeExpired:      ErrSessionExpired,
	codeRenegotiate:  ErrRenegotiate,
}

// codeOf classifies an HSM's error for the wire.
func codeOf(err error) string {
	for code, s := range codeSentinels {
		if errors.Is(err, s) {
			return code
		}
	}
	var de *downError
	if errors.As(err, &de) {
		return codeDown
	}
	return codeOther
}

// hsmError is an error an HSM returned over the wire: its text as the
// HSM wrote it, and errors.Is matching the sentinel its code names.
type hsmError struct {
	code, msg string
}

func (e *hsmError) Error() string { return e.msg }
func (e *hsmError) Is(target error) bool {
	if s, ok := codeSentinels[e.code]; ok {
		return target == s
	}
	return false
}

// remoteErr is an HSM's error as the client sees it: its own words (which
// name the HSM), matching the sentinel its code names.
func remoteErr(re *rpc.RemoteError) error {
	return &hsmError{code: re.Code, msg: re.Message}
}
