package authsession

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"time"
)

// DomainKey is the AES-256 key the HSMs of one cluster share; it never
// leaves them. It formats as its ID whatever the verb (%v, %x, %d, %#v...),
// so that printing one by mistake does not reveal it.
type DomainKey [32]byte

// NewDomainKey draws a fresh random domain key.
func NewDomainKey() (DomainKey, error) {
	var k DomainKey
	if _, err := rand.Read(k[:]); err != nil {
		return DomainKey{}, fmt.Errorf("generating a domain key: %w", err)
	}
	return k, nil
}

// ID is the domain's short public name: the hex of the first 8 bytes of
// SHA-256("hsmsh-domain-id" ‖ key). A one-way hash, so it names the domain
// without revealing the key.
func (k DomainKey) ID() string {
	h := sha256.New()
	h.Write([]byte("hsmsh-domain-id"))
	h.Write(k[:])
	return hex.EncodeToString(h.Sum(nil)[:8])
}

// String shows the domain's ID, never the key.
func (k DomainKey) String() string { return "domain " + k.ID() }

// Format makes every fmt verb print String, never the key bytes. String
// alone would not do: fmt ignores it for %d, %o, %b and the like.
func (k DomainKey) Format(f fmt.State, verb rune) { io.WriteString(f, k.String()) }

// Claims are what an EKT says about its session.
type Claims struct {
	SessionID string    `json:"sid"` // random 16 bytes hex, made by Accept
	User      string    `json:"user"`
	Role      string    `json:"role"`
	Expires   time.Time `json:"exp"`    // whole seconds, UTC
	Issued    time.Time `json:"iat"`    // when the handshake ran, whole milliseconds, UTC
	Domain    string    `json:"domain"` // DomainKey.ID()
}

// EKT wire format: version ‖ nonce ‖ GCM ciphertext, AAD
// labelEKT ‖ version ‖ domain id. The plaintext is
// SK (32) ‖ expiry (int64 Unix seconds) ‖ issued (int64 Unix milliseconds) ‖ session id ‖ user ‖ role ‖ domain id,
// each string preceded by its length as a uint16.
const (
	ektVersion = 1
	maxEKT     = 1024 // a real one is under 300 bytes
	sidLen     = 32   // hex of 16 bytes
	domainLen  = 16   // hex of 8 bytes
)

func ektAAD(version byte, domainID string) []byte {
	return append(append([]byte(labelEKT), version), domainID...)
}

// checkClaims checks claims that are about to go into, or have come out of,
// an EKT.
func checkClaims(c Claims) error {
	if len(c.SessionID) != sidLen {
		return fmt.Errorf("session id is %d characters, want %d", len(c.SessionID), sidLen)
	}
	if _, err := hex.DecodeString(c.SessionID); err != nil {
		return errors.New("session id is not hex")
	}
	if len(c.Domain) != domainLen {
		return fmt.Errorf("domain id is %d characters, want %d", len(c.Domain), domainLen)
	}
	if err := checkName("user", c.User); err != nil {
		return err
	}
	if err := checkName("role", c.Role); err != nil {
		return err
	}
	if c.Expires.IsZero() {
		return errors.New("no expiry")
	}
	if c.Issued.IsZero() || c.Issued.After(c.Expires) {
		return errors.New("no issue time, or one after the expiry")
	}
	return nil
}

func sealEKT(domain DomainKey, sk [32]byte, c Claims) ([]byte, error) {
	pt := make([]byte, 0, 128)
	pt = append(pt, sk[:]...)
	pt = binary.BigEndian.AppendUint64(pt, uint64(c.Expires.Unix()))
	pt = binary.BigEndian.AppendUint64(pt, uint64(c.Issued.UnixMilli()))
	for _, s := range []string{c.SessionID, c.User, c.Role, c.Domain} {
		pt = binary.BigEndian.AppendUint16(pt, uint16(len(s)))
		pt = append(pt, s...)
	}
	ct, err := seal(domain[:], pt, ektAAD(ektVersion, domain.ID()))
	clear(pt)
	if err != nil {
		return nil, fmt.Errorf("sealing the session token: %w", err)
	}
	return append([]byte{ektVersion}, ct...), nil
}

