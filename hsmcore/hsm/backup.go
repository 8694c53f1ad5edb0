package hsm

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/hsmsh/hsmsh/hsmcore/protocol"
	"github.com/hsmsh/hsmsh/hsmcore/quorum"

	"github.com/hsmsh/hsmsh/hsmcore/authsession"
)

// Backups and clones (key-sync seed, last bullet): a backup is one HSM's
// token keys, users, quorum settings and domain key, encrypted by the HSM
// under a key derived from the admin's backup password, so the client that
// carries the file never sees what is inside. A clone is a new cluster
// restored from a backup: same domain, so keys and users can later be
// replicated between the two by an explicit command.
//
// File layout: one line of JSON (BackupInfo, in clear so that backup list
// needs no password), a newline, then nonce ‖ AES-256-GCM ciphertext of the
// contents with the header line as AAD. Altering either part, or a wrong
// password, makes the file fail to open.

// backupContents is what a backup holds, encrypted.
type backupContents struct {
	Keys       []wireKey               `json:"keys"`
	Tombstones map[Ref]time.Time       `json:"tombstones,omitempty"`
	Users      map[string]*userRecord  `json:"users"`
	UserTombs  map[string]int64        `json:"user_tombstones,omitempty"`
	Quorum     protocol.QuorumSettings `json:"quorum"`
	Domain     []byte                  `json:"domain"`
}

