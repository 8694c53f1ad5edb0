package protocol

import "time"

// QuorumSettings is a cluster's quorum configuration as each HSM keeps it.
type QuorumSettings struct {
	// Values maps a service (user, quorum) to its M; missing means 1 (off).
	Values map[string]int `json:"values,omitempty"`
	// GeneratedS and ApprovedS are the token timeouts in seconds: how long
	// a token may wait for its approvals, and how long an approved token
	// stays usable. A token expires GeneratedS+ApprovedS after it is made.
	GeneratedS int64 `json:"generated_s"`
	ApprovedS  int64 `json:"approved_s"`
	// Updated orders versions, as for user records.
	Updated int64 `json:"updated"`
}

// Value is a service's M: 1 while its quorum is off.
func (q QuorumSettings) Value(service string) int {
	if v := q.Values[service]; v > 1 {
		return v
	}
	return 1
}

// TTL is how long a token lives, from its making.
func (q QuorumSettings) TTL() time.Duration {
	return time.Duration(q.GeneratedS+q.ApprovedS) * time.Second
}

// Token is a quorum token an HSM issued.
type Token struct {
	Nonce        string    `json:"nonce"`
	ApprovalData []byte    `json:"approval_data"`
	Service      string    `json:"service"`
	Requester    string    `json:"requester"`
	Expires      time.Time `json:"expires"`
	// Used is when the token was used, zero while it is not: approvals are
	// single use across the whole cluster.
	Used time.Time `json:"used,omitempty"`
	// Signers are who approved it, once it was used.
	Signers []string `json:"signers,omitempty"`
}
