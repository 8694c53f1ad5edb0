package hsmcore

import (
	"github.com/hsmsh/hsmsh/hsmcore/client"
	"github.com/hsmsh/hsmsh/hsmcore/profile"
	"github.com/hsmsh/hsmsh/hsmcore/protocol"
)

// The client library's names, as the command layer uses them: hsmcore
// is where a cluster is opened, and package client is what it is.

type (
	MTLSState       = client.MTLSState
	MTLSChange      = client.MTLSChange
	MFASigner       = client.MFASigner
	MFAStrategy     = client.MFAStrategy
	WrapRequest     = client.WrapRequest
	Wrapped         = client.Wrapped
	UnwrapSpec      = client.UnwrapSpec
	WrapParams      = client.WrapParams
	Attributes      = client.Attributes
	BackupInfo      = client.BackupInfo
	Caller          = client.Caller
	ClientIdentity  = client.ClientIdentity
	Cluster         = client.Cluster
	Durability      = client.Durability
	Embedded        = client.Embedded
	Event           = client.Event
	EventKind       = client.EventKind
	Filter          = client.Filter
	HSMInfo         = client.HSMInfo
	RaftInfo        = client.RaftInfo
	HSMState        = client.HSMState
	HSMTLS          = client.HSMTLS
	ImportSpec      = client.ImportSpec
	Key             = client.Key
	KeyCopy         = client.KeyCopy
	KeyInfo         = client.KeyInfo
	KeyQuorumValues = client.KeyQuorumValues
	KeySpec         = client.KeySpec
	Lab             = client.Lab
	Mechanism       = client.Mechanism
	Owner           = client.Owner
	Peer            = client.Peer
	QuorumStrategy  = client.QuorumStrategy
	QuorumToken     = client.QuorumToken
	Ref             = client.Ref
	Remote          = client.Remote
	RemoteOptions   = client.RemoteOptions
	ReplicateError  = client.ReplicateError
	Role            = client.Role
	SessionInfo     = client.SessionInfo
	SignRequest     = client.SignRequest
	SyncError       = client.SyncError
	SyncStats       = client.SyncStats
	SyncStatus      = client.SyncStatus
	User            = client.User
	UserCopy        = client.UserCopy
)

const (
	CoverageFull           = client.CoverageFull
	CoveragePartial        = client.CoveragePartial
	TransportTLS           = client.TransportTLS
	TransportDirect        = client.TransportDirect
	RoleAdmin              = client.RoleAdmin
	RoleCryptoUser         = client.RoleCryptoUser
	RoleUnactivatedAdmin   = client.RoleUnactivatedAdmin
	ClassSecret            = client.ClassSecret
	ClassPrivate           = client.ClassPrivate
	ClassPublic            = client.ClassPublic
	TypeAES                = client.TypeAES
	TypeGenericSecret      = client.TypeGenericSecret
	TypeEC                 = client.TypeEC
	TypeRSA                = client.TypeRSA
	TypeMLDSA              = client.TypeMLDSA
	MaxLabelLen            = client.MaxLabelLen
	MaxFailedLogins        = client.MaxFailedLogins
	MechECDSA              = client.MechECDSA
	MechRSAPKCS            = client.MechRSAPKCS
	MechRSAPKCSPS          = client.MechRSAPKCSPS
	MechEd25519            = client.MechEd25519
	MechEd25519ph          = client.MechEd25519ph
	MechMLDSA              = client.MechMLDSA
	StateActive            = client.StateActive
	StateDown              = client.StateDown
	StateDestroyed         = client.StateDestroyed
	EventKeyCreated        = client.EventKeyCreated
	EventKeyReplicated     = client.EventKeyReplicated
	EventKeySynced         = client.EventKeySynced
	EventKeyDeleted        = client.EventKeyDeleted
	EventKeyLost           = client.EventKeyLost
	EventSessionKeys       = client.EventSessionKeys
	EventRenegotiated      = client.EventRenegotiated
	EventHSMDown           = client.EventHSMDown
	EventHSMUp             = client.EventHSMUp
	EventHSMRestarted      = client.EventHSMRestarted
	EventHSMDestroyed      = client.EventHSMDestroyed
	EventHSMAdded          = client.EventHSMAdded
	EventHSMRemoved        = client.EventHSMRemoved
	EventHSMLatency        = client.EventHSMLatency
	EventHSMPartition      = client.EventHSMPartition
	EventSyncStarted       = client.EventSyncStarted
	EventSyncFinished      = client.EventSyncFinished
	EventSyncPaused        = client.EventSyncPaused
	EventSyncResumed       = client.EventSyncResumed
	EventQuorumToken       = client.EventQuorumToken
	EventQuorumApproved    = client.EventQuorumApproved
	EventCleanupDone       = client.EventCleanupDone
	EventLeader            = client.EventLeader
	EventNoLeader          = client.EventNoLeader
	EventDomainState       = client.EventDomainState
	EventCleanupFailed     = client.EventCleanupFailed
	DefaultSessionLifetime = client.DefaultSessionLifetime
	ProfileNone            = profile.None
	ProfileHSM1Medium      = profile.HSM1Medium
	ProfileHSM2mMedium     = profile.HSM2mMedium
)

