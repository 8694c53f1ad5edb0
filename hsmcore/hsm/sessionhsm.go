package hsm

import (
	"bytes"
	"crypto/rand"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/hsmsh/hsmsh/hsmcore/authsession"
	"github.com/hsmsh/hsmsh/hsmcore/protocol"
	"github.com/hsmsh/hsmsh/hsmcore/quorum"
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
	ekt       []byte                                   // the token last seen, to skip re-opening it
	window    authsession.Window                       // the login envelope
	lanes     [authsession.MaxLanes]authsession.Window // commands, one window per lane
	client    string                                   // "" for a session adopted from its EKT alone
	clientKey []byte                                   // the client's identity key, PKIX DER
	// pending is when a handshake whose login has not finished is
	// forgotten; zero once the password was checked.
	pending time.Time
	// mfaToken is the token-sign MFA token this login must sign before
	// it finishes; nil when none is asked for.
	mfaToken []byte
	// sealer opens and seals the session's envelopes under its key and
	// current token, built once (sealerFor).
	sealer atomic.Pointer[authsession.Sealer]
}

// sealerFor returns the session's Sealer for the token ekt, building it
// the first time (or after the token was re-issued).
func (s *hsmSession) sealerFor(sk [32]byte, ekt []byte) (*authsession.Sealer, error) {
	if x := s.sealer.Load(); x != nil && bytes.Equal(x.EKT(), ekt) {
		return x, nil
	}
	x, err := authsession.NewSealer(sk, ekt)
	if err != nil {
		return nil, err
	}
	s.sealer.Store(x)
	return x, nil
}

// Bounds on handshakes whose login has not finished: they cost the HSM
// memory before anyone proved who they are, so each is short-lived and
// few are held per client identity and in all. Sessions that logged in
// have their own bound (maxSessions) and are never pushed out by these.
const (
	pendingLifetime  = time.Minute
	maxPendingClient = 16
	maxPending       = 1024
)

// maxSessions bounds the sessions an HSM holds in memory. A session is
// never evicted early (its replay windows would go with it); past the
// bound new ones are refused until old ones expire.
const maxSessions = 10000

// maxPhantoms bounds the failed-login counts kept for names no user has.
const maxPhantoms = 4096

// Handshake is step 2 of the seed's handshake: it checks the client's
// signature on its ECDH key against the client's identity key (the one
// registered at its first login, if any), and returns the reply with ESK
// and a provisional EKT.
func (h *hsm) Handshake(a protocol.HandshakeArgs) (*authsession.Reply, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.up {
		return nil, protocol.ErrDown(h.id)
	}
	if h.domain == nil {
		return nil, h.notInDomain()
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
	now := time.Now()
	h.sweepSessionsLocked(now)
	pending, mine := 0, 0
	for _, s := range h.sessions {
		if !s.pending.IsZero() {
			pending++
			if s.client == a.Hello.Client {
				mine++
			}
		}
	}
	if mine >= maxPendingClient {
		return nil, fmt.Errorf("%w: client %q has %d logins in progress on %s, the limit: finish or wait a minute", ErrPermission, a.Hello.Client, mine, h.id)
	}
	if pending >= maxPending {
		// Full: the oldest login in progress goes. Refusing new ones
		// instead would let anyone who can reach the HSM lock every user
		// out by opening logins it never finishes; a real login finishes
		// in milliseconds, long before a flood reaches it.
		var oldest string
		var at time.Time
		for id, s := range h.sessions {
			if !s.pending.IsZero() && (oldest == "" || s.pending.Before(at)) {
				oldest, at = id, s.pending
			}
		}
		delete(h.sessions, oldest)
	}
	reply, sk, claims, err := authsession.Accept(a.Hello, pub, h.id, h.identity, *h.domain,
		authsession.Claims{User: a.User, Role: provisionalRole, Expires: time.Now().Add(a.Lifetime)})
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrPermission, err)
	}
	if h.sessions == nil {
		h.sessions = map[string]*hsmSession{}
	}
	h.sessions[claims.SessionID] = &hsmSession{sk: sk, claims: claims, client: a.Hello.Client, clientKey: a.ClientKey, pending: now.Add(pendingLifetime)}
	return reply, nil
}

