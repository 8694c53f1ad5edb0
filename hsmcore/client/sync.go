package client

import (
	"context"
	"sync"
	"time"
)

func (e *Embedded) startSync() {
	e.sync.Start(func() time.Duration { return e.Durability().ServerSyncInterval }, e.syncPass, e.events.publish)
}

func (e *Embedded) rescheduleSync() { e.sync.Reschedule() }

// SyncStatus reports the state of server-side sync.
func (e *Embedded) SyncStatus() SyncStatus { return e.sync.Status() }

// PauseSync stops server-side sync until ResumeSync: the window in which a
// key lives on fewer HSMs stays open.
func (e *Embedded) PauseSync() error { e.sync.Pause(); return nil }

func (e *Embedded) ResumeSync() error { e.sync.Resume(); return nil }

// SyncNow runs one server-side sync pass at once.
func (e *Embedded) SyncNow(ctx context.Context) (SyncStats, error) { return e.sync.Now(ctx), nil }

// syncPass has every in-process HSM that answers pull from the others what
// it lacks: HSM to HSM, over peer calls, the material wrapped under the
// domain key. The lab only starts it.
func (e *Embedded) syncPass(ctx context.Context) SyncStats {
	var hs []Device
	for _, n := range e.members() {
		if h, ok := inProcess(n); ok && h.Up() {
			hs = append(hs, h)
		}
	}
	e.events.publish(Event{Kind: EventSyncStarted, Count: len(hs)})
	// Each HSM pulls on its own, at once, as separate machines would: a
	// slow HSM holds up only its own pass.
	all := make([]SyncStats, len(hs))
	var wg sync.WaitGroup
	for i, h := range hs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			all[i] = h.SyncPass(ctx)
		}()
	}
	wg.Wait()
	var st SyncStats
	for _, one := range all {
		st.Copied += one.Copied
		st.Deleted += one.Deleted
		st.Users += one.Users
		st.Failed += one.Failed
	}
	st.Deleted += e.redoDeletes()
	return st
}

// redoDeletes retries this client's key deletions where the key turned up
// again: an HSM that was down when the key was deleted still held it, and
// every HSM that kept the tombstone was destroyed since. The retry runs in
// the session of the user who deleted the key, so the HSM checks it is
// the owner, as for any delete; once that session has ended it is not
// retried.
func (e *Embedded) redoDeletes() int {
	e.mu.RLock()
	todo := make(map[Ref]Caller, len(e.deleted))
	for ref, c := range e.deleted {
		if _, live := e.sessions[c.Session]; live {
			todo[ref] = c
		}
	}
	e.mu.RUnlock()
	n := 0
	for ref, c := range todo {
		for _, h := range e.answering() {
			sn := e.on(c, h)
			if sn.Has(ref) && sn.DeleteKey(ref) == nil {
				n++
				e.events.publish(Event{Kind: EventKeyDeleted, HSM: h.ID(), Ref: ref.String(), Detail: "delete retried by the client that made it"})
			}
		}
	}
	return n
}
