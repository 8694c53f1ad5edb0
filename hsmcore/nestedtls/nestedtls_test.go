package nestedtls

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"math/big"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hsmsh/hsmsh/hsmcore/pki"
)

func files(dir string) Files {
	j := func(n string) string { return filepath.Join(dir, n) }
	return Files{TrustDir: j(pki.TrustDir), ClientCert: j(pki.ClientCert), ClientKey: j(pki.ClientKey), CustomerCA: j(pki.CustomerCACert),
		ServerCert: j(pki.ServerCert), ServerKey: j(pki.ServerKey), ClusterCert: j(pki.ClusterCert), ClusterKey: j(pki.ClusterKey), ClusterID: "c1"}
}

func newPKI(t *testing.T) Files { return filesFor(t, t.TempDir()) }

func filesFor(t testing.TB, dir string) Files {
	t.Helper()
	if _, err := pki.Init(pki.Options{Dir: dir, ClusterID: "c1"}); err != nil {
		t.Fatal(err)
	}
	return files(dir)
}

// issue makes a certificate signed by the CA in f (or self-signed when
// f is nil), valid from nb to na.
func issue(t *testing.T, f *Files, cn string, usage x509.ExtKeyUsage, nb, na time.Time, dns ...string) tls.Certificate {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn}, NotBefore: nb, NotAfter: na,
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage}, DNSNames: dns}
	parent, signer := tmpl, crypto.Signer(key)
	if f != nil {
		ca, err := tls.LoadX509KeyPair(f.CustomerCA, filepath.Join(filepath.Dir(f.CustomerCA), pki.CustomerCAKey))
		if err != nil {
			t.Fatal(err)
		}
		parent, _ = x509.ParseCertificate(ca.Certificate[0])
		signer = ca.PrivateKey.(crypto.Signer)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, key.Public(), signer)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// serve accepts one connection, echoes a line back on success, and
// reports the server-side result.
func serve(t *testing.T, cfg ServerConfig) (string, chan error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	done := make(chan error, 1)
	go func() {
		raw, err := ln.Accept()
		if err != nil {
			done <- err
			return
		}
		defer raw.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		c, err := Handshake(ctx, raw, cfg)
		if err != nil {
			done <- err
			return
		}
		buf := make([]byte, 5)
		if _, err := io.ReadFull(c, buf); err == nil {
			c.Write(buf)
		}
		done <- nil
	}()
	return ln.Addr().String(), done
}

func TestNestedHandshake(t *testing.T) {
	f := newPKI(t)
	other := newPKI(t)
	now := time.Now()
	foreignClient := issue(t, &other, "foreign", x509.ExtKeyUsageClientAuth, now.Add(-time.Hour), now.Add(time.Hour))
	issuedClient := issue(t, &f, "operator-7", x509.ExtKeyUsageClientAuth, now.Add(-time.Hour), now.Add(time.Hour))
	expiredClient := issue(t, &f, "old", x509.ExtKeyUsageClientAuth, now.Add(-2*time.Hour), now.Add(-time.Hour))
	foreignCluster := issue(t, &other, "rogue HSM", x509.ExtKeyUsageServerAuth, now.Add(-time.Hour), now.Add(time.Hour), "c1")
	expiredCluster := issue(t, &f, "old HSM", x509.ExtKeyUsageServerAuth, now.Add(-2*time.Hour), now.Add(-time.Hour), "c1")
	strangerServer := issue(t, nil, "impostor", x509.ExtKeyUsageServerAuth, now.Add(-time.Hour), now.Add(time.Hour))
	expiredServer := issue(t, nil, "old server", x509.ExtKeyUsageServerAuth, now.Add(-2*time.Hour), now.Add(-time.Hour))

	tests := []struct {
		name      string
		client    func(*ClientConfig)
		server    func(*ServerConfig)
		layer     Layer // "" = success
		want      string
		serverErr string
	}{
		{name: "default client certificate"},
		{name: "client certificate issued by customerCA", client: func(c *ClientConfig) { c.Certificate = issuedClient }},
		{name: "foreign CA client certificate", client: func(c *ClientConfig) { c.Certificate = foreignClient }, layer: Outer, want: "refused the client certificate", serverErr: "neither the default client certificate nor issued by customerCA"},
		{name: "no client certificate", client: func(c *ClientConfig) { c.Certificate = tls.Certificate{} }, layer: Outer, want: "refused", serverErr: "didn't provide a certificate"},
		{name: "expired client certificate", client: func(c *ClientConfig) { c.Certificate = expiredClient }, layer: Outer, want: "refused", serverErr: "expired"},
		{name: "server certificate not in trust folder", server: func(s *ServerConfig) { s.Certificate = strangerServer }, layer: Outer, want: `the server certificate "impostor"`},
		{name: "expired server certificate", server: func(s *ServerConfig) { s.Certificate = expiredServer }, client: func(c *ClientConfig) {
			// Trusted, but out of date.
			leaf, _ := x509.ParseCertificate(expiredServer.Certificate[0])
			c.Trust.certs["old.0"] = leaf
		}, layer: Outer, want: `the server certificate "old server" expired`},
		{name: "cluster certificate from another CA", server: func(s *ServerConfig) { s.Cluster = foreignCluster }, layer: Inner, want: "certificate signed by unknown authority"},
		{name: "expired cluster certificate", server: func(s *ServerConfig) { s.Cluster = expiredCluster }, layer: Inner, want: "expired"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sc, err := LoadServer(f)
			if err != nil {
				t.Fatal(err)
			}
			cc, err := LoadClient(f)
			if err != nil {
				t.Fatal(err)
			}
			if tt.server != nil {
				tt.server(&sc)
			}
			if tt.client != nil {
				tt.client(&cc)
			}
			addr, done := serve(t, sc)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			conn, info, err := Dial(ctx, addr, cc)
			if tt.layer == "" {
				if err != nil {
					t.Fatalf("dial: %v", err)
				}
				conn.Write([]byte("hello"))
				buf := make([]byte, 5)
				if _, err := io.ReadFull(conn, buf); err != nil || string(buf) != "hello" {
					t.Fatalf("echo through both layers: %q %v", buf, err)
				}
				conn.Close()
				if err := <-done; err != nil {
					t.Fatal(err)
				}
				if info.Outer.Status != "ok" || info.Inner.Status != "ok" || info.Outer.Version != "TLS 1.3" || info.Inner.Version != "TLS 1.3" {
					t.Errorf("info %+v", info)
				}
				if !strings.Contains(info.Outer.Peer.VerifiedBy, pki.TrustDir) || !strings.HasPrefix(info.Inner.Peer.VerifiedBy, "customerCA (") || !strings.HasSuffix(info.Inner.Peer.VerifiedBy, pki.CustomerCACert+")") || !strings.Contains(info.Inner.Peer.Issuer, "customer CA") {
					t.Errorf("verified-by: %+v", info)
				}
				return
			}
			var le *LayerError
			if !errors.As(err, &le) || le.Layer != tt.layer || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("dial err = %v; want layer %s with %q", err, tt.layer, tt.want)
			}
			if serr := <-done; tt.serverErr != "" && (serr == nil || !strings.Contains(serr.Error(), tt.serverErr)) {
				t.Errorf("server err = %v; want %q", serr, tt.serverErr)
			}
		})
	}
}
