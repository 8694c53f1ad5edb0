package hsm

import (
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/subtle"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/hsmsh/hsmsh/hsmcore/keywrap"
	"github.com/hsmsh/hsmsh/hsmcore/protocol"
	"github.com/hsmsh/hsmsh/hsmcore/quorum"
)

// Key wrap and unwrap (CloudHSM CLI's key wrap and key unwrap). Wrapping
// happens here, inside the HSM: the caller gets the wrapped bytes only.
// The attribute table decides: the payload must be extractable, the
// wrapping key must have wrap (and trusted, when the payload says
// wrap-with-trusted), the unwrapping key must have unwrap. Only a key's
// owner wraps it. Secret keys travel as their bytes, private keys as
// PKCS #8, as CloudHSM wraps them.

const (
	pathKeyWrap   = "key wrap"
	pathKeyUnwrap = "key unwrap"
)

// rsaAESKeyBits is the size of the AES key rsa-aes draws per wrap.
const rsaAESKeyBits = 256

func isAESMechanism(m string) bool {
	switch m {
	case protocol.WrapAESGCM, protocol.WrapCloudHSMAESGCM, protocol.WrapAESNoPad, protocol.WrapAESPKCS5Pad, protocol.WrapAESZeroPad:
		return true
	}
	return false
}

func isRSAMechanism(m string) bool {
	switch m {
	case protocol.WrapRSAAES, protocol.WrapRSAOAEP, protocol.WrapRSAPKCS:
		return true
	}
	return false
}

func unknownMechanism(m string) error {
	return fmt.Errorf("%w: unknown wrapping mechanism %q: use one of %s", ErrInvalid, m, strings.Join(protocol.WrapMechanisms, ", "))
}

// wrapKey wraps a.Payload under a.Wrapping for c.
func (h *hsm) wrapKey(c Caller, a protocol.WrapArgs, may func(*keyRecord) bool, owned func(*keyRecord) bool) (*protocol.WrapReply, error) {
	if c.Role != RoleCryptoUser {
		return nil, fmt.Errorf("%w: only a crypto user wraps keys", ErrPermission)
	}
	m := a.Params.Mechanism
	if !isAESMechanism(m) && !isRSAMechanism(m) {
		return nil, unknownMechanism(m)
	}
	payload, err := h.stored(a.Payload)
	if err != nil {
		return nil, err
	}
	if !may(payload) {
		return nil, fmt.Errorf("%w: key %s", ErrKeyNotFound, a.Payload)
	}
	if !owned(payload) {
		return nil, fmt.Errorf("%w: only the owner of key %s may wrap it; users it is shared with may only use it", ErrPermission, a.Payload)
	}
	if payload.Attrs.Class == ClassPublic {
		return nil, fmt.Errorf("%w: key %s is a public key: wrap a secret or private key (get-public-key gives a public key as it is)", ErrInvalid, a.Payload)
	}
	if payload.Attrs.KeyType == TypeMLDSA {
		// Its material is circl's encoding, not the PKCS #8 every unwrap
		// (hsmsh's and CloudHSM's) expects, and x509 cannot write ML-DSA.
		return nil, fmt.Errorf("%w: key %s is an ML-DSA key, and hsmsh does not wrap ML-DSA keys (its Go crypto libraries have no PKCS #8 for ML-DSA): keep the key in the HSM, or generate-file its public key", ErrInvalid, a.Payload)
	}
	if !payload.Attrs.Extractable {
		return nil, fmt.Errorf("%w: the payload key %s is not extractable (attribute extractable is false), so it cannot be wrapped", ErrPermission, a.Payload)
	}
	wrapping, err := h.stored(a.Wrapping)
	if err != nil {
		return nil, fmt.Errorf("wrapping key: %w", err)
	}
	if !may(wrapping) {
		return nil, fmt.Errorf("%w: wrapping key %s", ErrKeyNotFound, a.Wrapping)
	}
	if !wrapping.Attrs.Wrap {
		return nil, fmt.Errorf("%w: key %s cannot wrap: its wrap attribute is false", ErrPermission, a.Wrapping)
	}
	if payload.Attrs.WrapWithTrusted && !wrapping.Attrs.Trusted {
		return nil, fmt.Errorf("%w: key %s has wrap-with-trusted set, and wrapping key %s is not trusted", ErrPermission, a.Payload, a.Wrapping)
	}
	if err := h.wrapApprovals(c, []keyApproval{
		{payload, a.PayloadApproval, "payload"},
		{wrapping, a.WrappingApproval, "wrapping"},
	}); err != nil {
		return nil, err
	}
	h.delay()
	if isAESMechanism(m) {
		if wrapping.Attrs.KeyType != TypeAES {
			return nil, fmt.Errorf("%w: mechanism %s wraps with an AES key; key %s is %s %s", ErrInvalid, m, a.Wrapping, wrapping.Attrs.KeyType, wrapping.Attrs.Class)
		}
		return wrapAES(a.Params, wrapping.Material, payload.Material, payload.Attrs.Class == ClassSecret)
	}
	if wrapping.Attrs.KeyType != TypeRSA || wrapping.Attrs.Class != ClassPublic {
		return nil, fmt.Errorf("%w: mechanism %s wraps with an RSA public key; key %s is %s %s", ErrInvalid, m, a.Wrapping, wrapping.Attrs.KeyType, wrapping.Attrs.Class)
	}
	pk, err := x509.ParsePKIXPublicKey(wrapping.Material)
	if err != nil {
		return nil, fmt.Errorf("key %s: stored public key is unreadable: %w", a.Wrapping, err)
	}
	pub, ok := pk.(*rsa.PublicKey)
	if !ok {
		return nil, fmt.Errorf("%w: key %s is not an RSA key", ErrInvalid, a.Wrapping)
	}
	data, err := wrapRSA(a.Params, pub, payload.Material)
	if err != nil {
		return nil, err
	}
	return &protocol.WrapReply{Data: data}, nil
}

