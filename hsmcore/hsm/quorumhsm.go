package hsm

import (
	"encoding/base64"
	"fmt"
	"slices"
	"sort"
	"time"

	"github.com/hsmsh/hsmsh/hsmcore/protocol"
	"github.com/hsmsh/hsmsh/hsmcore/quorum"
)

// The HSM side of quorum (M-of-N) approval: the HSM issues tokens, keeps
// them until they are used or expire, and verifies approvals against the
// approvers' keys registered in its own user records and the quorum values
// in its own state. The client library only carries tokens to it.

// Quorum limits, as CloudHSM has them.
const (
	maxLiveTokens    = 1024
	defaultTokenTTL  = 600 * time.Second
	maxServiceQuorum = 8
)

func defaultQuorumSettings() protocol.QuorumSettings {
	s := int64(defaultTokenTTL / time.Second)
	return protocol.QuorumSettings{GeneratedS: s, ApprovedS: s}
}

// approvalRequest asks an HSM whether an operation may go ahead.
type approvalRequest struct {
	Service   string `json:"service"`
	Requester string `json:"requester"`
	KeyRef    Ref    `json:"key_ref,omitempty"`
	Command   string `json:"command,omitempty"`
	Path      string `json:"path,omitempty"`  // the command path rule sets name
	Token     []byte `json:"token,omitempty"` // the token file, with signatures
}

// approvalResult is the HSM's answer: the token it used (none when the
// operation needed no approval), and who approved.
type approvalResult struct {
	Signers []string `json:"signers,omitempty"`
	Nonce   string   `json:"nonce,omitempty"`
}

// quorumState is what an HSM reports of its quorum state.
type quorumState struct {
	Settings protocol.QuorumSettings `json:"settings"`
	Tokens   []*protocol.Token       `json:"tokens"`
}

func (h *hsm) QuorumState() (quorumState, error) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	if !h.up {
		return quorumState{}, protocol.ErrDown(h.id)
	}
	st := quorumState{Settings: h.quorum}
	for _, t := range h.tokens {
		c := *t
		st.Tokens = append(st.Tokens, &c)
	}
	sort.Slice(st.Tokens, func(i, j int) bool { return st.Tokens[i].Expires.Before(st.Tokens[j].Expires) })
	return st, nil
}

