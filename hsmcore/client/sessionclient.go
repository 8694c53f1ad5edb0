package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/hsmsh/hsmsh/hsmcore/authsession"
	"github.com/hsmsh/hsmsh/hsmcore/protocol"
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
	sid  string
	user string
	role Role

	mu       sync.RWMutex
	sk       [32]byte
	ekt      []byte
	expires  time.Time
	opened   string          // the HSM that ran the last handshake
	served   map[string]bool // HSMs that have served the session
	password string          // kept to renegotiate; "" once forgotten
	gen      int             // counts renegotiations
	ended    bool

	// lanes hands out the session's lanes, one command in flight on each;
	// next[l] is the last number used on lane l, touched only by the
	// lane's holder.
	lanes chan uint16
	next  [authsession.MaxLanes]uint64

	// sealer seals the session's commands under its current key and
	// token, built once for both (sealerFor).
	sealer *authsession.Sealer
}

// sealerFor returns the Sealer of the session key sk and token ekt, built
// once and kept until a renegotiation replaces them.
func (s *clientSession) sealerFor(sk [32]byte, ekt []byte) (*authsession.Sealer, error) {
	s.mu.RLock()
	x := s.sealer
	s.mu.RUnlock()
	if x != nil && bytes.Equal(x.EKT(), ekt) {
		return x, nil
	}
	x, err := authsession.NewSealer(sk, ekt)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	if bytes.Equal(s.ekt, ekt) {
		s.sealer = x
	}
	s.mu.Unlock()
	return x, nil
}

func newClientSession(sid, user string, role Role) *clientSession {
	s := &clientSession{sid: sid, user: user, role: role, served: map[string]bool{},
		lanes: make(chan uint16, authsession.MaxLanes)}
	for l := range authsession.MaxLanes {
		s.lanes <- uint16(l)
	}
	s.next[0] = 1 // the login's envelope was number 1 on lane 0
	return s
}

// keys returns what a command is sealed with.
func (s *clientSession) keys() (sk [32]byte, ekt []byte, expires time.Time, gen int, ended bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.sk, s.ekt, s.expires, s.gen, s.ended
}

