package hsm

import (
	"context"
	"crypto"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hsmsh/hsmsh/hsmcore/authsession"
	"github.com/hsmsh/hsmsh/hsmcore/protocol"
)

// signer makes a replicated P-256 key for cu and returns its private half.
func signer(t *testing.T, e *Embedded, cu Caller) Ref {
	t.Helper()
	keys, err := e.GenerateKey(context.Background(), cu, KeySpec{Type: TypeEC, Curve: "secp256r1", PublicLabel: "p", PrivateLabel: "k"})
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if k.Attrs.Class == ClassPrivate {
			return k.Ref
		}
	}
	t.Fatal("no private key")
	return 0
}

func signOnce(e *Embedded, c Caller, ref Ref, i int) error {
	_, err := e.Sign(context.Background(), c, SignRequest{Ref: ref, Mechanism: MechECDSA, Hash: crypto.SHA256, Data: []byte(fmt.Sprint("m", i))})
	return err
}

// One login is served by every HSM of the cluster: the HSMs that did not
// run the handshake open the EKT with the domain key.
func TestOneLoginServedByEveryHSM(t *testing.T) {
	for _, mode := range []string{"embedded", "remote"} {
		t.Run(mode, func(t *testing.T) {
			var e *Embedded
			var held func(sid string) int
			if mode == "embedded" {
				var err error
				e, err = OpenEmbedded(Options{ID: "s", HSMs: 3})
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { e.Close() })
				held = func(sid string) (n int) {
					for _, h := range inProcessHSMs(e) {
						h.mu.RLock()
						if _, ok := h.sessions[sid]; ok {
							n++
						}
						h.mu.RUnlock()
					}
					return n
				}
			} else {
				l := newLoopback(t, 3, time.Hour)
				e = l.client(Durability{MinimumNodes: 3}).Embedded
				held = func(sid string) (n int) {
					for _, s := range l.servers {
						s.local.mu.RLock()
						if _, ok := s.local.sessions[sid]; ok {
							n++
						}
						s.local.mu.RUnlock()
					}
					return n
				}
			}
			_, cu := activate(t, e)
			ref := signer(t, e, cu)
			for i := range 6 {
				if err := signOnce(e, cu, ref, i); err != nil {
					t.Fatal(err)
				}
			}
			info, err := e.SessionInfo(context.Background(), cu)
			if err != nil {
				t.Fatal(err)
			}
			if strings.Join(info.ServedBy, ",") != "hsm-1,hsm-2,hsm-3" {
				t.Errorf("served by %v, want all three HSMs", info.ServedBy)
			}
			if n := held(cu.Session); n != 3 {
				t.Errorf("%d HSMs hold the session, want 3", n)
			}
		})
	}
}

// A server restart loses its volatile copy of the session (and its replay
// windows); the client renegotiates under the same session id and goes on.
func TestSessionSurvivesServerRestart(t *testing.T) {
	l := newLoopback(t, 3, time.Hour)
	r := l.client(Durability{MinimumNodes: 3})
	_, cu := activate(t, r.Embedded)
	ref := signer(t, r.Embedded, cu)
	events, cancel := r.Subscribe(256)
	defer cancel()

	l.stop(1)
	l.start(1, nil)
	waitFor(t, "hsm-2 back", func() bool { return r.Inspect().Up("hsm-2") })
	restarted := l.servers[1].local
	restarted.mu.RLock()
	_, held := restarted.sessions[cu.Session]
	restarted.mu.RUnlock()
	if held {
		t.Fatal("a restarted server still holds the session")
	}
	for i := range 6 { // round-robin reaches the restarted server
		if err := signOnce(r.Embedded, cu, ref, i); err != nil {
			t.Fatalf("sign %d after the restart: %v", i, err)
		}
	}
	restarted.mu.RLock()
	s := restarted.sessions[cu.Session]
	restarted.mu.RUnlock()
	if s == nil || s.claims.Issued.Before(restarted.started.Truncate(time.Millisecond)) {
		t.Fatalf("the restarted server serves no renegotiated session: %+v", s)
	}
	info, err := r.SessionInfo(context.Background(), cu)
	if err != nil || info.SessionID != cu.Session {
		t.Fatalf("session info after renegotiating: %+v, %v", info, err)
	}
	renegotiated := false
	for len(events) > 0 {
		if ev := <-events; ev.Kind == EventRenegotiated {
			renegotiated = true
		}
	}
	if !renegotiated {
		t.Error("no session-renegotiated event")
	}
}

