package hsm

import (
	"encoding/asn1"
	"encoding/pem"
	"fmt"
	"strings"

	circlsign "github.com/cloudflare/circl/sign"
	"github.com/cloudflare/circl/sign/mldsa/mldsa44"
	"github.com/cloudflare/circl/sign/mldsa/mldsa65"
	"github.com/cloudflare/circl/sign/mldsa/mldsa87"
)

// ML-DSA (FIPS 204) keys. Go's standard library has no ML-DSA, so the
// arithmetic is Cloudflare's circl; hsmsh only stores, dispatches and
// encodes. crypto/x509 cannot marshal ML-DSA keys either, so a private
// key's material is circl's binary encoding (FIPS 204's skEncode) and a
// public key's is a SubjectPublicKeyInfo written here with encoding/asn1.

// mldsaSet is one ML-DSA parameter set.
type mldsaSet struct {
	name   string // as CloudHSM CLI spells it: ML-DSA-65
	oid    asn1.ObjectIdentifier
	scheme circlsign.Scheme
	// signTo signs hedged (FIPS 204's default: fresh randomness mixed
	// in), which circl's Scheme.Sign does not offer.
	signTo func(sk circlsign.PrivateKey, msg, sig []byte) error
}

// mldsaSets are the parameter sets, with NIST's OIDs (id-ml-dsa-44 is
// 2.16.840.1.101.3.4.3.17, -65 .18, -87 .19).
var mldsaSets = []*mldsaSet{
	{name: "ML-DSA-44", oid: asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 3, 17}, scheme: mldsa44.Scheme(),
		signTo: func(sk circlsign.PrivateKey, msg, sig []byte) error {
			return mldsa44.SignTo(sk.(*mldsa44.PrivateKey), msg, nil, true, sig)
		}},
	{name: "ML-DSA-65", oid: asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 3, 18}, scheme: mldsa65.Scheme(),
		signTo: func(sk circlsign.PrivateKey, msg, sig []byte) error {
			return mldsa65.SignTo(sk.(*mldsa65.PrivateKey), msg, nil, true, sig)
		}},
	{name: "ML-DSA-87", oid: asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 3, 19}, scheme: mldsa87.Scheme(),
		signTo: func(sk circlsign.PrivateKey, msg, sig []byte) error {
			return mldsa87.SignTo(sk.(*mldsa87.PrivateKey), msg, nil, true, sig)
		}},
}

func mldsaByName(name string) (*mldsaSet, error) {
	for _, s := range mldsaSets {
		if strings.EqualFold(s.name, name) {
			return s, nil
		}
	}
	return nil, fmt.Errorf("%w: unknown ML-DSA algorithm %q: use ML-DSA-44, ML-DSA-65 or ML-DSA-87", ErrInvalid, name)
}

// mldsaPrivate and mldsaPublic are parsed ML-DSA keys with their
// parameter set; circl's own types differ per set.
type mldsaPrivate struct {
	set *mldsaSet
	key circlsign.PrivateKey
}

type mldsaPublic struct {
	set *mldsaSet
	key circlsign.PublicKey
}

// mldsaSPKI is a SubjectPublicKeyInfo (RFC 5280). For ML-DSA the
// AlgorithmIdentifier has the OID and no parameters, and the BIT STRING
// is the raw public key (pkEncode), as the IETF's ML-DSA-in-X.509 spec
// and openssl 3.5 have it.
type mldsaSPKI struct {
	Algorithm struct {
		Algorithm asn1.ObjectIdentifier
	}
	PublicKey asn1.BitString
}

func (p *mldsaPublic) spki() ([]byte, error) {
	raw, err := p.key.MarshalBinary()
	if err != nil {
		return nil, fmt.Errorf("encode ML-DSA public key: %w", err)
	}
	var s mldsaSPKI
	s.Algorithm.Algorithm = p.set.oid
	s.PublicKey = asn1.BitString{Bytes: raw, BitLength: 8 * len(raw)}
	return asn1.Marshal(s)
}

// parseMLDSASPKI reads a public key record's SubjectPublicKeyInfo.
func parseMLDSASPKI(der []byte) (*mldsaPublic, error) {
	var s mldsaSPKI
	rest, err := asn1.Unmarshal(der, &s)
	if err != nil {
		return nil, err
	}
	if len(rest) != 0 {
		return nil, fmt.Errorf("%d bytes after the SubjectPublicKeyInfo", len(rest))
	}
	for _, set := range mldsaSets {
		if set.oid.Equal(s.Algorithm.Algorithm) {
			k, err := set.scheme.UnmarshalBinaryPublicKey(s.PublicKey.RightAlign())
			if err != nil {
				return nil, err
			}
			return &mldsaPublic{set: set, key: k}, nil
		}
	}
	return nil, fmt.Errorf("algorithm %v is no ML-DSA parameter set", s.Algorithm.Algorithm)
}

// parseMLDSAPrivate reads a private key record's material; the
// parameter set follows from its length, which differs for each.
func parseMLDSAPrivate(material []byte) (*mldsaPrivate, error) {
	for _, set := range mldsaSets {
		if len(material) == set.scheme.PrivateKeySize() {
			k, err := set.scheme.UnmarshalBinaryPrivateKey(material)
			if err != nil {
				return nil, err
			}
			return &mldsaPrivate{set: set, key: k}, nil
		}
	}
	return nil, fmt.Errorf("%d bytes is the size of no ML-DSA private key", len(material))
}

func (k *mldsaPrivate) public() *mldsaPublic {
	return &mldsaPublic{set: k.set, key: k.key.Public().(circlsign.PublicKey)}
}

