package hsm

import (
	"time"

	"github.com/hsmsh/hsmsh/hsmcore/protocol"
)

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

// usableBy and visibleTo are the protocol's access rules for r.
func (r *keyRecord) usableBy(c Caller) bool {
	return protocol.Usable(c, r.Owner, r.Shared, r.Attrs.Class)
}

func (r *keyRecord) visibleTo(c Caller) bool {
	return protocol.Visible(c, r.Session, r.Owner, r.Shared, r.Attrs.Class)
}
