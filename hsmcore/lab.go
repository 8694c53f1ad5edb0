package hsmcore

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"time"
)

// Lab is the fault injection a teacher uses to show key-sync behaviour.
// The embedded cluster implements it; a remote cluster's HSMs are real
// processes and are failed by stopping them.
type Lab interface {
	// FailHSM stops an HSM answering; destroy also erases its store.
	FailHSM(id string, destroy bool) error
	// RecoverHSM makes it answer again (empty after a destroy).
	RecoverHSM(id string) error
	// RestartHSM wipes its volatile memory: session keys die.
	RestartHSM(id string) error
	// AddHSM grows the cluster by one empty HSM and returns its id.
	AddHSM() (string, error)
	// RemoveHSM takes an HSM out of the cluster, erasing its store.
	RemoveHSM(id string) error
	// SetLatency slows every operation on one HSM down.
	SetLatency(id string, d time.Duration) error
	// FailNextCleanup makes the next cleanup of a failed client-side sync
	// fail, leaving key material behind.
	FailNextCleanup()
	// PauseSync, ResumeSync and SyncNow fail where the lab cannot reach
	// sync (a server started without --lab).
	PauseSync() error
	ResumeSync() error
	SyncNow(ctx context.Context) (SyncStats, error)
	SyncStatus() SyncStatus
}

var _ Lab = (*Embedded)(nil)

// member returns the in-process HSM behind id: the lab's faults act on
// the HSM itself, which the client library's node does not reach.
func (e *Embedded) member(id string) (*hsm, error) {
	if n := e.hsm(id); n != nil {
		h, ok := inProcess(n)
		if !ok {
			return nil, fmt.Errorf("%s: the lab works on in-process HSMs only", id)
		}
		return h, nil
	}
	ids := ""
	for i, h := range e.members() {
		if i > 0 {
			ids += ", "
		}
		ids += h.ID()
	}
	return nil, fmt.Errorf("%w: no HSM %q in cluster %s (HSMs: %s)", ErrInvalid, id, e.id, ids)
}

func (e *Embedded) hsmDir(id string) string {
	if e.dir == "" {
		return ""
	}
	return filepath.Join(e.dir, id)
}

func (e *Embedded) storeOpener(id string) func() (store, error) {
	dir := e.hsmDir(id)
	if dir == "" {
		return nil
	}
	return func() (store, error) { return openBoltStore(dir) }
}

func (e *Embedded) FailHSM(id string, destroy bool) error {
	h, err := e.member(id)
	if err != nil {
		return err
	}
	if !h.Up() && !destroy {
		return fmt.Errorf("%s is already down", id)
	}
	labels := h.labels()
	h.mu.RLock()
	sessionKeys := metasLocked(h.sessionKeys)
	h.mu.RUnlock()
	held, err := h.fail(destroy, e.hsmDir(id))
	if err != nil {
		return err
	}
	e.events.publish(Event{Kind: EventHSMDown, HSM: id})
	// Session keys live in the HSM's volatile memory only: they die with
	// it, and no sync can bring them back.
	e.reportSessionLost(id, sessionKeys, "its HSM failed")
	if !destroy {
		return nil
	}
	e.events.publish(Event{Kind: EventHSMDestroyed, HSM: id, Count: len(held)})
	e.reportLost(id, held, labels)
	return nil
}

// reportSessionLost publishes key-lost for session keys that died with
// their HSM, and forgets where they were.
func (e *Embedded) reportSessionLost(id string, recs []*keyRecord, why string) {
	e.mu.Lock()
	for _, r := range recs {
		delete(e.sessionKeys, r.Ref)
	}
	e.mu.Unlock()
	slices.SortFunc(recs, func(a, b *keyRecord) int { return cmp.Compare(a.Ref, b.Ref) })
	for _, r := range recs {
		e.events.publish(Event{Kind: EventKeyLost, HSM: id, Ref: r.Ref.String(), Detail: "session key: " + why, Label: r.Attrs.Label})
	}
}

// reportLost publishes key-lost for each key whose only copy was on h,
// which has just been destroyed or removed.
func (e *Embedded) reportLost(id string, held []Ref, labels map[Ref]string) {
	if len(held) == 0 {
		return
	}
	lost := make(map[Ref]bool, len(held))
	for _, ref := range held {
		lost[ref] = true
	}
	for _, o := range e.members() {
		if h, ok := inProcess(o); ok && o.ID() != id {
			keys, _ := h.TokenState()
			for _, ref := range keys {
				delete(lost, ref)
			}
		}
	}
	for _, ref := range held {
		if lost[ref] {
			e.events.publish(Event{Kind: EventKeyLost, HSM: id, Ref: ref.String(), Detail: "its only copy was on " + id, Label: labels[ref]})
		}
	}
}

