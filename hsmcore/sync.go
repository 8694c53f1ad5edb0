package hsmcore

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"sync"
	"time"
)

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

// syncer runs server-side sync: every interval (with jitter, as real HSMs
// do not sync in lockstep) and on demand. Whoever runs the HSMs owns it:
// the embedded cluster's lab, or a server; each pass is the HSMs pulling
// from one another (hsm.syncPass), HSM to HSM.
type syncer struct {
	mu     sync.Mutex
	paused bool
	next   time.Time
	last   SyncStats
	kick   chan struct{} // reschedule (interval changed, resumed)
	pass   sync.Mutex    // one pass at a time
	stop   context.CancelFunc
	done   chan struct{}

	interval func() time.Duration
	run      func(ctx context.Context) SyncStats
	publish  func(Event)
}

func (y *syncer) start(interval func() time.Duration, run func(context.Context) SyncStats, publish func(Event)) {
	ctx, cancel := context.WithCancel(context.Background())
	y.interval, y.run, y.publish = interval, run, publish
	y.stop = cancel
	y.kick = make(chan struct{}, 1)
	y.done = make(chan struct{})
	go y.loop(ctx)
}

// close stops the loop and waits for a pass in flight.
func (y *syncer) close() {
	if y.stop == nil {
		return
	}
	y.stop()
	<-y.done
	// Let a pass in flight finish: taking the lock waits for it.
	y.pass.Lock()
	defer y.pass.Unlock()
}

func (y *syncer) loop(ctx context.Context) {
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
			y.now(ctx)
		}
	}
}

