package hsm

import (
	"bytes"
	"context"
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hsmsh/hsmsh/hsmcore/keywrap"
	"github.com/hsmsh/hsmsh/hsmcore/protocol"
)

// wrapRig is a cluster with a crypto user holding an AES wrapping key
// (wrap and unwrap), an RSA pair for the RSA mechanisms, and payloads.
type wrapRig struct {
	e                 *Embedded
	admin, cu         Caller
	aesKEK            Ref
	rsaPub, rsaPriv   Ref
	aesKey, genSecret Ref
	ecPriv            Ref
}

func newWrapRig(t *testing.T) *wrapRig {
	t.Helper()
	e, err := OpenEmbedded(Options{ID: "wrap", HSMs: 2, Transport: TransportDirect, Durability: Durability{MinimumNodes: 2}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	admin, cu := activate(t, e)
	r := &wrapRig{e: e, admin: admin, cu: cu}
	ctx := context.Background()
	one := func(spec KeySpec) []Key {
		t.Helper()
		keys, err := e.GenerateKey(ctx, cu, spec)
		if err != nil {
			t.Fatal(err)
		}
		return keys
	}
	r.aesKEK = one(KeySpec{Type: TypeAES, Label: "kek", LengthBytes: 32, Attributes: map[string]string{"wrap": "true", "unwrap": "true"}})[0].Ref
	pair := one(KeySpec{Type: TypeRSA, ModulusBits: 2048, Exponent: 65537, PublicLabel: "rsa-pub", PrivateLabel: "rsa-priv",
		PublicAttributes: map[string]string{"wrap": "true"}, PrivateAttributes: map[string]string{"unwrap": "true"}})
	r.rsaPub, r.rsaPriv = pair[0].Ref, pair[1].Ref
	r.aesKey = one(KeySpec{Type: TypeAES, Label: "payload", LengthBytes: 32})[0].Ref
	r.genSecret = one(KeySpec{Type: TypeGenericSecret, Label: "secret", LengthBytes: 24})[0].Ref
	r.ecPriv = one(KeySpec{Type: TypeEC, Curve: "secp256r1", PublicLabel: "ec-pub", PrivateLabel: "ec-priv"})[1].Ref
	return r
}

func (r *wrapRig) key(t *testing.T, ref Ref) Key {
	t.Helper()
	keys, err := r.e.Keys(context.Background(), r.cu, Filter{Ref: &ref})
	if err != nil || len(keys) != 1 {
		t.Fatalf("key %s: %v, %d keys", ref, err, len(keys))
	}
	return keys[0]
}

// Every mechanism wraps every payload it can carry, and unwrapping gives
// the same key back: a secret key with the same check value, a private
// key that signs what its original's public key verifies. The unwrapped
// key is a token key on both HSMs, not local.
func TestWrapUnwrapRoundTrips(t *testing.T) {
	r := newWrapRig(t)
	ctx := context.Background()
	gcm := protocol.WrapParams{TagLengthBits: 128, AAD: []byte("context")}
	rsaP := protocol.WrapParams{Hash: "sha256", MGF: "mgf1-sha256"}
	type payload struct {
		name  string
		ref   Ref
		class string
	}
	aes256 := payload{"aes", r.aesKey, TypeAES}
	gen := payload{"generic-secret", r.genSecret, TypeGenericSecret}
	ec := payload{"ec-private", r.ecPriv, "ec-private"}
	for _, tt := range []struct {
		mech     string
		params   protocol.WrapParams
		wrapping Ref
		payloads []payload
	}{
		{protocol.WrapAESGCM, gcm, r.aesKEK, []payload{aes256, gen, ec}},
		{protocol.WrapCloudHSMAESGCM, protocol.WrapParams{TagLengthBits: 96}, r.aesKEK, []payload{aes256, gen, ec}},
		{protocol.WrapAESNoPad, protocol.WrapParams{}, r.aesKEK, []payload{aes256, gen}},
		{protocol.WrapAESPKCS5Pad, protocol.WrapParams{}, r.aesKEK, []payload{aes256, gen, ec}},
		{protocol.WrapAESZeroPad, protocol.WrapParams{}, r.aesKEK, []payload{aes256, gen, ec}},
		{protocol.WrapRSAAES, rsaP, r.rsaPub, []payload{aes256, gen, ec}},
		{protocol.WrapRSAOAEP, rsaP, r.rsaPub, []payload{aes256, gen}},
		{protocol.WrapRSAPKCS, protocol.WrapParams{}, r.rsaPub, []payload{aes256, gen}},
	} {
		for _, p := range tt.payloads {
			t.Run(tt.mech+"/"+p.name, func(t *testing.T) {
				params := tt.params
				params.Mechanism = tt.mech
				w, err := r.e.WrapKey(ctx, r.cu, WrapRequest{Params: params, Payload: p.ref, Wrapping: tt.wrapping})
				if err != nil {
					t.Fatal(err)
				}
				if (tt.mech == protocol.WrapAESGCM) != (len(w.IV) == 12) {
					t.Errorf("IV %x for %s", w.IV, tt.mech)
				}
				unwrapping := tt.wrapping
				if tt.wrapping == r.rsaPub {
					unwrapping = r.rsaPriv
				}
				up := params
				up.IV = w.IV
				k, err := r.e.UnwrapKey(ctx, r.cu, UnwrapSpec{Params: up, Unwrapping: unwrapping, Data: w.Data,
					KeyTypeClass: p.class, Label: "unwrapped-" + p.name})
				if err != nil {
					t.Fatal(err)
				}
				orig := r.key(t, p.ref)
				if k.Attrs.Local || !k.Attrs.Token || k.Info.ClusterCoverage != CoverageFull || k.Attrs.AlwaysSensitive || k.Attrs.NeverExtractable {
					t.Errorf("unwrapped key: local %v, token %v, coverage %s, always-sensitive %v, never-extractable %v",
						k.Attrs.Local, k.Attrs.Token, k.Info.ClusterCoverage, k.Attrs.AlwaysSensitive, k.Attrs.NeverExtractable)
				}
				if k.Attrs.CheckValue != orig.Attrs.CheckValue || k.Attrs.KeyType != orig.Attrs.KeyType {
					t.Errorf("unwrapped %s %s, want %s %s", k.Attrs.KeyType, k.Attrs.CheckValue, orig.Attrs.KeyType, orig.Attrs.CheckValue)
				}
				if p.class == "ec-private" {
					msg := []byte("signed by the unwrapped key")
					req := SignRequest{Ref: k.Ref, Mechanism: MechECDSA, Hash: crypto.SHA256, Data: msg}
					sig, err := r.e.Sign(ctx, r.cu, req)
					if err != nil {
						t.Fatal(err)
					}
					req.Ref = p.ref - 1 // the original's public key
					if err := r.e.Verify(ctx, r.cu, req, sig); err != nil {
						t.Errorf("the original's public key does not verify the unwrapped key's signature: %v", err)
					}
				}
				// Altered data never unwraps into a key.
				bad := bytes.Clone(w.Data)
				bad[len(bad)-1] ^= 1
				if _, err := r.e.UnwrapKey(ctx, r.cu, UnwrapSpec{Params: up, Unwrapping: unwrapping, Data: bad, KeyTypeClass: p.class, Label: "bad"}); err == nil && tt.mech != protocol.WrapRSAPKCS {
					t.Error("altered data unwrapped")
				}
			})
		}
	}
}

// The attribute table decides who may wrap what, and the HSM enforces it
// whatever the client asks.
func TestWrapRefusals(t *testing.T) {
	r := newWrapRig(t)
	ctx := context.Background()
	gen := func(spec KeySpec) Ref {
		t.Helper()
		keys, err := r.e.GenerateKey(ctx, r.cu, spec)
		if err != nil {
			t.Fatal(err)
		}
		return keys[len(keys)-1].Ref
	}
	fixed := gen(KeySpec{Type: TypeAES, Label: "fixed", LengthBytes: 16, Attributes: map[string]string{"extractable": "false"}})
	noWrap := gen(KeySpec{Type: TypeAES, Label: "nowrap", LengthBytes: 16})
	if _, err := r.e.CreateUser(ctx, r.admin, "cu2", RoleCryptoUser, "cu2pass2"); err != nil {
		t.Fatal(err)
	}
	cu2, err := r.e.Login(ctx, "cu2", RoleCryptoUser, "cu2pass2")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.e.ShareKey(ctx, r.cu, r.aesKey, "cu2", true); err != nil {
		t.Fatal(err)
	}
	if _, err := r.e.ShareKey(ctx, r.cu, r.aesKEK, "cu2", true); err != nil {
		t.Fatal(err)
	}
	nopad := protocol.WrapParams{Mechanism: protocol.WrapAESNoPad}
	for _, tt := range []struct {
		name string
		c    Caller
		req  WrapRequest
		is   error
		want string
	}{
		{"payload not extractable", r.cu, WrapRequest{Params: nopad, Payload: fixed, Wrapping: r.aesKEK}, ErrPermission, "not extractable"},
		{"wrapping key without wrap", r.cu, WrapRequest{Params: nopad, Payload: r.aesKey, Wrapping: noWrap}, ErrPermission, "its wrap attribute is false"},
		{"a user the payload is shared with", cu2, WrapRequest{Params: nopad, Payload: r.aesKey, Wrapping: r.aesKEK}, ErrPermission, "only the owner"},
		{"an RSA key for an AES mechanism", r.cu, WrapRequest{Params: nopad, Payload: r.aesKey, Wrapping: r.rsaPub}, ErrInvalid, "wraps with an AES key"},
		{"an AES key for an RSA mechanism", r.cu, WrapRequest{Params: protocol.WrapParams{Mechanism: protocol.WrapRSAPKCS}, Payload: r.aesKey, Wrapping: r.aesKEK}, ErrInvalid, "wraps with an RSA public key"},
		{"a public key as payload", r.cu, WrapRequest{Params: nopad, Payload: r.rsaPub, Wrapping: r.aesKEK}, ErrInvalid, "public key"},
		{"a tag shorter than GCM allows", r.cu, WrapRequest{Params: protocol.WrapParams{Mechanism: protocol.WrapAESGCM, TagLengthBits: 56}, Payload: r.aesKey, Wrapping: r.aesKEK}, ErrInvalid, "tag-length-bits 56"},
		{"an MGF with another hash", r.cu, WrapRequest{Params: protocol.WrapParams{Mechanism: protocol.WrapRSAOAEP, Hash: "sha256", MGF: "mgf1-sha1"}, Payload: r.aesKey, Wrapping: r.rsaPub}, ErrInvalid, "mask generation function"},
		{"zero padding a key it would change", r.cu, WrapRequest{Params: protocol.WrapParams{Mechanism: protocol.WrapAESZeroPad}, Payload: gen(KeySpec{Type: TypeGenericSecret, Label: "odd", LengthBytes: 20}), Wrapping: r.aesKEK}, ErrInvalid, "use aes-pkcs5-pad"},
		{"an unknown mechanism", r.cu, WrapRequest{Params: protocol.WrapParams{Mechanism: "des3-cbc"}, Payload: r.aesKey, Wrapping: r.aesKEK}, ErrInvalid, "unknown wrapping mechanism"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := r.e.WrapKey(ctx, tt.c, tt.req)
			if !errors.Is(err, tt.is) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want %v saying %q", err, tt.is, tt.want)
			}
		})
	}
	// wrap-with-trusted: only a trusted key wraps such a payload.
	guarded := gen(KeySpec{Type: TypeAES, Label: "guarded", LengthBytes: 32})
	for _, h := range devices(r.e) {
		h.mu.Lock()
		if k := h.keys[guarded]; k != nil {
			c := k.clone()
			c.Attrs.WrapWithTrusted = true
			h.setKeyLocked(c)
		}
		h.mu.Unlock()
	}
	_, err = r.e.WrapKey(ctx, r.cu, WrapRequest{Params: nopad, Payload: guarded, Wrapping: r.aesKEK})
	if !errors.Is(err, ErrPermission) || !strings.Contains(err.Error(), "is not trusted") {
		t.Errorf("wrap-with-trusted payload under an untrusted key: %v", err)
	}
	// The unwrapping key must have unwrap.
	w, err := r.e.WrapKey(ctx, r.cu, WrapRequest{Params: nopad, Payload: r.aesKey, Wrapping: r.aesKEK})
	if err != nil {
		t.Fatal(err)
	}
	_, err = r.e.UnwrapKey(ctx, r.cu, UnwrapSpec{Params: nopad, Unwrapping: noWrap, Data: w.Data, KeyTypeClass: "aes", Label: "x"})
	if !errors.Is(err, ErrPermission) || !strings.Contains(err.Error(), "its unwrap attribute is false") {
		t.Errorf("unwrap with a key without unwrap: %v", err)
	}
	// Neither the wrapped data nor any answer carries the payload's bytes.
	h := devices(r.e)[0]
	h.mu.RLock()
	material := bytes.Clone(h.keys[r.aesKey].Material)
	h.mu.RUnlock()
	if bytes.Contains(w.Data, material) {
		t.Error("the wrapped data holds the key in clear")
	}
}

