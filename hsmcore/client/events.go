package client

import (
	"sync"
	"sync/atomic"
	"time"
)

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
