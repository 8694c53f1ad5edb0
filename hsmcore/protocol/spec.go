package protocol

import (
	"crypto"
	"crypto/rsa"
	"errors"
	"fmt"

	_ "crypto/sha256" // register the hashes crypto sign offers
	_ "crypto/sha512"
)

// KeySpec says which key to make.
type KeySpec struct {
	Type string // aes, generic-secret, ec, rsa, ml-dsa
	// Label is the label of a symmetric key; PublicLabel and PrivateLabel
	// those of a pair's halves.
	Label        string
	PublicLabel  string
	PrivateLabel string
	// LengthBytes is the length of a symmetric key.
	LengthBytes int
	Curve       string // ec
	ModulusBits int    // rsa
	Exponent    int    // rsa
	// MLDSAParams is an ML-DSA key's parameter set: ML-DSA-44, ML-DSA-65
	// or ML-DSA-87 (--mldsa-algorithm).
	MLDSAParams string
	// Session makes a session key: on one HSM only, gone at logout.
	Session bool
	// Attributes are name=value settings applied at creation; for a pair,
	// PublicAttributes and PrivateAttributes apply to each half.
	Attributes        map[string]string
	PublicAttributes  map[string]string
	PrivateAttributes map[string]string
	// ShareWith are crypto users the new key is shared with.
	ShareWith []string
	// MinServers is key_mgmt_util's -min_srv: the larger of it and the
	// configured create_object_minimum_nodes applies.
	MinServers   int
	UseQuorum    int
	ManageQuorum int
}

// CurveNames lists the curve names key generate-asymmetric-pair ec takes.
func CurveNames() []string {
	return []string{"ed25519", "prime256v1", "secp224r1", "secp256k1", "secp256r1", "secp384r1", "secp521r1"}
}

// Mechanism is a signature scheme of crypto sign and verify.
type Mechanism string

const (
	MechECDSA     Mechanism = "ecdsa"
	MechRSAPKCS   Mechanism = "rsa-pkcs"
	MechRSAPKCSPS Mechanism = "rsa-pkcs-pss"
	// MechEd25519 is pure Ed25519 (RFC 8032): the data itself is signed.
	MechEd25519 Mechanism = "ed25519"
	// MechEd25519ph is Ed25519ph: the SHA-512 hash of the data is signed.
	MechEd25519ph Mechanism = "ed25519ph"
	// MechMLDSA is pure ML-DSA (FIPS 204, algorithm 2): the data itself
	// is signed, with an empty context.
	MechMLDSA Mechanism = "ml-dsa"
)

// MLDSAParamSets lists the parameter sets --mldsa-algorithm takes, as
// CloudHSM CLI spells them.
func MLDSAParamSets() []string {
	return []string{"ML-DSA-44", "ML-DSA-65", "ML-DSA-87"}
}

// Hashes maps the hash-function names crypto sign takes to Go's hashes.
var Hashes = map[string]crypto.Hash{
	"sha1":   crypto.SHA1,
	"sha224": crypto.SHA224,
	"sha256": crypto.SHA256,
	"sha384": crypto.SHA384,
	"sha512": crypto.SHA512,
}

// SignRequest is one crypto sign or verify.
type SignRequest struct {
	Ref       Ref
	Mechanism Mechanism
	Hash      crypto.Hash
	Data      []byte
	// Digest says Data is already the hash (--data-type digest).
	Digest bool
	// SaltLength is the PSS salt length; 0 means the hash's length.
	SaltLength int
}

// Hashed is the hash the request signs: Data hashed, or Data itself
// when it is a digest already.
func (req SignRequest) Hashed() ([]byte, error) {
	if !req.Hash.Available() {
		return nil, fmt.Errorf("%w: hash function not available", ErrInvalid)
	}
	if req.Digest {
		if len(req.Data) != req.Hash.Size() {
			return nil, fmt.Errorf("%w: --data-type digest needs exactly %d bytes for this hash function, got %d", ErrInvalid, req.Hash.Size(), len(req.Data))
		}
		return req.Data, nil
	}
	h := req.Hash.New()
	h.Write(req.Data)
	return h.Sum(nil), nil
}

// CheckMechanism says whether the mechanism fits a key of keyType.
func (req SignRequest) CheckMechanism(keyType string) error {
	switch req.Mechanism {
	case MechECDSA:
		if keyType != TypeEC {
			return fmt.Errorf("%w: mechanism ecdsa needs an ec key, this is an %s key", ErrInvalid, keyType)
		}
	case MechEd25519, MechEd25519ph:
		if keyType != TypeEC {
			return fmt.Errorf("%w: mechanism %s needs an ec key on curve ed25519, this is an %s key", ErrInvalid, req.Mechanism, keyType)
		}
	case MechMLDSA:
		if keyType != TypeMLDSA {
			return fmt.Errorf("%w: mechanism ml-dsa needs an %s key, this is an %s key", ErrInvalid, TypeMLDSA, keyType)
		}
	case MechRSAPKCS, MechRSAPKCSPS:
		if keyType != TypeRSA {
			return fmt.Errorf("%w: mechanism %s needs an rsa key, this is an %s key", ErrInvalid, req.Mechanism, keyType)
		}
	default:
		return fmt.Errorf("%w: unknown mechanism %q", ErrInvalid, req.Mechanism)
	}
	return nil
}

// PSSSaltLength is the PSS salt length to use.
func (req SignRequest) PSSSaltLength() int {
	if req.SaltLength > 0 {
		return req.SaltLength
	}
	return rsa.PSSSaltLengthEqualsHash
}

// ErrBadSignature is a signature that does not verify; its words are
// CloudHSM CLI's.
//
//lint:ignore ST1005 CloudHSM CLI's exact message, which runbooks match on
var ErrBadSignature = errors.New("Signature verification failed")

// MaxImportPEM bounds what key import pem reads; a public key PEM is a few
// kilobytes at most.
const MaxImportPEM = 64 << 10

// ImportSpec is a key import pem.
type ImportSpec struct {
	PEM        []byte
	Label      string
	Class      string // ec-public or rsa-public
	Attributes map[string]string
	Session    bool
	MinServers int
}
