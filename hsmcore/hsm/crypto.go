package hsm

import (
	"crypto"
	"crypto/aes"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha512"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"math/big"
	"strings"

	_ "crypto/sha256" // register the hashes crypto sign offers
	_ "crypto/sha512"

	"github.com/hsmsh/hsmsh/hsmcore/protocol"
)

// curves maps CloudHSM CLI's curve names to Go's.
var curves = map[string]elliptic.Curve{
	"secp224r1":  elliptic.P224(),
	"secp256r1":  elliptic.P256(),
	"prime256v1": elliptic.P256(),
	"secp384r1":  elliptic.P384(),
	"secp521r1":  elliptic.P521(),
}

func curveName(c elliptic.Curve) string {
	switch c {
	case elliptic.P224():
		return "secp224r1"
	case elliptic.P256():
		return "secp256r1"
	case elliptic.P384():
		return "secp384r1"
	case elliptic.P521():
		return "secp521r1"
	}
	return c.Params().Name
}

// baseAttrs are the attributes CloudHSM gives a freshly generated key.
func baseAttrs(keyType, class, label string, token bool) Attributes {
	a := Attributes{
		KeyType: keyType, Label: label, Class: class, Token: token,
		Destroyable: true, Extractable: true, Local: true, Modifiable: true,
		Private: true,
	}
	if class != ClassPublic {
		a.Sensitive, a.AlwaysSensitive = true, true
	}
	return a
}

// generate makes new key material and its records. Symmetric specs give one
// record, pairs give public then private.
func generate(spec KeySpec) ([]*keyRecord, error) {
	token := !spec.Session
	switch spec.Type {
	case TypeAES, TypeGenericSecret:
		if err := protocol.ValidateLabel(spec.Label); err != nil {
			return nil, err
		}
		n := spec.LengthBytes
		if spec.Type == TypeAES && n != 16 && n != 24 && n != 32 {
			return nil, fmt.Errorf("%w: key-length-bytes %d is not valid for aes: use 16, 24 or 32", ErrInvalid, n)
		}
		if spec.Type == TypeGenericSecret && (n < 1 || n > 800) {
			return nil, fmt.Errorf("%w: key-length-bytes %d is not valid for generic-secret: use 1 to 800", ErrInvalid, n)
		}
		material := make([]byte, n)
		if _, err := rand.Read(material); err != nil {
			return nil, fmt.Errorf("generate key material: %w", err)
		}
		a := baseAttrs(spec.Type, ClassSecret, spec.Label, token)
		a.KeyLengthBytes = n
		a.CheckValue = secretKCV(spec.Type, material)
		if err := applyAttrs(&a, spec.Attributes); err != nil {
			return nil, err
		}
		return []*keyRecord{{Attrs: a, Material: material}}, nil
	case TypeEC:
		return generateEC(spec, token)
	case TypeRSA:
		return generateRSA(spec, token)
	case TypeMLDSA:
		return generateMLDSA(spec, token)
	}
	return nil, fmt.Errorf("%w: unknown key type %q", ErrInvalid, spec.Type)
}

func generateEC(spec KeySpec, token bool) ([]*keyRecord, error) {
	if err := validatePairLabels(spec); err != nil {
		return nil, err
	}
	name := strings.ToLower(spec.Curve)
	if name == curveEd25519 {
		pub, priv, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return nil, fmt.Errorf("generate Ed25519 key: %w", err)
		}
		return pairRecords(spec, token, TypeEC, priv, pub)
	}
	curve, ok := curves[name]
	if !ok {
		if name == "secp256k1" {
			return nil, fmt.Errorf("%w: unsupported curve secp256k1: Go's standard library does not implement it and hsmsh uses no other curve library; use secp256r1, secp384r1 or secp521r1", ErrInvalid)
		}
		return nil, fmt.Errorf("%w: unknown curve %q: use one of %s", ErrInvalid, spec.Curve, strings.Join(CurveNames(), ", "))
	}
	priv, err := ecdsa.GenerateKey(curve, rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate EC key: %w", err)
	}
	return pairRecords(spec, token, TypeEC, priv, &priv.PublicKey)
}

