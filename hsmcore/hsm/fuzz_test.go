package hsm

import (
	"crypto"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"math/big"
	"reflect"
	"strings"
	"testing"
)

// pemOf encodes der as one PEM block of type typ.
func pemOf(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

// privateSecrets returns the forms in which the private key material in
// der could show up in a message: the DER itself (raw, base64, hex) and,
// when der parses as a private key, its secret numbers. It returns nil if
// der is not a private key.
func privateSecrets(der []byte) []string {
	var priv any
	var err error
	if priv, err = x509.ParsePKCS8PrivateKey(der); err != nil {
		if priv, err = x509.ParsePKCS1PrivateKey(der); err != nil {
			if priv, err = x509.ParseECPrivateKey(der); err != nil {
				return nil
			}
		}
	}
	out := []string{base64.StdEncoding.EncodeToString(der), hex.EncodeToString(der), string(der)}
	nums := func(ns ...*big.Int) {
		for _, n := range ns {
			if n != nil && n.BitLen() > 32 { // short numbers show up anywhere by chance
				out = append(out, n.String(), n.Text(16))
			}
		}
	}
	switch k := priv.(type) {
	case *rsa.PrivateKey:
		nums(k.D)
		for _, p := range k.Primes {
			nums(p)
		}
	case *ecdsa.PrivateKey:
		if b, err := k.Bytes(); err == nil {
			out = append(out, hex.EncodeToString(b), base64.StdEncoding.EncodeToString(b))
		}
	case ed25519.PrivateKey:
		out = append(out, hex.EncodeToString(k.Seed()), base64.StdEncoding.EncodeToString(k.Seed()))
	case *ecdh.PrivateKey:
		out = append(out, hex.EncodeToString(k.Bytes()), base64.StdEncoding.EncodeToString(k.Bytes()))
	}
	return out
}

// FuzzParseImport feeds arbitrary PEM text and --key-type-class values to
// parseImport, what key import pem runs on an HSM. The seed corpus is under
// testdata/fuzz/FuzzParseImport: EC (P-256, P-384, P-521, and the
// unsupported P-224) and RSA public keys in PKIX and PKCS#1 form, a too-short
// RSA key, Ed25519 and X25519 keys, private keys in every PEM form, a private
// key labelled PUBLIC KEY, and junk.
//
// Properties:
//   - a private key is never imported, whatever its PEM block says it is,
//     and the error never includes its material (the DER raw, in base64 or
//     hex, or its secret numbers);
//   - an imported record is a public key whose Attrs.KeyType is what the
//     class asked for, whose Material is PKIX that x509.ParsePKIXPublicKey
//     reads as the PEM's key (and not as a private key), and whose
//     attributes (curve, modulus, check value) describe that key;
//   - importing the record's own public PEM again gives the same record.
func FuzzParseImport(f *testing.F) {
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	rk, _ := rsa.GenerateKey(rand.Reader, 2048)
	ecPub, _ := x509.MarshalPKIXPublicKey(&ec.PublicKey)
	rsaPub, _ := x509.MarshalPKIXPublicKey(&rk.PublicKey)
	ecPriv, _ := x509.MarshalPKCS8PrivateKey(ec)
	f.Add(pemOf("PUBLIC KEY", ecPub), "ec-public")
	f.Add(pemOf("PUBLIC KEY", ecPub), "rsa-public")
	f.Add(pemOf("PUBLIC KEY", rsaPub), "rsa-public")
	f.Add(pemOf("RSA PUBLIC KEY", x509.MarshalPKCS1PublicKey(&rk.PublicKey)), "rsa-public")
	f.Add(pemOf("PRIVATE KEY", ecPriv), "ec-public")
	f.Add(pemOf("PUBLIC KEY", ecPriv), "ec-public")
	f.Add(pemOf("RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(rk)), "rsa-public")
	f.Add([]byte("hello"), "ec-public")

	f.Fuzz(func(t *testing.T, pemText []byte, class string) {
		spec := ImportSpec{PEM: pemText, Label: "imp", Class: class}
		rec, err := parseImport(spec)

		block, _ := pem.Decode(pemText)
		var secrets []string
		if block != nil {
			secrets = privateSecrets(block.Bytes)
		}
		if secrets != nil || (block != nil && strings.Contains(block.Type, "PRIVATE")) {
			if err == nil {
				t.Fatalf("a private key (PEM block %q) was imported: %+v", block.Type, rec.Attrs)
			}
		}
		if err != nil {
			msg := err.Error()
			if msg == "" {
				t.Fatal("empty error")
			}
			for _, s := range secrets {
				if s != "" && strings.Contains(msg, s) {
					t.Fatalf("error includes private key material %q:\n%s", s, msg)
				}
			}
			if !errors.Is(err, ErrInvalid) && !strings.HasPrefix(msg, "encode public key") {
				t.Errorf("error is not ErrInvalid: %v", err)
			}
			return
		}

		a := rec.Attrs
		if a.Class != ClassPublic || (a.KeyType != TypeEC && a.KeyType != TypeRSA) {
			t.Fatalf("imported a %s %s", a.KeyType, a.Class)
		}
		if class != a.KeyType+"-public" {
			t.Fatalf("--key-type-class %q imported an %s key", class, a.KeyType)
		}
		if a.Label != "imp" || !a.Token || a.Local || a.Sign || a.Decrypt || a.Sensitive || !a.Verify || a.Encrypt != (a.KeyType == TypeRSA) {
			t.Errorf("unexpected attributes %+v", a)
		}
		if _, err := x509.ParsePKCS8PrivateKey(rec.Material); err == nil {
			t.Fatal("the material is a private key")
		}
		pub, err := x509.ParsePKIXPublicKey(rec.Material)
		if err != nil {
			t.Fatalf("the material does not parse as PKIX: %v", err)
		}
		var in crypto.PublicKey
		if block.Type == "RSA PUBLIC KEY" {
			in, err = x509.ParsePKCS1PublicKey(block.Bytes)
		} else {
			in, err = x509.ParsePKIXPublicKey(block.Bytes)
		}
		if err != nil {
			t.Fatalf("the %s block was imported but does not parse: %v", block.Type, err)
		}
		if eq, ok := in.(interface{ Equal(crypto.PublicKey) bool }); !ok || !eq.Equal(pub) {
			t.Fatalf("the material holds %T, not the PEM's key %T", pub, in)
		}
		if a.CheckValue != publicKCV(rec.Material) {
			t.Errorf("check value %s, want %s", a.CheckValue, publicKCV(rec.Material))
		}
		switch p := pub.(type) {
		case *ecdsa.PublicKey:
			if a.KeyType != TypeEC || a.Curve != curveName(p.Curve) || curves[a.Curve] == nil || a.ECPoint == "" {
				t.Errorf("EC key on %s has attributes %+v", p.Curve.Params().Name, a)
			}
		case *rsa.PublicKey:
			if a.KeyType != TypeRSA || a.ModulusSizeBits != p.N.BitLen() || a.ModulusSizeBits < 2048 || a.Modulus != "0x"+p.N.Text(16) {
				t.Errorf("%d-bit RSA key has attributes %+v", p.N.BitLen(), a)
			}
		default:
			t.Fatalf("imported a %T", pub)
		}

		// The public PEM of what was imported imports as the same record.
		out, err := publicPEM(rec)
		if err != nil {
			t.Fatalf("publicPEM of an imported key: %v", err)
		}
		again, err := parseImport(ImportSpec{PEM: out, Label: "imp", Class: class})
		if err != nil {
			t.Fatalf("re-import of %s: %v", out, err)
		}
		if !reflect.DeepEqual(again.Attrs, rec.Attrs) || string(again.Material) != string(rec.Material) {
			t.Fatalf("re-import changed the record:\n%+v\n%+v", rec.Attrs, again.Attrs)
		}
	})
}
