package hsm

import (
	"context"
	"errors"
	"maps"
	"slices"
	"time"

	"github.com/hsmsh/hsmsh/hsmcore/protocol"
)

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
	if err := h.callPeer(p, protocol.CallTokenState, nil, &ts); err != nil {
		if !protocol.IsDown(err) {
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

	// Users: the newest version of each, and deletions newer than a record.
	var us userState
	if err := h.callPeer(p, protocol.CallUserState, nil, &us); err == nil && us.Up {
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
	} else if err != nil && !protocol.IsDown(err) {
		st.Failed++
	}

	// mTLS: the newest settings (a bare call: anchors are certificates).
	var ms protocol.MTLSState
	if err := p.Call(protocol.CallMTLSState, nil, &ms); err == nil {
		if err := h.putMTLS(ms); err != nil {
			st.Failed++
		}
	}

	// Quorum: the newest settings; every live token, used if used there.
	var qs quorumState
	if err := h.callPeer(p, protocol.CallQuorumState, nil, &qs); err == nil {
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
	} else if !protocol.IsDown(err) {
		st.Failed++
	}
}
