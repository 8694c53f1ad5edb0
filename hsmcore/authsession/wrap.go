package authsession

import (
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha512"
	"errors"
	"fmt"
)

// The domain key moves only from one HSM to another, and only wrapped: the
// sending HSM makes an ephemeral ECDH P-384 pair, agrees a key with the
// receiving HSM's identity key (used for ECDH), encrypts the domain key
// under it, and signs the lot with its own identity key. Whatever carries
// the blob between them (the client library, a server's peer connection)
// never sees the domain key.

const (
	labelWrap    = "hsmsh-domain-wrap-v1"
	labelWrapKey = "hsmsh-domain-wrap-v1 key"
)

// ErrWrapSignature is a wrapped domain key not signed by the HSM it claims
// to come from.
var ErrWrapSignature = errors.New("the wrapped domain key is not signed by the HSM it names: refusing it")

// WrappedDomain is a domain key on its way from one HSM to another.
type WrappedDomain struct {
	From       string `json:"from"` // the sending HSM's id
	To         []byte `json:"to"`   // the receiving HSM's identity key, PKIX DER
	Ephemeral  []byte `json:"eph"`  // the sender's ephemeral ECDH public key
	Ciphertext []byte `json:"ct"`
	Sig        []byte `json:"sig"` // by the sender's identity key
}

func wrapKey(shared, eph, to []byte) ([]byte, error) {
	salt := append(append([]byte{}, eph...), to...)
	return hkdf.Key(sha512.New384, shared, salt, labelWrapKey, keyLen)
}

// WrapDomain wraps domain for the HSM whose identity key is to.
func WrapDomain(domain DomainKey, from string, sender *Identity, to *ecdsa.PublicKey) (*WrappedDomain, error) {
	toDER, err := MarshalPublic(to)
	if err != nil {
		return nil, fmt.Errorf("wrap the domain key: %w", err)
	}
	toECDH, err := to.ECDH()
	if err != nil {
		return nil, fmt.Errorf("wrap the domain key: the receiving HSM's identity key: %w", err)
	}
	e, err := ecdh.P384().GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	shared, err := e.ECDH(toECDH)
	if err != nil {
		return nil, fmt.Errorf("wrap the domain key: ECDH: %w", err)
	}
	defer clear(shared)
	eph := e.PublicKey().Bytes()
	k, err := wrapKey(shared, eph, toDER)
	if err != nil {
		return nil, err
	}
	defer clear(k)
	ct, err := seal(k, domain[:], wrapAAD(from, toDER, eph))
	if err != nil {
		return nil, err
	}
	w := &WrappedDomain{From: from, To: toDER, Ephemeral: eph, Ciphertext: ct}
	w.Sig, err = ecdsa.SignASN1(rand.Reader, sender.k, w.transcript())
	if err != nil {
		return nil, err
	}
	return w, nil
}

// wrapAAD binds the ciphertext to its sender, receiver and exchange.
func wrapAAD(from string, to, eph []byte) []byte {
	return transcript(labelWrap+" aad", []byte(from), to, eph)
}

func (w *WrappedDomain) transcript() []byte {
	return transcript(labelWrap, []byte(w.From), w.To, w.Ephemeral, w.Ciphertext)
}

// UnwrapDomain is the receiving HSM's side: it checks the sender's
// signature against senderPub (an HSM of the domain) and that the blob was
// made for receiver, then recovers the domain key.
func UnwrapDomain(w *WrappedDomain, receiver *Identity, senderPub *ecdsa.PublicKey) (DomainKey, error) {
	var d DomainKey
	if w == nil {
		return d, errors.New("no wrapped domain key")
	}
	if !ecdsa.VerifyASN1(senderPub, w.transcript(), w.Sig) {
		return d, ErrWrapSignature
	}
	mine, err := MarshalPublic(receiver.Public())
	if err != nil {
		return d, err
	}
	if string(mine) != string(w.To) {
		return d, errors.New("the wrapped domain key was made for another HSM")
	}
	eph, err := parsePoint("the ephemeral key", w.Ephemeral)
	if err != nil {
		return d, err
	}
	priv, err := receiver.k.ECDH()
	if err != nil {
		return d, err
	}
	shared, err := priv.ECDH(eph)
	if err != nil {
		return d, fmt.Errorf("unwrap the domain key: ECDH: %w", err)
	}
	defer clear(shared)
	k, err := wrapKey(shared, w.Ephemeral, w.To)
	if err != nil {
		return d, err
	}
	defer clear(k)
	pt, err := open(k, w.Ciphertext, wrapAAD(w.From, w.To, w.Ephemeral))
	if err != nil || len(pt) != len(d) {
		return d, errors.New("the wrapped domain key does not decrypt: altered, or not for this HSM")
	}
	copy(d[:], pt)
	clear(pt)
	return d, nil
}
