package authsession

import (
	"bytes"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"fmt"
	"time"
)

// Hello is step 1, client → HSM.
type Hello struct {
	Client string `json:"client"` // the client install's id (printable, ≤ 128 bytes)
	Q1     []byte `json:"q1"`     // uncompressed P-384 point
	Sig    []byte `json:"sig"`    // ASN.1 ECDSA over SHA-384 of a domain-separated transcript of (Client, Q1)
}

// Reply is step 2, HSM → client.
type Reply struct {
	HSM string `json:"hsm"`
	Q2  []byte `json:"q2"`
	ESK []byte `json:"esk"` // nonce ‖ GCM ciphertext of SK under the negotiated key
	EKT []byte `json:"ekt"` // version ‖ nonce ‖ GCM ciphertext under the domain key; AAD binds version and domain id
	Sig []byte `json:"sig"` // ASN.1 ECDSA P-384 over SHA-384 of a domain-separated transcript of (HSM, Q1, Q2, ESK, EKT)
}

const eskLen = gcmOverLen + keyLen

// NewHello is the client's step 1: it makes the ephemeral ECDH key pair and
// signs its public half with the client's identity. Keep the returned
// private key for Finish, and only for that one handshake.
func NewHello(client string, id *Identity) (*Hello, *ecdh.PrivateKey, error) {
	if err := checkName("client id", client); err != nil {
		return nil, nil, err
	}
	if id == nil || id.k == nil {
		return nil, nil, errors.New("hello: no client identity")
	}
	d1, err := ecdh.P384().GenerateKey(rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("hello: generating the ECDH key: %w", err)
	}
	q1 := d1.PublicKey().Bytes()
	sig, err := ecdsa.SignASN1(rand.Reader, id.k, transcript(labelHello, []byte(client), q1))
	if err != nil {
		return nil, nil, fmt.Errorf("hello: signing the ECDH key: %w", err)
	}
	return &Hello{Client: client, Q1: q1, Sig: sig}, d1, nil
}

// parsePoint checks that b is an uncompressed P-384 point on the curve.
func parsePoint(what string, b []byte) (*ecdh.PublicKey, error) {
	if len(b) != pointLen {
		return nil, fmt.Errorf("%s is %d bytes, want an uncompressed %s point of %d", what, len(b), Curve, pointLen)
	}
	p, err := ecdh.P384().NewPublicKey(b)
	if err != nil {
		return nil, fmt.Errorf("%s is not a point on %s", what, Curve)
	}
	return p, nil
}

// negotiate completes ECDH and derives the negotiated AES-256 key. Salting
// with Q1‖Q2 (both fixed length) ties the key to this exchange's two public
// keys.
func negotiate(d *ecdh.PrivateKey, peer *ecdh.PublicKey, q1, q2 []byte) ([]byte, error) {
	shared, err := d.ECDH(peer)
	if err != nil {
		return nil, fmt.Errorf("ECDH: %w", err)
	}
	defer clear(shared)
	salt := append(append(make([]byte, 0, 2*pointLen), q1...), q2...)
	k, err := hkdf.Key(sha512.New384, shared, salt, labelNegotiated, keyLen)
	if err != nil {
		return nil, fmt.Errorf("HKDF: %w", err)
	}
	return k, nil
}