var (
	ErrNotLoggedIn    = client.ErrNotLoggedIn
	ErrPermission     = client.ErrPermission
	ErrKeyNotFound    = client.ErrKeyNotFound
	ErrUserNotFound   = client.ErrUserNotFound
	ErrUserExists     = client.ErrUserExists
	ErrLocked         = client.ErrLocked
	ErrBadCredentials = client.ErrBadCredentials
	ErrNoHSM          = client.ErrNoHSM
	ErrNotActivated   = client.ErrNotActivated
	ErrInvalid        = client.ErrInvalid
	ErrSessionExpired = client.ErrSessionExpired
	ErrRenegotiate    = client.ErrRenegotiate
	ErrNotInDomain    = client.ErrNotInDomain
	ErrNoMajority     = client.ErrNoMajority
	ErrBadSignature   = client.ErrBadSignature
	ErrBackup         = client.ErrBackup
	Hashes            = client.Hashes
	ParseRole         = client.ParseRole
	ParseRef          = client.ParseRef
	NormalizeUsername = client.NormalizeUsername
	ValidatePassword  = client.ValidatePassword
	AttributeNames    = client.AttributeNames
	CurveNames        = client.CurveNames
	MLDSAParamSets    = client.MLDSAParamSets
	PKIFiles          = client.PKIFiles
	WithApproval      = client.WithApproval
	OpenRemote        = client.OpenRemote
	CheckProfile      = profile.Check
	ErrMFARequired    = client.ErrMFARequired
	// WrapMechanisms are key wrap's and key unwrap's mechanisms.
	WrapMechanisms = protocol.WrapMechanisms
	ReadBackupInfo = protocol.ReadBackupInfo
)

// The wrapping mechanisms, by CloudHSM CLI's names.
const (
	WrapAESGCM         = protocol.WrapAESGCM
	WrapCloudHSMAESGCM = protocol.WrapCloudHSMAESGCM
	WrapAESNoPad       = protocol.WrapAESNoPad
	WrapAESPKCS5Pad    = protocol.WrapAESPKCS5Pad
	WrapAESZeroPad     = protocol.WrapAESZeroPad
	WrapRSAAES         = protocol.WrapRSAAES
	WrapRSAOAEP        = protocol.WrapRSAOAEP
	WrapRSAPKCS        = protocol.WrapRSAPKCS
)

// The mTLS enforcement levels and the trust anchor limit.
const (
	MTLSNone        = protocol.MTLSNone
	MTLSCluster     = protocol.MTLSCluster
	MaxTrustAnchors = protocol.MaxTrustAnchors
)
