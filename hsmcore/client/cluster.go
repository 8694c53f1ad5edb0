package client

import (
	"context"
	"time"
)

// Cluster is an HSM cluster as a client sees it. The command layer uses
// only this interface; the embedded cluster implements it with in-process
// HSMs, and a remote cluster implements it with HSM servers.
//
// Every operation on behalf of a user takes the Caller that the login
// returned; the cluster checks what that user may do.
type Cluster interface {
	// ID is the cluster's id from the configuration.
	ID() string
	// HSMs describes every HSM of the cluster, in id order.
	HSMs(ctx context.Context) []HSMInfo
	// TLSInfo describes each HSM's nested TLS connection: both layers, as
	// the last handshake left them.
	TLSInfo(ctx context.Context) []HSMTLS

	// Activate sets the built-in admin's password on a new cluster.
	Activate(ctx context.Context, password string) error
	// Login checks a user's password and opens a login session.
	Login(ctx context.Context, username string, role Role, password string) (Caller, error)
	// Logout ends a login session; its session keys are destroyed.
	Logout(ctx context.Context, c Caller) error
	// LoginMFA, RegisterMFAKey and DeregisterMFA are token-sign MFA.
	LoginMFA(ctx context.Context, username string, role Role, password string, sign MFASigner) (Caller, error)
	RegisterMFAKey(ctx context.Context, c Caller, pubPEM, signedFile []byte) error
	DeregisterMFA(ctx context.Context, c Caller, username string, role Role) error
	DeregisterQuorumKey(ctx context.Context, c Caller, username string, role Role) error
	// SessionInfo describes the caller's authenticated session.
	SessionInfo(ctx context.Context, c Caller) (SessionInfo, error)

	CreateUser(ctx context.Context, c Caller, username string, role Role, password string) (User, error)
	DeleteUser(ctx context.Context, c Caller, username string, role Role) error
	Users(ctx context.Context, c Caller) ([]User, error)
	ChangePassword(ctx context.Context, c Caller, username string, role Role, password string) error

	// GenerateKey makes a key (symmetric: one Key; pair: public, private).
	GenerateKey(ctx context.Context, c Caller, spec KeySpec) ([]Key, error)
	ImportKey(ctx context.Context, c Caller, spec ImportSpec) (Key, error)
	// Keys lists the keys the caller may see that match f, by reference.
	Keys(ctx context.Context, c Caller, f Filter) ([]Key, error)
	DeleteKey(ctx context.Context, c Caller, ref Ref) error
	// ShareKey shares (share true) or unshares a key with a crypto user.
	ShareKey(ctx context.Context, c Caller, ref Ref, username string, share bool) (Key, error)
	SetAttribute(ctx context.Context, c Caller, ref Ref, name, value string) (Key, error)
	Sign(ctx context.Context, c Caller, req SignRequest) ([]byte, error)
	Verify(ctx context.Context, c Caller, req SignRequest, sig []byte) error
	// PublicKeyPEM is the public key of a public or private key, as PEM.
	PublicKeyPEM(ctx context.Context, c Caller, ref Ref) ([]byte, error)
	// MTLS and ChangeMTLS are cluster mtls: trust anchors and the
	// enforcement level of the servers' outer TLS layer.
	MTLS(ctx context.Context) (MTLSState, map[int]string, error)
	ChangeMTLS(ctx context.Context, c Caller, change MTLSChange) (MTLSState, error)
	// WrapKey and UnwrapKey are key wrap and key unwrap: done inside an
	// HSM, the client sees only the wrapped bytes.
	WrapKey(ctx context.Context, c Caller, req WrapRequest) (Wrapped, error)
	UnwrapKey(ctx context.Context, c Caller, spec UnwrapSpec) (Key, error)

	// Quorum (M-of-N) approval. Operations that need it take the token
	// from their context (WithApproval); the HSM decides and verifies.
	GenerateToken(ctx context.Context, c Caller, service string, keyRef *Ref, command string) ([]byte, error)
	QuorumTokens(ctx context.Context, c Caller) ([]QuorumToken, error)
	DeleteTokens(ctx context.Context, c Caller, all bool) (int, error)
	QuorumValues(ctx context.Context, c Caller) (values map[string]int, generated, approved time.Duration, err error)
	SetQuorumValue(ctx context.Context, c Caller, service string, value int) error
	SetQuorumTimeouts(ctx context.Context, c Caller, generated, approved time.Duration) error
	RegisterQuorumKey(ctx context.Context, c Caller, pubPEM, signedToken []byte) error

	// Backups and replication between clusters of one domain (a cluster
	// and its clones).
	CreateBackup(ctx context.Context, c Caller, password string) ([]byte, BackupInfo, error)
	DomainID() (string, error)
	ExportKey(ctx context.Context, c Caller, ref Ref) (KeyCopy, error)
	ReplicateKey(ctx context.Context, c Caller, k KeyCopy) error
	ExportUser(ctx context.Context, c Caller, username string, role Role) (UserCopy, error)
	ReplicateUser(ctx context.Context, c Caller, u UserCopy) error

	// Subscribe follows the cluster's events; cancel ends it. A slow
	// subscriber loses events rather than blocking the cluster.
	Subscribe(buffer int) (events <-chan Event, cancel func())

	// Durability is the client key-durability settings in force.
	Durability() Durability
	// SetDurability changes them for this client.
	SetDurability(d Durability) error

	Close() error
}

// Durability are the client key-durability settings of SPEC §1.
type Durability struct {
	// MinimumNodes is create_object_minimum_nodes (SDK 3): how many HSMs a
	// new token key must reach for its creation to count.
	MinimumNodes int
	// AvailabilityCheck is the SDK 5 key availability quorum: a token key
	// is usable only once it is on at least 2 HSMs.
	AvailabilityCheck bool
	// ServerSyncInterval is how often HSMs replicate keys among themselves.
	ServerSyncInterval time.Duration
	// RetryOnMissingKey is how many other HSMs a call is retried on when
	// the HSM it was routed to does not hold the key.
	RetryOnMissingKey int
}