// PutQuorumSettings stores a newer version of the quorum settings; an
// older one is ignored, so sync can offer it freely.
func (h *hsm) PutQuorumSettings(s protocol.QuorumSettings) error {
	if !h.Up() {
		return protocol.ErrDown(h.id)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if s.Updated <= h.quorum.Updated {
		return nil
	}
	if h.store != nil {
		if err := h.store.putQuorum(&s, nil, nil); err != nil {
			return fmt.Errorf("%s: write quorum settings: %w", h.id, err)
		}
	}
	h.quorum = s
	return nil
}

// PutToken stores a token the cluster issued, purging expired ones; at
// most maxLiveTokens live at once.
func (h *hsm) PutToken(t *protocol.Token) error {
	if !h.Up() {
		return protocol.ErrDown(h.id)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	now := time.Now()
	var drop []string
	for n, x := range h.tokens {
		if now.After(x.Expires) {
			drop = append(drop, n)
		}
	}
	if len(h.tokens)-len(drop) >= maxLiveTokens {
		return fmt.Errorf("%w: %s already holds %d live quorum tokens, the limit: delete some with quorum token-sign delete", ErrInvalid, h.id, maxLiveTokens)
	}
	if h.store != nil {
		if err := h.store.putQuorum(nil, []*protocol.Token{t}, drop); err != nil {
			return fmt.Errorf("%s: write quorum token: %w", h.id, err)
		}
	}
	for _, n := range drop {
		delete(h.tokens, n)
	}
	c := *t
	h.tokens[t.Nonce] = &c
	return nil
}

func (h *hsm) useLocked(nonce string, at time.Time, signers ...string) error {
	t, ok := h.tokens[nonce]
	if !ok || !t.Used.IsZero() {
		return nil
	}
	c := *t
	c.Used, c.Signers = at, signers
	if h.store != nil {
		if err := h.store.putQuorum(nil, []*protocol.Token{&c}, nil); err != nil {
			return fmt.Errorf("%s: write quorum token: %w", h.id, err)
		}
	}
	h.tokens[nonce] = &c
	return nil
}

// DeleteTokens deletes the tokens of requester, or every token if
// requester is "", and returns how many.
func (h *hsm) DeleteTokens(requester string) (int, error) {
	if !h.Up() {
		return 0, protocol.ErrDown(h.id)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	var drop []string
	for n, t := range h.tokens {
		if requester == "" || t.Requester == requester {
			drop = append(drop, n)
		}
	}
	if h.store != nil && len(drop) > 0 {
		if err := h.store.putQuorum(nil, nil, drop); err != nil {
			return 0, fmt.Errorf("%s: delete quorum tokens: %w", h.id, err)
		}
	}
	for _, n := range drop {
		delete(h.tokens, n)
	}
	return len(drop), nil
}

// liveToken finds the token a file names and checks that this cluster
// issued it, that it is unused and unexpired, and that the file carries
// the very approval data the HSM issued.
func (h *hsm) liveToken(ad quorum.ApprovalData, adB64 string, now time.Time) (*protocol.Token, error) {
	t, ok := h.tokens[ad.Nonce]
	if !ok {
		return nil, fmt.Errorf("%w: this token was not issued by this cluster, or was deleted: generate a new one with quorum token-sign generate", ErrPermission)
	}
	if base64.StdEncoding.EncodeToString(t.ApprovalData) != adB64 {
		return nil, fmt.Errorf("%w: the token's approval_data is not what the HSM issued", ErrPermission)
	}
	if !t.Used.IsZero() {
		return nil, fmt.Errorf("%w: this token was already used at %s: approvals are single use; generate a new token", ErrPermission, t.Used.UTC().Format(time.RFC3339))
	}
	if now.After(t.Expires) {
		return nil, fmt.Errorf("%w: this token expired at %s: generate a new one", ErrPermission, t.Expires.UTC().Format(time.RFC3339))
	}
	return t, nil
}

// Approve decides on the HSM whether an operation may go ahead: it works
// out what approval the operation needs from its own state (the service's
// quorum value, the key's quorum values, the configured rule sets), and
// if any is needed verifies the token — issued here, unused, unexpired,
// for this service, requester, key and command, and signed by enough
// distinct registered approvers. It spends nothing: spendApprovals does,
// by a committed entry.
func (h *hsm) Approve(req approvalRequest) (approvalResult, error) {
	h.delay()
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.up {
		return approvalResult{}, protocol.ErrDown(h.id)
	}
	var alts []quorum.Rule
	approvers := map[string]quorum.Approver{}
	addApprovers := func(role Role, only []string) {
		for _, u := range h.users {
			if u.Role != role || u.QuorumKey == "" || (only != nil && !slices.Contains(only, u.Username)) {
				continue
			}
			if pub, err := quorum.ParsePublicKey([]byte(u.QuorumKey)); err == nil {
				approvers[u.Username] = quorum.Approver{Username: u.Username, Role: string(u.Role), Key: pub}
			}
		}
	}
	switch req.Service {
	case quorum.ServiceUser, quorum.ServiceQuorum, quorum.ServiceCluster:
		if m := h.quorum.Value(req.Service); m > 1 {
			alts = append(alts, quorum.Rule{{Role: string(RoleAdmin), Min: m}})
		}
		addApprovers(RoleAdmin, nil)
	case quorum.ServiceKeyUsage, quorum.ServiceKeyManagement:
		r, ok := h.keys[req.KeyRef]
		if !ok {
			r, ok = h.sessionKeys[req.KeyRef]
		}
		if !ok {
			return approvalResult{}, &notFoundError{ref: req.KeyRef, hsm: h.id}
		}
		m := r.UseQuorum
		if req.Service == quorum.ServiceKeyManagement {
			m = r.ManageQuorum
		}
		if m > 1 {
			alts = append(alts, quorum.Rule{{Role: string(RoleCryptoUser), Min: m}})
		}
		// A key's approvers are the users associated with it.
		addApprovers(RoleCryptoUser, append([]string{r.Owner}, r.Shared...))
	default:
		return approvalResult{}, fmt.Errorf("%w: unknown quorum service %q", ErrInvalid, req.Service)
	}
	if rules := h.rules[req.Path]; len(rules) > 0 {
		alts = append(alts, rules...)
		addApprovers(RoleAdmin, nil)
		addApprovers(RoleCryptoUser, nil)
	}
	if len(alts) == 0 {
		return approvalResult{}, nil
	}
	required := describeRules(alts)
	if len(req.Token) == 0 {
		return approvalResult{}, fmt.Errorf("%w: it needs the approval of %s (quorum token-sign generate --service %s, then --approval FILE)", quorum.ErrApprovalRequired, required, req.Service)
	}
	tf, ad, err := quorum.ParseTokenFile(req.Token)
	if err != nil {
		return approvalResult{}, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	now := time.Now()
	t, err := h.liveToken(ad, tf.ApprovalData, now)
	if err != nil {
		return approvalResult{}, err
	}
	switch {
	case ad.Service != req.Service:
		return approvalResult{}, fmt.Errorf("%w: this token approves the %s service, not %s", ErrPermission, ad.Service, req.Service)
	case ad.Requester != req.Requester:
		return approvalResult{}, fmt.Errorf("%w: this token was made for %s, not %s", ErrPermission, ad.Requester, req.Requester)
	case ad.KeyRef != "" && ad.KeyRef != req.KeyRef.String():
		return approvalResult{}, fmt.Errorf("%w: this token approves key %s only", ErrPermission, ad.KeyRef)
	case ad.Command != "" && ad.Command != req.Command:
		return approvalResult{}, fmt.Errorf("%w: this token approves the command %q only, not %q", ErrPermission, ad.Command, req.Command)
	}
	signers, err := quorum.Verify(tf, ad, approvers, alts, now)
	if err != nil {
		return approvalResult{}, fmt.Errorf("%w: %w", ErrPermission, err)
	}
	// Not spent here: approveIn spends it by a committed entry, which
	// every HSM applies (and which refuses a token spent already).
	return approvalResult{Signers: signers, Nonce: t.Nonce}, nil
}

// RegisterQuorumKey checks a registration token's proof of possession —
// the token this cluster issued to username, signed with the private key
// of pubPEM — and returns the user record with the key registered, for
// the client library to store on every HSM.
func (h *hsm) RegisterQuorumKey(username string, pubPEM []byte, file []byte) (*userRecord, error) {
	return h.registerKey(username, pubPEM, file, func(u *userRecord, pemText string) { u.QuorumKey = pemText })
}

// registerKey checks a signed registration token of username against
// pubPEM and returns the user's record with set applied to a copy: the
// quorum key, or the MFA key. The token proves the user holds the
// private key; it is used up here.
func (h *hsm) registerKey(username string, pubPEM []byte, file []byte, set func(u *userRecord, pemText string)) (*userRecord, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.up {
		return nil, protocol.ErrDown(h.id)
	}
	rf, ad, sig, err := quorum.ParseRegistrationFile(file)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	now := time.Now()
	t, err := h.liveToken(ad, rf.Tokens[0].ApprovalData, now)
	if err != nil {
		return nil, err
	}
	if ad.Service != quorum.ServiceRegistration || ad.Requester != username {
		return nil, fmt.Errorf("%w: this is not a registration token of %s", ErrPermission, username)
	}
	pub, err := quorum.ParsePublicKey(pubPEM)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if err := quorum.VerifySignature(pub, quorum.Digest(t.ApprovalData), sig); err != nil {
		return nil, fmt.Errorf("%w: the signed token does not verify with this public key (sign the token's unsigned value with the matching private key): %w", ErrPermission, err)
	}
	u, ok := h.users[username]
	if !ok {
		return nil, fmt.Errorf("%w: %s", ErrUserNotFound, username)
	}
	pemText, err := quorum.EncodePublicKey(pub)
	if err != nil {
		return nil, err
	}
	// The token is spent by the committed entry storeRegistered makes
	// before the key is registered.
	c := *u
	set(&c, pemText)
	return &c, nil
}

// describeRules writes alternatives for an error or a listing.
func describeRules(alts []quorum.Rule) string {
	parts := make([]string, len(alts))
	for i, r := range alts {
		parts[i] = r.String()
	}
	if len(parts) == 1 {
		return parts[0]
	}
	out := ""
	for i, p := range parts {
		if i > 0 {
			out += ", or "
		}
		out += p
	}
	return out
}
