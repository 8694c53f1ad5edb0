package client

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/hsmsh/hsmsh/hsmcore/protocol"
)

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
	info := BackupInfo{Salt: make([]byte, 16), Time: protocol.BackupKDF.Time, Memory: protocol.BackupKDF.Memory, Threads: protocol.BackupKDF.Threads}
	if _, err := rand.Read(info.Salt); err != nil {
		return nil, BackupInfo{}, err
	}
	key := protocol.BackupKey(password, info)
	defer clear(key)
	file, err := e.on(c, src).Backup(protocol.BackupArgs{Cluster: e.id, Info: info, Key: key, Approval: approvalFrom(ctx)})
	if err != nil {
		return nil, BackupInfo{}, fmt.Errorf("backup of %s: %w", src.ID(), err)
	}
	info, err = protocol.ReadBackupInfo(file)
	return file, info, err
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

// KeyCopy is a token key on its way from one cluster to another, wrapped
// under their shared domain key: opaque to the client that carries it.
type KeyCopy struct{ w *protocol.WrappedKey }

// ExportKey wraps one of c's token keys for key replicate, from the first
// HSM that holds it.
func (e *Embedded) ExportKey(ctx context.Context, c Caller, ref Ref) (KeyCopy, error) {
	if err := e.requireRole(c, RoleCryptoUser, RoleAdmin); err != nil {
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
			re.Failed[h.ID()] = protocol.ErrDown(h.ID())
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
	if err := e.requireRole(c, RoleCryptoUser, RoleAdmin); err != nil {
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
type UserCopy struct{ w *protocol.WrappedKey }

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
		var w protocol.WrappedKey
		err := e.on(c, h).call(protocol.CallExportUser, protocol.UserArgs{Username: name, Role: role}, &w)
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
	if err := e.on(c, hs[0]).call(protocol.CallImportUser, protocol.ImportWrappedArgs{Key: u.w, Approval: approvalFrom(ctx)}, nil); err != nil {
		return err
	}
	// Each HSM that is down missed it: CloudHSM counts those as failed.
	re := &ReplicateError{What: "User", Total: len(e.members()), Failed: map[string]error{}}
	for _, h := range e.members() {
		if !h.Up() {
			re.Failed[h.ID()] = protocol.ErrDown(h.ID())
		}
	}
	if len(re.Failed) > 0 {
		return re
	}
	return nil
}
