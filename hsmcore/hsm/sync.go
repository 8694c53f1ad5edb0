package hsm

import (
	"context"
	"errors"
	"slices"

	"github.com/hsmsh/hsmsh/hsmcore/protocol"
)

// syncPass is one server-side sync pass of this HSM: it pulls from each
// other HSM of the domain that answers the deletions it has not seen (a
// key deleted anywhere is deleted everywhere, so it never comes back) and
// the token keys it lacks (wrapped, and unwrapped here). Session keys are
// never copied. Keys only: the domain state (users, quorum, members)
// never goes this best-effort way; it is raft's (raft.go). An HSM that is
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
	var ts tokenState
	if err := h.callPeer(p, protocol.CallTokenState, nil, &ts); err != nil {
		if !protocol.IsDown(err) {
			st.Failed++
		}
		return
	}
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
		var ws []*protocol.WrappedKey
		if err := h.callPeer(p, protocol.CallTokenKeys, missing[i:min(i+chunk, len(missing))], &ws); err != nil {
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

}
