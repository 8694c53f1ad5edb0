package hsm

import (
	"bytes"
	"context"
	"crypto"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/hashicorp/raft"
	"github.com/hsmsh/hsmsh/hsmcore/nestedtls"
	"github.com/hsmsh/hsmsh/hsmcore/protocol"
)

var (
	soakFor  = flag.Duration("soak", 0, "run TestSoak for this long")
	soakSeed = flag.Int64("soak-seed", 1, "seed of the soak tests' workers and fault injector")
)

const (
	soakWorkers = 4
	soakHSMs    = 3
	// soakMinimum is create_object_minimum_nodes in both phases: an
	// acknowledged key is on two HSMs, and one fault at a time cannot
	// take both away.
	soakMinimum = 2
	// soakHeapLimit bounds the live heap after a phase, after runtime.GC.
	soakHeapLimit = 512 << 20
	// soakGoroutineSlack is how many more goroutines than before a phase
	// may still run once its clusters are closed.
	soakGoroutineSlack = 5
	// soakOwnKeys caps the keys a worker keeps, so the key space stays
	// bounded and heap growth over a long soak means a leak.
	soakOwnKeys = 200
)

// TestSoak runs crypto users against an embedded cluster and then a remote
// cluster of three servers on loopback, for -soak=DURATION (half each),
// while a fault injector fails, restarts and slows HSMs, pauses sync,
// stops servers and corrupts a proxied TLS stream. After each phase it
// heals the cluster and checks:
//
//	(a) every acknowledged, not-deleted token key is listed by its owner
//	    with full cluster coverage (and is on every HSM);
//	(b) no acknowledged deletion came back;
//	(c) no session key is held by two HSMs (also checked after every fault);
//	(d) the goroutines return to their count before the phase once the
//	    clusters are closed;
//	(e) the live heap after runtime.GC is below 512 MB.
//
// Errors during faults are expected and only counted, by kind. Run it as
//
//	go test -run 'TestSoak$' -v ./hsmcore -soak=60s [-soak-seed=N]
//
// (go test wants the package list before any flag it does not know; from
// inside hsmcore/, go test -run 'TestSoak$' -soak=60s -v works too).
func TestSoak(t *testing.T) {
	if *soakFor <= 0 {
		t.Skip("a soak test: run it with -soak=DURATION, e.g. go test -run 'TestSoak$' -v ./hsmcore -soak=60s")
	}
	runSoak(t, *soakFor, *soakSeed, false)
}

// TestSoakShort runs TestSoak's code for 6 s, so the soak itself is
// exercised by the normal test run.
func TestSoakShort(t *testing.T) {
	if testing.Short() {
		t.Skip("a 6 s soak: skipped under -short")
	}
	runSoak(t, 6*time.Second, *soakSeed, true)
}

// runSoak runs both phases for total, half each: the workload alone, or
// with inSetup the phase's setup too (the workload gets the rest, at least
// a second), which keeps TestSoakShort's time in bounds under -race.
func runSoak(t *testing.T, total time.Duration, seed int64, inSetup bool) {
	phases := []struct {
		name string
		run  func(t *testing.T, s *soakPhase)
	}{
		{"embedded", soakEmbedded},
		{"remote", soakRemote},
	}
	var results []*soakPhase
	for i, p := range phases {
		s := newSoakPhase(p.name, total/2, seed, i)
		s.inSetup = inSetup
		results = append(results, s)
		t.Run(p.name, func(t *testing.T) {
			defer s.report(t)
			p.run(t, s)
		})
	}
	report := soakSummary(results, total, seed)
	t.Log("\n" + report)
	fmt.Print(report)
}

// soakKind is what a key of a worker is, which decides how it is used.
type soakKind int

const (
	soakAES soakKind = iota
	soakECPrivate
	soakECPublic
)

func (k soakKind) String() string {
	return [...]string{"aes", "ec-private", "ec-public"}[k]
}

type soakKey struct {
	ref  Ref
	kind soakKind
}

// soakAck is a token key whose creation was acknowledged.
type soakAck struct {
	owner   int
	kind    soakKind
	holders []string // where it was acknowledged
}

// soakCluster is what a phase runs against: the client library, and the
// lab hooks and internals of the cluster behind it.
type soakCluster struct {
	c   *Embedded
	ids []string
	// inject applies one fault (undoing it before it returns when it takes
	// an HSM away) and names its kind.
	inject func(rng *rand.Rand) (string, error)
	// heal recovers everything, resumes sync and waits for the client to
	// see every HSM.
	heal func() error
	// syncAll runs one server-side sync pass everywhere.
	syncAll func()
	// tokenHolders lists the HSMs that hold ref as a token key.
	tokenHolders func(ref Ref) []string
	// sessionDups reports session keys held by more than one HSM.
	sessionDups func() []string
	// domain is the cluster's HSMs, for the domain-state checks.
	domain func() []*hsm
	close  func()
}

