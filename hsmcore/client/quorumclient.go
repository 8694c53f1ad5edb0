package client

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hsmsh/hsmsh/hsmcore/protocol"
	"github.com/hsmsh/hsmsh/hsmcore/quorum"
)

// The client library's part in quorum approval: it asks an HSM to issue
// tokens, and carries each approval in the call it approves; the HSM
// verifies it there and passes the outcome (a token issued or used, a key
// registered, new quorum values) to the other HSMs itself. Nothing here
// decides.

// approvalKey carries an operation's approval in its context.
type approvalKey struct{}

type approval struct {
	token   []byte
	command string // the command line, secrets left out
	path    string // the command path, e.g. "user delete"
}

// WithApproval attaches a quorum token file (with its signatures; nil if
// none was given) to the operations run with ctx, with the command they
// carry out: its line, which a command-bound token must match, and its
// path, which configured quorum rule sets are written for.
func WithApproval(ctx context.Context, token []byte, command, path string) context.Context {
	return context.WithValue(ctx, approvalKey{}, approval{token: token, command: command, path: path})
}

func approvalOf(ctx context.Context) approval {
	a, _ := ctx.Value(approvalKey{}).(approval)
	return a
}

// approvalFrom is the approval an operation carries to the HSM, which
// decides whether it needs one and verifies and consumes it in the same
// call: there is no separate approval step a client could skip.
func approvalFrom(ctx context.Context) *protocol.Approval {
	a := approvalOf(ctx)
	if a.token == nil {
		// The command line matters only against a token bound to one: an
		// operation with no token sends nothing, and the HSM decides
		// whether it needed one.
		return nil
	}
	return &protocol.Approval{Token: a.token, Command: a.command}
}

// QuorumStrategy is one entry of user list's quorum field.
type QuorumStrategy struct {
	Strategy string `json:"strategy"`
	Status   string `json:"status"`
}

// quorumState is the newest quorum settings among the HSMs that answer,
// and the union of their tokens, as c's session may see them.
func (e *Embedded) quorumState(c Caller) (protocol.QuorumList, error) {
	var out protocol.QuorumList
	found := false
	var errs []error
	for _, h := range e.answering() {
		var st protocol.QuorumList
		if err := e.on(c, h).call(protocol.CallQuorumList, nil, &st); err != nil {
			errs = append(errs, err)
			continue
		}
		if !found || st.Settings.Updated > out.Settings.Updated {
			out.Settings = st.Settings
		}
		out.Tokens = mergeTokens(out.Tokens, st.Tokens)
		found = true
	}
	if !found {
		return out, errors.Join(append(errs, ErrNoHSM)...)
	}
	return out, nil
}

// mergeTokens unions two HSMs' tokens: a token used anywhere is used.
func mergeTokens(a, b []*protocol.Token) []*protocol.Token {
	byNonce := map[string]*protocol.Token{}
	var order []string
	for _, list := range [][]*protocol.Token{a, b} {
		for _, t := range list {
			cur, ok := byNonce[t.Nonce]
			if !ok {
				c := *t
				byNonce[t.Nonce] = &c
				order = append(order, t.Nonce)
				continue
			}
			if cur.Used.IsZero() && !t.Used.IsZero() {
				cur.Used, cur.Signers = t.Used, t.Signers
			}
		}
	}
	out := make([]*protocol.Token, 0, len(order))
	for _, n := range order {
		out = append(out, byNonce[n])
	}
	return out
}

// GenerateToken has the cluster issue a quorum token for the caller: for
// registration, a registration token file; for any other service, an
// operation token file approvers sign. keyRef names the key of a
// key-usage or key-management token; command, if not "", binds the token
// to that command line. The HSM makes it and passes it to the others.
func (e *Embedded) GenerateToken(ctx context.Context, c Caller, service string, keyRef *Ref, command string) ([]byte, error) {
	if err := e.session(c); err != nil {
		return nil, err
	}
	h, err := e.first(c)
	if err != nil {
		return nil, err
	}
	var file []byte
	if err := h.call(protocol.CallIssueToken, protocol.IssueArgs{Service: service, KeyRef: keyRef, Command: command, Cluster: e.id}, &file); err != nil {
		return nil, fmt.Errorf("issue the token: %w", err)
	}
	e.events.publish(Event{Kind: EventQuorumToken, Detail: fmt.Sprintf("%s token for %s", service, c.Username)})
	return file, nil
}

// QuorumTokens lists the live tokens: the caller's, or every token for an
// admin.
func (e *Embedded) QuorumTokens(ctx context.Context, c Caller) ([]QuorumToken, error) {
	if err := e.session(c); err != nil {
		return nil, err
	}
	st, err := e.quorumState(c)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	out := []QuorumToken{}
	for _, t := range st.Tokens {
		if now.After(t.Expires) || (c.Role != RoleAdmin && t.Requester != c.Username) {
			continue
		}
		q := QuorumToken{Nonce: t.Nonce, Service: t.Service, Requester: t.Requester, SecondsLeft: int(t.Expires.Sub(now) / time.Second),
			Used: !t.Used.IsZero(), Signers: t.Signers, Required: "none"}
		if ad, err := quorum.DecodeApprovalData(t.ApprovalData); err == nil {
			q.Command, q.KeyRef = ad.Command, ad.KeyRef
		}
		switch t.Service {
		case quorum.ServiceUser, quorum.ServiceQuorum:
			if m := st.Settings.Value(t.Service); m > 1 {
				q.Required = fmt.Sprintf("%d admin", m)
			}
		case quorum.ServiceKeyUsage, quorum.ServiceKeyManagement:
			if m := e.keyQuorum(c, q.KeyRef, t.Service); m > 1 {
				q.Required = fmt.Sprintf("%d crypto-user", m)
			}
		case quorum.ServiceRegistration:
			q.Required = "the requester's own signature"
		}
		out = append(out, q)
	}
	return out, nil
}

