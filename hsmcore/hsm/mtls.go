package hsm

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/hsmsh/hsmsh/hsmcore/protocol"
	"github.com/hsmsh/hsmsh/hsmcore/quorum"
)

// cluster mtls: trust anchors and the enforcement level are domain state.
// An admin changes them (under the cluster quorum service), the HSM keeps
// them in its store and passes them to its peers, and a server's outer
// TLS layer asks admitClient about every client certificate.

const (
	secretMTLS = "mtls"

	pathMTLSRegister   = "cluster mtls register-trust-anchor"
	pathMTLSDeregister = "cluster mtls deregister-trust-anchor"
	pathMTLSSetLevel   = "cluster mtls set-enforcement"
)

// loadMTLS reads the mTLS settings from the store's secrets.
func (h *hsm) loadMTLS(secrets map[string][]byte) error {
	b, ok := secrets[secretMTLS]
	if !ok {
		return nil
	}
	var s protocol.MTLSState
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("%s: the stored mTLS settings are unreadable: %w", h.id, err)
	}
	h.mtls = s
	return nil
}

// MTLSState returns the mTLS settings (the bare call mtls-state: anchors
// are certificates, nothing secret).
func (h *hsm) MTLSState() (protocol.MTLSState, error) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	if !h.up {
		return protocol.MTLSState{}, protocol.ErrDown(h.id)
	}
	return h.mtls, nil
}

// putMTLS stores a newer version of the settings (from a peer, or made
// here); an older one is ignored.
func (h *hsm) putMTLS(s protocol.MTLSState) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.up {
		return protocol.ErrDown(h.id)
	}
	if s.Updated <= h.mtls.Updated {
		return nil
	}
	for _, a := range s.Anchors {
		if _, err := checkAnchor(a.DER); err != nil {
			return fmt.Errorf("%w: trust anchor %d: %w", ErrInvalid, a.Ref, err)
		}
	}
	if h.store != nil {
		b, err := json.Marshal(s)
		if err != nil {
			return err
		}
		if err := h.store.putSecret(secretMTLS, b); err != nil {
			return fmt.Errorf("%s: store the mTLS settings: %w", h.id, err)
		}
	}
	h.mtls = s
	return nil
}

// checkAnchor parses a trust anchor: a CA certificate with a key CloudHSM
// accepts (EC P-256, P-384, P-521; RSA 2048, 3072, 4096).
func checkAnchor(der []byte) (*x509.Certificate, error) {
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("not an X.509 certificate: %w", err)
	}
	if !c.IsCA {
		return nil, errors.New("the certificate is not a CA certificate (basic constraints CA:TRUE)")
	}
	switch k := c.PublicKey.(type) {
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256(), elliptic.P384(), elliptic.P521():
			return c, nil
		}
		return nil, fmt.Errorf("an EC trust anchor is on secp256r1, secp384r1 or secp521r1, not %s", k.Curve.Params().Name)
	case *rsa.PublicKey:
		if n := k.N.BitLen(); n == 2048 || n == 3072 || n == 4096 {
			return c, nil
		}
		return nil, fmt.Errorf("an RSA trust anchor has 2048, 3072 or 4096 bits, not %d", k.N.BitLen())
	}
	return nil, fmt.Errorf("a trust anchor's key is EC or RSA, not %T", c.PublicKey)
}

