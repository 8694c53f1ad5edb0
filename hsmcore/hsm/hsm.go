package hsm

import (
	"fmt"
	"maps"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
	"github.com/hsmsh/hsmsh/hsmcore/authsession"
	"github.com/hsmsh/hsmsh/hsmcore/profile"
	"github.com/hsmsh/hsmsh/hsmcore/protocol"
	"github.com/hsmsh/hsmsh/hsmcore/quorum"
)

// hsm is one in-process HSM: its own users, its own token keys (kept in
// its store when it has one) and its volatile session keys. The client
// library reaches it as a node; only the lab's faults (fail, recover,
// restart, latency) act on it directly.
type hsm struct {
	id    string
	store store // nil: nothing persisted (--ephemeral)

	mu          sync.RWMutex
	up          bool
	keys        map[Ref]*keyRecord // token keys
	sessionKeys map[Ref]*keyRecord // volatile: never written, gone on restart
	index       keyIndex           // both maps' keys by label and class
	users       map[string]*userRecord
	tombstones  map[Ref]time.Time
	userTombs   map[string]int64 // deleted users → when (Unix ns)
	destroyed   bool
	// destroyedNow says the HSM is down because it was destroyed (not
	// merely failed), for cluster hsm-info and the panes.
	destroyedNow bool
	latency      atomic.Int64 // time.Duration added to each operation
	// partitioned cuts the HSM off from its peers (a network partition):
	// it still serves clients, but no peer call goes out or comes in.
	partitioned atomic.Bool

	quorum protocol.QuorumSettings    // quorum values and token timeouts
	tokens map[string]*protocol.Token // quorum tokens by nonce
	// rules are KMS-style quorum rule sets by command line, from the
	// HSM's configuration.
	rules map[string][]quorum.Rule

	// The HSM's place in the cluster's domain (domain.go).
	identity *authsession.Identity
	domain   *authsession.DomainKey // nil until it joins one
	members  map[string][]byte      // the domain's HSMs' identity keys
	// membersVersion orders member lists (Unix ns of the last change).
	membersVersion int64
	// wrapCache holds the key-wrapping AEAD of the current domain key.
	wrapCache atomic.Pointer[wrapCache]
	// peer reaches the cluster's other HSMs (peer.go).
	peer peerState
	// raft is the HSM's member of the domain state's consensus group
	// (raft.go).
	raft raftState
	// lab serves the lab's calls on a server started with its lab on.
	lab func(method string, args []byte) (any, error)
	// notify hears what the HSM does on its own (sync, pushes): the lab's
	// event log in process, a server's log.
	notify   func(Event)
	clients  map[string][]byte      // client installs' identity keys, by client id
	sessions map[string]*hsmSession // authenticated sessions: volatile
	// mtls is the cluster's mTLS settings (mtls.go).
	mtls protocol.MTLSState
	// phantoms counts wrong logins for names no user has (volatile), so
	// they are answered as a user's are.
	phantoms map[string]int
	// unrecorded counts wrong passwords this HSM could not get a majority
	// to record (volatile): it answers no attempt for those names until it
	// has (sessionhsm.go, recordAttempt).
	unrecorded map[string]int
	ended      map[string]time.Time   // sessions logged out → their expiry
	byEKT      map[string]*hsmSession // sessions by their current token
	// parsed holds private keys parsed for signing (Ref → parsedKey).
	parsed sync.Map
	// paced makes the HSM serve at a hardware profile's rates (package profile).
	paced *profile.Pacers
	// started is when the HSM last came up with empty volatile memory: a
	// session issued before it cannot be served without renegotiating.
	started time.Time
}

