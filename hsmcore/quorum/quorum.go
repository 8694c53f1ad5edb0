// Package quorum implements M-of-N approval tokens in the style of AWS
// CloudHSM CLI's quorum token-sign: the readable approval data a token
// carries, the registration and operation token files, the approver keys
// allowed, and the HSM-side check that enough registered approvers have
// signed.
//
// Approvers sign offline with openssl, so the signature scheme is exactly
// what
//
//	openssl pkeyutl -sign -inkey key.pem -pkeyopt digest:sha256 -in unsigned.bin -out sig.bin
//
// produces for the 32-byte SHA-256 of the approval data: RSA PKCS#1 v1.5
// with the SHA-256 DigestInfo, or ECDSA with an ASN.1 DER signature.
package quorum

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"
	"unicode"
)

// Services that quorum approval can guard, named as CloudHSM CLI names them.
const (
	ServiceRegistration  = "registration"
	ServiceUser          = "user"
	ServiceQuorum        = "quorum"
	ServiceKeyUsage      = "key-usage"
	ServiceKeyManagement = "key-management"
	// ServiceCluster guards the cluster's mTLS settings (trust anchors,
	// enforcement).
	ServiceCluster = "cluster"
)

// Services lists every service, in the order help text shows them.
var Services = []string{ServiceRegistration, ServiceUser, ServiceQuorum, ServiceKeyUsage, ServiceKeyManagement, ServiceCluster}

// FileVersion is the "version" of both token files.
const FileVersion = "2.0"

// MaxFileSize bounds a token file; a larger one is refused before parsing
// so a hostile file cannot make the HSM allocate without bound.
const MaxFileSize = 64 << 10

// MaxSignatures bounds the signatures in one token file, for the same reason.
const MaxSignatures = 64

// approvalFormat is the Format of every ApprovalData this package makes.
const approvalFormat = "hsmsh-approval/1"

// Roles a requester may have.
var roles = []string{"admin", "crypto-user"}

// ErrApprovalRequired is CloudHSM's error for an operation that lacks
// enough valid approvals. Verify wraps it when the signers meet no rule.
//
//lint:ignore ST1005 CloudHSM CLI's exact message, which runbooks match on
var ErrApprovalRequired = errors.New("Quorum approval is required for this operation")

// ApprovalData is the readable JSON document approvers sign (via its
// SHA-256); the token files carry it base64-encoded. Approvers are meant
// to read it before signing, which is why it is JSON and not opaque.
type ApprovalData struct {
	Format    string    `json:"format"`
	Service   string    `json:"service"`
	Requester string    `json:"requester"` // username
	Role      string    `json:"role"`      // "admin" | "crypto-user"
	Cluster   string    `json:"cluster"`
	KeyRef    string    `json:"key-reference,omitempty"`
	Command   string    `json:"command,omitempty"` // exact command line it approves, if bound
	Nonce     string    `json:"nonce"`             // 32 random bytes, hex
	Issued    time.Time `json:"issued"`
	Expires   time.Time `json:"expires"`
}

// NewApprovalData makes approval data for one request, with a fresh nonce
// so that no two tokens share a digest (a signature can't be replayed onto
// another token). Times are UTC, truncated to seconds, so the encoding is
// short and the same on every platform.
func NewApprovalData(service, requester, role, cluster, keyRef, command string, now time.Time, ttl time.Duration) (ApprovalData, error) {
	if ttl <= 0 {
		return ApprovalData{}, fmt.Errorf("quorum token lifetime must be positive, got %v", ttl)
	}
	nonce := make([]byte, 32)
	if _, err := rand.Read(nonce); err != nil {
		return ApprovalData{}, fmt.Errorf("making quorum token nonce: %w", err)
	}
	issued := now.UTC().Truncate(time.Second)
	a := ApprovalData{
		Format:    approvalFormat,
		Service:   service,
		Requester: requester,
		Role:      role,
		Cluster:   cluster,
		KeyRef:    keyRef,
		Command:   command,
		Nonce:     hex.EncodeToString(nonce),
		Issued:    issued,
		Expires:   issued.Add(ttl).Truncate(time.Second),
	}
	if err := a.validate(); err != nil {
		return ApprovalData{}, err
	}
	return a, nil
}

