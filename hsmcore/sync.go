package hsmcore

import (
	"cmp"
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
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
// do not sync in lockstep) and on demand.
type syncer struct {
	mu     sync.Mutex
	paused bool
	next   time.Time
	last   SyncStats
	kick   chan struct{} // reschedule (interval changed, resumed)
	pass   sync.Mutex    // one pass at a time
	stop   context.CancelFunc
	done   chan struct{}
}

func (e *Embedded) startSync() {
	ctx, cancel := context.WithCancel(context.Background())
	e.sync.stop = cancel
	e.sync.kick = make(chan struct{}, 1)
	e.sync.done = make(chan struct{})
	go e.syncLoop(ctx)
}

func (e *Embedded) syncLoop(ctx context.Context) {
	defer close(e.sync.done)
	for {
		wait := e.scheduleSync()
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
		case <-e.sync.kick:
			if t != nil {
				t.Stop()
			}
		case <-tick:
			e.SyncNow(ctx)
		}
	}
}

// scheduleSync picks the next pass's time: the interval, ±10% jitter.
// It returns 0 while sync is paused.
func (e *Embedded) scheduleSync() time.Duration {
	iv := e.Durability().ServerSyncInterval
	e.sync.mu.Lock()
	defer e.sync.mu.Unlock()
	if e.sync.paused || iv <= 0 {
		e.sync.next = time.Time{}
		return 0
	}
	jitter := time.Duration(rand.Int64N(int64(iv)/5+1)) - iv/10
	d := max(iv+jitter, time.Millisecond)
	e.sync.next = time.Now().Add(d)
	return d
}

func (e *Embedded) rescheduleSync() {
	select {
	case e.sync.kick <- struct{}{}:
	default:
	}
}

// SyncStatus reports the state of server-side sync.
func (e *Embedded) SyncStatus() SyncStatus {
	e.sync.mu.Lock()
	defer e.sync.mu.Unlock()
	return SyncStatus{Paused: e.sync.paused, Interval: e.Durability().ServerSyncInterval, Next: e.sync.next, Last: e.sync.last}
}

// PauseSync stops server-side sync until ResumeSync: the window in which a
// key lives on fewer HSMs stays open.
func (e *Embedded) PauseSync() {
	e.sync.mu.Lock()
	e.sync.paused = true
	e.sync.next = time.Time{} // now, not when the loop next wakes
	e.sync.mu.Unlock()
	e.rescheduleSync()
	e.events.publish(Event{Kind: EventSyncPaused})
}

func (e *Embedded) ResumeSync() {
	iv := e.Durability().ServerSyncInterval
	e.sync.mu.Lock()
	e.sync.paused = false
	// An estimate until the loop draws the jittered time.
	if iv > 0 {
		e.sync.next = time.Now().Add(iv)
	}
	e.sync.mu.Unlock()
	e.rescheduleSync()
	e.events.publish(Event{Kind: EventSyncResumed})
}

