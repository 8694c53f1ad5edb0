package hsm

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/hsmsh/hsmsh/hsmcore/authsession"
	"github.com/hsmsh/hsmsh/hsmcore/protocol"
)

// Login runs the seed's handshake with an HSM and has it check the
// password inside the channel; session info describes the result.
func TestLoginOpensAnAuthenticatedSession(t *testing.T) {
	e, err := OpenEmbedded(Options{ID: "s", HSMs: 3, SessionLifetime: 30 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	_, cu := activate(t, e)
	ctx := context.Background()
	info, err := e.SessionInfo(ctx, cu)
	if err != nil {
		t.Fatal(err)
	}
	if info.SessionID != cu.Session || len(info.SessionID) != 32 || info.Username != "cu1" || info.Role != RoleCryptoUser ||
		info.Curve != "P-384" || info.AEAD != "AES-256-GCM" || info.KDF != "HKDF-SHA384" ||
		info.SecondsLeft < 29*60 || info.SecondsLeft > 30*60 || len(info.ServedBy) != 1 || info.ServedBy[0] != info.OpenedOn {
		t.Fatalf("session info %+v", info)
	}
	// The HSM that ran the handshake holds SK in volatile memory; logout
	// makes it forget it, and the Caller is no longer valid.
	h := device(e, info.OpenedOn)
	h.mu.RLock()
	_, held := h.sessions[info.SessionID]
	h.mu.RUnlock()
	if !held {
		t.Fatal("the handshake HSM does not hold the session")
	}
	if err := e.Logout(ctx, cu); err != nil {
		t.Fatal(err)
	}
	h.mu.RLock()
	_, held = h.sessions[info.SessionID]
	h.mu.RUnlock()
	if held {
		t.Error("logout left the session key on the HSM")
	}
	if _, err := e.SessionInfo(ctx, cu); !errors.Is(err, ErrNotLoggedIn) {
		t.Errorf("session info after logout: %v", err)
	}
	// A wrong password opens nothing (the admin's session stays).
	h.mu.RLock()
	before := len(h.sessions)
	h.mu.RUnlock()
	if _, err := e.Login(ctx, "cu1", RoleCryptoUser, "wrongpass"); !errors.Is(err, ErrBadCredentials) {
		t.Fatalf("wrong password: %v", err)
	}
	h.mu.RLock()
	after := len(h.sessions)
	h.mu.RUnlock()
	if after != before {
		t.Errorf("a failed login left a session on %s (%d, was %d)", h.id, after, before)
	}
}

// A client install registers its identity key at its first login; a
// client presenting another key under the same id is refused — the forged
// Hello case end to end.
func TestClientIdentityRegisteredAtFirstLogin(t *testing.T) {
	dir := t.TempDir()
	me, _ := authsession.NewIdentity()
	e, err := OpenEmbedded(Options{ID: "s", HSMs: 1, DataDir: dir, Client: ClientIdentity{ID: "laptop-1", Key: me}})
	if err != nil {
		t.Fatal(err)
	}
	activate(t, e)
	e.Close()
	impostor, _ := authsession.NewIdentity()
	e, err = OpenEmbedded(Options{ID: "s", HSMs: 1, DataDir: dir, Client: ClientIdentity{ID: "laptop-1", Key: impostor}})
	if err != nil {
		t.Fatal(err)
	}
	_, err = e.Login(context.Background(), "cu1", RoleCryptoUser, "cu1pass1")
	if !errors.Is(err, ErrPermission) || !strings.Contains(err.Error(), `client "laptop-1" presented an identity key other than the one it registered`) {
		t.Fatalf("impostor: %v", err)
	}
	e.Close()
	e, err = OpenEmbedded(Options{ID: "s", HSMs: 1, DataDir: dir, Client: ClientIdentity{ID: "laptop-1", Key: me}})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	if _, err := e.Login(context.Background(), "cu1", RoleCryptoUser, "cu1pass1"); err != nil {
		t.Fatalf("the registered client: %v", err)
	}
}

// An HSM restart drops the session keys it holds (volatile memory only).
func TestRestartDropsSessionKeys(t *testing.T) {
	e, err := OpenEmbedded(Options{ID: "s", HSMs: 1, Transport: TransportDirect})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	activate(t, e)
	h := device(e, "hsm-1")
	if len(h.sessions) == 0 {
		t.Fatal("no session on the HSM to begin with")
	}
	if err := e.RestartHSM("hsm-1"); err != nil {
		t.Fatal(err)
	}
	if len(h.sessions) != 0 {
		t.Errorf("%d sessions survived the restart", len(h.sessions))
	}
}

// Over the wire, a remote server runs the handshake and the password check.
func TestRemoteLoginHandshake(t *testing.T) {
	l := newLoopback(t, 3, time.Hour)
	r := l.client(Durability{MinimumNodes: 1})
	_, cu := activate(t, r.Embedded)
	info, err := r.SessionInfo(context.Background(), cu)
	if err != nil {
		t.Fatal(err)
	}
	held := 0
	for _, s := range l.servers {
		s.local.mu.RLock()
		if _, ok := s.local.sessions[info.SessionID]; ok {
			held++
		}
		s.local.mu.RUnlock()
	}
	if held != 1 {
		t.Errorf("%d servers hold the session after login, want the handshake's one", held)
	}
}

// Wrong passwords are counted by the HSM that checks them, and the counts
// add up over the cluster: a client that skips hsmsh's library and spreads
// its guesses over the HSMs (CloudHSM's weakness) is locked out after
// MaxFailedLogins in all, and then even the right password is refused.
func TestLockoutCountsGuessesSpreadOverHSMs(t *testing.T) {
	e, err := OpenEmbedded(Options{ID: "s", HSMs: 3, Transport: TransportDirect})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	e.PauseSync()
	admin, _ := activate(t, e)
	ctx := context.Background()
	hs := devices(e)
	guess := func(h *hsm, pw string) protocol.AuthAnswer {
		t.Helper()
		ans, err := e.Inspect().Authenticate(h.id, "cu1", RoleCryptoUser, pw)
		if err != nil {
			t.Fatal(err)
		}
		return ans
	}
	// One guess on each HSM before sync runs (so the counts of different
	// HSMs must merge, not overwrite each other), then the next round.
	for i := range MaxFailedLogins {
		h := hs[i%len(hs)]
		if ans := guess(h, "wrongpass"); ans.OK {
			t.Fatal("a wrong password was accepted")
		}
		if i%len(hs) == len(hs)-1 || i == MaxFailedLogins-1 {
			e.SyncNow(ctx)
		}
	}
	for _, h := range hs {
		if ans := guess(h, "cu1pass1"); ans.OK || !ans.Locked {
			t.Errorf("%s after %d guesses over 3 HSMs: %+v, want locked", h.ID(), MaxFailedLogins, ans)
		}
	}
	if _, err := e.Login(ctx, "cu1", RoleCryptoUser, "cu1pass1"); !errors.Is(err, ErrLocked) {
		t.Errorf("login after the lockout: %v", err)
	}
	// An admin's new password unlocks, on every HSM.
	if err := e.ChangePassword(ctx, admin, "cu1", RoleCryptoUser, "cu1pass2"); err != nil {
		t.Fatal(err)
	}
	for _, h := range hs {
		if ans := guess(h, "cu1pass2"); !ans.OK {
			t.Errorf("%s after the reset: %+v", h.ID(), ans)
		}
	}
}

// Concurrent failures on two HSMs are both kept when the records meet,
// whichever is newer; a reset wins over counts made before it.
func TestMergeFails(t *testing.T) {
	a := &userRecord{Username: "u", FailedOn: map[string]int{"hsm-1": 2}, Updated: 10}
	b := &userRecord{Username: "u", FailedOn: map[string]int{"hsm-2": 1}, Updated: 20}
	m := *b
	m.mergeFails(a)
	if m.failures() != 3 || !m.failsCover(a) || !m.failsCover(b) || a.FailedOn["hsm-2"] != 0 {
		t.Errorf("merged %+v (a %+v)", m, a)
	}
	reset := m
	reset.resetFails(30)
	old := m
	old.mergeFails(&reset)
	if old.failures() != 0 || !old.failsCover(&m) {
		t.Errorf("a reset lost to older counts: %+v", old)
	}
	reset.mergeFails(&m)
	if reset.failures() != 0 {
		t.Errorf("older counts came back after a reset: %+v", reset)
	}
}

// A name no user has is answered word for word as a user's wrong password
// is, attempt after attempt, up to the lock: the answers do not tell
// which names exist.
func TestLoginAnswersDoNotTellWhichUsersExist(t *testing.T) {
	e, err := OpenEmbedded(Options{ID: "names", HSMs: 3, Transport: TransportDirect})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	activate(t, e)
	ctx := context.Background()
	for i := range MaxFailedLogins + 2 {
		_, known := e.Login(ctx, "cu1", RoleCryptoUser, "wrongpass")
		_, unknown := e.Login(ctx, "ghost", RoleCryptoUser, "wrongpass")
		if known == nil || unknown == nil || known.Error() != unknown.Error() {
			t.Fatalf("attempt %d: cu1 %q, ghost %q", i+1, known, unknown)
		}
		if !errors.Is(unknown, ErrBadCredentials) && !errors.Is(unknown, ErrLocked) {
			t.Errorf("attempt %d: %v", i+1, unknown)
		}
	}
}
