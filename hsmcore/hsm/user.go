package hsm

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"fmt"
	"maps"
	"strings"

	"github.com/hsmsh/hsmsh/hsmcore/protocol"
	"golang.org/x/crypto/argon2"
)

// userRecord is a user as one HSM stores it. Hash is an argon2id hash;
// the password itself is never stored or logged.
type userRecord struct {
	Username string `json:"username"`
	Role     Role   `json:"role"`
	Hash     string `json:"hash,omitempty"`
	// Failed is a count of wrong passwords kept by older versions; new
	// failures go to FailedOn.
	Failed int `json:"failed"`
	// FailedOn counts the wrong passwords each HSM has seen since the
	// counters were last reset (at FailEpoch, Unix ns). The HSM that checks
	// a password counts the failure itself, so a client that skips hsmsh's
	// library cannot guess without being counted; merging takes each HSM's
	// highest count (merged), so failures spread over HSMs add up and no
	// sync loses one.
	FailedOn  map[string]int `json:"failed_on,omitempty"`
	FailEpoch int64          `json:"fail_epoch,omitempty"`
	// Updated orders versions of the record (Unix nanoseconds), so sync
	// copies the newest and a deletion can win over an older record.
	Updated int64 `json:"updated"`
	// Since is when this user was made (Unix ns; 0 for users older than
	// the field): a session begun before it belongs to an earlier user of
	// the same name, deleted since, and is refused.
	Since int64 `json:"since,omitempty"`
	// QuorumKey is the public key (PEM) the user approves quorum tokens
	// with, registered with proof of possession; "" if none.
	QuorumKey string `json:"quorum_key,omitempty"`
	// MFAKey is the public key (PEM) the user signs token-sign MFA
	// tokens with at login; "" while MFA is off.
	MFAKey string `json:"mfa_key,omitempty"`
}

func (u *userRecord) locked() bool { return u.failures() >= MaxFailedLogins }

// failures is the user's wrong passwords across the cluster.
func (u *userRecord) failures() int {
	n := u.Failed
	for _, c := range u.FailedOn {
		n += c
	}
	return n
}

// mergeFails folds other's failure counters into u: a newer reset wins;
// at the same reset, each HSM's higher count.
func (u *userRecord) mergeFails(other *userRecord) {
	switch {
	case other.FailEpoch > u.FailEpoch:
		u.FailEpoch, u.Failed, u.FailedOn = other.FailEpoch, other.Failed, maps.Clone(other.FailedOn)
	case other.FailEpoch == u.FailEpoch:
		u.Failed = max(u.Failed, other.Failed)
		for id, c := range other.FailedOn {
			if c > u.FailedOn[id] {
				if u.FailedOn == nil {
					u.FailedOn = map[string]int{}
				} else {
					u.FailedOn = maps.Clone(u.FailedOn)
				}
				u.FailedOn[id] = c
			}
		}
	}
}

// failsCover says whether u already counts every failure other does.
func (u *userRecord) failsCover(other *userRecord) bool {
	if other.FailEpoch != u.FailEpoch {
		return u.FailEpoch > other.FailEpoch
	}
	if other.Failed > u.Failed {
		return false
	}
	for id, c := range other.FailedOn {
		if c > u.FailedOn[id] {
			return false
		}
	}
	return true
}

// resetFails clears the failure counters (a successful login, or an
// admin's new password), newer than any count made before.
func (u *userRecord) resetFails(at int64) {
	u.Failed, u.FailedOn = 0, nil
	u.FailEpoch = max(at, u.FailEpoch+1)
}

// argon2id parameters: OWASP's recommended minimum (19 MiB, 2 passes), so
// a login costs tens of milliseconds, not a second. validHash accepts
// stored hashes with exactly these: a change here must keep accepting
// the old set, or every user's password stops working.
const (
	argonTime    = 2
	argonMemory  = 19 * 1024
	argonThreads = 1
	argonKeyLen  = 32
	argonSaltLen = 16
)

// argonParams is the parameters field hashPassword writes.
var argonParams = fmt.Sprintf("m=%d,t=%d,p=%d", argonMemory, argonTime, argonThreads)

// idKey is argon2.IDKey; a variable so that a test can tell whether a
// refused hash reached argon2 at all.
var idKey = argon2.IDKey