// Authenticate checks, inside the session's channel, the password of the
// user the session was opened for. On success the client's identity key is
// registered (first login) and the EKT re-issued with the user's role.
func (h *hsm) Authenticate(a protocol.AuthArgs) (authsession.Envelope, error) {
	// Decide on what the domain has committed, not on a stale copy.
	h.catchUp()
	sk, claims, body, hash, err := h.openLogin(a)
	if err != nil {
		return authsession.Envelope{}, err
	}
	defer clear(sk[:])
	// The password check (argon2id, tens of milliseconds) runs without the
	// HSM's lock: holding it would stall every other command on the HSM,
	// and a wave of logins after a restart would stall it for seconds.
	passOK := hash != "" && checkPassword(hash, body.Password)
	body.Password = ""

	h.mu.Lock()
	if !h.up {
		h.mu.Unlock()
		return authsession.Envelope{}, protocol.ErrDown(h.id)
	}
	s, ok := h.sessions[claims.SessionID]
	if !ok || !sameKey(s.sk, sk) {
		h.mu.Unlock()
		return authsession.Envelope{}, fmt.Errorf("%w: session %s ended during the login", ErrPermission, claims.SessionID)
	}
	var before *userRecord
	if u := h.users[claims.User]; u != nil {
		c := *u
		before = &c
	}
	if before != nil && before.Hash != hash {
		// The password changed while it was being checked: this attempt
		// proves nothing either way, and is not counted.
		delete(h.sessions, claims.SessionID)
		h.mu.Unlock()
		return authsession.Envelope{}, fmt.Errorf("%w: the user's password changed during the login: log in again", ErrPermission)
	}
	good := before != nil && !before.locked() && passOK && before.Role == body.Role
	if good && before.MFAKey != "" {
		// Token-sign MFA: the right password buys a token to sign with
		// the user's MFA key; the login finishes, in the same session,
		// only with that signature. A wrong signature counts as a wrong
		// password.
		if s.mfaToken == nil || body.MFASignature == nil {
			tok := make([]byte, 32)
			if _, err := rand.Read(tok); err != nil {
				h.mu.Unlock()
				return authsession.Envelope{}, err
			}
			s.mfaToken = tok
			h.mu.Unlock()
			b, err := json.Marshal(protocol.AuthAnswer{MFAToken: tok})
			if err != nil {
				return authsession.Envelope{}, err
			}
			return authsession.Seal(sk, authsession.ToClient, a.Envelope.Seq, a.EKT, b)
		}
		good = verifyMFA(before.MFAKey, s.mfaToken, body.MFASignature) == nil
		s.mfaToken = nil
	}
	h.mu.Unlock()

	// The attempt is recorded before it is answered (outside the lock:
	// committing waits for the other HSMs). A wrong password counts only
	// once a majority of the domain's HSMs has recorded it, so guesses
	// spread over HSMs, or over a partition, add up exactly. A name no
	// user has goes the same way (recorded, counted nowhere), so the
	// answers do not tell which names exist.
	lockedFirst, err := h.recordAttempt(claims.User, good, before)
	if err != nil {
		h.mu.Lock()
		delete(h.sessions, claims.SessionID)
		h.mu.Unlock()
		return authsession.Envelope{}, err
	}

	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.up {
		return authsession.Envelope{}, protocol.ErrDown(h.id)
	}
	if cur, ok := h.sessions[claims.SessionID]; !ok || cur != s {
		return authsession.Envelope{}, fmt.Errorf("%w: session %s ended during the login", ErrPermission, claims.SessionID)
	}
	var ans protocol.AuthAnswer
	if before != nil {
		now := h.users[claims.User]
		if now == nil {
			good = false // deleted during the login
			now = before
		}
		ans.Left, ans.Locked, ans.WasLocked = max(0, MaxFailedLogins-now.failures()), now.locked(), before.locked() || lockedFirst
	} else {
		// A name no user has gets the same answer a user's wrong password
		// would, counted the same way (in volatile memory).
		prev := h.phantoms[claims.User]
		if prev < MaxFailedLogins {
			if len(h.phantoms) >= maxPhantoms {
				clear(h.phantoms)
			}
			if h.phantoms == nil {
				h.phantoms = map[string]int{}
			}
			h.phantoms[claims.User] = prev + 1
		}
		n := h.phantoms[claims.User]
		ans.Left, ans.Locked, ans.WasLocked = max(0, MaxFailedLogins-n), n >= MaxFailedLogins, prev >= MaxFailedLogins
		ans.Unknown = true
	}
	if good {
		claims.Role = string(body.Role)
		if body.Resume != nil {
			// The old token may have expired: that is why the client is
			// here. What matters is that this domain issued it, to this
			// user; the password was just checked.
			// The zero time is before every expiry: OpenEKT checks the
			// domain and the contents, not the clock.
			_, old, err := authsession.OpenEKT(*h.domain, body.Resume, time.Time{})
			if err == nil {
				if _, gone := h.ended[old.SessionID]; gone {
					err = fmt.Errorf("session %s was logged out", old.SessionID)
				}
			}
			if err != nil {
				return authsession.Envelope{}, fmt.Errorf("%w: the session to resume: %w", ErrPermission, err)
			}
			if old.User != claims.User {
				return authsession.Envelope{}, fmt.Errorf("%w: session %s belongs to %s, not %s", ErrPermission, old.SessionID, old.User, claims.User)
			}
			delete(h.sessions, claims.SessionID)
			claims.SessionID = old.SessionID
			delete(h.ended, old.SessionID)
			if prev, ok := h.sessions[old.SessionID]; ok { // superseded
				delete(h.byEKT, string(prev.ekt))
				clear(prev.sk[:])
			}
			h.sessions[claims.SessionID] = s
		}
		s.pending = time.Time{}
		ekt, err := authsession.IssueEKT(*h.domain, sk, claims)
		if err != nil {
			return authsession.Envelope{}, err
		}
		delete(h.byEKT, string(s.ekt))
		s.claims, s.ekt = claims, ekt
		h.indexSessionLocked(s)
		if _, known := h.clients[s.client]; !known {
			if err := h.registerClientLocked(s.client, s.clientKey); err != nil {
				return authsession.Envelope{}, err
			}
		}
		ans = protocol.AuthAnswer{OK: true, EKT: ekt, Session: claims.SessionID, Expires: claims.Expires}
	} else {
		delete(h.sessions, claims.SessionID) // a failed login leaves nothing
	}
	b, err := json.Marshal(ans)
	if err != nil {
		return authsession.Envelope{}, err
	}
	return authsession.Seal(sk, authsession.ToClient, a.Envelope.Seq, a.EKT, b)
}