// An unwrap with an HSM down behaves as key generation does: with the
// minimum nodes above what answers, it fails and leaves no key behind.
func TestUnwrapMinimumNodes(t *testing.T) {
	r := newWrapRig(t)
	ctx := context.Background()
	nopad := protocol.WrapParams{Mechanism: protocol.WrapAESNoPad}
	w, err := r.e.WrapKey(ctx, r.cu, WrapRequest{Params: nopad, Payload: r.aesKey, Wrapping: r.aesKEK})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.e.FailHSM("hsm-2", false); err != nil {
		t.Fatal(err)
	}
	_, genErr := r.e.GenerateKey(ctx, r.cu, KeySpec{Type: TypeAES, Label: "g", LengthBytes: 16})
	_, unwrapErr := r.e.UnwrapKey(ctx, r.cu, UnwrapSpec{Params: nopad, Unwrapping: r.aesKEK, Data: w.Data, KeyTypeClass: "aes", Label: "u"})
	if genErr == nil || unwrapErr == nil {
		t.Fatalf("generate %v, unwrap %v: both should fail with minimum nodes 2 and one HSM up", genErr, unwrapErr)
	}
	var ge, ue *SyncError
	if !errors.As(genErr, &ge) || !errors.As(unwrapErr, &ue) {
		t.Fatalf("generate %T %v, unwrap %T %v: want *SyncError from both", genErr, genErr, unwrapErr, unwrapErr)
	}
	keys, err := r.e.Keys(ctx, r.cu, Filter{Attrs: map[string]string{"label": "u"}})
	if err != nil || len(keys) != 0 {
		t.Errorf("the failed unwrap left %d keys behind (%v)", len(keys), err)
	}
}