// changeMTLS applies an admin's change to the settings, with the cluster
// service's approval, and passes the result on.
func (h *hsm) changeMTLS(o origin, c Caller, method string, a protocol.MTLSArgs) (protocol.MTLSState, error) {
	if err := requireAdmin(c, "changing the cluster's mTLS settings"); err != nil {
		return protocol.MTLSState{}, err
	}
	cur, err := h.MTLSState()
	if err != nil {
		return cur, err
	}
	next := protocol.MTLSState{Anchors: slices.Clone(cur.Anchors), Level: cur.Level}
	var path string
	switch method {
	case protocol.CallMTLSRegister:
		path = pathMTLSRegister
		block, _ := pem.Decode(a.CertPEM)
		if block == nil || block.Type != "CERTIFICATE" {
			return cur, fmt.Errorf("%w: the trust anchor file holds no PEM CERTIFICATE block", ErrInvalid)
		}
		if _, err := checkAnchor(block.Bytes); err != nil {
			return cur, fmt.Errorf("%w: %w", ErrInvalid, err)
		}
		ref := 1
		for _, x := range next.Anchors {
			if string(x.DER) == string(block.Bytes) {
				return cur, fmt.Errorf("%w: this trust anchor is registered already (certificate-reference 0x%02x)", ErrInvalid, x.Ref)
			}
			ref = max(ref, x.Ref+1)
		}
		if len(next.Anchors) >= protocol.MaxTrustAnchors {
			return cur, fmt.Errorf("%w: a cluster has at most %d trust anchors: deregister one first", ErrInvalid, protocol.MaxTrustAnchors)
		}
		next.Anchors = append(next.Anchors, protocol.TrustAnchor{Ref: ref, DER: block.Bytes})
	case protocol.CallMTLSDeregister:
		path = pathMTLSDeregister
		i := slices.IndexFunc(next.Anchors, func(x protocol.TrustAnchor) bool { return x.Ref == a.Ref })
		if i < 0 {
			return cur, fmt.Errorf("%w: no trust anchor 0x%02x (cluster mtls list-trust-anchors lists them)", ErrInvalid, a.Ref)
		}
		next.Anchors = slices.Delete(next.Anchors, i, i+1)
		if len(next.Anchors) == 0 && next.Level == protocol.MTLSCluster {
			return cur, fmt.Errorf("%w: enforcement is on: with no trust anchor left no client could connect; set the enforcement to none first", ErrInvalid)
		}
	case protocol.CallMTLSSetLevel:
		path = pathMTLSSetLevel
		switch a.Level {
		case protocol.MTLSNone:
			next.Level = ""
		case protocol.MTLSCluster:
			if len(next.Anchors) == 0 {
				return cur, fmt.Errorf("%w: register a trust anchor first: with none, no client could connect", ErrInvalid)
			}
			if o.remote && !o.anchored {
				// As CloudHSM: enforcement is turned on only over an
				// mTLS connection, so that the admin who turns it on
				// has shown a certificate it will still let in. Over
				// any other, the admin would be shut out once this
				// connection dropped.
				return cur, fmt.Errorf("%w: setting the mTLS enforcement level to cluster needs an mTLS connection: connect with a client certificate that a registered trust anchor issued (tls.client_cert and tls.client_key), so that enforcement does not shut you out", ErrPermission)
			}
			next.Level = protocol.MTLSCluster
		default:
			return cur, fmt.Errorf("%w: --level takes none or cluster, not %q", ErrInvalid, a.Level)
		}
	default:
		return cur, fmt.Errorf("%w: %s is no mTLS change", ErrInvalid, method)
	}
	if err := h.approveIn(c, quorum.ServiceCluster, 0, path, a.Approval); err != nil {
		return cur, err
	}
	next.Updated = max(time.Now().UnixNano(), cur.Updated+1)
	if err := h.commit("change the mTLS settings", opPutMTLS, next); err != nil {
		return cur, err
	}
	return next, nil
}

// anchors is a server's outer-layer question about a client certificate
// (nestedtls.ServerConfig.Anchors): is mTLS enforcement on, and does the
// certificate chain to a registered trust anchor?
func (h *hsm) anchors(leaf *x509.Certificate, intermediates *x509.CertPool) (enforced, anchored bool) {
	h.mu.RLock()
	s := h.mtls
	h.mu.RUnlock()
	if len(s.Anchors) == 0 {
		return s.Level == protocol.MTLSCluster, false
	}
	roots := x509.NewCertPool()
	for _, a := range s.Anchors {
		if c, err := x509.ParseCertificate(a.DER); err == nil {
			roots.AddCert(c)
		}
	}
	_, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: intermediates, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	return s.Level == protocol.MTLSCluster, err == nil
}
