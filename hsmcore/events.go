package hsmcore

import (
	"sync"
	"sync/atomic"
	"time"
)

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
	EventSyncStarted    EventKind = "sync-started"
	EventSyncFinished   EventKind = "sync-finished"
	EventSyncPaused     EventKind = "sync-paused"
	EventSyncResumed    EventKind = "sync-resumed"
	EventQuorumToken    EventKind = "quorum-token"    // a token issued
	EventQuorumApproved EventKind = "quorum-approved" // an approval verified and used
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

// bus fans events out to subscribers. A subscriber that does not keep up
// loses events rather than slowing the cluster down.
type bus struct {
	mu      sync.Mutex
	next    int
	subs    map[int]chan Event
	dropped atomic.Int64
	// epoch counts events after which what the client remembers of
	// where keys are may be wrong: an HSM went down or away, or a key was
	// deleted or lost.
	epoch atomic.Int64
}

func (b *bus) publish(ev Event) {
	if ev.Time.IsZero() {
		ev.Time = time.Now()
	}
	switch ev.Kind {
	case EventHSMDown, EventHSMDestroyed, EventHSMRemoved, EventHSMRestarted, EventKeyDeleted, EventKeyLost:
		b.epoch.Add(1)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, ch := range b.subs {
		select {
		case ch <- ev:
		default:
			b.dropped.Add(1)
		}
	}
}

func (b *bus) subscribe(buffer int) (<-chan Event, func()) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.subs == nil {
		b.subs = map[int]chan Event{}
	}
	id := b.next
	b.next++
	ch := make(chan Event, max(buffer, 1))
	b.subs[id] = ch
	var once sync.Once
	return ch, func() {
		once.Do(func() {
			b.mu.Lock()
			if _, ok := b.subs[id]; ok {
				delete(b.subs, id)
				close(ch)
			}
			b.mu.Unlock()
		})
	}
}

// closeAll ends every subscription, when the cluster closes.
func (b *bus) closeAll() {
	b.mu.Lock()
	defer b.mu.Unlock()
	for id, ch := range b.subs {
		close(ch)
		delete(b.subs, id)
	}
}
