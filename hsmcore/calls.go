package hsmcore

import (
	"time"
)

// The arguments and answers of the calls in handler.go's table, as they
// cross the wire (JSON). Key material appears in none of them: keys move
// between HSMs only as wrappedKey, sealed under a key derived from the
// domain key, which no client holds.

// keyMeta is a key record as it crosses the wire to a client: attributes,
// users and whether it is a session key, never material.
type keyMeta struct {
	keyRecord
	Session string `json:"session,omitempty"`
}

func (w *keyMeta) record() *keyRecord {
	r := w.keyRecord
	r.Session, r.Material = w.Session, nil
	return &r
}

func metaOf(r *keyRecord) keyMeta {
	m := keyMeta{keyRecord: *r, Session: r.Session}
	m.Material = nil
	return m
}

func metasOf(recs []*keyRecord) []keyMeta {
	out := make([]keyMeta, len(recs))
	for i, r := range recs {
		out[i] = metaOf(r)
	}
	return out
}

func fromMetas(ws []keyMeta) []*keyRecord {
	out := make([]*keyRecord, len(ws))
	for i := range ws {
		out[i] = ws[i].record()
	}
	return out
}

// wireKey is a key record with its material, only ever inside a
// wrappedKey's sealed body.
type wireKey struct {
	keyRecord
	Session  string `json:"session,omitempty"`
	Material []byte `json:"material,omitempty"`
}

func (w *wireKey) record() *keyRecord {
	r := w.keyRecord
	r.Session, r.Material = w.Session, w.Material
	return &r
}

func toWire(r *keyRecord) wireKey {
	return wireKey{keyRecord: *r, Session: r.Session, Material: r.Material}
}

type tokenState struct {
	Keys       []Ref             `json:"keys"`
	Tombstones map[Ref]time.Time `json:"tombstones"`
}

type verifyArgs struct {
	Req SignRequest `json:"req"`
	Sig []byte      `json:"sig"`
}

// signArgs is a sign request and, for a key under a use quorum, its
// approval: the HSM verifies and consumes it in the same call.
type signArgs struct {
	Req      SignRequest   `json:"req"`
	Approval *approvalArgs `json:"approval,omitempty"`
}

// approvalArgs is a quorum token file with its approvers' signatures, and
// the command line it is used for (a command-bound token must match).
type approvalArgs struct {
	Token   []byte `json:"token,omitempty"`
	Command string `json:"command,omitempty"`
}

type userState struct {
	Up         bool                   `json:"up"`
	Users      map[string]*userRecord `json:"users"`
	Tombstones map[string]int64       `json:"tombstones"`
}

// snapshotArgs asks for one page of a snapshot.
type snapshotArgs struct {
	Filter Filter `json:"filter"`
	After  Ref    `json:"after,omitempty"`
}

// snapshotPageSize keeps a page of key records well inside one frame
// (wire.MaxPayload, 4 MiB): a record's JSON is under 1 KiB.
const snapshotPageSize = 2000

// snapshotReply is one page of a snapshot.
type snapshotReply struct {
	Keys []keyMeta `json:"keys"`
	More bool      `json:"more,omitempty"`
}

// generateArgs asks an HSM to make a key: the material is made there and
// never leaves it in clear. Ref is the reference the client drew, unused
// on every HSM it asked; the HSM refuses one it holds or held.
type generateArgs struct {
	Spec KeySpec `json:"spec"`
	Ref  Ref     `json:"ref"`
	// Wrap asks, for a token key, for each record wrapped under the domain
	// key too, for client-side sync to relay: one round trip, not two.
	Wrap bool `json:"wrap,omitempty"`
}

// importArgs asks an HSM to import a public key.
type importArgs struct {
	Spec ImportSpec `json:"spec"`
	Ref  Ref        `json:"ref"`
	Wrap bool       `json:"wrap,omitempty"`
}

// createReply is a new key's records, without material, and (if asked)
// the same records wrapped under the domain key.
type createReply struct {
	Keys    []keyMeta     `json:"keys"`
	Wrapped []*wrappedKey `json:"wrapped,omitempty"`
}

// keyChangeArgs changes a key's users or attributes on one HSM, which
// passes the change on to the other HSMs of the domain.
type keyChangeArgs struct {
	Ref      Ref           `json:"ref"`
	Op       string        `json:"op"` // share, unshare, set-attribute
	User     string        `json:"user,omitempty"`
	Name     string        `json:"name,omitempty"`
	Value    string        `json:"value,omitempty"`
	Approval *approvalArgs `json:"approval,omitempty"`
}

// Key changes.
const (
	opShare        = "share"
	opUnshare      = "unshare"
	opSetAttribute = "set-attribute"
)

type importWrappedArgs struct {
	Key *wrappedKey `json:"key"`
	// Approval is user replicate's: making a user takes the user
	// service's approval, however the user is made.
	Approval *approvalArgs `json:"approval,omitempty"`
}

// userArgs is a user change an admin (or, for its own password, a user)
// asks of an HSM.
type userArgs struct {
	Username string        `json:"username"`
	Role     Role          `json:"role"`
	Password string        `json:"password,omitempty"`
	Approval *approvalArgs `json:"approval,omitempty"`
}

// userView is a user as a session sees it: never the password hash.
type userView struct {
	Username  string `json:"username"`
	Role      Role   `json:"role"`
	Locked    bool   `json:"locked"`
	QuorumKey bool   `json:"quorum_key"`
	Updated   int64  `json:"updated"`
}

func viewOf(u *userRecord) userView {
	return userView{Username: u.Username, Role: u.Role, Locked: u.locked(), QuorumKey: u.QuorumKey != "", Updated: u.Updated}
}

// issueArgs asks an HSM for a quorum token.
type issueArgs struct {
	Service string `json:"service"`
	KeyRef  *Ref   `json:"key_ref,omitempty"`
	Command string `json:"command,omitempty"`
	Cluster string `json:"cluster"`
}

// quorumList is what a session sees of the quorum state.
type quorumList struct {
	Settings quorumSettings `json:"settings"`
	Tokens   []*tokenRecord `json:"tokens"`
}

// setQuorumArgs sets a service's quorum value (Service, Value) or the
// token timeouts (Generated, Approved).
type setQuorumArgs struct {
	Service   string        `json:"service,omitempty"`
	Value     int           `json:"value,omitempty"`
	Generated time.Duration `json:"generated,omitempty"`
	Approved  time.Duration `json:"approved,omitempty"`
	Approval  *approvalArgs `json:"approval,omitempty"`
}

type registerArgs struct {
	PubPEM []byte `json:"public_key"`
	File   []byte `json:"file"`
}

type deleteTokensArgs struct {
	All bool `json:"all"`
}

type deleteUserArgs struct {
	Name string `json:"name"`
	At   int64  `json:"at"`
}
