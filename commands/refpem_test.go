package commands

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/asn1"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"testing"

	"github.com/hsmsh/hsmsh/hsmcore"
	"github.com/hsmsh/hsmsh/hsmcore/keywrap"
)

// key generate-file --encoding reference-pem writes the key's reference
// and public half, and none of its private material: the private key,
// wrapped out of the HSM (rsa-aes under a key pair this test holds) and
// unwrapped here, has no secret value that appears in the file.
func TestGenerateFileReferencePEMHoldsNoKeyMaterial(t *testing.T) {
	r := testRunner(t)
	ctx := context.Background()
	dir := t.TempDir()
	r.Env.Dir = dir
	run := func(line string) map[string]any {
		t.Helper()
		res, _ := r.RunLine(ctx, line)
		if !res.OK() {
			t.Fatalf("%s: %v", line, res.Data)
		}
		b, _ := json.Marshal(res.Data)
		var m map[string]any
		json.Unmarshal(b, &m)
		return m
	}
	refOf := func(m map[string]any, which string) hsmcore.Ref {
		t.Helper()
		s, _ := m[which].(map[string]any)["key-reference"].(string)
		ref, err := hsmcore.ParseRef(s)
		if err != nil {
			t.Fatalf("%s: %v", which, err)
		}
		return ref
	}

	// The key pair the wrapped keys come out under.
	mine, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKIXPublicKey(&mine.PublicKey)
	if err := os.WriteFile(filepath.Join(dir, "mine.pem"), pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	run("key import pem --path mine.pem --label mine --key-type-class rsa-public --attributes wrap=true")
	privateOf := func(label string) any {
		t.Helper()
		path := label + ".wrapped"
		run("key wrap rsa-aes --payload-filter attr.label=" + label + " --wrapping-filter attr.label=mine --hash-function sha256 --mgf mgf1-sha256 --path " + path)
		data, err := os.ReadFile(filepath.Join(dir, path))
		if err != nil {
			t.Fatal(err)
		}
		n := mine.Size()
		k, err := rsa.DecryptOAEP(sha256.New(), nil, mine, data[:n], nil)
		if err != nil {
			t.Fatal(err)
		}
		p8, err := keywrap.UnwrapPad(k, data[n:])
		if err != nil {
			t.Fatal(err)
		}
		priv, err := x509.ParsePKCS8PrivateKey(p8)
		if err != nil {
			t.Fatal(err)
		}
		return priv
	}
	// noneIn fails if 8 bytes running of any secret are in file.
	noneIn := func(what string, file []byte, secrets map[string][]byte) {
		t.Helper()
		for name, s := range secrets {
			if len(s) < 8 {
				t.Fatalf("%s: %s is %d bytes", what, name, len(s))
			}
			for i := 0; i+8 <= len(s); i++ {
				if bytes.Contains(file, s[i:i+8]) {
					t.Errorf("%s: bytes %d..%d of the key's %s are in the reference file", what, i, i+7, name)
					break
				}
			}
		}
	}
	read := func(name, wantType string) (*pem.Block, []byte) {
		t.Helper()
		data, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if fi, _ := os.Stat(filepath.Join(dir, name)); fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v, want 0600", name, fi.Mode().Perm())
		}
		block, rest := pem.Decode(data)
		if block == nil || block.Type != wantType || len(bytes.TrimSpace(rest)) != 0 || len(block.Headers) != 0 {
			t.Fatalf("%s: not one %s block:\n%s", name, wantType, data)
		}
		return block, data
	}

	t.Run("ec", func(t *testing.T) {
		for _, curve := range []string{"secp256r1", "secp384r1", "secp521r1"} {
			pair := run("key generate-asymmetric-pair ec --curve " + curve + " --public-label " + curve + "-pub --private-label " + curve + " --public-attributes verify=true --private-attributes sign=true")
			ref := refOf(pair, "private_key")
			run("key generate-file --encoding reference-pem --path " + curve + ".pem --filter attr.label=" + curve)
			block, file := read(curve+".pem", "EC PRIVATE KEY")
			priv := privateOf(curve).(*ecdsa.PrivateKey)
			scalar, err := priv.Bytes()
			if err != nil {
				t.Fatal(err)
			}
			noneIn(curve, append(file, block.Bytes...), map[string][]byte{"private scalar": scalar})
			size := len(scalar) // the curve's order's size: Bytes pads to it
			var got ecPrivateKey
			if _, err := asn1.Unmarshal(block.Bytes, &got); err != nil {
				t.Fatal(err)
			}
			wantPoint, _ := priv.PublicKey.Bytes()
			if got.Version != 1 || len(got.PrivateKey) != size || new(big.Int).SetBytes(got.PrivateKey).Uint64() != uint64(ref) || !bytes.Equal(got.PublicKey.Bytes, wantPoint) {
				t.Errorf("%s: the file's fields: version %d, private key %x (want the reference %s in %d bytes), point %x (want %x)", curve, got.Version, got.PrivateKey, ref, size, got.PublicKey.Bytes, wantPoint)
			}
		}
	})

	t.Run("rsa", func(t *testing.T) {
		pair := run("key generate-asymmetric-pair rsa --modulus-size-bits 2048 --public-exponent 65537 --public-label rsa-pub --private-label rsa --public-attributes verify=true --private-attributes sign=true")
		ref := refOf(pair, "private_key")
		run("key generate-file --encoding reference-pem --path rsa.pem --filter attr.label=rsa")
		block, file := read("rsa.pem", "RSA PRIVATE KEY")
		priv := privateOf("rsa").(*rsa.PrivateKey)
		priv.Precompute()
		noneIn("rsa", append(file, block.Bytes...), map[string][]byte{
			"private exponent": priv.D.Bytes(),
			"prime p":          priv.Primes[0].Bytes(),
			"prime q":          priv.Primes[1].Bytes(),
			"CRT exponent dP":  priv.Precomputed.Dp.Bytes(),
			"CRT exponent dQ":  priv.Precomputed.Dq.Bytes(),
			"CRT coefficient":  priv.Precomputed.Qinv.Bytes(),
		})
		var got pkcs1PrivateKey
		if _, err := asn1.Unmarshal(block.Bytes, &got); err != nil {
			t.Fatal(err)
		}
		if got.N.Cmp(priv.N) != 0 || got.E.Int64() != int64(priv.E) || !got.D.IsUint64() || got.D.Uint64() != uint64(ref) {
			t.Errorf("the file's fields: n matches %v, e %v, d %v (want the reference %s)", got.N.Cmp(priv.N) == 0, got.E, got.D, ref)
		}
		// Go's own PKCS #1 parser refuses it: it is no usable key.
		if _, err := x509.ParsePKCS1PrivateKey(block.Bytes); err == nil {
			t.Error("x509 reads the reference file as a usable RSA key")
		}
	})

	t.Run("refused", func(t *testing.T) {
		run("key generate-symmetric aes --label aes --key-length-bytes 32")
		run("key generate-asymmetric-pair ec --curve ed25519 --public-label ed-pub --private-label ed --public-attributes verify=true --private-attributes sign=true")
		for _, tc := range []struct{ filter, want string }{
			{"attr.label=rsa-pub", "not a private key (class public-key)"},
			{"attr.label=aes", "not a private key (class secret-key)"},
			{"attr.label=ed", "Ed25519"},
		} {
			res, _ := r.RunLine(ctx, "key generate-file --encoding reference-pem --path refused.pem --filter "+tc.filter)
			if res.OK() || !bytes.Contains(res.JSON(), []byte(tc.want)) {
				t.Errorf("%s: %s, want a refusal saying %q", tc.filter, res.JSON(), tc.want)
			}
			if _, err := os.Stat(filepath.Join(dir, "refused.pem")); err == nil {
				t.Fatalf("%s: refused, yet refused.pem was written", tc.filter)
			}
		}
	})
}
