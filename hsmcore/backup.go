package hsmcore

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/hsmsh/hsmsh/hsmcore/quorum"
	"maps"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/hsmsh/hsmsh/hsmcore/authsession"
	"golang.org/x/crypto/argon2"
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

// BackupFormat names the backup file format; it changes with the layout.
const BackupFormat = "hsmsh-backup/1"

// Limits that keep a damaged or hostile file from costing much.
const (
	maxBackupHeader = 4 << 10
	maxBackupFile   = 1 << 30
)

// ErrBackup is a backup file that does not open: a wrong password, or a
// file that was altered or damaged.
var ErrBackup = errors.New("the backup does not open: wrong backup password, or the file was altered or damaged")

// BackupInfo is a backup's clear header.
type BackupInfo struct {
	Format  string    `json:"format"`
	Cluster string    `json:"cluster"`
	HSM     string    `json:"hsm"`    // the HSM it was taken from
	Domain  string    `json:"domain"` // the domain key's public id
	Created time.Time `json:"created"`
	Keys    int       `json:"keys"`
	Users   int       `json:"users"`
	// The password's key derivation, argon2id.
	Salt    []byte `json:"salt"`
	Time    uint32 `json:"kdf_time"`
	Memory  uint32 `json:"kdf_memory_kib"`
	Threads uint8  `json:"kdf_threads"`
}

// backupContents is what a backup holds, encrypted.
type backupContents struct {
	Keys       []wireKey              `json:"keys"`
	Tombstones map[Ref]time.Time      `json:"tombstones,omitempty"`
	Users      map[string]*userRecord `json:"users"`
	UserTombs  map[string]int64       `json:"user_tombstones,omitempty"`
	Quorum     quorumSettings         `json:"quorum"`
	Domain     []byte                 `json:"domain"`
}

// backupArgs asks an HSM for a backup: the key is derived from the
// password by the client, so the password never leaves it.
type backupArgs struct {
	Cluster string     `json:"cluster"`
	Info    BackupInfo `json:"info"` // the KDF fields, filled by the client
	Key     []byte     `json:"key"`
	// Approval is the quorum service's, when its value is above 1.
	Approval *approvalArgs `json:"approval,omitempty"`
}

// backupKDF are the argon2id parameters of new backups: OWASP's minimum.
var backupKDF = struct {
	time, memory uint32
	threads      uint8
}{2, 19 * 1024, 1}

func backupKey(password string, info BackupInfo) []byte {
	return argon2.IDKey([]byte(password), info.Salt, info.Time, info.Memory, info.Threads, 32)
}

