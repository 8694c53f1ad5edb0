package client

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/hsmsh/hsmsh/hsmcore/protocol"
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
	// PartitionHSM cuts an HSM off from the others (a network partition:
	// clients still reach it), or joins it back.
	PartitionHSM(id string, cut bool) error
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
func (e *Embedded) member(id string) (Device, error) {
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

func (e *Embedded) FailHSM(id string, destroy bool) error {
	h, err := e.member(id)
	if err != nil {
		return err
	}
	if !h.Up() && !destroy {
		return fmt.Errorf("%s is already down", id)
	}
	sessionKeys, held, err := h.Fail(destroy)
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
	e.reportLost(id, held)
	return nil
}

// reportSessionLost publishes key-lost for session keys that died with
// their HSM, and forgets where they were.
func (e *Embedded) reportSessionLost(id string, recs []protocol.KeyMeta, why string) {
	e.mu.Lock()
	for _, r := range recs {
		delete(e.sessionKeys, r.Ref)
	}
	e.mu.Unlock()
	slices.SortFunc(recs, func(a, b protocol.KeyMeta) int { return cmp.Compare(a.Ref, b.Ref) })
	for _, r := range recs {
		e.events.publish(Event{Kind: EventKeyLost, HSM: id, Ref: r.Ref.String(), Detail: "session key: " + why, Label: r.Attrs.Label})
	}
}

// reportLost publishes key-lost for each key whose only copy was on h,
// which has just been destroyed or removed.
func (e *Embedded) reportLost(id string, held []protocol.KeyMeta) {
	if len(held) == 0 {
		return
	}
	lost := make(map[Ref]bool, len(held))
	for _, k := range held {
		lost[k.Ref] = true
	}
	for _, o := range e.members() {
		if h, ok := inProcess(o); ok && o.ID() != id {
			for _, ref := range h.TokenRefs() {
				delete(lost, ref)
			}
		}
	}
	for _, k := range held {
		if lost[k.Ref] {
			e.events.publish(Event{Kind: EventKeyLost, HSM: id, Ref: k.Ref.String(), Detail: "its only copy was on " + id, Label: k.Attrs.Label})
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
	if err := h.Recover(); err != nil {
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
	gone := h.Restart()
	e.events.publish(Event{Kind: EventHSMRestarted, HSM: id, Count: len(gone), Detail: fmt.Sprintf("%d session keys destroyed", len(gone))})
	e.reportSessionLost(id, gone, "its HSM restarted")
	return nil
}

// maxHSMs is CloudHSM's limit on HSMs in a cluster.
const maxHSMs = 28

func (e *Embedded) AddHSM() (string, error) {
	if e.rack == nil {
		return "", fmt.Errorf("%w: this cluster's HSMs are not in this process", ErrInvalid)
	}
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
	if err := h.EnsureDomain(); err != nil {
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
	h, err := e.rack.Add(id, true)
	if err != nil {
		return "", fmt.Errorf("add %s: %w", id, err)
	}
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
	e.mu.Unlock()
	// It leaves the domain first (a committed change to the members,
	// which needs a majority); then it is taken out.
	if err := e.rack.Remove(id); err != nil {
		return fmt.Errorf("remove %s: %w", id, err)
	}
	e.mu.Lock()
	var gone node
	for i, x := range e.hsms {
		if x.ID() == id {
			gone = x
			e.hsms = append(e.hsms[:i:i], e.hsms[i+1:]...)
			break
		}
	}
	e.mu.Unlock()
	sessionKeys, held, err := h.Fail(true)
	if _, direct := gone.(directNode); !direct {
		gone.Close() // its connection; the store went with Fail
	}
	if err != nil {
		return err
	}
	e.events.publish(Event{Kind: EventHSMRemoved, HSM: id, Count: len(held)})
	e.reportSessionLost(id, sessionKeys, "its HSM was removed")
	e.reportLost(id, held)
	return nil
}

func (e *Embedded) SetLatency(id string, d time.Duration) error {
	h, err := e.member(id)
	if err != nil {
		return err
	}
	if err := h.SetLatency(d); err != nil {
		return err
	}
	e.events.publish(Event{Kind: EventHSMLatency, HSM: id, Detail: d.String()})
	return nil
}

func (e *Embedded) PartitionHSM(id string, cut bool) error {
	h, err := e.member(id)
	if err != nil {
		return err
	}
	h.SetPartitioned(cut)
	detail := "joined back to its peers"
	if cut {
		detail = "cut off from its peers: clients still reach it"
	}
	e.events.publish(Event{Kind: EventHSMPartition, HSM: id, Detail: detail})
	return nil
}

func (e *Embedded) FailNextCleanup() { e.failCleanup.Store(true) }

// joinWaiting has every in-process HSM that answers and belongs to no
// domain try to join it now (or form it), rather than at the next sync
// pass (which the lab may have paused).
func (e *Embedded) joinWaiting() error {
	var errs []error
	for _, n := range e.members() {
		if h, ok := inProcess(n); ok {
			if err := h.EnsureDomain(); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}
