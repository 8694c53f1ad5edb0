package protocol

import (
	"fmt"
	"time"
)

// BuiltinAdmin is the admin every new cluster has, unactivated until
// cluster activate gives it a password.
const BuiltinAdmin = "admin"

// CheckKeyQuorum applies CloudHSM's limit: a key quorum value is 0 to 8
// and never more than the users associated with the key.
func CheckKeyQuorum(value, users int, name string) error {
	if value < 0 || value > 8 {
		return fmt.Errorf("%w: %s must be 0 to 8", ErrInvalid, name)
	}
	if value > users {
		return fmt.Errorf("%w: %s %d is more than the %d users associated with the key", ErrInvalid, name, value, users)
	}
	return nil
}

// MaxLatency keeps a mistyped latency from hanging the shell.
const MaxLatency = 10 * time.Second
