// Package nestedtls is the end-to-end encryption of SPEC §2: two TLS
// connections, one inside the other. The outer one runs between the
// client and the server that hosts an HSM (mutual TLS: the server shows its
// self-signed certificate, which the client finds in its trust folder; the
// client shows the default client certificate or one the customer CA
// issued). The inner one runs between the client and the HSM itself,
// carried inside the outer one: the HSM shows the cluster certificate,
// which the client checks was issued by the customer CA.
//
// Both layers are TLS 1.3 only. Every failure says which layer failed and
// why, because that is what an admin (or a student) needs to know.
package nestedtls

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// Layer names a TLS layer.
type Layer string

const (
	Outer Layer = "outer" // client ↔ server hosting the HSM
	Inner Layer = "inner" // client ↔ HSM, inside the outer layer
)

// LayerError is a handshake that failed on one layer.
type LayerError struct {
	Layer Layer
	Err   error
}

func (e *LayerError) Error() string {
	what := "server TLS connection (outer)"
	if e.Layer == Inner {
		what = "HSM TLS connection (inner)"
	}
	return fmt.Sprintf("%s failed: %v", what, e.Err)
}

func (e *LayerError) Unwrap() error { return e.Err }

// CertInfo describes a peer certificate as cluster tls-info shows it.
type CertInfo struct {
	Subject  string `json:"subject"`
	Issuer   string `json:"issuer"`
	Serial   string `json:"serial"`
	NotAfter string `json:"not-after"`
	// VerifiedBy is what the certificate was checked against: a trust
	// folder file, or the customer CA.
	VerifiedBy string `json:"verified-by"`
}

func certInfo(c *x509.Certificate, by string) *CertInfo {
	return &CertInfo{Subject: c.Subject.String(), Issuer: c.Issuer.String(), Serial: strings.ToUpper(c.SerialNumber.Text(16)), NotAfter: c.NotAfter.UTC().Format(time.RFC3339), VerifiedBy: by}
}

// LayerInfo is one layer's state after a handshake.
type LayerInfo struct {
	Status     string    `json:"status"` // "ok" or the failure
	Version    string    `json:"tls-version,omitempty"`
	Cipher     string    `json:"cipher-suite,omitempty"`
	Peer       *CertInfo `json:"peer-certificate,omitempty"`   // nil until the peer showed one
	ClientCert string    `json:"client-certificate,omitempty"` // outer: what the client showed
}

// Info is both layers of one connection.
type Info struct {
	Outer LayerInfo `json:"outer"`
	Inner LayerInfo `json:"inner"`
}

func layerInfo(st tls.ConnectionState) LayerInfo {
	return LayerInfo{Status: "ok", Version: tls.VersionName(st.Version), Cipher: tls.CipherSuiteName(st.CipherSuite)}
}

// TrustStore is the client's trust folder: server certificates, named by
// OpenSSL subject hash, that the client accepts on the outer layer.
type TrustStore struct {
	Dir   string
	certs map[string]*x509.Certificate // file name → certificate
}

// LoadTrustDir reads every certificate in dir. Files that hold no
// certificate are skipped; a dir with none is an error.
func LoadTrustDir(dir string) (*TrustStore, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("trust folder: %w", err)
	}
	ts := &TrustStore{Dir: dir, certs: map[string]*x509.Certificate{}}
	for _, e := range entries {
		if e.IsDir() {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			return nil, fmt.Errorf("trust folder: %w", err)
		}
		for blk, rest := pem.Decode(b); blk != nil; blk, rest = pem.Decode(rest) {
			if blk.Type != "CERTIFICATE" {
				continue
			}
			c, err := x509.ParseCertificate(blk.Bytes)
			if err != nil {
				return nil, fmt.Errorf("trust folder %s: %w", e.Name(), err)
			}
			ts.certs[e.Name()] = c
			break
		}
	}
	if len(ts.certs) == 0 {
		return nil, fmt.Errorf("trust folder %s holds no certificate: run hsmsh pki init, or copy the server certificate there named by its subject hash (openssl rehash)", dir)
	}
	return ts, nil
}

// match finds the trust file that holds exactly c.
func (ts *TrustStore) match(c *x509.Certificate) (string, bool) {
	names := make([]string, 0, len(ts.certs))
	for n := range ts.certs {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if bytes.Equal(ts.certs[n].Raw, c.Raw) {
			return n, true
		}
	}
	return "", false
}

func fingerprint(c *x509.Certificate) string {
	s := sha256.Sum256(c.Raw)
	return hex.EncodeToString(s[:8])
}

