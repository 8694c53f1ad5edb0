package protocol

import (
	"slices"
	"time"
)

// The arguments and answers of the calls in table.go's table, as both
// ends use them; hsmsh.proto describes how each crosses the wire, and
// convert.go converts. Key material appears in none of them: keys move
// between HSMs only as WrappedKey, sealed under a key derived from the
// domain key, which no client holds.

// KeyMeta is a key as it crosses the wire to a client: its attributes,
// its users and whether it is a session key, never material.
type KeyMeta struct {
	Ref          Ref        `json:"ref"`
	Attrs        Attributes `json:"attributes"`
	Owner        string     `json:"owner"`
	Shared       []string   `json:"shared,omitempty"`
	UseQuorum    int        `json:"use_quorum,omitempty"`
	ManageQuorum int        `json:"manage_quorum,omitempty"`
	Created      time.Time  `json:"created"`
	// Session is the login session a session key belongs to; empty for a
	// token key.
	Session string `json:"session,omitempty"`
}

// Usable says whether c may use (sign with, list) a key of this owner,
// shared users and class: its owner and the users it is shared with;
// public keys are usable by every crypto user. The HSM decides with it;
// a client uses it only to shape what it shows.
func Usable(c Caller, owner string, shared []string, class string) bool {
	if c.Role != RoleCryptoUser {
		return false
	}
	return owner == c.Username || class == ClassPublic || slices.Contains(shared, c.Username)
}

// Visible says whether c may see a key in key list: admins see every
// token key (they manage the cluster) but can use none, crypto users what
// they may use, and a session key is seen only in its own session.
func Visible(c Caller, session, owner string, shared []string, class string) bool {
	if session != "" && session != c.Session {
		return false
	}
	return c.Role == RoleAdmin || Usable(c, owner, shared, class)
}

// VisibleTo is Visible for m.
func (m *KeyMeta) VisibleTo(c Caller) bool {
	return Visible(c, m.Session, m.Owner, m.Shared, m.Attrs.Class)
}

type VerifyArgs struct {
	Req SignRequest `json:"req"`
	Sig []byte      `json:"sig"`
}

// SignArgs is a sign request and, for a key under a use quorum, its
// approval: the HSM verifies and consumes it in the same call.
type SignArgs struct {
	Req      SignRequest `json:"req"`
	Approval *Approval   `json:"approval,omitempty"`
}

// Approval is a quorum token file with its approvers' signatures, and
// the command line it is used for (a command-bound token must match).
type Approval struct {
	Token   []byte `json:"token,omitempty"`
	Command string `json:"command,omitempty"`
}

// SnapshotArgs asks for one page of a snapshot.
type SnapshotArgs struct {
	Filter Filter `json:"filter"`
	After  Ref    `json:"after,omitempty"`
}

// SnapshotPageSize keeps a page of key records inside one frame
// (wire.MaxPayload, 4 MiB): a record is about 1.6 KiB at most as a
// protocol buffer (a 127-character label and an RSA-4096 modulus in hex,
// which is most of it), well under 100 bytes for a symmetric key.
const SnapshotPageSize = 2000

// SnapshotReply is one page of a snapshot.
type SnapshotReply struct {
	Keys []KeyMeta `json:"keys"`
	More bool      `json:"more,omitempty"`
}

// GenerateArgs asks an HSM to make a key: the material is made there and
// never leaves it in clear. Ref is the reference the client drew, unused
// on every HSM it asked; the HSM refuses one it holds or held.
type GenerateArgs struct {
	Spec KeySpec `json:"spec"`
	Ref  Ref     `json:"ref"`
	// Wrap asks, for a token key, for each record wrapped under the domain
	// key too, for client-side sync to relay: one round trip, not two.
	Wrap bool `json:"wrap,omitempty"`
	// Stage asks, for a token key, for the records wrapped and nothing
	// stored: the client then stores the blobs on every HSM at once, this
	// one included, so that their commits (each with an fsync) run side
	// by side, not one after the other. The answer says Staged.
	Stage bool `json:"stage,omitempty"`
}

// ImportArgs asks an HSM to import a public key.
type ImportArgs struct {
	Spec ImportSpec `json:"spec"`
	Ref  Ref        `json:"ref"`
	Wrap bool       `json:"wrap,omitempty"`
}

// CreateReply is a new key's records, without material, and (if asked)
// the same records wrapped under the domain key.
type CreateReply struct {
	Keys    []KeyMeta     `json:"keys"`
	Wrapped []*WrappedKey `json:"wrapped,omitempty"`
	// Staged says the HSM stored nothing (GenerateArgs.Stage): the
	// wrapped records are the key's only copies until the client stores
	// them.
	Staged bool `json:"staged,omitempty"`
}

// KeyChangeArgs changes a key's users or attributes on one HSM, which
// passes the change on to the other HSMs of the domain.
type KeyChangeArgs struct {
	Ref      Ref       `json:"ref"`
	Op       string    `json:"op"` // share, unshare, set-attribute
	User     string    `json:"user,omitempty"`
	Name     string    `json:"name,omitempty"`
	Value    string    `json:"value,omitempty"`
	Approval *Approval `json:"approval,omitempty"`
}

// Key changes.
const (
	OpShare        = "share"
	OpUnshare      = "unshare"
	OpSetAttribute = "set-attribute"
)

type ImportWrappedArgs struct {
	Key *WrappedKey `json:"key"`
	// Approval is user replicate's: making a user takes the user
	// service's approval, however the user is made.
	Approval *Approval `json:"approval,omitempty"`
}

// UserArgs is a user change an admin (or, for its own password, a user)
// asks of an HSM.
type UserArgs struct {
	Username string    `json:"username"`
	Role     Role      `json:"role"`
	Password string    `json:"password,omitempty"`
	Approval *Approval `json:"approval,omitempty"`
}

// UserView is a user as a session sees it: never the password hash.
type UserView struct {
	Username  string `json:"username"`
	Role      Role   `json:"role"`
	Locked    bool   `json:"locked"`
	QuorumKey bool   `json:"quorum_key"`
	MFA       bool   `json:"mfa,omitempty"`
	Updated   int64  `json:"updated"`
}

// IssueArgs asks an HSM for a quorum token.
type IssueArgs struct {
	Service string `json:"service"`
	KeyRef  *Ref   `json:"key_ref,omitempty"`
	Command string `json:"command,omitempty"`
	Cluster string `json:"cluster"`
}

// QuorumList is what a session sees of the quorum state.
type QuorumList struct {
	Settings QuorumSettings `json:"settings"`
	Tokens   []*Token       `json:"tokens"`
}

// SetQuorumArgs sets a service's quorum value (Service, Value) or the
// token timeouts (Generated, Approved).
type SetQuorumArgs struct {
	Service   string        `json:"service,omitempty"`
	Value     int           `json:"value,omitempty"`
	Generated time.Duration `json:"generated,omitempty"`
	Approved  time.Duration `json:"approved,omitempty"`
	Approval  *Approval     `json:"approval,omitempty"`
}

type RegisterArgs struct {
	PubPEM []byte `json:"public_key"`
	File   []byte `json:"file"`
}

type DeleteTokensArgs struct {
	All bool `json:"all"`
}