// soakPhase is one phase's bookkeeping and results.
type soakPhase struct {
	name string
	dur  time.Duration
	seed int64
	idx  int

	took             time.Duration
	opsOK, opsFailed atomic.Int64
	maxHeap          atomic.Uint64
	start            time.Time

	mu        sync.Mutex
	errs      map[string]int
	errSample map[string]string
	faults    map[string]int
	faultErrs map[string]string
	acked     map[Ref]soakAck
	deleted   map[Ref]bool // acknowledged deletions
	uncertain map[Ref]bool // deletions that failed after reaching the HSMs
	// failedButDeleted counts the uncertain deletions that took effect:
	// DeleteKey said it failed, yet after heal no HSM holds the key.
	failedButDeleted int
	sessions         int           // session keys made
	slowest          time.Duration // the longest worker step
	slowOp           string
	seenViol         map[string]bool
	viol             []string

	converge          time.Duration
	setup             time.Duration // opening the cluster and logging the users in
	teardown          time.Duration // heal, checks and close
	heapLive, heapEnd uint64
	gBefore, gAfter   int
	flips             int64
	opened            time.Time
	inSetup           bool // dur includes the setup
	ran               bool
	domain            soakDomain // the domain-state workload (soak_domain_test.go)
}

func newSoakPhase(name string, d time.Duration, seed int64, idx int) *soakPhase {
	return &soakPhase{name: name, dur: d, seed: seed, idx: idx,
		errs: map[string]int{}, errSample: map[string]string{}, faults: map[string]int{}, faultErrs: map[string]string{},
		acked: map[Ref]soakAck{}, deleted: map[Ref]bool{}, uncertain: map[Ref]bool{}, seenViol: map[string]bool{}}
}

// violation records a broken invariant once (the periodic checks find the
// same one again and again).
func (s *soakPhase) violation(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.seenViol[msg] {
		return
	}
	s.seenViol[msg] = true
	s.viol = append(s.viol, msg)
}

func (s *soakPhase) violations() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.viol...)
}

func (s *soakPhase) report(t *testing.T) {
	v := s.violations()
	for i, msg := range v {
		if i == 40 {
			t.Errorf("%s: ... and %d more invariant violations", s.name, len(v)-i)
			break
		}
		t.Errorf("%s: invariant violated: %s", s.name, msg)
	}
}

func (s *soakPhase) ok() { s.opsOK.Add(1) }

// errSoakNotListed is an acknowledged key its owner's key list lacked
// during the run (while faults are on, a transient).
var errSoakNotListed = errors.New("an acknowledged key is missing from its owner's key list")

func (s *soakPhase) fail(op string, err error) {
	s.opsFailed.Add(1)
	k := op + ": " + soakErrKind(err)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.errs[k]++
	if _, ok := s.errSample[k]; !ok {
		s.errSample[k] = soakTrunc(strings.ReplaceAll(err.Error(), "\n", " | "), 300)
	}
}

func (s *soakPhase) fault(kind string, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults[kind]++
	if err != nil {
		k := kind + " (lab call failed)"
		s.faults[k]++
		if _, ok := s.faultErrs[k]; !ok {
			s.faultErrs[k] = soakTrunc(strings.ReplaceAll(err.Error(), "\n", " | "), 300)
		}
	}
}

// soakErrKind sorts an error an operation returned.
func soakErrKind(err error) string {
	var se *SyncError
	var ne net.Error
	switch {
	case errors.Is(err, errSoakNotListed):
		return "not listed"
	case errors.As(err, &se) && se.Availability:
		return "availability"
	case errors.As(err, &se):
		return "too few HSMs"
	case errors.Is(err, ErrNoHSM):
		return "no HSM"
	case protocol.IsDown(err):
		return "HSM down"
	case errors.Is(err, ErrKeyNotFound):
		return "key not found"
	case errors.Is(err, ErrRenegotiate), errors.Is(err, ErrSessionExpired):
		return "session"
	case errors.Is(err, ErrNotLoggedIn):
		return "not logged in"
	case errors.Is(err, ErrPermission):
		return "permission"
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	}
	return "other"
}

