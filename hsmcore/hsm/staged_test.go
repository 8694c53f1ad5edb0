package hsm

import (
	"context"
	"crypto"
	"errors"
	"testing"
	"time"

	"github.com/hsmsh/hsmsh/hsmcore/authsession"
	"github.com/hsmsh/hsmsh/hsmcore/protocol"
)

// A token key for several HSMs is staged: made and wrapped on one, then
// stored on all of them at once. It ends up on every HSM, usable, and the
// panes hear it as made on one HSM and copied to the others, in the HSMs'
// order.
func TestStagedKeyStoredEverywhere(t *testing.T) {
	ctx := context.Background()
	e, _, cu := newTestCluster(t, t.TempDir(), 3)
	events, cancel := e.Subscribe(64)
	defer cancel()
	keys, err := e.GenerateKey(ctx, cu, KeySpec{Type: TypeEC, Curve: "secp256r1", PublicLabel: "st-pub", PrivateLabel: "st"})
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if len(k.Info.HSMCoverage) != 3 {
			t.Errorf("key %s on %v, want all 3 HSMs", k.Ref, k.Info.HSMCoverage)
		}
		for _, h := range devices(e) {
			if !h.Has(k.Ref) {
				t.Errorf("%s does not hold %s", h.id, k.Ref)
			}
		}
	}
	if _, err := e.Sign(ctx, cu, SignRequest{Ref: keys[1].Ref, Mechanism: MechECDSA, Hash: crypto.SHA256, Data: []byte("x")}); err != nil {
		t.Fatalf("sign with the staged key: %v", err)
	}
	var got []string
	timeout := time.After(5 * time.Second)
	for len(got) < 6 {
		select {
		case ev := <-events:
			if ev.Kind == EventKeyCreated || ev.Kind == EventKeyReplicated {
				got = append(got, string(ev.Kind)+" "+ev.HSM)
			}
		case <-timeout:
			t.Fatalf("events so far: %v", got)
		}
	}
	// Made on the first HSM (both records of the pair), then copied to
	// the others.
	maker := got[0][len(string(EventKeyCreated))+1:]
	for i, g := range got {
		want := string(EventKeyReplicated)
		if i < 2 {
			want = string(EventKeyCreated) + " " + maker
		}
		if len(g) < len(want) || g[:len(want)] != want {
			t.Errorf("event %d is %q, want %q (all: %v)", i, g, want, got)
		}
	}
}

// At the HSM's door: a staged generation stores nothing and answers only
// sealed records; a blob opens for its owner on any HSM of the domain,
// and not for another crypto user. A session key is never staged.
func TestStagedGenerationAtTheDoor(t *testing.T) {
	e, _, cu := newTestCluster(t, t.TempDir(), 3)
	hs := devices(e)
	h := hs[0]
	generate := func(c Caller, spec KeySpec, ref Ref) *protocol.CreateReply {
		t.Helper()
		env, sk, ekt := sealNext(t, e, c, h.id, protocol.CallGenerateKey, protocol.GenerateArgs{Spec: spec, Ref: ref, Wrap: true, Stage: true})
		var resp authsession.Envelope
		if err := directDoor(h)(protocol.CallEnveloped, env, &resp); err != nil {
			t.Fatal(err)
		}
		plain, err := authsession.Open(sk, authsession.ToClient, ekt, resp)
		if err != nil {
			t.Fatal(err)
		}
		res, err := protocol.DecodeSessionResult(plain)
		if err != nil || res.Code != "" {
			t.Fatalf("generate: %v %s %s", err, res.Code, res.Error)
		}
		var out protocol.CreateReply
		if err := res.DecodeAnswer(protocol.CallGenerateKey, &out); err != nil {
			t.Fatal(err)
		}
		return &out
	}

	ref := protocol.NewRef()
	out := generate(cu, KeySpec{Type: TypeAES, Label: "staged", LengthBytes: 32}, ref)
	if !out.Staged || len(out.Wrapped) != 1 || len(out.Keys) != 1 {
		t.Fatalf("staged reply: staged %v, %d blobs, %d records", out.Staged, len(out.Wrapped), len(out.Keys))
	}
	for _, x := range hs {
		if x.Has(ref) {
			t.Fatalf("%s holds the staged key before anyone stored it", x.id)
		}
	}
	// Another crypto user cannot take cu1's key from the blob.
	if err := hs[1].ImportWrapped(out.Wrapped[0], "cu2"); !errors.Is(err, ErrPermission) {
		t.Errorf("cu2 stored cu1's staged key: %v", err)
	}
	// Its owner stores it, on the maker too.
	for _, x := range hs {
		if err := x.ImportWrapped(out.Wrapped[0], "cu1"); err != nil {
			t.Fatalf("store on %s: %v", x.id, err)
		}
		if !x.Has(ref) {
			t.Errorf("%s lacks the key after storing it", x.id)
		}
	}

	// A session key stays on the HSM that made it: Stage is ignored.
	sref := protocol.NewRef()
	out = generate(cu, KeySpec{Type: TypeAES, Label: "sess", LengthBytes: 16, Session: true}, sref)
	if out.Staged || len(out.Wrapped) != 0 {
		t.Errorf("a session key was staged: staged %v, %d blobs", out.Staged, len(out.Wrapped))
	}
}
