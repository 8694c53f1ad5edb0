package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// softHSM makes a throwaway SoftHSM2 token in a temporary folder and
// returns the module's path, or skips where SoftHSM2 is not installed.
func softHSM(t *testing.T) string {
	lib := "/usr/lib/softhsm/libsofthsm2.so"
	if _, err := os.Stat(lib); err != nil {
		t.Skip("SoftHSM2 is not installed (apt-get install softhsm2)")
	}
	if _, err := exec.LookPath("softhsm2-util"); err != nil {
		t.Skip("softhsm2-util is not installed")
	}
	dir := t.TempDir()
	conf := filepath.Join(dir, "softhsm2.conf")
	if err := os.Mkdir(filepath.Join(dir, "tokens"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(conf, []byte("directories.tokendir = "+filepath.Join(dir, "tokens")+"\nobjectstore.backend = file\nlog.level = ERROR\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("SOFTHSM2_CONF", conf)
	t.Setenv(pinEnv, "test-user-pin")
	out, err := exec.Command("softhsm2-util", "--init-token", "--free", "--label", "test", "--so-pin", "test-so-pin", "--pin", "test-user-pin").CombinedOutput()
	if err != nil {
		t.Fatalf("softhsm2-util: %v: %s", err, out)
	}
	return lib
}

// Each op runs against a real SoftHSM2 token: the signing key's first
// signature verifies with crypto/ecdsa (ecKeyPair checks it), the finds
// find exactly one key, and the token keys are gone after the run.
func TestSoftHSMOps(t *testing.T) {
	lib := softHSM(t)
	tok, err := openToken(lib, "test")
	if err != nil {
		t.Fatal(err)
	}
	defer tok.close()
	for _, op := range []string{"ecdsa-p256-sign", "aes-token-gen", "key-find"} {
		newWorker, cleanup, err := tok.prepare(op, 200)
		if err != nil {
			t.Fatalf("%s: %v", op, err)
		}
		r, err := measure(2, 300*time.Millisecond, newWorker)
		if err != nil {
			t.Fatalf("%s: %v", op, err)
		}
		if err := cleanup(); err != nil {
			t.Fatalf("%s: cleanup: %v", op, err)
		}
		if r.Ops == 0 || r.OpsPerSec <= 0 || r.Threads != 2 {
			t.Errorf("%s: %+v", op, r)
		}
	}
	// The token keys aes-token-gen made were destroyed.
	if err := tok.p.FindObjectsInit(tok.main, nil); err != nil {
		t.Fatal(err)
	}
	hs, _, err := tok.p.FindObjects(tok.main, 100000)
	tok.p.FindObjectsFinal(tok.main)
	if err != nil {
		t.Fatal(err)
	}
	// What is left: the signing key pair and key-find's 200 keys, all
	// session objects.
	if len(hs) != 202 {
		t.Errorf("%d objects left, want 202 (token keys not destroyed?)", len(hs))
	}
}

// A token that is not there, or a missing PIN, is a clear error.
func TestOpenTokenErrors(t *testing.T) {
	lib := softHSM(t)
	if _, err := openToken(lib, "no-such-token"); err == nil {
		t.Error("opened a token that does not exist")
	}
	t.Setenv(pinEnv, "")
	if _, err := openToken(lib, "test"); err == nil {
		t.Error("opened the token without a PIN")
	}
}
