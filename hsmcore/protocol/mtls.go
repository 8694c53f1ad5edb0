package protocol

// cluster mtls: the trust anchors an admin registers, and whether the
// servers' outer TLS layer accepts only client certificates that chain to
// one of them. Domain state, kept by every HSM and passed on to its peers.

// The mTLS enforcement levels, as CloudHSM CLI names them.
const (
	MTLSNone    = "none"    // any client certificate the cluster accepts
	MTLSCluster = "cluster" // only one that chains to a registered anchor
)

// MaxTrustAnchors is CloudHSM's limit on registered trust anchors.
const MaxTrustAnchors = 2

// TrustAnchor is a registered CA certificate and its reference.
type TrustAnchor struct {
	Ref int    `json:"ref"`
	DER []byte `json:"der"`
}

// MTLSState is the cluster's mTLS settings.
type MTLSState struct {
	Anchors []TrustAnchor `json:"anchors,omitempty"`
	Level   string        `json:"level,omitempty"` // "" is none
	Updated int64         `json:"updated"`
}

// MTLSArgs changes the mTLS settings: registers CertPEM, deregisters
// Ref, or sets Level; Approval is the cluster service's.
type MTLSArgs struct {
	CertPEM  []byte    `json:"cert_pem,omitempty"`
	Ref      int       `json:"ref,omitempty"`
	Level    string    `json:"level,omitempty"`
	Approval *Approval `json:"approval,omitempty"`
}
