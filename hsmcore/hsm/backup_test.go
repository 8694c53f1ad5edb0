package hsm

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/hsmsh/hsmsh/hsmcore/rpc"
)

// A backup restores into a clone of the same domain; a key made in the
// source afterwards is missing there until key replicate copies it,
// wrapped, and the clone can then sign with it.
func TestBackupCloneReplicate(t *testing.T) {
	ctx := context.Background()
	src, err := OpenEmbedded(Options{ID: "a", HSMs: 2, DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	admin, cu := activate(t, src)
	before := signer(t, src, cu)
	file, info, err := src.CreateBackup(ctx, admin, "backuppass")
	if err != nil {
		t.Fatal(err)
	}
	if info.Cluster != "a" || info.Keys != 2 || info.Users != 2 || bytes.Contains(file, []byte("cu1pass1")) {
		t.Fatalf("backup info %+v", info)
	}
	if _, _, err := src.CreateBackup(ctx, cu, "backuppass"); !errors.Is(err, ErrPermission) {
		t.Errorf("a crypto user made a backup: %v", err)
	}

	// A wrong password and a flipped bit are refused the same way.
	if _, _, err := OpenClone(Options{ID: "b", HSMs: 3}, file, "wrongpass"); !errors.Is(err, ErrBackup) {
		t.Errorf("wrong password: %v", err)
	}
	bad := bytes.Clone(file)
	bad[len(bad)-5] ^= 1
	if _, _, err := OpenClone(Options{ID: "b", HSMs: 3}, bad, "backuppass"); !errors.Is(err, ErrBackup) {
		t.Errorf("altered body: %v", err)
	}
	hdr := bytes.Replace(file, []byte(`"keys":2`), []byte(`"keys":3`), 1)
	if _, _, err := OpenClone(Options{ID: "b", HSMs: 3}, hdr, "backuppass"); !errors.Is(err, ErrBackup) {
		t.Errorf("altered header: %v", err)
	}

	clone, _, err := OpenClone(Options{ID: "b", HSMs: 3, DataDir: t.TempDir() + "/b"}, file, "backuppass")
	if err != nil {
		t.Fatal(err)
	}
	defer clone.Close()
	d1, _ := src.DomainID()
	d2, _ := clone.DomainID()
	if d1 == "" || d1 != d2 {
		t.Fatalf("domains %q and %q", d1, d2)
	}
	cu2, err := clone.Login(ctx, "cu1", RoleCryptoUser, "cu1pass1")
	if err != nil {
		t.Fatalf("the backup's user logs in to the clone: %v", err)
	}
	if err := signOnce(clone, cu2, before, 1); err != nil {
		t.Fatalf("the backup's key signs in the clone: %v", err)
	}

	// Divergence, then replicate.
	after := signer(t, src, cu)
	if err := signOnce(clone, cu2, after, 1); !errors.Is(err, ErrKeyNotFound) {
		t.Fatalf("a key made after the backup is in the clone: %v", err)
	}
	k, err := src.ExportKey(ctx, cu, after)
	if err != nil {
		t.Fatal(err)
	}
	if err := clone.ReplicateKey(ctx, cu2, k); err != nil {
		t.Fatal(err)
	}
	if err := signOnce(clone, cu2, after, 2); err != nil {
		t.Fatalf("the replicated key: %v", err)
	}

	// Partly down: the error names the failed connection.
	after2 := signer(t, src, cu)
	if err := clone.FailHSM("hsm-3", false); err != nil {
		t.Fatal(err)
	}
	k2, _ := src.ExportKey(ctx, cu, after2)
	err = clone.ReplicateKey(ctx, cu2, k2)
	var re *ReplicateError
	if !errors.As(err, &re) || !strings.HasPrefix(err.Error(), "Key replicate failed on 1 of 3 connections (hsm-3: hsm-3 is down") {
		t.Errorf("partly down: %v", err)
	}

	// Another domain cannot unwrap it.
	other, err := OpenEmbedded(Options{ID: "c", HSMs: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	_, cu3 := activate(t, other)
	err = other.ReplicateKey(ctx, cu3, k)
	if !errors.Is(err, ErrPermission) || !strings.Contains(err.Error(), "keys replicate only between a cluster and its clones") {
		t.Errorf("foreign domain: %v", err)
	}
	// Another user of the same domain cannot take cu1's key.
	if _, err := clone.CreateUser(ctx, mustLogin(t, clone, "admin", RoleAdmin, "adminpass"), "cu9", RoleCryptoUser, "cu9pass9"); err != nil {
		t.Fatal(err)
	}
	cu9 := mustLogin(t, clone, "cu9", RoleCryptoUser, "cu9pass9")
	k3, _ := src.ExportKey(ctx, cu, signer(t, src, cu))
	if err := clone.ReplicateKey(ctx, cu9, k3); !errors.Is(err, ErrPermission) {
		t.Errorf("another user took the key: %v", err)
	}
	// An admin replicates any user's token key (key replicate's page lets
	// admins run it); the key stays its owner's, who signs with it in the
	// clone. The admin can use it no more than before.
	if err := clone.RecoverHSM("hsm-3"); err != nil {
		t.Fatal(err)
	}
	srcAdmin := mustLogin(t, src, "admin", RoleAdmin, "adminpass")
	cloneAdmin := mustLogin(t, clone, "admin", RoleAdmin, "adminpass")
	byAdmin := signer(t, src, cu)
	k4, err := src.ExportKey(ctx, srcAdmin, byAdmin)
	if err != nil {
		t.Fatalf("an admin exports cu1's key: %v", err)
	}
	if err := clone.ReplicateKey(ctx, cloneAdmin, k4); err != nil {
		t.Fatalf("an admin replicates cu1's key: %v", err)
	}
	if err := signOnce(clone, cu2, byAdmin, 3); err != nil {
		t.Errorf("cu1 signs with the key an admin replicated: %v", err)
	}
	if err := signOnce(clone, cloneAdmin, byAdmin, 4); err == nil {
		t.Error("the admin signed with the key it replicated")
	}
}

func mustLogin(t *testing.T, e *Embedded, user string, role Role, pw string) Caller {
	t.Helper()
	c, err := e.Login(context.Background(), user, role, pw)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// A backup of an embedded cluster restored into a fresh set of servers:
// the remote cluster has its keys, users and domain, and serves them.
func TestRestoreIntoServers(t *testing.T) {
	ctx := context.Background()
	src, err := OpenEmbedded(Options{ID: "a", HSMs: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	admin, cu := activate(t, src)
	ref := signer(t, src, cu)
	file, info, err := src.CreateBackup(ctx, admin, "backuppass")
	if err != nil {
		t.Fatal(err)
	}
	l := newLoopbackWith(t, 3, time.Hour, rpc.ServerOptions{}, file)
	if !strings.Contains(l.log.String(), "restored from backup") {
		t.Errorf("server log:\n%s", l.log.String())
	}
	r := l.client(Durability{MinimumNodes: 3})
	cu2 := mustLogin(t, r.Embedded, "cu1", RoleCryptoUser, "cu1pass1")
	for i := range 3 { // every server answers with the restored key
		if err := signOnce(r.Embedded, cu2, ref, i); err != nil {
			t.Fatalf("sign %d: %v", i, err)
		}
	}
	if d, _ := r.DomainID(); d != info.Domain {
		t.Errorf("domain %s, backup's %s", d, info.Domain)
	}
	// A restart with the same flags starts as it is.
	l.stop(0)
	l.start(0, nil)
	if !strings.Contains(l.log.String(), "restore skipped") {
		t.Errorf("restart log:\n%s", l.log.String())
	}
}
