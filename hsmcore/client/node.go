package client

import (
	"context"
	"fmt"
	"time"

	"github.com/hsmsh/hsmsh/hsmcore/link"
	"github.com/hsmsh/hsmsh/hsmcore/protocol"
	"github.com/hsmsh/hsmsh/hsmcore/rpc"
)

// node is one HSM as the client library reaches it: through the HSM's
// door (package hsm) and nothing else, over a connection (remoteNode), an
// in-memory pipe (localNode) or an in-process call (directNode). The
// client library makes only bare calls itself; a logged-in user's calls go
// sealed in envelopes (sealedNode), and the HSM decides each.
type node interface {
	// ID is the HSM's id, as events, errors and key coverage name it.
	ID() string
	// Up says whether the HSM answers; routing skips the ones that do not.
	Up() bool
	// Info describes the HSM for cluster hsm-info.
	Info() HSMInfo
	// Close releases the connection when the client closes.
	Close() error
	// call makes one call through the HSM's door.
	call(method string, args, reply any) error
}

// Device is an HSM running in this process, as the embedded cluster
// holds it: its door (Serve, encoded as the wire carries a call; Handler,
// for a connection) and the lab's hands on the hardware. Package hsm's
// Device is one; the client library cannot name it, and needs nothing
// else of it.
type Device interface {
	ID() string
	Serve(method string, args []byte) ([]byte, error)
	Handler() rpc.Handler
	Info() HSMInfo
	Up() bool
	Close() error

	Fail(destroy bool) (lost []protocol.KeyMeta, tokenKeys []protocol.KeyMeta, err error)
	Recover() error
	Restart() []protocol.KeyMeta
	SetLatency(d time.Duration) error
	SetPartitioned(cut bool)
	TokenRefs() []Ref
	EnsureDomain() error
	SyncPass(ctx context.Context) SyncStats
}

// Rack makes and drops in-process HSMs (lab hsm add and remove) and
// holds their data folder; Close releases it once every HSM is closed.
type Rack interface {
	// Add makes HSM id: one of the cluster's first, or (spare) new
	// hardware joining it, empty.
	Add(id string, spare bool) (Device, error)
	Remove(id string) error
	Close() error
	// SetNotify has f hear what the HSMs do on their own (sync, pushes).
	SetNotify(f func(Event))
}

// directNode reaches an in-process HSM by calling its door as a function:
// no TLS, but the same calls, checks and encoding as over the network.
type directNode struct{ d Device }

func (n directNode) ID() string    { return n.d.ID() }
func (n directNode) Up() bool      { return n.d.Up() }
func (n directNode) Info() HSMInfo { return n.d.Info() }
func (n directNode) Close() error  { return n.d.Close() }
func (n directNode) call(method string, args, reply any) error {
	raw, err := protocol.EncodeArgs(method, args)
	if err != nil {
		return fmt.Errorf("encode %s: %w", method, err)
	}
	out, err := n.d.Serve(method, raw)
	if err != nil {
		return err
	}
	if err := protocol.DecodeAnswer(method, out, reply); err != nil {
		return fmt.Errorf("%w: the answer of %s to %s: %w", ErrInvalid, n.ID(), method, err)
	}
	return nil
}

// remoteNode is an HSM reached over a connection (package link): a server,
// or an in-process HSM behind the pipe transport.
type remoteNode struct{ *link.Node }

func (n remoteNode) call(method string, args, reply any) error { return n.Call(method, args, reply) }

// sealedNode is an HSM as one logged-in session reaches it: every call
// goes in an envelope under the session key.
type sealedNode struct {
	node
	e *Embedded
	s *clientSession
}

// errNoSession is a session call with no login behind it.
var errNoSession = fmt.Errorf("%w (no authenticated session)", ErrNotLoggedIn)

func (n *sealedNode) call(method string, args, reply any) error {
	if n.s == nil {
		return errNoSession
	}
	return n.e.sessionCall(n.s, n.node, method, args, reply)
}

