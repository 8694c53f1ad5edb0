package hsm

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hsmsh/hsmsh/hsmcore/protocol"
	"github.com/hsmsh/hsmsh/hsmcore/quorum"
)

// approverSet is a cluster with three admins whose quorum keys are
// registered, and M = 2 for the user and quorum services.
type approverSet struct {
	e      *Embedded
	admins map[string]Caller
	keys   map[string]crypto.Signer
}

func newApproverSet(t *testing.T) *approverSet {
	t.Helper()
	e, err := OpenEmbedded(Options{ID: "q", HSMs: 3, Transport: TransportDirect, Durability: Durability{MinimumNodes: 1}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	e.PauseSync()
	return approversOn(t, e)
}

// approversOn sets up the approvers on a cluster, embedded or remote.
func approversOn(t *testing.T, e *Embedded) *approverSet {
	t.Helper()
	ctx := context.Background()
	admin, _ := activate(t, e)
	s := &approverSet{e: e, admins: map[string]Caller{"admin": admin}, keys: map[string]crypto.Signer{}}
	for _, n := range []string{"admin2", "admin3"} {
		if _, err := e.CreateUser(ctx, admin, n, RoleAdmin, n+"pass"); err != nil {
			t.Fatal(err)
		}
		c, err := e.Login(ctx, n, RoleAdmin, n+"pass")
		if err != nil {
			t.Fatal(err)
		}
		s.admins[n] = c
	}
	for n, c := range s.admins {
		s.keys[n] = registerApprover(t, e, n, c)
	}
	if err := e.SetQuorumValue(ctx, admin, quorum.ServiceQuorum, 2); err != nil {
		t.Fatal(err)
	}
	tok := s.token(t, quorum.ServiceQuorum, "", "admin2", "admin3")
	if err := e.SetQuorumValue(WithApproval(ctx, tok, "", ""), admin, quorum.ServiceUser, 2); err != nil {
		t.Fatal(err)
	}
	return s
}

// registerApprover makes user n (logged in as c) an approver: a fresh
// P-256 key, registered with a registration token it signed.
func registerApprover(t *testing.T, e *Embedded, n string, c Caller) crypto.Signer {
	t.Helper()
	ctx := context.Background()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	file, err := e.GenerateToken(ctx, c, quorum.ServiceRegistration, nil, "")
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKIXPublicKey(k.Public())
	pub := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	if err := e.RegisterQuorumKey(ctx, c, pub, signRegistration(t, file, k)); err != nil {
		t.Fatalf("register %s: %v", n, err)
	}
	return k
}

// signRegistration fills a registration file's signed field, as the
// approver does with openssl.
func signRegistration(t *testing.T, file []byte, k crypto.Signer) []byte {
	t.Helper()
	var rf quorum.RegistrationFile
	if err := json.Unmarshal(file, &rf); err != nil || len(rf.Tokens) != 1 {
		t.Fatalf("registration file: %v", err)
	}
	data, err := base64.StdEncoding.DecodeString(rf.Tokens[0].ApprovalData)
	if err != nil {
		t.Fatal(err)
	}
	sig, err := quorum.SignDigest(k, quorum.Digest(data))
	if err != nil {
		t.Fatal(err)
	}
	rf.Tokens[0].Signed = base64.StdEncoding.EncodeToString(sig)
	return rf.Marshal()
}

// token has admin generate a token for service and the signers sign it.
func (s *approverSet) token(t *testing.T, service, command string, signers ...string) []byte {
	t.Helper()
	file, err := s.e.GenerateToken(context.Background(), s.admins["admin"], service, nil, command)
	if err != nil {
		t.Fatal(err)
	}
	tf, _, err := quorum.ParseTokenFile(file)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range signers {
		if err := quorum.AddSignature(&tf, n, s.keys[n]); err != nil {
			t.Fatal(err)
		}
	}
	return tf.Marshal()
}

func TestQuorumApprovalOnTheHSM(t *testing.T) {
	s := newApproverSet(t)
	ctx := context.Background()
	admin := s.admins["admin"]
	mallory, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	forged := func() []byte {
		file := s.token(t, quorum.ServiceUser, "", "admin2")
		tf, _, _ := quorum.ParseTokenFile(file)
		quorum.AddSignature(&tf, "admin3", mallory) // in admin3's name, not with its key
		return tf.Marshal()
	}
	cases := []struct {
		name  string
		token []byte
		want  string
	}{
		{"no token", nil, "Quorum approval is required for this operation: it needs the approval of 2 admin"},
		{"one signature", s.token(t, quorum.ServiceUser, "", "admin2"), "2 admin"},
		{"the same approver twice", func() []byte {
			file := s.token(t, quorum.ServiceUser, "", "admin2")
			tf, _, _ := quorum.ParseTokenFile(file)
			sig := tf.Signatures[0]
			tf.Signatures = append(tf.Signatures, sig)
			return tf.Marshal()
		}(), "admin2"},
		{"a forged signature", forged(), "admin3"},
		{"another service's token", s.token(t, quorum.ServiceQuorum, "", "admin2", "admin3"), "approves the quorum service, not user"},
		{"bound to another command", s.token(t, quorum.ServiceUser, "user delete --username other --role crypto-user", "admin2", "admin3"), "approves the command"},
		{"not issued by this cluster", func() []byte {
			ad, _ := quorum.NewApprovalData(quorum.ServiceUser, "admin", "admin", "q", "", "", time.Now(), defaultTokenTTL)
			tf := quorum.NewTokenFile(ad)
			quorum.AddSignature(&tf, "admin2", s.keys["admin2"])
			quorum.AddSignature(&tf, "admin3", s.keys["admin3"])
			return tf.Marshal()
		}(), "not issued by this cluster"},
		{"garbage", []byte("{not json"), "invalid request"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := s.e.DeleteUser(WithApproval(ctx, tc.token, "user delete --username cu1 --role crypto-user", ""), admin, "cu1", RoleCryptoUser)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
	// Two distinct approvers: accepted, once, on any HSM.
	good := s.token(t, quorum.ServiceUser, "", "admin2", "admin3")
	if err := s.e.DeleteUser(WithApproval(ctx, good, "", ""), admin, "cu1", RoleCryptoUser); err != nil {
		t.Fatal(err)
	}
	// Replayed at once on every HSM, as an attacker with the file would:
	// the committed use refuses it everywhere, applied here or not yet.
	for _, h := range devices(s.e) {
		err := h.approveIn(Caller{Username: "admin", Role: RoleAdmin}, quorum.ServiceUser, 0, pathUserDelete, &protocol.Approval{Token: good})
		if err == nil || !strings.Contains(err.Error(), "already used") {
			t.Errorf("replay on %s: %v", h.id, err)
		}
	}
}

// A token used while an HSM was down is refused there too once
// server-side sync has run.
// A token used while an HSM was down is refused there the moment it is
// back: its use is a committed entry, and the HSM's attempt to spend it
// again is refused by the log, whether or not it has caught up yet. (With
// the old best-effort sync this was a window until the next pass.)
func TestQuorumTokenUsedWhileAnHSMWasDown(t *testing.T) {
	s := newApproverSet(t)
	ctx := context.Background()
	s.e.PauseSync()
	good := s.token(t, quorum.ServiceUser, "", "admin2", "admin3")
	if err := s.e.FailHSM("hsm-3", false); err != nil {
		t.Fatal(err)
	}
	if _, err := s.e.CreateUser(WithApproval(ctx, good, "", ""), s.admins["admin"], "cu9", RoleCryptoUser, "cu9pass1"); err != nil {
		t.Fatal(err)
	}
	if err := s.e.RecoverHSM("hsm-3"); err != nil {
		t.Fatal(err)
	}
	h3 := device(s.e, "hsm-3")
	// hsm-3 may have missed the user service's quorum value too: it
	// decides on the committed state, not on what it held when it failed.
	s.e.Inspect().RouteNextTo("hsm-3")
	_, err := s.e.CreateUser(WithApproval(ctx, good, "", ""), s.admins["admin"], "cu10", RoleCryptoUser, "cu10pass")
	if err == nil || !strings.Contains(err.Error(), "already used") {
		t.Fatalf("replay on hsm-3 just back: %v", err)
	}
	waitFor(t, "hsm-3 to learn the token was used", func() bool {
		_, err := h3.Approve(approvalRequest{Service: quorum.ServiceUser, Requester: "admin", Token: good})
		return err != nil && strings.Contains(err.Error(), "already used")
	})
	if !errors.Is(s.e.DeleteUser(ctx, s.admins["admin"], "cu9", RoleCryptoUser), quorum.ErrApprovalRequired) {
		t.Error("user delete without approval is not refused with ErrApprovalRequired")
	}
}

// An HSM holds at most 1024 live tokens; expired ones make room.
func TestQuorumTokenLimit(t *testing.T) {
	h, err := newHSM("hsm-1", nil)
	if err != nil {
		t.Fatal(err)
	}
	future := time.Now().Add(time.Hour)
	for i := range maxLiveTokens {
		if err := h.PutToken(&protocol.Token{Nonce: fmt.Sprint("n", i), Expires: future}); err != nil {
			t.Fatalf("token %d: %v", i, err)
		}
	}
	err = h.PutToken(&protocol.Token{Nonce: "one-too-many", Expires: future})
	if err == nil || !strings.Contains(err.Error(), "1024 live quorum tokens, the limit") {
		t.Fatalf("token 1025: %v", err)
	}
	h.mu.Lock()
	h.tokens["n0"].Expires = time.Now().Add(-time.Second) // one expires
	h.mu.Unlock()
	if err := h.PutToken(&protocol.Token{Nonce: "now-there-is-room", Expires: future}); err != nil {
		t.Fatal(err)
	}
	if _, ok := h.tokens["n0"]; ok {
		t.Error("the expired token was not purged")
	}
}

// Over the wire, the servers decide: registration, quorum values and an
// approval run on a remote cluster, and a used token is refused by every
// server's own HSM.
func TestRemoteQuorum(t *testing.T) {
	l := newLoopback(t, 3, time.Hour)
	r := l.client(Durability{MinimumNodes: 1})
	s := approversOn(t, r.Embedded)
	ctx := context.Background()
	good := s.token(t, quorum.ServiceUser, "", "admin2", "admin3")
	if err := s.e.DeleteUser(ctx, s.admins["admin"], "cu1", RoleCryptoUser); !errors.Is(err, quorum.ErrApprovalRequired) {
		t.Fatalf("without approval: %v", err)
	}
	if err := s.e.DeleteUser(WithApproval(ctx, good, "", ""), s.admins["admin"], "cu1", RoleCryptoUser); err != nil {
		t.Fatal(err)
	}
	for i, srv := range l.servers {
		_, err := srv.local.Approve(approvalRequest{Service: quorum.ServiceUser, Requester: "admin", Token: good})
		if err == nil || !strings.Contains(err.Error(), "already used") {
			t.Errorf("replay on server %d: %v", i+1, err)
		}
	}
}