// Encode returns the compact JSON approvers sign. Field order is the
// struct's, so the encoding is stable.
func (a ApprovalData) Encode() []byte {
	b, err := json.Marshal(a)
	if err != nil {
		// Only strings and times set by NewApprovalData or decoded from
		// JSON get here; json.Marshal cannot fail on them.
		panic("quorum: encoding approval data: " + err.Error())
	}
	return b
}

// DecodeApprovalData parses approval data strictly: unknown fields are
// refused, the format must be ours, required fields must be present, and
// the bytes must be exactly what Encode would produce. The last rule means
// one document has one encoding, so what an approver reads (say, the first
// of two duplicate keys) is always what the HSM acts on.
func DecodeApprovalData(b []byte) (ApprovalData, error) {
	var a ApprovalData
	if err := decodeStrict(b, &a); err != nil {
		return ApprovalData{}, fmt.Errorf("approval data is not valid JSON for this hsmsh: %w", err)
	}
	if err := a.validate(); err != nil {
		return ApprovalData{}, err
	}
	if !bytes.Equal(a.Encode(), b) {
		return ApprovalData{}, errors.New("approval data is not in canonical form (it was edited or made by another tool); generate a new token with hsmsh")
	}
	return a, nil
}

// Digest is the SHA-256 of approval data: the 32 bytes approvers sign.
func Digest(approvalData []byte) []byte {
	d := sha256.Sum256(approvalData)
	return d[:]
}

func (a ApprovalData) validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("approval data: "+format, args...)
	}
	if a.Format != approvalFormat {
		return bad("format is %q; this hsmsh reads %q (generate a new token with this hsmsh)", a.Format, approvalFormat)
	}
	if !slices.Contains(Services, a.Service) {
		return bad("service %q is not known; use one of %s", a.Service, strings.Join(Services, ", "))
	}
	if !slices.Contains(roles, a.Role) {
		return bad("role %q is not known; use one of %s", a.Role, strings.Join(roles, ", "))
	}
	for _, f := range []struct {
		name, value string
		required    bool
	}{
		{"requester", a.Requester, true}, {"cluster", a.Cluster, true},
		{"key-reference", a.KeyRef, false}, {"command", a.Command, false},
	} {
		if f.required && f.value == "" {
			return bad("%s is missing", f.name)
		}
		// Approvers read these fields in a terminal before signing; control
		// and bidi-format characters could hide or reorder what they approve.
		if strings.ContainsFunc(f.value, misleading) {
			return bad("%s contains control or formatting characters", f.name)
		}
	}
	if n, err := hex.DecodeString(a.Nonce); err != nil || len(n) != 32 || a.Nonce != strings.ToLower(a.Nonce) {
		return bad("nonce must be 64 lowercase hex digits")
	}
	if a.Issued.IsZero() || a.Expires.IsZero() {
		return bad("issued and expires times are required")
	}
	// UTC and four-digit years keep the encoding canonical, and are what
	// json.Marshal needs to never fail in Encode.
	for _, t := range []time.Time{a.Issued, a.Expires} {
		if t.Location() != time.UTC || t.Year() < 1 || t.Year() > 9999 {
			return bad("time %s is not a UTC time in years 1 to 9999", t.Format(time.RFC3339))
		}
	}
	if !a.Expires.After(a.Issued) {
		return bad("expires (%s) is not after issued (%s)", a.Expires.Format(time.RFC3339), a.Issued.Format(time.RFC3339))
	}
	return nil
}

func misleading(r rune) bool { return unicode.IsControl(r) || unicode.Is(unicode.Cf, r) }

// decodeStrict unmarshals one JSON value into v, refusing unknown fields
// and anything after the value.
func decodeStrict(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("unexpected data after the JSON object")
	}
	return nil
}