func generateRSA(spec KeySpec, token bool) ([]*keyRecord, error) {
	if err := validatePairLabels(spec); err != nil {
		return nil, err
	}
	bits := spec.ModulusBits
	if bits < 2048 || bits > 8192 || bits%256 != 0 {
		return nil, fmt.Errorf("%w: modulus-size-bits %d is not valid: use a multiple of 256 from 2048 to 8192", ErrInvalid, bits)
	}
	if spec.Exponent < 65537 || spec.Exponent%2 == 0 {
		return nil, fmt.Errorf("%w: public-exponent %d is not valid: it must be odd and at least 65537", ErrInvalid, spec.Exponent)
	}
	if spec.Exponent != 65537 {
		// crypto/rsa generates keys with e = 65537 only, and hsmsh does not
		// write its own prime generation.
		return nil, fmt.Errorf("%w: public-exponent %d is not supported: hsmsh generates RSA keys with 65537", ErrInvalid, spec.Exponent)
	}
	priv, err := rsa.GenerateKey(rand.Reader, bits)
	if err != nil {
		return nil, fmt.Errorf("generate RSA key: %w", err)
	}
	return pairRecords(spec, token, TypeRSA, priv, &priv.PublicKey)
}

func validatePairLabels(spec KeySpec) error {
	if err := protocol.ValidateLabel(spec.PublicLabel); err != nil {
		return fmt.Errorf("public-label: %w", err)
	}
	if err := protocol.ValidateLabel(spec.PrivateLabel); err != nil {
		return fmt.Errorf("private-label: %w", err)
	}
	return nil
}

// pairRecords makes the public and private records of a key pair.
func pairRecords(spec KeySpec, token bool, keyType string, priv crypto.Signer, pub crypto.PublicKey) ([]*keyRecord, error) {
	privDER, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, fmt.Errorf("encode private key: %w", err)
	}
	pubDER, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("encode public key: %w", err)
	}
	pa := baseAttrs(keyType, ClassPublic, spec.PublicLabel, token)
	pa.Verify, pa.Encrypt = true, keyType == TypeRSA
	ka := baseAttrs(keyType, ClassPrivate, spec.PrivateLabel, token)
	ka.Sign, ka.Decrypt = true, keyType == TypeRSA
	kcv := publicKCV(pubDER)
	pa.CheckValue, ka.CheckValue = kcv, kcv
	fillPublicAttrs(&pa, pub)
	fillPublicAttrs(&ka, pub)
	pa.KeyLengthBytes = publicKeyLength(pub)
	ka.KeyLengthBytes = len(privDER)
	if err := applyAttrs(&pa, spec.PublicAttributes); err != nil {
		return nil, fmt.Errorf("public key: %w", err)
	}
	if err := applyAttrs(&ka, spec.PrivateAttributes); err != nil {
		return nil, fmt.Errorf("private key: %w", err)
	}
	return []*keyRecord{{Attrs: pa, Material: pubDER}, {Attrs: ka, Material: privDER}}, nil
}

// fillPublicAttrs sets the attributes that describe a public key, which
// CloudHSM shows on both halves of a pair.
func fillPublicAttrs(a *Attributes, pub crypto.PublicKey) {
	switch pub := pub.(type) {
	case *ecdsa.PublicKey:
		a.Curve = curveName(pub.Curve)
		// The uncompressed point; crypto/ecdh has no P-224, so not via ECDH.
		if b, err := pub.Bytes(); err == nil {
			a.ECPoint = "0x" + hex.EncodeToString(b)
		}
	case ed25519.PublicKey:
		a.Curve, a.ECPoint = curveEd25519, "0x"+hex.EncodeToString(pub)
	case *rsa.PublicKey:
		a.Modulus = "0x" + pub.N.Text(16)
		a.ModulusSizeBits = pub.N.BitLen()
		// In whole bytes, as CloudHSM prints it: 0x010001.
		a.PublicExponent = "0x" + hex.EncodeToString(big.NewInt(int64(pub.E)).Bytes())
	}
}

func applyAttrs(a *Attributes, attrs map[string]string) error {
	for name, v := range attrs {
		if err := a.Set(name, v, true); err != nil {
			return err
		}
	}
	return nil
}

// secretKCV is the key check value of a symmetric key: for AES, as the
// industry does, the first 3 bytes of the encryption of a zero block; for a
// generic secret, which has no cipher, the first 3 bytes of its SHA-1.
func secretKCV(keyType string, material []byte) string {
	var sum []byte
	if keyType == TypeAES {
		b, err := aes.NewCipher(material)
		if err != nil {
			return ""
		}
		sum = make([]byte, aes.BlockSize)
		b.Encrypt(sum, sum)
	} else {
		h := sha1.Sum(material)
		sum = h[:]
	}
	return "0x" + hex.EncodeToString(sum[:3])
}

