package hsmcore

import (
	"fmt"
	"os"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// hsm is one in-process HSM: its own users, its own token keys (kept in
// its store when it has one) and its volatile session keys.
type hsm struct {
	id    string
	store store // nil: nothing persisted (--ephemeral)

	mu          sync.RWMutex
	up          bool
	keys        map[Ref]*keyRecord // token keys
	sessionKeys map[Ref]*keyRecord // volatile: never written, gone on restart
	users       map[string]*userRecord
	tombstones  map[Ref]time.Time
	userTombs   map[string]int64 // deleted users → when (Unix ns)
	destroyed   bool
	latency     atomic.Int64 // time.Duration added to each operation
}

func newHSM(id string, st store) (*hsm, error) {
	h := &hsm{
		id: id, store: st, up: true,
		keys: map[Ref]*keyRecord{}, sessionKeys: map[Ref]*keyRecord{},
		users: map[string]*userRecord{}, tombstones: map[Ref]time.Time{},
		userTombs: map[string]int64{},
	}
	if st == nil {
		return h, nil
	}
	c, err := st.load()
	if err != nil {
		return nil, err
	}
	for _, k := range c.keys {
		h.keys[k.Ref] = k
	}
	for _, u := range c.users {
		h.users[u.Username] = u
	}
	h.tombstones = c.tombstones
	if c.userTombs != nil {
		h.userTombs = c.userTombs
	}
	return h, nil
}

// errDown is what an HSM that does not answer gives.
func (h *hsm) errDown() error { return fmt.Errorf("%s is down", h.id) }

func (h *hsm) isUp() bool {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return h.up
}

// putKeys stores records (copies), durably first for token keys, so a key
// is never visible before it is on disk.
func (h *hsm) putKeys(recs []*keyRecord) error {
	h.delay()
	h.mu.RLock()
	up := h.up
	h.mu.RUnlock()
	if !up {
		return h.errDown()
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
		if r.Session != "" {
			h.sessionKeys[r.Ref] = r
		} else {
			h.keys[r.Ref] = r
			delete(h.tombstones, r.Ref)
		}
	}
	return nil
}

// key returns a copy of the key with ref, token or session.
func (h *hsm) key(ref Ref) (*keyRecord, error) {
	h.delay()
	h.mu.RLock()
	defer h.mu.RUnlock()
	if !h.up {
		return nil, h.errDown()
	}
	if r, ok := h.keys[ref]; ok {
		return r.clone(), nil
	}
	if r, ok := h.sessionKeys[ref]; ok {
		return r.clone(), nil
	}
	return nil, &notFoundError{ref: ref, hsm: h.id}
}

// has says whether the HSM holds the key, without copying it.
func (h *hsm) has(ref Ref) bool {
	h.mu.RLock()
	defer h.mu.RUnlock()
	if !h.up {
		return false
	}
	_, tok := h.keys[ref]
	_, ses := h.sessionKeys[ref]
	return tok || ses
}

func (h *hsm) deleteKey(ref Ref) error {
	h.mu.RLock()
	up := h.up
	_, isSession := h.sessionKeys[ref]
	h.mu.RUnlock()
	if !up {
		return h.errDown()
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
		delete(h.sessionKeys, ref)
		return nil
	}
	delete(h.keys, ref)
	h.tombstones[ref] = now
	return nil
}

// snapshot returns copies of every key the HSM holds, token keys and
// session keys, without material, sorted by reference.
func (h *hsm) snapshot() []*keyRecord {
	h.mu.RLock()
	defer h.mu.RUnlock()
	if !h.up {
		return nil
	}
	out := make([]*keyRecord, 0, len(h.keys)+len(h.sessionKeys))
	for _, m := range []map[Ref]*keyRecord{h.keys, h.sessionKeys} {
		for _, r := range m {
			c := *r
			c.Material = nil
			c.Shared = append([]string(nil), r.Shared...)
			out = append(out, &c)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Ref < out[j].Ref })
	return out
}

// destroySession deletes the session keys of one login session.
func (h *hsm) destroySession(session string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for ref, r := range h.sessionKeys {
		if r.Session == session {
			delete(h.sessionKeys, ref)
			n++
		}
	}
	return n
}

func (h *hsm) tokenKeyCount() int {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return len(h.keys)
}

func (h *hsm) user(name string) (*userRecord, error) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	if !h.up {
		return nil, h.errDown()
	}
	u, ok := h.users[name]
	if !ok {
		return nil, fmt.Errorf("%w: %s", ErrUserNotFound, name)
	}
	c := *u
	return &c, nil
}

func (h *hsm) userList() []*userRecord {
	h.mu.RLock()
	defer h.mu.RUnlock()
	if !h.up {
		return nil
	}
	out := make([]*userRecord, 0, len(h.users))
	for _, u := range h.users {
		c := *u
		out = append(out, &c)
	}
	return out
}

func (h *hsm) putUser(u *userRecord) error {
	if !h.isUp() {
		return h.errDown()
	}
	if h.store != nil {
		if err := h.store.putUser(u); err != nil {
			return fmt.Errorf("%s: write user %s: %w", h.id, u.Username, err)
		}
	}
	c := *u
	h.mu.Lock()
	h.users[u.Username] = &c
	delete(h.userTombs, u.Username)
	h.mu.Unlock()
	return nil
}

// deleteUser removes a user and keeps a tombstone dated at, so sync can
// tell a deleted user from one not yet copied.
func (h *hsm) deleteUser(name string, at int64) error {
	if !h.isUp() {
		return h.errDown()
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

// userState returns copies of the users and the user tombstones.
func (h *hsm) userState() (map[string]*userRecord, map[string]int64) {
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

// owns says whether a user owns any key on this HSM.
func (h *hsm) owns(username string) bool {
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

func (h *hsm) close() error {
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
	h.mu.Lock()
	defer h.mu.Unlock()
	h.up = false
	h.sessionKeys = map[Ref]*keyRecord{}
	if !destroy {
		return nil, nil
	}
	held := make([]Ref, 0, len(h.keys))
	for ref := range h.keys {
		held = append(held, ref)
	}
	h.keys = map[Ref]*keyRecord{}
	h.users = map[string]*userRecord{}
	h.tombstones = map[Ref]time.Time{}
	h.userTombs = map[string]int64{}
	h.destroyed = true
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
	h.destroyed = false
	h.up = true
	return nil
}

// restart wipes volatile memory: session keys die, token keys stay.
func (h *hsm) restart() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := len(h.sessionKeys)
	h.sessionKeys = map[Ref]*keyRecord{}
	return n
}

// delay applies the lab's latency to one operation.
func (h *hsm) delay() {
	if d := time.Duration(h.latency.Load()); d > 0 {
		time.Sleep(d)
	}
}

// notFoundError is a key missing on one HSM, which the client may retry
// on another.
type notFoundError struct {
	ref Ref
	hsm string
}

func (e *notFoundError) Error() string     { return fmt.Sprintf("key %s not found on %s", e.ref, e.hsm) }
func (e *notFoundError) Is(err error) bool { return err == ErrKeyNotFound }

// unshareAll removes a user from the shared users of every key.
func (h *hsm) unshareAll(username string) error {
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
	return h.putKeys(changed)
}
