package quorum

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestOpenSSLInterop checks that signatures approvers make with openssl
// verify here, and that SignDigest's verify with openssl, for every
// allowed key kind; and that keys openssl makes of other kinds are refused.
func TestOpenSSLInterop(t *testing.T) {
	openssl, err := exec.LookPath("openssl")
	if err != nil {
		t.Skip("openssl is not on PATH")
	}
	run := func(t *testing.T, dir string, args ...string) string {
		t.Helper()
		cmd := exec.Command(openssl, args...)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("openssl %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	read := func(t *testing.T, path string) []byte {
		t.Helper()
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}

	for _, tc := range []struct {
		name string
		gen  []string // openssl genpkey arguments
		want string   // error from ParsePublicKey, "" if allowed
	}{
		{"RSA-2048", []string{"-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"}, ""},
		{"P-256", []string{"-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"}, ""},
		{"P-384", []string{"-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384"}, ""},
		{"RSA-1024", []string{"-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:1024"}, "RSA-1024, which is too small"},
		{"P-224", []string{"-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-224"}, "ECDSA P-224, which is not allowed"},
		{"Ed25519", []string{"-algorithm", "ED25519"}, "Ed25519, which is not allowed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			run(t, dir, append([]string{"genpkey", "-out", "key.pem"}, tc.gen...)...)
			run(t, dir, "pkey", "-in", "key.pem", "-pubout", "-out", "pub.pem")
			pub, err := ParsePublicKey(read(t, filepath.Join(dir, "pub.pem")))
			if tc.want != "" {
				wantErr(t, err, tc.want)
				_, err = ParsePrivateKey(read(t, filepath.Join(dir, "key.pem")))
				wantErr(t, err, tc.want)
				return
			}
			if err != nil {
				t.Fatal(err)
			}

			// The approver's side: sign a real token's digest with openssl.
			f, a := newToken(t)
			digest := Digest(a.Encode())
			if err := os.WriteFile(filepath.Join(dir, "unsigned.bin"), digest, 0o600); err != nil {
				t.Fatal(err)
			}
			run(t, dir, "pkeyutl", "-sign", "-inkey", "key.pem", "-pkeyopt", "digest:sha256", "-in", "unsigned.bin", "-out", "sig.bin")
			sig := read(t, filepath.Join(dir, "sig.bin"))
			if err := VerifySignature(pub, digest, sig); err != nil {
				t.Fatalf("openssl signature refused: %v", err)
			}
			f.Signatures = append(f.Signatures, Signature{Username: "approver", Signature: b64(sig)})
			approvers := map[string]Approver{"approver": {Username: "approver", Role: "admin", Key: pub}}
			if _, err := Verify(f, a, approvers, []Rule{{{Role: "admin", Min: 1}}}, now); err != nil {
				t.Fatalf("token signed with openssl refused: %v", err)
			}

			// hsmsh's side: openssl must accept SignDigest's signature, made
			// with the key in both the PKCS#8 and the traditional encoding.
			run(t, dir, "pkey", "-in", "key.pem", "-traditional", "-out", "trad.pem")
			for _, file := range []string{"key.pem", "trad.pem"} {
				key, err := ParsePrivateKey(read(t, filepath.Join(dir, file)))
				if err != nil {
					t.Fatalf("%s: %v", file, err)
				}
				sig, err := SignDigest(key, digest)
				if err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(dir, "sig2.bin"), sig, 0o600); err != nil {
					t.Fatal(err)
				}
				out := run(t, dir, "pkeyutl", "-verify", "-pubin", "-inkey", "pub.pem", "-pkeyopt", "digest:sha256", "-in", "unsigned.bin", "-sigfile", "sig2.bin")
				if !strings.Contains(out, "Signature Verified Successfully") {
					t.Fatalf("openssl did not verify SignDigest's signature (%s): %s", file, out)
				}
			}

			// The stored form of the key reads back as the same key.
			text, err := EncodePublicKey(pub)
			if err != nil {
				t.Fatal(err)
			}
			if text != string(read(t, filepath.Join(dir, "pub.pem"))) {
				t.Fatalf("EncodePublicKey differs from openssl's PEM:\n%s", text)
			}
		})
	}
}
