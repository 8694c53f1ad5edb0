package client

import "github.com/hsmsh/hsmsh/hsmcore/protocol"

// The protocol's vocabulary under this package's own names: both sides
// of the door speak it, and neither names the other.

type (
	Ref         = protocol.Ref
	Role        = protocol.Role
	Caller      = protocol.Caller
	Attributes  = protocol.Attributes
	KeySpec     = protocol.KeySpec
	ImportSpec  = protocol.ImportSpec
	SignRequest = protocol.SignRequest
	Mechanism   = protocol.Mechanism
	Filter      = protocol.Filter
	Event       = protocol.Event
	EventKind   = protocol.EventKind
	HSMInfo     = protocol.HSMInfo
	RaftInfo    = protocol.RaftInfo
	HSMState    = protocol.HSMState
	HSMTLS      = protocol.HSMTLS
	SyncStats   = protocol.SyncStats
	SyncStatus  = protocol.SyncStatus
	BackupInfo  = protocol.BackupInfo
	Peer        = protocol.Peer
)

const (
	RoleAdmin            = protocol.RoleAdmin
	RoleCryptoUser       = protocol.RoleCryptoUser
	RoleUnactivatedAdmin = protocol.RoleUnactivatedAdmin
	ClassSecret          = protocol.ClassSecret
	ClassPrivate         = protocol.ClassPrivate
	ClassPublic          = protocol.ClassPublic
	TypeAES              = protocol.TypeAES
	TypeGenericSecret    = protocol.TypeGenericSecret
	TypeEC               = protocol.TypeEC
	TypeRSA              = protocol.TypeRSA
	TypeMLDSA            = protocol.TypeMLDSA
	MaxLabelLen          = protocol.MaxLabelLen
	MaxFailedLogins      = protocol.MaxFailedLogins
	MechECDSA            = protocol.MechECDSA
	MechRSAPKCS          = protocol.MechRSAPKCS
	MechRSAPKCSPS        = protocol.MechRSAPKCSPS
	MechEd25519          = protocol.MechEd25519
	MechEd25519ph        = protocol.MechEd25519ph
	MechMLDSA            = protocol.MechMLDSA
	StateActive          = protocol.StateActive
	StateDown            = protocol.StateDown
	StateDestroyed       = protocol.StateDestroyed
	EventKeyCreated      = protocol.EventKeyCreated
	EventKeyReplicated   = protocol.EventKeyReplicated
	EventKeySynced       = protocol.EventKeySynced
	EventKeyDeleted      = protocol.EventKeyDeleted
	EventKeyLost         = protocol.EventKeyLost
	EventSessionKeys     = protocol.EventSessionKeys
	EventRenegotiated    = protocol.EventRenegotiated
	EventHSMDown         = protocol.EventHSMDown
	EventHSMUp           = protocol.EventHSMUp
	EventHSMRestarted    = protocol.EventHSMRestarted
	EventHSMDestroyed    = protocol.EventHSMDestroyed
	EventHSMAdded        = protocol.EventHSMAdded
	EventHSMRemoved      = protocol.EventHSMRemoved
	EventHSMLatency      = protocol.EventHSMLatency
	EventHSMPartition    = protocol.EventHSMPartition
	EventSyncStarted     = protocol.EventSyncStarted
	EventSyncFinished    = protocol.EventSyncFinished
	EventSyncPaused      = protocol.EventSyncPaused
	EventSyncResumed     = protocol.EventSyncResumed
	EventQuorumToken     = protocol.EventQuorumToken
	EventQuorumApproved  = protocol.EventQuorumApproved
	EventCleanupDone     = protocol.EventCleanupDone
	EventLeader          = protocol.EventLeader
	EventNoLeader        = protocol.EventNoLeader
	EventDomainState     = protocol.EventDomainState
	EventCleanupFailed   = protocol.EventCleanupFailed
)

var (
	ErrNotLoggedIn    = protocol.ErrNotLoggedIn
	ErrPermission     = protocol.ErrPermission
	ErrKeyNotFound    = protocol.ErrKeyNotFound
	ErrUserNotFound   = protocol.ErrUserNotFound
	ErrUserExists     = protocol.ErrUserExists
	ErrLocked         = protocol.ErrLocked
	ErrBadCredentials = protocol.ErrBadCredentials
	ErrNoHSM          = protocol.ErrNoHSM
	ErrNotActivated   = protocol.ErrNotActivated
	ErrInvalid        = protocol.ErrInvalid
	ErrSessionExpired = protocol.ErrSessionExpired
	ErrRenegotiate    = protocol.ErrRenegotiate
	ErrNoMajority     = protocol.ErrNoMajority
	ErrNotInDomain    = protocol.ErrNotInDomain
	ErrBadSignature   = protocol.ErrBadSignature
	ErrBackup         = protocol.ErrBackup
	Hashes            = protocol.Hashes
	ParseRole         = protocol.ParseRole
	ParseRef          = protocol.ParseRef
	NormalizeUsername = protocol.NormalizeUsername
	ValidatePassword  = protocol.ValidatePassword
	AttributeNames    = protocol.AttributeNames
	CurveNames        = protocol.CurveNames
	MLDSAParamSets    = protocol.MLDSAParamSets
)
