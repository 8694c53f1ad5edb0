package quorum

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
)

// minRSABits is the smallest RSA modulus an approver may use.
const minRSABits = 2048

// allowedKeys says, in error messages, what approver keys may be.
const allowedKeys = "allowed: RSA of at least 2048 bits, ECDSA P-256 or ECDSA P-384"

// checkKey refuses any approver key but the allowed kinds.
func checkKey(pub crypto.PublicKey) error {
	if pub == nil {
		return errors.New("no approver key given")
	}
	switch k := pub.(type) {
	case *rsa.PublicKey:
		if k == nil || k.N == nil || k.N.BitLen() < minRSABits {
			return fmt.Errorf("approver key is %s, which is too small; %s", keyName(pub), allowedKeys)
		}
		return nil
	case *ecdsa.PublicKey:
		if k != nil && (k.Curve == elliptic.P256() || k.Curve == elliptic.P384()) {
			return nil
		}
	}
	return fmt.Errorf("approver key is %s, which is not allowed; %s", keyName(pub), allowedKeys)
}

// keyName describes a public key for messages, e.g. "RSA-2048" or
// "ECDSA P-224".
func keyName(pub crypto.PublicKey) string {
	switch k := pub.(type) {
	case *rsa.PublicKey:
		if k == nil || k.N == nil {
			return "RSA (empty)"
		}
		return fmt.Sprintf("RSA-%d", k.N.BitLen())
	case *ecdsa.PublicKey:
		if k == nil || k.Curve == nil {
			return "ECDSA (no curve)"
		}
		return "ECDSA " + k.Curve.Params().Name
	case ed25519.PublicKey:
		return "Ed25519"
	}
	return fmt.Sprintf("of type %T", pub)
}

// ParsePublicKey reads an approver's public key from a "PUBLIC KEY" PEM
// block (PKIX, what `openssl pkey -pubout` writes) and refuses kinds that
// are not allowed.
func ParsePublicKey(pemBytes []byte) (crypto.PublicKey, error) {
	block, _ := pem.Decode(pemBytes)
	if block == nil {
		return nil, errors.New("no PEM data found; expected a -----BEGIN PUBLIC KEY----- block (export it with: openssl pkey -in key.pem -pubout)")
	}
	if block.Type != "PUBLIC KEY" {
		hint := ""
		if strings.Contains(block.Type, "PRIVATE") {
			hint = "; this is a private key: never hand it to the HSM"
		}
		return nil, fmt.Errorf("PEM block is %q, want \"PUBLIC KEY\"%s (export the public key with: openssl pkey -in key.pem -pubout)", block.Type, hint)
	}
	pub, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("reading public key (want PKIX, as openssl pkey -pubout writes): %w", err)
	}
	if err := checkKey(pub); err != nil {
		return nil, err
	}
	return pub, nil
}

// EncodePublicKey returns pub as "PUBLIC KEY" PEM text, for storing with
// the approver's user record.
func EncodePublicKey(pub crypto.PublicKey) (string, error) {
	if err := checkKey(pub); err != nil {
		return "", err
	}
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", fmt.Errorf("encoding public key: %w", err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})), nil
}

// ParsePrivateKey reads an approver's private key from PEM: PKCS#8
// ("PRIVATE KEY", what `openssl genpkey` writes), PKCS#1 ("RSA PRIVATE
// KEY") or SEC 1 ("EC PRIVATE KEY"). Errors never quote the key.
func ParsePrivateKey(pemBytes []byte) (crypto.Signer, error) {
	const want = `want "PRIVATE KEY", "RSA PRIVATE KEY" or "EC PRIVATE KEY"`
	rest := pemBytes
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			return nil, errors.New("no private key PEM block found; " + want)
		}
		if strings.Contains(block.Headers["Proc-Type"], "ENCRYPTED") || block.Type == "ENCRYPTED PRIVATE KEY" {
			return nil, errors.New("private key is encrypted; hsmsh reads only unencrypted keys (openssl pkey -in key.pem -out plain.pem writes one; keep it private)")
		}
		var key any
		var err error
		switch block.Type {
		case "EC PARAMETERS":
			continue // `openssl ecparam -genkey` writes these before the key
		case "PRIVATE KEY":
			key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
		case "RSA PRIVATE KEY":
			key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
		case "EC PRIVATE KEY":
			key, err = x509.ParseECPrivateKey(block.Bytes)
		default:
			return nil, fmt.Errorf("PEM block is %q; %s", block.Type, want)
		}
		if err != nil {
			return nil, fmt.Errorf("reading %s: %w", strings.ToLower(block.Type), err)
		}
		signer, ok := key.(crypto.Signer)
		if !ok {
			return nil, fmt.Errorf("private key of type %T cannot sign; %s", key, allowedKeys)
		}
		if err := checkKey(signer.Public()); err != nil {
			return nil, err
		}
		return signer, nil
	}
}

// VerifySignature checks an approver's signature of a 32-byte digest,
// made as `openssl pkeyutl -sign -pkeyopt digest:sha256` makes it.
func VerifySignature(pub crypto.PublicKey, digest, sig []byte) error {
	if err := checkKey(pub); err != nil {
		return err
	}
	if len(digest) != sha256.Size {
		return fmt.Errorf("digest is %d bytes; a SHA-256 digest is %d", len(digest), sha256.Size)
	}
	if len(sig) == 0 {
		return errors.New("signature is empty")
	}
	switch k := pub.(type) {
	case *rsa.PublicKey:
		if err := rsa.VerifyPKCS1v15(k, crypto.SHA256, digest, sig); err != nil {
			return fmt.Errorf("signature does not verify with the %s key (want RSA PKCS#1 v1.5 over the SHA-256 digest, as made by openssl pkeyutl -sign -pkeyopt digest:sha256)", keyName(pub))
		}
	case *ecdsa.PublicKey:
		if !ecdsa.VerifyASN1(k, digest, sig) {
			return fmt.Errorf("signature does not verify with the %s key (want a DER ECDSA signature of the SHA-256 digest, as made by openssl pkeyutl -sign -pkeyopt digest:sha256)", keyName(pub))
		}
	}
	return nil
}

// SignDigest signs a 32-byte digest as `openssl pkeyutl -sign -pkeyopt
// digest:sha256` would: RSA PKCS#1 v1.5 with the SHA-256 DigestInfo, or a
// DER ECDSA signature.
func SignDigest(key crypto.Signer, digest []byte) ([]byte, error) {
	if key == nil {
		return nil, errors.New("no signing key given")
	}
	if err := checkKey(key.Public()); err != nil {
		return nil, err
	}
	if len(digest) != sha256.Size {
		return nil, fmt.Errorf("digest is %d bytes; a SHA-256 digest is %d", len(digest), sha256.Size)
	}
	// Passing crypto.SHA256 as the options selects PKCS#1 v1.5 for RSA keys
	// and tells every signer the input is already a SHA-256 digest.
	sig, err := key.Sign(rand.Reader, digest, crypto.SHA256)
	if err != nil {
		return nil, fmt.Errorf("signing the token digest: %w", err)
	}
	return sig, nil
}