// Backup seals the HSM's state under a.Key.
func (h *hsm) Backup(a backupArgs) ([]byte, error) {
	if len(a.Key) != 32 {
		return nil, fmt.Errorf("%w: backup key is %d bytes, want 32", ErrInvalid, len(a.Key))
	}
	h.mu.RLock()
	if !h.up {
		h.mu.RUnlock()
		return nil, errDown(h.id)
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
	info.Format, info.Cluster, info.HSM, info.Domain = BackupFormat, a.Cluster, h.id, h.domain.ID()
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

// ReadBackupInfo reads a backup's clear header, checking its shape only;
// the header is authenticated when the backup is opened.
func ReadBackupInfo(file []byte) (BackupInfo, error) {
	var info BackupInfo
	if len(file) > maxBackupFile {
		return info, fmt.Errorf("the backup is %d bytes, more than the %d a backup may be", len(file), maxBackupFile)
	}
	i := bytes.IndexByte(file, '\n')
	if i < 0 || i > maxBackupHeader {
		return info, errors.New("not an hsmsh backup: no header line")
	}
	dec := json.NewDecoder(bytes.NewReader(file[:i]))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&info); err != nil {
		return info, fmt.Errorf("not an hsmsh backup: its header: %v", err)
	}
	switch {
	case info.Format != BackupFormat:
		return info, fmt.Errorf("backup format %q: this hsmsh reads %q", info.Format, BackupFormat)
	case len(info.Salt) < 16 || info.Time == 0 || info.Time > 10 || info.Memory < 8*1024 || info.Memory > 1<<20 || info.Threads == 0:
		return info, errors.New("the backup's key derivation parameters are out of range: the header was altered")
	}
	return info, nil
}

// openBackup decrypts a backup with the password.
func openBackup(file []byte, password string) (BackupInfo, *backupContents, error) {
	info, err := ReadBackupInfo(file)
	if err != nil {
		return info, nil, err
	}
	i := bytes.IndexByte(file, '\n')
	header, rest := file[:i], file[i+1:]
	key := backupKey(password, info)
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

// CreateBackup has one HSM (the one holding the most token keys, so a key
// that has not yet reached every HSM is still caught) seal a backup of
// itself under password. Admins only; the HSM checks that too.
func (e *Embedded) CreateBackup(ctx context.Context, c Caller, password string) ([]byte, BackupInfo, error) {
	if err := e.requireRole(c, RoleAdmin); err != nil {
		return nil, BackupInfo{}, err
	}
	if err := ValidatePassword(password); err != nil {
		return nil, BackupInfo{}, fmt.Errorf("backup password: %w", err)
	}
	hs := e.answering()
	if len(hs) == 0 {
		return nil, BackupInfo{}, e.noHSM()
	}
	src, most := hs[0], -1
	for _, h := range hs {
		if n := h.Info().TokenKeyCount; n != nil && *n > most {
			src, most = h, *n
		}
	}
	info := BackupInfo{Salt: make([]byte, 16), Time: backupKDF.time, Memory: backupKDF.memory, Threads: backupKDF.threads}
	if _, err := rand.Read(info.Salt); err != nil {
		return nil, BackupInfo{}, err
	}
	key := backupKey(password, info)
	defer clear(key)
	file, err := e.on(c, src).Backup(backupArgs{Cluster: e.id, Info: info, Key: key, Approval: approvalFrom(ctx)})
	if err != nil {
		return nil, BackupInfo{}, fmt.Errorf("backup of %s: %w", src.ID(), err)
	}
	info, err = ReadBackupInfo(file)
	return file, info, err
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
		err = h.saveDomainLocked()
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

// DomainID is the cluster's domain, as its HSMs report it: keys and users
// replicate only between clusters of one domain (a cluster and its
// clones).
func (e *Embedded) DomainID() (string, error) {
	for _, h := range e.answering() {
		info, err := domainInfoOf(h)
		if err == nil && info.Domain != "" {
			return info.Domain, nil
		}
	}
	return "", fmt.Errorf("no HSM of cluster %s answers with its domain", e.id)
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

// wrappedKey is a key on its way between clusters.
type wrappedKey struct {
	Domain string `json:"domain"` // the domain whose key wrapped it
	Ref    Ref    `json:"ref,omitempty"`
	User   string `json:"user,omitempty"` // a sealed user record, for user replicate
	Body   []byte `json:"body"`           // nonce ‖ GCM(wireKey JSON), AAD label ‖ domain ‖ ref
}

func wrapAAD(domain string, ref Ref) []byte {
	return fmt.Appendf(nil, "%s|%s|%s", labelKeyWrap, domain, ref)
}

// ExportWrapped wraps a token key the HSM holds, material and all.
func (h *hsm) ExportWrapped(ref Ref) (*wrappedKey, error) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	if !h.up {
		return nil, errDown(h.id)
	}
	r, ok := h.keys[ref]
	if !ok {
		return nil, fmt.Errorf("%w: %s does not hold token key %s", ErrKeyNotFound, h.id, ref)
	}
	g, domain, err := h.wrapAEAD()
	if err != nil {
		return nil, err
	}
	plain, err := json.Marshal(toWire(r.clone()))
	if err != nil {
		return nil, err
	}
	defer clear(plain)
	nonce := make([]byte, g.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	return &wrappedKey{Domain: domain, Ref: ref, Body: g.Seal(nonce, nonce, plain, wrapAAD(domain, ref))}, nil
}

// ImportWrapped unwraps a key from a cluster of the same domain (or from
// another HSM of this one, for client-side sync) and stores it, for owner
// only (the session's user: a crypto user replicates its own keys). A key
// this HSM already holds is left as it is: an existing reference is never
// overwritten.
func (h *hsm) ImportWrapped(w *wrappedKey, owner string) error {
	r, err := h.unwrapKey(w)
	if err != nil || r == nil {
		return err
	}
	defer clear(r.Material)
	if r.Owner != owner {
		return fmt.Errorf("%w: key %s belongs to %s; only its owner may replicate it", ErrPermission, w.Ref, r.Owner)
	}
	return h.PutKeys([]*keyRecord{r})
}

// unwrapKey opens a wrapped token key for this HSM: nil (and no error) if
// it holds the key already.
func (h *hsm) unwrapKey(w *wrappedKey) (*keyRecord, error) {
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
		return nil, errDown(h.id)
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
func (h *hsm) wrapTokenKeys(refs []Ref) ([]*wrappedKey, error) {
	out := make([]*wrappedKey, 0, len(refs))
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

// OpenClone makes a new embedded cluster from a backup: every HSM starts
// from the backup's keys, users and quorum settings, in the backup's
// domain, so keys and users can be replicated between the clone and its
// source. opts.DataDir must be new (or "" for memory only).
func OpenClone(opts Options, file []byte, password string) (*Embedded, BackupInfo, error) {
	info, c, err := openBackup(file, password)
	if err != nil {
		return nil, info, err
	}
	defer func() {
		clear(c.Domain)
		for i := range c.Keys {
			clear(c.Keys[i].Material)
		}
	}()
	if opts.DataDir != "" {
		if entries, err := os.ReadDir(opts.DataDir); err == nil && len(entries) > 0 {
			return nil, info, fmt.Errorf("cluster %s already exists (%s): choose another id for the clone", opts.ID, opts.DataDir)
		}
	}
	opts.restore = c
	e, err := OpenEmbedded(opts)
	return e, info, err
}

// KeyCopy is a token key on its way from one cluster to another, wrapped
// under their shared domain key: opaque to the client that carries it.
type KeyCopy struct{ w *wrappedKey }

// ExportKey wraps one of c's token keys for key replicate, from the first
// HSM that holds it.
func (e *Embedded) ExportKey(ctx context.Context, c Caller, ref Ref) (KeyCopy, error) {
	if err := e.requireRole(c, RoleCryptoUser); err != nil {
		return KeyCopy{}, err
	}
	var last error = fmt.Errorf("%w: %s", ErrKeyNotFound, ref)
	for _, h := range e.onAll(c, e.answering()) {
		w, err := h.ExportWrapped(ref)
		if err == nil {
			return KeyCopy{w}, nil
		}
		last = err
		if !errors.Is(err, ErrKeyNotFound) {
			break
		}
	}
	return KeyCopy{}, last
}

// ReplicateError is a replication that did not reach every HSM of the
// destination cluster; CloudHSM CLI's words.
type ReplicateError struct {
	What   string // "Key" or "User"
	Total  int
	Failed map[string]error
}

func (e *ReplicateError) Error() string {
	ids := slices.Sorted(maps.Keys(e.Failed))
	parts := make([]string, len(ids))
	for i, id := range ids {
		parts[i] = fmt.Sprintf("%s: %v", id, e.Failed[id])
	}
	return fmt.Sprintf("%s replicate failed on %d of %d connections (%s)", e.What, len(e.Failed), e.Total, strings.Join(parts, "; "))
}

// Unwrap gives the connections' own errors, for errors.Is.
func (e *ReplicateError) Unwrap() []error {
	out := make([]error, 0, len(e.Failed))
	for _, id := range slices.Sorted(maps.Keys(e.Failed)) {
		out = append(out, e.Failed[id])
	}
	return out
}

// replicateTo runs put on every HSM of the cluster, each in c's session;
// HSMs that are down count as failed connections.
func (e *Embedded) replicateTo(c Caller, what string, put func(h *sealedNode) error) error {
	all := e.members()
	re := &ReplicateError{What: what, Total: len(all), Failed: map[string]error{}}
	for _, h := range all {
		if !h.Up() {
			re.Failed[h.ID()] = errDown(h.ID())
			continue
		}
		if err := put(e.on(c, h)); err != nil {
			re.Failed[h.ID()] = err
		}
	}
	if len(re.Failed) > 0 {
		return re
	}
	return nil
}

// ReplicateKey stores a key from a cluster of the same domain on every HSM
// of this one, for c (its owner).
func (e *Embedded) ReplicateKey(ctx context.Context, c Caller, k KeyCopy) error {
	if err := e.requireRole(c, RoleCryptoUser); err != nil {
		return err
	}
	if k.w == nil {
		return fmt.Errorf("%w: no key to replicate", ErrInvalid)
	}
	err := e.replicateTo(c, "Key", func(h *sealedNode) error { return h.ImportWrapped(k.w) })
	var re *ReplicateError
	if !errors.As(err, &re) || len(re.Failed) < re.Total { // some HSM took it
		e.events.publish(Event{Kind: EventKeyReplicated, Ref: k.w.Ref.String(), Detail: "key replicate into " + e.id})
	}
	return err
}

// UserCopy is a user record on its way between clusters, sealed by an
// HSM under its domain's key: only an HSM of the same domain opens it, so
// the password hash never reaches the client in clear.
type UserCopy struct{ w *wrappedKey }

const labelUserWrap = "hsmsh user wrap v1"

// exportUser seals a user record for user replicate (admins only).
func (h *hsm) exportUser(c Caller, a userArgs) (*wrappedKey, error) {
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
	return &wrappedKey{Domain: domain, User: u.Username, Body: g.Seal(nonce, nonce, plain, aad)}, nil
}

// importUser opens a sealed user record and makes the user here (and on
// the other HSMs); a user of that name must not exist.
func (h *hsm) importUser(c Caller, w *wrappedKey, approval *approvalArgs) error {
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
	if err := h.PutUser(&u); err != nil {
		return err
	}
	h.push(mPutUser, &u)
	return nil
}

// ExportUser reads a user for user replicate (admins only), sealed by an
// HSM of this cluster.
func (e *Embedded) ExportUser(ctx context.Context, c Caller, username string, role Role) (UserCopy, error) {
	if err := e.requireRole(c, RoleAdmin); err != nil {
		return UserCopy{}, err
	}
	name, err := NormalizeUsername(username)
	if err != nil {
		return UserCopy{}, err
	}
	var last error = e.noHSM()
	for _, h := range e.answering() {
		var w wrappedKey
		err := e.on(c, h).call(mExportUser, userArgs{Username: name, Role: role}, &w)
		if err == nil {
			return UserCopy{&w}, nil
		}
		last = err
		if !errors.Is(err, ErrUserNotFound) {
			break
		}
	}
	return UserCopy{}, last
}

// ReplicateUser creates a user from a cluster of the same domain (admins
// only): one HSM opens it and passes it to the others; a user of that
// name must not exist here.
func (e *Embedded) ReplicateUser(ctx context.Context, c Caller, u UserCopy) error {
	if err := e.requireRole(c, RoleAdmin); err != nil {
		return err
	}
	if u.w == nil {
		return fmt.Errorf("%w: no user to replicate", ErrInvalid)
	}
	hs := e.answering()
	if len(hs) == 0 {
		return e.noHSM()
	}
	if err := e.on(c, hs[0]).call(mImportUser, importWrappedArgs{Key: u.w, Approval: approvalFrom(ctx)}, nil); err != nil {
		return err
	}
	// Each HSM that is down missed it: CloudHSM counts those as failed.
	re := &ReplicateError{What: "User", Total: len(e.members()), Failed: map[string]error{}}
	for _, h := range e.members() {
		if !h.Up() {
			re.Failed[h.ID()] = errDown(h.ID())
		}
	}
	if len(re.Failed) > 0 {
		return re
	}
	return nil
}