func checkTime(c *x509.Certificate, now time.Time, what string) error {
	if now.After(c.NotAfter) {
		return fmt.Errorf("%s %q expired on %s", what, c.Subject.CommonName, c.NotAfter.UTC().Format(time.RFC3339))
	}
	if now.Before(c.NotBefore) {
		return fmt.Errorf("%s %q is not valid before %s", what, c.Subject.CommonName, c.NotBefore.UTC().Format(time.RFC3339))
	}
	return nil
}

// ClientConfig is what a client needs to reach HSMs.
type ClientConfig struct {
	Trust       *TrustStore     // server certificates (outer)
	Certificate tls.Certificate // the client certificate (outer)
	CustomerCA  *x509.CertPool  // issuer of the cluster certificate (inner)
	ClusterID   string          // the name the cluster certificate carries
	// CustomerCAFile names where CustomerCA came from, for tls-info.
	CustomerCAFile string
	Now            func() time.Time
}

func (c *ClientConfig) now() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return time.Now()
}

// Dial opens both layers to addr and returns the inner connection, with
// what each layer showed. On failure the error is a *LayerError and info
// says how far the handshake got.
func Dial(ctx context.Context, addr string, cfg ClientConfig) (net.Conn, Info, error) {
	var d net.Dialer
	raw, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		var info Info
		info.Outer.Status = err.Error()
		return nil, info, &LayerError{Layer: Outer, Err: err}
	}
	return Client(ctx, raw, cfg)
}

// Client runs both client-side layers on a connection already open to a
// server (a TCP connection, or an in-memory pipe to an in-process HSM). On
// failure it closes raw.
func Client(ctx context.Context, raw net.Conn, cfg ClientConfig) (net.Conn, Info, error) {
	var info Info
	if dl, ok := ctx.Deadline(); ok {
		// tls handshakes over a pipe honour only the conn's deadline.
		raw.SetDeadline(dl)
		defer raw.SetDeadline(time.Time{})
	}
	outerCfg := &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cfg.Certificate},
		// The server's certificate is self-signed: there is no chain to
		// verify, so it is pinned instead — it must be in the trust folder.
		InsecureSkipVerify: true,
		VerifyConnection: func(st tls.ConnectionState) error {
			if len(st.PeerCertificates) == 0 {
				return errors.New("the server showed no certificate")
			}
			leaf := st.PeerCertificates[0]
			name, ok := cfg.Trust.match(leaf)
			if !ok {
				return fmt.Errorf("the server certificate %q (sha256 %s…) is not in the trust folder %s", leaf.Subject.CommonName, fingerprint(leaf), cfg.Trust.Dir)
			}
			if err := checkTime(leaf, cfg.now(), "the server certificate"); err != nil {
				return err
			}
			info.Outer.Peer = certInfo(leaf, filepath.Join(cfg.Trust.Dir, name))
			return nil
		},
		Time: cfg.now,
	}
	if len(cfg.Certificate.Certificate) > 0 {
		if leaf, err := x509.ParseCertificate(cfg.Certificate.Certificate[0]); err == nil {
			info.Outer.ClientCert = leaf.Subject.String()
		}
	}
	outer := tls.Client(raw, outerCfg)
	if err := outer.HandshakeContext(ctx); err != nil {
		raw.Close()
		info.Outer.Status = err.Error()
		return nil, info, &LayerError{Layer: Outer, Err: err}
	}
	// In TLS 1.3 the server checks the client certificate after the
	// client's handshake returns, so a refusal only shows on the next
	// read. The server confirms the outer layer with one byte; waiting
	// for it pins a refusal on the right layer.
	var ack [1]byte
	if _, err := io.ReadFull(outer, ack[:]); err != nil || ack[0] != outerOK {
		raw.Close()
		if err == nil {
			err = fmt.Errorf("unexpected byte %#x", ack[0])
		}
		info.Outer.Status = err.Error()
		return nil, info, &LayerError{Layer: Outer, Err: fmt.Errorf("the server refused the client certificate: %w", err)}
	}
	st := outer.ConnectionState()
	peer := info.Outer.Peer
	client := info.Outer.ClientCert
	info.Outer = layerInfo(st)
	info.Outer.Peer, info.Outer.ClientCert = peer, client

	innerCfg := &tls.Config{
		MinVersion: tls.VersionTLS13,
		RootCAs:    cfg.CustomerCA,
		ServerName: cfg.ClusterID,
		Time:       cfg.now,
		VerifyConnection: func(st tls.ConnectionState) error {
			if len(st.PeerCertificates) > 0 {
				by := "customerCA"
				if cfg.CustomerCAFile != "" {
					by += " (" + cfg.CustomerCAFile + ")"
				}
				info.Inner.Peer = certInfo(st.PeerCertificates[0], by)
			}
			return nil
		},
	}
	inner := tls.Client(outer, innerCfg)
	if err := inner.HandshakeContext(ctx); err != nil {
		outer.Close()
		info.Inner.Status = err.Error()
		return nil, info, &LayerError{Layer: Inner, Err: err}
	}
	peerIn := info.Inner.Peer
	info.Inner = layerInfo(inner.ConnectionState())
	info.Inner.Peer = peerIn
	return inner, info, nil
}

