package authsession

import (
	"crypto/ecdsa"
	"crypto/rand"
	"errors"
	"fmt"
)

// ErrBadSignature is a signature that does not verify with the key it
// claims.
var ErrBadSignature = errors.New("the signature does not verify with the signer's identity key")

// Sign signs the transcript of label and fields with the identity key: an
// HSM's proof, to another HSM of its domain, that a message is its own.
// The label keeps one kind of signed message from passing for another.
func (id *Identity) Sign(label string, fields ...[]byte) ([]byte, error) {
	if id == nil || id.k == nil {
		return nil, errors.New("signing: no identity key")
	}
	sig, err := ecdsa.SignASN1(rand.Reader, id.k, transcript(label, fields...))
	if err != nil {
		return nil, fmt.Errorf("signing %s: %w", label, err)
	}
	return sig, nil
}

// Verify checks a signature Sign made with the identity whose public key
// is pub.
func Verify(pub *ecdsa.PublicKey, sig []byte, label string, fields ...[]byte) error {
	if pub == nil {
		return fmt.Errorf("%w: no public key", ErrBadSignature)
	}
	if !ecdsa.VerifyASN1(pub, transcript(label, fields...), sig) {
		return ErrBadSignature
	}
	return nil
}

// Digest is the SHA-384 transcript of label and fields, for a signer that
// is not an Identity (the cluster certificate's key endorsing an HSM).
func Digest(label string, fields ...[]byte) []byte { return transcript(label, fields...) }