func newHSM(id string, st store) (*hsm, error) {
	h := &hsm{
		id: id, store: st, up: true,
		keys: map[Ref]*keyRecord{}, sessionKeys: map[Ref]*keyRecord{},
		users: map[string]*userRecord{}, tombstones: map[Ref]time.Time{},
		userTombs: map[string]int64{},
		quorum:    defaultQuorumSettings(), tokens: map[string]*protocol.Token{},
		started: time.Now(),
	}
	if st == nil {
		return h, h.loadDomain(nil)
	}
	c, err := st.load()
	if err != nil {
		return nil, err
	}
	if err := h.loadDomain(c.secrets); err != nil {
		return nil, err
	}
	if err := h.loadMTLS(c.secrets); err != nil {
		return nil, err
	}
	applied, err := loadApplied(c.secrets)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", id, err)
	}
	h.raft.applied = applied
	h.raft.how = string(c.secrets[secretRaft])
	for _, k := range c.keys {
		h.setKeyLocked(k)
	}
	for _, u := range c.users {
		h.users[u.Username] = u
	}
	h.tombstones = c.tombstones
	if c.userTombs != nil {
		h.userTombs = c.userTombs
	}
	if c.quorum != nil {
		h.quorum = *c.quorum
	}
	for _, t := range c.tokens {
		h.tokens[t.Nonce] = t
	}
	return h, nil
}

// ensureAdmin gives an HSM of a brand-new cluster (one with no users and
// no deleted users) the cluster's unactivated built-in admin, at the oldest possible version: an HSM that joins a cluster empty
// (a new server, a replaced one) must never have this record win over the
// activated admin the others hold.
func (h *hsm) ensureAdmin() error {
	h.mu.RLock()
	empty := len(h.users) == 0 && len(h.userTombs) == 0
	h.mu.RUnlock()
	if !empty {
		return nil
	}
	return h.PutUser(&userRecord{Username: protocol.BuiltinAdmin, Role: RoleUnactivatedAdmin, Updated: 1})
}

func (h *hsm) ID() string { return h.id }

func (h *hsm) Up() bool {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return h.up
}

// PutKeys stores records (copies), durably first for token keys, so a key
// is never visible before it is on disk.
func (h *hsm) PutKeys(recs []*keyRecord) error {
	h.delay()
	h.mu.RLock()
	up := h.up
	h.mu.RUnlock()
	if !up {
		return protocol.ErrDown(h.id)
	}
	copies := make([]*keyRecord, len(recs))
	var token []*keyRecord
	for i, r := range recs {
		copies[i] = r.clone()
		if r.Session == "" {
			token = append(token, copies[i])
		}
	}
	if h.store != nil && len(token) > 0 {
		if err := h.store.putKeys(token); err != nil {
			return fmt.Errorf("%s: write key store: %w", h.id, err)
		}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, r := range copies {
		h.setKeyLocked(r)
		if r.Session == "" {
			delete(h.tombstones, r.Ref)
		}
	}
	return nil
}

// UpdateMeta replaces a key's attributes and users, keeping its material
// and session. Concurrent changes to one key: the last one wins.
func (h *hsm) UpdateMeta(r *keyRecord) error {
	h.delay()
	cur, err := h.stored(r.Ref)
	if err != nil {
		return err
	}
	c := r.meta()
	c.Material = append([]byte(nil), cur.Material...)
	c.Session = cur.Session
	c.Created = cur.Created
	return h.PutKeys([]*keyRecord{c})
}

// KeyMeta returns a copy of a key, token or session, without its material. Every use of a key begins with it,
// so it is where the lab's latency is charged for Sign, Verify and
// PublicKeyPEM: one operation each, as when the client fetched the key.
func (h *hsm) KeyMeta(ref Ref) (*keyRecord, error) {
	h.delay()
	r, err := h.stored(ref)
	if err != nil {
		return nil, err
	}
	return r.meta(), nil
}

// stored returns the record the HSM holds for ref, token or session, not
// a copy: the caller must not change it.
func (h *hsm) stored(ref Ref) (*keyRecord, error) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	if !h.up {
		return nil, protocol.ErrDown(h.id)
	}
	if r, ok := h.keys[ref]; ok {
		return r, nil
	}
	if r, ok := h.sessionKeys[ref]; ok {
		return r, nil
	}
	return nil, &notFoundError{ref: ref, hsm: h.id}
}