// schedule picks the next pass's time: the interval, ±10% jitter.
// It returns 0 while sync is paused.
func (y *syncer) schedule() time.Duration {
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

func (y *syncer) reschedule() {
	if y.kick == nil {
		return
	}
	select {
	case y.kick <- struct{}{}:
	default:
	}
}

func (y *syncer) status() SyncStatus {
	y.mu.Lock()
	defer y.mu.Unlock()
	return SyncStatus{Paused: y.paused, Interval: y.interval(), Next: y.next, Last: y.last}
}

func (y *syncer) pause() {
	y.mu.Lock()
	y.paused = true
	y.next = time.Time{} // now, not when the loop next wakes
	y.mu.Unlock()
	y.reschedule()
	y.publish(Event{Kind: EventSyncPaused})
}

func (y *syncer) resume() {
	iv := y.interval()
	y.mu.Lock()
	y.paused = false
	// An estimate until the loop draws the jittered time.
	if iv > 0 {
		y.next = time.Now().Add(iv)
	}
	y.mu.Unlock()
	y.reschedule()
	y.publish(Event{Kind: EventSyncResumed})
}

// now runs one pass at once.
func (y *syncer) now(ctx context.Context) SyncStats {
	y.pass.Lock()
	defer y.pass.Unlock()
	start := time.Now()
	st := y.run(ctx)
	st.Took = time.Since(start)
	st.TookMS = float64(st.Took.Microseconds()) / 1000
	y.mu.Lock()
	y.last = st
	y.mu.Unlock()
	y.publish(Event{Kind: EventSyncFinished, Count: st.Copied + st.Deleted, Detail: syncDetail(st)})
	return st
}

func (e *Embedded) startSync() {
	e.sync.start(func() time.Duration { return e.Durability().ServerSyncInterval }, e.syncPass, e.events.publish)
}

func (e *Embedded) rescheduleSync() { e.sync.reschedule() }

// SyncStatus reports the state of server-side sync.
func (e *Embedded) SyncStatus() SyncStatus { return e.sync.status() }

// PauseSync stops server-side sync until ResumeSync: the window in which a
// key lives on fewer HSMs stays open.
func (e *Embedded) PauseSync() error { e.sync.pause(); return nil }

func (e *Embedded) ResumeSync() error { e.sync.resume(); return nil }

// SyncNow runs one server-side sync pass at once.
func (e *Embedded) SyncNow(ctx context.Context) (SyncStats, error) { return e.sync.now(ctx), nil }

// syncPass has every in-process HSM that answers pull from the others what
// it lacks: HSM to HSM, over peer calls, the material wrapped under the
// domain key. The lab only starts it.
func (e *Embedded) syncPass(ctx context.Context) SyncStats {
	var hs []*hsm
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
			all[i] = h.syncPass(ctx)
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

// syncPass is one server-side sync pass of this HSM: it pulls from each
// other HSM of the domain that answers the deletions it has not seen (a
// key deleted anywhere is deleted everywhere, so it never comes back),
// the token keys it lacks (wrapped, and unwrapped here), the newest users
// and the quorum state. Session keys are never copied. An HSM that is
// not yet in the domain first tries to join it.
func (h *hsm) syncPass(ctx context.Context) SyncStats {
	var st SyncStats
	if !h.Up() {
		return st
	}
	if err := h.ensureDomain(); err != nil && !errors.Is(err, errNoDomainYet) {
		st.Failed++
	}
	h.mu.RLock()
	inDomain := h.domain != nil
	h.mu.RUnlock()
	if !inDomain {
		return st
	}
	for _, p := range h.peerLinks() {
		if ctx.Err() != nil {
			break
		}
		h.pullFrom(ctx, p, &st)
	}
	return st
}

// pullFrom is the part of a pass that pulls from one peer.
func (h *hsm) pullFrom(ctx context.Context, p peerLink, st *SyncStats) {
	var ts peerTokenState
	if err := h.callPeer(p, mTokenState, nil, &ts); err != nil {
		if !isDown(err) {
			st.Failed++
		}
		return
	}
	h.adoptMembers(ts.Members)
	// Deletions first.
	for ref, at := range ts.Tombstones {
		h.mu.RLock()
		_, held := h.keys[ref]
		_, known := h.tombstones[ref]
		h.mu.RUnlock()
		if known && !held {
			continue
		}
		if err := h.tombstone(ref, at); err != nil {
			st.Failed++
			continue
		}
		if held {
			st.Deleted++
			h.parsed.Delete(ref)
			h.event(Event{Kind: EventKeyDeleted, Ref: ref.String(), Detail: "server-side sync"})
		}
	}
	// Copies: the token keys this HSM lacks, wrapped by the peer.
	var missing []Ref
	h.mu.RLock()
	for _, ref := range ts.Keys {
		_, held := h.keys[ref]
		_, session := h.sessionKeys[ref]
		_, gone := h.tombstones[ref]
		if !held && !session && !gone {
			missing = append(missing, ref)
		}
	}
	h.mu.RUnlock()
	slices.Sort(missing)
	const chunk = 1000
	for i := 0; i < len(missing) && ctx.Err() == nil; i += chunk {
		var ws []*wrappedKey
		if err := h.callPeer(p, mTokenKeys, missing[i:min(i+chunk, len(missing))], &ws); err != nil {
			st.Failed++
			break
		}
		recs := make([]*keyRecord, 0, len(ws))
		for _, w := range ws {
			r, err := h.unwrapKey(w)
			if err != nil {
				st.Failed++
				continue
			}
			if r != nil {
				recs = append(recs, r)
			}
		}
		if len(recs) == 0 {
			continue
		}
		err := h.PutKeys(recs)
		for _, r := range recs {
			clear(r.Material)
		}
		if err != nil {
			st.Failed += len(recs)
			continue
		}
		st.Copied += len(recs)
		for _, r := range recs {
			h.event(Event{Kind: EventKeySynced, Ref: r.Ref.String(), Detail: r.Attrs.Label})
		}
	}

	// Users: the newest version of each, and deletions newer than a record.
	var us userState
	if err := h.callPeer(p, mUserState, nil, &us); err == nil && us.Up {
		have, haveTombs := h.UserState()
		for n, u := range us.Users {
			if u.Hash != "" && validHash(u.Hash) != nil {
				st.Failed++
				continue
			}
			if cur, ok := have[n]; ok && cur.Updated >= u.Updated && cur.failsCover(u) {
				continue
			}
			if t, ok := haveTombs[n]; ok && t >= u.Updated {
				continue
			}
			if err := h.PutUser(u); err != nil {
				st.Failed++
			} else {
				st.Users++
			}
		}
		for n, t := range us.Tombstones {
			cur, has := have[n]
			if has && cur.Updated > t || !has && haveTombs[n] >= t {
				continue
			}
			if err := h.DeleteUser(n, t); err != nil {
				st.Failed++
				continue
			}
			h.UnshareAll(n)
			if has {
				st.Users++
			}
		}
	} else if err != nil && !isDown(err) {
		st.Failed++
	}

	// Quorum: the newest settings; every live token, used if used there.
	var qs quorumState
	if err := h.callPeer(p, mQuorumState, nil, &qs); err == nil {
		if err := h.PutQuorumSettings(qs.Settings); err != nil {
			st.Failed++
		}
		now := time.Now()
		h.mu.RLock()
		have := maps.Clone(h.tokens)
		h.mu.RUnlock()
		for _, t := range qs.Tokens {
			cur, ok := have[t.Nonce]
			switch {
			case !ok && now.Before(t.Expires):
				if h.PutToken(t) != nil {
					st.Failed++
				}
			case ok && cur.Used.IsZero() && !t.Used.IsZero():
				h.mu.Lock()
				err := h.useLocked(t.Nonce, t.Used, t.Signers...)
				h.mu.Unlock()
				if err != nil {
					st.Failed++
				}
			}
		}
	} else if !isDown(err) {
		st.Failed++
	}
}

func syncDetail(st SyncStats) string {
	return fmt.Sprintf("copied %d, deleted %d, users %d, failures %d", st.Copied, st.Deleted, st.Users, st.Failed)
}