// Backup seals the HSM's state under a.Key.
func (h *hsm) Backup(a protocol.BackupArgs) ([]byte, error) {
	if len(a.Key) != 32 {
		return nil, fmt.Errorf("%w: backup key is %d bytes, want 32", ErrInvalid, len(a.Key))
	}
	h.mu.RLock()
	if !h.up {
		h.mu.RUnlock()
		return nil, protocol.ErrDown(h.id)
	}
	if h.domain == nil {
		h.mu.RUnlock()
		return nil, h.notInDomain()
	}
	c := backupContents{
		Tombstones: maps.Clone(h.tombstones), Users: map[string]*userRecord{},
		UserTombs: maps.Clone(h.userTombs), Quorum: h.quorum, Domain: bytes.Clone(h.domain[:]),
	}
	for _, ref := range slices.Sorted(maps.Keys(h.keys)) {
		c.Keys = append(c.Keys, toWire(h.keys[ref].clone()))
	}
	for n, u := range h.users {
		cp := *u
		c.Users[n] = &cp
	}
	info := a.Info
	info.Format, info.Cluster, info.HSM, info.Domain = protocol.BackupFormat, a.Cluster, h.id, h.domain.ID()
	info.Created, info.Keys, info.Users = time.Now().UTC().Truncate(time.Second), len(c.Keys), len(c.Users)
	h.mu.RUnlock()

	plain, err := json.Marshal(c)
	clear(c.Domain)
	for i := range c.Keys {
		clear(c.Keys[i].Material)
	}
	if err != nil {
		return nil, err
	}
	defer clear(plain)
	header, err := json.Marshal(info)
	if err != nil {
		return nil, err
	}
	aead, err := backupAEAD(a.Key)
	if err != nil {
		return nil, err
	}
	nonce := make([]byte, aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	out := append(append(header, '\n'), nonce...)
	return aead.Seal(out, nonce, plain, header), nil
}

// backupAEAD is AES-256-GCM under a key derived from the password key, so
// the raw argon2 output is never used as a cipher key for anything else.
func backupAEAD(key []byte) (cipher.AEAD, error) {
	k, err := hkdf.Key(sha256.New, key, nil, "hsmsh backup v1", 32)
	if err != nil {
		return nil, err
	}
	block, err := aes.NewCipher(k)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// openBackup decrypts a backup with the password.
func openBackup(file []byte, password string) (BackupInfo, *backupContents, error) {
	info, err := protocol.ReadBackupInfo(file)
	if err != nil {
		return info, nil, err
	}
	i := bytes.IndexByte(file, '\n')
	header, rest := file[:i], file[i+1:]
	key := protocol.BackupKey(password, info)
	defer clear(key)
	aead, err := backupAEAD(key)
	if err != nil {
		return info, nil, err
	}
	if len(rest) < aead.NonceSize()+aead.Overhead() {
		return info, nil, fmt.Errorf("%w (it is truncated)", ErrBackup)
	}
	plain, err := aead.Open(nil, rest[:aead.NonceSize()], rest[aead.NonceSize():], header)
	if err != nil {
		return info, nil, ErrBackup
	}
	defer clear(plain)
	var c backupContents
	if err := json.Unmarshal(plain, &c); err != nil {
		return info, nil, fmt.Errorf("the backup decrypts but its contents are malformed: %v", err)
	}
	if len(c.Domain) != len(authsession.DomainKey{}) || len(c.Keys) != info.Keys || len(c.Users) != info.Users {
		return info, nil, errors.New("the backup decrypts but does not hold what its header says")
	}
	return info, &c, nil
}

// restore loads a backup into a new, empty HSM: it joins the backup's
// domain, with itself as its only member until the others join.
func (h *hsm) restore(c *backupContents) error {
	h.mu.Lock()
	if len(h.keys) > 0 || h.domain != nil && h.domain.ID() != domainID(c.Domain) {
		h.mu.Unlock()
		return fmt.Errorf("%s is not empty: a backup restores only into new HSMs", h.id)
	}
	var d authsession.DomainKey
	copy(d[:], c.Domain)
	own, err := authsession.MarshalPublic(h.identity.Public())
	if err == nil {
		h.domain, h.members = &d, map[string][]byte{h.id: own}
		h.membersVersion = time.Now().UnixNano()
		// A clone starts a raft group of its own, from the backup's state.
		if err = h.setRaftHow(raftRestored); err == nil {
			err = h.saveDomainLocked()
		}
	}
	h.mu.Unlock()
	if err != nil {
		return err
	}
	keys := make([]*keyRecord, len(c.Keys))
	for i := range c.Keys {
		keys[i] = c.Keys[i].record()
	}
	if err := h.PutKeys(keys); err != nil {
		return fmt.Errorf("%s: restore keys: %w", h.id, err)
	}
	for _, u := range c.Users {
		if err := h.PutUser(u); err != nil {
			return fmt.Errorf("%s: restore user %s: %w", h.id, u.Username, err)
		}
	}
	for n, at := range c.UserTombs {
		if err := h.DeleteUser(n, at); err != nil {
			return err
		}
	}
	for ref, at := range c.Tombstones {
		if err := h.tombstone(ref, at); err != nil {
			return err
		}
	}
	return h.PutQuorumSettings(c.Quorum)
}

func domainID(b []byte) string {
	var d authsession.DomainKey
	copy(d[:], b)
	return d.ID()
}

// tombstone records a key deletion made elsewhere, at its own time.
func (h *hsm) tombstone(ref Ref, at time.Time) error {
	if h.store != nil {
		if err := h.store.deleteKey(ref, at); err != nil {
			return fmt.Errorf("%s: tombstone %s: %w", h.id, ref, err)
		}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.dropKeyLocked(ref)
	h.tombstones[ref] = at
	return nil
}

// Key replication between clusters of one domain (CloudHSM's key
// replicate): the source HSM wraps the key under a key derived from the
// domain key, and only an HSM of the same domain unwraps it. The material
// never travels in clear, and a cluster of another domain cannot read it.

const labelKeyWrap = "hsmsh key wrap v1"

func (h *hsm) wrapAEAD() (cipher.AEAD, string, error) {
	d := h.domain
	if d == nil {
		return nil, "", h.notInDomain()
	}
	// Derived once per domain key: every key a sync moves is wrapped or
	// unwrapped with it. (The GCM is safe for concurrent use.)
	if c := h.wrapCache.Load(); c != nil && c.domain == d {
		return c.g, c.id, nil
	}
	k, err := hkdf.Key(sha256.New, d[:], nil, labelKeyWrap, 32)
	if err != nil {
		return nil, "", err
	}
	block, err := aes.NewCipher(k)
	clear(k)
	if err != nil {
		return nil, "", err
	}
	g, err := cipher.NewGCM(block)
	if err != nil {
		return nil, "", err
	}
	c := &wrapCache{domain: d, g: g, id: d.ID()}
	h.wrapCache.Store(c)
	return c.g, c.id, nil
}

// wrapCache is the key-wrapping AEAD of one domain key.
type wrapCache struct {
	domain *authsession.DomainKey
	g      cipher.AEAD
	id     string
}

func wrapAAD(domain string, ref Ref) []byte {
	return fmt.Appendf(nil, "%s|%s|%s", labelKeyWrap, domain, ref)
}

// ExportWrapped wraps a token key the HSM holds, material and all.
func (h *hsm) ExportWrapped(ref Ref) (*protocol.WrappedKey, error) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	if !h.up {
		return nil, protocol.ErrDown(h.id)
	}
	r, ok := h.keys[ref]
	if !ok {
		return nil, fmt.Errorf("%w: %s does not hold token key %s", ErrKeyNotFound, h.id, ref)
	}
	return h.wrapLocked(r.clone())
}

// wrapLocked seals one key record, material included, under the domain's
// wrapping key, for an HSM of the domain to open; h.mu is held.
func (h *hsm) wrapLocked(r *keyRecord) (*protocol.WrappedKey, error) {
	ref := r.Ref
	g, domain, err := h.wrapAEAD()
	if err != nil {
		return nil, err
	}
	plain, err := json.Marshal(toWire(r))
	if err != nil {
		return nil, err
	}
	defer clear(plain)
	nonce := make([]byte, g.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	return &protocol.WrappedKey{Domain: domain, Ref: ref, Body: g.Seal(nonce, nonce, plain, wrapAAD(domain, ref))}, nil
}

// ImportWrapped unwraps a key from a cluster of the same domain (or from
// another HSM of this one, for client-side sync) and stores it, for owner
// only (the session's user: a crypto user replicates its own keys). A key
// this HSM already holds is left as it is: an existing reference is never
// overwritten.
// userExists says whether this HSM has a user named name.
func (h *hsm) userExists(name string) bool {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return h.users[name] != nil
}

// ImportWrapped stores a key wrapped under the domain key for owner; ""
// (an admin's key replicate) keeps the key's own owner, who must be a user
// here.
func (h *hsm) ImportWrapped(w *protocol.WrappedKey, owner string) error {
	r, err := h.unwrapKey(w)
	if err != nil || r == nil {
		return err
	}
	defer clear(r.Material)
	if owner != "" && r.Owner != owner {
		return fmt.Errorf("%w: key %s belongs to %s; only its owner (or an admin) may replicate it", ErrPermission, w.Ref, r.Owner)
	}
	if owner == "" && !h.userExists(r.Owner) {
		return fmt.Errorf("%w: key %s belongs to %s, who is no user of this cluster: replicate the user first", ErrInvalid, w.Ref, r.Owner)
	}
	return h.PutKeys([]*keyRecord{r})
}

// unwrapKey opens a wrapped token key for this HSM: nil (and no error) if
// it holds the key already.
func (h *hsm) unwrapKey(w *protocol.WrappedKey) (*keyRecord, error) {
	if w == nil {
		return nil, fmt.Errorf("%w: no wrapped key", ErrInvalid)
	}
	h.mu.RLock()
	g, domain, err := h.wrapAEAD()
	up := h.up
	_, held := h.keys[w.Ref]
	_, session := h.sessionKeys[w.Ref]
	_, deleted := h.tombstones[w.Ref]
	h.mu.RUnlock()
	switch {
	case !up:
		return nil, protocol.ErrDown(h.id)
	case err != nil:
		return nil, err
	case w.Domain != domain:
		return nil, fmt.Errorf("%w: key %s was wrapped by domain %s; %s is in domain %s: keys replicate only between a cluster and its clones", ErrPermission, w.Ref, w.Domain, h.id, domain)
	case session:
		return nil, fmt.Errorf("%w: key reference %s is taken on %s", ErrInvalid, w.Ref, h.id)
	case deleted:
		return nil, fmt.Errorf("%w: key %s was deleted in this cluster; it is not brought back", ErrInvalid, w.Ref)
	case len(w.Body) < g.NonceSize():
		return nil, fmt.Errorf("%w: the wrapped key is truncated", ErrInvalid)
	}
	plain, err := g.Open(nil, w.Body[:g.NonceSize()], w.Body[g.NonceSize():], wrapAAD(w.Domain, w.Ref))
	if err != nil {
		return nil, fmt.Errorf("%w: the wrapped key %s does not unwrap: altered, or wrapped by another domain", ErrPermission, w.Ref)
	}
	defer clear(plain)
	var wk wireKey
	if err := json.Unmarshal(plain, &wk); err != nil {
		return nil, fmt.Errorf("%w: the wrapped key is malformed: %v", ErrInvalid, err)
	}
	r := wk.record()
	if r.Ref != w.Ref || r.Session != "" {
		clear(r.Material)
		return nil, fmt.Errorf("%w: the wrapped key is not the token key %s it claims to be", ErrInvalid, w.Ref)
	}
	if held {
		// The same key again (a retried sync) is no change; another key
		// under a reference this HSM holds is refused: a key is never
		// overwritten.
		h.mu.RLock()
		cur := h.keys[w.Ref]
		h.mu.RUnlock()
		same := cur != nil && subtle.ConstantTimeCompare(cur.Material, r.Material) == 1 && cur.Owner == r.Owner
		clear(r.Material)
		if !same {
			return nil, fmt.Errorf("%w: key reference %s is taken on %s by another key", ErrInvalid, w.Ref, h.id)
		}
		return nil, nil
	}
	return r, nil
}

// wrapTokenKeys wraps the token keys named that the HSM holds, for
// server-side sync to another HSM of the domain; the others are left out.
func (h *hsm) wrapTokenKeys(refs []Ref) ([]*protocol.WrappedKey, error) {
	out := make([]*protocol.WrappedKey, 0, len(refs))
	for _, ref := range refs {
		w, err := h.ExportWrapped(ref)
		if errors.Is(err, ErrKeyNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, w)
	}
	return out, nil
}

const labelUserWrap = "hsmsh user wrap v1"

// exportUser seals a user record for user replicate (admins only).
func (h *hsm) exportUser(c Caller, a protocol.UserArgs) (*protocol.WrappedKey, error) {
	if err := requireAdmin(c, "user replicate"); err != nil {
		return nil, err
	}
	u, err := h.userAs(a.Username, a.Role)
	if err != nil {
		return nil, err
	}
	u.Failed, u.FailedOn, u.FailEpoch = 0, nil, 0
	plain, err := json.Marshal(u)
	if err != nil {
		return nil, err
	}
	defer clear(plain)
	h.mu.RLock()
	g, domain, err := h.wrapAEAD()
	h.mu.RUnlock()
	if err != nil {
		return nil, err
	}
	nonce := make([]byte, g.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	aad := []byte(labelUserWrap + "|" + domain + "|" + u.Username)
	return &protocol.WrappedKey{Domain: domain, User: u.Username, Body: g.Seal(nonce, nonce, plain, aad)}, nil
}

// importUser opens a sealed user record and makes the user here (and on
// the other HSMs); a user of that name must not exist.
func (h *hsm) importUser(c Caller, w *protocol.WrappedKey, approval *protocol.Approval) error {
	if err := requireAdmin(c, "user replicate"); err != nil {
		return err
	}
	if w == nil || w.User == "" {
		return fmt.Errorf("%w: no user to replicate", ErrInvalid)
	}
	h.mu.RLock()
	g, domain, err := h.wrapAEAD()
	h.mu.RUnlock()
	switch {
	case err != nil:
		return err
	case w.Domain != domain:
		return fmt.Errorf("%w: user %s was sealed by domain %s; this cluster is in domain %s: users replicate only between a cluster and its clones", ErrPermission, w.User, w.Domain, domain)
	case len(w.Body) < g.NonceSize():
		return fmt.Errorf("%w: the sealed user is truncated", ErrInvalid)
	}
	plain, err := g.Open(nil, w.Body[:g.NonceSize()], w.Body[g.NonceSize():], []byte(labelUserWrap+"|"+w.Domain+"|"+w.User))
	if err != nil {
		return fmt.Errorf("%w: the sealed user %s does not open: altered, or sealed by another domain", ErrPermission, w.User)
	}
	defer clear(plain)
	var u userRecord
	if err := json.Unmarshal(plain, &u); err != nil || u.Username != w.User {
		return fmt.Errorf("%w: the sealed user is malformed", ErrInvalid)
	}
	if err := validHash(u.Hash); err != nil {
		return fmt.Errorf("%w: user %s: %w", ErrInvalid, u.Username, err)
	}
	if _, err := h.userNamed(u.Username); err == nil {
		return fmt.Errorf("%w: %s already exists in this cluster", ErrUserExists, u.Username)
	}
	if err := h.approveIn(c, quorum.ServiceUser, 0, pathUserReplicate, approval); err != nil {
		return err
	}
	u.Updated = time.Now().UnixNano()
	u.Since = u.Updated
	return h.commit("replicate user "+u.Username, opCreateUser, &u)
}

// ReplicateUser creates a user from a cluster of the same domain (admins
// only): one HSM opens it and passes it to the others; a user of that
// name must not exist here.
