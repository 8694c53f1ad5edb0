package hsmcore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/hsmsh/hsmsh/hsmcore/authsession"
	"github.com/hsmsh/hsmsh/hsmcore/rpc"
)

// The door of an HSM: every call it serves, and who may make it. Nothing
// reaches an HSM but through serve, in-process or over the network, so
// the table below is the whole of what an HSM answers.

// The calls an HSM serves.
const (
	// Bare: what a client needs before it has logged in.
	mInfo         = "info"
	mDomainInfo   = "domain-info"
	mHandshake    = "handshake"
	mAuthenticate = "authenticate"
	mActivate     = "activate"
	mUsers        = "users" // user list: CloudHSM serves it without a login; no hashes
	// The services' quorum values and the token timeouts, which CloudHSM
	// also shows without a login; never the tokens.
	mQuorumValues = "quorum-values"
	mEnveloped    = "enveloped" // carries a session call
	mPeer         = "peer"      // carries a peer call
	mJoin         = "join"      // an endorsed HSM asks to join the domain

	// Session: a logged-in user's calls, sealed in envelopes.
	mKeyMeta        = "key-meta"
	mHas            = "has"
	mRefTaken       = "ref-taken"
	mDeleteKey      = "delete-key"
	mSnapshot       = "snapshot"
	mDestroySession = "destroy-session"
	mEndSession     = "end-session"
	mSign           = "sign"
	mVerify         = "verify"
	mPublicKey      = "public-key"
	mGenerateKey    = "generate-key"
	mImportKey      = "import-key"
	mExportWrapped  = "export-wrapped"
	mImportWrapped  = "import-wrapped"
	mKeyChange      = "key-change"
	mCreateUser     = "create-user"
	mRemoveUser     = "remove-user"
	mSetPassword    = "set-password"
	mOwns           = "owns"
	mQuorumList     = "quorum-list"
	mIssueToken     = "issue-token"
	mDeleteTokens   = "delete-tokens"
	mSetQuorum      = "set-quorum"
	mRegisterQuorum = "register-quorum-key"
	mBackup         = "backup"
	mExportUser     = "export-user"
	mImportUser     = "import-user"

	// Peer: another HSM of the domain, each call signed with its identity
	// key (peer.go).
	mTokenState  = "peer.token-state"
	mTokenKeys   = "peer.token-keys"
	mUserState   = "peer.user-state"
	mPutUser     = "peer.put-user"
	mDropUser    = "peer.drop-user"
	mQuorumState = "peer.quorum-state"
	mPutQuorum   = "peer.put-quorum"
	mPutToken    = "peer.put-token"
	mUseToken    = "peer.use-token"
	mPutMeta     = "peer.put-meta"
	mAddMembers  = "peer.add-members"
	mDropTokens  = "peer.drop-tokens"

	// Lab: on a server started with its lab on (hsmsh serve --lab).
	mSyncNow    = "sync-now"
	mSyncPause  = "sync-pause"
	mSyncResume = "sync-resume"
	mSyncStatus = "sync-status"
	mLatency    = "latency"
)

// callClass says who may make a call.
type callClass uint8

const (
	// classBare calls need nothing but a connection, which a cluster
	// client certificate buys: bootstrap only. None reads key material,
	// user records or session ids, and none changes state beyond the login
	// it begins (and activation, which CloudHSM also serves before login).
	classBare callClass = iota + 1
	// classSession calls come sealed under a login session's key; the HSM
	// checks each against the user and role in the session's token.
	classSession
	// classPeer calls come from another HSM of the domain, signed with an
	// identity key in the domain's member list.
	classPeer
	// classLab calls drive the teaching lab, on an HSM whose lab is on.
	classLab
)

func (c callClass) String() string {
	switch c {
	case classBare:
		return "bare"
	case classSession:
		return "session"
	case classPeer:
		return "peer"
	case classLab:
		return "lab"
	}
	return "unknown"
}