// recordAttempt records a login attempt in the domain state before it is
// answered: a wrong password (or a name no user has) as a committed
// entry; a right one clears the user's count, if a majority can record
// that (a right password logs in on any HSM that is up, even alone).
//
// An attempt that cannot be recorded is refused unanswered. So that an
// HSM cut off from the majority is no oracle either (the right password
// would log in there, a wrong one be refused), it then refuses every
// further attempt for that name until it has recorded the earlier one:
// at most one unrecorded guess per cut-off HSM, and that one counts as
// soon as the majority is back.
//
// lockedFirst says the log found the user locked already when it came to
// this wrong password: it was not counted, and the answer says so, even
// where this HSM's copy had not heard of the lock yet.
func (h *hsm) recordAttempt(user string, good bool, before *userRecord) (lockedFirst bool, err error) {
	h.mu.Lock()
	pending := h.unrecorded[user]
	h.mu.Unlock()
	for ; pending > 0; pending-- {
		if err := h.commit("record this attempt", opLoginFailed, loginArgs{User: user, HSM: h.id, At: time.Now().UnixNano()}); err != nil {
			return false, fmt.Errorf("%w (an earlier wrong password for %s on %s is not recorded yet: no attempt is answered there until it is)", err, user, h.id)
		}
		h.mu.Lock()
		if h.unrecorded[user] > 0 {
			h.unrecorded[user]--
		}
		if h.unrecorded[user] == 0 {
			delete(h.unrecorded, user)
		}
		h.mu.Unlock()
	}
	at := time.Now().UnixNano()
	switch {
	case good && before.failures() > 0:
		// Best effort: without a majority the count stays, and the user
		// still logs in.
		h.commit("clear the failed-login count", opResetFails, loginArgs{User: user, HSM: h.id, At: at})
	case !good && (before == nil || !before.locked()):
		res, err := h.commitResult("record this attempt", opLoginFailed, loginArgs{User: user, HSM: h.id, At: at})
		if err != nil {
			if errors.Is(err, ErrNoMajority) {
				h.mu.Lock()
				if len(h.unrecorded) < maxPhantoms {
					if h.unrecorded == nil {
						h.unrecorded = map[string]int{}
					}
					h.unrecorded[user]++
				}
				h.mu.Unlock()
			}
			return false, err
		}
		return res.Note == noteLocked, nil
	}
	return false, nil
}

