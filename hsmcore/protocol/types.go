package protocol

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Role is what a user may do on the cluster, named as CloudHSM CLI names it.
type Role string

const (
	RoleAdmin            Role = "admin"
	RoleCryptoUser       Role = "crypto-user"
	RoleUnactivatedAdmin Role = "unactivated-admin"
)

// ParseRole accepts a role name as a user types it (case-insensitive).
func ParseRole(s string) (Role, error) {
	switch Role(strings.ToLower(strings.TrimSpace(s))) {
	case RoleAdmin:
		return RoleAdmin, nil
	case RoleCryptoUser:
		return RoleCryptoUser, nil
	case RoleUnactivatedAdmin:
		return RoleUnactivatedAdmin, nil
	}
	return "", fmt.Errorf("%q is not a role: use admin or crypto-user", s)
}

// Caller is who asks for an operation: the user logged in and the login
// session, which owns the session keys made during it.
type Caller struct {
	Username string
	Role     Role
	Session  string
}

// Ref is a key-reference: the handle of a key, the same on every HSM that
// holds it.
type Ref uint64

func (r Ref) String() string {
	// By hand, not fmt: every key use prints one.
	const digits = "0123456789abcdef"
	var b [18]byte
	b[0], b[1] = '0', 'x'
	for i := 17; i >= 2; i-- {
		b[i] = digits[r&0xf]
		r >>= 4
	}
	return string(b[:])
}

// ParseRef reads a key-reference as CloudHSM CLI prints it ("0x" and hex digits).
func ParseRef(s string) (Ref, error) {
	h, ok := strings.CutPrefix(strings.ToLower(strings.TrimSpace(s)), "0x")
	if !ok || h == "" || len(h) > 16 {
		return 0, fmt.Errorf("%q is not a key-reference: expected 0x followed by up to 16 hex digits", s)
	}
	v, err := strconv.ParseUint(h, 16, 64)
	if err != nil {
		return 0, fmt.Errorf("%q is not a key-reference: expected 0x followed by up to 16 hex digits", s)
	}
	return Ref(v), nil
}

// NewRef draws a random, non-zero key-reference. Random handles let any HSM
// mint one without asking the others, and they are not guessable.
func NewRef() Ref {
	var b [8]byte
	for {
		if _, err := rand.Read(b[:]); err != nil {
			panic("protocol: crypto/rand failed: " + err.Error())
		}
		// Keep the top bit clear so references stay short-ish and positive
		// in any tool that parses them as signed integers.
		if r := Ref(binary.BigEndian.Uint64(b[:]) &^ (1 << 63)); r != 0 {
			return r
		}
	}
}

// Errors that callers may test for with errors.Is. Their texts are written
// to be shown to an administrator as they are.
var (
	ErrNotLoggedIn    = errors.New("not logged in: run login --username U --role R first")
	ErrPermission     = errors.New("permission denied")
	ErrKeyNotFound    = errors.New("key not found")
	ErrUserNotFound   = errors.New("user not found")
	ErrUserExists     = errors.New("user already exists")
	ErrLocked         = errors.New("user is locked after too many failed logins: an admin must run user change-password to unlock it")
	ErrBadCredentials = errors.New("invalid username, role or password")
	ErrNoHSM          = errors.New("no HSM of the cluster is available")
	ErrNotActivated   = errors.New("the cluster is not activated: run cluster activate to give the built-in admin its password")
	ErrInvalid        = errors.New("invalid request")
	// ErrNotInDomain is an HSM that has not joined its cluster's domain
	// yet (new, or replaced): it serves no sessions until it does.
	ErrNotInDomain = errors.New("belongs to no domain yet, so it serves no sessions: it joins when an HSM of its cluster's domain answers and admits it")
	// ErrSessionExpired is a session whose token (EKT) has expired; the
	// client library renegotiates when it holds the credentials.
	ErrSessionExpired = errors.New("the login session has expired: log in again")
	// ErrRenegotiate is a session an HSM cannot serve as it stands: the HSM
	// restarted since the session began (so it lost the session's replay
	// windows), or the session's token was superseded. The client library
	// runs the handshake again.
	ErrRenegotiate = errors.New("the HSM cannot serve this session as it stands: renegotiate")
	// ErrNoMajority is a change to the domain state (or a wrong password,
	// which is one) that a majority of the domain's HSMs could not record:
	// it was not made, and the attempt was not answered.
	ErrNoMajority = errors.New("no majority of the domain's HSMs is reachable")
)

// HSMState is what the client knows of one HSM.
type HSMState string

const (
	StateActive HSMState = "active"
	StateDown   HSMState = "down"
	// StateDestroyed is an in-process HSM the lab destroyed: down, and its
	// store erased; it comes back empty.
	StateDestroyed HSMState = "destroyed"
)