// SyncNow runs one server-side sync pass at once: deletions first (a key
// deleted anywhere is deleted everywhere, so it never comes back), then
// every token key an HSM lacks is copied from an HSM that holds it.
// Session keys are never copied. HSMs left with no users at all (new or
// destroyed ones) get the cluster's users.
func (e *Embedded) SyncNow(ctx context.Context) SyncStats {
	e.sync.pass.Lock()
	defer e.sync.pass.Unlock()
	start := time.Now()
	hs := e.up()
	e.events.publish(Event{Kind: EventSyncStarted, Count: len(hs)})
	var st SyncStats

	// Deletions: every HSM learns every tombstone (so a destroyed HSM
	// refilled from the others also learns what was deleted), and drops
	// the keys they name. The client's own record of what it deleted
	// covers the case where every HSM holding a tombstone was destroyed.
	dead := map[Ref]bool{}
	e.mu.RLock()
	for ref := range e.deleted {
		dead[ref] = true
	}
	e.mu.RUnlock()
	// What each HSM holds, read once for the whole pass: the pass's own
	// deletions touch only dead keys, which it never copies.
	held := make([][]Ref, len(hs))
	tombs := make([]map[Ref]time.Time, len(hs))
	for i, h := range hs {
		held[i], tombs[i] = h.TokenState()
		for ref := range tombs[i] {
			dead[ref] = true
		}
	}
	into := func(h node) bool { return e.syncInto == nil || e.syncInto(h) }
	for i, h := range hs {
		if !into(h) {
			continue
		}
		var holds map[Ref]bool // the dead keys h still holds
		if len(dead) > 0 {
			holds = map[Ref]bool{}
			for _, ref := range held[i] {
				if dead[ref] {
					holds[ref] = true
				}
			}
		}
		var doomed []Ref
		var had []bool
		for ref := range dead {
			has := holds[ref]
			_, known := tombs[i][ref]
			if has || !known {
				doomed = append(doomed, ref)
				had = append(had, has)
			}
		}
		for j, ref := range doomed {
			if err := h.DeleteKey(ref); err != nil {
				st.Failed++
				continue
			}
			if had[j] {
				st.Deleted++
				e.events.publish(Event{Kind: EventKeyDeleted, HSM: h.ID(), Ref: ref.String(), Detail: "server-side sync"})
			}
		}
	}

	// Copies: for each HSM, the token keys it lacks, taken from a holder,
	// written in one transaction per HSM. pool lists each token key once,
	// with the first HSM that holds it; at finds a key in pool.
	most := 0
	for i := range hs {
		most = max(most, len(held[i]))
	}
	pool := make([]syncSource, 0, most)
	at := make(map[Ref]int32, most)
	for i := range hs {
		for _, ref := range held[i] {
			if _, ok := at[ref]; !ok {
				at[ref] = int32(len(pool))
				pool = append(pool, syncSource{ref: ref, from: int32(i)})
			}
		}
	}
	for i, h := range hs {
		if ctx.Err() != nil {
			break
		}
		if !into(h) {
			continue
		}
		mark := int32(i) + 1
		for _, ref := range held[i] {
			pool[at[ref]].mark = mark // h holds it
		}
		var missing []syncSource
		for _, src := range pool {
			_, gone := tombs[i][src.ref]
			if src.mark != mark && !gone && !dead[src.ref] {
				missing = append(missing, src)
			}
		}
		if len(missing) == 0 {
			continue
		}
		sort.Slice(missing, func(i, j int) bool { return missing[i].ref < missing[j].ref })
		const chunk = 1000
		for j := 0; j < len(missing); j += chunk {
			recs := copiesOf(missing[j:min(j+chunk, len(missing))], hs)
			if err := h.PutKeys(recs); err != nil {
				st.Failed += len(recs)
				continue
			}
			st.Copied += len(recs)
			for _, r := range recs {
				e.events.publish(Event{Kind: EventKeySynced, HSM: h.ID(), Ref: r.Ref.String()})
			}
		}
	}

	// Users: every HSM gets the newest version of each user, and a
	// deletion newer than a user's record removes it everywhere.
	if users, tombs, err := e.userVersions(); err == nil {
		for _, h := range hs {
			if !into(h) {
				continue
			}
			have, haveTombs := h.UserState()
			for n, u := range users {
				if cur, ok := have[n]; ok && cur.Updated >= u.Updated && cur.failsCover(u) {
					continue
				}
				if err := h.PutUser(u); err != nil {
					st.Failed++
				} else {
					st.Users++
				}
			}
			for n, t := range tombs {
				if _, alive := users[n]; alive {
					continue
				}
				_, has := have[n]
				if !has && haveTombs[n] >= t {
					continue
				}
				if err := h.DeleteUser(n, t); err != nil {
					st.Failed++
				} else if has {
					st.Users++
				}
			}
		}
	}

	st.Failed += e.syncQuorum(hs, into)

	st.Took = time.Since(start)
	st.TookMS = float64(st.Took.Microseconds()) / 1000
	e.sync.mu.Lock()
	e.sync.last = st
	e.sync.mu.Unlock()
	e.events.publish(Event{Kind: EventSyncFinished, Count: st.Copied + st.Deleted,
		Detail: syncDetail(st)})
	return st
}

// syncSource is a token key a sync pass may copy, and where from.
type syncSource struct {
	ref Ref
	// from is the index in the pass's HSMs of one that holds the key.
	from int32
	// mark is 1 + the index of the last HSM found holding the key, so
	// each HSM's missing keys are found without a set of those it holds.
	mark int32
}

// copiesOf fetches the token keys of part (sorted by reference) from the
// HSMs of the pass, with their material, in the same order; keys a source
// no longer holds are left out.
func copiesOf(part []syncSource, hs []node) []*keyRecord {
	var srcs []int32
	var wants [][]Ref
	for _, src := range part {
		i := slices.Index(srcs, src.from)
		if i < 0 {
			i = len(srcs)
			srcs, wants = append(srcs, src.from), append(wants, nil)
		}
		wants[i] = append(wants[i], src.ref)
	}
	if len(srcs) == 1 {
		return hs[srcs[0]].TokenKeys(wants[0])
	}
	recs := make([]*keyRecord, 0, len(part))
	for i, from := range srcs {
		recs = append(recs, hs[from].TokenKeys(wants[i])...)
	}
	slices.SortFunc(recs, func(a, b *keyRecord) int { return cmp.Compare(a.Ref, b.Ref) })
	return recs
}

func syncDetail(st SyncStats) string {
	return fmt.Sprintf("copied %d, deleted %d, users %d, failures %d", st.Copied, st.Deleted, st.Users, st.Failed)
}

// syncQuorum brings every HSM of hs (those into accepts) the newest quorum
// settings and every live token, marking used the tokens used anywhere:
// an HSM that was down when a token was used must refuse it too. It
// returns how many writes failed.
func (e *Embedded) syncQuorum(hs []node, into func(node) bool) int {
	states := make([]*quorumState, len(hs))
	var newest quorumSettings
	var all []*tokenRecord
	for i, h := range hs {
		st, err := h.QuorumState()
		if err != nil {
			continue
		}
		states[i] = &st
		if st.Settings.Updated > newest.Updated {
			newest = st.Settings
		}
		all = mergeTokens(all, st.Tokens)
	}
	now := time.Now()
	failed := 0
	for i, h := range hs {
		if states[i] == nil || !into(h) {
			continue
		}
		if newest.Updated > states[i].Settings.Updated {
			if h.PutQuorumSettings(newest) != nil {
				failed++
			}
		}
		have := map[string]*tokenRecord{}
		for _, t := range states[i].Tokens {
			have[t.Nonce] = t
		}
		for _, t := range all {
			cur, ok := have[t.Nonce]
			switch {
			case !ok && now.Before(t.Expires):
				if h.PutToken(t) != nil {
					failed++
				}
			case ok && cur.Used.IsZero() && !t.Used.IsZero():
				if h.UseToken(t.Nonce, t.Used) != nil {
					failed++
				}
			}
		}
	}
	return failed
}
