package hsmcore

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/hsmsh/hsmsh/hsmcore/quorum"
)

// The client library's part in quorum approval: it asks an HSM to issue
// tokens and to decide on approvals, and spreads the outcome (a token
// issued, a token used, a key registered, new quorum values) to the
// cluster's other HSMs, so that a token used on one cannot be replayed on
// another.

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

// ruledCommands is the set of command paths that rule sets gate.
func ruledCommands(rules map[string][]quorum.Rule) map[string]bool {
	m := map[string]bool{}
	for path := range rules {
		m[path] = true
	}
	return m
}

// needsApproval says whether an operation must go to an HSM for approval:
// its quorum value is on, or a rule set names its command.
func (e *Embedded) needsApproval(ctx context.Context, value int) bool {
	return value > 1 || e.ruled[approvalOf(ctx).path]
}

func approvalOf(ctx context.Context) approval {
	a, _ := ctx.Value(approvalKey{}).(approval)
	return a
}

// QuorumStrategy is one entry of user list's quorum field.
type QuorumStrategy struct {
	Strategy string `json:"strategy"`
	Status   string `json:"status"`
}

// approve asks the first HSM that answers whether the operation may go
// ahead; the HSM decides and verifies. A token it used is then marked
// used on every other HSM that answers.
func (e *Embedded) approve(ctx context.Context, c Caller, service string, ref Ref) error {
	hs := e.answering()
	if len(hs) == 0 {
		return ErrNoHSM
	}
	a := approvalOf(ctx)
	res, err := hs[0].Approve(approvalRequest{Service: service, Requester: c.Username, KeyRef: ref, Command: a.command, Path: a.path, Token: a.token})
	if err != nil {
		return err
	}
	if res.Nonce != "" {
		e.useToken(hs[1:], res.Nonce)
		e.events.publish(Event{Kind: EventQuorumApproved, HSM: hs[0].ID(), Detail: fmt.Sprintf("%s approved by %v", service, res.Signers)})
	}
	return nil
}

// useToken marks a token used on hs, in parallel.
func (e *Embedded) useToken(hs []node, nonce string) {
	now := time.Now()
	var wg sync.WaitGroup
	for _, h := range hs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			h.UseToken(nonce, now)
		}()
	}
	wg.Wait()
}