// publicKCV is the check value of both halves of a pair: the first 3 bytes
// of the SHA-1 of the public key, so matching halves show the same value.
func publicKCV(pubDER []byte) string {
	h := sha1.Sum(pubDER)
	return "0x" + hex.EncodeToString(h[:3])
}

// sign signs with a private key record. ECDSA signatures are raw r‖s, each
// half padded to the curve's size, as CloudHSM returns them.
func sign(rec *keyRecord, req SignRequest) ([]byte, error) {
	return signWith(rec, req, nil)
}

// signWith is sign with the record's private key already parsed (nil:
// parse it here). Parsing a PKCS #8 key costs a scalar multiplication, as
// much as a third of the signature itself.
func signWith(rec *keyRecord, req SignRequest, parsed any) ([]byte, error) {
	if rec.Attrs.Class != ClassPrivate {
		return nil, fmt.Errorf("%w: key %s is a %s; signing needs a private key", ErrInvalid, rec.Ref, rec.Attrs.Class)
	}
	if !rec.Attrs.Sign {
		return nil, fmt.Errorf("%w: key %s does not have the sign attribute set", ErrPermission, rec.Ref)
	}
	if err := checkCurve(rec, req); err != nil {
		return nil, err
	}
	k := parsed
	if k == nil {
		var err error
		if k, err = parsePrivate(rec); err != nil {
			return nil, err
		}
	}
	switch k := k.(type) {
	case ed25519.PrivateKey:
		return signEd25519(k, req)
	case *mldsaPrivate:
		return signMLDSA(k, req)
	}
	digest, err := req.Hashed()
	if err != nil {
		return nil, err
	}
	switch k := k.(type) {
	case *ecdsa.PrivateKey:
		r, s, err := ecdsa.Sign(rand.Reader, k, digest)
		if err != nil {
			return nil, fmt.Errorf("ecdsa sign: %w", err)
		}
		size := (k.Curve.Params().BitSize + 7) / 8
		sig := make([]byte, 2*size)
		r.FillBytes(sig[:size])
		s.FillBytes(sig[size:])
		return sig, nil
	case *rsa.PrivateKey:
		if req.Mechanism == MechRSAPKCSPS {
			return rsa.SignPSS(rand.Reader, k, req.Hash, digest, &rsa.PSSOptions{SaltLength: req.PSSSaltLength(), Hash: req.Hash})
		}
		return rsa.SignPKCS1v15(rand.Reader, k, req.Hash, digest)
	}
	return nil, fmt.Errorf("key %s: unsupported private key type %T", rec.Ref, k)
}

// parsePrivate parses a private key record's material: PKCS #8, or for
// ML-DSA circl's encoding (x509 knows no ML-DSA).
func parsePrivate(rec *keyRecord) (any, error) {
	if rec.Attrs.KeyType == TypeMLDSA {
		k, err := parseMLDSAPrivate(rec.Material)
		if err != nil {
			return nil, fmt.Errorf("key %s: stored ML-DSA private key is unreadable: %w", rec.Ref, err)
		}
		return k, nil
	}
	k, err := x509.ParsePKCS8PrivateKey(rec.Material)
	if err != nil {
		return nil, fmt.Errorf("key %s: stored private key is unreadable: %w", rec.Ref, err)
	}
	return k, nil
}

// verify checks a signature with a public key record, or with the public
// half of a private key record.
func verify(rec *keyRecord, req SignRequest, sig []byte) error {
	if rec.Attrs.Class == ClassSecret {
		return fmt.Errorf("%w: key %s is a secret key; verifying needs a public or private key", ErrInvalid, rec.Ref)
	}
	if rec.Attrs.Class == ClassPublic && !rec.Attrs.Verify {
		return fmt.Errorf("%w: key %s does not have the verify attribute set", ErrPermission, rec.Ref)
	}
	if err := checkCurve(rec, req); err != nil {
		return err
	}
	pub, err := rec.publicKey()
	if err != nil {
		return err
	}
	switch pub := pub.(type) {
	case ed25519.PublicKey:
		return verifyEd25519(pub, req, sig)
	case *mldsaPublic:
		return verifyMLDSA(pub, req, sig)
	}
	digest, err := req.Hashed()
	if err != nil {
		return err
	}
	switch pub := pub.(type) {
	case *ecdsa.PublicKey:
		size := (pub.Curve.Params().BitSize + 7) / 8
		if len(sig) != 2*size {
			return fmt.Errorf("%w: an ecdsa signature on %s is %d bytes (r‖s), got %d", ErrBadSignature, curveName(pub.Curve), 2*size, len(sig))
		}
		r := new(big.Int).SetBytes(sig[:size])
		s := new(big.Int).SetBytes(sig[size:])
		if !ecdsa.Verify(pub, digest, r, s) {
			return ErrBadSignature
		}
		return nil
	case *rsa.PublicKey:
		var err error
		if req.Mechanism == MechRSAPKCSPS {
			err = rsa.VerifyPSS(pub, req.Hash, digest, sig, &rsa.PSSOptions{SaltLength: req.PSSSaltLength(), Hash: req.Hash})
		} else {
			err = rsa.VerifyPKCS1v15(pub, req.Hash, digest, sig)
		}
		if err != nil {
			return ErrBadSignature
		}
		return nil
	}
	return fmt.Errorf("key %s: unsupported public key type %T", rec.Ref, pub)
}

