package hsmcore

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/hsmsh/hsmsh/hsmcore/authsession"
)

// The client's side of an authenticated session: login runs the seed's
// handshake with one HSM and checks the password inside the channel it
// makes; the session key SK and the EKT stay with the client library until
// logout.

// DefaultSessionLifetime is how long a session lasts when the
// configuration does not say.
const DefaultSessionLifetime = time.Hour

// ClientIdentity is a client install's long-term identity: an id and an
// ECDSA P-384 key, registered with the HSMs at its first login.
type ClientIdentity struct {
	ID  string
	Key *authsession.Identity
}

// clientSession is a login session as the client library holds it.
type clientSession struct {
	sid     string
	sk      [32]byte
	ekt     []byte
	expires time.Time
	opened  string          // the HSM that ran the handshake
	served  map[string]bool // HSMs that have served the session
}

// SessionInfo is what session info shows.
type SessionInfo struct {
	SessionID   string   `json:"session-id"`
	Username    string   `json:"username"`
	Role        Role     `json:"role"`
	OpenedOn    string   `json:"handshake-hsm"`
	ServedBy    []string `json:"served-by"`
	Expires     string   `json:"ekt-expires"`
	SecondsLeft int      `json:"seconds-left"`
	Curve       string   `json:"curve"`
	AEAD        string   `json:"aead"`
	KDF         string   `json:"kdf"`
	Client      string   `json:"client"`
	ClientKey   string   `json:"client-identity-key"`
}

// setClient records the client's identity and session lifetime, making an
// identity for this process when none is given.
func (e *Embedded) setClient(id ClientIdentity, lifetime time.Duration) error {
	if id.Key == nil {
		k, err := authsession.NewIdentity()
		if err != nil {
			return err
		}
		id.Key = k
	}
	if id.ID == "" {
		id.ID = "hsmsh-" + authsession.Fingerprint(id.Key.Public())[len("sha256:"):]
	}
	if lifetime <= 0 {
		lifetime = DefaultSessionLifetime
	}
	e.client, e.lifetime = id, lifetime
	return nil
}

// authenticate opens a session for user on one HSM and has the HSM check
// the password inside it. ok is false for a wrong password or role.
func (e *Embedded) authenticate(user string, role Role, password string) (s *clientSession, ok bool, err error) {
	// The first HSM that answers, without a turn of the round-robin: a
	// login should not shift where the next key operation goes.
	hs := e.answering()
	if len(hs) == 0 {
		return nil, false, ErrNoHSM
	}
	h := hs[0]
	info, err := h.DomainInfo()
	if err != nil {
		return nil, false, fmt.Errorf("login on %s: %w", h.ID(), err)
	}
	hsmPub, err := authsession.ParsePublic(info.Identity)
	if err != nil {
		return nil, false, fmt.Errorf("login on %s: its identity key: %w", h.ID(), err)
	}
	clientKey, err := authsession.MarshalPublic(e.client.Key.Public())
	if err != nil {
		return nil, false, err
	}
	hello, d1, err := authsession.NewHello(e.client.ID, e.client.Key)
	if err != nil {
		return nil, false, err
	}
	reply, err := h.Handshake(handshakeArgs{Hello: hello, ClientKey: clientKey, User: user, Lifetime: e.lifetime})
	if err != nil {
		return nil, false, fmt.Errorf("login handshake with %s: %w", h.ID(), err)
	}
	sk, err := authsession.Finish(hello, d1, reply, hsmPub)
	if err != nil {
		return nil, false, fmt.Errorf("login handshake with %s: %w", h.ID(), err)
	}
	body, err := json.Marshal(authBody{Password: password, Role: role})
	if err != nil {
		return nil, false, err
	}
	env, err := authsession.Seal(sk, authsession.ToHSM, 1, reply.EKT, body)
	clear(body)
	if err != nil {
		return nil, false, err
	}
	resp, err := h.Authenticate(authArgs{EKT: reply.EKT, Envelope: env})
	if err != nil {
		return nil, false, fmt.Errorf("login on %s: %w", h.ID(), err)
	}
	plain, err := authsession.Open(sk, authsession.ToClient, reply.EKT, resp)
	if err != nil {
		return nil, false, fmt.Errorf("login on %s: %w", h.ID(), err)
	}
	if resp.Seq != env.Seq {
		return nil, false, fmt.Errorf("login on %s: the answer is numbered %d, not %d: refusing it", h.ID(), resp.Seq, env.Seq)
	}
	var ans authAnswer
	if err := json.Unmarshal(plain, &ans); err != nil {
		return nil, false, fmt.Errorf("login on %s: %w", h.ID(), err)
	}
	if !ans.OK {
		return nil, false, nil
	}
	return &clientSession{sid: ans.Session, sk: sk, ekt: ans.EKT, expires: ans.Expires, opened: h.ID(),
		served: map[string]bool{h.ID(): true}}, true, nil
}

// endSession has every HSM that answers forget a session's key.
func (e *Embedded) endSession(sid string) {
	for _, h := range e.answering() {
		h.EndSession(sid)
	}
}

// SessionInfo describes the caller's login session.
func (e *Embedded) SessionInfo(ctx context.Context, c Caller) (SessionInfo, error) {
	if err := e.session(c); err != nil {
		return SessionInfo{}, err
	}
	e.mu.RLock()
	s := e.auth[c.Session]
	var served []string
	if s != nil {
		served = slices.Sorted(maps.Keys(s.served))
	}
	e.mu.RUnlock()
	if s == nil {
		return SessionInfo{}, fmt.Errorf("%w (no authenticated session)", ErrNotLoggedIn)
	}
	return SessionInfo{
		SessionID: s.sid, Username: c.Username, Role: c.Role, OpenedOn: s.opened, ServedBy: served,
		Expires: s.expires.UTC().Format(time.RFC3339), SecondsLeft: max(0, int(time.Until(s.expires)/time.Second)),
		Curve: authsession.Curve, AEAD: authsession.AEAD, KDF: authsession.KDF,
		Client: e.client.ID, ClientKey: authsession.Fingerprint(e.client.Key.Public()),
	}, nil
}
