package hsmcore

import (
	"encoding/json"
	"fmt"
)

// node is one HSM as the client library reaches it: through the HSM's
// door (handler.go) and nothing else, over a connection (remoteNode), an
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

// directNode reaches an in-process HSM by calling its door as a function:
// no TLS, but the same calls, checks and encoding as over the network.
type directNode struct{ h *hsm }

func (n directNode) ID() string    { return n.h.id }
func (n directNode) Up() bool      { return n.h.Up() }
func (n directNode) Info() HSMInfo { return n.h.Info() }
func (n directNode) Close() error  { return n.h.Close() }
func (n directNode) call(method string, args, reply any) error {
	return callDirect(n.h, method, args, reply)
}

// directLink is one in-process HSM's way to another's door: the peer calls
// of the embedded cluster.
type directLink struct{ to *hsm }

func (l directLink) ID() string { return l.to.id }
func (l directLink) call(method string, args, reply any) error {
	return callDirect(l.to, method, args, reply)
}

// callDirect encodes a call as the wire would, serves it, and decodes the
// answer, so that an in-process caller sees exactly what a remote one
// does: errors included, by their codes.
func callDirect(h *hsm, method string, args, reply any) error {
	raw, err := json.Marshal(args)
	if err != nil {
		return fmt.Errorf("encode %s: %w", method, err)
	}
	out, err := h.serve(method, raw)
	if err != nil {
		return &hsmError{code: codeOf(err), msg: err.Error()}
	}
	if reply == nil {
		return nil
	}
	b, err := json.Marshal(out)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, reply)
}

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

func (n *sealedNode) KeyMeta(ref Ref) (*keyRecord, error) {
	var m keyMeta
	if err := n.call(mKeyMeta, ref, &m); err != nil {
		return nil, err
	}
	return m.record(), nil
}

func (n *sealedNode) Has(ref Ref) bool {
	var ok bool
	return n.call(mHas, ref, &ok) == nil && ok
}

func (n *sealedNode) RefTaken(ref Ref) bool {
	var ok bool
	return n.call(mRefTaken, ref, &ok) == nil && ok
}

func (n *sealedNode) DeleteKey(ref Ref) error { return n.call(mDeleteKey, ref, nil) }

// Snapshot asks for the keys the session may see, page by page.
func (n *sealedNode) Snapshot(flt Filter) ([]*keyRecord, error) {
	var out []*keyRecord
	a := snapshotArgs{Filter: flt}
	for {
		var page snapshotReply
		if err := n.call(mSnapshot, a, &page); err != nil {
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
	if err := n.call(mDestroySession, session, &count); err != nil {
		return 0
	}
	return count
}

func (n *sealedNode) Sign(req SignRequest, appr *approvalArgs) ([]byte, error) {
	var sig []byte
	if err := n.call(mSign, signArgs{Req: req, Approval: appr}, &sig); err != nil {
		return nil, err
	}
	return sig, nil
}

func (n *sealedNode) Verify(req SignRequest, sig []byte) error {
	return n.call(mVerify, verifyArgs{Req: req, Sig: sig}, nil)
}

func (n *sealedNode) PublicKeyPEM(ref Ref) ([]byte, error) {
	var p []byte
	if err := n.call(mPublicKey, ref, &p); err != nil {
		return nil, err
	}
	return p, nil
}

// usersOf lists an HSM's users, as user list shows them (bare: CloudHSM
// lists users without a login; no hash or failure count is in a view).
func usersOf(n node) ([]userView, error) {
	var out []userView
	if err := n.call(mUsers, nil, &out); err != nil {
		return nil, err
	}
	return out, nil
}

func (n *sealedNode) ExportWrapped(ref Ref) (*wrappedKey, error) {
	var w wrappedKey
	if err := n.call(mExportWrapped, ref, &w); err != nil {
		return nil, err
	}
	return &w, nil
}

func (n *sealedNode) ImportWrapped(w *wrappedKey) error {
	return n.call(mImportWrapped, importWrappedArgs{Key: w}, nil)
}

func (n *sealedNode) Backup(a backupArgs) ([]byte, error) {
	var b []byte
	if err := n.call(mBackup, a, &b); err != nil {
		return nil, err
	}
	return b, nil
}

// domainInfoOf asks an HSM for its public domain information (bare).
func domainInfoOf(n node) (domainInfo, error) {
	var info domainInfo
	err := n.call(mDomainInfo, nil, &info)
	return info, err
}