// outerOK is the byte a server sends once it has accepted the client on
// the outer layer.
const outerOK = 0x01

// ServerConfig is what an HSM server needs.
type ServerConfig struct {
	Certificate   tls.Certificate   // the self-signed server certificate (outer)
	DefaultClient *x509.Certificate // accepted as is
	CustomerCA    *x509.CertPool    // issuer of other accepted client certificates
	Cluster       tls.Certificate   // the cluster certificate (inner)
	Now           func() time.Time
	// Anchors, if set, says whether mTLS enforcement is on and whether
	// the client certificate chains to a registered trust anchor. With
	// enforcement on, only such a certificate passes the outer layer (the
	// default client certificate too is refused); with it off, such a
	// certificate passes besides the default and customerCA-issued ones.
	// A server of the cluster, showing the cluster certificate as its
	// client certificate, passes either way.
	Anchors func(leaf *x509.Certificate, intermediates *x509.CertPool) (enforced, anchored bool)
}

func (c *ServerConfig) now() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return time.Now()
}

// Accepted is a connection that passed both layers.
type Accepted struct {
	net.Conn
	// Client is the subject of the client certificate.
	Client string
	// Anchored says the client certificate chained to a registered trust
	// anchor (ServerConfig.Anchors) when the connection was made: an
	// mTLS connection, in CloudHSM's words.
	Anchored bool
}

// Handshake runs both server-side layers on a raw connection. It returns
// the inner connection, or a *LayerError saying which layer refused and why.
func Handshake(ctx context.Context, raw net.Conn, cfg ServerConfig) (*Accepted, error) {
	var client string
	var anchoredCert bool
	outerCfg := &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cfg.Certificate},
		ClientAuth:   tls.RequireAnyClientCert,
		Time:         cfg.now,
		VerifyPeerCertificate: func(raws [][]byte, _ [][]*x509.Certificate) error {
			if len(raws) == 0 {
				return errors.New("the client showed no certificate")
			}
			leaf, err := x509.ParseCertificate(raws[0])
			if err != nil {
				return fmt.Errorf("the client certificate does not parse: %w", err)
			}
			client = leaf.Subject.String()
			if err := checkTime(leaf, cfg.now(), "the client certificate"); err != nil {
				return err
			}
			if len(cfg.Cluster.Certificate) > 0 && bytes.Equal(leaf.Raw, cfg.Cluster.Certificate[0]) {
				// Another server of the cluster: only servers hold the
				// cluster certificate's key, which TLS just proved.
				client = "peer server " + client
				return nil
			}
			inter := x509.NewCertPool()
			for _, r := range raws[1:] {
				if c, err := x509.ParseCertificate(r); err == nil {
					inter.AddCert(c)
				}
			}
			if cfg.Anchors != nil {
				enforced, anchored := cfg.Anchors(leaf, inter)
				switch {
				case anchored:
					anchoredCert = true
					return nil
				case enforced:
					return fmt.Errorf("mTLS enforcement is on: the client certificate %q does not chain to a registered trust anchor", leaf.Subject.CommonName)
				}
			}
			if cfg.DefaultClient != nil && bytes.Equal(leaf.Raw, cfg.DefaultClient.Raw) {
				return nil
			}
			if _, err := leaf.Verify(x509.VerifyOptions{Roots: cfg.CustomerCA, Intermediates: inter, CurrentTime: cfg.now(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
				return fmt.Errorf("the client certificate %q is neither the default client certificate nor issued by customerCA: %v", leaf.Subject.CommonName, err)
			}
			return nil
		},
	}
	outer := tls.Server(raw, outerCfg)
	if err := outer.HandshakeContext(ctx); err != nil {
		return nil, &LayerError{Layer: Outer, Err: err}
	}
	if _, err := outer.Write([]byte{outerOK}); err != nil {
		return nil, &LayerError{Layer: Outer, Err: err}
	}
	inner := tls.Server(outer, &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{cfg.Cluster}, Time: cfg.now})
	if err := inner.HandshakeContext(ctx); err != nil {
		outer.Close()
		return nil, &LayerError{Layer: Inner, Err: err}
	}
	return &Accepted{Conn: inner, Client: client, Anchored: anchoredCert}, nil
}