// parseEKTPlaintext undoes the plaintext layout of sealEKT, refusing
// anything left over.
func parseEKTPlaintext(pt []byte) (sk [32]byte, c Claims, err error) {
	if len(pt) < keyLen+16 {
		return sk, c, fmt.Errorf("%d bytes, too short", len(pt))
	}
	copy(sk[:], pt)
	c.Expires = time.Unix(int64(binary.BigEndian.Uint64(pt[keyLen:])), 0).UTC()
	c.Issued = time.UnixMilli(int64(binary.BigEndian.Uint64(pt[keyLen+8:]))).UTC()
	rest := pt[keyLen+16:]
	for _, f := range []*string{&c.SessionID, &c.User, &c.Role, &c.Domain} {
		if len(rest) < 2 {
			return [32]byte{}, Claims{}, errors.New("truncated")
		}
		n := int(binary.BigEndian.Uint16(rest))
		if len(rest) < 2+n {
			return [32]byte{}, Claims{}, errors.New("truncated")
		}
		*f, rest = string(rest[2:2+n]), rest[2+n:]
	}
	if len(rest) != 0 {
		return [32]byte{}, Claims{}, fmt.Errorf("%d bytes left over", len(rest))
	}
	if err := checkClaims(c); err != nil {
		return [32]byte{}, Claims{}, err
	}
	return sk, c, nil
}

// OpenEKT is what any HSM of the domain does with an EKT: decrypt it with the
// domain key, check that it names this domain and has not expired at now,
// and return the session key and claims.
func OpenEKT(domain DomainKey, ekt []byte, now time.Time) ([32]byte, Claims, error) {
	switch {
	case len(ekt) == 0:
		return [32]byte{}, Claims{}, errors.New("no session token (EKT)")
	case ekt[0] != ektVersion:
		return [32]byte{}, Claims{}, fmt.Errorf("session token (EKT) has format version %d; this HSM reads version %d only", ekt[0], ektVersion)
	case len(ekt) < 1+gcmOverLen:
		return [32]byte{}, Claims{}, fmt.Errorf("session token (EKT) is %d bytes: truncated", len(ekt))
	case len(ekt) > maxEKT:
		return [32]byte{}, Claims{}, fmt.Errorf("session token (EKT) is %d bytes, at most %d allowed", len(ekt), maxEKT)
	}
	id := domain.ID()
	pt, err := open(domain[:], ekt[1:], ektAAD(ekt[0], id))
	if err != nil {
		// GCM cannot tell a foreign key from an altered token.
		return [32]byte{}, Claims{}, fmt.Errorf("%w (%s), or it was altered", ErrForeignDomain, id)
	}
	sk, c, err := parseEKTPlaintext(pt)
	clear(pt)
	if err != nil {
		// Only a holder of the domain key could have sealed this.
		return [32]byte{}, Claims{}, fmt.Errorf("session token (EKT) decrypts but is malformed: %w", err)
	}
	if c.Domain != id {
		return [32]byte{}, Claims{}, fmt.Errorf("%w: it names domain %s, this cluster is %s", ErrForeignDomain, c.Domain, id)
	}
	if !now.Before(c.Expires) {
		return [32]byte{}, Claims{}, fmt.Errorf("%w (session %s of %s expired at %s, %s ago)", ErrExpired,
			c.SessionID, c.User, c.Expires.Format(time.RFC3339), now.Sub(c.Expires).Round(time.Second))
	}
	return sk, c, nil
}

// IssueEKT seals a new EKT for an existing session key: an HSM that has
// just authenticated the session's user re-issues the token with the
// user's role in place of the provisional one of the handshake. claims
// must carry the session id; Domain is filled in.
func IssueEKT(domain DomainKey, sk [32]byte, claims Claims) ([]byte, error) {
	claims.Domain = domain.ID()
	claims.Expires = claims.Expires.UTC().Truncate(time.Second)
	claims.Issued = claims.Issued.UTC().Truncate(time.Millisecond)
	if err := checkClaims(claims); err != nil {
		return nil, fmt.Errorf("issue a session token: %w", err)
	}
	return sealEKT(domain, sk, claims)
}
