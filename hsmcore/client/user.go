package client

// User is a user as user list reports it.
type User struct {
	Username string `json:"username"`
	Role     Role   `json:"role"`
	// Locked is "true" or "false", a string as CloudHSM CLI prints it.
	Locked          string           `json:"locked"`
	MFA             []MFAStrategy    `json:"mfa"`
	Quorum          []QuorumStrategy `json:"quorum"`
	ClusterCoverage string           `json:"cluster-coverage"`
}
