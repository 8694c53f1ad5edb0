package protocol

import (
	"errors"
	"fmt"

	"github.com/hsmsh/hsmsh/hsmcore/quorum"
	"github.com/hsmsh/hsmsh/hsmcore/rpc"
)

// DownError is an HSM that cannot be reached, or that says it is down.
type DownError struct {
	ID  string
	Why error
}

func (e *DownError) Error() string {
	if e.Why == nil {
		return e.ID + " is down"
	}
	return fmt.Sprintf("%s is down: %v", e.ID, e.Why)
}

func (e *DownError) Unwrap() error { return e.Why }

// Error codes an HSM puts on the errors it returns, so that the client
// library can tell them apart after they crossed the wire.
const (
	CodeKeyNotFound  = "key-not-found"
	CodeInvalid      = "invalid"
	CodePermission   = "permission"
	CodeDown         = "down"
	CodeUserNotFound = "user-not-found"
	CodeApproval     = "approval-required"
	CodeNotActivated = "not-activated"
	CodeUserExists   = "user-exists"
	CodeNoDomain     = "no-domain"
	CodeExpired      = "session-expired"
	CodeRenegotiate  = "session-renegotiate"
	CodeNoMajority   = "no-majority"
	CodeOther        = "error"
)

var codeSentinels = map[string]error{
	CodeKeyNotFound:  ErrKeyNotFound,
	CodeInvalid:      ErrInvalid,
	CodePermission:   ErrPermission,
	CodeUserNotFound: ErrUserNotFound,
	CodeApproval:     quorum.ErrApprovalRequired,
	CodeNotActivated: ErrNotActivated,
	CodeUserExists:   ErrUserExists,
	CodeNoDomain:     ErrNotInDomain,
	CodeExpired:      ErrSessionExpired,
	CodeRenegotiate:  ErrRenegotiate,
	CodeNoMajority:   ErrNoMajority,
}

// CodeOf classifies an HSM's error for the wire.
func CodeOf(err error) string {
	for code, s := range codeSentinels {
		if errors.Is(err, s) {
			return code
		}
	}
	var de *DownError
	if errors.As(err, &de) {
		return CodeDown
	}
	return CodeOther
}

// Error is an error an HSM returned over the wire: its text as the
// HSM wrote it, and errors.Is matching the sentinel its code names.
type Error struct {
	Code, Msg string
}

func (e *Error) Error() string { return e.Msg }
func (e *Error) Is(target error) bool {
	if s, ok := codeSentinels[e.Code]; ok {
		return target == s
	}
	return false
}

// RemoteError is an HSM's error as the client sees it: its own words (which
// name the HSM), matching the sentinel its code names.
func RemoteError(re *rpc.RemoteError) error {
	return &Error{Code: re.Code, Msg: re.Message}
}

// IsDown says whether err says an HSM is down: unreachable, or saying so
// itself (in-process, or across the wire).
func IsDown(err error) bool {
	var de *DownError
	var he *Error
	return errors.As(err, &de) || errors.As(err, &he) && he.Code == CodeDown
}

// ErrDown is what an HSM that does not answer gives.
func ErrDown(id string) error { return &DownError{ID: id} }
