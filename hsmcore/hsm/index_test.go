package hsm

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"
)

// The index answers the same as a scan: every mix of label, class and
// session keys, after changes, deletions and a restart.
func TestKeyIndexMatchesAScan(t *testing.T) {
	e, err := OpenEmbedded(Options{ID: "idx", HSMs: 1, Transport: TransportDirect})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	_, cu := activate(t, e)
	ctx := context.Background()
	for i := range 6 {
		if _, err := e.GenerateKey(ctx, cu, KeySpec{Type: TypeAES, Label: fmt.Sprint("l", i%3), LengthBytes: 16, Session: i == 5}); err != nil {
			t.Fatal(err)
		}
	}
	pair, err := e.GenerateKey(ctx, cu, KeySpec{Type: TypeEC, Curve: "secp256r1", PublicLabel: "l1", PrivateLabel: "p"})
	if err != nil {
		t.Fatal(err)
	}
	// A relabelled key leaves its old label's entry; a deleted one leaves both.
	if _, err := e.SetAttribute(ctx, cu, pair[1].Ref, "label", "l2"); err != nil {
		t.Fatal(err)
	}
	if err := e.DeleteKey(ctx, cu, pair[0].Ref); err != nil {
		t.Fatal(err)
	}
	h := devices(e)[0]
	scan := func(f Filter) int {
		h.mu.RLock()
		defer h.mu.RUnlock()
		n := 0
		for _, m := range []map[Ref]*keyRecord{h.keys, h.sessionKeys} {
			for _, r := range m {
				if matches(f, r) {
					n++
				}
			}
		}
		return n
	}
	check := func(when string) {
		t.Helper()
		for _, f := range []Filter{
			{Attrs: map[string]string{"label": "l0"}},
			{Attrs: map[string]string{"label": "l1"}},
			{Attrs: map[string]string{"label": "l2"}},
			{Attrs: map[string]string{"label": "p"}},
			{Attrs: map[string]string{"class": ClassSecret}},
			{Attrs: map[string]string{"class": ClassPrivate, "label": "l2"}},
			{Attrs: map[string]string{"label": "none"}},
		} {
			recs, _, err := h.snapshotPage(f, nil, 0, 0)
			if err != nil {
				t.Fatal(err)
			}
			if want := scan(f); len(recs) != want {
				t.Errorf("%s: %v: the index finds %d keys, a scan %d", when, f.Attrs, len(recs), want)
			}
		}
	}
	check("after changes")
	h.restart() // the session key goes
	check("after a restart")
}

// BenchmarkKeyListByLabel is key list --filter attr.label=X among 100,000
// keys on each of 3 HSMs (the speed issue's target: 5 ms), beside the same
// list filtered on an attribute the index does not cover, which scans.
func BenchmarkKeyListByLabel(b *testing.B) {
	const keys = 100_000
	e, err := OpenEmbedded(Options{ID: "bench", HSMs: 3, Durability: Durability{MinimumNodes: 1}})
	if err != nil {
		b.Fatal(err)
	}
	defer e.Close()
	e.PauseSync()
	_, cu := activate(b, e)
	recs := aesRecords(keys, "cu1")
	for _, h := range devices(e) {
		for i := 0; i < keys; i += 1000 {
			if err := h.PutKeys(recs[i : i+1000]); err != nil {
				b.Fatal(err)
			}
		}
	}
	ctx := context.Background()
	for _, tt := range []struct {
		name string
		f    Filter
	}{
		{"label (index)", Filter{Attrs: map[string]string{"label": "k4242"}}},
		{"id (scan)", Filter{Attrs: map[string]string{"id": "nothing"}}},
	} {
		b.Run(tt.name, func(b *testing.B) {
			for b.Loop() {
				if _, err := e.Keys(ctx, cu, tt.f); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// A key creation cancelled while client-side sync runs says it was
// cancelled (context.Canceled, which the command layer reports as such)
// and leaves no copy behind.
func TestCancelledCreationCleansUp(t *testing.T) {
	e, err := OpenEmbedded(Options{ID: "cancel", HSMs: 3, Transport: TransportDirect, Durability: Durability{MinimumNodes: 1}})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	e.PauseSync()
	_, cu := activate(t, e)
	for _, id := range []string{"hsm-2", "hsm-3"} {
		if err := e.SetLatency(id, 300*time.Millisecond); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	_, err = e.GenerateKey(ctx, cu, KeySpec{Type: TypeAES, Label: "cancelled", LengthBytes: 16})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v, want context.Canceled", err)
	}
	for _, h := range devices(e) {
		if recs, _, _ := h.snapshotPage(Filter{Attrs: map[string]string{"label": "cancelled"}}, nil, 0, 0); len(recs) != 0 {
			t.Errorf("%s keeps the cancelled key", h.id)
		}
	}
}