// quorumState is the newest quorum settings among the HSMs that answer,
// and the union of their tokens.
func (e *Embedded) quorumState() (quorumState, error) {
	var out quorumState
	found := false
	var errs []error
	for _, h := range e.answering() {
		st, err := h.QuorumState()
		if err != nil {
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
func mergeTokens(a, b []*tokenRecord) []*tokenRecord {
	by := map[string]*tokenRecord{}
	var order []string
	for _, t := range append(append([]*tokenRecord{}, a...), b...) {
		cur, ok := by[t.Nonce]
		if !ok {
			by[t.Nonce] = t
			order = append(order, t.Nonce)
			continue
		}
		if cur.Used.IsZero() && !t.Used.IsZero() {
			by[t.Nonce] = t
		}
	}
	out := make([]*tokenRecord, 0, len(order))
	for _, n := range order {
		out = append(out, by[n])
	}
	return out
}

// GenerateToken has the cluster issue a quorum token for the caller: for
// registration, a registration token file; for any other service, an
// operation token file approvers sign. keyRef names the key of a
// key-usage or key-management token; command, if not "", binds the token
// to that command line.
func (e *Embedded) GenerateToken(ctx context.Context, c Caller, service string, keyRef *Ref, command string) ([]byte, error) {
	if err := e.session(c); err != nil {
		return nil, err
	}
	st, err := e.quorumState()
	if err != nil {
		return nil, err
	}
	ref := ""
	switch service {
	case quorum.ServiceKeyUsage, quorum.ServiceKeyManagement:
		if keyRef == nil {
			return nil, fmt.Errorf("%w: a %s token is for one key: give --key-reference", ErrInvalid, service)
		}
		ref = keyRef.String()
	}
	ad, err := quorum.NewApprovalData(service, c.Username, string(c.Role), e.id, ref, command, time.Now(), st.Settings.ttl())
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	data := ad.Encode()
	t := &tokenRecord{Nonce: ad.Nonce, ApprovalData: data, Service: service, Requester: c.Username, Expires: ad.Expires}
	if err := e.toEach(func(h node) error { return h.PutToken(t) }); err != nil {
		return nil, fmt.Errorf("issue the token: %w", err)
	}
	e.events.publish(Event{Kind: EventQuorumToken, Detail: fmt.Sprintf("%s token for %s", service, c.Username)})
	if service == quorum.ServiceRegistration {
		return quorum.NewRegistrationFile(ad).Marshal(), nil
	}
	return quorum.NewTokenFile(ad).Marshal(), nil
}

// QuorumTokens lists the live tokens: the caller's, or every token for an
// admin.
func (e *Embedded) QuorumTokens(ctx context.Context, c Caller) ([]QuorumToken, error) {
	if err := e.session(c); err != nil {
		return nil, err
	}
	st, err := e.quorumState()
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
			if m := st.Settings.value(t.Service); m > 1 {
				q.Required = fmt.Sprintf("%d admin", m)
			}
		case quorum.ServiceKeyUsage, quorum.ServiceKeyManagement:
			if m := e.keyQuorum(q.KeyRef, t.Service); m > 1 {
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
// token, on every HSM that answers.
func (e *Embedded) DeleteTokens(ctx context.Context, c Caller, all bool) (int, error) {
	if err := e.session(c); err != nil {
		return 0, err
	}
	who := c.Username
	if all {
		if err := e.requireRole(c, RoleAdmin); err != nil {
			return 0, err
		}
		who = ""
	}
	most := 0
	for _, h := range e.answering() {
		n, err := h.DeleteTokens(who)
		if err != nil {
			return most, err
		}
		most = max(most, n)
	}
	return most, nil
}

// QuorumValues returns the service quorum values and token timeouts.
func (e *Embedded) QuorumValues(ctx context.Context, c Caller) (values map[string]int, generated, approved time.Duration, err error) {
	if err := e.session(c); err != nil {
		return nil, 0, 0, err
	}
	st, err := e.quorumState()
	if err != nil {
		return nil, 0, 0, err
	}
	values = map[string]int{}
	for _, s := range []string{quorum.ServiceUser, quorum.ServiceQuorum} {
		values[s] = st.Settings.value(s)
	}
	return values, time.Duration(st.Settings.GeneratedS) * time.Second, time.Duration(st.Settings.ApprovedS) * time.Second, nil
}

// SetQuorumValue sets a service's M (1 turns quorum off). It needs a
// quorum-service approval once quorum is on, and CloudHSM's rule holds:
// the user service's value may not exceed the quorum service's.
func (e *Embedded) SetQuorumValue(ctx context.Context, c Caller, service string, value int) error {
	if err := e.requireRole(c, RoleAdmin); err != nil {
		return err
	}
	if service != quorum.ServiceUser && service != quorum.ServiceQuorum {
		return fmt.Errorf("%w: --service takes user or quorum, not %q", ErrInvalid, service)
	}
	if value < 1 || value > maxServiceQuorum {
		return fmt.Errorf("%w: a quorum value is 1 (off) to %d, not %d", ErrInvalid, maxServiceQuorum, value)
	}
	st, err := e.quorumState()
	if err != nil {
		return err
	}
	s := st.Settings
	if service == quorum.ServiceUser && value > s.value(quorum.ServiceQuorum) {
		return fmt.Errorf("%w: the user service's quorum value (%d) may not exceed the quorum service's (%d): raise quorum first", ErrInvalid, value, s.value(quorum.ServiceQuorum))
	}
	if service == quorum.ServiceQuorum && value < s.value(quorum.ServiceUser) {
		return fmt.Errorf("%w: the quorum service's value (%d) may not go below the user service's (%d): lower user first", ErrInvalid, value, s.value(quorum.ServiceUser))
	}
	admins := 0
	if users, _, err := e.userVersions(); err == nil {
		for _, u := range users {
			if u.Role == RoleAdmin && u.QuorumKey != "" {
				admins++
			}
		}
	}
	if value > 1 && value > admins {
		return fmt.Errorf("%w: only %d admins have registered a quorum key, fewer than %d: register more first (user change-quorum token-sign register)", ErrInvalid, admins, value)
	}
	if err := e.approve(ctx, c, quorum.ServiceQuorum, 0); err != nil {
		return err
	}
	vals := map[string]int{}
	for k, v := range s.Values {
		vals[k] = v
	}
	vals[service] = value
	s.Values = vals
	return e.putQuorumAll(s)
}

// SetQuorumTimeouts sets how long tokens wait for approval and stay usable.
func (e *Embedded) SetQuorumTimeouts(ctx context.Context, c Caller, generated, approved time.Duration) error {
	if err := e.requireRole(c, RoleAdmin); err != nil {
		return err
	}
	for _, d := range []time.Duration{generated, approved} {
		// Down to a second, so a class can watch a token expire.
		if d < time.Second || d > 24*time.Hour {
			return fmt.Errorf("%w: a token timeout is 1 s to 24 h (86400), not %v", ErrInvalid, d)
		}
	}
	if err := e.approve(ctx, c, quorum.ServiceQuorum, 0); err != nil {
		return err
	}
	st, err := e.quorumState()
	if err != nil {
		return err
	}
	s := st.Settings
	s.GeneratedS, s.ApprovedS = int64(generated/time.Second), int64(approved/time.Second)
	return e.putQuorumAll(s)
}

func (e *Embedded) putQuorumAll(s quorumSettings) error {
	s.Updated = max(time.Now().UnixNano(), s.Updated+1)
	return e.toEach(func(h node) error { return h.PutQuorumSettings(s) })
}

// toEach writes to every HSM that answers, and succeeds if at least one
// took it: sync brings the others what they missed.
func (e *Embedded) toEach(write func(h node) error) error {
	var errs []error
	hs := e.answering()
	for _, h := range hs {
		if err := write(h); err != nil {
			errs = append(errs, err)
		}
	}
	if len(hs) == 0 || len(errs) == len(hs) {
		return errors.Join(append(errs, ErrNoHSM)...)
	}
	return nil
}

// RegisterQuorumKey registers the caller's approver key: an HSM checks
// the proof of possession, and the user record it returns is stored on
// every HSM that answers.
func (e *Embedded) RegisterQuorumKey(ctx context.Context, c Caller, pubPEM, signedToken []byte) error {
	if err := e.session(c); err != nil {
		return err
	}
	hs := e.answering()
	if len(hs) == 0 {
		return ErrNoHSM
	}
	u, err := hs[0].RegisterQuorumKey(c.Username, pubPEM, signedToken)
	if err != nil {
		return err
	}
	if err := e.putUserAll(u); err != nil {
		return err
	}
	if _, ad, _, err := quorum.ParseRegistrationFile(signedToken); err == nil {
		e.useToken(hs[1:], ad.Nonce)
	}
	return nil
}

// keyQuorum is a key's quorum value for a key service, 0 if unknown.
func (e *Embedded) keyQuorum(ref, service string) int {
	r, err := ParseRef(ref)
	if err != nil {
		return 0
	}
	for _, h := range e.answering() {
		k, err := h.KeyMeta(r)
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
