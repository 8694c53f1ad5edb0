package protocol

import (
	"strconv"
	"time"

	"github.com/hsmsh/hsmsh/hsmcore/nestedtls"
)

// HSMInfo is what cluster hsm-info reports of one HSM.
type HSMInfo struct {
	ID      string   `json:"id"`
	State   HSMState `json:"state"`
	Address string   `json:"address"`
	// TokenKeyCount is how many token keys the HSM holds; null while it
	// is down, when nobody can tell.
	TokenKeyCount *int    `json:"token-key-count"`
	UserCount     int     `json:"user-count"`
	LatencyMS     float64 `json:"latency-ms"`
	TLS           string  `json:"tls"`
	// Identity is the fingerprint of the HSM's identity key (ECDSA P-384).
	Identity string `json:"identity-key,omitempty"`
	// Domain is the public id of the domain key the HSM holds, "" if none.
	Domain string `json:"domain,omitempty"`
	// Raft is the HSM's place in the domain state's consensus group; nil
	// while it is down or not yet in the domain.
	Raft *RaftInfo `json:"raft,omitempty"`
}

// RaftInfo is one HSM's view of the consensus group that holds the domain
// state (users, lockout counts, quorum settings and tokens, members).
type RaftInfo struct {
	// Role is leader, follower or candidate (or shutdown).
	Role string `json:"role"`
	// Leader is the id of the HSM this one takes for the leader; "" if none.
	Leader       string `json:"leader"`
	Term         uint64 `json:"term"`
	CommitIndex  uint64 `json:"commit-index"`
	AppliedIndex uint64 `json:"applied-index"`
	// LastContact is how long ago a follower last heard from the leader
	// ("0s" on the leader itself; "never" before the first contact).
	LastContact string `json:"last-contact"`
	// Voters is how many HSMs the group has: a majority of them must
	// record a change to the domain state.
	Voters int `json:"voters"`
}

// Keys is the HSM's token key count as a person reads it: "?" while the
// HSM is down and cannot say.
func (i HSMInfo) Keys() string {
	if i.TokenKeyCount == nil {
		return "?"
	}
	return strconv.Itoa(*i.TokenKeyCount)
}

// HSMTLS is one HSM's nested TLS connection, as cluster tls-info shows it.
type HSMTLS struct {
	ID      string `json:"id"`
	Address string `json:"address"`
	// Transport is "nested-tls", or "direct" for in-process calls.
	Transport string              `json:"transport"`
	Outer     nestedtls.LayerInfo `json:"outer"`
	Inner     nestedtls.LayerInfo `json:"inner"`
	// Error is why the HSM cannot be reached now, if it cannot.
	Error string `json:"error,omitempty"`
}

// Peer is an HSM server of a remote cluster: its id and address.
type Peer struct {
	ID   string
	Addr string
}

// Filter selects keys: by reference, and by attributes (all must match).
type Filter struct {
	Ref   *Ref
	Attrs map[string]string
}

// SyncStats is what one server-side sync pass did.
type SyncStats struct {
	Copied  int           `json:"keys-copied"`
	Deleted int           `json:"keys-deleted"`
	Users   int           `json:"users-copied"`
	Failed  int           `json:"failures"`
	Took    time.Duration `json:"-"`
	TookMS  float64       `json:"took-ms"`
}

// SyncStatus is the state of server-side sync, for status bars.
type SyncStatus struct {
	Paused   bool          `json:"paused"`
	Interval time.Duration `json:"-"`
	// Next is when the next pass is due (zero while paused).
	Next time.Time `json:"next,omitempty"`
	Last SyncStats `json:"last"`
}

// Matches says whether m is among the keys f selects.
func (f Filter) Matches(m *KeyMeta) bool { return f.MatchesKey(m.Ref, &m.Attrs) }

// MatchesKey says whether the key ref with attributes a is among the keys
// f selects: the HSM's records and the client's views ask the same.
func (f Filter) MatchesKey(ref Ref, a *Attributes) bool {
	if f.Ref != nil && *f.Ref != ref {
		return false
	}
	for k, v := range f.Attrs {
		if got, ok := a.Get(k); !ok || got != v {
			return false
		}
	}
	return true
}