// TokenKeys returns copies of the token keys named that the HSM holds,
// material included, in the order asked. Like the sync pass that asks, it does not check that
// the HSM is still up: a down HSM still holds its token keys.
func (h *hsm) TokenKeys(refs []Ref) []*keyRecord {
	out := make([]*keyRecord, 0, len(refs))
	h.mu.RLock()
	defer h.mu.RUnlock()
	for _, ref := range refs {
		if r, ok := h.keys[ref]; ok {
			out = append(out, r.clone())
		}
	}
	return out
}

// Sign signs with a private key the HSM holds.
func (h *hsm) Sign(req SignRequest) ([]byte, error) {
	h.paced.Pace(req)
	r, err := h.stored(req.Ref)
	if err != nil {
		return nil, err
	}
	// A stored record is never changed in place (changes replace it), so
	// it is read without a copy of its material.
	var parsed any
	if r.Attrs.Class == ClassPrivate {
		if parsed, err = h.privateKey(r); err != nil {
			return nil, err
		}
	}
	return signWith(r, req, parsed)
}

// parsedKey is a private key parsed once, for the record it came from.
type parsedKey struct {
	rec *keyRecord
	key any
}

// privateKey returns r's private key, parsed once per stored record; in
// volatile memory only, like the record's material.
func (h *hsm) privateKey(r *keyRecord) (any, error) {
	if v, ok := h.parsed.Load(r.Ref); ok && v.(parsedKey).rec == r {
		return v.(parsedKey).key, nil
	}
	k, err := parsePrivate(r)
	if err != nil {
		return nil, err
	}
	h.parsed.Store(r.Ref, parsedKey{rec: r, key: k})
	return k, nil
}

// Verify checks a signature with a public or private key the HSM holds.
func (h *hsm) Verify(req SignRequest, sig []byte) error {
	r, err := h.stored(req.Ref)
	if err != nil {
		return err
	}
	return verify(r.clone(), req, sig)
}

// PublicKeyPEM returns the public key of a key the HSM holds, as PEM.
func (h *hsm) PublicKeyPEM(ref Ref) ([]byte, error) {
	r, err := h.stored(ref)
	if err != nil {
		return nil, err
	}
	return publicPEM(r.clone())
}

// Has says whether the HSM holds the key, without copying it.
func (h *hsm) Has(ref Ref) bool {
	h.mu.RLock()
	defer h.mu.RUnlock()
	if !h.up {
		return false
	}
	_, tok := h.keys[ref]
	_, ses := h.sessionKeys[ref]
	return tok || ses
}

