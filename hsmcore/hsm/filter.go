package hsm

// matches says whether r is among the keys f selects.
func matches(f Filter, r *keyRecord) bool {
	if f.Ref != nil && *f.Ref != r.Ref {
		return false
	}
	if len(f.Attrs) == 0 {
		return true
	}
	for k, v := range f.Attrs {
		if got, ok := r.Attrs.Get(k); !ok || got != v {
			return false
		}
	}
	return true
}
