package hsm

import (
	"context"
	"crypto"
	"crypto/sha512"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// Ed25519 and secp224r1 keys: made in the HSM, signing with their own
// mechanisms only, verified by the cluster and (Ed25519) by OpenSSL.
func TestEd25519AndP224(t *testing.T) {
	e, cu := labCluster(t, 2, Durability{MinimumNodes: 2})
	ctx := context.Background()
	pair := func(curve string) (pub, priv Key) {
		t.Helper()
		keys, err := e.GenerateKey(ctx, cu, KeySpec{Type: TypeEC, Curve: curve, PublicLabel: curve + "-pub", PrivateLabel: curve + "-priv"})
		if err != nil {
			t.Fatal(err)
		}
		return keys[0], keys[1]
	}
	edPub, edPriv := pair("ed25519")
	if edPriv.Attrs.Curve != "ed25519" || len(edPub.Attrs.ECPoint) != 2+64 || edPriv.Attrs.KeyType != TypeEC {
		t.Errorf("ed25519 key: curve %q, ec-point %q, type %s", edPriv.Attrs.Curve, edPub.Attrs.ECPoint, edPriv.Attrs.KeyType)
	}
	pPub, pPriv := pair("secp224r1")
	if pPriv.Attrs.Curve != "secp224r1" {
		t.Errorf("P-224 key: curve %q", pPriv.Attrs.Curve)
	}
	msg := []byte("signed inside the HSM")
	digest := sha512.Sum512(msg)
	for _, tt := range []struct {
		name      string
		priv, pub Ref
		req       SignRequest
		sigLen    int
	}{
		{"ed25519", edPriv.Ref, edPub.Ref, SignRequest{Mechanism: MechEd25519, Data: msg}, 64},
		{"ed25519ph", edPriv.Ref, edPub.Ref, SignRequest{Mechanism: MechEd25519ph, Data: msg}, 64},
		{"ed25519ph digest", edPriv.Ref, edPub.Ref, SignRequest{Mechanism: MechEd25519ph, Data: digest[:], Digest: true}, 64},
		{"ecdsa secp224r1", pPriv.Ref, pPub.Ref, SignRequest{Mechanism: MechECDSA, Hash: crypto.SHA256, Data: msg}, 56},
	} {
		t.Run(tt.name, func(t *testing.T) {
			req := tt.req
			req.Ref = tt.priv
			sig, err := e.Sign(ctx, cu, req)
			if err != nil || len(sig) != tt.sigLen {
				t.Fatalf("sign: %d bytes, %v", len(sig), err)
			}
			req.Ref = tt.pub
			if err := e.Verify(ctx, cu, req, sig); err != nil {
				t.Errorf("verify: %v", err)
			}
			sig[0] ^= 1
			if err := e.Verify(ctx, cu, req, sig); err == nil || !strings.Contains(err.Error(), "Signature verification failed") {
				t.Errorf("a forged signature: %v", err)
			}
		})
	}
	for _, tt := range []struct {
		name string
		req  SignRequest
		want string
	}{
		{"ecdsa with an Ed25519 key", SignRequest{Ref: edPriv.Ref, Mechanism: MechECDSA, Hash: crypto.SHA256, Data: msg}, "crypto sign ed25519"},
		{"ed25519 with a P-224 key", SignRequest{Ref: pPriv.Ref, Mechanism: MechEd25519, Data: msg}, "needs a key on curve ed25519"},
		{"pure ed25519 of a digest", SignRequest{Ref: edPriv.Ref, Mechanism: MechEd25519, Data: digest[:], Digest: true}, "use ed25519ph"},
		{"ed25519ph with a short digest", SignRequest{Ref: edPriv.Ref, Mechanism: MechEd25519ph, Data: msg, Digest: true}, "64-byte SHA-512 digest"},
	} {
		if _, err := e.Sign(ctx, cu, tt.req); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: %v, want it to say %q", tt.name, err, tt.want)
		}
	}

	if _, err := exec.LookPath("openssl"); err != nil {
		t.Log("openssl is not installed: the cross-check is skipped")
		return
	}
	sig, err := e.Sign(ctx, cu, SignRequest{Ref: edPriv.Ref, Mechanism: MechEd25519, Data: msg})
	if err != nil {
		t.Fatal(err)
	}
	pem, err := e.PublicKeyPEM(ctx, cu, edPub.Ref)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	out, err := exec.Command("openssl", "pkeyutl", "-verify", "-pubin", "-inkey", write("pub.pem", pem), "-rawin",
		"-in", write("msg", msg), "-sigfile", write("sig", sig)).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "Signature Verified Successfully") {
		t.Errorf("openssl does not verify the HSM's Ed25519 signature: %v\n%s", err, out)
	}
}
