package authsession

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestOpenEKT(t *testing.T) {
	domain := mustDomain(t)
	s := handshake(t, domain)
	ekt, exp := s.reply.EKT, s.claims.Expires
	foreign := mustDomain(t)

	withVersion := func(v byte) []byte { b := append([]byte(nil), ekt...); b[0] = v; return b }
	tests := []struct {
		name   string
		domain DomainKey
		ekt    []byte
		now    time.Time
		is     error  // sentinel, or nil for a plain error
		want   string // in the message; "" for success
	}{
		{"valid", domain, ekt, time.Now(), nil, ""},
		{"a second before expiry", domain, ekt, exp.Add(-time.Second), nil, ""},
		{"at expiry", domain, ekt, exp, ErrExpired, "expired at " + exp.Format(time.RFC3339)},
		{"an hour after expiry", domain, ekt, exp.Add(time.Hour), ErrExpired, "1h0m0s ago"},
		{"another cluster's domain key", foreign, ekt, time.Now(), ErrForeignDomain, "not issued by this cluster's domain (" + foreign.ID() + "), or it was altered"},
		{"zero domain key", DomainKey{}, ekt, time.Now(), ErrForeignDomain, "or it was altered"},
		{"version 2", domain, withVersion(2), time.Now(), nil, "format version 2; this HSM reads version 1 only"},
		{"version 0", domain, withVersion(0), time.Now(), nil, "format version 0"},
		{"empty", domain, nil, time.Now(), nil, "no session token"},
		{"version byte only", domain, ekt[:1], time.Now(), nil, "truncated"},
		{"nonce and tag only", domain, ekt[:29], time.Now(), ErrForeignDomain, "altered"},
		{"cut short", domain, ekt[:len(ekt)-1], time.Now(), ErrForeignDomain, "altered"},
		{"extra byte", domain, append(append([]byte(nil), ekt...), 0), time.Now(), ErrForeignDomain, "altered"},
		{"too long", domain, append(append([]byte(nil), ekt...), make([]byte, maxEKT)...), time.Now(), nil, "at most 1024"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sk, c, err := OpenEKT(tt.domain, tt.ekt, tt.now)
			if tt.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				if sk != s.hsmSK || c != s.claims {
					t.Fatalf("got claims %+v, want %+v (and the same SK)", c, s.claims)
				}
				return
			}
			if err == nil {
				t.Fatal("opened")
			}
			if sk != [32]byte{} || c != (Claims{}) {
				t.Error("a refused OpenEKT returned a key or claims")
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("got %v, want %v", err, tt.is)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not say %q", err, tt.want)
			}
			checkMessage(t, err)
		})
	}
}

// TestEKTEveryBitMatters flips each bit of an EKT after the version byte.
func TestEKTEveryBitMatters(t *testing.T) {
	domain := mustDomain(t)
	ekt := handshake(t, domain).reply.EKT
	for i := 1; i < len(ekt); i++ {
		for bit := range 8 {
			b := append([]byte(nil), ekt...)
			b[i] ^= 1 << bit
			if _, _, err := OpenEKT(domain, b, time.Now()); !errors.Is(err, ErrForeignDomain) {
				t.Fatalf("byte %d bit %d flipped: got %v, want ErrForeignDomain", i, bit, err)
			}
		}
	}
}

// TestEKTContents covers what only a holder of the domain key could
// produce: a token naming another domain, or a malformed plaintext.
func TestEKTContents(t *testing.T) {
	domain, other := mustDomain(t), mustDomain(t)
	claims := testClaims()
	claims.SessionID = strings.Repeat("ab", 16)
	claims.Expires = claims.Expires.Truncate(time.Second).UTC()
	claims.Domain = other.ID()
	var sk [32]byte
	sk[0] = 1

	ekt, err := sealEKT(domain, sk, claims)
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = OpenEKT(domain, ekt, time.Now())
	if !errors.Is(err, ErrForeignDomain) || !strings.Contains(err.Error(), "names domain "+other.ID()) {
		t.Errorf("token naming another domain: got %v", err)
	}

	claims.Domain = domain.ID()
	good, err := sealEKT(domain, sk, claims)
	if err != nil {
		t.Fatal(err)
	}
	gotSK, got, err := OpenEKT(domain, good, time.Now())
	if err != nil || gotSK != sk || got != claims {
		t.Fatalf("round trip: %v, %+v, want %+v", err, got, claims)
	}

	// Plaintexts sealed by hand under the right key and AAD.
	valid, err := open(domain[:], good[1:], ektAAD(ektVersion, domain.ID()))
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name string
		pt   []byte
		want string
	}{
		{"empty", nil, "too short"},
		{"key only", valid[:32], "too short"},
		{"cut in a field", valid[:len(valid)-3], "truncated"},
		{"cut before a length", valid[:48], "truncated"},
		{"left over", append(append([]byte(nil), valid...), 9), "1 bytes left over"},
		{"bad session id", func() []byte {
			b := append([]byte(nil), valid...)
			b[50] = 'z' // first character of the session id
			return b
		}(), "not hex"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ct, err := seal(domain[:], tt.pt, ektAAD(ektVersion, domain.ID()))
			if err != nil {
				t.Fatal(err)
			}
			_, _, err = OpenEKT(domain, append([]byte{ektVersion}, ct...), time.Now())
			if err == nil || !strings.Contains(err.Error(), "malformed") || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %v, want a malformed-token error saying %q", err, tt.want)
			}
		})
	}
}

func TestDomainKey(t *testing.T) {
	a, b := mustDomain(t), mustDomain(t)
	if a == b {
		t.Fatal("two domain keys are equal")
	}
	id := a.ID()
	if len(id) != 16 || id == b.ID() || id != a.ID() { // stable across calls
		t.Errorf("IDs %q and %q", a.ID(), b.ID())
	}
	// Pinned: the ID is part of every EKT, so it must never change.
	if got := (DomainKey{}).ID(); got != zeroDomainID {
		t.Errorf("ID of the zero key = %s, want %s", got, zeroDomainID)
	}
}

// zeroDomainID is the hex of the first 8 bytes of
// SHA-256("hsmsh-domain-id" ‖ 32 zero bytes), computed independently.
const zeroDomainID = "3df0422db1f0a9aa"

func TestIssueEKT(t *testing.T) {
	domain := mustDomain(t)
	var sk [32]byte
	sk[0] = 7
	exp := time.Now().Add(time.Hour)
	ekt, err := IssueEKT(domain, sk, Claims{SessionID: "00112233445566778899aabbccddeeff", User: "alice", Role: "crypto-user", Expires: exp, Issued: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	got, c, err := OpenEKT(domain, ekt, time.Now())
	if err != nil || got != sk || c.User != "alice" || c.Role != "crypto-user" || c.Domain != domain.ID() {
		t.Fatalf("OpenEKT: %v %+v", err, c)
	}
	if _, err := IssueEKT(domain, sk, Claims{User: "alice", Role: "x", Expires: exp, Issued: time.Now()}); err == nil {
		t.Error("an EKT without a session id was issued")
	}
	if _, err := IssueEKT(domain, sk, Claims{SessionID: "00112233445566778899aabbccddeeff", User: "alice", Role: "x", Expires: exp}); err == nil {
		t.Error("an EKT without an issue time was issued")
	}
}
