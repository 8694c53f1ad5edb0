// Package syncloop schedules server-side sync: a pass every interval,
// with jitter, on demand, paused and resumed by the lab. It knows nothing
// of what a pass does: whoever runs the HSMs (a server, or the embedded
// cluster's lab) gives it the pass to run.
package syncloop

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/hsmsh/hsmsh/hsmcore/protocol"
)

// Loop runs server-side sync: every interval (with jitter, as real HSMs
// do not sync in lockstep) and on demand. Whoever runs the HSMs owns it:
// the embedded cluster's lab, or a server; each pass is the HSMs pulling
// from one another (hsm.syncPass), HSM to HSM.
type Loop struct {
	mu     sync.Mutex
	paused bool
	next   time.Time
	last   protocol.SyncStats
	kick   chan struct{} // reschedule (interval changed, resumed)
	pass   sync.Mutex    // one pass at a time
	stop   context.CancelFunc
	done   chan struct{}

	interval func() time.Duration
	run      func(ctx context.Context) protocol.SyncStats
	publish  func(protocol.Event)
}

func (y *Loop) Start(interval func() time.Duration, run func(context.Context) protocol.SyncStats, publish func(protocol.Event)) {
	ctx, cancel := context.WithCancel(context.Background())
	y.interval, y.run, y.publish = interval, run, publish
	y.stop = cancel
	y.kick = make(chan struct{}, 1)
	y.done = make(chan struct{})
	go y.loop(ctx)
}

// close stops the loop and waits for a pass in flight.
func (y *Loop) Close() {
	if y.stop == nil {
		return
	}
	y.stop()
	<-y.done
	// Let a pass in flight finish: taking the lock waits for it.
	y.pass.Lock()
	defer y.pass.Unlock()
}

func (y *Loop) loop(ctx context.Context) {
	defer close(y.done)
	for {
		wait := y.schedule()
		var tick <-chan time.Time
		var t *time.Timer
		if wait > 0 {
			t = time.NewTimer(wait)
			tick = t.C
		}
		select {
		case <-ctx.Done():
			if t != nil {
				t.Stop()
			}
			return
		case <-y.kick:
			if t != nil {
				t.Stop()
			}
		case <-tick:
			y.Now(ctx)
		}
	}
}

// schedule picks the next pass's time: the interval, ±10% jitter.
// It returns 0 while sync is paused.
func (y *Loop) schedule() time.Duration {
	iv := y.interval()
	y.mu.Lock()
	defer y.mu.Unlock()
	if y.paused || iv <= 0 {
		y.next = time.Time{}
		return 0
	}
	jitter := time.Duration(rand.Int64N(int64(iv)/5+1)) - iv/10
	d := max(iv+jitter, time.Millisecond)
	y.next = time.Now().Add(d)
	return d
}

func (y *Loop) Reschedule() {
	if y.kick == nil {
		return
	}
	select {
	case y.kick <- struct{}{}:
	default:
	}
}

func (y *Loop) Status() protocol.SyncStatus {
	y.mu.Lock()
	defer y.mu.Unlock()
	return protocol.SyncStatus{Paused: y.paused, Interval: y.interval(), Next: y.next, Last: y.last}
}

func (y *Loop) Pause() {
	y.mu.Lock()
	y.paused = true
	y.next = time.Time{} // now, not when the loop next wakes
	y.mu.Unlock()
	y.Reschedule()
	y.publish(protocol.Event{Kind: protocol.EventSyncPaused})
}

func (y *Loop) Resume() {
	iv := y.interval()
	y.mu.Lock()
	y.paused = false
	// An estimate until the loop draws the jittered time.
	if iv > 0 {
		y.next = time.Now().Add(iv)
	}
	y.mu.Unlock()
	y.Reschedule()
	y.publish(protocol.Event{Kind: protocol.EventSyncResumed})
}

// now runs one pass at once.
func (y *Loop) Now(ctx context.Context) protocol.SyncStats {
	y.pass.Lock()
	defer y.pass.Unlock()
	start := time.Now()
	st := y.run(ctx)
	st.Took = time.Since(start)
	st.TookMS = float64(st.Took.Microseconds()) / 1000
	y.mu.Lock()
	y.last = st
	y.mu.Unlock()
	y.publish(protocol.Event{Kind: protocol.EventSyncFinished, Count: st.Copied + st.Deleted, Detail: Detail(st)})
	return st
}

// Detail says what a pass did, in one line.
func Detail(st protocol.SyncStats) string {
	return fmt.Sprintf("copied %d, deleted %d, users %d, failures %d", st.Copied, st.Deleted, st.Users, st.Failed)
}