// generateMLDSA makes an ML-DSA key pair's records.
func generateMLDSA(spec KeySpec, token bool) ([]*keyRecord, error) {
	if err := validatePairLabels(spec); err != nil {
		return nil, err
	}
	if spec.MLDSAParams == "" {
		return nil, fmt.Errorf("%w: an ML-DSA key needs --mldsa-algorithm: ML-DSA-44, ML-DSA-65 or ML-DSA-87", ErrInvalid)
	}
	set, err := mldsaByName(spec.MLDSAParams)
	if err != nil {
		return nil, err
	}
	pk, sk, err := set.scheme.GenerateKey()
	if err != nil {
		return nil, fmt.Errorf("generate %s key: %w", set.name, err)
	}
	privBytes, err := sk.MarshalBinary()
	if err != nil {
		return nil, fmt.Errorf("encode %s private key: %w", set.name, err)
	}
	pub := &mldsaPublic{set: set, key: pk}
	pubDER, err := pub.spki()
	if err != nil {
		return nil, err
	}
	pa := baseAttrs(TypeMLDSA, ClassPublic, spec.PublicLabel, token)
	pa.Verify = true
	ka := baseAttrs(TypeMLDSA, ClassPrivate, spec.PrivateLabel, token)
	ka.Sign = true
	// mldsa-algorithm: the parameter set, as CloudHSM CLI shows it.
	pa.MLDSAAlgorithm, ka.MLDSAAlgorithm = set.name, set.name
	kcv := publicKCV(pubDER)
	pa.CheckValue, ka.CheckValue = kcv, kcv
	// key-length-bytes: the encoded keys' sizes, which also tell the
	// parameter set (1312, 1952, 2592 public; 2560, 4032, 4896 private).
	pa.KeyLengthBytes = set.scheme.PublicKeySize()
	ka.KeyLengthBytes = len(privBytes)
	if err := applyAttrs(&pa, spec.PublicAttributes); err != nil {
		return nil, fmt.Errorf("public key: %w", err)
	}
	if err := applyAttrs(&ka, spec.PrivateAttributes); err != nil {
		return nil, fmt.Errorf("private key: %w", err)
	}
	return []*keyRecord{{Attrs: pa, Material: pubDER}, {Attrs: ka, Material: privBytes}}, nil
}

// mldsaMessage is what ML-DSA signs: the data itself. (--hash-function
// shake256, which CloudHSM CLI asks for, names ML-DSA's own internal
// hash: it changes nothing, so the request carries no hash.) A digest is
// refused: pure ML-DSA has none, and external mu (FIPS 204's precomputed
// message representative, SHAKE256 of the public key's hash and the
// message) needs signing and verifying from mu, which circl (v1.6.5)
// does not expose: its SignTo and Verify compute mu from the message
// themselves.
func mldsaMessage(req SignRequest) ([]byte, error) {
	if req.Digest {
		return nil, fmt.Errorf("%w: ml-dsa data type external-mu is not supported: hsmsh's ML-DSA library (circl) signs and verifies only from the message, not from a precomputed mu; use --data-type raw with the message itself", ErrInvalid)
	}
	return req.Data, nil
}

func signMLDSA(k *mldsaPrivate, req SignRequest) ([]byte, error) {
	msg, err := mldsaMessage(req)
	if err != nil {
		return nil, err
	}
	sig := make([]byte, k.set.scheme.SignatureSize())
	if err := k.set.signTo(k.key, msg, sig); err != nil {
		return nil, fmt.Errorf("%s sign: %w", k.set.name, err)
	}
	return sig, nil
}

func verifyMLDSA(pub *mldsaPublic, req SignRequest, sig []byte) error {
	msg, err := mldsaMessage(req)
	if err != nil {
		return err
	}
	if n := pub.set.scheme.SignatureSize(); len(sig) != n {
		return fmt.Errorf("%w: an %s signature is %d bytes, got %d", ErrBadSignature, pub.set.name, n, len(sig))
	}
	if !pub.set.scheme.Verify(pub.key, msg, sig, nil) {
		return ErrBadSignature
	}
	return nil
}

// mldsaPEM is a public key as a PEM "PUBLIC KEY" block.
func mldsaPEM(pub *mldsaPublic) ([]byte, error) {
	der, err := pub.spki()
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), nil
}

// mldsaOIDOf says which ML-DSA parameter set a PKCS #8 PrivateKeyInfo is
// for, if any, so that unwrap can refuse it by name rather than as
// unreadable.
func mldsaOIDOf(der []byte) (string, bool) {
	var info struct {
		Version   int
		Algorithm struct {
			Algorithm asn1.ObjectIdentifier
			Params    asn1.RawValue `asn1:"optional"`
		}
		PrivateKey []byte
	}
	if _, err := asn1.Unmarshal(der, &info); err != nil {
		return "", false
	}
	for _, s := range mldsaSets {
		if s.oid.Equal(info.Algorithm.Algorithm) {
			return s.name, true
		}
	}
	return "", false
}

// mldsaPublicKey is publicKey for an ML-DSA record.
func (r *keyRecord) mldsaPublicKey() (*mldsaPublic, error) {
	switch r.Attrs.Class {
	case ClassPublic:
		pub, err := parseMLDSASPKI(r.Material)
		if err != nil {
			return nil, fmt.Errorf("key %s: stored ML-DSA public key is unreadable: %w", r.Ref, err)
		}
		return pub, nil
	case ClassPrivate:
		k, err := parseMLDSAPrivate(r.Material)
		if err != nil {
			return nil, fmt.Errorf("key %s: stored ML-DSA private key is unreadable: %w", r.Ref, err)
		}
		return k.public(), nil
	}
	return nil, fmt.Errorf("%w: key %s is a secret key and has no public key", ErrInvalid, r.Ref)
}
