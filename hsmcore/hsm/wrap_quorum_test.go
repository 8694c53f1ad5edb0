package hsm

import (
	"context"
	"crypto"
	"errors"
	"strings"
	"testing"

	"github.com/hsmsh/hsmsh/hsmcore/protocol"
	"github.com/hsmsh/hsmsh/hsmcore/quorum"
)

// wrapQuorumRig is a cluster where cu1 owns an AES wrapping key and an
// AES payload, both under a manage quorum of 2 and shared with cu2; cu1
// and cu2 have registered quorum keys.
type wrapQuorumRig struct {
	e            *Embedded
	cu1          Caller
	keys         map[string]crypto.Signer
	kek, payload Ref
}

func newWrapQuorumRig(t *testing.T) *wrapQuorumRig {
	t.Helper()
	ctx := context.Background()
	e, err := OpenEmbedded(Options{ID: "wrapq", HSMs: 2, Transport: TransportDirect, Durability: Durability{MinimumNodes: 1}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	admin, cu1 := activate(t, e)
	if _, err := e.CreateUser(ctx, admin, "cu2", RoleCryptoUser, "cu2pass1"); err != nil {
		t.Fatal(err)
	}
	cu2, err := e.Login(ctx, "cu2", RoleCryptoUser, "cu2pass1")
	if err != nil {
		t.Fatal(err)
	}
	r := &wrapQuorumRig{e: e, cu1: cu1, keys: map[string]crypto.Signer{}}
	for n, c := range map[string]Caller{"cu1": cu1, "cu2": cu2} {
		r.keys[n] = registerApprover(t, e, n, c)
	}
	one := func(spec KeySpec) Ref {
		t.Helper()
		keys, err := e.GenerateKey(ctx, cu1, spec)
		if err != nil {
			t.Fatal(err)
		}
		return keys[0].Ref
	}
	r.kek = one(KeySpec{Type: TypeAES, Label: "kek", LengthBytes: 32, Attributes: map[string]string{"wrap": "true", "unwrap": "true"}, ShareWith: []string{"cu2"}, ManageQuorum: 2})
	r.payload = one(KeySpec{Type: TypeAES, Label: "payload", LengthBytes: 32, ShareWith: []string{"cu2"}, ManageQuorum: 2})
	return r
}

// token has cu1 ask for a key-management token for ref, which signers sign.
func (r *wrapQuorumRig) token(t *testing.T, ref Ref, signers ...string) []byte {
	t.Helper()
	file, err := r.e.GenerateToken(context.Background(), r.cu1, quorum.ServiceKeyManagement, &ref, "")
	if err != nil {
		t.Fatal(err)
	}
	tf, _, err := quorum.ParseTokenFile(file)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range signers {
		if err := quorum.AddSignature(&tf, n, r.keys[n]); err != nil {
			t.Fatal(err)
		}
	}
	return tf.Marshal()
}

func (r *wrapQuorumRig) wrap(payloadTok, wrappingTok []byte) error {
	_, err := r.e.WrapKey(context.Background(), r.cu1, WrapRequest{
		Params:  protocol.WrapParams{Mechanism: protocol.WrapAESNoPad},
		Payload: r.payload, Wrapping: r.kek,
		PayloadApproval: payloadTok, WrappingApproval: wrappingTok,
	})
	return err
}

// A key wrap refused for a bad token for one key leaves the other key's
// token unspent: both are verified before either is used up. (Before,
// the payload's token was spent by the time the wrapping key's was
// found wrong, and the user had to gather its approvers again.)
func TestWrapQuorumBadTokenSpendsNeither(t *testing.T) {
	r := newWrapQuorumRig(t)
	pt := r.token(t, r.payload, "cu1", "cu2")
	wt := r.token(t, r.kek, "cu1", "cu2")

	badWrapping := []struct {
		name  string
		token []byte
		want  string
	}{
		{"one signature of two", r.token(t, r.kek, "cu1"), "wrapping key: "},
		{"a token for the payload key", r.token(t, r.payload, "cu1", "cu2"), "approves key " + r.payload.String() + " only"},
		{"the payload's own token", pt, "wrapping key: "},
		{"garbage", []byte("{not json"), "wrapping key: "},
	}
	for _, tc := range badWrapping {
		err := r.wrap(pt, tc.token)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Fatalf("wrap with %s as the wrapping key's approval: %v, want an error containing %q", tc.name, err, tc.want)
		}
		if !strings.HasPrefix(err.Error(), "wrapping key: ") {
			t.Errorf("wrap with %s: %v, want it blamed on the wrapping key", tc.name, err)
		}
	}
	// And the other way round: a bad payload token spends not the
	// wrapping key's.
	if err := r.wrap(r.token(t, r.payload, "cu2"), wt); err == nil || !strings.HasPrefix(err.Error(), "payload key: ") {
		t.Fatalf("wrap with a one-signature payload token: %v", err)
	}

	// Both tokens are still good: the wrap goes through with them.
	if err := r.wrap(pt, wt); err != nil {
		t.Fatalf("wrap with the good tokens after the refusals: %v (a refused wrap spent one)", err)
	}
	// Now spent, both: a token serves once.
	err := r.wrap(pt, wt)
	if err == nil || !strings.Contains(err.Error(), "already used") {
		t.Fatalf("replayed tokens: %v", err)
	}
	if !errors.Is(err, ErrPermission) {
		t.Errorf("replayed tokens: %v, want ErrPermission", err)
	}
	// The payload's token is spent even with a fresh wrapping token...
	if err := r.wrap(pt, r.token(t, r.kek, "cu1", "cu2")); err == nil || !strings.Contains(err.Error(), "payload key: ") {
		t.Errorf("spent payload token with a fresh wrapping token: %v", err)
	}
	// ...and the wrapping key's with a fresh payload token.
	if err := r.wrap(r.token(t, r.payload, "cu1", "cu2"), wt); err == nil || !strings.Contains(err.Error(), "wrapping key: ") {
		t.Errorf("spent wrapping token with a fresh payload token: %v", err)
	}
}

// A key that wraps itself needs a token for each role: one token given
// for both is refused before it is spent, as it serves once.
func TestWrapQuorumOneTokenForBothRoles(t *testing.T) {
	r := newWrapQuorumRig(t)
	r.payload = r.kek // the KEK is extractable: it can wrap itself
	one := r.token(t, r.kek, "cu1", "cu2")
	err := r.wrap(one, one)
	if err == nil || !strings.Contains(err.Error(), "each needs its own") {
		t.Fatalf("one token for both roles: %v", err)
	}
	// Unspent: with a second token, the wrap goes through.
	if err := r.wrap(one, r.token(t, r.kek, "cu1", "cu2")); err != nil {
		t.Fatalf("the token after the refusal: %v", err)
	}
}
