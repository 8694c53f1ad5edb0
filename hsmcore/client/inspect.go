package client

import (
	"fmt"
	"time"

	"github.com/hsmsh/hsmsh/hsmcore/protocol"
)

// Inspector looks inside the client library's own state: for the tests
// that attack the HSMs with this client's sessions (package hsm's
// adversarial suite) and for protocol debugging. What it shows is the
// client's own (its session keys, its routing), never an HSM's: the HSMs
// stay behind their doors. The command layer has no use for it.
type Inspector struct{ e *Embedded }

// Inspect returns e's inspector.
func (e *Embedded) Inspect() Inspector { return Inspector{e} }

// SessionTap is one login session as this client holds it, lent to a
// program that seals calls itself.
type SessionTap struct{ s *clientSession }

// Session lends c's session.
func (i Inspector) Session(c Caller) (*SessionTap, error) {
	i.e.mu.RLock()
	s := i.e.auth[c.Session]
	i.e.mu.RUnlock()
	if s == nil {
		return nil, fmt.Errorf("no session %s", c.Session)
	}
	return &SessionTap{s}, nil
}

// Keys are the session's key and token (EKT).
func (t *SessionTap) Keys() (sk [32]byte, ekt []byte) {
	sk, ekt, _, _, _ = t.s.keys()
	return sk, ekt
}

// Next reserves the next sequence number of one of the session's lanes,
// as the client library numbers its own calls, so that the library's
// later calls in the session are not refused as replays.
func (t *SessionTap) Next() (lane uint16, n uint64) {
	lane = <-t.s.lanes
	t.s.next[lane]++
	n = t.s.next[lane]
	t.s.lanes <- lane
	return lane, n
}

// ID is the session's id.
func (t *SessionTap) ID() string { return t.s.sid }

// Expiry is when the client believes the session expires.
func (t *SessionTap) Expiry() time.Time {
	_, _, exp, _, _ := t.s.keys()
	return exp
}

// Generation counts the session's renegotiations.
func (t *SessionTap) Generation() int {
	_, _, _, gen, _ := t.s.keys()
	return gen
}

// SetExpiry sets when the client believes the session expires and
// returns what it believed before.
func (t *SessionTap) SetExpiry(at time.Time) time.Time {
	t.s.mu.Lock()
	defer t.s.mu.Unlock()
	old := t.s.expires
	t.s.expires = at
	return old
}

// RouteNextTo makes the next round-robin turn start at HSM id.
func (i Inspector) RouteNextTo(id string) {
	all := i.e.members()
	for k, n := range all {
		if n.ID() == id {
			i.e.next.Store(uint64(k))
			return
		}
	}
}

// Up says whether the client sees HSM id answering.
func (i Inspector) Up(id string) bool {
	n := i.e.hsm(id)
	return n != nil && n.Up()
}

// Holders says, for every HSM, whether it holds ref, as c may see it.
func (i Inspector) Holders(c Caller, ref Ref) map[string]bool { return i.e.holders(c, ref) }

// DroppedEvents counts events subscribers were too slow to take.
func (i Inspector) DroppedEvents() int64 { return i.e.events.dropped.Load() }

// Authenticate runs one login on HSM id alone, as the client library
// would, and returns the HSM's answer.
func (i Inspector) Authenticate(id, user string, role Role, password string) (protocol.AuthAnswer, error) {
	n := i.e.hsm(id)
	if n == nil {
		return protocol.AuthAnswer{}, fmt.Errorf("no HSM %s", id)
	}
	_, ans, err := i.e.authenticateOn(n, user, role, password, nil, nil)
	return ans, err
}

// Blob is the wrapped user record a user copy carries, opaque to the
// client (sealed under the domain key).
func (u UserCopy) Blob() *protocol.WrappedKey { return u.w }
