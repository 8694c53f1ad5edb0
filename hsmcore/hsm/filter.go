package hsm

// matches says whether r is among the keys f selects.
func matches(f Filter, r *keyRecord) bool { return f.MatchesKey(r.Ref, &r.Attrs) }
