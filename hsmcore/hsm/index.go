package hsm

import "slices"

// keyIndex finds an HSM's keys by label and by class without a scan: a
// key list filtered by label among 100,000 keys touches the few that
// match, not every record. It covers token and session keys alike, and
// is kept in step with them under the HSM's lock.
type keyIndex struct {
	byLabel map[string]map[Ref]struct{}
	byClass map[string]map[Ref]struct{}
}

func (x *keyIndex) add(r *keyRecord) {
	if x.byLabel == nil {
		x.byLabel, x.byClass = map[string]map[Ref]struct{}{}, map[string]map[Ref]struct{}{}
	}
	put := func(m map[string]map[Ref]struct{}, k string) {
		s := m[k]
		if s == nil {
			s = map[Ref]struct{}{}
			m[k] = s
		}
		s[r.Ref] = struct{}{}
	}
	put(x.byLabel, r.Attrs.Label)
	put(x.byClass, r.Attrs.Class)
}

func (x *keyIndex) remove(r *keyRecord) {
	drop := func(m map[string]map[Ref]struct{}, k string) {
		if s := m[k]; s != nil {
			delete(s, r.Ref)
			if len(s) == 0 {
				delete(m, k)
			}
		}
	}
	drop(x.byLabel, r.Attrs.Label)
	drop(x.byClass, r.Attrs.Class)
}

// candidates returns the references a filter can only match among, in
// order, and whether the index narrowed them at all (false: scan all).
func (x *keyIndex) candidates(f Filter) ([]Ref, bool) {
	var best map[Ref]struct{}
	found := false
	for name, m := range map[string]map[string]map[Ref]struct{}{"label": x.byLabel, "class": x.byClass} {
		v, ok := f.Attrs[name]
		if !ok {
			continue
		}
		s := m[v]
		if !found || len(s) < len(best) {
			best, found = s, true
		}
	}
	if !found {
		return nil, false
	}
	out := make([]Ref, 0, len(best))
	for ref := range best {
		out = append(out, ref)
	}
	slices.Sort(out)
	return out, true
}

// setKeyLocked stores r as the HSM's record for its reference, token or
// session, keeping the index in step; h.mu is held.
func (h *hsm) setKeyLocked(r *keyRecord) {
	if old, ok := h.keys[r.Ref]; ok {
		h.index.remove(old)
	} else if old, ok := h.sessionKeys[r.Ref]; ok {
		h.index.remove(old)
	}
	if r.Session != "" {
		h.sessionKeys[r.Ref] = r
	} else {
		h.keys[r.Ref] = r
	}
	h.index.add(r)
}

// dropKeyLocked forgets the HSM's record for ref, token or session; h.mu
// is held.
func (h *hsm) dropKeyLocked(ref Ref) {
	if old, ok := h.keys[ref]; ok {
		h.index.remove(old)
		delete(h.keys, ref)
	}
	if old, ok := h.sessionKeys[ref]; ok {
		h.index.remove(old)
		delete(h.sessionKeys, ref)
	}
}

// dropSessionKeysLocked forgets every session key (the HSM lost its
// volatile memory); h.mu is held.
func (h *hsm) dropSessionKeysLocked() {
	for _, r := range h.sessionKeys {
		h.index.remove(r)
	}
	h.sessionKeys = map[Ref]*keyRecord{}
}
