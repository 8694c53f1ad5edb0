package authsession

import (
	"crypto/ecdh"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"
)

// Long-term identities, made once per test binary and shared by the tests.
var (
	clientIdentity = mustIdentity()
	hsmIdentity    = mustIdentity()
	otherIdentity  = mustIdentity() // a stranger: another client, or a man in the middle
)

func mustIdentity() *Identity {
	id, err := NewIdentity()
	if err != nil {
		panic(err)
	}
	return id
}

func mustDomain(t testing.TB) DomainKey {
	t.Helper()
	k, err := NewDomainKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func testClaims() Claims {
	return Claims{User: "alice", Role: "crypto-officer", Expires: time.Now().Add(time.Hour),
		Issued: time.Now().UTC().Truncate(time.Second)}
}

// session is the outcome of a successful handshake, from both ends.
type session struct {
	hello    *Hello
	d1       *ecdh.PrivateKey
	reply    *Reply
	hsmSK    [32]byte
	clientSK [32]byte
	claims   Claims
}

func handshake(t testing.TB, domain DomainKey) session {
	t.Helper()
	h, d1, err := NewHello("laptop-7", clientIdentity)
	if err != nil {
		t.Fatal(err)
	}
	r, hsk, c, err := Accept(h, clientIdentity.Public(), "hsm-a", hsmIdentity, domain, testClaims())
	if err != nil {
		t.Fatal(err)
	}
	csk, err := Finish(h, d1, r, hsmIdentity.Public())
	if err != nil {
		t.Fatal(err)
	}
	return session{hello: h, d1: d1, reply: r, hsmSK: hsk, clientSK: csk, claims: c}
}

// flip returns a copy of b with bit 0 of byte i inverted.
func flip(b []byte, i int) []byte {
	c := append([]byte(nil), b...)
	c[i] ^= 1
	return c
}

// checkMessage fails unless err's text is readable: non-empty and free of
// raw bytes.
func checkMessage(t *testing.T, err error) {
	t.Helper()
	msg := err.Error()
	if !utf8.ValidString(msg) {
		t.Errorf("error message is not UTF-8: %q", msg)
	}
	if len(msg) < 10 {
		t.Errorf("error message too terse: %q", msg)
	}
	for _, r := range msg {
		if !unicode.IsPrint(r) {
			t.Errorf("error message is not printable text: %q", msg)
			break
		}
	}
}
