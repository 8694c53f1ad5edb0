package commands

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hsmsh/hsmsh/hsmcore/quorum"
)

// signer plays the user at the terminal: asked for the signed token file,
// it signs the token hsmsh wrote (as openssl pkeyutl -sign -pkeyopt
// digest:sha256 would) and presses Enter; asked for the public key, it
// names the PEM file.
func signer(t *testing.T, dir string, k *rsa.PrivateKey, tokenFile, pubFile string, asked *[]string) func(string) (string, error) {
	return func(prompt string) (string, error) {
		*asked = append(*asked, prompt)
		switch {
		case strings.HasPrefix(prompt, "Enter signed token file path"):
			path := filepath.Join(dir, tokenFile)
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			var f mfaFile
			if err := json.Unmarshal(b, &f); err != nil || f.Version != "2.0" || len(f.Tokens) != 1 || f.Tokens[0].Signed != "" {
				t.Fatalf("the unsigned token file: %s (%v)", b, err)
			}
			tok, _ := base64.StdEncoding.DecodeString(f.Tokens[0].Unsigned)
			sig, err := quorum.SignDigest(k, quorum.Digest(tok))
			if err != nil {
				t.Fatal(err)
			}
			f.Tokens[0].Signed = base64.StdEncoding.EncodeToString(sig)
			out, _ := json.Marshal(f)
			os.WriteFile(path, out, 0o600)
			return "", nil
		case strings.HasPrefix(prompt, "Enter public key PEM file path"):
			return pubFile, nil
		}
		t.Fatalf("unexpected prompt %q", prompt)
		return "", nil
	}
}

// user change-mfa token-sign and login … mfa-token-sign, as the pages
// describe them, with the user signing at the terminal between the steps.
func TestMFACommands(t *testing.T) {
	ctx := context.Background()
	r := testRunner(t)
	env := r.Env
	dir := t.TempDir()
	env.Dir = dir
	k, _ := rsa.GenerateKey(rand.Reader, 2048)
	der, _ := x509.MarshalPKIXPublicKey(k.Public())
	os.WriteFile(filepath.Join(dir, "officer1.pub"), pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o600)

	var asked []string
	env.ReadPassword = signer(t, dir, k, "unsigned-tokens.json", "officer1.pub", &asked)
	res, _ := r.RunLine(ctx, "user change-mfa token-sign --username cu1 --role crypto-user --token unsigned-tokens.json")
	if !res.OK() || len(asked) != 2 {
		t.Fatalf("register: %v (prompts %q)", res.Data, asked)
	}
	if res, _ := r.RunLine(ctx, "user change-mfa token-sign --username cu1 --role crypto-user --token unsigned-tokens.json"); res.OK() {
		t.Error("the token file was overwritten")
	}
	if res, _ := r.RunLine(ctx, "logout"); !res.OK() {
		t.Fatal(res.Data)
	}
	res, _ = r.RunLine(ctx, "login --username cu1 --role crypto-user --password cu1pass12")
	if res.OK() || !strings.Contains(string(res.JSON()), "mfa-token-sign") {
		t.Fatalf("password alone: %s", string(res.JSON()))
	}
	asked = nil
	env.ReadPassword = signer(t, dir, k, "login.token", "", &asked)
	res, _ = r.RunLine(ctx, "login --username cu1 --role crypto-user --password cu1pass12 mfa-token-sign --token login.token")
	if !res.OK() || len(asked) != 1 {
		t.Fatalf("MFA login: %s (prompts %q)", string(res.JSON()), asked)
	}
	res, _ = r.RunLine(ctx, "user list")
	if !strings.Contains(string(res.JSON()), `"strategy": "token-sign"`) {
		t.Errorf("user list: %s", string(res.JSON()))
	}
	// Without a terminal, the MFA step says what it needs.
	r.RunLine(ctx, "logout")
	env.ReadPassword = nil
	res, _ = r.RunLine(ctx, "login --username cu1 --role crypto-user --password cu1pass12 mfa-token-sign --token other.token")
	if res.OK() || !strings.Contains(string(res.JSON()), "needs a terminal") {
		t.Errorf("no terminal: %s", string(res.JSON()))
	}
	// An admin resets a user who lost their MFA key: a new password, the
	// key deregistered; the password alone logs in again.
	r.RunLine(ctx, "login --username admin --role admin --password adminpass1")
	if res, _ := r.RunLine(ctx, "user change-password --username cu1 --role crypto-user --password cu1pass34 --deregister-mfa"); !res.OK() {
		t.Fatalf("change-password --deregister-mfa: %s", res.JSON())
	}
	r.RunLine(ctx, "logout")
	if res, _ := r.RunLine(ctx, "login --username cu1 --role crypto-user --password cu1pass34"); !res.OK() {
		t.Errorf("after --deregister-mfa: %s", res.JSON())
	}
	r.RunLine(ctx, "logout")
	res, _ = r.RunLine(ctx, "login --username cu1 --role crypto-user --password cu1pass12 sms")
	if res.OK() || !strings.Contains(string(res.JSON()), "mfa-token-sign") {
		t.Errorf("an unknown strategy: %s", string(res.JSON()))
	}
}