func runOpenSSL(t *testing.T, stdin []byte, args ...string) []byte {
	t.Helper()
	cmd := exec.Command("openssl", args...)
	cmd.Stdin = bytes.NewReader(stdin)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("openssl %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return out
}

func kcvOf(t *testing.T, key []byte) string {
	t.Helper()
	b, err := aes.NewCipher(key)
	if err != nil {
		t.Fatal(err)
	}
	var z [16]byte
	b.Encrypt(z[:], z[:])
	return "0x" + hex.EncodeToString(z[:3])
}

// OpenSSL on the other side: it wraps a key-encryption key with RSA-OAEP
// under the HSM's public key, the HSM unwraps it; OpenSSL wraps an AES key
// with RFC 3394 under that KEK, the HSM unwraps it (aes-no-pad); the HSM
// wraps one of its keys with RFC 3394 and with RSA-OAEP under an imported
// OpenSSL public key, and OpenSSL unwraps both. The check values prove the
// same key went through.
func TestWrapOpenSSL(t *testing.T) {
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Skip("openssl is not installed")
	}
	r := newWrapRig(t)
	ctx := context.Background()
	dir := t.TempDir()
	hsmPub, err := r.e.PublicKeyPEM(ctx, r.cu, r.rsaPub)
	if err != nil {
		t.Fatal(err)
	}
	pubFile := filepath.Join(dir, "hsm-pub.pem")
	os.WriteFile(pubFile, hsmPub, 0o600)
	oaep := []string{"-pkeyopt", "rsa_padding_mode:oaep", "-pkeyopt", "rsa_oaep_md:sha256", "-pkeyopt", "rsa_mgf1_md:sha256"}

	// openssl → HSM: RSA-OAEP.
	kek := make([]byte, 32)
	rand.Read(kek)
	wrappedKEK := runOpenSSL(t, kek, append([]string{"pkeyutl", "-encrypt", "-pubin", "-inkey", pubFile}, oaep...)...)
	k, err := r.e.UnwrapKey(ctx, r.cu, UnwrapSpec{Params: protocol.WrapParams{Mechanism: protocol.WrapRSAOAEP, Hash: "sha256", MGF: "mgf1-sha256"},
		Unwrapping: r.rsaPriv, Data: wrappedKEK, KeyTypeClass: "aes", Label: "kek-from-openssl", Attributes: map[string]string{"wrap": "true", "unwrap": "true"}})
	if err != nil {
		t.Fatal(err)
	}
	if k.Attrs.CheckValue != kcvOf(t, kek) {
		t.Fatalf("RSA-OAEP from openssl: check value %s, want %s", k.Attrs.CheckValue, kcvOf(t, kek))
	}

	// openssl → HSM: RFC 3394 under the shared KEK.
	payload := make([]byte, 16)
	rand.Read(payload)
	wrapped := runOpenSSL(t, payload, "enc", "-id-aes256-wrap", "-K", hex.EncodeToString(kek), "-iv", "A6A6A6A6A6A6A6A6")
	p, err := r.e.UnwrapKey(ctx, r.cu, UnwrapSpec{Params: protocol.WrapParams{Mechanism: protocol.WrapAESNoPad}, Unwrapping: k.Ref, Data: wrapped, KeyTypeClass: "aes", Label: "from-openssl"})
	if err != nil {
		t.Fatal(err)
	}
	if p.Attrs.CheckValue != kcvOf(t, payload) {
		t.Errorf("AES key wrap from openssl: check value %s, want %s", p.Attrs.CheckValue, kcvOf(t, payload))
	}

	// HSM → openssl: RFC 3394.
	w, err := r.e.WrapKey(ctx, r.cu, WrapRequest{Params: protocol.WrapParams{Mechanism: protocol.WrapAESNoPad}, Payload: r.aesKey, Wrapping: k.Ref})
	if err != nil {
		t.Fatal(err)
	}
	plain := runOpenSSL(t, w.Data, "enc", "-d", "-id-aes256-wrap", "-K", hex.EncodeToString(kek), "-iv", "A6A6A6A6A6A6A6A6")
	if got, want := kcvOf(t, plain), r.key(t, r.aesKey).Attrs.CheckValue; got != want {
		t.Errorf("openssl unwrapped a key with check value %s, the HSM's is %s", got, want)
	}
	if back, err := keywrap.Unwrap(kek, w.Data); err != nil || !bytes.Equal(back, plain) {
		t.Errorf("keywrap and openssl disagree: %v", err)
	}

	// HSM → openssl: RSA-OAEP under an imported openssl public key.
	privFile := filepath.Join(dir, "ossl.pem")
	runOpenSSL(t, nil, "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", privFile)
	osslPub := runOpenSSL(t, nil, "pkey", "-in", privFile, "-pubout")
	imp, err := r.e.ImportKey(ctx, r.cu, ImportSpec{PEM: osslPub, Label: "ossl-pub", Class: "rsa-public", Attributes: map[string]string{"wrap": "true"}})
	if err != nil {
		t.Fatal(err)
	}
	w, err = r.e.WrapKey(ctx, r.cu, WrapRequest{Params: protocol.WrapParams{Mechanism: protocol.WrapRSAOAEP, Hash: "sha256", MGF: "mgf1-sha256"}, Payload: r.aesKey, Wrapping: imp.Ref})
	if err != nil {
		t.Fatal(err)
	}
	plain = runOpenSSL(t, w.Data, append([]string{"pkeyutl", "-decrypt", "-inkey", privFile}, oaep...)...)
	if got, want := kcvOf(t, plain), r.key(t, r.aesKey).Attrs.CheckValue; got != want {
		t.Errorf("openssl RSA-OAEP-unwrapped a key with check value %s, the HSM's is %s", got, want)
	}
}