// keyApproval is one key of a key wrap and the approval given for it.
type keyApproval struct {
	r    *keyRecord
	a    *protocol.Approval
	what string // "payload" or "wrapping": the flag is --WHAT-approval
}

// wrapApprovals checks the manage quorum of both keys of a key wrap, and
// spends their tokens only once both are good: a missing, wrong, expired
// or spent token for one key leaves the other's token unspent, to serve
// again. (approveIn verifies and spends in one step, which for two keys
// would spend the first token before the second is looked at.)
//
// Both are spent by one committed entry, which refuses both if either was
// spent in the meantime.
func (h *hsm) wrapApprovals(c Caller, keys []keyApproval) error {
	// Missing approvals first, with the flag to give.
	for _, k := range keys {
		if k.r.ManageQuorum > 1 && k.a == nil {
			return fmt.Errorf("%s key: %w (key %s has a manage quorum of %d: give --%s-approval)", k.what, quorum.ErrApprovalRequired, k.r.Ref, k.r.ManageQuorum, k.what)
		}
	}
	checked := make([]approvalResult, len(keys))
	for i, k := range keys {
		if !h.needsManageApproval(k.r, pathKeyWrap) {
			continue
		}
		res, err := h.checkApproval(c, quorum.ServiceKeyManagement, k.r.Ref, pathKeyWrap, k.a)
		if err != nil {
			return fmt.Errorf("%s key: %w", k.what, err)
		}
		for j := range i {
			if res.Nonce != "" && res.Nonce == checked[j].Nonce {
				// One key wrapping itself, given one token twice.
				return fmt.Errorf("%s key: %w: the %s key's token was given for it too; a token serves once, so each needs its own", k.what, ErrPermission, keys[j].what)
			}
		}
		checked[i] = res
	}
	// One committed entry spends both, or neither.
	return h.spendApprovals(quorum.ServiceKeyManagement, checked...)
}

// needsManageApproval says whether a wrap or unwrap with r needs a
// key-management approval: r's manage quorum, or a rule set on path.
func (h *hsm) needsManageApproval(r *keyRecord, path string) bool {
	return r.ManageQuorum > 1 || len(h.rules[path]) > 0
}

// keyManageApproval checks a key's manage quorum (key-management
// service) for a wrap or unwrap, in the same call.
func (h *hsm) keyManageApproval(c Caller, r *keyRecord, a *protocol.Approval, path string) error {
	if !h.needsManageApproval(r, path) {
		return nil
	}
	return h.approveIn(c, quorum.ServiceKeyManagement, r.Ref, path, a)
}