func (e *Embedded) RecoverHSM(id string) error {
	h, err := e.member(id)
	if err != nil {
		return err
	}
	if h.Up() {
		return fmt.Errorf("%s is not down", id)
	}
	if err := h.recover(e.storeOpener(id)); err != nil {
		return fmt.Errorf("recover %s: %w", id, err)
	}
	e.events.publish(Event{Kind: EventHSMUp, HSM: id})
	// A destroyed HSM comes back as new hardware: it joins the domain
	// through an HSM of it (or waits, while none answers); one that was
	// waiting may join through this one.
	if err := e.joinWaiting(); err != nil {
		return fmt.Errorf("recover %s: %w", id, err)
	}
	return nil
}

func (e *Embedded) RestartHSM(id string) error {
	h, err := e.member(id)
	if err != nil {
		return err
	}
	if !h.Up() {
		return fmt.Errorf("%s is down: recover it first", id)
	}
	gone := h.restart()
	e.events.publish(Event{Kind: EventHSMRestarted, HSM: id, Count: len(gone), Detail: fmt.Sprintf("%d session keys destroyed", len(gone))})
	e.reportSessionLost(id, gone, "its HSM restarted")
	return nil
}

// maxHSMs is CloudHSM's limit on HSMs in a cluster.
const maxHSMs = 28

func (e *Embedded) AddHSM() (string, error) {
	id, err := e.addHSM()
	if err != nil {
		return "", err
	}
	// New hardware joins the domain through an HSM of it, outside e.mu:
	// joining calls the HSMs.
	h, err := e.member(id)
	if err != nil {
		return id, err
	}
	if err := h.ensureDomain(); err != nil && !errors.Is(err, errNoDomainYet) {
		return id, fmt.Errorf("add %s: %w", id, err)
	}
	return id, nil
}

// addHSM makes a new empty HSM and puts it in the cluster.
func (e *Embedded) addHSM() (string, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.hsms) >= maxHSMs {
		return "", fmt.Errorf("%w: a cluster has at most %d HSMs", ErrInvalid, maxHSMs)
	}
	n := len(e.hsms) + 1
	id := ""
	for {
		id = fmt.Sprintf("hsm-%d", n)
		clash := false
		for _, h := range e.hsms {
			clash = clash || h.ID() == id
		}
		if !clash {
			break
		}
		n++
	}
	var st store
	if open := e.storeOpener(id); open != nil {
		s, err := open()
		if err != nil {
			return "", fmt.Errorf("add %s: %w", id, err)
		}
		st = s
	}
	h, err := newHSM(id, st)
	if err != nil {
		if st != nil {
			st.close()
		}
		return "", err
	}
	if first, ok := inProcess(e.hsms[0]); ok {
		h.rules = first.rules
		h.paced = first.paced
	}
	e.device(h)
	e.hsms = append(e.hsms, e.wrap(h))
	e.events.publish(Event{Kind: EventHSMAdded, HSM: id})
	return id, nil
}

func (e *Embedded) RemoveHSM(id string) error {
	h, err := e.member(id)
	if err != nil {
		return err
	}
	e.mu.Lock()
	if len(e.hsms) == 1 {
		e.mu.Unlock()
		return fmt.Errorf("%w: %s is the cluster's last HSM", ErrInvalid, id)
	}
	var gone node
	for i, x := range e.hsms {
		if x.ID() == id {
			gone = x
			e.hsms = append(e.hsms[:i:i], e.hsms[i+1:]...)
			break
		}
	}
	e.mu.Unlock()
	labels := h.labels()
	h.mu.RLock()
	sessionKeys := metasLocked(h.sessionKeys)
	h.mu.RUnlock()
	held, err := h.fail(true, e.hsmDir(id))
	if _, direct := gone.(directNode); !direct {
		gone.Close() // its connection; the store went with fail
	}
	if err != nil {
		return err
	}
	e.events.publish(Event{Kind: EventHSMRemoved, HSM: id, Count: len(held)})
	e.reportSessionLost(id, sessionKeys, "its HSM was removed")
	e.reportLost(id, held, labels)
	return nil
}

// maxLatency keeps a mistyped latency from hanging the shell.
const maxLatency = 10 * time.Second

func (e *Embedded) SetLatency(id string, d time.Duration) error {
	h, err := e.member(id)
	if err != nil {
		return err
	}
	if d < 0 || d > maxLatency {
		return fmt.Errorf("%w: latency must be 0 to %v", ErrInvalid, maxLatency)
	}
	h.latency.Store(int64(d))
	e.events.publish(Event{Kind: EventHSMLatency, HSM: id, Detail: d.String()})
	return nil
}

func (e *Embedded) FailNextCleanup() { e.failCleanup.Store(true) }

// joinWaiting has every in-process HSM that answers and belongs to no
// domain try to join it now, rather than at the next sync pass (which the
// lab may have paused).
func (e *Embedded) joinWaiting() error {
	var errs []error
	for _, n := range e.members() {
		if h, ok := inProcess(n); ok {
			if err := h.ensureDomain(); err != nil && !errors.Is(err, errNoDomainYet) {
				errs = append(errs, fmt.Errorf("%s: %w", h.id, err))
			}
		}
	}
	return errors.Join(errs...)
}
