package hsm

import (
	"context"
	"crypto"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cloudflare/circl/sign/mldsa/mldsa44"
	"github.com/cloudflare/circl/sign/mldsa/mldsa65"
	"github.com/cloudflare/circl/sign/mldsa/mldsa87"

	"github.com/hsmsh/hsmsh/hsmcore/protocol"
)

// ML-DSA keys of each parameter set: made in the HSM, signing with ml-dsa
// only, verified by the cluster and, from the exported PEM, by circl's
// own verifier outside the HSM; forged signatures and wrong mechanisms
// are refused.
func TestMLDSA(t *testing.T) {
	e, cu := labCluster(t, 2, Durability{MinimumNodes: 2})
	ctx := context.Background()
	msg := []byte("signed inside the HSM, after the quantum computer")
	for _, tt := range []struct {
		set            string
		oid            asn1.ObjectIdentifier
		pubLen, sigLen int
		privLen        int
		verify         func(pub, msg, sig []byte) bool
	}{
		{"ML-DSA-44", asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 3, 17}, mldsa44.PublicKeySize, mldsa44.SignatureSize, mldsa44.PrivateKeySize,
			func(pub, msg, sig []byte) bool {
				var k mldsa44.PublicKey
				return k.UnmarshalBinary(pub) == nil && mldsa44.Verify(&k, msg, nil, sig)
			}},
		{"ML-DSA-65", asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 3, 18}, mldsa65.PublicKeySize, mldsa65.SignatureSize, mldsa65.PrivateKeySize,
			func(pub, msg, sig []byte) bool {
				var k mldsa65.PublicKey
				return k.UnmarshalBinary(pub) == nil && mldsa65.Verify(&k, msg, nil, sig)
			}},
		{"ML-DSA-87", asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 3, 19}, mldsa87.PublicKeySize, mldsa87.SignatureSize, mldsa87.PrivateKeySize,
			func(pub, msg, sig []byte) bool {
				var k mldsa87.PublicKey
				return k.UnmarshalBinary(pub) == nil && mldsa87.Verify(&k, msg, nil, sig)
			}},
	} {
		t.Run(tt.set, func(t *testing.T) {
			keys, err := e.GenerateKey(ctx, cu, KeySpec{Type: TypeMLDSA, MLDSAParams: tt.set, PublicLabel: tt.set + "-pub", PrivateLabel: tt.set + "-priv"})
			if err != nil {
				t.Fatal(err)
			}
			pub, priv := keys[0], keys[1]
			if pub.Attrs.KeyType != TypeMLDSA || priv.Attrs.Class != ClassPrivate || !priv.Attrs.Sign || !pub.Attrs.Verify ||
				pub.Attrs.KeyLengthBytes != tt.pubLen || priv.Attrs.KeyLengthBytes != tt.privLen || pub.Attrs.CheckValue != priv.Attrs.CheckValue {
				t.Errorf("attributes: public %+v, private %+v", pub.Attrs, priv.Attrs)
			}
			// As CloudHSM CLI's page prints them: key-type ml-dsa and the
			// parameter set as mldsa-algorithm, on both halves.
			for _, k := range keys {
				m := k.Attrs.Map()
				if m["key-type"] != "ml-dsa" || m["mldsa-algorithm"] != tt.set {
					t.Errorf("%s: key-type %q, mldsa-algorithm %q; want ml-dsa, %s", k.Attrs.Class, m["key-type"], m["mldsa-algorithm"], tt.set)
				}
				for _, name := range AttributeNames() { // filters see what is printed
					got, ok := k.Attrs.Get(name)
					if want, wantOK := m[name]; got != want || ok != wantOK {
						t.Errorf("%s %s: Get = %q, %v; Map = %q, %v", k.Attrs.Class, name, got, ok, want, wantOK)
					}
				}
			}
			sig, err := e.Sign(ctx, cu, SignRequest{Ref: priv.Ref, Mechanism: MechMLDSA, Data: msg})
			if err != nil || len(sig) != tt.sigLen {
				t.Fatalf("sign: %d bytes, %v", len(sig), err)
			}
			// Hedged signing: a second signature of the same message differs.
			sig2, err := e.Sign(ctx, cu, SignRequest{Ref: priv.Ref, Mechanism: MechMLDSA, Data: msg})
			if err != nil || string(sig2) == string(sig) {
				t.Errorf("a second signature: %v, equal to the first: %t", err, string(sig2) == string(sig))
			}
			for _, ref := range []Ref{pub.Ref, priv.Ref} {
				if err := e.Verify(ctx, cu, SignRequest{Ref: ref, Mechanism: MechMLDSA, Data: msg}, sig); err != nil {
					t.Errorf("verify with %s: %v", ref, err)
				}
			}
			forged := append([]byte(nil), sig...)
			forged[10] ^= 1
			if err := e.Verify(ctx, cu, SignRequest{Ref: pub.Ref, Mechanism: MechMLDSA, Data: msg}, forged); !isBadSignature(err) {
				t.Errorf("a forged signature: %v", err)
			}
			if err := e.Verify(ctx, cu, SignRequest{Ref: pub.Ref, Mechanism: MechMLDSA, Data: []byte("another message")}, sig); !isBadSignature(err) {
				t.Errorf("another message: %v", err)
			}
			if err := e.Verify(ctx, cu, SignRequest{Ref: pub.Ref, Mechanism: MechMLDSA, Data: msg}, sig[:100]); !isBadSignature(err) {
				t.Errorf("a short signature: %v", err)
			}

			// The exported public key is a SubjectPublicKeyInfo with NIST's
			// OID, no parameters, and the raw key as the BIT STRING; the
			// signature verifies against it outside the HSM.
			p, err := e.PublicKeyPEM(ctx, cu, pub.Ref)
			if err != nil {
				t.Fatal(err)
			}
			block, rest := pem.Decode(p)
			if block == nil || block.Type != "PUBLIC KEY" || len(rest) != 0 {
				t.Fatalf("public key PEM:\n%s", p)
			}
			var spki struct {
				Algorithm struct {
					Algorithm asn1.ObjectIdentifier
					Params    asn1.RawValue `asn1:"optional"`
				}
				PublicKey asn1.BitString
			}
			if rest, err := asn1.Unmarshal(block.Bytes, &spki); err != nil || len(rest) != 0 {
				t.Fatalf("SubjectPublicKeyInfo: %v, %d bytes after", err, len(rest))
			}
			if !spki.Algorithm.Algorithm.Equal(tt.oid) || len(spki.Algorithm.Params.FullBytes) != 0 {
				t.Errorf("algorithm %v with parameters %x, want %v and none", spki.Algorithm.Algorithm, spki.Algorithm.Params.FullBytes, tt.oid)
			}
			if spki.PublicKey.BitLength != 8*tt.pubLen {
				t.Errorf("BIT STRING of %d bits, want %d", spki.PublicKey.BitLength, 8*tt.pubLen)
			}
			if !tt.verify(spki.PublicKey.Bytes, msg, sig) {
				t.Error("circl does not verify the HSM's signature with the exported public key")
			}
			// The private key's PEM is never given out.
			if bytes := string(p); strings.Contains(bytes, "PRIVATE") {
				t.Errorf("PEM holds a private key:\n%s", p)
			}
			if _, err := exec.LookPath("openssl"); err == nil {
				// openssl 3.0 knows no ML-DSA, but its DER parser reads the
				// structure and names the OID.
				f := filepath.Join(t.TempDir(), "pub.pem")
				if err := os.WriteFile(f, p, 0o600); err != nil {
					t.Fatal(err)
				}
				out, err := exec.Command("openssl", "asn1parse", "-in", f).CombinedOutput()
				if err != nil || !strings.Contains(string(out), tt.oid.String()) && !strings.Contains(string(out), strings.ToUpper(tt.set)) || !strings.Contains(string(out), "BIT STRING") {
					t.Errorf("openssl asn1parse: %v\n%s", err, out)
				}
			}
		})
	}

	keys, err := e.GenerateKey(ctx, cu, KeySpec{Type: TypeMLDSA, MLDSAParams: "ML-DSA-65", PublicLabel: "m-pub", PrivateLabel: "m-priv"})
	if err != nil {
		t.Fatal(err)
	}
	ec, err := e.GenerateKey(ctx, cu, KeySpec{Type: TypeEC, Curve: "secp256r1", PublicLabel: "e-pub", PrivateLabel: "e-priv", PrivateAttributes: map[string]string{"sign": "true"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name string
		req  SignRequest
		want string
	}{
		{"ecdsa with an ML-DSA key", SignRequest{Ref: keys[1].Ref, Mechanism: MechECDSA, Hash: crypto.SHA256, Data: msg}, "needs an ec key"},
		{"ed25519 with an ML-DSA key", SignRequest{Ref: keys[1].Ref, Mechanism: MechEd25519, Data: msg}, "needs an ec key"},
		{"ml-dsa with an EC key", SignRequest{Ref: ec[1].Ref, Mechanism: MechMLDSA, Data: msg}, "needs an ml-dsa key"},
		{"external mu", SignRequest{Ref: keys[1].Ref, Mechanism: MechMLDSA, Data: make([]byte, 64), Digest: true}, "external-mu is not supported"},
	} {
		if _, err := e.Sign(ctx, cu, tt.req); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: %v, want it to say %q", tt.name, err, tt.want)
		}
	}
	// Verifying from an external mu is refused too, for the same reason.
	if err := e.Verify(ctx, cu, SignRequest{Ref: keys[0].Ref, Mechanism: MechMLDSA, Data: make([]byte, 64), Digest: true}, make([]byte, mldsa65.SignatureSize)); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "external-mu is not supported") {
		t.Errorf("verify from external mu: %v", err)
	}
	// mldsa-algorithm is the key's own: read-only, at creation too.
	bad := KeySpec{Type: TypeMLDSA, MLDSAParams: "ML-DSA-44", PublicLabel: "a", PrivateLabel: "b", PublicAttributes: map[string]string{"mldsa-algorithm": "ML-DSA-87"}}
	if _, err := e.GenerateKey(ctx, cu, bad); err == nil || !strings.Contains(err.Error(), `attribute "mldsa-algorithm" is read-only`) {
		t.Errorf("mldsa-algorithm set at creation: %v", err)
	}
	for _, tt := range []struct {
		name string
		spec KeySpec
		want string
	}{
		{"no parameter set", KeySpec{Type: TypeMLDSA, PublicLabel: "a", PrivateLabel: "b"}, "needs --mldsa-algorithm"},
		{"an unknown parameter set", KeySpec{Type: TypeMLDSA, MLDSAParams: "ML-DSA-99", PublicLabel: "a", PrivateLabel: "b"}, "use ML-DSA-44, ML-DSA-65 or ML-DSA-87"},
		{"encrypt on an ML-DSA key", KeySpec{Type: TypeMLDSA, MLDSAParams: "ML-DSA-44", PublicLabel: "a", PrivateLabel: "b", PublicAttributes: map[string]string{"encrypt": "true"}}, "encrypt"},
	} {
		if _, err := e.GenerateKey(ctx, cu, tt.spec); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: %v, want it to say %q", tt.name, err, tt.want)
		}
	}
	// ML-DSA keys stay in the HSM: wrapping one is refused by name.
	aes, err := e.GenerateKey(ctx, cu, KeySpec{Type: TypeAES, Label: "kek", LengthBytes: 32, Attributes: map[string]string{"wrap": "true"}})
	if err != nil {
		t.Fatal(err)
	}
	_, err = e.WrapKey(ctx, cu, WrapRequest{Params: protocol.WrapParams{Mechanism: "aes-gcm"}, Payload: keys[1].Ref, Wrapping: aes[0].Ref})
	if err == nil || !strings.Contains(err.Error(), "does not wrap ML-DSA keys") {
		t.Errorf("wrap of an ML-DSA key: %v", err)
	}
}