func gcmOf(kek []byte, tagBits int) (cipher.AEAD, error) {
	if tagBits%8 != 0 || tagBits < 64 || tagBits > 128 {
		return nil, fmt.Errorf("%w: tag-length-bits %d: use a multiple of 8 from 64 to 128", ErrInvalid, tagBits)
	}
	b, err := aes.NewCipher(kek)
	if err != nil {
		return nil, err
	}
	if tagBits >= 96 {
		return cipher.NewGCMWithTagSize(b, tagBits/8)
	}
	full, err := cipher.NewGCM(b)
	if err != nil {
		return nil, err
	}
	return &shortTagGCM{full: full, block: b, tag: tagBits / 8}, nil
}

// shortTagGCM is AES-GCM with a tag of 8 to 11 bytes, which CloudHSM's
// aes-gcm wrap allows and Go's GCM does not (it takes 12 to 16): NIST SP
// 800-38D's truncated tag, the leading bytes of the full one. Seal cuts
// the full tag; Open decrypts with the same counter stream GCM uses
// (AES-CTR from the IV's J0 + 1) and checks the cut tag against the one
// sealing the plaintext again gives, in constant time. 96-bit IVs only,
// as hsmsh makes them.
type shortTagGCM struct {
	full  cipher.AEAD
	block cipher.Block
	tag   int
}

func (g *shortTagGCM) NonceSize() int { return 12 }
func (g *shortTagGCM) Overhead() int  { return g.tag }

func (g *shortTagGCM) Seal(dst, nonce, plaintext, ad []byte) []byte {
	sealed := g.full.Seal(nil, nonce, plaintext, ad)
	n := len(sealed) - g.full.Overhead()
	return append(dst, sealed[:n+g.tag]...)
}

func (g *shortTagGCM) Open(dst, nonce, data, ad []byte) ([]byte, error) {
	if len(nonce) != 12 || len(data) < g.tag {
		return nil, errors.New("cipher: message authentication failed")
	}
	ct, tag := data[:len(data)-g.tag], data[len(data)-g.tag:]
	ctr := make([]byte, 16)
	copy(ctr, nonce)
	ctr[15] = 2 // J0 = IV || 0^31 || 1; the data starts at inc32(J0)
	plain := make([]byte, len(ct))
	cipher.NewCTR(g.block, ctr).XORKeyStream(plain, ct)
	want := g.full.Seal(nil, nonce, plain, ad)
	if subtle.ConstantTimeCompare(want[len(ct):len(ct)+g.tag], tag) != 1 {
		clear(plain)
		return nil, errors.New("cipher: message authentication failed")
	}
	return append(dst, plain...), nil
}

// wrapAES wraps payload under kek; secret says it is a secret key's raw
// bytes (a private key's PKCS #8 gives its own length).
func wrapAES(p protocol.WrapParams, kek, payload []byte, secret bool) (*protocol.WrapReply, error) {
	switch p.Mechanism {
	case protocol.WrapAESGCM, protocol.WrapCloudHSMAESGCM:
		g, err := gcmOf(kek, p.TagLengthBits)
		if err != nil {
			return nil, err
		}
		iv := make([]byte, g.NonceSize())
		if _, err := rand.Read(iv); err != nil {
			return nil, err
		}
		if p.Mechanism == protocol.WrapCloudHSMAESGCM {
			return &protocol.WrapReply{Data: g.Seal(iv, iv, payload, p.AAD)}, nil
		}
		return &protocol.WrapReply{IV: iv, Data: g.Seal(nil, iv, payload, p.AAD)}, nil
	case protocol.WrapAESNoPad:
		if len(payload)%8 != 0 || len(payload) < 16 {
			return nil, fmt.Errorf("%w: aes-no-pad wraps a key of a multiple of 8 bytes, at least 16; this one is %d bytes: use aes-pkcs5-pad or aes-zero-pad", ErrInvalid, len(payload))
		}
		data, err := keywrap.Wrap(kek, payload)
		return &protocol.WrapReply{Data: data}, err
	case protocol.WrapAESPKCS5Pad:
		n := 8 - len(payload)%8
		padded := append(append(make([]byte, 0, len(payload)+n), payload...), make([]byte, n)...)
		for i := len(payload); i < len(padded); i++ {
			padded[i] = byte(n)
		}
		defer clear(padded)
		return padWrap(kek, padded)
	case protocol.WrapAESZeroPad:
		if len(payload)%8 != 0 && secret {
			return nil, fmt.Errorf("%w: aes-zero-pad would pad this %d-byte key with zeros that unwrapping cannot tell from the key: use aes-pkcs5-pad", ErrInvalid, len(payload))
		}
		padded := make([]byte, (len(payload)+7)/8*8)
		copy(padded, payload)
		defer clear(padded)
		return padWrap(kek, padded)
	}
	return nil, unknownMechanism(p.Mechanism)
}