func (h *hsm) DeleteKey(ref Ref) error {
	h.mu.RLock()
	up := h.up
	_, isSession := h.sessionKeys[ref]
	h.mu.RUnlock()
	if !up {
		return protocol.ErrDown(h.id)
	}
	now := time.Now()
	if !isSession && h.store != nil {
		if err := h.store.deleteKey(ref, now); err != nil {
			return fmt.Errorf("%s: delete key %s: %w", h.id, ref, err)
		}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if isSession {
		h.dropKeyLocked(ref)
		return nil
	}
	h.dropKeyLocked(ref)
	h.parsed.Delete(ref)
	h.tombstones[ref] = now
	return nil
}

// Snapshot returns copies of the keys the HSM holds that match f, token
// keys and session keys, without material, sorted by reference. The
// filter runs here, so a key list of one key among 100,000 moves one.
func (h *hsm) Snapshot(f Filter) ([]*keyRecord, error) {
	recs, _, err := h.snapshotPage(f, nil, 0, 0)
	return recs, err
}

// snapshotPage is one page of Snapshot: at most limit keys (0: all) with
// references above after that match f and, if keep is set, keep. more
// says whether keys are left. Over a transport a snapshot travels in
// pages, since 100,000 keys would not fit one frame.
func (h *hsm) snapshotPage(f Filter, keep func(*keyRecord) bool, after Ref, limit int) (recs []*keyRecord, more bool, err error) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	if !h.up {
		return nil, false, protocol.ErrDown(h.id)
	}
	// References first: sorting and cutting them is cheap; copies are
	// made only of the keys on the page.
	var refs []Ref
	lookup := func(ref Ref) *keyRecord {
		if r, ok := h.keys[ref]; ok {
			return r
		}
		return h.sessionKeys[ref]
	}
	if cand, ok := h.index.candidates(f); ok && f.Ref == nil {
		// Sorted already: only the keys with the label (or class) asked.
		for _, ref := range cand {
			if r := lookup(ref); ref > after && matches(f, r) && (keep == nil || keep(r)) {
				refs = append(refs, ref)
			}
		}
	} else {
		for _, m := range []map[Ref]*keyRecord{h.keys, h.sessionKeys} {
			if f.Ref != nil {
				if r, ok := m[*f.Ref]; ok && r.Ref > after && matches(f, r) && (keep == nil || keep(r)) {
					refs = append(refs, r.Ref)
				}
				continue
			}
			for ref, r := range m {
				if ref > after && matches(f, r) && (keep == nil || keep(r)) {
					refs = append(refs, ref)
				}
			}
		}
		slices.Sort(refs)
	}
	if limit > 0 && len(refs) > limit {
		refs, more = refs[:limit], true
	}
	recs = make([]*keyRecord, 0, len(refs))
	for _, ref := range refs {
		r, ok := h.keys[ref]
		if !ok {
			r = h.sessionKeys[ref]
		}
		recs = append(recs, r.meta())
	}
	return recs, more, nil
}

// DestroySession deletes the session keys of one login session.
func (h *hsm) DestroySession(session string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for ref, r := range h.sessionKeys {
		if r.Session == session {
			h.dropKeyLocked(ref)
			n++
		}
	}
	return n
}

// Info describes the HSM: its state and, while it is up, how many token
// keys and users it holds.
func (h *hsm) Info() HSMInfo {
	info := HSMInfo{ID: h.id, State: StateDown, Address: "in-process", TLS: `none: in-process calls through the HSM's door (transport = "direct", the default); transport = "tls" puts both TLS layers on in-memory pipes`,
		LatencyMS: float64(h.latency.Load()) / float64(time.Millisecond)}
	// Outside h.mu: raft's stats take raft's own locks.
	info.Raft = h.raftInfo()
	h.mu.RLock()
	defer h.mu.RUnlock()
	if h.up {
		info.State = StateActive
		n := len(h.keys)
		info.TokenKeyCount = &n
		info.UserCount = len(h.users)
	} else if h.destroyedNow {
		info.State = StateDestroyed
	}
	if h.identity != nil {
		info.Identity = authsession.Fingerprint(h.identity.Public())
	}
	if h.domain != nil {
		info.Domain = h.domain.ID()
	}
	return info
}

// TokenState returns the references of the token keys the HSM holds, in
// no particular order, and a copy of its tombstones. It answers while the
// HSM is down too: a down HSM still holds its token keys.
func (h *hsm) TokenState() ([]Ref, map[Ref]time.Time) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	keys := make([]Ref, 0, len(h.keys))
	for ref := range h.keys {
		keys = append(keys, ref)
	}
	return keys, maps.Clone(h.tombstones)
}

// RefTaken says whether ref names a key the HSM holds, token or session,
// or a token key it deleted; up or down.
func (h *hsm) RefTaken(ref Ref) bool {
	h.mu.RLock()
	defer h.mu.RUnlock()
	_, a := h.keys[ref]
	_, b := h.sessionKeys[ref]
	_, t := h.tombstones[ref]
	return a || b || t
}

