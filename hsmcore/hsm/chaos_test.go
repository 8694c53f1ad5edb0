package hsm

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"
)

// TestRandomizedDurability runs crypto users that create, use and delete
// keys while a fault injector fails, restarts and destroys HSMs and sync
// runs, then checks the durability invariants:
//   - every acknowledged token key is still present, unless every HSM that
//     held it when it was acknowledged was destroyed afterwards;
//   - no deleted key reappears;
//   - no session key is ever on two HSMs.
//
// The seeds are fixed, so each run draws the same operations; goroutine
// scheduling still interleaves them differently, which is the point.
func TestRandomizedDurability(t *testing.T) {
	for _, seed := range []uint64{1, 2, 3} {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) { chaosRun(t, seed) })
	}
}

type ackedKey struct {
	ref     Ref
	holders []string
	at      time.Time // when its creation began
	minimum int
}

func chaosRun(t *testing.T, seed uint64) {
	ctx := context.Background()
	const hsms, workers, opsPerWorker = 4, 4, 60
	e, err := OpenEmbedded(Options{ID: "chaos", HSMs: hsms, Durability: Durability{MinimumNodes: 1, RetryOnMissingKey: 1, ServerSyncInterval: 150 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	events, cancel := e.Subscribe(1 << 20)
	defer cancel()
	e.Activate(ctx, "adminpass")
	admin, _ := e.Login(ctx, "admin", RoleAdmin, "adminpass")

	var mu sync.Mutex
	var acked []ackedKey
	deleted := map[Ref]bool{}
	sessionRefs := map[Ref]bool{}

	checkSessionKeys := func() {
		mu.Lock()
		refs := make([]Ref, 0, len(sessionRefs))
		for r := range sessionRefs {
			refs = append(refs, r)
		}
		mu.Unlock()
		for _, r := range refs {
			n := 0
			for _, h := range inProcessHSMs(e) {
				h.mu.RLock()
				_, ok := h.sessionKeys[r]
				_, tok := h.keys[r]
				h.mu.RUnlock()
				if ok || tok {
					n++
				}
			}
			if n > 1 {
				t.Errorf("session key %s is on %d HSMs", r, n)
			}
		}
	}

	callers := make([]Caller, workers)
	for w := range callers {
		name := fmt.Sprintf("cu%d", w)
		if _, err := e.CreateUser(ctx, admin, name, RoleCryptoUser, "password"+name); err != nil {
			t.Fatal(err)
		}
		c, err := e.Login(ctx, name, RoleCryptoUser, "password"+name)
		if err != nil {
			t.Fatal(err)
		}
		callers[w] = c
	}
	stop := make(chan struct{})
	var faults sync.WaitGroup
	faults.Add(1)
	go func() {
		defer faults.Done()
		rng := rand.New(rand.NewPCG(seed, 99))
		for {
			select {
			case <-stop:
				return
			case <-time.After(time.Duration(2+rng.IntN(4)) * time.Millisecond):
			}
			id := fmt.Sprintf("hsm-%d", 1+rng.IntN(hsms))
			switch rng.IntN(7) {
			case 0:
				e.FailHSM(id, false)
			case 1, 6:
				e.FailHSM(id, rng.IntN(2) == 0)
			case 2, 3:
				e.RecoverHSM(id)
			case 4:
				e.RestartHSM(id)
			case 5:
				e.SyncNow(ctx)
			}
			checkSessionKeys()
		}
	}()

	var wg sync.WaitGroup
	for w, c := range callers {
		wg.Add(1)
		go func(w int, c Caller) {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(seed, uint64(w)))
			var mine []Ref
			for i := 0; i < opsPerWorker; i++ {
				// Pace the workers so faults land between their operations.
				time.Sleep(time.Duration(rng.IntN(4)) * time.Millisecond)
				switch op := rng.IntN(10); {
				case op < 5: // token key
					minimum := 1 + rng.IntN(2)
					start := time.Now()
					keys, err := e.GenerateKey(ctx, c, KeySpec{Type: TypeAES, Label: fmt.Sprintf("w%d-%d", w, i), LengthBytes: 16, MinServers: minimum})
					if err != nil {
						continue // too few HSMs up: not acknowledged
					}
					var holders []string
					for id, ok := range keys[0].Info.HSMCoverage {
						if ok {
							holders = append(holders, id)
						}
					}
					if len(holders) < minimum {
						t.Errorf("key %s acknowledged on %d HSMs with minimum %d", keys[0].Ref, len(holders), minimum)
					}
					mu.Lock()
					acked = append(acked, ackedKey{ref: keys[0].Ref, holders: holders, at: start, minimum: minimum})
					mu.Unlock()
					mine = append(mine, keys[0].Ref)
				case op < 6: // session key
					keys, err := e.GenerateKey(ctx, c, KeySpec{Type: TypeEC, PublicLabel: "sp", PrivateLabel: "sq", Curve: "secp256r1", Session: true})
					if err == nil {
						mu.Lock()
						sessionRefs[keys[0].Ref], sessionRefs[keys[1].Ref] = true, true
						mu.Unlock()
					}
				case op < 8 && len(mine) > 0: // use
					ref := mine[rng.IntN(len(mine))]
					e.SetAttribute(ctx, c, ref, "label", fmt.Sprintf("used-%d", i))
				case len(mine) > 0: // delete
					j := rng.IntN(len(mine))
					ref := mine[j]
					if err := e.DeleteKey(ctx, c, ref); err == nil {
						mu.Lock()
						deleted[ref] = true
						mu.Unlock()
						mine = append(mine[:j], mine[j+1:]...)
					}
				}
			}
		}(w, c)
	}
	wg.Wait()
	close(stop)
	faults.Wait()

	// Bring every HSM back and let sync settle.
	for _, h := range devices(e) {
		if !h.Up() {
			e.RecoverHSM(h.ID())
		}
	}
	e.SyncNow(ctx)
	e.SyncNow(ctx)
	checkSessionKeys()
	cancel()

	destroyedAt := map[string][]time.Time{}
	for ev := range events {
		if ev.Kind == EventHSMDestroyed {
			destroyedAt[ev.HSM] = append(destroyedAt[ev.HSM], ev.Time)
		}
	}
	if d := e.Inspect().DroppedEvents(); d != 0 {
		t.Fatalf("%d events dropped; the check needs them all", d)
	}
	present := func(r Ref) int {
		n := 0
		for _, h := range inProcessHSMs(e) {
			h.mu.RLock()
			_, ok := h.keys[r]
			h.mu.RUnlock()
			if ok {
				n++
			}
		}
		return n
	}
	lost, kept := 0, 0
	for _, k := range acked {
		n := present(k.ref)
		if deleted[k.ref] {
			if n != 0 {
				t.Errorf("deleted key %s reappeared on %d HSMs", k.ref, n)
			}
			continue
		}
		if n > 0 {
			kept++
			continue
		}
		// Missing: every HSM that held it at acknowledgement must have been
		// destroyed since, or the loss is a bug.
		for _, id := range k.holders {
			explained := false
			for _, at := range destroyedAt[id] {
				if at.After(k.at) {
					explained = true
				}
			}
			if !explained {
				t.Errorf("key %s (minimum %d, held by %v) is lost but %s was never destroyed after it was made", k.ref, k.minimum, k.holders, id)
			}
		}
		lost++
	}
	t.Logf("seed %d: %d keys acknowledged, %d kept, %d lost to destroyed HSMs, %d deleted", seed, len(acked), kept, lost, len(deleted))
	if len(acked) == 0 {
		t.Fatal("no key was acknowledged: the run tested nothing")
	}
}