func padWrap(kek, padded []byte) (*protocol.WrapReply, error) {
	if len(padded) < 16 {
		return nil, fmt.Errorf("%w: the padded key is %d bytes; AES key wrap needs at least 16", ErrInvalid, len(padded))
	}
	data, err := keywrap.Wrap(kek, padded)
	return &protocol.WrapReply{Data: data}, err
}

// oaepHash reads the RSA mechanisms' hash and MGF, which must name the same
// hash: Go's RSA-OAEP uses one hash for both.
func oaepHash(p protocol.WrapParams) (crypto.Hash, error) {
	h, ok := Hashes[strings.ToLower(p.Hash)]
	if !ok {
		return 0, fmt.Errorf("%w: hash-function %q: use sha1, sha224, sha256, sha384 or sha512", ErrInvalid, p.Hash)
	}
	if want := "mgf1-" + strings.ToLower(p.Hash); strings.ToLower(p.MGF) != want {
		return 0, fmt.Errorf("%w: mgf %q: the mask generation function must use the hash function's hash (%s)", ErrInvalid, p.MGF, want)
	}
	return h, nil
}

func wrapRSA(p protocol.WrapParams, pub *rsa.PublicKey, payload []byte) ([]byte, error) {
	switch p.Mechanism {
	case protocol.WrapRSAPKCS:
		// CloudHSM CLI offers rsa-pkcs, so hsmsh does: runbooks use it.
		// SECURITY.md says to prefer rsa-oaep.
		//lint:ignore SA1019 a CloudHSM CLI mechanism, kept for compatibility
		data, err := rsa.EncryptPKCS1v15(rand.Reader, pub, payload)
		if err != nil {
			return nil, fmt.Errorf("%w: rsa-pkcs: %v (RSA wraps only a key shorter than its modulus: use rsa-aes for a private key)", ErrInvalid, err)
		}
		return data, nil
	case protocol.WrapRSAOAEP:
		hash, err := oaepHash(p)
		if err != nil {
			return nil, err
		}
		data, err := rsa.EncryptOAEP(hash.New(), rand.Reader, pub, payload, nil)
		if err != nil {
			return nil, fmt.Errorf("%w: rsa-oaep: %v (RSA wraps only a key shorter than its modulus: use rsa-aes for a private key)", ErrInvalid, err)
		}
		return data, nil
	case protocol.WrapRSAAES:
		hash, err := oaepHash(p)
		if err != nil {
			return nil, err
		}
		k := make([]byte, rsaAESKeyBits/8)
		if _, err := rand.Read(k); err != nil {
			return nil, err
		}
		defer clear(k)
		head, err := rsa.EncryptOAEP(hash.New(), rand.Reader, pub, k, nil)
		if err != nil {
			return nil, fmt.Errorf("%w: rsa-aes: %v", ErrInvalid, err)
		}
		tail, err := keywrap.WrapPad(k, payload)
		if err != nil {
			return nil, err
		}
		return append(head, tail...), nil
	}
	return nil, unknownMechanism(p.Mechanism)
}