// callTable is every call an HSM serves, with its class. A test checks
// that serve answers each and no other.
var callTable = map[string]callClass{
	mInfo: classBare, mDomainInfo: classBare, mHandshake: classBare, mAuthenticate: classBare,
	mActivate: classBare, mUsers: classBare, mQuorumValues: classBare, mEnveloped: classBare, mPeer: classBare, mJoin: classBare,

	mKeyMeta: classSession, mHas: classSession, mRefTaken: classSession, mDeleteKey: classSession,
	mSnapshot: classSession, mDestroySession: classSession, mEndSession: classSession,
	mSign: classSession, mVerify: classSession, mPublicKey: classSession,
	mGenerateKey: classSession, mImportKey: classSession, mExportWrapped: classSession,
	mImportWrapped: classSession, mKeyChange: classSession,
	mCreateUser: classSession, mRemoveUser: classSession, mSetPassword: classSession,
	mOwns: classSession, mQuorumList: classSession, mIssueToken: classSession,
	mDeleteTokens: classSession, mSetQuorum: classSession, mRegisterQuorum: classSession,
	mBackup: classSession, mExportUser: classSession, mImportUser: classSession,

	mTokenState: classPeer, mTokenKeys: classPeer, mUserState: classPeer, mPutUser: classPeer,
	mDropUser: classPeer, mQuorumState: classPeer, mPutQuorum: classPeer, mPutToken: classPeer,
	mUseToken: classPeer, mPutMeta: classPeer, mAddMembers: classPeer, mDropTokens: classPeer,

	mSyncNow: classLab, mSyncPause: classLab, mSyncResume: classLab, mSyncStatus: classLab,
	mLatency: classLab,
}

// errUnknownMethod is a request for a call this HSM does not serve.
var errUnknownMethod = errors.New("unknown method")

// decodeArgs reads a call's arguments into v.
func decodeArgs(method string, args json.RawMessage, v any) error {
	if err := json.Unmarshal(args, v); err != nil {
		return fmt.Errorf("%w: %s: bad arguments: %v", ErrInvalid, method, err)
	}
	return nil
}

// serve answers one call that arrived bare: the bootstrap calls, and the
// carriers of session and peer calls, which open, check and dispatch what
// they carry. A session or peer call sent bare is refused, whoever sends
// it: holding a cluster certificate proves nothing about who is asking.
func (h *hsm) serve(method string, args json.RawMessage) (any, error) {
	class, ok := callTable[method]
	if !ok {
		return nil, fmt.Errorf("%w %q: the server runs another hsmsh version?", errUnknownMethod, method)
	}
	switch class {
	case classSession:
		return nil, fmt.Errorf("%w: %s needs a logged-in session: send it in a session envelope", ErrPermission, method)
	case classPeer:
		return nil, fmt.Errorf("%w: %s is served only to another HSM of the domain, in a signed peer call", ErrPermission, method)
	case classLab:
		lab := h.labControl()
		if lab == nil {
			return nil, fmt.Errorf("%w: %s is a lab control, and the lab of %s is off (start the server with hsmsh serve --lab)", ErrPermission, method, h.id)
		}
		return lab(method, args)
	}
	switch method {
	case mInfo:
		return h.Info(), nil
	case mDomainInfo:
		return h.DomainInfo()
	case mHandshake:
		var a handshakeArgs
		if err := decodeArgs(method, args, &a); err != nil {
			return nil, err
		}
		return h.Handshake(a)
	case mAuthenticate:
		var a authArgs
		if err := decodeArgs(method, args, &a); err != nil {
			return nil, err
		}
		return h.Authenticate(a)
	case mUsers:
		return h.userViews()
	case mQuorumValues:
		if !h.Up() {
			return nil, errDown(h.id)
		}
		return h.quorumSnapshot(), nil
	case mActivate:
		var a activateArgs
		if err := decodeArgs(method, args, &a); err != nil {
			return nil, err
		}
		return nil, h.activate(a.Password)
	case mEnveloped:
		var env authsession.Envelope
		if err := decodeArgs(method, args, &env); err != nil {
			return nil, err
		}
		return h.Enveloped(env)
	case mPeer:
		var pc peerCall
		if err := decodeArgs(method, args, &pc); err != nil {
			return nil, err
		}
		return h.servePeerCall(&pc)
	case mJoin:
		var j joinRequest
		if err := decodeArgs(method, args, &j); err != nil {
			return nil, err
		}
		return h.acceptJoin(&j)
	}
	return nil, fmt.Errorf("%w %q", errUnknownMethod, method)
}

// handler is the HSM's door on a connection: serve, with errors coded
// for the wire.
func (h *hsm) handler() rpc.Handler {
	return func(ctx context.Context, method string, args json.RawMessage) (any, error) {
		out, err := h.serve(method, args)
		if err != nil {
			return nil, &rpc.RemoteError{Code: codeOf(err), Message: err.Error()}
		}
		return out, nil
	}
}

// activateArgs is cluster activate: the built-in admin's first password.
type activateArgs struct {
	Password string `json:"password"`
}
