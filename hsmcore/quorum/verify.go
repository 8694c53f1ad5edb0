package quorum

import (
	"bytes"
	"crypto"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// clockSkew is how far in the future a token's issue time may be, since
// the host that generated it and the HSM checking it need not agree to
// the second.
const clockSkew = 5 * time.Minute

// Requirement asks for at least Min signers with Role.
type Requirement struct {
	Role string `json:"role"`
	Min  int    `json:"min"`
}

// Rule is one alternative: all its requirements must hold together. A
// command passes if its signers meet any one of its alternatives, as in
// KMS-style policies ("2 admin" OR "1 admin + 2 crypto-user").
type Rule []Requirement

// String gives the rule as people write it, e.g. "1 admin + 2 crypto-user".
func (r Rule) String() string {
	if len(r) == 0 {
		return "(empty rule)"
	}
	parts := make([]string, len(r))
	for i, q := range r {
		parts[i] = fmt.Sprintf("%d %s", q.Min, q.Role)
	}
	return strings.Join(parts, " + ")
}

// check refuses rules that would be met by nobody's approval (empty, or a
// minimum below 1) or that are ambiguous (a role twice).
func (r Rule) check() error {
	if len(r) == 0 {
		return errors.New("it has no requirements, so it would need no approval")
	}
	var seen []string
	for _, q := range r {
		switch {
		case q.Role == "":
			return errors.New("a requirement has no role")
		case q.Min < 1:
			return fmt.Errorf("it asks for %d %s; each requirement needs at least 1 signer", q.Min, q.Role)
		case slices.Contains(seen, q.Role):
			return fmt.Errorf("it names role %q twice; combine them into one requirement", q.Role)
		}
		seen = append(seen, q.Role)
	}
	return nil
}

// shortfall says what the signers (counted by role) lack to meet r, e.g.
// "1 more admin", or "" if they meet it.
func (r Rule) shortfall(counts map[string]int) string {
	var lack []string
	for _, q := range r {
		if n := q.Min - counts[q.Role]; n > 0 {
			lack = append(lack, fmt.Sprintf("%d more %s", n, q.Role))
		}
	}
	return strings.Join(lack, " and ")
}

// Approver is a user registered to approve quorum operations, as the HSM
// knows them.
type Approver struct {
	Username string
	Role     string
	Key      crypto.PublicKey
}

// Verify checks an operation token against what the HSM knows: every
// signature is by a registered approver (approvers maps username to
// Approver), signers are distinct, each signature is valid for the digest
// of the approval data, the token has not expired at now, and the signers
// meet at least one of the alternatives. It returns the signers' usernames,
// sorted.
//
// a must be the approval data ParseTokenFile returned for f. Verify does
// not know which operation is being attempted: the caller must still check
// that a's service, requester, cluster, key reference and command are the
// ones at hand. When only the rules are unmet, the error wraps
// ErrApprovalRequired.
func Verify(f TokenFile, a ApprovalData, approvers map[string]Approver, alternatives []Rule, now time.Time) ([]string, error) {
	if len(alternatives) == 0 {
		return nil, errors.New("no quorum rule is configured for this operation, so no token can approve it; configure one first")
	}
	for i, r := range alternatives {
		if err := r.check(); err != nil {
			return nil, fmt.Errorf("quorum rule %d (%s) is invalid: %w", i+1, r, err)
		}
	}

	// Check the token is for a, and a itself, even though ParseTokenFile
	// did: a caller could pass a file and data from different places.
	if err := a.validate(); err != nil {
		return nil, err
	}
	data, err := unb64("token file", "approval_data", f.ApprovalData)
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(data, a.Encode()) {
		return nil, errors.New("quorum token: the approval data given does not match the token file's approval_data")
	}
	digest := Digest(data)
	tok, err := unb64("token file", "token", f.Token)
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(tok, digest) {
		return nil, errors.New(`quorum token: "token" is not the SHA-256 of approval_data; the file was altered, generate a new token`)
	}
	// A registration signature only proves key possession; accepting it
	// here would let a registration replayed into a token file approve an
	// operation.
	if a.Service == ServiceRegistration {
		return nil, errors.New("quorum token is a registration token, which cannot approve an operation")
	}

	if !now.Before(a.Expires) {
		return nil, fmt.Errorf("quorum token expired at %s (%s ago); generate a new token and have it approved again",
			a.Expires.UTC().Format(time.RFC3339), now.Sub(a.Expires).Truncate(time.Second))
	}
	if now.Add(clockSkew).Before(a.Issued) {
		return nil, fmt.Errorf("quorum token was issued at %s, in the future; check the clocks of this host and the one that generated it",
			a.Issued.UTC().Format(time.RFC3339))
	}

	if len(f.Signatures) == 0 {
		return nil, fmt.Errorf("%w: the token has no signatures yet; approvers add them with hsmsh quorum approve", ErrApprovalRequired)
	}
	if len(f.Signatures) > MaxSignatures {
		return nil, fmt.Errorf("quorum token has %d signatures; at most %d are allowed", len(f.Signatures), MaxSignatures)
	}
	counts := map[string]int{}
	signers := make([]string, 0, len(f.Signatures))
	for i, s := range f.Signatures {
		if s.Username == "" {
			return nil, fmt.Errorf("quorum token: signature %d has no username", i+1)
		}
		if slices.Contains(signers, s.Username) {
			return nil, fmt.Errorf("quorum token: %q signed more than once; each approver counts once, remove the extra signature", s.Username)
		}
		ap, ok := approvers[s.Username]
		if !ok {
			return nil, fmt.Errorf("quorum token: %q is not a registered quorum approver on this cluster; their signature cannot count (register their key first, or remove it)", s.Username)
		}
		sig, err := unb64("token", fmt.Sprintf("signature by %q", s.Username), s.Signature)
		if err != nil {
			return nil, err
		}
		if err := VerifySignature(ap.Key, digest, sig); err != nil {
			return nil, fmt.Errorf("quorum token: signature by %q is not valid for their registered key: %w", s.Username, err)
		}
		signers = append(signers, s.Username)
		counts[ap.Role]++
	}
	slices.Sort(signers)

	missed := make([]string, len(alternatives))
	for i, r := range alternatives {
		lack := r.shortfall(counts)
		if lack == "" {
			return signers, nil
		}
		missed[i] = fmt.Sprintf("%q needs %s", r.String(), lack)
	}
	return nil, fmt.Errorf("%w: signed by %s, which meets no rule: %s",
		ErrApprovalRequired, describe(signers, approvers), strings.Join(missed, "; "))
}

// describe lists signers with their roles, e.g. "alice (admin), bob (crypto-user)".
func describe(signers []string, approvers map[string]Approver) string {
	parts := make([]string, len(signers))
	for i, u := range signers {
		parts[i] = fmt.Sprintf("%s (%s)", u, approvers[u].Role)
	}
	return strings.Join(parts, ", ")
}

// AddSignature is the offline approver's step (hsmsh quorum approve): it
// signs the file's digest with key and appends {username, signature}. It
// refuses a file whose token is not the digest of its approval data, so an
// approver never signs something other than what they were shown, and a
// username that has already signed.
func AddSignature(f *TokenFile, username string, key crypto.Signer) error {
	if username == "" {
		return errors.New("approver username is required")
	}
	for _, s := range f.Signatures {
		if s.Username == username {
			return fmt.Errorf("%q has already signed this token", username)
		}
	}
	if len(f.Signatures) >= MaxSignatures {
		return fmt.Errorf("quorum token already has %d signatures, the most allowed", MaxSignatures)
	}
	if err := checkVersion("token", f.Version); err != nil {
		return err
	}
	a, err := decodeData("token", f.ApprovalData, "token", f.Token)
	if err != nil {
		return err
	}
	sig, err := SignDigest(key, Digest(a.Encode()))
	if err != nil {
		return err
	}
	if f.Signatures == nil {
		f.Signatures = []Signature{}
	}
	f.Signatures = append(f.Signatures, Signature{Username: username, Signature: b64(sig)})
	return nil
}
