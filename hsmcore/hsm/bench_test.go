package hsm

import (
	"context"
	"crypto"
	"fmt"
	"runtime"
	"testing"

	"github.com/hsmsh/hsmsh/hsmcore/profile"
	"github.com/hsmsh/hsmsh/hsmcore/protocol"
)

// BenchmarkTokenKeyCreation measures durable token-key creation replicated
// to 3 HSMs with their stores on disk (every acknowledgement follows an
// fsync on each HSM), at 1 and 8 concurrent callers.
func BenchmarkTokenKeyCreation(b *testing.B) {
	for _, conc := range []int{1, 8} {
		b.Run(fmt.Sprintf("disk/hsms=3/concurrency=%d", conc), func(b *testing.B) {
			e, err := OpenEmbedded(Options{ID: "bench", HSMs: 3, DataDir: b.TempDir(), Durability: Durability{MinimumNodes: 1, AvailabilityCheck: true}})
			if err != nil {
				b.Fatal(err)
			}
			defer e.Close()
			e.PauseSync()
			ctx := context.Background()
			e.Activate(ctx, "adminpass")
			admin, _ := e.Login(ctx, "admin", RoleAdmin, "adminpass")
			e.CreateUser(ctx, admin, "cu1", RoleCryptoUser, "cu1pass1")
			cu, _ := e.Login(ctx, "cu1", RoleCryptoUser, "cu1pass1")
			b.SetParallelism(conc)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := e.GenerateKey(ctx, cu, KeySpec{Type: TypeAES, Label: "bench", LengthBytes: 32}); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "keys/s")
		})
	}
}