// end forgets the session's key and the password (logout).
func (s *clientSession) end() {
	s.mu.Lock()
	defer s.mu.Unlock()
	clear(s.sk[:])
	s.password, s.ended, s.sealer = "", true, nil
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
func (e *Embedded) setClient(id ClientIdentity, lifetime time.Duration, keepCredentials bool) error {
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
	e.client, e.lifetime, e.keepCredentials = id, lifetime, keepCredentials
	return nil
}

// authenticate opens a session for user on one HSM and has the HSM check
// the password inside it. ok is false for a wrong password or role.
// resume, if not nil, is the EKT of a session to renegotiate: the session
// keeps its id under a new session key.
func (e *Embedded) authenticate(user string, role Role, password string, resume []byte, mfa MFASigner) (s *clientSession, ans protocol.AuthAnswer, err error) {
	hs, err := e.loginHSMs()
	if err != nil {
		return nil, ans, err
	}
	for i, h := range hs {
		s, ans, err = e.authenticateOn(h, user, role, password, resume, mfa)
		// An HSM that went down mid-login, or that does not know the user
		// yet, passes the login to the next.
		if (protocol.IsDown(err) || errors.Is(err, protocol.ErrNotInDomain) || (err == nil && ans.Unknown)) && i+1 < len(hs) {
			continue
		}
		return s, ans, err
	}
	return s, ans, err
}

// authenticateOn is authenticate with the HSM h.
func (e *Embedded) authenticateOn(h node, user string, role Role, password string, resume []byte, mfa MFASigner) (s *clientSession, ans protocol.AuthAnswer, err error) {
	info, err := domainInfoOf(h)
	if err != nil {
		return nil, ans, fmt.Errorf("login on %s: %w", h.ID(), err)
	}
	hsmPub, err := authsession.ParsePublic(info.Identity)
	if err != nil {
		return nil, ans, fmt.Errorf("login on %s: its identity key: %w", h.ID(), err)
	}
	clientKey, err := authsession.MarshalPublic(e.client.Key.Public())
	if err != nil {
		return nil, ans, err
	}
	hello, d1, err := authsession.NewHello(e.client.ID, e.client.Key)
	if err != nil {
		return nil, ans, err
	}
	var reply *authsession.Reply
	err = h.call(protocol.CallHandshake, protocol.HandshakeArgs{Hello: hello, ClientKey: clientKey, User: user, Lifetime: e.lifetime}, &reply)
	if err == nil && reply == nil {
		err = fmt.Errorf("%w: no handshake reply", ErrInvalid)
	}
	if err != nil {
		return nil, ans, fmt.Errorf("login handshake with %s: %w", h.ID(), err)
	}
	sk, err := authsession.Finish(hello, d1, reply, hsmPub)
	if err != nil {
		return nil, ans, fmt.Errorf("login handshake with %s: %w", h.ID(), err)
	}
	// send seals one login message in the new session, numbered n, and
	// opens the HSM's answer.
	send := func(n uint64, body protocol.AuthBody) (protocol.AuthAnswer, error) {
		var ans protocol.AuthAnswer
		b, err := json.Marshal(body)
		if err != nil {
			return ans, err
		}
		seq, _ := authsession.LaneSeq(0, n) // a fresh session key: numbering starts again
		env, err := authsession.Seal(sk, authsession.ToHSM, seq, reply.EKT, b)
		clear(b)
		if err != nil {
			return ans, err
		}
		var resp authsession.Envelope
		if err := h.call(protocol.CallAuthenticate, protocol.AuthArgs{EKT: reply.EKT, Envelope: env}, &resp); err != nil {
			return ans, fmt.Errorf("login on %s: %w", h.ID(), err)
		}
		plain, err := authsession.Open(sk, authsession.ToClient, reply.EKT, resp)
		if err != nil {
			return ans, fmt.Errorf("login on %s: %w", h.ID(), err)
		}
		if resp.Seq != env.Seq {
			return ans, fmt.Errorf("login on %s: the answer is numbered %d, not %d: refusing it", h.ID(), resp.Seq, env.Seq)
		}
		if err := json.Unmarshal(plain, &ans); err != nil {
			return ans, fmt.Errorf("login on %s: %w", h.ID(), err)
		}
		return ans, nil
	}
	ans, err = send(1, protocol.AuthBody{Password: password, Role: role, Resume: resume})
	if err != nil {
		return nil, ans, err
	}
	if ans.MFAToken != nil && mfa != nil {
		// The password was right; the HSM asks for its token signed with
		// the user's MFA key before it finishes the login.
		sig, err := mfa(ans.MFAToken)
		if err != nil {
			return nil, ans, fmt.Errorf("MFA: %w", err)
		}
		if ans, err = send(2, protocol.AuthBody{Password: password, Role: role, Resume: resume, MFASignature: sig}); err != nil {
			return nil, ans, err
		}
	}
	if !ans.OK {
		return nil, ans, nil
	}
	s = newClientSession(ans.Session, user, role)
	s.sk, s.ekt, s.expires, s.opened = sk, ans.EKT, ans.Expires, h.ID()
	s.served[h.ID()] = true
	return s, ans, nil
}

// renegotiate runs the handshake again for a session whose token expired
// or that an HSM cannot serve since it restarted, if the client still
// holds the password; gen is the generation the failed command used, so
// that commands failing together renegotiate once.
func (e *Embedded) renegotiate(s *clientSession, gen int, trigger string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.ended:
		return fmt.Errorf("%w (the login session has ended)", ErrNotLoggedIn)
	case s.gen != gen:
		return nil // another command already did
	case s.password == "":
		return fmt.Errorf("%w: the client holds no credentials to renegotiate with", ErrSessionExpired)
	}
	n, ans, err := e.authenticate(s.user, s.role, s.password, s.ekt, nil)
	for try := 1; protocol.IsDown(err) && try < len(e.members()); try++ {
		// The HSM went down between being picked and answering: the next
		// one that answers will do.
		n, ans, err = e.authenticate(s.user, s.role, s.password, s.ekt, nil)
	}
	switch {
	case err != nil:
		return fmt.Errorf("renegotiate session %s: %w", s.sid, err)
	case !ans.OK && ans.Unknown:
		// Only HSMs that do not know the user (new, or refilled by sync
		// later) answered: the password may be right; keep it for the
		// next try.
		return fmt.Errorf("%w: renegotiating session %s: no HSM that answers knows %s yet", ErrSessionExpired, s.sid, s.user)
	case !ans.OK:
		s.password = "" // it changed: the user must log in again
		return fmt.Errorf("%w: renegotiating session %s: %w", ErrSessionExpired, s.sid, ErrBadCredentials)
	case n.sid != s.sid:
		return fmt.Errorf("renegotiate session %s: the HSM answered for session %s", s.sid, n.sid)
	}
	clear(s.sk[:])
	s.sk, s.ekt, s.expires, s.opened = n.sk, n.ekt, n.expires, n.opened
	s.served[n.opened] = true
	s.gen++
	// The event names the HSM that could not serve the session (the one
	// that came back, or whose token check failed), and where the new
	// handshake ran.
	e.events.publish(Event{Kind: EventRenegotiated, HSM: trigger, Detail: fmt.Sprintf("session of %s renegotiated on %s", s.user, n.opened)})
	return nil
}

// maxRenegotiations bounds the renegotiations one command may cause.
const maxRenegotiations = 3