// trimDER cuts zero padding after a PKCS #8 key, whatever its length
// encoding, and leaves anything else alone.
func TestTrimDER(t *testing.T) {
	k, _ := ecdsa.GenerateKey(curves["secp384r1"], rand.Reader)
	der, _ := x509.MarshalPKCS8PrivateKey(k)
	padded := append(bytes.Clone(der), make([]byte, 7)...)
	if got := trimDER(padded); !bytes.Equal(got, der) {
		t.Errorf("trimDER kept %d bytes, want %d", len(got), len(der))
	}
	for _, b := range [][]byte{nil, {0x30}, {0x04, 0x01, 0x00}, {0x30, 0x85, 1, 2, 3, 4, 5}, {0x30, 0x82, 0xff, 0xff}} {
		if got := trimDER(b); !bytes.Equal(got, b) {
			t.Errorf("trimDER(%x) = %x", b, got)
		}
	}
}

// key set-attribute of the attributes CloudHSM lets change after creation,
// each in its one allowed direction, trusted by admins only; and what
// they then allow: a wrap-with-trusted key wraps only under a trusted
// key, a non-destroyable key cannot be deleted.
func TestSetAttributeRules(t *testing.T) {
	r := newWrapRig(t)
	ctx := context.Background()
	keys, err := r.e.GenerateKey(ctx, r.cu, KeySpec{Type: TypeAES, Label: "rules", LengthBytes: 32, Attributes: map[string]string{"sensitive": "false"}})
	if err != nil {
		t.Fatal(err)
	}
	k := keys[0].Ref
	for _, tt := range []struct {
		c           Caller
		name, value string
		want        string // "" for success
	}{
		{r.cu, "sensitive", "true", ""},
		{r.cu, "sensitive", "false", "can only be changed to true"},
		{r.cu, "extractable", "false", ""},
		{r.cu, "extractable", "true", "can only be changed to false"},
		{r.cu, "wrap-with-trusted", "true", ""},
		{r.cu, "wrap-with-trusted", "false", "can only be changed to true"},
		{r.cu, "trusted", "true", "needs the admin role"},
		{r.admin, "label", "stolen", "only the key's owner"},
		{r.cu, "destroyable", "false", ""},
		{r.cu, "destroyable", "true", "can only be changed to false"},
		{r.cu, "local", "false", "read-only"},
	} {
		_, err := r.e.SetAttribute(ctx, tt.c, k, tt.name, tt.value)
		if tt.want == "" && err != nil || tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)) {
			t.Errorf("%s sets %s=%s: %v, want %q", tt.c.Username, tt.name, tt.value, err, tt.want)
		}
	}
	// The HSM refuses it too, to a crypto user who bypasses the client.
	for _, h := range devices(r.e) {
		err := sendSealed(t, r.e, r.cu, directDoor(h), h.id, protocol.CallKeyChange, protocol.KeyChangeArgs{Ref: r.aesKEK, Op: protocol.OpSetAttribute, Name: "trusted", Value: "true"})
		if !errors.Is(err, ErrPermission) || !strings.Contains(err.Error(), "only an admin may set attribute trusted") {
			t.Errorf("%s: a crypto user's trusted=true sent past the client: %v", h.id, err)
		}
	}
	got := r.key(t, k).Attrs
	if !got.Sensitive || got.AlwaysSensitive || got.Extractable || got.NeverExtractable || !got.WrapWithTrusted || got.Destroyable {
		t.Errorf("attributes after the changes: %+v", got)
	}
	if err := r.e.DeleteKey(ctx, r.cu, k); err == nil || !strings.Contains(err.Error(), "not destroyable") {
		t.Errorf("delete of a non-destroyable key: %v", err)
	}
	if _, err := r.e.GenerateKey(ctx, r.cu, KeySpec{Type: TypeAES, Label: "t", LengthBytes: 16, Attributes: map[string]string{"trusted": "true"}}); err == nil {
		t.Error("a crypto user made a trusted key")
	}

	// wrap-with-trusted, end to end: refused under the KEK until an admin
	// marks it trusted.
	guarded, err := r.e.GenerateKey(ctx, r.cu, KeySpec{Type: TypeAES, Label: "guarded", LengthBytes: 32, Attributes: map[string]string{"wrap-with-trusted": "true"}})
	if err != nil {
		t.Fatal(err)
	}
	nopad := WrapRequest{Params: protocol.WrapParams{Mechanism: protocol.WrapAESNoPad}, Payload: guarded[0].Ref, Wrapping: r.aesKEK}
	if _, err := r.e.WrapKey(ctx, r.cu, nopad); err == nil || !strings.Contains(err.Error(), "is not trusted") {
		t.Fatalf("wrap under an untrusted key: %v", err)
	}
	if _, err := r.e.SetAttribute(ctx, r.admin, r.aesKEK, "trusted", "true"); err != nil {
		t.Fatal(err)
	}
	if _, err := r.e.WrapKey(ctx, r.cu, nopad); err != nil {
		t.Errorf("wrap under the key an admin trusted: %v", err)
	}
}

