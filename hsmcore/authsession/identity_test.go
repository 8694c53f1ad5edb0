package authsession

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"regexp"
	"strings"
	"testing"
)

func TestIdentityRoundTrip(t *testing.T) {
	der, err := clientIdentity.MarshalPrivate()
	if err != nil {
		t.Fatal(err)
	}
	id, err := ParseIdentity(der)
	if err != nil {
		t.Fatal(err)
	}
	if !id.Public().Equal(clientIdentity.Public()) {
		t.Fatal("parsed identity has another public key")
	}
	// The parsed identity signs hellos the original's public key accepts.
	h, _, err := NewHello("laptop-7", id)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := Accept(h, clientIdentity.Public(), "hsm-a", hsmIdentity, mustDomain(t), testClaims()); err != nil {
		t.Fatal(err)
	}

	pub, err := MarshalPublic(id.Public())
	if err != nil {
		t.Fatal(err)
	}
	back, err := ParsePublic(pub)
	if err != nil {
		t.Fatal(err)
	}
	if !back.Equal(id.Public()) {
		t.Fatal("public key changed in a round trip")
	}
}

func TestIdentityRefusesOtherKeys(t *testing.T) {
	p256, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	_, edPriv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	p256DER, _ := x509.MarshalPKCS8PrivateKey(p256)
	edDER, _ := x509.MarshalPKCS8PrivateKey(edPriv)
	p256Pub, _ := x509.MarshalPKIXPublicKey(&p256.PublicKey)
	edPub, _ := x509.MarshalPKIXPublicKey(edPriv.Public())
	good, _ := clientIdentity.MarshalPrivate()
	goodPub, _ := MarshalPublic(clientIdentity.Public())

	for _, tt := range []struct {
		name string
		der  []byte
		want string
	}{
		{"P-256", p256DER, "P-256, want P-384"},
		{"Ed25519", edDER, "ed25519.PrivateKey"},
		{"empty", nil, "PKCS#8"},
		{"truncated", good[:len(good)-1], "PKCS#8"},
		{"a public key", goodPub, "PKCS#8"},
	} {
		t.Run("private "+tt.name, func(t *testing.T) {
			if _, err := ParseIdentity(tt.der); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want an error saying %q", err, tt.want)
			}
		})
	}
	for _, tt := range []struct {
		name string
		der  []byte
		want string
	}{
		{"P-256", p256Pub, "P-256, want P-384"},
		{"Ed25519", edPub, "ed25519.PublicKey"},
		{"empty", nil, "PKIX"},
		{"truncated", goodPub[:40], "PKIX"},
	} {
		t.Run("public "+tt.name, func(t *testing.T) {
			if _, err := ParsePublic(tt.der); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want an error saying %q", err, tt.want)
			}
		})
	}
	if _, err := MarshalPublic(&p256.PublicKey); err == nil {
		t.Error("MarshalPublic took a P-256 key")
	}
	if _, err := MarshalPublic(nil); err == nil {
		t.Error("MarshalPublic took nil")
	}
	if _, err := (&Identity{}).MarshalPrivate(); err == nil {
		t.Error("MarshalPrivate of an empty identity")
	}
}

func TestFingerprint(t *testing.T) {
	fp := Fingerprint(clientIdentity.Public())
	if !regexp.MustCompile(`^sha256:[0-9a-f]{16}$`).MatchString(fp) {
		t.Fatalf("fingerprint %q", fp)
	}
	if fp == Fingerprint(hsmIdentity.Public()) {
		t.Error("two keys share a fingerprint")
	}
	if got := Fingerprint(nil); got != "sha256:invalid" {
		t.Errorf("Fingerprint(nil) = %q", got)
	}
	if got := clientIdentity.String(); got != "identity "+fp {
		t.Errorf("String() = %q", got)
	}
}