// protocol.SessionCall sends one command of session s to h, sealed, and opens the
// answer into reply. A token that expired, or an HSM that restarted, is
// met by renegotiating once and sending the command again.
func (e *Embedded) sessionCall(s *clientSession, h node, method string, args, reply any) error {
	call, err := protocol.NewSessionCall(h.ID(), method, args)
	if err != nil {
		return fmt.Errorf("encode %s: %w", method, err)
	}
	body, err := protocol.EncodeSessionCall(call)
	if err != nil {
		return fmt.Errorf("encode %s: %w", method, err)
	}
	defer clear(body)
	for attempt := 0; ; attempt++ {
		sk, ekt, expires, gen, ended := s.keys()
		if ended {
			return fmt.Errorf("%w (the login session has ended)", ErrNotLoggedIn)
		}
		var err error
		if time.Now().Before(expires) {
			err = e.sealedCall(s, h, sk, ekt, method, body, reply)
		} else {
			err = fmt.Errorf("%w (its token expired at %s)", ErrSessionExpired, expires.UTC().Format(time.RFC3339))
		}
		// A few tries: HSMs that restart one after the other each refuse
		// the session once more.
		if attempt >= maxRenegotiations || !(errors.Is(err, ErrSessionExpired) || errors.Is(err, ErrRenegotiate)) {
			return err
		}
		if rerr := e.renegotiate(s, gen, h.ID()); rerr != nil {
			return fmt.Errorf("%w; %w", err, rerr)
		}
	}
}

// sealedCall is one try of protocol.SessionCall.
func (e *Embedded) sealedCall(s *clientSession, h node, sk [32]byte, ekt []byte, method string, body []byte, reply any) error {
	lane := <-s.lanes
	s.next[lane]++
	seq, err := authsession.LaneSeq(lane, s.next[lane])
	var env, resp authsession.Envelope
	var sealer *authsession.Sealer
	if err == nil {
		sealer, err = s.sealerFor(sk, ekt)
	}
	if err == nil {
		env, err = sealer.Seal(authsession.ToHSM, seq, body)
	}
	if err == nil {
		err = h.call(protocol.CallEnveloped, env, &resp)
	}
	s.lanes <- lane
	if err != nil {
		return err
	}
	if resp.Seq != seq {
		return fmt.Errorf("%w: %s answered command %d with number %d: refusing it", ErrPermission, h.ID(), seq, resp.Seq)
	}
	plain, err := sealer.Open(authsession.ToClient, resp)
	if err != nil {
		return fmt.Errorf("the answer of %s: %w", h.ID(), err)
	}
	defer clear(plain)
	res, err := protocol.DecodeSessionResult(plain)
	if err != nil {
		return fmt.Errorf("%w: the answer of %s: %w", ErrInvalid, h.ID(), err)
	}
	s.mu.Lock()
	s.served[h.ID()] = true
	s.mu.Unlock()
	if res.Code != "" {
		return &protocol.Error{Code: res.Code, Msg: res.Error}
	}
	if err := res.DecodeAnswer(method, reply); err != nil {
		return fmt.Errorf("%w: the answer of %s to %s: %w", ErrInvalid, h.ID(), method, err)
	}
	return nil
}

// loginHSMs are the HSMs a login tries, in order: those that answer,
// without a turn of the round-robin (a login should not shift where the
// next key operation goes). An HSM that does not know the user (it was
// down when the user was made) passes the login to the next.
func (e *Embedded) loginHSMs() ([]node, error) {
	hs := e.answering()
	if len(hs) == 0 {
		return nil, e.noHSM()
	}
	return hs, nil
}

// endSession has every HSM that answers forget a session's key.
func (e *Embedded) endSession(c Caller) {
	for _, h := range e.answering() {
		e.on(c, h).call(protocol.CallEndSession, c.Session, nil)
	}
}

// SessionInfo describes the caller's login session.
func (e *Embedded) SessionInfo(ctx context.Context, c Caller) (SessionInfo, error) {
	if err := e.session(c); err != nil {
		return SessionInfo{}, err
	}
	e.mu.RLock()
	s := e.auth[c.Session]
	e.mu.RUnlock()
	if s == nil {
		return SessionInfo{}, fmt.Errorf("%w (no authenticated session)", ErrNotLoggedIn)
	}
	s.mu.RLock()
	served, opened, expires := slices.Sorted(maps.Keys(s.served)), s.opened, s.expires
	s.mu.RUnlock()
	return SessionInfo{
		SessionID: s.sid, Username: c.Username, Role: c.Role, OpenedOn: opened, ServedBy: served,
		Expires: expires.UTC().Format(time.RFC3339), SecondsLeft: max(0, int(time.Until(expires)/time.Second)),
		Curve: authsession.Curve, AEAD: authsession.AEAD, KDF: authsession.KDF,
		Client: e.client.ID, ClientKey: authsession.Fingerprint(e.client.Key.Public()),
	}, nil
}