// Accept is the HSM's step 2. It checks the Hello against clientPub, the
// identity key registered for h.Client, and issues a session for claims.User
// in claims.Role until claims.Expires (cut to whole seconds). It fills in
// claims.SessionID, claims.Issued and claims.Domain itself, ignoring what the caller set,
// and returns the reply, the session key SK and the final claims.
func Accept(h *Hello, clientPub *ecdsa.PublicKey, hsm string, hsmID *Identity, domain DomainKey, claims Claims) (*Reply, [32]byte, Claims, error) {
	var sk [32]byte
	fail := func(err error) (*Reply, [32]byte, Claims, error) {
		clear(sk[:])
		return nil, [32]byte{}, Claims{}, err
	}
	if h == nil {
		return fail(errors.New("accept: no hello"))
	}
	if err := checkName("client id", h.Client); err != nil {
		return fail(fmt.Errorf("accept: hello: %w", err))
	}
	q1, err := parsePoint("client ECDH key Q1", h.Q1)
	if err != nil {
		return fail(fmt.Errorf("accept: hello: %w", err))
	}
	if err := checkPublic("client identity key", clientPub); err != nil {
		return fail(fmt.Errorf("accept: %w", err))
	}
	if err := checkName("HSM id", hsm); err != nil {
		return fail(fmt.Errorf("accept: %w", err))
	}
	if hsmID == nil || hsmID.k == nil {
		return fail(errors.New("accept: no HSM identity"))
	}
	// The signature goes first: nothing is spent on a client that cannot
	// prove who it is.
	if !ecdsa.VerifyASN1(clientPub, transcript(labelHello, []byte(h.Client), h.Q1), h.Sig) {
		return fail(fmt.Errorf("%w (client %s, key %s)", ErrClientSignature, h.Client, Fingerprint(clientPub)))
	}

	if claims.Expires.IsZero() {
		return fail(errors.New("accept: the claims have no expiry: refusing to issue an endless session"))
	}
	claims.Expires = claims.Expires.UTC().Truncate(time.Second)
	if !claims.Expires.After(time.Now()) {
		return fail(fmt.Errorf("accept: the requested expiry %s has passed: refusing to issue an expired session", claims.Expires.Format(time.RFC3339)))
	}
	var sid [16]byte
	if _, err := rand.Read(sid[:]); err != nil {
		return fail(fmt.Errorf("accept: session id: %w", err))
	}
	claims.SessionID = hex.EncodeToString(sid[:])
	claims.Domain = domain.ID()
	// Milliseconds, not seconds: an HSM that restarted refuses sessions
	// issued before, and a renegotiated session must be newer than the
	// one it replaces, even within one second.
	claims.Issued = time.Now().UTC().Truncate(time.Millisecond)
	if err := checkClaims(claims); err != nil {
		return fail(fmt.Errorf("accept: claims: %w", err))
	}

	d2, err := ecdh.P384().GenerateKey(rand.Reader)
	if err != nil {
		return fail(fmt.Errorf("accept: generating the ECDH key: %w", err))
	}
	q2 := d2.PublicKey().Bytes()
	neg, err := negotiate(d2, q1, h.Q1, q2)
	if err != nil {
		return fail(fmt.Errorf("accept: %w", err))
	}
	defer clear(neg)
	if _, err := rand.Read(sk[:]); err != nil {
		return fail(fmt.Errorf("accept: session key: %w", err))
	}
	esk, err := seal(neg, sk[:], []byte(labelESK))
	if err != nil {
		return fail(fmt.Errorf("accept: sealing the session key: %w", err))
	}
	ekt, err := sealEKT(domain, sk, claims)
	if err != nil {
		return fail(fmt.Errorf("accept: %w", err))
	}
	sig, err := ecdsa.SignASN1(rand.Reader, hsmID.k, transcript(labelReply, []byte(hsm), h.Q1, q2, esk, ekt))
	if err != nil {
		return fail(fmt.Errorf("accept: signing the reply: %w", err))
	}
	return &Reply{HSM: hsm, Q2: q2, ESK: esk, EKT: ekt, Sig: sig}, sk, claims, nil
}

// Finish is the client's step 3: it checks the HSM's signature against
// hsmPub, the identity key of the HSM the client means to reach (from its
// own trust store, never from the reply), and recovers SK.
func Finish(h *Hello, d1 *ecdh.PrivateKey, r *Reply, hsmPub *ecdsa.PublicKey) ([32]byte, error) {
	var sk [32]byte
	switch {
	case h == nil:
		return sk, errors.New("finish: no hello")
	case d1 == nil || d1.Curve() != ecdh.P384():
		return sk, fmt.Errorf("finish: no %s ECDH private key", Curve)
	case r == nil:
		return sk, errors.New("finish: no reply")
	}
	// A mismatched d1 would pass every check below and then fail to
	// decrypt ESK; say what is wrong instead.
	if !bytes.Equal(d1.PublicKey().Bytes(), h.Q1) {
		return sk, errors.New("finish: the ECDH private key is not the one this hello was made with")
	}
	if err := checkPublic("HSM identity key", hsmPub); err != nil {
		return sk, fmt.Errorf("finish: %w", err)
	}
	if err := checkName("HSM id", r.HSM); err != nil {
		return sk, fmt.Errorf("finish: reply: %w", err)
	}
	q2, err := parsePoint("HSM ECDH key Q2", r.Q2)
	if err != nil {
		return sk, fmt.Errorf("finish: reply: %w", err)
	}
	if len(r.ESK) != eskLen {
		return sk, fmt.Errorf("finish: reply: encrypted session key is %d bytes, want %d", len(r.ESK), eskLen)
	}
	if len(r.EKT) < 1+gcmOverLen || len(r.EKT) > maxEKT {
		return sk, fmt.Errorf("finish: reply: session token (EKT) is %d bytes, want %d to %d", len(r.EKT), 1+gcmOverLen, maxEKT)
	}
	if !ecdsa.VerifyASN1(hsmPub, transcript(labelReply, []byte(r.HSM), h.Q1, r.Q2, r.ESK, r.EKT), r.Sig) {
		return sk, fmt.Errorf("%w (HSM %s, key %s)", ErrHSMSignature, r.HSM, Fingerprint(hsmPub))
	}
	neg, err := negotiate(d1, q2, h.Q1, r.Q2)
	if err != nil {
		return sk, fmt.Errorf("finish: %w", err)
	}
	defer clear(neg)
	pt, err := open(neg, r.ESK, []byte(labelESK))
	if err != nil {
		// The HSM signed this, so it is the HSM's fault, not an attack.
		return sk, fmt.Errorf("finish: the HSM's encrypted session key does not decrypt under the negotiated key (HSM %s)", r.HSM)
	}
	copy(sk[:], pt)
	clear(pt)
	return sk, nil
}
