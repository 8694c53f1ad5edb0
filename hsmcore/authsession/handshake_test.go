package authsession

import (
	"bytes"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestHandshake(t *testing.T) {
	domain := mustDomain(t)
	want := testClaims()
	want.SessionID, want.Domain = "caller-set-and-ignored", "ignored-too"

	h, d1, err := NewHello("laptop-7", clientIdentity)
	if err != nil {
		t.Fatal(err)
	}
	r, hsmSK, claims, err := Accept(h, clientIdentity.Public(), "hsm-a", hsmIdentity, domain, want)
	if err != nil {
		t.Fatal(err)
	}
	clientSK, err := Finish(h, d1, r, hsmIdentity.Public())
	if err != nil {
		t.Fatal(err)
	}
	if hsmSK != clientSK {
		t.Fatal("client and HSM derived different session keys")
	}
	if hsmSK == [32]byte{} {
		t.Fatal("session key is zero")
	}
	if len(claims.SessionID) != 32 || claims.SessionID == want.SessionID {
		t.Errorf("session id %q: want 32 hex characters made by Accept", claims.SessionID)
	}
	if claims.Domain != domain.ID() {
		t.Errorf("claims domain %q, want %q", claims.Domain, domain.ID())
	}
	if claims.User != want.User || claims.Role != want.Role || !claims.Expires.Equal(want.Expires.Truncate(time.Second)) {
		t.Errorf("claims %+v do not match request %+v", claims, want)
	}

	// A second HSM of the cluster: same domain key, nothing else shared.
	secondHSM := domain
	sk2, claims2, err := OpenEKT(secondHSM, r.EKT, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if sk2 != clientSK || claims2 != claims {
		t.Fatalf("second HSM got claims %+v, want %+v (and the same SK)", claims2, claims)
	}

	// One command and its answer.
	cmd, err := Seal(clientSK, ToHSM, 1, r.EKT, []byte("key list"))
	if err != nil {
		t.Fatal(err)
	}
	cmd = jsonRoundTrip(t, cmd)
	skAtHSM, _, err := OpenEKT(secondHSM, cmd.EKT, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	pt, err := Open(skAtHSM, ToHSM, cmd.EKT, cmd)
	if err != nil {
		t.Fatal(err)
	}
	var w Window
	if err := w.Accept(cmd.Seq); err != nil {
		t.Fatal(err)
	}
	if string(pt) != "key list" {
		t.Fatalf("HSM read %q", pt)
	}
	ans, err := Seal(skAtHSM, ToClient, 1, cmd.EKT, []byte("3 keys"))
	if err != nil {
		t.Fatal(err)
	}
	if ans.EKT != nil {
		t.Error("an answer carries the EKT")
	}
	ans = jsonRoundTrip(t, ans)
	pt, err = Open(clientSK, ToClient, r.EKT, ans)
	if err != nil {
		t.Fatal(err)
	}
	if string(pt) != "3 keys" {
		t.Fatalf("client read %q", pt)
	}
}

// TestHandshakeOverJSON runs the handshake with every message passing
// through encoding/json, as it would on the wire.
func TestHandshakeOverJSON(t *testing.T) {
	domain := mustDomain(t)
	h, d1, err := NewHello("laptop-7", clientIdentity)
	if err != nil {
		t.Fatal(err)
	}
	r, sk, _, err := Accept(jsonRoundTrip(t, h), clientIdentity.Public(), "hsm-a", hsmIdentity, domain, testClaims())
	if err != nil {
		t.Fatal(err)
	}
	csk, err := Finish(h, d1, jsonRoundTrip(t, r), hsmIdentity.Public())
	if err != nil {
		t.Fatal(err)
	}
	if csk != sk {
		t.Fatal("session keys differ")
	}
}

func jsonRoundTrip[T any](t *testing.T, v T) T {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var out T
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestSessionsAreIndependent(t *testing.T) {
	domain := mustDomain(t)
	a, b := handshake(t, domain), handshake(t, domain)
	if a.hsmSK == b.hsmSK {
		t.Error("two sessions share a session key")
	}
	if a.claims.SessionID == b.claims.SessionID {
		t.Error("two sessions share a session id")
	}
	if bytes.Equal(a.hello.Q1, b.hello.Q1) || bytes.Equal(a.reply.Q2, b.reply.Q2) {
		t.Error("ephemeral ECDH keys were reused")
	}
}

// otherPoint returns a valid P-384 point that is not in the handshake.
func otherPoint(t *testing.T) []byte {
	t.Helper()
	k, err := ecdh.P384().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k.PublicKey().Bytes()
}

func TestAcceptRefusesForgedHello(t *testing.T) {
	domain := mustDomain(t)
	tests := []struct {
		name  string
		forge func(h *Hello)
	}{
		{"signed by another identity", func(h *Hello) {
			forged, _, err := NewHello(h.Client, otherIdentity)
			if err != nil {
				t.Fatal(err)
			}
			*h = *forged
		}},
		{"Q1 swapped after signing", func(h *Hello) { h.Q1 = otherPoint(t) }},
		{"client id changed after signing", func(h *Hello) { h.Client = "laptop-8" }},
		{"signature bit flipped", func(h *Hello) { h.Sig = flip(h.Sig, len(h.Sig)-1) }},
		{"signature truncated", func(h *Hello) { h.Sig = h.Sig[:len(h.Sig)/2] }},
		{"no signature", func(h *Hello) { h.Sig = nil }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, _, err := NewHello("laptop-7", clientIdentity)
			if err != nil {
				t.Fatal(err)
			}
			tt.forge(h)
			r, sk, c, err := Accept(h, clientIdentity.Public(), "hsm-a", hsmIdentity, domain, testClaims())
			if !errors.Is(err, ErrClientSignature) {
				t.Fatalf("got %v, want ErrClientSignature", err)
			}
			if r != nil || sk != [32]byte{} || c != (Claims{}) {
				t.Error("a refused Accept returned a session")
			}
			checkMessage(t, err)
			if !strings.Contains(err.Error(), Fingerprint(clientIdentity.Public())) {
				t.Errorf("message %q does not name the registered key", err)
			}
		})
	}
}

func TestFinishRefusesForgedReply(t *testing.T) {
	domain := mustDomain(t)
	tests := []struct {
		name  string
		forge func(s session) *Reply
	}{
		{"man in the middle answers with his own identity", func(s session) *Reply {
			// He sees the hello, accepts it himself, and signs with his key.
			r, _, _, err := Accept(s.hello, clientIdentity.Public(), "hsm-a", otherIdentity, mustDomain(t), testClaims())
			if err != nil {
				t.Fatal(err)
			}
			return r
		}},
		{"Q2 swapped", func(s session) *Reply { r := *s.reply; r.Q2 = otherPoint(t); return &r }},
		{"ESK swapped", func(s session) *Reply { r := *s.reply; r.ESK = flip(r.ESK, 20); return &r }},
		{"EKT swapped", func(s session) *Reply { r := *s.reply; r.EKT = handshake(t, domain).reply.EKT; return &r }},
		{"HSM id changed", func(s session) *Reply { r := *s.reply; r.HSM = "hsm-b"; return &r }},
		{"reply to another hello", func(s session) *Reply { return handshake(t, domain).reply }},
		{"signature truncated", func(s session) *Reply { r := *s.reply; r.Sig = r.Sig[:8]; return &r }},
		{"no signature", func(s session) *Reply { r := *s.reply; r.Sig = nil; return &r }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := handshake(t, domain)
			sk, err := Finish(s.hello, s.d1, tt.forge(s), hsmIdentity.Public())
			if !errors.Is(err, ErrHSMSignature) {
				t.Fatalf("got %v, want ErrHSMSignature", err)
			}
			if sk != [32]byte{} {
				t.Error("a refused Finish returned a session key")
			}
			checkMessage(t, err)
			if !strings.Contains(err.Error(), "man in the middle") {
				t.Errorf("message %q does not warn of a man in the middle", err)
			}
		})
	}
}

func TestAcceptRefusesBadInput(t *testing.T) {
	domain := mustDomain(t)
	p256, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	good, _, err := NewHello("laptop-7", clientIdentity)
	if err != nil {
		t.Fatal(err)
	}
	offCurve := flip(good.Q1, pointLen-1)
	compressed := append([]byte{2 + good.Q1[pointLen-1]&1}, good.Q1[1:49]...)
	type args struct {
		h         *Hello
		clientPub *ecdsa.PublicKey
		hsm       string
		hsmID     *Identity
		claims    Claims
	}
	base := func() args {
		h := *good
		return args{&h, clientIdentity.Public(), "hsm-a", hsmIdentity, testClaims()}
	}
	tests := []struct {
		name   string
		modify func(a *args)
		want   string
	}{
		{"no hello", func(a *args) { a.h = nil }, "no hello"},
		{"empty client id", func(a *args) { a.h.Client = "" }, "client id is empty"},
		{"long client id", func(a *args) { a.h.Client = strings.Repeat("x", 129) }, "at most 128"},
		{"control character in client id", func(a *args) { a.h.Client = "lap\ntop" }, "non-printable"},
		{"invalid UTF-8 client id", func(a *args) { a.h.Client = "lap\xfftop" }, "UTF-8"},
		{"no Q1", func(a *args) { a.h.Q1 = nil }, "0 bytes"},
		{"Q1 truncated", func(a *args) { a.h.Q1 = a.h.Q1[:96] }, "96 bytes"},
		{"Q1 compressed", func(a *args) { a.h.Q1 = compressed }, "49 bytes"},
		{"Q1 off the curve", func(a *args) { a.h.Q1 = offCurve }, "not a point"},
		{"no client key", func(a *args) { a.clientPub = nil }, "no public key"},
		{"P-256 client key", func(a *args) { a.clientPub = &p256.PublicKey }, "P-256"},
		{"no HSM id", func(a *args) { a.hsm = "" }, "HSM id is empty"},
		{"no HSM identity", func(a *args) { a.hsmID = nil }, "no HSM identity"},
		{"already expired", func(a *args) { a.claims.Expires = time.Now().Add(-time.Second) }, "has passed"},
		{"no expiry", func(a *args) { a.claims.Expires = time.Time{} }, "no expiry"},
		{"no user", func(a *args) { a.claims.User = "" }, "user is empty"},
		{"no role", func(a *args) { a.claims.Role = "" }, "role is empty"},
		{"long role", func(a *args) { a.claims.Role = strings.Repeat("r", 200) }, "200 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := base()
			tt.modify(&a)
			r, _, _, err := Accept(a.h, a.clientPub, a.hsm, a.hsmID, domain, a.claims)
			if err == nil || r != nil {
				t.Fatal("accepted")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not say %q", err, tt.want)
			}
			checkMessage(t, err)
		})
	}
}

func TestFinishRefusesBadInput(t *testing.T) {
	domain := mustDomain(t)
	s := handshake(t, domain)
	x25519, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	otherD1, err := ecdh.P384().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	type args struct {
		h      *Hello
		d1     *ecdh.PrivateKey
		r      *Reply
		hsmPub *ecdsa.PublicKey
	}
	tests := []struct {
		name   string
		modify func(a *args)
		want   string
	}{
		{"no hello", func(a *args) { a.h = nil }, "no hello"},
		{"no d1", func(a *args) { a.d1 = nil }, "ECDH private key"},
		{"X25519 d1", func(a *args) { a.d1 = x25519 }, "ECDH private key"},
		{"d1 of another hello", func(a *args) { a.d1 = otherD1 }, "not the one"},
		{"no reply", func(a *args) { a.r = nil }, "no reply"},
		{"no HSM key", func(a *args) { a.hsmPub = nil }, "no public key"},
		{"no HSM id", func(a *args) { a.r.HSM = "" }, "HSM id is empty"},
		{"Q2 truncated", func(a *args) { a.r.Q2 = a.r.Q2[:50] }, "50 bytes"},
		{"Q2 off the curve", func(a *args) { a.r.Q2 = flip(a.r.Q2, 60) }, "not a point"},
		{"ESK truncated", func(a *args) { a.r.ESK = a.r.ESK[:59] }, "59 bytes"},
		{"ESK too long", func(a *args) { a.r.ESK = append(a.r.ESK, 0) }, "61 bytes"},
		{"no EKT", func(a *args) { a.r.EKT = nil }, "EKT"},
		{"huge EKT", func(a *args) { a.r.EKT = make([]byte, 5000) }, "5000 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := *s.reply
			a := args{s.hello, s.d1, &r, hsmIdentity.Public()}
			tt.modify(&a)
			sk, err := Finish(a.h, a.d1, a.r, a.hsmPub)
			if err == nil || sk != [32]byte{} {
				t.Fatal("finished")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not say %q", err, tt.want)
			}
			checkMessage(t, err)
		})
	}
}