// publicKey returns the public key of a public or private key record; for
// ML-DSA a *mldsaPublic.
func (r *keyRecord) publicKey() (crypto.PublicKey, error) {
	if r.Attrs.KeyType == TypeMLDSA {
		return r.mldsaPublicKey()
	}
	switch r.Attrs.Class {
	case ClassPublic:
		pub, err := x509.ParsePKIXPublicKey(r.Material)
		if err != nil {
			return nil, fmt.Errorf("key %s: stored public key is unreadable: %w", r.Ref, err)
		}
		return pub, nil
	case ClassPrivate:
		k, err := x509.ParsePKCS8PrivateKey(r.Material)
		if err != nil {
			return nil, fmt.Errorf("key %s: stored private key is unreadable: %w", r.Ref, err)
		}
		return k.(crypto.Signer).Public(), nil
	}
	return nil, fmt.Errorf("%w: key %s is a secret key and has no public key", ErrInvalid, r.Ref)
}

// publicPEM encodes a record's public key as a PEM "PUBLIC KEY" block
// (SubjectPublicKeyInfo), the form openssl reads.
func publicPEM(r *keyRecord) ([]byte, error) {
	pub, err := r.publicKey()
	if err != nil {
		return nil, err
	}
	if pub, ok := pub.(*mldsaPublic); ok {
		return mldsaPEM(pub)
	}
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("encode public key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), nil
}

// parseImport reads a public key PEM into a record, checking that it is the
// kind the user said it is.
func parseImport(spec ImportSpec) (*keyRecord, error) {
	if err := protocol.ValidateLabel(spec.Label); err != nil {
		return nil, err
	}
	if len(spec.PEM) > protocol.MaxImportPEM {
		return nil, fmt.Errorf("%w: the PEM file is %d bytes; a public key is at most %d", ErrInvalid, len(spec.PEM), protocol.MaxImportPEM)
	}
	block, _ := pem.Decode(spec.PEM)
	if block == nil {
		return nil, fmt.Errorf("%w: no PEM block found: the file must hold a -----BEGIN PUBLIC KEY----- block", ErrInvalid)
	}
	var pub crypto.PublicKey
	var err error
	switch block.Type {
	case "PUBLIC KEY":
		pub, err = x509.ParsePKIXPublicKey(block.Bytes)
	case "RSA PUBLIC KEY":
		pub, err = x509.ParsePKCS1PublicKey(block.Bytes)
	default:
		return nil, fmt.Errorf("%w: PEM block is %q; key import pem takes a PUBLIC KEY block (private keys are never imported in clear)", ErrInvalid, block.Type)
	}
	if err != nil {
		if k, perr := parseMLDSASPKI(block.Bytes); perr == nil {
			// key import pem's classes are ec-public and rsa-public only.
			return nil, fmt.Errorf("%w: the PEM holds an %s public key; key import pem takes ec-public or rsa-public keys only: generate ML-DSA keys in the HSM with key generate-asymmetric-pair ml-dsa", ErrInvalid, k.set.name)
		}
		return nil, fmt.Errorf("%w: the PEM public key does not parse: %v", ErrInvalid, err)
	}
	var keyType string
	switch p := pub.(type) {
	case *ecdsa.PublicKey:
		keyType = TypeEC
		if _, ok := curves[curveName(p.Curve)]; !ok {
			return nil, fmt.Errorf("%w: unsupported curve %s", ErrInvalid, p.Curve.Params().Name)
		}
	case *rsa.PublicKey:
		keyType = TypeRSA
		if p.N.BitLen() < 2048 {
			return nil, fmt.Errorf("%w: RSA public key is %d bits; at least 2048 are required", ErrInvalid, p.N.BitLen())
		}
	case *ecdh.PublicKey:
		return nil, fmt.Errorf("%w: X25519/ECDH keys cannot be imported", ErrInvalid)
	default:
		return nil, fmt.Errorf("%w: unsupported public key type %T", ErrInvalid, pub)
	}
	if want := keyType + "-public"; spec.Class != want {
		return nil, fmt.Errorf("%w: --key-type-class is %s but the PEM holds an %s public key: use --key-type-class %s", ErrInvalid, spec.Class, keyType, want)
	}
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("encode public key: %w", err)
	}
	a := baseAttrs(keyType, ClassPublic, spec.Label, !spec.Session)
	a.Local = false // imported, not generated on the HSM
	a.Verify, a.Encrypt = true, keyType == TypeRSA
	a.CheckValue = publicKCV(der)
	fillPublicAttrs(&a, pub)
	a.KeyLengthBytes = publicKeyLength(pub)
	if err := applyAttrs(&a, spec.Attributes); err != nil {
		return nil, err
	}
	return &keyRecord{Attrs: a, Material: der}, nil
}