func soakTrunc(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

// soakUsers activates the cluster and logs in one crypto user per worker.
func soakUsers(t *testing.T, e *Embedded) []Caller {
	t.Helper()
	admin, _ := activate(t, e)
	if err := soakDomainSetup(e, admin); err != nil {
		t.Fatal(err)
	}
	users := make([]Caller, soakWorkers)
	for w := range users {
		name, pw := fmt.Sprintf("soak_%d", w), fmt.Sprintf("soakpass%d", w)
		if _, err := e.CreateUser(context.Background(), admin, name, RoleCryptoUser, pw); err != nil {
			t.Fatal(err)
		}
		users[w] = mustLogin(t, e, name, RoleCryptoUser, pw)
	}
	return users
}

// soakSleep is a pause of lo to hi milliseconds.
func soakSleep(rng *rand.Rand, lo, hi int) {
	time.Sleep(time.Duration(lo+rng.IntN(hi-lo+1)) * time.Millisecond)
}

func soakEmbedded(t *testing.T, s *soakPhase) {
	ctx := context.Background()
	s.gBefore, s.opened = runtime.NumGoroutine(), time.Now()
	e, err := OpenEmbedded(Options{ID: "soak", HSMs: soakHSMs, Durability: Durability{
		MinimumNodes: soakMinimum, AvailabilityCheck: false,
		// Background sync, so that pausing and resuming it is a fault.
		ServerSyncInterval: 200 * time.Millisecond,
	}})
	if err != nil {
		t.Fatal(err)
	}
	closer := sync.OnceFunc(func() { e.Close() })
	t.Cleanup(closer)
	users := soakUsers(t, e)
	var ids []string
	for _, h := range e.HSMs(context.Background()) {
		ids = append(ids, h.ID)
	}
	cl := &soakCluster{
		c:   e,
		ids: ids,
		inject: func(rng *rand.Rand) (string, error) {
			id := ids[rng.IntN(len(ids))]
			switch p := rng.IntN(100); {
			case p < 10:
				// The raft leader fails, mid-workload.
				for _, h := range devices(e) {
					if n := h.raftNode(); n != nil && n.r.State() == raft.Leader {
						id = h.id
					}
				}
				if err := e.FailHSM(id, false); err != nil {
					return "leader kill", err
				}
				soakSleep(rng, 100, 600)
				return "leader kill", e.RecoverHSM(id)
			case p < 20:
				// A network partition: the HSM serves clients, not peers.
				device(e, id).partitioned.Store(true)
				soakSleep(rng, 200, 800)
				device(e, id).partitioned.Store(false)
				return "partition", nil
			case p < 35:
				// One HSM down at a time: it is back before the next fault.
				if err := e.FailHSM(id, false); err != nil {
					return "fail+recover", err
				}
				soakSleep(rng, 50, 400)
				return "fail+recover", e.RecoverHSM(id)
			case p < 50:
				return "restart", e.RestartHSM(id)
			case p < 65:
				if err := e.SetLatency(id, time.Duration(rng.IntN(21))*time.Millisecond); err != nil {
					return "latency", err
				}
				soakSleep(rng, 100, 400)
				return "latency", e.SetLatency(id, 0)
			case p < 82:
				e.PauseSync()
				soakSleep(rng, 100, 600)
				e.ResumeSync()
				return "pause-sync", nil
			default:
				e.SyncNow(ctx)
				return "sync-now", nil
			}
		},
		heal: func() error {
			var errs []error
			for _, h := range devices(e) {
				h.partitioned.Store(false)
				if !h.Up() {
					errs = append(errs, e.RecoverHSM(h.ID()))
				}
				errs = append(errs, e.SetLatency(h.ID(), 0))
			}
			e.ResumeSync()
			return errors.Join(errs...)
		},
		syncAll: func() { e.SyncNow(ctx) },
		domain:  func() []*hsm { return devices(e) },
		tokenHolders: func(ref Ref) []string {
			return soakTokenHolders(inProcessHSMs(e), ref)
		},
		sessionDups: func() []string { return soakSessionDups(inProcessHSMs(e)) },
		close:       closer,
	}
	s.run(t, cl, users)
}

func soakRemote(t *testing.T, s *soakPhase) {
	s.gBefore, s.opened = runtime.NumGoroutine(), time.Now()
	l := newLoopback(t, soakHSMs, 200*time.Millisecond)
	pick := rand.New(rand.NewPCG(uint64(s.seed), 2000))
	via := pick.IntN(soakHSMs) // the server the client reaches through the proxy
	proxy, err := newSoakProxy(l.addrs[via])
	if err != nil {
		t.Fatal(err)
	}
	cliTLS, err := nestedtls.LoadClient(l.files())
	if err != nil {
		proxy.Close()
		t.Fatal(err)
	}
	var servers []Peer
	for i, a := range l.addrs {
		if i == via {
			a = proxy.Addr()
		}
		servers = append(servers, Peer{ID: l.id(i), Addr: a})
	}
	r, err := OpenRemote(RemoteOptions{ID: "remote-test", Servers: servers, TLS: cliTLS,
		Durability: Durability{MinimumNodes: soakMinimum, AvailabilityCheck: false},
		// Open waits only until every server answers: the generous bound
		// is for a loaded machine, where a cluster opened before its
		// servers answer has no admin to activate.
		ConnectWait: 15 * time.Second, Timeout: 5 * time.Second})
	if err != nil {
		proxy.Close()
		t.Fatal(err)
	}
	for _, n := range r.HSMs(context.Background()) {
		if !r.Inspect().Up(n.ID) {
			r.Close()
			proxy.Close()
			t.Fatalf("setup: the client did not reach %s within 15 s: %v", n.ID, n.TLS)
		}
	}
	closer := sync.OnceFunc(func() {
		r.Close()
		proxy.Close()
		for i, srv := range l.servers {
			if srv != nil {
				srv.Shutdown()
				l.servers[i] = nil
			}
		}
	})
	t.Cleanup(closer)
	users := soakUsers(t, r.Embedded)
	ctx := context.Background()
	var ids []string
	for i := range l.servers {
		ids = append(ids, l.id(i))
	}
	// l.servers changes only in the fault injector's goroutine, and in
	// heal and the checks once it has stopped.
	locals := func() []*hsm {
		var out []*hsm
		for _, srv := range l.servers {
			if srv != nil {
				out = append(out, srv.local)
			}
		}
		return out
	}
	cl := &soakCluster{
		c:   r.Embedded,
		ids: ids,
		inject: func(rng *rand.Rand) (string, error) {
			i := rng.IntN(len(ids))
			switch p := rng.IntN(100); {
			case p < 10:
				// The raft leader's server stops, mid-workload.
				for j, srv := range l.servers {
					if n := srv.local.raftNode(); n != nil && n.r.State() == raft.Leader {
						i = j
					}
				}
				l.stop(i)
				soakSleep(rng, 100, 800)
				return "leader kill", soakStartServer(l, i)
			case p < 20:
				// A network partition between this server and its peers.
				local := l.servers[i].local
				local.partitioned.Store(true)
				soakSleep(rng, 200, 800)
				local.partitioned.Store(false)
				return "partition", nil
			case p < 35:
				// One server down at a time: it is back before the next fault.
				l.stop(i)
				soakSleep(rng, 100, 800)
				return "server stop+start", soakStartServer(l, i)
			case p < 60:
				proxy.flip()
				return "proxy byte flip", nil
			case p < 75:
				if err := r.SetLatency(ids[i], time.Duration(rng.IntN(21))*time.Millisecond); err != nil {
					return "latency", err
				}
				soakSleep(rng, 100, 400)
				return "latency", r.SetLatency(ids[i], 0)
			case p < 90:
				r.PauseSync()
				soakSleep(rng, 100, 600)
				r.ResumeSync()
				return "pause-sync", nil
			default:
				r.SyncNow(ctx)
				return "sync-now", nil
			}
		},
		heal: func() error {
			var errs []error
			for i, srv := range l.servers {
				if srv == nil {
					errs = append(errs, soakStartServer(l, i))
				}
			}
			proxy.flips.Store(0)
			for _, srv := range l.servers {
				if srv != nil {
					srv.local.partitioned.Store(false)
					srv.local.latency.Store(0)
					srv.sync.Resume()
				}
			}
			if err := errors.Join(errs...); err != nil {
				return err
			}
			// The client and every server's peer connections back up.
			deadline := time.Now().Add(20 * time.Second)
			for {
				var down []string
				for _, id := range ids {
					if !r.Inspect().Up(id) {
						down = append(down, "client→"+id)
					}
				}
				for i, srv := range l.servers {
					for _, n := range srv.peers {
						if !n.Up() {
							down = append(down, l.id(i)+"→"+n.ID())
						}
					}
				}
				if len(down) == 0 {
					return nil
				}
				if time.Now().After(deadline) {
					return fmt.Errorf("connections still down 20 s after heal: %v", down)
				}
				time.Sleep(50 * time.Millisecond)
			}
		},
		syncAll: func() {
			for _, srv := range l.servers {
				if srv != nil {
					srv.SyncNow(ctx)
				}
			}
		},
		tokenHolders: func(ref Ref) []string { return soakTokenHolders(locals(), ref) },
		sessionDups:  func() []string { return soakSessionDups(locals()) },
		domain:       locals,
		close: func() {
			closer()
			s.flips = proxy.done.Load()
		},
	}
	s.run(t, cl, users)
	if t.Failed() {
		log := l.log.String()
		t.Logf("server log, last 4000 bytes:\n%s", log[max(0, len(log)-4000):])
	}
}

// soakStartServer is loopback.start without t.Fatal: the fault injector
// runs it outside the test's goroutine.
func soakStartServer(l *loopback, i int) error {
	var ln net.Listener
	var err error
	for try := 0; try < 100; try++ { // the old port may linger for a moment
		if ln, err = net.Listen("tcp", l.addrs[i]); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		return fmt.Errorf("restart %s: %w", l.id(i), err)
	}
	srvTLS, err := nestedtls.LoadServer(l.files())
	if err != nil {
		ln.Close()
		return err
	}
	cliTLS, err := nestedtls.LoadClient(l.files())
	if err != nil {
		ln.Close()
		return err
	}
	var peers []Peer
	for j, a := range l.addrs {
		if j != i {
			peers = append(peers, Peer{ID: l.id(j), Addr: a})
		}
	}
	srv, err := NewServer(ServerOptions{Lab: true, ID: l.id(i), DataDir: l.dirs[i], TLS: srvTLS, Peers: peers, PeerTLS: cliTLS,
		SyncInterval: l.sync, Log: slog.New(slog.NewTextHandler(l.log, nil)), RPC: l.rpc})
	if err != nil {
		ln.Close()
		return fmt.Errorf("restart %s: %w", l.id(i), err)
	}
	l.servers[i] = srv
	go srv.Serve(ln)
	return nil
}

func soakTokenHolders(hs []*hsm, ref Ref) []string {
	var ids []string
	for _, h := range hs {
		h.mu.RLock()
		_, ok := h.keys[ref]
		h.mu.RUnlock()
		if ok {
			ids = append(ids, h.id)
		}
	}
	return ids
}

// soakSessionDups lists the session keys more than one HSM holds, as a
// session key or as a token key.
func soakSessionDups(hs []*hsm) []string {
	where := map[Ref][]string{}
	for _, h := range hs {
		h.mu.RLock()
		for ref := range h.sessionKeys {
			where[ref] = append(where[ref], h.id+" (session key)")
		}
		h.mu.RUnlock()
	}
	for _, h := range hs {
		h.mu.RLock()
		for ref, at := range where {
			if _, ok := h.keys[ref]; ok {
				where[ref] = append(at, h.id+" (token key)")
			}
		}
		h.mu.RUnlock()
	}
	var out []string
	for ref, at := range where {
		if len(at) > 1 {
			sort.Strings(at)
			out = append(out, fmt.Sprintf("(c) session key %s is held by %d HSMs: %s", ref, len(at), strings.Join(at, ", ")))
		}
	}
	sort.Strings(out)
	return out
}

// run is one phase: the workload under faults, then heal, the checks and
// the close.
func (s *soakPhase) run(t *testing.T, cl *soakCluster, users []Caller) {
	ctx := context.Background()
	s.ran = true
	s.setup = time.Since(s.opened)
	stop := make(chan struct{})
	var bg sync.WaitGroup
	bg.Add(2)
	go func() { // heap sampler
		defer bg.Done()
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			var m runtime.MemStats
			runtime.ReadMemStats(&m)
			for cur := s.maxHeap.Load(); m.HeapAlloc > cur && !s.maxHeap.CompareAndSwap(cur, m.HeapAlloc); cur = s.maxHeap.Load() {
			}
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	}()
	go func() { // fault injector
		defer bg.Done()
		rng := rand.New(rand.NewPCG(uint64(s.seed), uint64(1000+s.idx)))
		for {
			select {
			case <-stop:
				return
			case <-time.After(time.Duration(100+rng.IntN(301)) * time.Millisecond):
			}
			kind, err := cl.inject(rng)
			s.fault(kind, err)
			for _, v := range cl.sessionDups() {
				s.violation("%s (seen during the run, after a %s fault)", v, kind)
			}
		}
	}()
	start := time.Now()
	s.start = start
	end := start.Add(s.dur)
	if s.inSetup {
		end = start.Add(max(s.dur-s.setup, time.Second))
	}
	var wg sync.WaitGroup
	for w, cu := range users {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.worker(ctx, cl.c, w, cu, end)
		}()
	}
	wg.Add(2)
	go func() {
		defer wg.Done()
		s.domain.guesser(cl.c, cl.ids, s.seed, end)
	}()
	go func() {
		defer wg.Done()
		s.domain.registrar(cl.c, users[0], end)
	}()
	if !soakWait(&wg, time.Until(end)+60*time.Second) {
		t.Fatalf("the workers did not stop within 60 s of the phase's end (a deadlock?); goroutine stacks in %s", soakDumpStacks())
	}
	s.took = time.Since(start)
	close(stop)
	if !soakWait(&bg, 60*time.Second) {
		t.Fatalf("the fault injector did not stop within 60 s (a lab call hangs?); goroutine stacks in %s", soakDumpStacks())
	}

	// Heal, and let sync settle.
	healed := time.Now()
	defer func() { s.teardown = time.Since(healed) }()
	if !soakWithin(60*time.Second, func() {
		if err := cl.heal(); err != nil {
			t.Errorf("heal: %v", err)
		}
	}) {
		t.Fatalf("heal did not finish within 60 s; goroutine stacks in %s", soakDumpStacks())
	}
	var pending []string
	deadline := time.Now().Add(30 * time.Second)
	for {
		if !soakWithin(30*time.Second, cl.syncAll) {
			t.Fatalf("a sync pass did not finish within 30 s; goroutine stacks in %s", soakDumpStacks())
		}
		if pending = s.pending(cl); len(pending) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	s.converge = time.Since(healed)
	for _, p := range pending {
		s.violation("%s, 30 s after heal", p)
	}
	s.mu.Lock()
	for ref := range s.uncertain {
		if len(cl.tokenHolders(ref)) == 0 {
			s.failedButDeleted++
		}
	}
	s.mu.Unlock()
	s.checkLists(ctx, cl, users)
	s.domain.check(s, cl.domain())
	for _, v := range cl.sessionDups() {
		s.violation("%s (after heal)", v)
	}

	// (e) The live heap, with the cluster still open.
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	s.heapLive = m.HeapAlloc
	if s.heapLive > soakHeapLimit {
		s.violation("(e) live heap after GC is %d MB, over the %d MB bound", s.heapLive>>20, soakHeapLimit>>20)
	}

	// (d) Close, and the goroutines must go.
	if !soakWithin(60*time.Second, cl.close) {
		t.Fatalf("closing the cluster did not finish within 60 s; goroutine stacks in %s", soakDumpStacks())
	}
	// Up to 5 s for the count to come all the way back; a few more than
	// before (the runtime's, the testing package's) are let pass.
	for stop := time.Now().Add(5 * time.Second); ; {
		s.gAfter = runtime.NumGoroutine()
		if s.gAfter <= s.gBefore || time.Now().After(stop) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if s.gAfter > s.gBefore {
		var b bytes.Buffer
		pprof.Lookup("goroutine").WriteTo(&b, 1)
		if s.gAfter > s.gBefore+soakGoroutineSlack {
			s.violation("(d) %d goroutines before the phase, %d 5 s after its clusters were closed; goroutines:\n%s",
				s.gBefore, s.gAfter, soakTrunc(b.String(), 12000))
		} else {
			t.Logf("%d goroutines before the phase, %d 5 s after its clusters were closed (within the slack of %d):\n%s",
				s.gBefore, s.gAfter, soakGoroutineSlack, soakTrunc(b.String(), 6000))
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&m)
	s.heapEnd = m.HeapAlloc
}

// pending lists what sync has yet to settle: acknowledged keys not on
// every HSM, deleted keys still on one.
func (s *soakPhase) pending(cl *soakCluster) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for ref, a := range s.acked {
		if s.deleted[ref] || s.uncertain[ref] {
			continue
		}
		if h := cl.tokenHolders(ref); len(h) != len(cl.ids) {
			out = append(out, fmt.Sprintf("(a) %s key %s of soak_%d, acknowledged on %v, is on %v", a.kind, ref, a.owner, a.holders, h))
		}
	}
	for ref := range s.deleted {
		if h := cl.tokenHolders(ref); len(h) > 0 {
			a := s.acked[ref]
			out = append(out, fmt.Sprintf("(b) %s key %s of soak_%d, whose deletion was acknowledged, is back on %v", a.kind, ref, a.owner, h))
		}
	}
	sort.Strings(out)
	return out
}

// checkLists checks (a) and (b) as a user sees them: each owner's key list.
func (s *soakPhase) checkLists(ctx context.Context, cl *soakCluster, users []Caller) {
	for w, cu := range users {
		var keys []Key
		var err error
		for try := 0; try < 50; try++ {
			if keys, err = cl.c.Keys(ctx, cu, Filter{}); err == nil {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if err != nil {
			s.violation("(a) soak_%d cannot list its keys after heal: %v", w, err)
			continue
		}
		listed := make(map[Ref]Key, len(keys))
		for _, k := range keys {
			listed[k.Ref] = k
		}
		s.mu.Lock()
		for ref, a := range s.acked {
			if a.owner != w || s.uncertain[ref] {
				continue
			}
			k, ok := listed[ref]
			switch {
			case s.deleted[ref] && ok:
				s.viol = append(s.viol, fmt.Sprintf("(b) %s key %s of soak_%d: its deletion was acknowledged but its owner lists it (coverage %v)", a.kind, ref, w, k.Info.HSMCoverage))
			case s.deleted[ref]:
			case !ok:
				s.viol = append(s.viol, fmt.Sprintf("(a) %s key %s of soak_%d, acknowledged on %v, is not in its owner's key list", a.kind, ref, w, a.holders))
			case k.Info.ClusterCoverage != CoverageFull || len(k.Info.HSMCoverage) != len(cl.ids):
				s.viol = append(s.viol, fmt.Sprintf("(a) %s key %s of soak_%d is listed with coverage %s %v", a.kind, ref, w, k.Info.ClusterCoverage, k.Info.HSMCoverage))
			}
		}
		s.mu.Unlock()
	}
}

// worker is one crypto user: it makes, uses and deletes keys until end.
func (s *soakPhase) worker(ctx context.Context, c *Embedded, w int, cu Caller, end time.Time) {
	rng := rand.New(rand.NewPCG(uint64(s.seed), uint64(s.idx*100+w)))
	var mine []soakKey
	for i := 0; time.Now().Before(end); i++ {
		time.Sleep(time.Duration(rng.IntN(1000)) * time.Microsecond)
		began := time.Now()
		op := ""
		switch p := rng.IntN(100); {
		case len(mine) == 0 || p < 30 && len(mine) < soakOwnKeys:
			op = "create"
			mine = s.create(ctx, c, w, cu, rng, i, mine)
		case p < 70:
			op = "use"
			s.use(ctx, c, cu, mine[rng.IntN(len(mine))], i)
		case p < 88 || len(mine) >= soakOwnKeys:
			op = "delete"
			mine = s.delete(ctx, c, cu, rng, mine)
		default:
			op = "session key"
			s.session(ctx, c, cu, rng, i)
		}
		took := time.Since(began)
		s.mu.Lock()
		if took > s.slowest {
			s.slowest = took
			s.slowOp = fmt.Sprintf("%s by soak_%d, %.1fs into the run", op, w, began.Sub(s.start).Seconds())
		}
		s.mu.Unlock()
	}
}

func (s *soakPhase) create(ctx context.Context, c *Embedded, w int, cu Caller, rng *rand.Rand, i int, mine []soakKey) []soakKey {
	label := fmt.Sprintf("soak-%d-%d", w, i)
	spec := KeySpec{Type: TypeAES, Label: label, LengthBytes: 32}
	if rng.IntN(2) == 0 {
		spec = KeySpec{Type: TypeEC, Curve: "secp256r1", PublicLabel: label + "-pub", PrivateLabel: label}
	}
	keys, err := c.GenerateKey(ctx, cu, spec)
	if err != nil {
		s.fail("create", err)
		return mine
	}
	s.ok()
	for _, k := range keys {
		kind := soakAES
		switch k.Attrs.Class {
		case ClassPrivate:
			kind = soakECPrivate
		case ClassPublic:
			kind = soakECPublic
		}
		var holders []string
		for id, ok := range k.Info.HSMCoverage {
			if ok {
				holders = append(holders, id)
			}
		}
		sort.Strings(holders)
		if len(holders) < soakMinimum {
			s.violation("%s key %s of soak_%d acknowledged on %d HSMs %v, minimum %d", kind, k.Ref, w, len(holders), holders, soakMinimum)
		}
		if k.Session {
			s.violation("token key %s of soak_%d was made a session key", k.Ref, w)
		}
		s.mu.Lock()
		s.acked[k.Ref] = soakAck{owner: w, kind: kind, holders: holders}
		s.mu.Unlock()
		mine = append(mine, soakKey{ref: k.Ref, kind: kind})
	}
	return mine
}

func (s *soakPhase) use(ctx context.Context, c *Embedded, cu Caller, k soakKey, i int) {
	if k.kind == soakECPrivate {
		_, err := c.Sign(ctx, cu, SignRequest{Ref: k.ref, Mechanism: MechECDSA, Hash: crypto.SHA256, Data: []byte(fmt.Sprint("soak ", i))})
		if err != nil {
			s.fail("sign", err)
			return
		}
		s.ok()
		return
	}
	keys, err := c.Keys(ctx, cu, Filter{Ref: &k.ref})
	if err == nil && len(keys) != 1 {
		err = fmt.Errorf("%w: %s", errSoakNotListed, k.ref)
	}
	if err != nil {
		s.fail("list by ref", err)
		return
	}
	s.ok()
}

func (s *soakPhase) delete(ctx context.Context, c *Embedded, cu Caller, rng *rand.Rand, mine []soakKey) []soakKey {
	j := rng.IntN(len(mine))
	k := mine[j]
	err := c.DeleteKey(ctx, cu, k.ref)
	if err == nil {
		s.ok()
		s.mu.Lock()
		s.deleted[k.ref] = true
		s.mu.Unlock()
		return append(mine[:j], mine[j+1:]...)
	}
	s.fail("delete", err)
	// "delete key ...": the deletion reached the HSMs and failed there, or
	// its answers were lost; it may have been done. Any other failure came
	// before (finding the key), and the key is kept.
	if strings.HasPrefix(err.Error(), "delete key ") {
		s.mu.Lock()
		s.uncertain[k.ref] = true
		s.mu.Unlock()
		return append(mine[:j], mine[j+1:]...)
	}
	return mine
}

func (s *soakPhase) session(ctx context.Context, c *Embedded, cu Caller, rng *rand.Rand, i int) {
	ec := rng.IntN(2) == 0
	spec := KeySpec{Type: TypeAES, Label: "soak-session", LengthBytes: 16, Session: true}
	if ec {
		spec = KeySpec{Type: TypeEC, Curve: "secp256r1", PublicLabel: "soak-session-pub", PrivateLabel: "soak-session", Session: true}
	}
	keys, err := c.GenerateKey(ctx, cu, spec)
	if err != nil {
		s.fail("session create", err)
		return
	}
	s.ok()
	s.mu.Lock()
	s.sessions += len(keys)
	s.mu.Unlock()
	use := keys[0]
	for _, k := range keys {
		held := 0
		for _, ok := range k.Info.HSMCoverage {
			if ok {
				held++
			}
		}
		if !k.Session || held != 1 {
			s.violation("(c) session key %s made on %d HSMs (session %v)", k.Ref, held, k.Session)
		}
		if k.Attrs.Class == ClassPrivate {
			use = k
		}
	}
	if ec {
		_, err = c.Sign(ctx, cu, SignRequest{Ref: use.Ref, Mechanism: MechECDSA, Hash: crypto.SHA256, Data: []byte(fmt.Sprint("session ", i))})
		s.count("session sign", err)
	} else {
		ks, err := c.Keys(ctx, cu, Filter{Ref: &use.Ref})
		if err == nil && len(ks) != 1 {
			err = fmt.Errorf("%w: session key %s", errSoakNotListed, use.Ref)
		}
		s.count("session list", err)
	}
	if rng.IntN(2) == 0 {
		for _, k := range keys {
			s.count("session delete", c.DeleteKey(ctx, cu, k.Ref))
		}
	}
}

func (s *soakPhase) count(op string, err error) {
	if err != nil {
		s.fail(op, err)
		return
	}
	s.ok()
}

// soakWait waits for wg, at most d.
func soakWait(wg *sync.WaitGroup, d time.Duration) bool {
	return soakWithin(d, wg.Wait)
}

// soakWithin runs fn and says whether it returned within d.
func soakWithin(d time.Duration, fn func()) bool {
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn()
	}()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-done:
		return true
	case <-t.C:
		return false
	}
}

// soakDumpStacks writes every goroutine's stack to a file and returns
// its path.
func soakDumpStacks() string {
	buf := make([]byte, 64<<20)
	buf = buf[:runtime.Stack(buf, true)]
	path := filepath.Join(os.TempDir(), fmt.Sprintf("hsmcore-soak-stacks-%d.txt", time.Now().UnixNano()))
	if err := os.WriteFile(path, buf, 0o644); err != nil {
		return fmt.Sprintf("(not written: %v)", err)
	}
	return path
}

// soakProxy forwards TCP connections to target; flip makes it corrupt
// one byte of the stream.
type soakProxy struct {
	ln     net.Listener
	target string
	flips  atomic.Int64 // flips asked for and not yet made
	done   atomic.Int64 // flips made

	mu     sync.Mutex
	open   map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup
}

func newSoakProxy(target string) (*soakProxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &soakProxy{ln: ln, target: target, open: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.serve()
	return p, nil
}

func (p *soakProxy) Addr() string { return p.ln.Addr().String() }

// flip has the next bytes forwarded, either way, get one byte changed.
func (p *soakProxy) flip() { p.flips.Add(1) }

func (p *soakProxy) serve() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			time.Sleep(10 * time.Millisecond)
			continue
		}
		p.wg.Add(1)
		go p.handle(c)
	}
}

