package client

// Owner is a user associated with a key, with how many HSMs agree on it.
type Owner struct {
	Username    string `json:"username"`
	KeyCoverage string `json:"key-coverage"`
}

// KeyQuorumValues are the per-key quorum settings.
type KeyQuorumValues struct {
	Manage int `json:"manage-key-quorum-value"`
	Use    int `json:"use-key-quorum-value"`
}

// KeyInfo is what key list --verbose adds about a key's users and where
// the key lives in the cluster.
type KeyInfo struct {
	Owners          []Owner         `json:"key-owners"`
	SharedUsers     []Owner         `json:"shared-users"`
	QuorumValues    KeyQuorumValues `json:"key-quorum-values"`
	ClusterCoverage string          `json:"cluster-coverage"`
	// HSMCoverage maps each HSM id of the cluster to whether it holds the key.
	HSMCoverage map[string]bool `json:"hsm-coverage"`
}

// Key is a key as the cluster reports it: attributes and coverage, never
// material.
type Key struct {
	Ref   Ref
	Attrs Attributes
	Info  KeyInfo
	// Session is true for a session key.
	Session bool
}

// Coverage words used by CloudHSM CLI.
const (
	CoverageFull    = "full"
	CoveragePartial = "partial"
)