// isBadSignature: the error crosses the wire as text, so by its words.
func isBadSignature(err error) bool {
	return err != nil && strings.Contains(err.Error(), "Signature verification failed")
}

// Unwrap refuses ML-DSA private keys by name, whether asked for by key
// type class or handed over as PKCS #8 under another class.
func TestUnwrapRefusesMLDSA(t *testing.T) {
	// A PKCS #8 PrivateKeyInfo for ML-DSA-65 in the seed form of the
	// IETF's ML-DSA-in-X.509 draft: version 0, the OID, and [0] a seed.
	der, err := asn1.Marshal(struct {
		Version   int
		Algorithm struct{ Algorithm asn1.ObjectIdentifier }
		Key       []byte
	}{0, struct{ Algorithm asn1.ObjectIdentifier }{asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 3, 18}}, append([]byte{0x80, 32}, make([]byte, 32)...)})
	if err != nil {
		t.Fatal(err)
	}
	for _, class := range []string{"ec-private", "rsa-private"} {
		_, err := unwrappedRecord(protocol.UnwrapSpec{KeyTypeClass: class, Label: "x"}, der, false)
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "ML-DSA-65 private key, and hsmsh does not unwrap ML-DSA keys") {
			t.Errorf("%s: %v", class, err)
		}
	}
	_, err = unwrappedRecord(protocol.UnwrapSpec{KeyTypeClass: "mldsa-private", Label: "x"}, der, false)
	if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "hsmsh does not unwrap ML-DSA keys") {
		t.Errorf("mldsa-private: %v", err)
	}
}