func (p *soakProxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		c.Close()
		return false
	}
	p.open[c] = struct{}{}
	return true
}

func (p *soakProxy) untrack(c net.Conn) {
	p.mu.Lock()
	delete(p.open, c)
	p.mu.Unlock()
	c.Close()
}

func (p *soakProxy) handle(c net.Conn) {
	defer p.wg.Done()
	if !p.track(c) {
		return
	}
	defer p.untrack(c)
	s, err := net.DialTimeout("tcp", p.target, 2*time.Second)
	if err != nil {
		return // the server is down: so is the connection
	}
	if !p.track(s) {
		return
	}
	defer p.untrack(s)
	var pipes sync.WaitGroup
	pipes.Add(2)
	go func() { defer pipes.Done(); p.pipe(s, c); s.Close(); c.Close() }()
	go func() { defer pipes.Done(); p.pipe(c, s); s.Close(); c.Close() }()
	pipes.Wait()
}

func (p *soakProxy) pipe(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if p.claimFlip() {
				buf[rand.IntN(n)] ^= byte(1 + rand.IntN(255))
				p.done.Add(1)
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (p *soakProxy) claimFlip() bool {
	for {
		v := p.flips.Load()
		if v <= 0 {
			return false
		}
		if p.flips.CompareAndSwap(v, v-1) {
			return true
		}
	}
}

func (p *soakProxy) Close() {
	p.ln.Close()
	p.mu.Lock()
	p.closed = true
	for c := range p.open {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

// soakSummary is the table of the phases' results, and their details.
func soakSummary(phases []*soakPhase, total time.Duration, seed int64) string {
	var b strings.Builder
	fmt.Fprintf(&b, "soak summary: -soak=%v -soak-seed=%d, %d workers, %d HSMs, create_object_minimum_nodes %d\n", total, seed, soakWorkers, soakHSMs, soakMinimum)
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "phase\tduration\tops ok\tops failed\tkeys acked\tkeys deleted\tfaults (total: by kind)\tmax heap MB\theap after GC MB (live/closed)\tgoroutines before/after\tinvariants")
	for _, s := range phases {
		if !s.ran {
			fmt.Fprintf(tw, "%s\tdid not run\t\t\t\t\t\t\t\t\t\n", s.name)
			continue
		}
		s.mu.Lock()
		total := 0
		injected := map[string]int{}
		for k, n := range s.faults {
			if !strings.HasSuffix(k, "(lab call failed)") {
				total += n
				injected[k] = n
			}
		}
		inv := "OK"
		if n := len(s.viol); n > 0 {
			inv = fmt.Sprintf("VIOLATED (%d)", n)
		}
		fmt.Fprintf(tw, "%s\t%.1fs\t%d\t%d\t%d\t%d\t%d: %s\t%.1f\t%.1f / %.1f\t%d / %d\t%s\n", s.name, s.took.Seconds(), s.opsOK.Load(), s.opsFailed.Load(),
			len(s.acked), len(s.deleted), total, soakCounts(injected), float64(s.maxHeap.Load())/(1<<20), float64(s.heapLive)/(1<<20), float64(s.heapEnd)/(1<<20),
			s.gBefore, s.gAfter, inv)
		s.mu.Unlock()
	}
	tw.Flush()
	for _, s := range phases {
		if !s.ran {
			continue
		}
		s.mu.Lock()
		fmt.Fprintf(&b, "\n%s: setup %.2fs, heal+checks+close %.2fs; converged %.2fs after heal; %d deletions uncertain (failed after reaching the HSMs), %d session keys made", s.name, s.setup.Seconds(), s.teardown.Seconds(), s.converge.Seconds(), len(s.uncertain), s.sessions)
		if s.name == "remote" {
			fmt.Fprintf(&b, ", %d bytes flipped by the proxy", s.flips)
		}
		fmt.Fprintf(&b, "; slowest step %v (%s)", s.slowest.Round(time.Millisecond), s.slowOp)
		fmt.Fprintf(&b, "\n  faults by kind: %s\n", soakCounts(s.faults))
		s.domain.mu.Lock()
		spent := 0
		for _, n := range s.domain.spent {
			spent += n
		}
		fmt.Fprintf(&b, "  domain state: %d wrong passwords for %s counted before the lock (limit %d), %d refused unanswered; %d registration tokens tried twice at once, %d registrations accepted\n",
			s.domain.counted.Load(), soakVictim, MaxFailedLogins, s.domain.refused.Load(), len(s.domain.spent), spent)
		s.domain.mu.Unlock()
		fmt.Fprintf(&b, "  errors by kind: %s\n", soakCounts(s.errs))
		// Errors that are hsmcore's behaviour rather than a fault's.
		if s.failedButDeleted > 0 {
			fmt.Fprintf(&b, "  NOTE: %d key deletions reported failure yet took effect (no HSM holds the key after heal)\n", s.failedButDeleted)
		}
		leaked := 0
		for k, n := range s.errs {
			if strings.HasSuffix(k, ": session") {
				leaked += n
			}
		}
		if leaked > 0 {
			fmt.Fprintf(&b, "  NOTE: %d operations failed with ErrRenegotiate/ErrSessionExpired although the client holds the password to renegotiate\n", leaked)
		}
		for _, k := range soakKeys(s.errSample) {
			fmt.Fprintf(&b, "    e.g. %s: %s\n", k, s.errSample[k])
		}
		for _, k := range soakKeys(s.faultErrs) {
			fmt.Fprintf(&b, "    e.g. %s: %s\n", k, s.faultErrs[k])
		}
		for i, v := range s.viol {
			if i == 10 {
				fmt.Fprintf(&b, "  ... %d more violations\n", len(s.viol)-i)
				break
			}
			fmt.Fprintf(&b, "  VIOLATION: %s\n", soakTrunc(v, 2000))
		}
		s.mu.Unlock()
	}
	return b.String()
}

func soakKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func soakCounts(m map[string]int) string {
	if len(m) == 0 {
		return "none"
	}
	var parts []string
	for _, k := range soakKeys(m) {
		parts = append(parts, fmt.Sprintf("%s=%d", k, m[k]))
	}
	return strings.Join(parts, ", ")
}