// DeleteTokens deletes the caller's tokens, or (all, admins only) every
// token; the HSM passes the deletion to the others.
func (e *Embedded) DeleteTokens(ctx context.Context, c Caller, all bool) (int, error) {
	if err := e.session(c); err != nil {
		return 0, err
	}
	if all {
		if err := e.requireRole(c, RoleAdmin); err != nil {
			return 0, err
		}
	}
	h, err := e.first(c)
	if err != nil {
		return 0, err
	}
	var n int
	err = h.call(protocol.CallDeleteTokens, protocol.DeleteTokensArgs{All: all}, &n)
	return n, err
}

// QuorumValues returns the service quorum values and token timeouts, the
// newest among the HSMs that answer. CloudHSM shows them without a login,
// and so does hsmsh: c may be the zero Caller.
func (e *Embedded) QuorumValues(ctx context.Context, c Caller) (values map[string]int, generated, approved time.Duration, err error) {
	var newest protocol.QuorumSettings
	found := false
	var errs []error
	for _, h := range e.answering() {
		var s protocol.QuorumSettings
		if err := h.call(protocol.CallQuorumValues, nil, &s); err != nil {
			errs = append(errs, err)
			continue
		}
		if !found || s.Updated > newest.Updated {
			newest, found = s, true
		}
	}
	if !found {
		if len(errs) == 0 {
			return nil, 0, 0, e.noHSM()
		}
		return nil, 0, 0, errors.Join(errs...)
	}
	values = map[string]int{}
	for _, s := range []string{quorum.ServiceUser, quorum.ServiceQuorum} {
		values[s] = newest.Value(s)
	}
	return values, time.Duration(newest.GeneratedS) * time.Second, time.Duration(newest.ApprovedS) * time.Second, nil
}

// SetQuorumValue sets a service's M (1 turns quorum off). It needs a
// quorum-service approval once quorum is on, and CloudHSM's rule holds:
// the user service's value may not exceed the quorum service's. The HSM
// checks all of it.
func (e *Embedded) SetQuorumValue(ctx context.Context, c Caller, service string, value int) error {
	if err := e.requireRole(c, RoleAdmin); err != nil {
		return err
	}
	if service != quorum.ServiceUser && service != quorum.ServiceQuorum {
		return fmt.Errorf("%w: --service takes user or quorum, not %q", ErrInvalid, service)
	}
	h, err := e.first(c)
	if err != nil {
		return err
	}
	return h.call(protocol.CallSetQuorum, protocol.SetQuorumArgs{Service: service, Value: value, Approval: approvalFrom(ctx)}, nil)
}

// SetQuorumTimeouts sets how long tokens wait for approval and stay usable.
func (e *Embedded) SetQuorumTimeouts(ctx context.Context, c Caller, generated, approved time.Duration) error {
	if err := e.requireRole(c, RoleAdmin); err != nil {
		return err
	}
	for _, d := range []time.Duration{generated, approved} {
		if d < time.Second || d > 24*time.Hour {
			return fmt.Errorf("%w: a token timeout is 1 s to 24 h (86400), not %v", ErrInvalid, d)
		}
	}
	h, err := e.first(c)
	if err != nil {
		return err
	}
	return h.call(protocol.CallSetQuorum, protocol.SetQuorumArgs{Generated: generated, Approved: approved, Approval: approvalFrom(ctx)}, nil)
}

// RegisterQuorumKey registers the caller's approver key: an HSM checks
// the proof of possession and passes the record to the others.
func (e *Embedded) RegisterQuorumKey(ctx context.Context, c Caller, pubPEM, signedToken []byte) error {
	if err := e.session(c); err != nil {
		return err
	}
	h, err := e.first(c)
	if err != nil {
		return err
	}
	return h.call(protocol.CallRegisterQuorum, protocol.RegisterArgs{PubPEM: pubPEM, File: signedToken}, nil)
}

// keyQuorum is a key's quorum value for a key service, 0 if unknown.
func (e *Embedded) keyQuorum(c Caller, ref, service string) int {
	r, err := ParseRef(ref)
	if err != nil {
		return 0
	}
	for _, h := range e.answering() {
		k, err := e.on(c, h).KeyMeta(r)
		if err != nil {
			continue
		}
		if service == quorum.ServiceKeyManagement {
			return k.ManageQuorum
		}
		return k.UseQuorum
	}
	return 0
}

// QuorumToken describes a live token for quorum token-sign list.
type QuorumToken struct {
	Nonce       string `json:"token-id"`
	Service     string `json:"service"`
	Requester   string `json:"requester"`
	KeyRef      string `json:"key-reference,omitempty"`
	Command     string `json:"command,omitempty"`
	SecondsLeft int    `json:"seconds-left"`
	// Required is the approval the operation needs now, e.g. "2 admin";
	// "none" while its quorum is off.
	Required string   `json:"approvals-required"`
	Used     bool     `json:"used"`
	Signers  []string `json:"approved-by,omitempty"`
}
