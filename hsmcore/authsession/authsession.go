// Package authsession implements the authenticated sessions of the KMS seed:
// a client (host) and an HSM agree on a session key, and every HSM of the
// cluster can then serve that session, because the key also travels inside
// an exported key token (EKT) that only the cluster's shared domain key opens.
//
// The handshake has three steps:
//
//  1. The host makes an ephemeral ECDH P-384 key pair (d1, Q1) and signs Q1,
//     with its client id, using its long-term ECDSA P-384 identity key:
//     [NewHello].
//  2. The HSM checks that signature against the identity key registered for
//     the client, makes its own pair (d2, Q2) and completes ECDH. HKDF-SHA384
//     over the shared secret, salted with Q1‖Q2, gives the negotiated
//     AES-256-GCM key. The HSM draws a fresh random 256-bit session key SK and
//     returns ESK (SK under the negotiated key) and the EKT (SK, session id,
//     user, role, expiry and domain id under the domain key), and signs
//     (HSM id, Q1, Q2, ESK, EKT) with its own identity key: [Accept].
//  3. The host checks the HSM's signature, which is what defeats a man in the
//     middle, completes ECDH, derives the same negotiated key and decrypts ESK
//     to get SK: [Finish].
//
// Afterwards each command is an [Envelope] sealed under SK with a sequence
// number and carrying the EKT. Any HSM of the cluster opens the EKT with
// [OpenEKT], opens the envelope with [Open], checks the sequence number with
// a [Window], and answers with an envelope sealed under the same SK.
//
// Only standard constructions are used: crypto/ecdh, crypto/ecdsa,
// AES-256-GCM with random nonces, SHA-384 and HKDF. Nothing here prints or
// logs key material, and no error message contains any.
package authsession

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/sha512"
	"encoding/binary"
	"errors"
	"fmt"
	"unicode"
	"unicode/utf8"
)

// Names of the algorithms, for session info.
const (
	Curve = "P-384"
	AEAD  = "AES-256-GCM"
	KDF   = "HKDF-SHA384"
)

// Sentinel errors. Functions wrap them with context; test with errors.Is.
var (
	ErrClientSignature = errors.New("the client's signature on its ECDH key does not verify: refusing the session")
	ErrHSMSignature    = errors.New("the HSM's signature on the handshake does not verify: possible man in the middle, refusing the session")
	ErrExpired         = errors.New("the session has expired: log in again")
	ErrForeignDomain   = errors.New("the session token was not issued by this cluster's domain")
	ErrTampered        = errors.New("the envelope does not decrypt: altered, or sealed under another session key")
	ErrReplay          = errors.New("replayed envelope refused")
	ErrReorder         = errors.New("out-of-order envelope refused")
)

// Labels keep a signature, key or ciphertext made for one purpose from being
// accepted for another. The "v1" changes with any change of format.
const (
	labelHello      = "hsmsh-session-v1 hello"
	labelReply      = "hsmsh-session-v1 reply"
	labelNegotiated = "hsmsh-session-v1 negotiated"
	labelESK        = "hsmsh-session-v1 esk"
	labelEKT        = "hsmsh-session-v1 ekt"
	labelEnvelope   = "hsmsh-session-v1 envelope"
)

const (
	pointLen   = 97 // uncompressed P-384 point: 0x04 ‖ X ‖ Y
	keyLen     = 32 // AES-256
	gcmOverLen = 12 + 16
	maxName    = 128 // client, HSM, user and role names
)

// transcript returns the SHA-384 digest that a handshake signature covers.
// The label and each field are preceded by their length, so no byte can move
// from one field into its neighbour without changing the digest, and the
// label keeps a Hello signature from ever verifying as a Reply signature.
func transcript(label string, fields ...[]byte) []byte {
	h := sha512.New384()
	var n [8]byte
	write := func(b []byte) {
		binary.BigEndian.PutUint64(n[:], uint64(len(b)))
		h.Write(n[:])
		h.Write(b)
	}
	write([]byte(label))
	for _, f := range fields {
		write(f)
	}
	return h.Sum(nil)
}

// newGCM returns AES-256-GCM with random nonces: Seal output is
// nonce ‖ ciphertext ‖ tag, and Open expects the same. Random nonces, rather
// than nonces made from sequence numbers, because several HSMs seal under the
// same SK independently and could not coordinate a counter.
func newGCM(key []byte) (cipher.AEAD, error) {
	if len(key) != keyLen {
		return nil, fmt.Errorf("AES-256 key is %d bytes, want %d", len(key), keyLen)
	}
	b, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCMWithRandomNonce(b)
}

func seal(key, plaintext, aad []byte) ([]byte, error) {
	g, err := newGCM(key)
	if err != nil {
		return nil, err
	}
	return g.Seal(nil, nil, plaintext, aad), nil
}

// open returns GCM's bare error on failure; callers turn it into the right
// sentinel, since only they know what a failure means.
func open(key, ciphertext, aad []byte) ([]byte, error) {
	g, err := newGCM(key)
	if err != nil {
		return nil, err
	}
	if len(ciphertext) < gcmOverLen {
		return nil, fmt.Errorf("%d bytes, shorter than nonce and tag (%d)", len(ciphertext), gcmOverLen)
	}
	return g.Open(nil, nil, ciphertext, aad)
}

// checkName checks a client, HSM, user or role name: printable UTF-8 of 1 to
// 128 bytes. The name itself stays out of the error; it may be garbage.
func checkName(what, s string) error {
	switch {
	case s == "":
		return fmt.Errorf("%s is empty", what)
	case len(s) > maxName:
		return fmt.Errorf("%s is %d bytes, at most %d allowed", what, len(s), maxName)
	case !utf8.ValidString(s):
		return fmt.Errorf("%s is not valid UTF-8", what)
	}
	for i, r := range s {
		if !unicode.IsPrint(r) {
			return fmt.Errorf("%s has a non-printable character %U at byte %d", what, r, i)
		}
	}
	return nil
}