// hashEncoding encodes salts and keys; strict, so each has one spelling.
var hashEncoding = base64.RawStdEncoding.Strict()

// hashPassword returns a PHC-style argon2id string with a fresh salt.
func hashPassword(pw string) string {
	salt := make([]byte, argonSaltLen)
	if _, err := rand.Read(salt); err != nil {
		panic("hsmcore: crypto/rand failed: " + err.Error())
	}
	sum := idKey([]byte(pw), salt, argonTime, argonMemory, argonThreads, argonKeyLen)
	return fmt.Sprintf("$argon2id$v=%d$%s$%s$%s", argon2.Version, argonParams, hashEncoding.EncodeToString(salt), hashEncoding.EncodeToString(sum))
}

// parseHash returns the salt and key of a stored hash that is exactly of
// the form hashPassword makes, and otherwise says what is wrong with it.
// argon2 runs with the parameters a hash names, so a crafted user record
// (from a peer, a backup or a damaged store) with others could make a
// login panic (p=0, t=0) or allocate gigabytes (m=4194304, 4 GiB) and
// run for minutes: only hashPassword's own parameters are accepted.
func parseHash(hash string) (salt, key []byte, err error) {
	parts := strings.Split(hash, "$")
	if len(parts) != 6 || parts[0] != "" {
		return nil, nil, fmt.Errorf("the password hash is not of the form $argon2id$v=%d$%s$SALT$KEY (got %s)", argon2.Version, argonParams, excerpt(hash))
	}
	if parts[1] != "argon2id" {
		return nil, nil, fmt.Errorf("the password hash uses the algorithm %s; hsmsh stores only argon2id hashes", excerpt(parts[1]))
	}
	if want := fmt.Sprintf("v=%d", argon2.Version); parts[2] != want {
		return nil, nil, fmt.Errorf("the password hash is of argon2 version %s; hsmsh uses %s", excerpt(parts[2]), want)
	}
	if parts[3] != argonParams {
		return nil, nil, fmt.Errorf("the password hash has the argon2 parameters %s; hsmsh uses exactly %s (other memory, time or parallelism costs are refused)", excerpt(parts[3]), argonParams)
	}
	salt, err = hashEncoding.DecodeString(parts[4])
	if err != nil {
		return nil, nil, fmt.Errorf("the password hash's salt is not base64 (unpadded): %v", err)
	}
	if len(salt) != argonSaltLen {
		return nil, nil, fmt.Errorf("the password hash's salt is %d bytes; hsmsh uses %d", len(salt), argonSaltLen)
	}
	key, err = hashEncoding.DecodeString(parts[5])
	if err != nil {
		return nil, nil, fmt.Errorf("the password hash's key is not base64 (unpadded): %v", err)
	}
	if len(key) != argonKeyLen {
		return nil, nil, fmt.Errorf("the password hash's key is %d bytes; hsmsh uses %d", len(key), argonKeyLen)
	}
	return salt, key, nil
}

// validHash says what is wrong with a password hash from a user record
// (nil if nothing): every hash hsmsh accepts from outside (a peer's sync,
// a backup) or checks a password against must pass it first.
func validHash(hash string) error {
	_, _, err := parseHash(hash)
	return err
}

// excerpt quotes the start of an untrusted value for an error message,
// so that a huge or odd field cannot swell or garble the message.
func excerpt(s string) string {
	const limit = 40
	if len(s) > limit {
		return fmt.Sprintf("%q… (%d bytes)", s[:limit], len(s))
	}
	return fmt.Sprintf("%q", s)
}

// checkPassword compares pw with a stored hash in constant time. A hash
// validHash refuses matches no password, and argon2 never runs on it.
func checkPassword(hash, pw string) bool {
	salt, want, err := parseHash(hash)
	if err != nil {
		return false
	}
	got := idKey([]byte(pw), salt, argonTime, argonMemory, argonThreads, argonKeyLen)
	return subtle.ConstantTimeCompare(got, want) == 1
}

// viewOf is a user as a session sees it: never the password hash.
func viewOf(u *userRecord) protocol.UserView {
	return protocol.UserView{Username: u.Username, Role: u.Role, Locked: u.locked(), QuorumKey: u.QuorumKey != "", MFA: u.MFAKey != "", Updated: u.Updated}
}
