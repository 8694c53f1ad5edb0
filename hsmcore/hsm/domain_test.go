package hsm

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hsmsh/hsmsh/hsmcore/authsession"
)

// domains returns each HSM's domain id and identity fingerprint.
func domains(t *testing.T, e *Embedded) (doms, ids map[string]string) {
	t.Helper()
	doms, ids = map[string]string{}, map[string]string{}
	for _, h := range e.HSMs(context.Background()) {
		doms[h.ID], ids[h.ID] = h.Domain, h.Identity
	}
	return doms, ids
}

func TestDomainSharedKeptAndRejoined(t *testing.T) {
	dir := t.TempDir()
	e, err := OpenEmbedded(Options{ID: "d", HSMs: 3, DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	doms, ids := domains(t, e)
	dom := doms["hsm-1"]
	if dom == "" || doms["hsm-2"] != dom || doms["hsm-3"] != dom {
		t.Fatalf("domains %v: want one shared domain", doms)
	}
	if ids["hsm-1"] == "" || ids["hsm-1"] == ids["hsm-2"] || ids["hsm-2"] == ids["hsm-3"] {
		t.Fatalf("identities %v: want one each", ids)
	}
	// The domain key and identity keys are sealed at rest.
	h1 := device(e, "hsm-1")
	secret := append([]byte{}, h1.domain[:]...)
	der, _ := h1.identity.MarshalPrivate()
	e.Close()
	db, err := os.ReadFile(filepath.Join(dir, "hsm-1", "keys.db"))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(db, secret) || bytes.Contains(db, der[len(der)-48:]) {
		t.Fatal("a domain or identity key is in keys.db in clear")
	}

	// Reopened: the same domain and identities.
	e, err = OpenEmbedded(Options{ID: "d", HSMs: 3, DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	doms2, ids2 := domains(t, e)
	if doms2["hsm-2"] != dom || ids2["hsm-2"] != ids["hsm-2"] {
		t.Fatalf("after reopening: domains %v identities %v", doms2, ids2)
	}
	// A destroyed HSM comes back as new hardware and joins the domain.
	if err := e.FailHSM("hsm-3", true); err != nil {
		t.Fatal(err)
	}
	if err := e.RecoverHSM("hsm-3"); err != nil {
		t.Fatal(err)
	}
	doms3, ids3 := domains(t, e)
	if doms3["hsm-3"] != dom || ids3["hsm-3"] == ids["hsm-3"] {
		t.Fatalf("after destroy and recover: domain %q (want %q), identity changed %v", doms3["hsm-3"], dom, ids3["hsm-3"] != ids["hsm-3"])
	}
	// So does an added HSM.
	id, err := e.AddHSM()
	if err != nil {
		t.Fatal(err)
	}
	if doms4, _ := domains(t, e); doms4[id] != dom {
		t.Fatalf("added %s has domain %q, want %q", id, doms4[id], dom)
	}
	// The key goes only to an HSM the cluster's key endorsed: a stranger
	// with an identity of its own, asking to join, gets nothing.
	h1 = device(e, "hsm-1")
	stranger, _ := authsession.NewIdentity()
	der2, _ := authsession.MarshalPublic(stranger.Public())
	j := joinRequest{ID: "hsm-9", Identity: der2, Endorsement: []byte("not a signature"), At: time.Now().UnixNano()}
	j.Sig, _ = stranger.Sign(labelJoin, joinTranscript(&j))
	if _, err := h1.acceptJoin(&j); err == nil || !bytes.Contains([]byte(err.Error()), []byte("not endorsed")) {
		t.Errorf("join of a stranger: %v", err)
	}
	// Another cluster has another domain.
	other, err := OpenEmbedded(Options{ID: "other", HSMs: 1, Transport: TransportDirect})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if od, _ := domains(t, other); od["hsm-1"] == dom || od["hsm-1"] == "" {
		t.Fatalf("another cluster's domain %q", od["hsm-1"])
	}
}

// The servers of a remote cluster share one domain; the key reaches each
// only wrapped for it.
func TestRemoteDomain(t *testing.T) {
	l := newLoopback(t, 3, time.Hour)
	r := l.client(Durability{MinimumNodes: 1})
	doms, _ := domains(t, r.Embedded)
	if doms["hsm-1"] == "" || doms["hsm-1"] != doms["hsm-2"] || doms["hsm-2"] != doms["hsm-3"] {
		t.Fatalf("domains %v", doms)
	}
	for i, s := range l.servers {
		if s.local.domain == nil || s.local.domain.ID() != doms["hsm-1"] {
			t.Errorf("server %d's own HSM is not in the domain", i+1)
		}
	}
}