// curveEd25519 is CloudHSM's name for the Ed25519 curve of an EC key.
const curveEd25519 = "ed25519"

// checkCurve checks the mechanism against the key: its type, and between
// ECDSA and Ed25519, its curve.
func checkCurve(rec *keyRecord, req SignRequest) error {
	if err := req.CheckMechanism(rec.Attrs.KeyType); err != nil {
		return err
	}
	isEd := rec.Attrs.Curve == curveEd25519
	switch req.Mechanism {
	case MechECDSA:
		if isEd {
			return fmt.Errorf("%w: key %s is on curve ed25519: sign with crypto sign ed25519 or ed25519ph", ErrInvalid, rec.Ref)
		}
	case MechEd25519, MechEd25519ph:
		if !isEd {
			return fmt.Errorf("%w: mechanism %s needs a key on curve ed25519; key %s is on %s", ErrInvalid, req.Mechanism, rec.Ref, rec.Attrs.Curve)
		}
	}
	return nil
}

// ed25519Message is what Ed25519 signs: the data itself (pure), or for
// Ed25519ph its SHA-512, which the caller may have taken already.
func ed25519Message(req SignRequest) ([]byte, *ed25519.Options, error) {
	if req.Mechanism == MechEd25519 {
		if req.Digest {
			return nil, nil, fmt.Errorf("%w: ed25519 signs the data itself, not a digest: use ed25519ph for a SHA-512 digest", ErrInvalid)
		}
		return req.Data, &ed25519.Options{}, nil
	}
	opts := &ed25519.Options{Hash: crypto.SHA512}
	if req.Digest {
		if len(req.Data) != sha512.Size {
			return nil, nil, fmt.Errorf("%w: ed25519ph needs a %d-byte SHA-512 digest, got %d bytes", ErrInvalid, sha512.Size, len(req.Data))
		}
		return req.Data, opts, nil
	}
	sum := sha512.Sum512(req.Data)
	return sum[:], opts, nil
}

func signEd25519(k ed25519.PrivateKey, req SignRequest) ([]byte, error) {
	msg, opts, err := ed25519Message(req)
	if err != nil {
		return nil, err
	}
	return k.Sign(nil, msg, opts)
}

func verifyEd25519(pub ed25519.PublicKey, req SignRequest, sig []byte) error {
	msg, opts, err := ed25519Message(req)
	if err != nil {
		return err
	}
	if ed25519.VerifyWithOptions(pub, msg, sig, opts) != nil {
		return ErrBadSignature
	}
	return nil
}

// publicKeyLength is a public key's key-length-bytes as CloudHSM reports
// it: an EC key's point (57 bytes on secp224r1, per the pages), an
// Ed25519 key's 32 bytes, and for RSA twice the modulus's bytes (512 for
// a 2048-bit key, per the pages). A private key's is its PKCS #8 length
// (1217 for RSA 2048, 122 for secp224r1).
func publicKeyLength(pub crypto.PublicKey) int {
	switch pub := pub.(type) {
	case *ecdsa.PublicKey:
		if b, err := pub.Bytes(); err == nil {
			return len(b)
		}
	case ed25519.PublicKey:
		return len(pub)
	case *rsa.PublicKey:
		return 2 * ((pub.N.BitLen() + 7) / 8)
	}
	return 0
}
