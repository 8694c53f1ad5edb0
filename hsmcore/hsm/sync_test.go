package hsm

import (
	"context"
	"crypto"
	"errors"
	"strings"
	"testing"
	"time"
)

// labCluster is an in-memory cluster with server-side sync paused, so a
// test decides when sync runs.
func labCluster(t testing.TB, n int, d Durability) (*Embedded, Caller) {
	t.Helper()
	e, err := OpenEmbedded(Options{ID: "lab", HSMs: n, Durability: d})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	e.PauseSync()
	_, cu := activate(t, e)
	return e, cu
}

// inProcess returns the cluster's HSMs as the in-process HSMs they are,
// for tests that look at their internals.
func inProcessHSMs(e *Embedded) []*hsm { return devices(e) }

func coverage(t testing.TB, e *Embedded, ref Ref) []string {
	t.Helper()
	var ids []string
	for _, h := range inProcessHSMs(e) {
		h.mu.RLock()
		_, ok := h.keys[ref]
		h.mu.RUnlock()
		if ok {
			ids = append(ids, h.id)
		}
	}
	return ids
}

func TestClientSideDurability(t *testing.T) {
	tests := []struct {
		name     string
		hsms     int
		down     []string
		minNodes int
		minSrv   int
		check    bool
		want     string // error substring, "" for success
		coverage int
	}{
		{"all up", 3, nil, 1, 0, true, "", 3},
		{"one down, min 2", 3, []string{"hsm-2"}, 2, 0, true, "", 2},
		{"two down, min 1, check off", 3, []string{"hsm-2", "hsm-3"}, 1, 0, false, "", 1},
		{"two down, min 2", 3, []string{"hsm-2", "hsm-3"}, 2, 0, false, "needed 2 HSMs but succeeded on 1 (hsm-1)", 0},
		{"two down, min-srv 2 beats config 1", 3, []string{"hsm-2", "hsm-3"}, 1, 2, false, "needed 2 HSMs but succeeded on 1", 0},
		{"config 3 beats min-srv 2", 3, []string{"hsm-3"}, 3, 2, false, "needed 3 HSMs but succeeded on 2", 0},
		{"availability check on one HSM", 3, []string{"hsm-2", "hsm-3"}, 1, 0, true, "does not meet the availability requirements - The key must be available on at least 2 HSMs before being used.", 0},
		{"single-HSM cluster, check off", 1, nil, 1, 0, false, "", 1},
		{"single-HSM cluster, check on", 1, nil, 1, 0, true, "at least 2 HSMs", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, cu := labCluster(t, tt.hsms, Durability{MinimumNodes: tt.minNodes, AvailabilityCheck: tt.check})
			for _, id := range tt.down {
				if err := e.FailHSM(id, false); err != nil {
					t.Fatal(err)
				}
			}
			// Route creation to hsm-1 so the failed list is predictable.
			e.Inspect().RouteNextTo("hsm-1")
			keys, err := e.GenerateKey(context.Background(), cu, KeySpec{Type: TypeAES, Label: "k", LengthBytes: 16, MinServers: tt.minSrv})
			if tt.want != "" {
				if err == nil || !strings.Contains(err.Error(), tt.want) {
					t.Fatalf("err = %v, want %q", err, tt.want)
				}
				for _, id := range tt.down {
					if !strings.Contains(err.Error(), id+" failed: "+id+" is down") {
						t.Errorf("error does not say %s failed: %v", id, err)
					}
				}
				// Cleaned up: no HSM holds the key.
				var se *SyncError
				if errors.As(err, &se) && len(coverage(t, e, se.Refs[0])) != 0 {
					t.Errorf("copies left after cleanup: %v", coverage(t, e, se.Refs[0]))
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := len(coverage(t, e, keys[0].Ref)); got != tt.coverage {
				t.Errorf("key on %d HSMs, want %d", got, tt.coverage)
			}
		})
	}
}

func TestCleanupFailureLeavesPartialKey(t *testing.T) {
	ctx := context.Background()
	e, cu := labCluster(t, 3, Durability{MinimumNodes: 3})
	e.FailHSM("hsm-3", false)
	e.FailNextCleanup()
	_, err := e.GenerateKey(ctx, cu, KeySpec{Type: TypeAES, Label: "leftover", LengthBytes: 16})
	var se *SyncError
	if !errors.As(err, &se) || len(se.Leftover) != 2 || !strings.Contains(err.Error(), "cleanup failed, key material "+se.Refs[0].String()) {
		t.Fatalf("err = %v", err)
	}
	keys, err := e.Keys(ctx, cu, Filter{Attrs: map[string]string{"label": "leftover"}})
	if err != nil || len(keys) != 1 || keys[0].Info.ClusterCoverage != CoveragePartial {
		t.Fatalf("leftover listing: %v %+v", err, keys)
	}
	if err := e.DeleteKey(ctx, cu, keys[0].Ref); err != nil {
		t.Fatal(err)
	}
	if c := coverage(t, e, keys[0].Ref); len(c) != 0 {
		t.Errorf("after key delete the key is on %v", c)
	}
	// Only the next cleanup fails.
	_, err = e.GenerateKey(ctx, cu, KeySpec{Type: TypeAES, Label: "again", LengthBytes: 16})
	if !errors.As(err, &se) || len(se.Leftover) != 0 {
		t.Fatalf("second failure: %v", err)
	}
}

func TestServerSideSync(t *testing.T) {
	ctx := context.Background()
	e, cu := labCluster(t, 3, Durability{MinimumNodes: 1})
	e.FailHSM("hsm-3", false)
	keys, err := e.GenerateKey(ctx, cu, KeySpec{Type: TypeAES, Label: "a", LengthBytes: 16})
	if err != nil {
		t.Fatal(err)
	}
	gone, err := e.GenerateKey(ctx, cu, KeySpec{Type: TypeAES, Label: "b", LengthBytes: 16})
	if err != nil {
		t.Fatal(err)
	}
	e.RecoverHSM("hsm-3")
	// hsm-3 missed both; it has neither until sync.
	if c := coverage(t, e, keys[0].Ref); len(c) != 2 {
		t.Fatalf("before sync %v", c)
	}
	// Delete b while hsm-3 is down again... it is up now; delete b on the
	// two holders, then sync must not bring it back.
	if err := e.DeleteKey(ctx, cu, gone[0].Ref); err != nil {
		t.Fatal(err)
	}
	st, _ := e.SyncNow(ctx)
	if st.Copied != 1 || st.Deleted != 0 {
		t.Errorf("sync stats %+v", st)
	}
	if c := coverage(t, e, keys[0].Ref); len(c) != 3 {
		t.Errorf("after sync a is on %v", c)
	}
	if c := coverage(t, e, gone[0].Ref); len(c) != 0 {
		t.Errorf("deleted key came back on %v", c)
	}

	// A deletion made while an HSM is down reaches it after it recovers.
	e.FailHSM("hsm-2", false)
	if err := e.DeleteKey(ctx, cu, keys[0].Ref); err != nil {
		t.Fatal(err)
	}
	e.RecoverHSM("hsm-2")
	if c := coverage(t, e, keys[0].Ref); len(c) != 1 || c[0] != "hsm-2" {
		t.Fatalf("before sync %v", c)
	}
	if st, _ := e.SyncNow(ctx); st.Deleted != 1 || st.Copied != 0 {
		t.Errorf("sync stats %+v", st)
	}
	if c := coverage(t, e, keys[0].Ref); len(c) != 0 {
		t.Errorf("deleted key survives on %v", c)
	}
}

func TestDestroyedHSMRefilled(t *testing.T) {
	for _, dir := range []string{"", "disk"} {
		t.Run("store="+dir, func(t *testing.T) {
			ctx := context.Background()
			d := ""
			if dir != "" {
				d = t.TempDir()
			}
			e, err := OpenEmbedded(Options{ID: "lab", HSMs: 3, DataDir: d, Durability: Durability{MinimumNodes: 1, AvailabilityCheck: true}})
			if err != nil {
				t.Fatal(err)
			}
			defer e.Close()
			e.PauseSync()
			e.Activate(ctx, "adminpass")
			admin, _ := e.Login(ctx, "admin", RoleAdmin, "adminpass")
			e.CreateUser(ctx, admin, "cu1", RoleCryptoUser, "cu1pass1")
			cu, _ := e.Login(ctx, "cu1", RoleCryptoUser, "cu1pass1")
			keys, err := e.GenerateKey(ctx, cu, KeySpec{Type: TypeEC, PublicLabel: "p", PrivateLabel: "q", Curve: "secp256r1"})
			if err != nil {
				t.Fatal(err)
			}
			if err := e.FailHSM("hsm-2", true); err != nil {
				t.Fatal(err)
			}
			if err := e.RecoverHSM("hsm-2"); err != nil {
				t.Fatal(err)
			}
			if info := device(e, "hsm-2").Info(); info.Keys() != "0" {
				t.Fatal("destroyed HSM came back with keys")
			}
			st, _ := e.SyncNow(ctx)
			if st.Copied != 2 || st.Users != 0 {
				t.Errorf("sync %+v: want the 2 keys copied and no user (users come by raft)", st)
			}
			// The users come back through the raft group, from the leader.
			waitFor(t, "hsm-2 has the domain's users again", func() bool { return device(e, "hsm-2").Info().UserCount == 2 })
			// hsm-2 now serves the key on its own.
			e.FailHSM("hsm-1", false)
			e.FailHSM("hsm-3", false)
			e.SetDurability(Durability{MinimumNodes: 1})
			if _, err := e.Sign(ctx, cu, SignRequest{Ref: keys[1].Ref, Mechanism: MechECDSA, Hash: crypto.SHA256, Data: []byte("x")}); err != nil {
				t.Errorf("refilled HSM cannot sign: %v", err)
			}
		})
	}
}

func TestRoutingRetryOnMissingKey(t *testing.T) {
	ctx := context.Background()
	for _, retries := range []int{0, 1} {
		e, cu := labCluster(t, 3, Durability{MinimumNodes: 1, RetryOnMissingKey: retries})
		e.FailHSM("hsm-2", false)
		keys, err := e.GenerateKey(ctx, cu, KeySpec{Type: TypeEC, PublicLabel: "p", PrivateLabel: "q", Curve: "secp256r1"})
		if err != nil {
			t.Fatal(err)
		}
		e.RecoverHSM("hsm-2") // back, but without the key until sync
		misses := 0
		for i := 0; i < 9; i++ {
			_, err := e.Sign(ctx, cu, SignRequest{Ref: keys[1].Ref, Mechanism: MechECDSA, Hash: crypto.SHA256, Data: []byte("x")})
			if err != nil {
				if !strings.Contains(err.Error(), "key "+keys[1].Ref.String()+" not found on hsm-2") {
					t.Fatalf("unexpected error %v", err)
				}
				misses++
			}
		}
		if retries == 0 && misses != 3 {
			t.Errorf("retry 0: %d of 9 calls failed, want 3 (every third goes to hsm-2)", misses)
		}
		if retries == 1 && misses != 0 {
			t.Errorf("retry 1: %d calls failed", misses)
		}
	}
}

func TestSessionKeyDiesWithHSM(t *testing.T) {
	ctx := context.Background()
	for _, fault := range []string{"restart", "fail"} {
		e, cu := labCluster(t, 3, Durability{MinimumNodes: 1})
		keys, err := e.GenerateKey(ctx, cu, KeySpec{Type: TypeEC, PublicLabel: "p", PrivateLabel: "q", Curve: "secp256r1", Session: true})
		if err != nil {
			t.Fatal(err)
		}
		var home string
		for id, ok := range keys[1].Info.HSMCoverage {
			if ok {
				home = id
			}
		}
		e.SyncNow(ctx)
		if n := len(e.Inspect().Holders(cu, keys[1].Ref)); n != 3 {
			t.Fatalf("holders map %d", n)
		}
		held := 0
		for _, ok := range e.Inspect().Holders(cu, keys[1].Ref) {
			if ok {
				held++
			}
		}
		if held != 1 {
			t.Fatalf("sync copied a session key: on %d HSMs", held)
		}
		if fault == "restart" {
			e.RestartHSM(home)
		} else {
			e.FailHSM(home, false)
			e.RecoverHSM(home)
		}
		_, err = e.Sign(ctx, cu, SignRequest{Ref: keys[1].Ref, Mechanism: MechECDSA, Hash: crypto.SHA256, Data: []byte("x")})
		if !errors.Is(err, ErrKeyNotFound) {
			t.Errorf("%s: session key still usable: %v", fault, err)
		}
	}
}

func TestSlowSubscriberDoesNotBlock(t *testing.T) {
	e, cu := labCluster(t, 3, Durability{MinimumNodes: 1})
	_, cancel := e.Subscribe(1) // never read
	defer cancel()
	fast, cancel2 := e.Subscribe(1024)
	defer cancel2()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < 50; i++ {
			if _, err := e.GenerateKey(context.Background(), cu, KeySpec{Type: TypeAES, Label: "k", LengthBytes: 16}); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("key creation blocked on a slow subscriber")
	}
	created := 0
	for len(fast) > 0 {
		if ev := <-fast; ev.Kind == EventKeyCreated {
			created++
		}
	}
	if created != 50 {
		t.Errorf("fast subscriber saw %d key-created events, want 50", created)
	}
}

func TestSyncLoopRuns(t *testing.T) {
	ctx := context.Background()
	e, cu := labCluster(t, 2, Durability{MinimumNodes: 1, ServerSyncInterval: 20 * time.Millisecond})
	e.FailHSM("hsm-2", false)
	keys, err := e.GenerateKey(ctx, cu, KeySpec{Type: TypeAES, Label: "k", LengthBytes: 16})
	if err != nil {
		t.Fatal(err)
	}
	e.RecoverHSM("hsm-2")
	ev, cancel := e.Subscribe(64)
	defer cancel()
	e.ResumeSync()
	deadline := time.After(5 * time.Second)
	for {
		select {
		case x := <-ev:
			if x.Kind == EventKeySynced && x.Ref == keys[0].Ref.String() && x.HSM == "hsm-2" {
				return
			}
		case <-deadline:
			t.Fatal("the background sync loop never copied the key")
		}
	}
}