func (h *hsm) PutUser(u *userRecord) error {
	if !h.Up() {
		return protocol.ErrDown(h.id)
	}
	// The newer version's fields win, but failure counters merge: a
	// version written elsewhere must not erase a failure counted here.
	h.mu.Lock()
	defer h.mu.Unlock()
	c := *u
	if cur, ok := h.users[u.Username]; ok {
		if cur.Updated > c.Updated {
			c = *cur
			c.mergeFails(u)
		} else {
			c.mergeFails(cur)
		}
	}
	if h.store != nil {
		if err := h.store.putUser(&c); err != nil {
			return fmt.Errorf("%s: write user %s: %w", h.id, u.Username, err)
		}
	}
	h.users[u.Username] = &c
	delete(h.userTombs, u.Username)
	return nil
}

// DeleteUser removes a user and keeps a tombstone dated at, so sync can
// tell a deleted user from one not yet copied.
func (h *hsm) DeleteUser(name string, at int64) error {
	if !h.Up() {
		return protocol.ErrDown(h.id)
	}
	if h.store != nil {
		if err := h.store.deleteUser(name, at); err != nil {
			return fmt.Errorf("%s: delete user %s: %w", h.id, name, err)
		}
	}
	h.mu.Lock()
	delete(h.users, name)
	h.userTombs[name] = at
	h.mu.Unlock()
	return nil
}

// UserState returns copies of the users and the user tombstones.
func (h *hsm) UserState() (map[string]*userRecord, map[string]int64) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	if !h.up {
		return nil, nil
	}
	users := make(map[string]*userRecord, len(h.users))
	for n, u := range h.users {
		c := *u
		users[n] = &c
	}
	tombs := make(map[string]int64, len(h.userTombs))
	for n, t := range h.userTombs {
		tombs[n] = t
	}
	return users, tombs
}

// Owns says whether a user owns any key on this HSM.
func (h *hsm) Owns(username string) bool {
	h.mu.RLock()
	defer h.mu.RUnlock()
	for _, m := range []map[Ref]*keyRecord{h.keys, h.sessionKeys} {
		for _, r := range m {
			if r.Owner == username {
				return true
			}
		}
	}
	return false
}

func (h *hsm) Close() error {
	// A follower applies what the leader has committed before it stops,
	// so that the next process to open this store starts from it.
	if n := h.raftNode(); n != nil && n.r.State() != raft.Leader && h.Up() {
		h.catchUp()
	}
	h.stopRaft()
	if h.store != nil {
		return h.store.close()
	}
	return nil
}

// The lab's faults. They model what happens to a real HSM: it stops
// answering, loses its volatile memory, or is lost altogether.

// fail stops the HSM answering. With destroy its store is erased too, as
// when the hardware is lost; it returns the token keys it held.
func (h *hsm) fail(destroy bool, dir string) ([]Ref, error) {
	// A failed HSM takes no part in the domain state's consensus: its
	// raft node stops, and starts again from its log when it recovers.
	h.stopRaft()
	h.mu.Lock()
	defer h.mu.Unlock()
	h.up = false
	h.destroyedNow = destroy
	h.dropSessionKeysLocked()
	h.sessions = nil // volatile, like session keys
	h.ended, h.byEKT = nil, nil
	h.parsed.Clear()
	if !destroy {
		return nil, nil
	}
	held := make([]Ref, 0, len(h.keys))
	for ref := range h.keys {
		held = append(held, ref)
	}
	h.keys = map[Ref]*keyRecord{}
	h.index = keyIndex{}
	h.users = map[string]*userRecord{}
	h.tombstones = map[Ref]time.Time{}
	h.userTombs = map[string]int64{}
	h.domain, h.members = nil, nil // the lost hardware's keys are gone
	h.destroyed = true
	h.raft.mu.Lock()
	h.raft.mem, h.raft.how = nil, ""
	h.raft.mu.Unlock()
	h.raft.appliedMu.Lock()
	h.raft.applied = 0
	h.raft.appliedMu.Unlock()
	if h.store != nil {
		if err := h.store.close(); err != nil {
			return held, fmt.Errorf("%s: close store: %w", h.id, err)
		}
		h.store = nil
		if err := os.RemoveAll(dir); err != nil {
			return held, fmt.Errorf("%s: erase store: %w", h.id, err)
		}
	}
	return held, nil
}

