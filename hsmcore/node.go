package hsmcore

import (
	"time"

	"github.com/hsmsh/hsmsh/hsmcore/authsession"
)

// node is one HSM as the client library sees it: in-process (*hsm) or,
// later, a server reached over the network. Routing, client-side and
// server-side sync, users and key use go through it only; the lab alone
// reaches the in-process HSM behind a node (Embedded.member).
type node interface {
	// ID is the HSM's id, as events, errors and key coverage name it.
	ID() string
	// Up says whether the HSM answers; routing skips the ones that do not.
	Up() bool
	// Info describes the HSM for cluster hsm-info.
	Info() HSMInfo
	// Close releases the HSM's resources when the client closes.
	Close() error

	// PutKeys stores new or changed keys (copies), token keys durably
	// before they become visible: key creation, client-side sync, key
	// changes and server-side sync.
	PutKeys(recs []*keyRecord) error
	// UpdateMeta replaces a key's attributes and users, keeping the
	// material the HSM holds: key share and set-attribute never move key
	// material out of the HSM.
	UpdateMeta(r *keyRecord) error
	// KeyMeta returns a key, token or session, without its material: the
	// access check before Sign, Verify or PublicKeyPEM. A key the HSM does
	// not hold gives an error that matches ErrKeyNotFound, so the client
	// may retry on another HSM.
	KeyMeta(ref Ref) (*keyRecord, error)
	// TokenKeys returns the token keys named that the HSM holds, with
	// their material and in the order asked, for server-side sync to copy
	// to the HSMs that lack them; the others are left out.
	TokenKeys(refs []Ref) []*keyRecord
	// Has says whether the HSM answers and holds the key, token or
	// session: key coverage and the availability check.
	Has(ref Ref) bool
	// RefTaken says whether ref names a key the HSM holds or has deleted,
	// so that a new key never reuses a reference.
	RefTaken(ref Ref) bool
	// DeleteKey deletes a key; a token key leaves a tombstone, so sync
	// does not bring it back.
	DeleteKey(ref Ref) error
	// Snapshot returns every key the HSM holds, token and session keys,
	// without material, sorted by reference: key list.
	Snapshot(f Filter) ([]*keyRecord, error)
	// TokenState returns the references of the token keys the HSM holds,
	// in no particular order, and its tombstones (deleted key → when):
	// server-side sync, and the check for keys lost with a destroyed HSM.
	TokenState() (keys []Ref, tombstones map[Ref]time.Time)
	// DestroySession deletes the session keys of a login session (logout)
	// and returns how many there were.
	DestroySession(session string) int

	// Sign signs with a private key the HSM holds; the key never leaves it.
	Sign(req SignRequest) ([]byte, error)
	// Verify checks a signature with a public or private key it holds.
	Verify(req SignRequest, sig []byte) error
	// PublicKeyPEM returns the public key of a public or private key it
	// holds, as PEM.
	PublicKeyPEM(ref Ref) ([]byte, error)

	// UserState returns the HSM's users and user tombstones (deleted user
	// → when, Unix ns), or nil while it is down: user look-ups and sync.
	UserState() (users map[string]*userRecord, tombstones map[string]int64)
	// PutUser stores a new version of a user record.
	PutUser(u *userRecord) error
	// DeleteUser deletes a user, leaving a tombstone dated at.
	DeleteUser(name string, at int64) error
	// UnshareAll removes a user from the shared users of every key.
	UnshareAll(username string) error
	// Owns says whether a user owns any key on the HSM, which forbids
	// deleting the user.
	Owns(username string) bool

	// Quorum approval, decided on the HSM (quorumhsm.go).
	QuorumState() (quorumState, error)
	PutQuorumSettings(s quorumSettings) error
	PutToken(t *tokenRecord) error
	UseToken(nonce string, at time.Time) error
	DeleteTokens(requester string) (int, error)
	Approve(req approvalRequest) (approvalResult, error)
	RegisterQuorumKey(username string, pubPEM, file []byte) (*userRecord, error)

	// The domain of authenticated sessions (domain.go).
	DomainInfo() (domainInfo, error)
	CreateDomain(members map[string][]byte) error
	AddMembers(members map[string][]byte) error
	ExportDomain(to string) (*authsession.WrappedDomain, error)
	ImportDomain(w *authsession.WrappedDomain, members map[string][]byte) error

	// Authenticated sessions (sessionhsm.go).
	Handshake(a handshakeArgs) (*authsession.Reply, error)
	Authenticate(a authArgs) (authsession.Envelope, error)
	EndSession(sid string) error
	// Enveloped serves one command of a logged-in session: a call sealed
	// under the session key, carrying the session's EKT. The answer comes
	// back sealed the same way.
	Enveloped(env authsession.Envelope) (authsession.Envelope, error)

	// Backups and replication between clusters of one domain (backup.go);
	// served only inside a session.
	Backup(a backupArgs) ([]byte, error)
	ExportWrapped(ref Ref) (*wrappedKey, error)
	ImportWrapped(w *wrappedKey, owner string) error
}