// openLogin is the first half of Authenticate, under the HSM's lock: the
// session must be the one this HSM began, the envelope must open and be
// new. It returns the user's password hash ("" for no such user) for the
// check that runs outside the lock.
func (h *hsm) openLogin(a protocol.AuthArgs) (sk [32]byte, claims authsession.Claims, body protocol.AuthBody, hash string, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	fail := func(err error) ([32]byte, authsession.Claims, protocol.AuthBody, string, error) {
		return [32]byte{}, authsession.Claims{}, protocol.AuthBody{}, "", err
	}
	if !h.up {
		return fail(protocol.ErrDown(h.id))
	}
	if h.domain == nil {
		return fail(h.notInDomain())
	}
	sk, claims, err = authsession.OpenEKT(*h.domain, a.EKT, time.Now())
	if err != nil {
		return fail(fmt.Errorf("%w: %w", ErrPermission, err))
	}
	s, ok := h.sessions[claims.SessionID]
	if !ok || !sameKey(s.sk, sk) {
		return fail(fmt.Errorf("%w: the login must finish on the HSM that began it (%s does not hold the session)", ErrPermission, h.id))
	}
	plain, err := authsession.Open(sk, authsession.ToHSM, a.EKT, a.Envelope)
	if err != nil {
		return fail(fmt.Errorf("%w: %w", ErrPermission, err))
	}
	defer clear(plain)
	if err := s.window.Accept(a.Envelope.Seq); err != nil {
		return fail(fmt.Errorf("%w: %w", ErrPermission, err))
	}
	if err := json.Unmarshal(plain, &body); err != nil {
		return fail(fmt.Errorf("%w: the login envelope is not a login", ErrInvalid))
	}
	if a := h.users[protocol.BuiltinAdmin]; a != nil && a.Role == RoleUnactivatedAdmin {
		return fail(ErrNotActivated)
	}
	if u := h.users[claims.User]; u != nil {
		hash = u.Hash
	}
	return sk, claims, body, hash, nil
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

// EndSession forgets a session's key (logout), and remembers until the
// session would have expired that it ended, so that its token cannot bring
// it back.
func (h *hsm) EndSession(sid string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.ended == nil {
		h.ended = map[string]time.Time{}
	}
	if s, ok := h.sessions[sid]; ok {
		h.ended[sid] = s.claims.Expires
		clear(s.sk[:])
		s.sealer.Store(nil) // its AES key schedule goes with the key
		delete(h.sessions, sid)
		delete(h.byEKT, string(s.ekt))
	} else if len(h.ended) < maxSessions {
		// Not served here yet: no session outlives the longest lifetime.
		h.ended[sid] = time.Now().Add(maxSessionLifetime)
	}
	return nil
}

// Enveloped serves one command of a logged-in session. Any HSM of the
// domain can: the EKT gives it the session key and says whose session it
// is, so it decides access itself, from the session's user and role and
// its own records, not from what the client library claims.
func (h *hsm) Enveloped(env authsession.Envelope) (authsession.Envelope, error) {
	return h.enveloped(origin{}, env)
}

// enveloped is Enveloped for a call from o.
func (h *hsm) enveloped(o origin, env authsession.Envelope) (authsession.Envelope, error) {
	s, sk, claims, err := h.sessionFor(env.EKT)
	if err != nil {
		return authsession.Envelope{}, err
	}
	defer clear(sk[:])
	sealer, err := s.sealerFor(sk, env.EKT)
	if err != nil {
		return authsession.Envelope{}, fmt.Errorf("%w: %w", ErrPermission, err)
	}
	plain, err := sealer.Open(authsession.ToHSM, env)
	if err != nil {
		return authsession.Envelope{}, fmt.Errorf("%w: %w", ErrPermission, err)
	}
	if err := s.lanes[authsession.LaneOf(env.Seq)].Accept(env.Seq); err != nil {
		return authsession.Envelope{}, fmt.Errorf("%w: %w", ErrPermission, err)
	}
	call, err := protocol.DecodeSessionCall(plain)
	if err != nil {
		return authsession.Envelope{}, fmt.Errorf("%w: the envelope holds no command: %v", ErrInvalid, err)
	}
	if call.HSM != h.id {
		return authsession.Envelope{}, fmt.Errorf("%w: the command was sealed for %s, not %s: refusing a redirected envelope", ErrPermission, call.HSM, h.id)
	}
	c := Caller{Username: claims.User, Role: Role(claims.Role), Session: claims.SessionID}
	var res protocol.SessionResult
	var out any
	if changesDomain[call.Method] {
		// Decided on what the domain has committed: a user deleted a
		// moment ago on another HSM does not act here through an old
		// session, and a quorum value set while this HSM was down holds
		// here. (Key use skips the round trip to the leader.)
		err = h.catchUpFor(call.Method)
	}
	if readsDomain[call.Method] {
		h.catchUp()
	}
	if err != nil {
	} else if err = h.checkSessionUser(c, claims.Issued); err == nil {
		out, err = h.serveAs(o, c, call)
	}
	if err == nil {
		res, err = protocol.NewSessionResult(call.Method, out)
	}
	if err != nil {
		res = protocol.SessionResult{Code: protocol.CodeOf(err), Error: err.Error()}
	}
	b, err := protocol.EncodeSessionResult(res)
	if err != nil {
		return authsession.Envelope{}, err
	}
	return sealer.Seal(authsession.ToClient, env.Seq, b)
}

// changesDomain are the session calls that change the domain state.
var changesDomain = map[string]bool{
	protocol.CallCreateUser: true, protocol.CallRemoveUser: true, protocol.CallSetPassword: true,
	protocol.CallIssueToken: true, protocol.CallDeleteTokens: true, protocol.CallSetQuorum: true,
	protocol.CallRegisterQuorum: true, protocol.CallImportUser: true, protocol.CallRegisterMFA: true,
	protocol.CallDeregisterMFA: true, protocol.CallDeregisterQuorum: true,
	protocol.CallMTLSRegister: true, protocol.CallMTLSDeregister: true, protocol.CallMTLSSetLevel: true,
	protocol.CallBackup: true, protocol.CallExportUser: true,
}

// readsDomain are session calls that show the domain state: served from
// the committed state where a leader answers, from this HSM's own copy
// where none does.
var readsDomain = map[string]bool{protocol.CallQuorumList: true}

// checkSessionUser refuses a session whose user was deleted after the
// session began, or whose role is no longer the user's: a token lives up
// to a day, and a deleted user (or a user of the same name made since)
// must not act through it. An HSM that has not heard of the user at all
// (it was down, or new, and sync has not reached it) serves the session:
// the HSM that issued it checked the user.
func (h *hsm) checkSessionUser(c Caller, issued time.Time) error {
	h.mu.RLock()
	u := h.users[c.Username]
	deletedAt, deleted := h.userTombs[c.Username]
	h.mu.RUnlock()
	switch {
	case deleted && deletedAt >= issued.UnixNano(), u != nil && u.Since > issued.UnixNano():
		// Deleted since, or deleted and made again since: either way this
		// session belongs to a user that no longer exists.
		return fmt.Errorf("%w: user %s was deleted after this session began: log in again", ErrPermission, c.Username)
	case u != nil && u.Role != c.Role && !(u.Role == RoleAdmin && c.Role == RoleUnactivatedAdmin):
		return fmt.Errorf("%w: user %s is %s now, not %s as when this session began: log in again", ErrPermission, c.Username, u.Role, c.Role)
	}
	return nil
}

// sessionFor finds or adopts the session an EKT names.
// It returns a copy of the session key, taken under the lock, since logout
// may clear the session's own copy while a command is being served.
func (h *hsm) sessionFor(ekt []byte) (*hsmSession, [32]byte, authsession.Claims, error) {
	// The common case: the session's current token, seen before. Opening
	// it again would give the same answer; only its expiry can change.
	h.mu.RLock()
	if s, ok := h.byEKT[string(ekt)]; ok && h.up {
		claims, sk := s.claims, s.sk
		h.mu.RUnlock()
		if !time.Now().Before(claims.Expires) {
			return nil, [32]byte{}, claims, fmt.Errorf("%w (session %s of %s expired at %s)", ErrSessionExpired, claims.SessionID, claims.User, claims.Expires.Format(time.RFC3339))
		}
		return s, sk, claims, nil
	}
	h.mu.RUnlock()
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.up {
		return nil, [32]byte{}, authsession.Claims{}, protocol.ErrDown(h.id)
	}
	if h.domain == nil {
		return nil, [32]byte{}, authsession.Claims{}, h.notInDomain()
	}
	now := time.Now()
	sk, claims, err := authsession.OpenEKT(*h.domain, ekt, now)
	switch {
	case errors.Is(err, authsession.ErrExpired):
		return nil, [32]byte{}, claims, fmt.Errorf("%w (%v)", ErrSessionExpired, err)
	case err != nil:
		return nil, [32]byte{}, claims, fmt.Errorf("%w: %w", ErrPermission, err)
	case claims.Role == provisionalRole:
		return nil, [32]byte{}, claims, fmt.Errorf("%w: session %s has not finished logging in", ErrPermission, claims.SessionID)
	}
	s, ok := h.sessions[claims.SessionID]
	switch {
	case ok && sameKey(s.sk, sk):
		if !bytes.Equal(s.ekt, ekt) { // re-issued with the user's role
			delete(h.byEKT, string(s.ekt))
			s.claims, s.ekt = claims, bytes.Clone(ekt)
			h.indexSessionLocked(s)
		}
		return s, s.sk, s.claims, nil
	case ok && !claims.Issued.After(s.claims.Issued):
		return nil, [32]byte{}, claims, fmt.Errorf("%w: session %s was renegotiated since this token was issued", ErrRenegotiate, claims.SessionID)
	case !ok:
		if _, gone := h.ended[claims.SessionID]; gone {
			return nil, [32]byte{}, claims, fmt.Errorf("%w: session %s was logged out", ErrPermission, claims.SessionID)
		}
		if claims.Issued.Before(h.started) {
			return nil, [32]byte{}, claims, fmt.Errorf("%w: %s restarted at %s, after session %s began", ErrRenegotiate, h.id, h.started.UTC().Format(time.RFC3339), claims.SessionID)
		}
		h.sweepSessionsLocked(now)
		if len(h.sessions) >= maxSessions {
			return nil, [32]byte{}, claims, fmt.Errorf("%w: %s holds %d sessions, its limit: try again when some expire", ErrPermission, h.id, maxSessions)
		}
	}
	// A session new to this HSM, or a renegotiated one: fresh windows.
	if h.sessions == nil {
		h.sessions = map[string]*hsmSession{}
	}
	if old, ok := h.sessions[claims.SessionID]; ok {
		delete(h.byEKT, string(old.ekt))
	}
	s = &hsmSession{sk: sk, claims: claims, ekt: bytes.Clone(ekt)}
	h.sessions[claims.SessionID] = s
	h.indexSessionLocked(s)
	return s, sk, claims, nil
}

// indexSessionLocked finds s by its token from now on; h.mu is held.
func (h *hsm) indexSessionLocked(s *hsmSession) {
	if h.byEKT == nil {
		h.byEKT = map[string]*hsmSession{}
	}
	h.byEKT[string(s.ekt)] = s
}

// sweepSessionsLocked forgets expired sessions; h.mu is held.
func (h *hsm) sweepSessionsLocked(now time.Time) {
	for id, s := range h.sessions {
		if !now.Before(s.claims.Expires) || (!s.pending.IsZero() && !now.Before(s.pending)) {
			clear(s.sk[:])
			s.sealer.Store(nil)
			delete(h.sessions, id)
			delete(h.byEKT, string(s.ekt))
		}
	}
	for id, exp := range h.ended {
		if !now.Before(exp) {
			delete(h.ended, id)
		}
	}
}

// sameKey compares two session keys in constant time: how far two keys
// agree must not show in how long the comparison takes.
func sameKey(a, b [32]byte) bool { return subtle.ConstantTimeCompare(a[:], b[:]) == 1 }

// serveAs runs one session call for the session's caller, after the
// HSM's own access check. The client library checks the same rules first,
// to give the user the right message; this is the check that holds when
// the client is not hsmsh's library.
func (h *hsm) serveAs(o origin, c Caller, call protocol.SessionCall) (any, error) {
	method := call.Method
	if protocol.Calls[method] != protocol.ClassSession {
		return nil, fmt.Errorf("%w: %s is not a session command", ErrInvalid, method)
	}
	decode := func(v any) error {
		if err := call.DecodeArgs(v); err != nil {
			return fmt.Errorf("%w: %s: bad arguments: %v", ErrInvalid, method, err)
		}
		return nil
	}
	// checkKey checks the caller may reach the key: a crypto user's own
	// or shared key (use), a key it may see (meta), or one it owns
	// (change). A key it may not reach is "not found", as in key list.
	checkKey := func(ref Ref, may func(r *keyRecord) bool) (*keyRecord, error) {
		r, err := h.stored(ref)
		if err != nil {
			return nil, err
		}
		if !may(r) {
			return nil, fmt.Errorf("%w: key %s", ErrKeyNotFound, ref)
		}
		return r, nil
	}
	refArg := func() (Ref, error) {
		var ref Ref
		return ref, decode(&ref)
	}
	inSession := func(r *keyRecord) bool { return r.Session == "" || r.Session == c.Session }
	usable := func(r *keyRecord) bool { return inSession(r) && r.usableBy(c) }
	visible := func(r *keyRecord) bool { return r.visibleTo(c) }
	owned := func(r *keyRecord) bool {
		return inSession(r) && c.Role == RoleCryptoUser && r.Owner == c.Username
	}

	switch method {
	case protocol.CallSign:
		var a protocol.SignArgs
		if err := decode(&a); err != nil {
			return nil, err
		}
		r, err := checkKey(a.Req.Ref, usable)
		if err != nil {
			return nil, err
		}
		if r.UseQuorum > 1 || len(h.rules[pathSign]) > 0 {
			if err := h.approveIn(c, quorum.ServiceKeyUsage, a.Req.Ref, pathSign, a.Approval); err != nil {
				return nil, err
			}
		}
		return h.Sign(a.Req)
	case protocol.CallVerify:
		var a protocol.VerifyArgs
		if err := decode(&a); err != nil {
			return nil, err
		}
		if _, err := checkKey(a.Req.Ref, usable); err != nil {
			return nil, err
		}
		return nil, h.Verify(a.Req, a.Sig)
	case protocol.CallPublicKey:
		ref, err := refArg()
		if err != nil {
			return nil, err
		}
		if _, err := checkKey(ref, usable); err != nil {
			return nil, err
		}
		return h.PublicKeyPEM(ref)
	case protocol.CallKeyMeta:
		ref, err := refArg()
		if err != nil {
			return nil, err
		}
		h.delay()
		r, err := checkKey(ref, visible)
		if err != nil {
			return nil, err
		}
		return metaOf(r), nil
	case protocol.CallHas:
		ref, err := refArg()
		if err != nil {
			return nil, err
		}
		return h.Has(ref), nil
	case protocol.CallRefTaken:
		ref, err := refArg()
		if err != nil {
			return nil, err
		}
		return h.RefTaken(ref), nil
	case protocol.CallDeleteKey:
		ref, err := refArg()
		if err != nil {
			return nil, err
		}
		r, err := checkKey(ref, owned)
		if err != nil {
			return nil, err
		}
		if !r.Attrs.Destroyable {
			return nil, fmt.Errorf("%w: key %s is not destroyable (its destroyable attribute is false)", ErrPermission, ref)
		}
		return nil, h.DeleteKey(ref)
	case protocol.CallSnapshot:
		var sa protocol.SnapshotArgs
		if err := decode(&sa); err != nil {
			return nil, err
		}
		// Only what the session's user may see, as in key list.
		recs, more, err := h.snapshotPage(sa.Filter, visible, sa.After, protocol.SnapshotPageSize)
		if err != nil {
			return nil, err
		}
		return protocol.SnapshotReply{Keys: metasOf(recs), More: more}, nil
	case protocol.CallDestroySession, protocol.CallEndSession:
		var sid string
		if err := decode(&sid); err != nil {
			return nil, err
		}
		if sid != c.Session {
			return nil, fmt.Errorf("%w: a session may end only itself and its own session keys", ErrPermission)
		}
		if method == protocol.CallEndSession {
			return nil, h.EndSession(sid)
		}
		return h.DestroySession(sid), nil
	case protocol.CallRegisterMFA:
		var a protocol.RegisterArgs
		if err := decode(&a); err != nil {
			return nil, err
		}
		return nil, h.registerMFA(c, a)
	case protocol.CallDeregisterMFA, protocol.CallDeregisterQuorum:
		var a protocol.UserArgs
		if err := decode(&a); err != nil {
			return nil, err
		}
		if method == protocol.CallDeregisterQuorum {
			return nil, h.deregisterQuorum(c, a)
		}
		return nil, h.deregisterMFA(c, a)
	case protocol.CallMTLSRegister, protocol.CallMTLSDeregister, protocol.CallMTLSSetLevel:
		var a protocol.MTLSArgs
		if err := decode(&a); err != nil {
			return nil, err
		}
		return h.changeMTLS(o, c, method, a)
	case protocol.CallWrapKey:
		var a protocol.WrapArgs
		if err := decode(&a); err != nil {
			return nil, err
		}
		return h.wrapKey(c, a, usable, owned)
	case protocol.CallUnwrapKey:
		var a protocol.UnwrapArgs
		if err := decode(&a); err != nil {
			return nil, err
		}
		return h.unwrapUserKey(c, a, usable)
	case protocol.CallGenerateKey:
		var a protocol.GenerateArgs
		if err := decode(&a); err != nil {
			return nil, err
		}
		return h.generateKey(c, a)
	case protocol.CallImportKey:
		var a protocol.ImportArgs
		if err := decode(&a); err != nil {
			return nil, err
		}
		return h.importKey(c, a)
	case protocol.CallExportWrapped:
		ref, err := refArg()
		if err != nil {
			return nil, err
		}
		// key replicate: a token key's owner, or an admin (who manages
		// the clusters but can use no key); the blob opens only in an HSM
		// of this domain.
		adminCopy := func(r *keyRecord) bool { return c.Role == RoleAdmin && r.Session == "" }
		if _, err := checkKey(ref, func(r *keyRecord) bool { return owned(r) || adminCopy(r) }); err != nil {
			return nil, err
		}
		return h.ExportWrapped(ref)
	case protocol.CallImportWrapped:
		var a protocol.ImportWrappedArgs
		if err := decode(&a); err != nil {
			return nil, err
		}
		switch c.Role {
		case RoleCryptoUser:
			// The session's user must own the key, whatever the client sent.
			return nil, h.ImportWrapped(a.Key, c.Username)
		case RoleAdmin:
			// An admin replicates any user's key, which stays its owner's.
			return nil, h.ImportWrapped(a.Key, "")
		}
		return nil, fmt.Errorf("%w: storing a wrapped key needs a crypto user's or an admin's session", ErrPermission)
	case protocol.CallKeyChange:
		var a protocol.KeyChangeArgs
		if err := decode(&a); err != nil {
			return nil, err
		}
		return h.changeKey(c, a)
	case protocol.CallCreateUser:
		var a protocol.UserArgs
		if err := decode(&a); err != nil {
			return nil, err
		}
		return h.createUser(c, a)
	case protocol.CallRemoveUser:
		var a protocol.UserArgs
		if err := decode(&a); err != nil {
			return nil, err
		}
		return nil, h.removeUser(c, a)
	case protocol.CallSetPassword:
		var a protocol.UserArgs
		if err := decode(&a); err != nil {
			return nil, err
		}
		return nil, h.setPassword(c, a)
	case protocol.CallOwns:
		var name string
		if err := decode(&name); err != nil {
			return nil, err
		}
		if err := requireAdmin(c, method); err != nil {
			return nil, err
		}
		return h.Owns(name), nil
	case protocol.CallQuorumList:
		return h.quorumFor(c)
	case protocol.CallIssueToken:
		var a protocol.IssueArgs
		if err := decode(&a); err != nil {
			return nil, err
		}
		return h.issueToken(c, a)
	case protocol.CallDeleteTokens:
		var a protocol.DeleteTokensArgs
		if err := decode(&a); err != nil {
			return nil, err
		}
		return h.deleteTokens(c, a.All)
	case protocol.CallSetQuorum:
		var a protocol.SetQuorumArgs
		if err := decode(&a); err != nil {
			return nil, err
		}
		return nil, h.setQuorum(c, a)
	case protocol.CallRegisterQuorum:
		var a protocol.RegisterArgs
		if err := decode(&a); err != nil {
			return nil, err
		}
		return nil, h.registerQuorum(c, a)
	case protocol.CallExportUser:
		var a protocol.UserArgs
		if err := decode(&a); err != nil {
			return nil, err
		}
		return h.exportUser(c, a)
	case protocol.CallImportUser:
		var a protocol.ImportWrappedArgs
		if err := decode(&a); err != nil {
			return nil, err
		}
		return nil, h.importUser(c, a.Key, a.Approval)
	case protocol.CallBackup:
		var a protocol.BackupArgs
		if err := decode(&a); err != nil {
			return nil, err
		}
		if err := requireAdmin(c, "cluster backup"); err != nil {
			return nil, err
		}
		// A backup holds every key and the domain key, sealed under a
		// password its taker knows: it takes the same M admins as the
		// quorum settings do.
		if err := h.approveIn(c, quorum.ServiceQuorum, 0, pathBackup, a.Approval); err != nil {
			return nil, err
		}
		return h.Backup(a)
	}
	return nil, fmt.Errorf("%w: %s is not a session command", ErrInvalid, method)
}

// verifyMFA checks a token-sign MFA signature: the token's SHA-256 signed
// with the user's registered MFA key (RSA PKCS #1 v1.5, as openssl pkeyutl
// -sign -pkeyopt digest:sha256 makes it).
func verifyMFA(pemText string, token, sig []byte) error {
	pub, err := quorum.ParsePublicKey([]byte(pemText))
	if err != nil {
		return err
	}
	return quorum.VerifySignature(pub, quorum.Digest(token), sig)
}
