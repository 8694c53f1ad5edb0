package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func readCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		t.Fatalf("%s: no PEM", path)
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestInit(t *testing.T) {
	for _, kt := range []string{"", "ecdsa-p384", "rsa-2048"} {
		t.Run("key-type="+kt, func(t *testing.T) {
			dir := t.TempDir()
			res, err := Init(Options{Dir: dir, KeyType: kt, ClusterID: "c1"})
			if err != nil {
				t.Fatal(err)
			}
			if len(res.Files) != 9 {
				t.Errorf("wrote %v", res.Files)
			}
			for _, k := range []string{CustomerCAKey, ClientKey, ServerKey, ClusterKey} {
				st, err := os.Stat(filepath.Join(dir, k))
				if err != nil || st.Mode().Perm() != 0o600 {
					t.Errorf("%s: %v mode %v", k, err, st.Mode())
				}
			}
			ca := readCert(t, filepath.Join(dir, CustomerCACert))
			cluster := readCert(t, filepath.Join(dir, ClusterCert))
			server := readCert(t, filepath.Join(dir, ServerCert))
			client := readCert(t, filepath.Join(dir, ClientCert))
			pool := x509.NewCertPool()
			pool.AddCert(ca)
			if _, err := cluster.Verify(x509.VerifyOptions{Roots: pool, DNSName: "c1"}); err != nil {
				t.Errorf("cluster certificate does not chain to customerCA: %v", err)
			}
			if _, err := server.Verify(x509.VerifyOptions{Roots: pool}); err == nil {
				t.Error("the server certificate should be self-signed, not issued by customerCA")
			}
			self := x509.NewCertPool()
			self.AddCert(server)
			if _, err := server.Verify(x509.VerifyOptions{Roots: self, DNSName: "localhost"}); err != nil {
				t.Errorf("server certificate: %v", err)
			}
			if err := client.CheckSignature(client.SignatureAlgorithm, client.RawTBSCertificate, client.Signature); err != nil {
				t.Errorf("default client certificate is not self-signed: %v", err)
			}
			trust := readCert(t, filepath.Join(dir, res.TrustFile))
			if !trust.Equal(server) {
				t.Error("the trust folder does not hold the server certificate")
			}
			if _, err := Init(Options{Dir: dir}); err == nil || !strings.Contains(err.Error(), "never overwrites") {
				t.Errorf("second init: %v", err)
			}
		})
	}
	if _, err := Init(Options{Dir: t.TempDir(), KeyType: "dsa"}); err == nil {
		t.Error("unknown key type accepted")
	}
}

// TestSubjectHashMatchesOpenSSL checks the trust-file name against
// openssl itself, on subjects that exercise the canonical form.
func TestSubjectHashMatchesOpenSSL(t *testing.T) {
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Skip("openssl not installed")
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	for i, name := range []pkix.Name{
		{CommonName: "hsmsh HSM server", Organization: []string{"hsmsh"}},
		{CommonName: "  Mixed   CASE  Name ", Country: []string{"KR"}, OrganizationalUnit: []string{"Ops Team"}},
		{CommonName: "21a10654"},
	} {
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(int64(i + 1)), Subject: name, NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour)}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(t.TempDir(), "c.crt")
		os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
		out, err := exec.Command("openssl", "x509", "-subject_hash", "-noout", "-in", path).Output()
		if err != nil {
			t.Fatal(err)
		}
		c, _ := x509.ParseCertificate(der)
		h, err := SubjectHash(c)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := fmt.Sprintf("%08x", h), strings.TrimSpace(string(out)); got != want {
			t.Errorf("subject %v: hash %s, openssl says %s", name, got, want)
		}
	}
}

// The PKI folder and its trust folder are private to their owner (0700)
// whatever the umask allows: the one holds private keys, the other says
// which servers a client trusts. A folder the user already keeps other
// files in is not Init's to change.
func TestInitFolderModes(t *testing.T) {
	// A common umask, under which 0755 folders would stay 0755.
	defer syscall.Umask(syscall.Umask(0o022))
	tests := []struct {
		name      string
		path      string                         // the PKI folder, under a temporary folder
		prepare   func(t *testing.T, dir string) // before Init; dir does not exist yet
		wantDir   os.FileMode
		wantTrust os.FileMode
	}{
		{"new folder", "pki", func(*testing.T, string) {}, 0o700, 0o700},
		{"new nested folder", "a/b/pki", func(*testing.T, string) {}, 0o700, 0o700},
		{"existing empty folder made 0755", "pki", func(t *testing.T, dir string) {
			mkdir(t, dir, 0o755)
		}, 0o700, 0o700},
		{"existing trust folder made 0755 by an older version", "pki", func(t *testing.T, dir string) {
			mkdir(t, dir, 0o755)
			mkdir(t, filepath.Join(dir, TrustDir), 0o755)
		}, 0o755, 0o700},
		{"folder holding other files", "pki", func(t *testing.T, dir string) {
			mkdir(t, dir, 0o755)
			if err := os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("mine"), 0o644); err != nil {
				t.Fatal(err)
			}
		}, 0o755, 0o700},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), filepath.FromSlash(tt.path))
			tt.prepare(t, dir)
			if _, err := Init(Options{Dir: dir}); err != nil {
				t.Fatal(err)
			}
			for path, want := range map[string]os.FileMode{dir: tt.wantDir, filepath.Join(dir, TrustDir): tt.wantTrust} {
				st, err := os.Stat(path)
				if err != nil {
					t.Fatal(err)
				}
				if got := st.Mode().Perm(); got != want {
					t.Errorf("%s: mode %#o, want %#o", path, got, want)
				}
			}
		})
	}
}

func mkdir(t *testing.T, dir string, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(dir, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, mode); err != nil {
		t.Fatal(err)
	}
}