// The short-tag GCM is GCM with its tag cut (NIST SP 800-38D): for every
// tag length its output is the full GCM output cut to that length, it
// equals Go's own GCM where Go allows the length, and it refuses altered
// data, an altered tag and other associated data.
func TestShortTagGCM(t *testing.T) {
	kek := bytes.Repeat([]byte{7}, 32)
	iv := bytes.Repeat([]byte{3}, 12)
	plain := []byte("a key to wrap, 32 bytes long....")
	ad := []byte("aad")
	b, _ := aes.NewCipher(kek)
	full, _ := cipher.NewGCM(b)
	fullOut := full.Seal(nil, iv, plain, ad)
	for tag := 8; tag <= 16; tag++ {
		t.Run(fmt.Sprintf("%d-bit", tag*8), func(t *testing.T) {
			g := &shortTagGCM{full: full, block: b, tag: tag}
			out := g.Seal(nil, iv, plain, ad)
			if !bytes.Equal(out, fullOut[:len(plain)+tag]) {
				t.Fatalf("not GCM cut to %d bytes of tag", tag)
			}
			if tag >= 12 {
				std, _ := cipher.NewGCMWithTagSize(b, tag)
				if !bytes.Equal(out, std.Seal(nil, iv, plain, ad)) {
					t.Error("differs from Go's GCM with the same tag size")
				}
			}
			got, err := g.Open(nil, iv, out, ad)
			if err != nil || !bytes.Equal(got, plain) {
				t.Fatalf("open: %q, %v", got, err)
			}
			for name, mut := range map[string]func([]byte) []byte{
				"altered data": func(x []byte) []byte { x[0] ^= 1; return x },
				"altered tag":  func(x []byte) []byte { x[len(x)-1] ^= 1; return x },
				"cut short":    func(x []byte) []byte { return x[:len(x)-1] },
			} {
				if _, err := g.Open(nil, iv, mut(bytes.Clone(out)), ad); err == nil {
					t.Errorf("%s opened", name)
				}
			}
			if _, err := g.Open(nil, iv, out, []byte("other")); err == nil {
				t.Error("other associated data opened")
			}
		})
	}
	if _, err := gcmOf(kek, 56); err == nil {
		t.Error("a 56-bit tag was accepted")
	}
}
