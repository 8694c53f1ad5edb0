package protocol

// The door of an HSM: every call it serves, and who may make it. Nothing
// reaches an HSM but through its door, in-process or over the network, so
// the table below is the whole of what an HSM answers.

// The calls an HSM serves.
const (
	// Bare: what a client needs before it has logged in.
	CallInfo         = "info"
	CallDomainInfo   = "domain-info"
	CallHandshake    = "handshake"
	CallAuthenticate = "authenticate"
	CallActivate     = "activate"
	CallUsers        = "users" // user list: CloudHSM serves it without a login; no hashes
	// The services' quorum values and the token timeouts, which CloudHSM
	// also shows without a login; never the tokens.
	CallQuorumValues = "quorum-values"
	CallEnveloped    = "enveloped" // carries a session call
	CallPeer         = "peer"      // carries a peer call
	CallJoin         = "join"      // an endorsed HSM asks to join the domain
	// The cluster's trust anchors and mTLS enforcement level, which
	// CloudHSM CLI lists without a login (certificates, no secrets).
	CallMTLSState = "mtls-state"

	// Session: a logged-in user's calls, sealed in envelopes.
	CallKeyMeta          = "key-meta"
	CallHas              = "has"
	CallRefTaken         = "ref-taken"
	CallDeleteKey        = "delete-key"
	CallSnapshot         = "snapshot"
	CallDestroySession   = "destroy-session"
	CallEndSession       = "end-session"
	CallSign             = "sign"
	CallVerify           = "verify"
	CallPublicKey        = "public-key"
	CallGenerateKey      = "generate-key"
	CallImportKey        = "import-key"
	CallExportWrapped    = "export-wrapped"
	CallImportWrapped    = "import-wrapped"
	CallKeyChange        = "key-change"
	CallCreateUser       = "create-user"
	CallRemoveUser       = "remove-user"
	CallSetPassword      = "set-password"
	CallOwns             = "owns"
	CallQuorumList       = "quorum-list"
	CallIssueToken       = "issue-token"
	CallDeleteTokens     = "delete-tokens"
	CallSetQuorum        = "set-quorum"
	CallRegisterQuorum   = "register-quorum-key"
	CallBackup           = "backup"
	CallExportUser       = "export-user"
	CallImportUser       = "import-user"
	CallWrapKey          = "wrap-key"
	CallUnwrapKey        = "unwrap-key"
	CallRegisterMFA      = "register-mfa-key"
	CallDeregisterMFA    = "deregister-mfa-key"
	CallDeregisterQuorum = "deregister-quorum-key"
	CallMTLSRegister     = "mtls-register-anchor"
	CallMTLSDeregister   = "mtls-deregister-anchor"
	CallMTLSSetLevel     = "mtls-set-enforcement"

	// Peer: another HSM of the domain, each call signed with its identity
	// key (package hsm, peer.go). The domain state changes only through
	// the consensus log (CallRaft, CallPropose); keys move by sync.
	CallTokenState = "peer.token-state"
	CallTokenKeys  = "peer.token-keys"
	CallPutMeta    = "peer.put-meta"
	CallRaft       = "peer.raft"     // one raft RPC (append, vote, snapshot…)
	CallPropose    = "peer.propose"  // a change to the domain state, to the leader
	CallLinkKey    = "peer.link-key" // agree the MAC key for raft RPCs between two HSMs

	// Lab: on a server started with its lab on (hsmsh serve --lab).
	CallSyncNow    = "sync-now"
	CallSyncPause  = "sync-pause"
	CallSyncResume = "sync-resume"
	CallSyncStatus = "sync-status"
	CallLatency    = "latency"
)

// Class says who may make a call.
type Class uint8

const (
	// ClassBare calls need nothing but a connection, which a cluster
	// client certificate buys: bootstrap only. None reads key material,
	// user records or session ids, and none changes state beyond the login
	// it begins (and activation, which CloudHSM also serves before login).
	ClassBare Class = iota + 1
	// ClassSession calls come sealed under a login session's key; the HSM
	// checks each against the user and role in the session's token.
	ClassSession
	// ClassPeer calls come from another HSM of the domain, signed with an
	// identity key in the domain's member list.
	ClassPeer
	// ClassLab calls drive the teaching lab, on an HSM whose lab is on.
	ClassLab
)

func (c Class) String() string {
	switch c {
	case ClassBare:
		return "bare"
	case ClassSession:
		return "session"
	case ClassPeer:
		return "peer"
	case ClassLab:
		return "lab"
	}
	return "unknown"
}

// Calls is every call an HSM serves, with its class. A test checks
// that serve answers each and no other.
var Calls = map[string]Class{
	CallInfo: ClassBare, CallDomainInfo: ClassBare, CallHandshake: ClassBare, CallAuthenticate: ClassBare,
	CallActivate: ClassBare, CallUsers: ClassBare, CallQuorumValues: ClassBare, CallEnveloped: ClassBare, CallPeer: ClassBare, CallJoin: ClassBare, CallMTLSState: ClassBare,

	CallKeyMeta: ClassSession, CallHas: ClassSession, CallRefTaken: ClassSession, CallDeleteKey: ClassSession,
	CallSnapshot: ClassSession, CallDestroySession: ClassSession, CallEndSession: ClassSession,
	CallSign: ClassSession, CallVerify: ClassSession, CallPublicKey: ClassSession,
	CallGenerateKey: ClassSession, CallImportKey: ClassSession, CallExportWrapped: ClassSession,
	CallImportWrapped: ClassSession, CallKeyChange: ClassSession,
	CallCreateUser: ClassSession, CallRemoveUser: ClassSession, CallSetPassword: ClassSession,
	CallOwns: ClassSession, CallQuorumList: ClassSession, CallIssueToken: ClassSession,
	CallDeleteTokens: ClassSession, CallSetQuorum: ClassSession, CallRegisterQuorum: ClassSession,
	CallBackup: ClassSession, CallExportUser: ClassSession, CallImportUser: ClassSession,
	CallWrapKey: ClassSession, CallUnwrapKey: ClassSession, CallRegisterMFA: ClassSession, CallDeregisterMFA: ClassSession, CallDeregisterQuorum: ClassSession,
	CallMTLSRegister: ClassSession, CallMTLSDeregister: ClassSession, CallMTLSSetLevel: ClassSession,

	CallTokenState: ClassPeer, CallTokenKeys: ClassPeer, CallPutMeta: ClassPeer, CallRaft: ClassPeer, CallPropose: ClassPeer, CallLinkKey: ClassPeer,

	CallSyncNow: ClassLab, CallSyncPause: ClassLab, CallSyncResume: ClassLab, CallSyncStatus: ClassLab,
	CallLatency: ClassLab,
}

// ActivateArgs is cluster activate: the built-in admin's first password.
type ActivateArgs struct {
	Password string `json:"password"`
}