// unwrapUserKey makes a key for c from wrapped data, under a.Ref.
func (h *hsm) unwrapUserKey(c Caller, a protocol.UnwrapArgs, may func(*keyRecord) bool) (*protocol.CreateReply, error) {
	if c.Role != RoleCryptoUser {
		return nil, fmt.Errorf("%w: only a crypto user unwraps keys", ErrPermission)
	}
	s := a.Spec
	m := s.Params.Mechanism
	if !isAESMechanism(m) && !isRSAMechanism(m) {
		return nil, unknownMechanism(m)
	}
	if err := h.checkNewRef(a.Ref); err != nil {
		return nil, err
	}
	if err := protocol.ValidateLabel(s.Label); err != nil {
		return nil, err
	}
	shared, err := h.checkSharing(c.Username, s.ShareWith)
	if err != nil {
		return nil, err
	}
	if err := protocol.CheckKeyQuorum(s.UseQuorum, 1+len(shared), "use-key-quorum-value"); err != nil {
		return nil, err
	}
	if err := protocol.CheckKeyQuorum(s.ManageQuorum, 1+len(shared), "manage-key-quorum-value"); err != nil {
		return nil, err
	}
	uk, err := h.stored(s.Unwrapping)
	if err != nil {
		return nil, fmt.Errorf("unwrapping key: %w", err)
	}
	if !may(uk) {
		return nil, fmt.Errorf("%w: unwrapping key %s", ErrKeyNotFound, s.Unwrapping)
	}
	if !uk.Attrs.Unwrap {
		return nil, fmt.Errorf("%w: key %s cannot unwrap: its unwrap attribute is false", ErrPermission, s.Unwrapping)
	}
	if err := h.keyManageApproval(c, uk, s.Approval, pathKeyUnwrap); err != nil {
		return nil, fmt.Errorf("unwrapping key: %w", err)
	}
	h.delay()
	var plain []byte
	if isAESMechanism(m) {
		if uk.Attrs.KeyType != TypeAES {
			return nil, fmt.Errorf("%w: mechanism %s unwraps with an AES key; key %s is %s %s", ErrInvalid, m, s.Unwrapping, uk.Attrs.KeyType, uk.Attrs.Class)
		}
		plain, err = unwrapAES(s.Params, uk.Material, s.Data)
	} else {
		if uk.Attrs.KeyType != TypeRSA || uk.Attrs.Class != ClassPrivate {
			return nil, fmt.Errorf("%w: mechanism %s unwraps with an RSA private key; key %s is %s %s", ErrInvalid, m, s.Unwrapping, uk.Attrs.KeyType, uk.Attrs.Class)
		}
		var priv any
		if priv, err = h.privateKey(uk); err != nil {
			return nil, err
		}
		rk, ok := priv.(*rsa.PrivateKey)
		if !ok {
			return nil, fmt.Errorf("%w: key %s is not an RSA key", ErrInvalid, s.Unwrapping)
		}
		plain, err = unwrapRSA(s.Params, rk, s.Data)
	}
	if err != nil {
		return nil, err
	}
	defer clear(plain)
	r, err := unwrappedRecord(s, plain, m == protocol.WrapAESZeroPad)
	if err != nil {
		return nil, err
	}
	r.Ref, r.Owner, r.Shared, r.Created = a.Ref, c.Username, shared, time.Now().UTC()
	r.UseQuorum, r.ManageQuorum = s.UseQuorum, s.ManageQuorum
	if s.Session {
		r.Session = c.Session
	}
	defer clear(r.Material)
	if err := h.PutKeys([]*keyRecord{r}); err != nil {
		return nil, err
	}
	return h.created([]*keyRecord{r}, a.Wrap && !s.Session)
}

// errUnwrap is data that does not unwrap: CloudHSM says no more than that
// (it does not tell a wrong key from altered data).
func errUnwrap(m string) error {
	return fmt.Errorf("%w: %s: the data does not unwrap under this key (a wrong key, wrong parameters, or altered data)", ErrInvalid, m)
}