func TestNewHelloRefusesBadInput(t *testing.T) {
	for _, tt := range []struct {
		name   string
		client string
		id     *Identity
	}{
		{"empty client", "", clientIdentity},
		{"long client", strings.Repeat("c", 129), clientIdentity},
		{"no identity", "laptop-7", nil},
		{"empty identity", "laptop-7", &Identity{}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if h, d1, err := NewHello(tt.client, tt.id); err == nil || h != nil || d1 != nil {
				t.Fatalf("NewHello(%q) = %v, %v, %v", tt.client, h, d1, err)
			}
		})
	}
}

// TestTruncatedHandshake cuts every handshake field at every length: each
// must be refused, and nothing may panic.
func TestTruncatedHandshake(t *testing.T) {
	domain := mustDomain(t)
	s := handshake(t, domain)
	cut := func(b []byte, n int) []byte { return append([]byte(nil), b[:n]...) }
	helloFields := map[string]func(h *Hello, n int){
		"Q1":  func(h *Hello, n int) { h.Q1 = cut(h.Q1, n) },
		"Sig": func(h *Hello, n int) { h.Sig = cut(h.Sig, n) },
	}
	for name, set := range helloFields {
		full := map[string]int{"Q1": len(s.hello.Q1), "Sig": len(s.hello.Sig)}[name]
		for n := range full {
			h := *s.hello
			set(&h, n)
			if _, _, _, err := Accept(&h, clientIdentity.Public(), "hsm-a", hsmIdentity, domain, testClaims()); err == nil {
				t.Fatalf("hello with %s cut to %d bytes accepted", name, n)
			}
		}
	}
	replyFields := map[string]func(r *Reply, n int) int{
		"Q2":  func(r *Reply, n int) int { l := len(r.Q2); r.Q2 = cut(r.Q2, min(n, l)); return l },
		"ESK": func(r *Reply, n int) int { l := len(r.ESK); r.ESK = cut(r.ESK, min(n, l)); return l },
		"EKT": func(r *Reply, n int) int { l := len(r.EKT); r.EKT = cut(r.EKT, min(n, l)); return l },
		"Sig": func(r *Reply, n int) int { l := len(r.Sig); r.Sig = cut(r.Sig, min(n, l)); return l },
	}
	for name, set := range replyFields {
		for n := 0; ; n++ {
			r := *s.reply
			if full := set(&r, n); n >= full {
				break
			}
			if _, err := Finish(s.hello, s.d1, &r, hsmIdentity.Public()); err == nil {
				t.Fatalf("reply with %s cut to %d bytes accepted", name, n)
			}
		}
	}
}
