package protocol

// DomainInfo is what an HSM says of its place in the domain.
type DomainInfo struct {
	ID       string            `json:"id"`
	Identity []byte            `json:"identity"`         // PKIX DER
	Domain   string            `json:"domain,omitempty"` // the domain key's public id
	Members  map[string][]byte `json:"members,omitempty"`
}
