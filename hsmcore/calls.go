package hsmcore

import "time"

// callFunc is one way of asking an HSM something: a request over a
// connection (remoteNode), or a command sealed in a session envelope
// (sealedNode). The node methods below are written once for both.
type callFunc func(method string, args, reply any) error

func (f callFunc) PutKeys(recs []*keyRecord) error {
	return f(mPutKeys, toWire(recs), nil)
}

func (f callFunc) UpdateMeta(r *keyRecord) error {
	return f(mUpdateMeta, toWire([]*keyRecord{r.meta()})[0], nil)
}

func (f callFunc) KeyMeta(ref Ref) (*keyRecord, error) {
	var w wireKey
	if err := f(mKeyMeta, ref, &w); err != nil {
		return nil, err
	}
	return w.record(), nil
}

func (f callFunc) TokenKeys(refs []Ref) []*keyRecord {
	var ws []wireKey
	if err := f(mTokenKeys, refs, &ws); err != nil {
		return nil
	}
	return fromWire(ws)
}

func (f callFunc) Has(ref Ref) bool {
	var ok bool
	return f(mHas, ref, &ok) == nil && ok
}

func (f callFunc) RefTaken(ref Ref) bool {
	var ok bool
	return f(mRefTaken, ref, &ok) == nil && ok
}

func (f callFunc) DeleteKey(ref Ref) error { return f(mDeleteKey, ref, nil) }

// Snapshot asks for the keys page by page.
func (f callFunc) Snapshot(flt Filter) ([]*keyRecord, error) {
	var out []*keyRecord
	a := snapshotArgs{Filter: flt}
	for {
		var page snapshotReply
		if err := f(mSnapshot, a, &page); err != nil {
			return nil, err
		}
		out = append(out, fromWire(page.Keys)...)
		if !page.More || len(page.Keys) == 0 {
			return out, nil
		}
		a.After = page.Keys[len(page.Keys)-1].Ref
	}
}

func (f callFunc) TokenState() ([]Ref, map[Ref]time.Time) {
	var st tokenState
	if err := f(mTokenState, nil, &st); err != nil {
		return nil, nil
	}
	return st.Keys, st.Tombstones
}

func (f callFunc) DestroySession(session string) int {
	var count int
	if err := f(mDestroySession, session, &count); err != nil {
		return 0
	}
	return count
}

func (f callFunc) Sign(req SignRequest) ([]byte, error) {
	var sig []byte
	if err := f(mSign, req, &sig); err != nil {
		return nil, err
	}
	return sig, nil
}

func (f callFunc) Verify(req SignRequest, sig []byte) error {
	return f(mVerify, verifyArgs{Req: req, Sig: sig}, nil)
}

func (f callFunc) PublicKeyPEM(ref Ref) ([]byte, error) {
	var p []byte
	if err := f(mPublicKey, ref, &p); err != nil {
		return nil, err
	}
	return p, nil
}

func (f callFunc) UserState() (map[string]*userRecord, map[string]int64) {
	var st userState
	if err := f(mUserState, nil, &st); err != nil || !st.Up {
		return nil, nil
	}
	if st.Users == nil {
		st.Users = map[string]*userRecord{}
	}
	if st.Tombstones == nil {
		st.Tombstones = map[string]int64{}
	}
	return st.Users, st.Tombstones
}

func (f callFunc) PutUser(u *userRecord) error { return f(mPutUser, u, nil) }

func (f callFunc) DeleteUser(name string, at int64) error {
	return f(mDeleteUser, deleteUserArgs{Name: name, At: at}, nil)
}

func (f callFunc) UnshareAll(username string) error { return f(mUnshareAll, username, nil) }

func (f callFunc) Owns(username string) bool {
	var ok bool
	return f(mOwns, username, &ok) == nil && ok
}

func (f callFunc) Backup(a backupArgs) ([]byte, error) {
	var b []byte
	if err := f(mBackup, a, &b); err != nil {
		return nil, err
	}
	return b, nil
}

func (f callFunc) ExportWrapped(ref Ref) (*wrappedKey, error) {
	var w wrappedKey
	if err := f(mExportWrapped, ref, &w); err != nil {
		return nil, err
	}
	return &w, nil
}

func (f callFunc) ImportWrapped(w *wrappedKey, owner string) error {
	return f(mImportWrapped, importWrappedArgs{Key: w, Owner: owner}, nil)
}
