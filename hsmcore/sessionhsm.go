package hsmcore

import (
	"bytes"
	"encoding/json"
	"fmt"
	"time"

	"github.com/hsmsh/hsmsh/hsmcore/authsession"
)

// The HSM's side of an authenticated session (KMS seed): the handshake
// that agrees the session key SK with a client, and the password check
// that runs inside the channel SK makes. Session keys live in the HSM's
// volatile memory only; a restart forgets them.

// provisionalRole is a session's role in the EKT of the handshake, before
// the HSM has checked the user's password.
const provisionalRole = "pending"

// Session lifetimes an HSM accepts.
const (
	minSessionLifetime = time.Minute
	maxSessionLifetime = 24 * time.Hour
)

// hsmSession is a session an HSM holds in volatile memory.
type hsmSession struct {
	sk        [32]byte
	claims    authsession.Claims
	window    authsession.Window
	client    string
	clientKey []byte // the client's identity key, PKIX DER
}

type handshakeArgs struct {
	Hello     *authsession.Hello `json:"hello"`
	ClientKey []byte             `json:"client_key"` // PKIX DER
	User      string             `json:"user"`
	Lifetime  time.Duration      `json:"lifetime"`
}

type authArgs struct {
	EKT      []byte               `json:"ekt"`
	Envelope authsession.Envelope `json:"envelope"`
}

// authBody is the sealed content of an Authenticate envelope.
type authBody struct {
	Password string `json:"password"`
	Role     Role   `json:"role"`
}

// authAnswer is the sealed answer to Authenticate.
type authAnswer struct {
	OK      bool      `json:"ok"`
	EKT     []byte    `json:"ekt,omitempty"` // the session's token, with the user's role
	Session string    `json:"session,omitempty"`
	Expires time.Time `json:"expires,omitempty"`
}

// Handshake is step 2 of the seed's handshake: it checks the client's
// signature on its ECDH key against the client's identity key (the one
// registered at its first login, if any), and returns the reply with ESK
// and a provisional EKT.
func (h *hsm) Handshake(a handshakeArgs) (*authsession.Reply, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.up {
		return nil, errDown(h.id)
	}
	if h.domain == nil {
		return nil, fmt.Errorf("%w: %s belongs to no domain yet, so it cannot issue sessions", ErrInvalid, h.id)
	}
	if a.Hello == nil {
		return nil, fmt.Errorf("%w: no hello", ErrInvalid)
	}
	if reg, ok := h.clients[a.Hello.Client]; ok && !bytes.Equal(reg, a.ClientKey) {
		return nil, fmt.Errorf("%w: client %q presented an identity key other than the one it registered at its first login", ErrPermission, a.Hello.Client)
	}
	pub, err := authsession.ParsePublic(a.ClientKey)
	if err != nil {
		return nil, fmt.Errorf("%w: the client's identity key: %w", ErrInvalid, err)
	}
	if a.Lifetime < minSessionLifetime || a.Lifetime > maxSessionLifetime {
		return nil, fmt.Errorf("%w: a session lasts %v to %v, not %v", ErrInvalid, minSessionLifetime, maxSessionLifetime, a.Lifetime)
	}
	reply, sk, claims, err := authsession.Accept(a.Hello, pub, h.id, h.identity, *h.domain,
		authsession.Claims{User: a.User, Role: provisionalRole, Expires: time.Now().Add(a.Lifetime)})
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrPermission, err)
	}
	if h.sessions == nil {
		h.sessions = map[string]*hsmSession{}
	}
	h.sessions[claims.SessionID] = &hsmSession{sk: sk, claims: claims, client: a.Hello.Client, clientKey: a.ClientKey}
	return reply, nil
}

// Authenticate checks, inside the session's channel, the password of the
// user the session was opened for. On success the client's identity key is
// registered (first login) and the EKT re-issued with the user's role.
func (h *hsm) Authenticate(a authArgs) (authsession.Envelope, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.up {
		return authsession.Envelope{}, errDown(h.id)
	}
	if h.domain == nil {
		return authsession.Envelope{}, fmt.Errorf("%w: %s belongs to no domain", ErrInvalid, h.id)
	}
	sk, claims, err := authsession.OpenEKT(*h.domain, a.EKT, time.Now())
	if err != nil {
		return authsession.Envelope{}, fmt.Errorf("%w: %w", ErrPermission, err)
	}
	s, ok := h.sessions[claims.SessionID]
	if !ok || s.sk != sk {
		return authsession.Envelope{}, fmt.Errorf("%w: the login must finish on the HSM that began it (%s does not hold the session)", ErrPermission, h.id)
	}
	plain, err := authsession.Open(sk, authsession.ToHSM, a.EKT, a.Envelope)
	if err != nil {
		return authsession.Envelope{}, fmt.Errorf("%w: %w", ErrPermission, err)
	}
	if err := s.window.Accept(a.Envelope.Seq); err != nil {
		return authsession.Envelope{}, fmt.Errorf("%w: %w", ErrPermission, err)
	}
	var body authBody
	if err := json.Unmarshal(plain, &body); err != nil {
		return authsession.Envelope{}, fmt.Errorf("%w: the login envelope is not a login", ErrInvalid)
	}
	clear(plain)
	var ans authAnswer
	u := h.users[claims.User]
	if u != nil && u.Role == body.Role && !u.locked() && checkPassword(u.Hash, body.Password) {
		claims.Role = string(body.Role)
		ekt, err := authsession.IssueEKT(*h.domain, sk, claims)
		if err != nil {
			return authsession.Envelope{}, err
		}
		s.claims = claims
		if _, known := h.clients[s.client]; !known {
			if err := h.registerClientLocked(s.client, s.clientKey); err != nil {
				return authsession.Envelope{}, err
			}
		}
		ans = authAnswer{OK: true, EKT: ekt, Session: claims.SessionID, Expires: claims.Expires}
	} else {
		delete(h.sessions, claims.SessionID) // a failed login leaves nothing
	}
	b, err := json.Marshal(ans)
	if err != nil {
		return authsession.Envelope{}, err
	}
	return authsession.Seal(sk, authsession.ToClient, a.Envelope.Seq, a.EKT, b)
}

// registerClientLocked records a client install's identity key; h.mu is
// held.
func (h *hsm) registerClientLocked(client string, key []byte) error {
	if h.clients == nil {
		h.clients = map[string][]byte{}
	}
	h.clients[client] = key
	if h.store == nil {
		return nil
	}
	b, err := json.Marshal(h.clients)
	if err != nil {
		return err
	}
	return h.store.putSecret(secretClients, b)
}

// EndSession forgets a session's key (logout).
func (h *hsm) EndSession(sid string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if s, ok := h.sessions[sid]; ok {
		clear(s.sk[:])
		delete(h.sessions, sid)
	}
	return nil
}