// on returns h as c's session reaches it.
func (e *Embedded) on(c Caller, h node) *sealedNode {
	e.mu.RLock()
	s := e.auth[c.Session]
	e.mu.RUnlock()
	return &sealedNode{node: h, e: e, s: s}
}

// onAll is on for each of hs.
func (e *Embedded) onAll(c Caller, hs []node) []*sealedNode {
	out := make([]*sealedNode, len(hs))
	for i, h := range hs {
		out[i] = e.on(c, h)
	}
	return out
}

// The session calls the client library makes, typed.

func (n *sealedNode) KeyMeta(ref Ref) (*protocol.KeyMeta, error) {
	var m protocol.KeyMeta
	if err := n.call(protocol.CallKeyMeta, ref, &m); err != nil {
		return nil, err
	}
	return &m, nil
}

func (n *sealedNode) Has(ref Ref) bool {
	var ok bool
	return n.call(protocol.CallHas, ref, &ok) == nil && ok
}

func (n *sealedNode) RefTaken(ref Ref) bool {
	var ok bool
	return n.call(protocol.CallRefTaken, ref, &ok) == nil && ok
}

func (n *sealedNode) DeleteKey(ref Ref) error { return n.call(protocol.CallDeleteKey, ref, nil) }

// Snapshot asks for the keys the session may see, page by page.
func (n *sealedNode) Snapshot(flt Filter) ([]*protocol.KeyMeta, error) {
	var out []*protocol.KeyMeta
	a := protocol.SnapshotArgs{Filter: flt}
	for {
		var page protocol.SnapshotReply
		if err := n.call(protocol.CallSnapshot, a, &page); err != nil {
			return nil, err
		}
		out = append(out, fromMetas(page.Keys)...)
		if !page.More || len(page.Keys) == 0 {
			return out, nil
		}
		a.After = page.Keys[len(page.Keys)-1].Ref
	}
}

func (n *sealedNode) DestroySession(session string) int {
	var count int
	if err := n.call(protocol.CallDestroySession, session, &count); err != nil {
		return 0
	}
	return count
}

func (n *sealedNode) Sign(req SignRequest, appr *protocol.Approval) ([]byte, error) {
	var sig []byte
	if err := n.call(protocol.CallSign, protocol.SignArgs{Req: req, Approval: appr}, &sig); err != nil {
		return nil, err
	}
	return sig, nil
}

func (n *sealedNode) Verify(req SignRequest, sig []byte) error {
	return n.call(protocol.CallVerify, protocol.VerifyArgs{Req: req, Sig: sig}, nil)
}

func (n *sealedNode) PublicKeyPEM(ref Ref) ([]byte, error) {
	var p []byte
	if err := n.call(protocol.CallPublicKey, ref, &p); err != nil {
		return nil, err
	}
	return p, nil
}

// usersOf lists an HSM's users, as user list shows them (bare: CloudHSM
// lists users without a login; no hash or failure count is in a view).
func usersOf(n node) ([]protocol.UserView, error) {
	var out []protocol.UserView
	if err := n.call(protocol.CallUsers, nil, &out); err != nil {
		return nil, err
	}
	return out, nil
}

func (n *sealedNode) ExportWrapped(ref Ref) (*protocol.WrappedKey, error) {
	var w protocol.WrappedKey
	if err := n.call(protocol.CallExportWrapped, ref, &w); err != nil {
		return nil, err
	}
	return &w, nil
}

func (n *sealedNode) ImportWrapped(w *protocol.WrappedKey) error {
	return n.call(protocol.CallImportWrapped, protocol.ImportWrappedArgs{Key: w}, nil)
}

func (n *sealedNode) Backup(a protocol.BackupArgs) ([]byte, error) {
	var b []byte
	if err := n.call(protocol.CallBackup, a, &b); err != nil {
		return nil, err
	}
	return b, nil
}

// domainInfoOf asks an HSM for its public domain information (bare).
func domainInfoOf(n node) (protocol.DomainInfo, error) {
	var info protocol.DomainInfo
	err := n.call(protocol.CallDomainInfo, nil, &info)
	return info, err
}
