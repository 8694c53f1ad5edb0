package hsm

import "github.com/hsmsh/hsmsh/hsmcore/protocol"

// metaOf is a key record as it crosses the wire to a client: never its
// material.
func metaOf(r *keyRecord) protocol.KeyMeta {
	return protocol.KeyMeta{Ref: r.Ref, Attrs: r.Attrs, Owner: r.Owner, Shared: r.Shared,
		UseQuorum: r.UseQuorum, ManageQuorum: r.ManageQuorum, Created: r.Created, Session: r.Session}
}

func metasOf(recs []*keyRecord) []protocol.KeyMeta {
	out := make([]protocol.KeyMeta, len(recs))
	for i, r := range recs {
		out[i] = metaOf(r)
	}
	return out
}

// wireKey is a key record with its material, only ever inside a
// WrappedKey's sealed body.
type wireKey struct {
	keyRecord
	Session  string `json:"session,omitempty"`
	Material []byte `json:"material,omitempty"`
}

func (w *wireKey) record() *keyRecord {
	r := w.keyRecord
	r.Session, r.Material = w.Session, w.Material
	return &r
}

func toWire(r *keyRecord) wireKey {
	return wireKey{keyRecord: *r, Session: r.Session, Material: r.Material}
}

// recordOf is a key's metadata as a peer sent it, with no material.
func recordOf(m protocol.KeyMeta) *keyRecord {
	return &keyRecord{Ref: m.Ref, Attrs: m.Attrs, Owner: m.Owner, Shared: m.Shared,
		UseQuorum: m.UseQuorum, ManageQuorum: m.ManageQuorum, Created: m.Created, Session: m.Session}
}