func unwrapAES(p protocol.WrapParams, kek, data []byte) ([]byte, error) {
	switch p.Mechanism {
	case protocol.WrapAESGCM, protocol.WrapCloudHSMAESGCM:
		g, err := gcmOf(kek, p.TagLengthBits)
		if err != nil {
			return nil, err
		}
		iv := p.IV
		if p.Mechanism == protocol.WrapCloudHSMAESGCM {
			if len(data) < g.NonceSize() {
				return nil, errUnwrap(p.Mechanism)
			}
			iv, data = data[:g.NonceSize()], data[g.NonceSize():]
		} else if len(iv) != g.NonceSize() {
			return nil, fmt.Errorf("%w: aes-gcm needs the %d-byte IV key wrap returned (--iv), got %d bytes", ErrInvalid, g.NonceSize(), len(iv))
		}
		plain, err := g.Open(nil, iv, data, p.AAD)
		if err != nil {
			return nil, errUnwrap(p.Mechanism)
		}
		return plain, nil
	case protocol.WrapAESNoPad, protocol.WrapAESZeroPad:
		plain, err := keywrap.Unwrap(kek, data)
		if err != nil {
			return nil, errUnwrap(p.Mechanism)
		}
		return plain, nil
	case protocol.WrapAESPKCS5Pad:
		plain, err := keywrap.Unwrap(kek, data)
		if err != nil {
			return nil, errUnwrap(p.Mechanism)
		}
		n := int(plain[len(plain)-1])
		bad := n < 1 || n > 8 || n > len(plain)
		for i := len(plain) - n; !bad && i < len(plain); i++ {
			bad = plain[i] != byte(n)
		}
		if bad {
			clear(plain)
			return nil, errUnwrap(p.Mechanism)
		}
		return plain[:len(plain)-n], nil
	}
	return nil, unknownMechanism(p.Mechanism)
}

func unwrapRSA(p protocol.WrapParams, priv *rsa.PrivateKey, data []byte) ([]byte, error) {
	switch p.Mechanism {
	case protocol.WrapRSAPKCS:
		// A PKCS #1 v1.5 unwrap that fails tells the caller so: a padding
		// oracle for whoever may use this unwrapping key (a logged-in
		// crypto user who owns it or shares it). Every failure reads the
		// same; SECURITY.md says to prefer rsa-oaep.
		//lint:ignore SA1019 a CloudHSM CLI mechanism, kept for compatibility
		plain, err := rsa.DecryptPKCS1v15(nil, priv, data)
		if err != nil {
			return nil, errUnwrap(p.Mechanism)
		}
		return plain, nil
	case protocol.WrapRSAOAEP:
		hash, err := oaepHash(p)
		if err != nil {
			return nil, err
		}
		plain, err := rsa.DecryptOAEP(hash.New(), nil, priv, data, nil)
		if err != nil {
			return nil, errUnwrap(p.Mechanism)
		}
		return plain, nil
	case protocol.WrapRSAAES:
		hash, err := oaepHash(p)
		if err != nil {
			return nil, err
		}
		n := priv.Size()
		if len(data) <= n {
			return nil, errUnwrap(p.Mechanism)
		}
		k, err := rsa.DecryptOAEP(hash.New(), nil, priv, data[:n], nil)
		if err != nil {
			return nil, errUnwrap(p.Mechanism)
		}
		defer clear(k)
		if len(k) != 16 && len(k) != 24 && len(k) != 32 {
			return nil, errUnwrap(p.Mechanism)
		}
		plain, err := keywrap.UnwrapPad(k, data[n:])
		if err != nil {
			return nil, errUnwrap(p.Mechanism)
		}
		return plain, nil
	}
	return nil, unknownMechanism(p.Mechanism)
}