// BenchmarkSyncFill measures one server-side sync pass filling an empty
// (destroyed and recovered) HSM with 100,000 token keys on disk.
func BenchmarkSyncFill(b *testing.B) {
	const keys = 100_000
	e, err := OpenEmbedded(Options{ID: "bench", HSMs: 3, DataDir: b.TempDir(), Durability: Durability{MinimumNodes: 1}})
	if err != nil {
		b.Fatal(err)
	}
	defer e.Close()
	e.PauseSync()
	// Load the two other HSMs directly, in batches: this benchmark is about
	// sync, not about creating keys.
	recs := aesRecords(keys, "cu1")
	for _, h := range devices(e)[:2] {
		for i := 0; i < keys; i += 1000 {
			if err := h.PutKeys(recs[i : i+1000]); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		e.FailHSM("hsm-3", true)
		e.RecoverHSM("hsm-3")
		b.StartTimer()
		st, _ := e.SyncNow(context.Background())
		if st.Copied != keys {
			b.Fatalf("copied %d keys, want %d", st.Copied, keys)
		}
	}
	b.ReportMetric(b.Elapsed().Seconds()/float64(b.N), "s/fill")
}

// BenchmarkEnvelope measures what a session envelope adds to one command
// on an in-process HSM (no transport): the same call made bare and sealed
// (seal under SK, the EKT checked, the replay window, the HSM's access
// check, the answer sealed and opened). "has" is a command with next to
// no work of its own, so its difference is the envelope's overhead;
// "sign" puts that beside an ECDSA P-256 signature.
func BenchmarkEnvelope(b *testing.B) {
	e, err := OpenEmbedded(Options{ID: "bench", HSMs: 1, Transport: TransportDirect})
	if err != nil {
		b.Fatal(err)
	}
	defer e.Close()
	ctx := context.Background()
	e.Activate(ctx, "adminpass")
	admin, _ := e.Login(ctx, "admin", RoleAdmin, "adminpass")
	e.CreateUser(ctx, admin, "cu1", RoleCryptoUser, "cu1pass1")
	cu, _ := e.Login(ctx, "cu1", RoleCryptoUser, "cu1pass1")
	keys, err := e.GenerateKey(ctx, cu, KeySpec{Type: TypeEC, Curve: "secp256r1", PublicLabel: "p", PrivateLabel: "k"})
	if err != nil {
		b.Fatal(err)
	}
	ref := keys[1].Ref
	if keys[1].Attrs.Class != ClassPrivate {
		ref = keys[0].Ref
	}
	// "inside" calls the HSM's own methods, as the device does behind its
	// door; "envelope" is the same call as a session makes it.
	inside := devices(e)[0]
	req := SignRequest{Ref: ref, Mechanism: MechECDSA, Hash: crypto.SHA256, Data: []byte("benchmark message")}
	for _, tt := range []struct {
		name string
		has  func() bool
		sign func() error
	}{
		{"inside", func() bool { return inside.Has(ref) }, func() error { _, err := inside.Sign(req); return err }},
		{"client", func() bool { return true }, func() error { _, err := e.Sign(ctx, cu, req); return err }},
	} {
		b.Run("has/"+tt.name, func(b *testing.B) {
			for b.Loop() {
				if !tt.has() {
					b.Fatal("key missing")
				}
			}
		})
		b.Run("sign/"+tt.name, func(b *testing.B) {
			for b.Loop() {
				if err := tt.sign(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestPacerSlots checks the pacer's schedule without timing anything:
// callers arriving together get slots one interval apart, and a caller
// after an idle spell starts at once.
// BenchmarkProfile measures ECDSA P-256 sign on clusters of 2, 3 and 6
// HSMs under each profile; AWS's published figures are the baseline
// (hsm1.medium 500/750/1,500 ops/s, hsm2m.medium 3,000/4,500/7,000).
func BenchmarkProfile(b *testing.B) {
	for _, profile := range []string{profile.HSM1Medium, profile.HSM2mMedium} {
		for _, n := range []int{2, 3, 6} {
			b.Run(fmt.Sprintf("%s/hsms=%d", profile, n), func(b *testing.B) {
				e, err := OpenEmbedded(Options{ID: "bench", HSMs: n, Profile: profile, Transport: TransportDirect, Durability: Durability{MinimumNodes: n}})
				if err != nil {
					b.Fatal(err)
				}
				defer e.Close()
				e.PauseSync()
				ctx := context.Background()
				_, cu := activate(b, e)
				keys, err := e.GenerateKey(ctx, cu, KeySpec{Type: TypeEC, Curve: "secp256r1", PublicLabel: "b", PrivateLabel: "b"})
				if err != nil {
					b.Fatal(err)
				}
				req := SignRequest{Ref: keys[1].Ref, Mechanism: MechECDSA, Hash: crypto.SHA256, Data: make([]byte, 64)}
				signParallel(b, 4*n, func() error {
					_, err := e.Sign(ctx, cu, req)
					return err
				})
			})
		}
	}
}

// BenchmarkKeyList100k measures key list of one key (a filter on its
// label) among 100,000 token keys on each of 3 HSMs, on the embedded
// default (nested TLS on pipes, sessions and envelopes), and reports the
// heap the cluster holds with them (after a GC).
func BenchmarkKeyList100k(b *testing.B) {
	const keys = 100_000
	e, err := OpenEmbedded(Options{ID: "bench", HSMs: 3})
	if err != nil {
		b.Fatal(err)
	}
	defer e.Close()
	e.PauseSync()
	_, cu := activate(b, e)
	recs := aesRecords(keys, "cu1")
	for _, h := range inProcessHSMs(e) {
		for i := 0; i < keys; i += 5000 {
			if err := h.PutKeys(recs[i : i+5000]); err != nil {
				b.Fatal(err)
			}
		}
	}
	recs = nil
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	ctx := context.Background()
	f := Filter{Attrs: map[string]string{"label": "k54321"}}
	b.ResetTimer()
	for b.Loop() {
		got, err := e.Keys(ctx, cu, f)
		if err != nil || len(got) != 1 || got[0].Info.ClusterCoverage != CoverageFull {
			b.Fatalf("key list: %v, %d keys", err, len(got))
		}
	}
	b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/list")
	b.ReportMetric(float64(ms.HeapInuse)/(1<<20), "heap-MB")
}

// aesRecords makes n AES-256 token key records owned by owner, labelled
// k0, k1, …, to load HSMs directly: tests about listing and sync, not
// about creating keys.
func aesRecords(n int, owner string) []*keyRecord {
	recs := make([]*keyRecord, 0, n)
	for i := range n {
		r, err := generate(KeySpec{Type: TypeAES, Label: fmt.Sprint("k", i), LengthBytes: 32})
		if err != nil {
			panic(err)
		}
		r[0].Ref, r[0].Owner = protocol.NewRef(), owner
		recs = append(recs, r[0])
	}
	return recs
}
