package hsm

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hsmsh/hsmsh/hsmcore/nestedtls"
	"github.com/hsmsh/hsmsh/hsmcore/protocol"
)

// anchorCA is a customer CA of the test's own, and a client certificate
// it issued, as an admin would make them for mTLS.
type anchorCA struct {
	caPEM             []byte
	clientCert        tls.Certificate
	certFile, keyFile string
}

func newAnchorCA(t *testing.T, dir string) *anchorCA {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	now := time.Now()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "mtls test root"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, caKey.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "anchored operator"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		KeyUsage: x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, k.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalPKCS8PrivateKey(k)
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	a := &anchorCA{caPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), clientCert: pair,
		certFile: filepath.Join(dir, "anchored.crt"), keyFile: filepath.Join(dir, "anchored.key")}
	os.WriteFile(a.certFile, certPEM, 0o600)
	os.WriteFile(a.keyFile, keyPEM, 0o600)
	return a
}

// cluster mtls on three real loopback servers: an admin registers a trust
// anchor and turns enforcement on; every server then refuses the default
// client certificate on the outer TLS layer (and logs why), accepts one
// the anchor issued, and still lets its peers in (they show the cluster
// certificate). OpenSSL's s_client sees both outcomes. Enforcement off:
// the default certificate is accepted again.
func TestMTLSEnforcement(t *testing.T) {
	l := newLoopback(t, 3, time.Hour)
	r := l.client(Durability{MinimumNodes: 1})
	admin, _ := activate(t, r.Embedded)
	ctx := context.Background()
	ca := newAnchorCA(t, t.TempDir())

	// Only an admin, and only a CA certificate.
	if _, err := r.ChangeMTLS(ctx, admin, MTLSChangeOf(nil, 0, protocol.MTLSCluster)); err == nil || !strings.Contains(err.Error(), "register a trust anchor first") {
		t.Errorf("enforcement with no anchor: %v", err)
	}
	if _, err := r.ChangeMTLS(ctx, admin, MTLSChangeOf([]byte("not a pem"), 0, "")); !errors.Is(err, ErrInvalid) {
		t.Errorf("a bad anchor: %v", err)
	}
	st, err := r.ChangeMTLS(ctx, admin, MTLSChangeOf(ca.caPEM, 0, ""))
	if err != nil || len(st.Anchors) != 1 || st.Anchors[0].Ref != 1 {
		t.Fatalf("register: %+v, %v", st, err)
	}
	// Not over a connection without mTLS: the admin would be shut out
	// once it dropped.
	if _, err := r.ChangeMTLS(ctx, admin, MTLSChangeOf(nil, 0, protocol.MTLSCluster)); !errors.Is(err, ErrPermission) || !strings.Contains(err.Error(), "needs an mTLS connection") {
		t.Fatalf("enforcement set over a connection without mTLS: %v", err)
	}
	// Over an mTLS connection (a client certificate the anchor issued).
	ra := l.clientWith(Durability{MinimumNodes: 1}, func(c *nestedtls.ClientConfig) { c.Certificate = ca.clientCert })
	radmin, err := ra.Login(ctx, "admin", RoleAdmin, "adminpass")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ra.ChangeMTLS(ctx, radmin, MTLSChangeOf(nil, 0, protocol.MTLSCluster)); err != nil {
		t.Fatal(err)
	}
	// Every server has the settings, and lists them to anyone.
	// (A committed entry: each server applies it as the leader tells it
	// the entry is committed, within a heartbeat.)
	for i := range l.servers {
		waitFor(t, l.id(i)+" enforcing", func() bool {
			got, err := l.servers[i].local.MTLSState()
			return err == nil && got.Level == protocol.MTLSCluster && len(got.Anchors) == 1
		})
	}
	if s, cov, err := r.MTLS(ctx); err != nil || s.Level != protocol.MTLSCluster || cov[1] != "full" {
		t.Errorf("mtls-state: %+v, coverage %v, %v", s, cov, err)
	}

	files := l.files()
	def, err := nestedtls.LoadClient(files)
	if err != nil {
		t.Fatal(err)
	}
	anchored := def
	anchored.Certificate = ca.clientCert
	peer := def
	srv, err := nestedtls.LoadServer(files)
	if err != nil {
		t.Fatal(err)
	}
	peer.Certificate = srv.Cluster
	dial := func(cfg nestedtls.ClientConfig, addr string) error {
		dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		conn, _, err := nestedtls.Dial(dctx, addr, cfg)
		if err == nil {
			conn.Close()
		}
		return err
	}
	for i, addr := range l.addrs {
		var le *nestedtls.LayerError
		if err := dial(def, addr); !errors.As(err, &le) || le.Layer != nestedtls.Outer {
			t.Errorf("%s: the default certificate under enforcement: %v", l.id(i), err)
		}
		if err := dial(anchored, addr); err != nil {
			t.Errorf("%s: the anchored certificate: %v", l.id(i), err)
		}
		if err := dial(peer, addr); err != nil {
			t.Errorf("%s: a peer server: %v", l.id(i), err)
		}
	}
	if !strings.Contains(l.log.String(), "does not chain to a registered trust anchor") {
		t.Errorf("the refusal is not in the servers' log:\n%s", l.log.String())
	}

	if _, err := exec.LookPath("openssl"); err == nil {
		sClient := func(cert, key string) string {
			// The outer layer is plain TLS 1.3 to s_client; it then waits
			// for the inner layer, so it is stopped after two seconds.
			sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			defer cancel()
			cmd := exec.CommandContext(sctx, "openssl", "s_client", "-connect", l.addrs[0], "-tls1_3", "-cert", cert, "-key", key, "-ign_eof")
			cmd.Stdin = strings.NewReader("")
			out, _ := cmd.CombinedOutput()
			return string(out)
		}
		p := PKIFiles(l.pkiDir, "remote-test")
		if out := sClient(p.ClientCert, p.ClientKey); !strings.Contains(out, "alert") {
			t.Errorf("openssl s_client with the default certificate was not refused:\n%s", out)
		}
		if out := sClient(ca.certFile, ca.keyFile); strings.Contains(out, "alert") || !strings.Contains(out, "TLSv1.3") {
			t.Errorf("openssl s_client with the anchored certificate:\n%s", out)
		}
	}

	// Enforcement off: the default certificate is back in.
	if _, err := r.ChangeMTLS(ctx, admin, MTLSChangeOf(nil, 0, protocol.MTLSNone)); err != nil {
		t.Fatal(err)
	}
	if err := dial(def, l.addrs[0]); err != nil {
		t.Errorf("the default certificate after enforcement off: %v", err)
	}
	if _, err := r.ChangeMTLS(ctx, admin, MTLSChangeOf(nil, 1, "")); err != nil {
		t.Errorf("deregister: %v", err)
	}
}