// unwrappedRecord makes the new key's record from the unwrapped bytes: a
// secret key's bytes, or a private key in PKCS #8. zeroPadded says the
// bytes may carry zero padding: a private key's DER says its own length;
// a secret key's zeros are kept, as CloudHSM cannot tell them apart
// either.
func unwrappedRecord(s protocol.UnwrapSpec, plain []byte, zeroPadded bool) (*keyRecord, error) {
	token := !s.Session
	switch strings.ToLower(s.KeyTypeClass) {
	case TypeAES, TypeGenericSecret:
		t := strings.ToLower(s.KeyTypeClass)
		n := len(plain)
		if t == TypeAES && n != 16 && n != 24 && n != 32 {
			return nil, fmt.Errorf("%w: the unwrapped key is %d bytes, not an AES key (16, 24 or 32): check --key-type-class", ErrInvalid, n)
		}
		if t == TypeGenericSecret && (n < 1 || n > 800) {
			return nil, fmt.Errorf("%w: the unwrapped key is %d bytes; a generic secret is 1 to 800", ErrInvalid, n)
		}
		a := baseAttrs(t, ClassSecret, s.Label, token)
		a.Local, a.KeyLengthBytes = false, n
		a.CheckValue = secretKCV(t, plain)
		if err := applyAttrs(&a, s.Attributes); err != nil {
			return nil, err
		}
		outside(&a)
		return &keyRecord{Attrs: a, Material: append([]byte(nil), plain...)}, nil
	case "ec-private", "rsa-private":
		der := plain
		if zeroPadded {
			der = trimDER(plain)
		}
		k, err := x509.ParsePKCS8PrivateKey(der)
		if name, ok := mldsaOIDOf(der); err != nil && ok {
			return nil, fmt.Errorf("%w: the unwrapped data is an %s private key, and hsmsh does not unwrap ML-DSA keys (its Go crypto libraries have no PKCS #8 for ML-DSA): generate ML-DSA keys in the HSM with key generate-asymmetric-pair ml-dsa", ErrInvalid, name)
		}
		if err != nil {
			return nil, fmt.Errorf("%w: the unwrapped data is not a PKCS #8 private key: check --key-type-class and the mechanism's parameters", ErrInvalid)
		}
		var keyType string
		var pub crypto.PublicKey
		switch k := k.(type) {
		case *ecdsa.PrivateKey:
			if _, ok := curves[curveName(k.Curve)]; !ok {
				return nil, fmt.Errorf("%w: the unwrapped EC key is on %s, a curve hsmsh does not serve", ErrInvalid, k.Curve.Params().Name)
			}
			keyType, pub = TypeEC, &k.PublicKey
		case ed25519.PrivateKey:
			keyType, pub = TypeEC, k.Public()
		case *rsa.PrivateKey:
			keyType, pub = TypeRSA, &k.PublicKey
		default:
			return nil, fmt.Errorf("%w: the unwrapped key is a %T, not an EC or RSA key", ErrInvalid, k)
		}
		if want := strings.TrimSuffix(strings.ToLower(s.KeyTypeClass), "-private"); want != keyType {
			return nil, fmt.Errorf("%w: --key-type-class says %s, the unwrapped key is %s", ErrInvalid, s.KeyTypeClass, keyType+"-private")
		}
		material, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			return nil, err
		}
		pubDER, err := x509.MarshalPKIXPublicKey(pub)
		if err != nil {
			return nil, err
		}
		a := baseAttrs(keyType, ClassPrivate, s.Label, token)
		a.Local = false
		a.Sign, a.Decrypt = true, keyType == TypeRSA
		a.CheckValue = publicKCV(pubDER)
		fillPublicAttrs(&a, pub)
		a.KeyLengthBytes = len(material)
		if err := applyAttrs(&a, s.Attributes); err != nil {
			return nil, err
		}
		outside(&a)
		return &keyRecord{Attrs: a, Material: material}, nil
	case "mldsa-private", "ml-dsa-private":
		return nil, fmt.Errorf("%w: key-type-class %s: hsmsh does not unwrap ML-DSA keys (its Go crypto libraries have no PKCS #8 for ML-DSA): generate ML-DSA keys in the HSM with key generate-asymmetric-pair ml-dsa", ErrInvalid, s.KeyTypeClass)
	case "des3":
		return nil, fmt.Errorf("%w: key-type-class des3: hsmsh has no Triple DES keys (Go's standard library keeps DES for old protocols only)", ErrInvalid)
	}
	return nil, fmt.Errorf("%w: key-type-class %q: use aes, generic-secret, ec-private or rsa-private", ErrInvalid, s.KeyTypeClass)
}

// outside marks a key that existed outside the HSM, as PKCS #11 does: it
// was not always sensitive, and it was extractable once.
func outside(a *Attributes) {
	a.AlwaysSensitive, a.NeverExtractable = false, false
}

// trimDER cuts zero padding after a DER SEQUENCE, by the length its
// header gives; data that is no SEQUENCE is returned as it is, for the
// parser to refuse.
func trimDER(b []byte) []byte {
	if len(b) < 2 || b[0] != 0x30 {
		return b
	}
	n, hdr := int(b[1]), 2
	if n&0x80 != 0 {
		k := n & 0x7f
		if k == 0 || k > 4 || len(b) < 2+k {
			return b
		}
		n = 0
		for _, c := range b[2 : 2+k] {
			n = n<<8 | int(c)
		}
		hdr += k
	}
	if hdr+n > len(b) || hdr+n < hdr {
		return b
	}
	return b[:hdr+n]
}
