package protocol

import "time"

// EventKind names what happened in the cluster.
type EventKind string

const (
	EventKeyCreated     EventKind = "key-created"    // a new key on its first HSM
	EventKeyReplicated  EventKind = "key-replicated" // copied by client-side sync
	EventKeySynced      EventKind = "key-synced"     // copied by server-side sync
	EventKeyDeleted     EventKind = "key-deleted"
	EventKeyLost        EventKind = "key-lost" // its last copy was destroyed
	EventSessionKeys    EventKind = "session-keys-destroyed"
	EventRenegotiated   EventKind = "session-renegotiated" // a new session key, same session
	EventHSMDown        EventKind = "hsm-down"
	EventHSMUp          EventKind = "hsm-up"
	EventHSMRestarted   EventKind = "hsm-restarted"
	EventHSMDestroyed   EventKind = "hsm-destroyed"
	EventHSMAdded       EventKind = "hsm-added"
	EventHSMRemoved     EventKind = "hsm-removed"
	EventHSMLatency     EventKind = "hsm-latency"
	EventHSMPartition   EventKind = "hsm-partition" // cut off from its peers, or joined back
	EventSyncStarted    EventKind = "sync-started"
	EventSyncFinished   EventKind = "sync-finished"
	EventSyncPaused     EventKind = "sync-paused"
	EventSyncResumed    EventKind = "sync-resumed"
	EventQuorumToken    EventKind = "quorum-token"    // a token issued
	EventQuorumApproved EventKind = "quorum-approved" // an approval verified and used
	EventLeader         EventKind = "leader-elected"  // the domain state's consensus group has a leader
	EventNoLeader       EventKind = "leader-lost"     // no leader: no majority, or an election under way
	EventDomainState    EventKind = "domain-state"    // the consensus group changed, a user locked, a catch-up
	EventCleanupDone    EventKind = "cleanup-done"
	EventCleanupFailed  EventKind = "cleanup-failed"
)

// Event is one thing that happened in the cluster, for live views and
// batch mode's --events.
type Event struct {
	Time   time.Time `json:"time"`
	Kind   EventKind `json:"kind"`
	HSM    string    `json:"hsm,omitempty"`
	Ref    string    `json:"key-reference,omitempty"`
	Count  int       `json:"count,omitempty"`
	Detail string    `json:"detail,omitempty"`
	// Label is the key's label, for events about one key, so an event
	// log names keys as people do.
	Label string `json:"label,omitempty"`
}
