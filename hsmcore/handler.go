package hsmcore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/hsmsh/hsmsh/hsmcore/authsession"
	"github.com/hsmsh/hsmsh/hsmcore/rpc"
)

// The rpc methods of an HSM: one per method of node, and the server-side
// sync controls the lab uses in remote mode.
const (
	mInfo           = "info"
	mPutKeys        = "put-keys"
	mUpdateMeta     = "update-meta"
	mKeyMeta        = "key-meta"
	mTokenKeys      = "token-keys"
	mHas            = "has"
	mRefTaken       = "ref-taken"
	mDeleteKey      = "delete-key"
	mSnapshot       = "snapshot"
	mTokenState     = "token-state"
	mDestroySession = "destroy-session"
	mSign           = "sign"
	mVerify         = "verify"
	mPublicKey      = "public-key"
	mUserState      = "user-state"
	mPutUser        = "put-user"
	mDeleteUser     = "delete-user"
	mUnshareAll     = "unshare-all"
	mOwns           = "owns"

	mQuorumState    = "quorum-state"
	mPutQuorum      = "put-quorum-settings"
	mPutToken       = "put-token"
	mUseToken       = "use-token"
	mDeleteTokens   = "delete-tokens"
	mApprove        = "approve"
	mRegisterQuorum = "register-quorum-key"

	mDomainInfo   = "domain-info"
	mCreateDomain = "create-domain"
	mAddMembers   = "add-members"
	mExportDomain = "export-domain"
	mImportDomain = "import-domain"

	mHandshake    = "handshake"
	mAuthenticate = "authenticate"
	mEndSession   = "end-session"
	mEnveloped    = "enveloped"

	mBackup        = "backup"
	mExportWrapped = "export-wrapped"
	mImportWrapped = "import-wrapped"

	mSyncNow    = "sync-now"
	mSyncPause  = "sync-pause"
	mSyncResume = "sync-resume"
	mSyncStatus = "sync-status"
	mLatency    = "latency"
)

// wireKey is a key record as it crosses the wire. keyRecord keeps its
// session and material out of JSON so that they can never reach a log or
// a file by accident; on the wire, inside the inner TLS connection to the
// HSM, they must travel.
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

func toWire(recs []*keyRecord) []wireKey {
	out := make([]wireKey, len(recs))
	for i, r := range recs {
		out[i] = wireKey{keyRecord: *r, Session: r.Session, Material: r.Material}
	}
	return out
}

func fromWire(ws []wireKey) []*keyRecord {
	out := make([]*keyRecord, len(ws))
	for i := range ws {
		out[i] = ws[i].record()
	}
	return out
}

type tokenState struct {
	Keys       []Ref             `json:"keys"`
	Tombstones map[Ref]time.Time `json:"tombstones"`
}

type verifyArgs struct {
	Req SignRequest `json:"req"`
	Sig []byte      `json:"sig"`
}

type userState struct {
	Up         bool                   `json:"up"`
	Users      map[string]*userRecord `json:"users"`
	Tombstones map[string]int64       `json:"tombstones"`
}

type useTokenArgs struct {
	Nonce string    `json:"nonce"`
	At    time.Time `json:"at"`
}

type registerArgs struct {
	Username string `json:"username"`
	PubPEM   []byte `json:"public_key"`
	File     []byte `json:"file"`
}

type importDomainArgs struct {
	Wrapped *authsession.WrappedDomain `json:"wrapped"`
	Members map[string][]byte          `json:"members"`
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
	Keys []wireKey `json:"keys"`
	More bool      `json:"more,omitempty"`
}

// snapshotOf answers a snapshot page request on an in-process HSM.
func snapshotOf(n node, a snapshotArgs, keep func(*keyRecord) bool) (snapshotReply, error) {
	h, ok := inProcess(n)
	if !ok {
		return snapshotReply{}, fmt.Errorf("%w: %s serves no snapshot pages", ErrInvalid, n.ID())
	}
	recs, more, err := h.snapshotPage(a.Filter, keep, a.After, snapshotPageSize)
	if err != nil {
		return snapshotReply{}, err
	}
	return snapshotReply{Keys: toWire(recs), More: more}, nil
}

type importWrappedArgs struct {
	Key   *wrappedKey `json:"key"`
	Owner string      `json:"owner"`
}

type deleteUserArgs struct {
	Name string `json:"name"`
	At   int64  `json:"at"`
}

// nodeHandler answers the rpc methods of node with h.
func nodeHandler(h node) rpc.Handler {
	return func(ctx context.Context, method string, args json.RawMessage) (any, error) {
		var out any
		var err error
		if sessionOnly[method] {
			// Holding a cluster client certificate is not a login: using a
			// key takes a session, whose envelope says who is asking.
			err = fmt.Errorf("%w: %s needs a logged-in session; send it in a session envelope", ErrPermission, method)
		} else {
			out, err = dispatch(h, method, args)
		}
		if err != nil {
			return nil, &rpc.RemoteError{Code: codeOf(err), Message: err.Error()}
		}
		return out, nil
	}
}

// errUnknownMethod is a request for a method this HSM does not have.
var errUnknownMethod = errors.New("unknown method")

