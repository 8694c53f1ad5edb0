package protocol

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// MaxFailedLogins is how many wrong passwords lock a user, as in CloudHSM.
const MaxFailedLogins = 5

// NormalizeUsername applies CloudHSM's username rule: up to 31 characters
// of letters, digits and underscores, case-insensitive, kept lowercase.
func NormalizeUsername(name string) (string, error) {
	n := strings.ToLower(name)
	if n == "" {
		return "", fmt.Errorf("%w: username must not be empty", ErrInvalid)
	}
	if len(n) > 31 {
		return "", fmt.Errorf("%w: username %q is %d characters long; the limit is 31", ErrInvalid, name, len(n))
	}
	for _, r := range n {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '_') {
			return "", fmt.Errorf("%w: username %q may hold only letters, digits and _", ErrInvalid, name)
		}
	}
	return n, nil
}

// ValidatePassword applies CloudHSM's password rule: 7 to 32 characters.
func ValidatePassword(pw string) error {
	if n := utf8.RuneCountInString(pw); n < 7 || n > 32 {
		return fmt.Errorf("%w: a password must be 7 to 32 characters long (this one has %d)", ErrInvalid, n)
	}
	return nil
}
