package hsm

import "time"

// keyRecord is a key as one HSM stores it. Material is secret (raw
// symmetric key bytes, or a PKCS#8 private key) or public (PKIX); it is
// sealed before it reaches the disk and never leaves the HSM in clear.
type keyRecord struct {
	Ref          Ref        `json:"ref"`
	Attrs        Attributes `json:"attributes"`
	Owner        string     `json:"owner"`
	Shared       []string   `json:"shared,omitempty"`
	UseQuorum    int        `json:"use_quorum,omitempty"`
	ManageQuorum int        `json:"manage_quorum,omitempty"`
	Created      time.Time  `json:"created"`
	// Session is the login session a session key belongs to; empty for a
	// token key. Session keys are never written to disk.
	Session  string `json:"-"`
	Material []byte `json:"-"`
}

func (r *keyRecord) clone() *keyRecord {
	c := *r
	c.Shared = append([]string(nil), r.Shared...)
	c.Material = append([]byte(nil), r.Material...)
	return &c
}

// usableBy says whether c may use (sign with, list) the key: its owner and
// the users it is shared with; public keys are usable by every crypto user.
func (r *keyRecord) usableBy(c Caller) bool {
	if c.Role != RoleCryptoUser {
		return false
	}
	if r.Owner == c.Username || r.Attrs.Class == ClassPublic {
		return true
	}
	for _, u := range r.Shared {
		if u == c.Username {
			return true
		}
	}
	return false
}

// visibleTo says whether c may see the key in key list. Admins see every
// token key (they manage the cluster) but can use none; crypto users see
// what they may use. Session keys are seen only in their own session.
func (r *keyRecord) visibleTo(c Caller) bool {
	if r.Session != "" && r.Session != c.Session {
		return false
	}
	if c.Role == RoleAdmin {
		return true
	}
	return r.usableBy(c)
}