// An expired token is renegotiated when the client keeps the password,
// and otherwise the user is told to log in again.
func TestSessionExpiry(t *testing.T) {
	for _, keep := range []bool{true, false} {
		t.Run(fmt.Sprint("renegotiate=", keep), func(t *testing.T) {
			e, err := OpenEmbedded(Options{ID: "s", HSMs: 2, NoRenegotiate: !keep})
			if err != nil {
				t.Fatal(err)
			}
			defer e.Close()
			_, cu := activate(t, e)
			ref := signer(t, e, cu)
			s, err := e.Inspect().Session(cu)
			if err != nil {
				t.Fatal(err)
			}
			old := s.SetExpiry(time.Now().Add(-time.Second)) // as the client's clock sees it
			err = signOnce(e, cu, ref, 0)
			if !keep {
				if !errors.Is(err, ErrSessionExpired) || !strings.Contains(err.Error(), "log in again") {
					t.Fatalf("sign with an expired session and no credentials: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("sign after expiry: %v", err)
			}
			if !s.Expiry().After(time.Now()) || s.Generation() != 1 || s.ID() != cu.Session {
				t.Errorf("after renegotiating: expires %v (was %v), generation %d", s.Expiry(), old, s.Generation())
			}
		})
	}
}

// envelopeRig is a cluster with cu1 and cu2 logged in, and a way to send
// hand-made envelopes straight to the HSMs, as a client other than hsmsh's
// library could: the HSM's own checks are what is tested.
type envelopeRig struct {
	e       *Embedded
	hsms    []*hsm
	cu, cu2 Caller
	admin   Caller
	ref     Ref // cu1's private key
	lane    uint16
}

func newEnvelopeRig(t *testing.T) *envelopeRig {
	t.Helper()
	e, err := OpenEmbedded(Options{ID: "s", HSMs: 2, Transport: TransportDirect, Durability: Durability{MinimumNodes: 2}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	admin, cu := activate(t, e)
	ctx := context.Background()
	if _, err := e.CreateUser(ctx, admin, "cu2", RoleCryptoUser, "cu2pass2"); err != nil {
		t.Fatal(err)
	}
	cu2, err := e.Login(ctx, "cu2", RoleCryptoUser, "cu2pass2")
	if err != nil {
		t.Fatal(err)
	}
	return &envelopeRig{e: e, hsms: inProcessHSMs(e), cu: cu, cu2: cu2, admin: admin, ref: signer(t, e, cu), lane: authsession.MaxLanes - 1}
}

// keys are c's session key and token, as the client holds them.
func (r *envelopeRig) keys(t *testing.T, c Caller) ([32]byte, []byte) {
	t.Helper()
	s, err := r.e.Inspect().Session(c)
	if err != nil {
		t.Fatal(err)
	}
	return s.Keys()
}

// seal seals a call for hsm `to` in c's session, under its own SK and EKT.
func (r *envelopeRig) seal(t *testing.T, c Caller, to, method string, args any, n uint64) authsession.Envelope {
	t.Helper()
	sk, ekt := r.keys(t, c)
	return sealCall(t, sk, ekt, r.lane, n, to, method, args)
}

func sealCall(t *testing.T, sk [32]byte, ekt []byte, lane uint16, n uint64, to, method string, args any) authsession.Envelope {
	t.Helper()
	call, err := protocol.NewSessionCall(to, method, args)
	if protocol.Calls[method] != protocol.ClassSession {
		// The session layer carries only the session calls' messages: a
		// call of another class goes as sign's arguments under its own
		// name, which the HSM must refuse by that name alone.
		call, err = protocol.NewSessionCall(to, protocol.CallSign, protocol.SignArgs{})
		call.Method = method
	}
	if err != nil {
		t.Fatal(err)
	}
	body, err := protocol.EncodeSessionCall(call)
	if err != nil {
		t.Fatal(err)
	}
	seq, err := authsession.LaneSeq(lane, n)
	if err != nil {
		t.Fatal(err)
	}
	env, err := authsession.Seal(sk, authsession.ToHSM, seq, ekt, body)
	if err != nil {
		t.Fatal(err)
	}
	return env
}

// answer opens an HSM's answer and returns the command's own error.
func answer(t *testing.T, sk [32]byte, ekt []byte, env authsession.Envelope) error {
	t.Helper()
	plain, err := authsession.Open(sk, authsession.ToClient, ekt, env)
	if err != nil {
		t.Fatalf("the answer does not open: %v", err)
	}
	res, err := protocol.DecodeSessionResult(plain)
	if err != nil {
		t.Fatal(err)
	}
	if res.Code != "" {
		return &protocol.Error{Code: res.Code, Msg: res.Error}
	}
	return nil
}

func TestEnvelopeRefusals(t *testing.T) {
	r := newEnvelopeRig(t)
	h1, h2 := r.hsms[0], r.hsms[1]
	sk, ekt := r.keys(t, r.cu)
	sign := SignRequest{Ref: r.ref, Mechanism: MechECDSA, Hash: crypto.SHA256, Data: []byte("x")}
	domain := *h1.domain
	claims := func(role string, exp time.Time) authsession.Claims {
		return authsession.Claims{SessionID: r.cu.Session, User: "cu1", Role: role, Expires: exp, Issued: exp.Add(-time.Hour)}
	}
	issue := func(d authsession.DomainKey, c authsession.Claims) []byte {
		b, err := authsession.IssueEKT(d, sk, c)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	foreign, _ := authsession.NewDomainKey()

	// The baseline: a well-formed envelope is served.
	good := sealCall(t, sk, ekt, r.lane, 10, "hsm-1", protocol.CallSign, protocol.SignArgs{Req: sign})
	resp, err := h1.Enveloped(good)
	if err != nil || answer(t, sk, ekt, resp) != nil {
		t.Fatalf("a good envelope: %v", err)
	}

	altered := sealCall(t, sk, ekt, r.lane, 20, "hsm-1", protocol.CallSign, protocol.SignArgs{Req: sign})
	altered.Body[len(altered.Body)-1] ^= 1

	for _, tt := range []struct {
		name string
		to   *hsm
		env  authsession.Envelope
		is   error
		want string
	}{
		{"replayed", h1, good, ErrPermission, "replayed envelope refused"},
		{"reordered", h1, sealCall(t, sk, ekt, r.lane, 9, "hsm-1", protocol.CallSign, protocol.SignArgs{Req: sign}), ErrPermission, "out-of-order envelope refused"},
		{"redirected to another HSM", h2, sealCall(t, sk, ekt, r.lane, 11, "hsm-1", protocol.CallSign, protocol.SignArgs{Req: sign}), ErrPermission, "sealed for hsm-1, not hsm-2"},
		{"altered ciphertext", h1, altered, ErrPermission, "does not decrypt"},
		{"token of another domain", h1, sealCall(t, sk, issue(foreign, claims("crypto-user", time.Now().Add(time.Hour))), r.lane, 30, "hsm-1", protocol.CallSign, protocol.SignArgs{Req: sign}), ErrPermission, "not issued by this cluster's domain"},
		{"expired token", h1, sealCall(t, sk, issue(domain, claims("crypto-user", time.Now().Add(-time.Minute))), r.lane, 31, "hsm-1", protocol.CallSign, protocol.SignArgs{Req: sign}), ErrSessionExpired, "expired"},
		{"login not finished", h1, sealCall(t, sk, issue(domain, claims(provisionalRole, time.Now().Add(time.Hour))), r.lane, 32, "hsm-1", protocol.CallSign, protocol.SignArgs{Req: sign}), ErrPermission, "has not finished logging in"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tt.to.Enveloped(tt.env)
			if !errors.Is(err, tt.is) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %v, want %v saying %q", err, tt.is, tt.want)
			}
		})
	}
}

// The HSM decides access from the session's own user and role: a client
// that skips the library's checks gains nothing.
func TestHSMChecksAccessInsideTheSession(t *testing.T) {
	r := newEnvelopeRig(t)
	h1 := r.hsms[0]
	sign := SignRequest{Ref: r.ref, Mechanism: MechECDSA, Hash: crypto.SHA256, Data: []byte("x")}
	for i, tt := range []struct {
		name   string
		c      Caller
		method string
		args   any
		is     error
	}{
		{"another user's key", r.cu2, protocol.CallSign, protocol.SignArgs{Req: sign}, ErrKeyNotFound},
		{"an admin uses a key", r.admin, protocol.CallSign, protocol.SignArgs{Req: sign}, ErrKeyNotFound},
		{"another user's key's public half", r.cu2, protocol.CallPublicKey, r.ref, ErrKeyNotFound},
		{"delete another user's key", r.cu2, protocol.CallDeleteKey, r.ref, ErrKeyNotFound},
		{"change another user's key", r.cu2, protocol.CallKeyChange, protocol.KeyChangeArgs{Ref: r.ref, Op: protocol.OpSetAttribute, Name: "label", Value: "x"}, ErrPermission},
		{"an admin makes a key", r.admin, protocol.CallGenerateKey, protocol.GenerateArgs{Spec: KeySpec{Type: TypeAES, Label: "a", LengthBytes: 16}, Ref: 78}, ErrPermission},
		{"make a key over an existing reference", r.cu2, protocol.CallGenerateKey, protocol.GenerateArgs{Spec: KeySpec{Type: TypeAES, Label: "a", LengthBytes: 16}, Ref: r.ref}, ErrInvalid},
		{"a crypto user makes a user", r.cu, protocol.CallCreateUser, protocol.UserArgs{Username: "evil", Role: RoleAdmin, Password: "evilpass1"}, ErrPermission},
		{"a crypto user resets the admin's password", r.cu, protocol.CallSetPassword, protocol.UserArgs{Username: "admin", Role: RoleAdmin, Password: "evilpass1"}, ErrPermission},
		{"a crypto user deletes a user", r.cu, protocol.CallRemoveUser, protocol.UserArgs{Username: "cu2", Role: RoleCryptoUser}, ErrPermission},
		{"end another session's keys", r.cu2, protocol.CallDestroySession, r.cu.Session, ErrPermission},
		{"a peer call in a session", r.cu, protocol.CallPropose, prop(t, opPutUser, &userRecord{Username: "cu1", Role: RoleAdmin, Updated: time.Now().UnixNano()}), ErrInvalid},
	} {
		t.Run(tt.name, func(t *testing.T) {
			sk, ekt := r.keys(t, tt.c)
			resp, err := h1.Enveloped(r.seal(t, tt.c, "hsm-1", tt.method, tt.args, uint64(100+i)))
			if err != nil {
				t.Fatal(err)
			}
			if err := answer(t, sk, ekt, resp); !errors.Is(err, tt.is) {
				t.Errorf("got %v, want %v", err, tt.is)
			}
		})
	}
	// Nothing changed: cu1 is still a crypto user, cu1's key still there.
	if u, _ := h1.UserState(); u["cu1"].Role != RoleCryptoUser {
		t.Error("cu1's role changed")
	}
	if _, err := h1.KeyMeta(r.ref); err != nil {
		t.Error(err)
	}
}

// A bare connection (a cluster client certificate, no login) cannot use a
// key: sign, verify and get-public-key need a session envelope.
func TestBareConnectionCannotUseKeys(t *testing.T) {
	e, err := OpenEmbedded(Options{ID: "s", HSMs: 1}) // over the TLS pipe
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	_, cu := activate(t, e)
	ref := signer(t, e, cu)
	err = directDoor(devices(e)[0])(protocol.CallSign, protocol.SignArgs{Req: SignRequest{Ref: ref, Mechanism: MechECDSA, Hash: crypto.SHA256, Data: []byte("x")}}, nil)
	if !errors.Is(err, ErrPermission) || !strings.Contains(err.Error(), "needs a logged-in session") {
		t.Errorf("bare sign: %v", err)
	}
	if err := directDoor(devices(e)[0])(protocol.CallPublicKey, ref, nil); !errors.Is(err, ErrPermission) {
		t.Errorf("bare get-public-key: %v", err)
	}
	if err := signOnce(e, cu, ref, 0); err != nil {
		t.Errorf("the same sign in the session: %v", err)
	}
}

// After logout an HSM refuses the session's token, even one that never
// served it (it would otherwise adopt it with a fresh replay window).
func TestLoggedOutSessionStaysDead(t *testing.T) {
	r := newEnvelopeRig(t)
	tap, err := r.e.Inspect().Session(r.cu)
	if err != nil {
		t.Fatal(err)
	}
	sk, ekt := tap.Keys()
	sign := SignRequest{Ref: r.ref, Mechanism: MechECDSA, Hash: crypto.SHA256, Data: []byte("x")}
	recorded := sealCall(t, sk, ekt, r.lane, 500, "hsm-2", protocol.CallSign, protocol.SignArgs{Req: sign})
	if err := r.e.Logout(context.Background(), r.cu); err != nil {
		t.Fatal(err)
	}
	for _, h := range r.hsms {
		env := recorded
		if h.id == "hsm-1" {
			env = sealCall(t, sk, ekt, r.lane, 501, "hsm-1", protocol.CallSign, protocol.SignArgs{Req: sign})
		}
		if _, err := h.Enveloped(env); !errors.Is(err, ErrPermission) || !strings.Contains(err.Error(), "logged out") {
			t.Errorf("%s after logout: %v", h.id, err)
		}
	}
	if sk2, _ := tap.Keys(); sk2 != ([32]byte{}) {
		t.Error("the client kept the session key after logout")
	}
}

// A key list larger than one frame travels in pages, in order, and loses
// nothing (a snapshot of 4,500 keys is three pages).
func TestKeyListPages(t *testing.T) {
	e, err := OpenEmbedded(Options{ID: "s", HSMs: 2}) // over the TLS pipes
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	e.PauseSync()
	_, cu := activate(t, e)
	const n = 2*protocol.SnapshotPageSize + 500
	recs := aesRecords(n, "cu1")
	for _, h := range inProcessHSMs(e) {
		if err := h.PutKeys(recs); err != nil {
			t.Fatal(err)
		}
	}
	keys, err := e.Keys(context.Background(), cu, Filter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != n {
		t.Fatalf("listed %d keys, want %d", len(keys), n)
	}
	for i, k := range keys {
		if i > 0 && keys[i-1].Ref >= k.Ref || k.Info.ClusterCoverage != CoverageFull {
			t.Fatalf("key %d: %s after %s, coverage %s", i, k.Ref, keys[max(i-1, 0)].Ref, k.Info.ClusterCoverage)
		}
	}
}
