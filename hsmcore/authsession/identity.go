package authsession

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
)

// Identity is a long-term ECDSA P-384 signing key: an HSM's, or a client
// install's. Its String method shows the fingerprint only.
type Identity struct {
	k *ecdsa.PrivateKey
}

// NewIdentity generates a fresh identity key.
func NewIdentity() (*Identity, error) {
	k, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generating a P-384 identity key: %w", err)
	}
	return &Identity{k: k}, nil
}

// Public returns the identity's public key.
func (id *Identity) Public() *ecdsa.PublicKey { return &id.k.PublicKey }

// String names the identity by its fingerprint, so that printing an Identity
// by mistake never shows the private key.
func (id *Identity) String() string {
	if id == nil || id.k == nil {
		return "identity <nil>"
	}
	return "identity " + Fingerprint(id.Public())
}

// MarshalPrivate returns the private key as PKCS#8 DER.
func (id *Identity) MarshalPrivate() ([]byte, error) {
	if id == nil || id.k == nil {
		return nil, errors.New("marshalling an identity: no key")
	}
	der, err := x509.MarshalPKCS8PrivateKey(id.k)
	if err != nil {
		return nil, fmt.Errorf("marshalling an identity: %w", err)
	}
	return der, nil
}

// ParseIdentity parses a PKCS#8 DER private key, which must be ECDSA P-384.
func ParseIdentity(der []byte) (*Identity, error) {
	k, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, fmt.Errorf("parsing an identity key (PKCS#8): %w", err)
	}
	ek, ok := k.(*ecdsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("identity key is %T, want ECDSA %s", k, Curve)
	}
	if ek.Curve != elliptic.P384() {
		return nil, fmt.Errorf("identity key is on %s, want %s", ek.Curve.Params().Name, Curve)
	}
	return &Identity{k: ek}, nil
}

// checkPublic refuses a nil key and any curve but P-384.
func checkPublic(what string, pub *ecdsa.PublicKey) error {
	if pub == nil || pub.Curve == nil {
		return fmt.Errorf("%s: no public key", what)
	}
	if pub.Curve != elliptic.P384() {
		return fmt.Errorf("%s is on %s, want %s", what, pub.Curve.Params().Name, Curve)
	}
	return nil
}

// MarshalPublic returns a P-384 public key as PKIX DER.
func MarshalPublic(pub *ecdsa.PublicKey) ([]byte, error) {
	if err := checkPublic("public key", pub); err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("marshalling a public key: %w", err)
	}
	return der, nil
}

// ParsePublic parses a PKIX DER public key, which must be ECDSA P-384.
func ParsePublic(der []byte) (*ecdsa.PublicKey, error) {
	k, err := x509.ParsePKIXPublicKey(der)
	if err != nil {
		return nil, fmt.Errorf("parsing a public key (PKIX): %w", err)
	}
	pub, ok := k.(*ecdsa.PublicKey)
	if !ok {
		return nil, fmt.Errorf("public key is %T, want ECDSA %s", k, Curve)
	}
	if err := checkPublic("public key", pub); err != nil {
		return nil, err
	}
	return pub, nil
}

// Fingerprint names a public key for display: "sha256:" and the hex of the
// first 8 bytes of SHA-256 over its PKIX DER. It is "sha256:invalid" for a
// nil or non-P-384 key.
func Fingerprint(pub *ecdsa.PublicKey) string {
	der, err := MarshalPublic(pub)
	if err != nil {
		return "sha256:invalid"
	}
	sum := sha256.Sum256(der)
	return "sha256:" + hex.EncodeToString(sum[:8])
}