// recover brings the HSM back; a destroyed one comes back empty, with a
// new store, for server-side sync to fill.
func (h *hsm) recover(open func() (store, error)) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.destroyed && open != nil {
		st, err := open()
		if err != nil {
			return err
		}
		h.store = st
	}
	if h.destroyed {
		// New hardware: a new identity, and no domain until it joins.
		if err := h.loadDomain(nil); err != nil {
			return err
		}
	}
	h.destroyed, h.destroyedNow = false, false
	h.up = true
	h.started = time.Now() // its volatile memory was lost when it failed
	return nil
}

// restart wipes volatile memory: session keys die, token keys stay.
func (h *hsm) restart() []*keyRecord {
	h.mu.Lock()
	defer h.mu.Unlock()
	gone := metasLocked(h.sessionKeys)
	h.dropSessionKeysLocked()
	h.sessions = nil // session keys (SK) live in volatile memory only
	h.ended, h.byEKT = nil, nil
	h.parsed.Clear()
	h.started = time.Now()
	return gone
}

// metasLocked copies the records of m without material; h.mu is held.
func metasLocked(m map[Ref]*keyRecord) []*keyRecord {
	out := make([]*keyRecord, 0, len(m))
	for _, r := range m {
		out = append(out, r.meta())
	}
	return out
}

// labels returns the labels of the keys the HSM holds, token and session.
func (h *hsm) labels() map[Ref]string {
	h.mu.RLock()
	defer h.mu.RUnlock()
	out := make(map[Ref]string, len(h.keys)+len(h.sessionKeys))
	for _, m := range []map[Ref]*keyRecord{h.keys, h.sessionKeys} {
		for ref, r := range m {
			out[ref] = r.Attrs.Label
		}
	}
	return out
}

// delay applies the lab's latency to one operation.
func (h *hsm) delay() {
	if d := time.Duration(h.latency.Load()); d > 0 {
		time.Sleep(d)
	}
}

// meta returns a copy of the record without its material.
func (r *keyRecord) meta() *keyRecord {
	c := *r
	c.Material = nil
	c.Shared = append([]string(nil), r.Shared...)
	return &c
}

// notFoundError is a key missing on one HSM, which the client may retry
// on another.
type notFoundError struct {
	ref Ref
	hsm string
}

func (e *notFoundError) Error() string     { return fmt.Sprintf("key %s not found on %s", e.ref, e.hsm) }
func (e *notFoundError) Is(err error) bool { return err == ErrKeyNotFound }

// UnshareAll removes a user from the shared users of every key.
func (h *hsm) UnshareAll(username string) error {
	var changed []*keyRecord
	h.mu.RLock()
	for _, m := range []map[Ref]*keyRecord{h.keys, h.sessionKeys} {
		for _, r := range m {
			for _, u := range r.Shared {
				if u == username {
					c := r.clone()
					c.Shared = slices.DeleteFunc(c.Shared, func(x string) bool { return x == username })
					changed = append(changed, c)
					break
				}
			}
		}
	}
	h.mu.RUnlock()
	if len(changed) == 0 {
		return nil
	}
	return h.PutKeys(changed)
}

// labControl returns the lab's handler, or nil while the lab is off.
func (h *hsm) labControl() func(method string, args []byte) (any, error) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	if h.lab == nil {
		return nil
	}
	lab := h.lab
	return lab
}

// event tells whoever runs the HSM what it did on its own.
func (h *hsm) event(ev Event) {
	h.mu.RLock()
	n := h.notify
	h.mu.RUnlock()
	if n != nil {
		if ev.HSM == "" {
			ev.HSM = h.id
		}
		n(ev)
	}
}

// notInDomain is protocol.ErrNotInDomain, naming the HSM.
func (h *hsm) notInDomain() error { return fmt.Errorf("%s %w", h.id, ErrNotInDomain) }