func dispatch(h node, method string, args json.RawMessage) (any, error) {
	// decode reads the request's arguments into v.
	decode := func(v any) error {
		if err := json.Unmarshal(args, v); err != nil {
			return fmt.Errorf("%w: %s: bad arguments: %v", ErrInvalid, method, err)
		}
		return nil
	}
	var ref Ref
	switch method {
	case mKeyMeta, mHas, mRefTaken, mDeleteKey, mPublicKey:
		if err := decode(&ref); err != nil {
			return nil, err
		}
	}
	switch method {
	case mInfo:
		return h.Info(), nil
	case mPutKeys:
		var ws []wireKey
		if err := decode(&ws); err != nil {
			return nil, err
		}
		return nil, h.PutKeys(fromWire(ws))
	case mUpdateMeta:
		var w wireKey
		if err := decode(&w); err != nil {
			return nil, err
		}
		return nil, h.UpdateMeta(w.record())
	case mKeyMeta:
		r, err := h.KeyMeta(ref)
		if err != nil {
			return nil, err
		}
		return toWire([]*keyRecord{r})[0], nil
	case mTokenKeys:
		var refs []Ref
		if err := decode(&refs); err != nil {
			return nil, err
		}
		return toWire(h.TokenKeys(refs)), nil
	case mHas:
		return h.Has(ref), nil
	case mRefTaken:
		return h.RefTaken(ref), nil
	case mDeleteKey:
		return nil, h.DeleteKey(ref)
	case mSnapshot:
		var a snapshotArgs
		if err := decode(&a); err != nil {
			return nil, err
		}
		return snapshotOf(h, a, nil)
	case mTokenState:
		keys, tombs := h.TokenState()
		return tokenState{Keys: keys, Tombstones: tombs}, nil
	case mDestroySession:
		var s string
		if err := decode(&s); err != nil {
			return nil, err
		}
		return h.DestroySession(s), nil
	case mSign:
		var req SignRequest
		if err := decode(&req); err != nil {
			return nil, err
		}
		return h.Sign(req)
	case mVerify:
		var v verifyArgs
		if err := decode(&v); err != nil {
			return nil, err
		}
		return nil, h.Verify(v.Req, v.Sig)
	case mPublicKey:
		return h.PublicKeyPEM(ref)
	case mUserState:
		users, tombs := h.UserState()
		return userState{Up: users != nil, Users: users, Tombstones: tombs}, nil
	case mPutUser:
		var u userRecord
		if err := decode(&u); err != nil {
			return nil, err
		}
		return nil, h.PutUser(&u)
	case mDeleteUser:
		var a deleteUserArgs
		if err := decode(&a); err != nil {
			return nil, err
		}
		return nil, h.DeleteUser(a.Name, a.At)
	case mUnshareAll:
		var s string
		if err := decode(&s); err != nil {
			return nil, err
		}
		return nil, h.UnshareAll(s)
	case mOwns:
		var s string
		if err := decode(&s); err != nil {
			return nil, err
		}
		return h.Owns(s), nil
	case mQuorumState:
		return h.QuorumState()
	case mPutQuorum:
		var q quorumSettings
		if err := decode(&q); err != nil {
			return nil, err
		}
		return nil, h.PutQuorumSettings(q)
	case mPutToken:
		var t tokenRecord
		if err := decode(&t); err != nil {
			return nil, err
		}
		return nil, h.PutToken(&t)
	case mUseToken:
		var a useTokenArgs
		if err := decode(&a); err != nil {
			return nil, err
		}
		return nil, h.UseToken(a.Nonce, a.At)
	case mDeleteTokens:
		var s string
		if err := decode(&s); err != nil {
			return nil, err
		}
		return h.DeleteTokens(s)
	case mApprove:
		var req approvalRequest
		if err := decode(&req); err != nil {
			return nil, err
		}
		res, err := h.Approve(req)
		if err != nil {
			return nil, err
		}
		return res, nil
	case mRegisterQuorum:
		var a registerArgs
		if err := decode(&a); err != nil {
			return nil, err
		}
		return h.RegisterQuorumKey(a.Username, a.PubPEM, a.File)
	case mDomainInfo:
		return h.DomainInfo()
	case mCreateDomain, mAddMembers:
		var m map[string][]byte
		if err := decode(&m); err != nil {
			return nil, err
		}
		if method == mCreateDomain {
			return nil, h.CreateDomain(m)
		}
		return nil, h.AddMembers(m)
	case mExportDomain:
		var to string
		if err := decode(&to); err != nil {
			return nil, err
		}
		return h.ExportDomain(to)
	case mImportDomain:
		var a importDomainArgs
		if err := decode(&a); err != nil {
			return nil, err
		}
		return nil, h.ImportDomain(a.Wrapped, a.Members)
	case mHandshake:
		var a handshakeArgs
		if err := decode(&a); err != nil {
			return nil, err
		}
		return h.Handshake(a)
	case mAuthenticate:
		var a authArgs
		if err := decode(&a); err != nil {
			return nil, err
		}
		return h.Authenticate(a)
	case mEndSession:
		var sid string
		if err := decode(&sid); err != nil {
			return nil, err
		}
		return nil, h.EndSession(sid)
	case mBackup:
		var a backupArgs
		if err := decode(&a); err != nil {
			return nil, err
		}
		return h.Backup(a)
	case mExportWrapped:
		var ref Ref
		if err := decode(&ref); err != nil {
			return nil, err
		}
		return h.ExportWrapped(ref)
	case mImportWrapped:
		var a importWrappedArgs
		if err := decode(&a); err != nil {
			return nil, err
		}
		return nil, h.ImportWrapped(a.Key, a.Owner)
	case mEnveloped:
		var env authsession.Envelope
		if err := decode(&env); err != nil {
			return nil, err
		}
		return h.Enveloped(env)
	}
	return nil, fmt.Errorf("%w %q: the server runs another hsmsh version?", errUnknownMethod, method)
}
