package hsm

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hsmsh/hsmsh/internal/syncbuf"

	"github.com/hsmsh/hsmsh/hsmcore/nestedtls"
	"github.com/hsmsh/hsmsh/hsmcore/pki"
	"github.com/hsmsh/hsmsh/hsmcore/rpc"
	"github.com/hsmsh/hsmsh/hsmcore/wire"
)

// syncBuffer is a log sink the servers' goroutines may write concurrently.
type syncBuffer = syncbuf.Buffer

// loopback is a remote cluster of HSM servers on 127.0.0.1, each with its
// own data dir, sharing one PKI.
type loopback struct {
	t       testing.TB
	pkiDir  string
	addrs   []string
	dirs    []string
	servers []*Server
	log     *syncBuffer
	sync    time.Duration
	rpc     rpc.ServerOptions
	restore []byte // a backup every server starts from (password "backuppass")
}

func newLoopback(t testing.TB, n int, syncEvery time.Duration, opts ...rpc.ServerOptions) *loopback {
	t.Helper()
	var o rpc.ServerOptions
	if len(opts) > 0 {
		o = opts[0]
	}
	return newLoopbackWith(t, n, syncEvery, o, nil)
}

// newLoopbackWith is newLoopback with every server restored from backup.
func newLoopbackWith(t testing.TB, n int, syncEvery time.Duration, o rpc.ServerOptions, backup []byte) *loopback {
	t.Helper()
	l := &loopback{t: t, pkiDir: t.TempDir(), log: &syncBuffer{}, sync: syncEvery, rpc: o, restore: backup}
	if _, err := pki.Init(pki.Options{Dir: l.pkiDir, ClusterID: "remote-test"}); err != nil {
		t.Fatal(err)
	}
	lns := make([]net.Listener, n)
	for i := range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns[i] = ln
		l.addrs = append(l.addrs, ln.Addr().String())
		l.dirs = append(l.dirs, t.TempDir())
	}
	l.servers = make([]*Server, n)
	for i := range n {
		l.start(i, lns[i])
	}
	t.Cleanup(func() {
		for _, s := range l.servers {
			if s != nil {
				s.Shutdown()
			}
		}
	})
	return l
}

func (l *loopback) files() nestedtls.Files { return PKIFiles(l.pkiDir, "remote-test") }

func (l *loopback) id(i int) string { return fmt.Sprintf("hsm-%d", i+1) }

// start runs server i on ln (nil: listen again on its old address).
func (l *loopback) start(i int, ln net.Listener) {
	t := l.t
	t.Helper()
	if ln == nil {
		var err error
		for try := 0; ; try++ { // the old port may linger for a moment
			ln, err = net.Listen("tcp", l.addrs[i])
			if err == nil || try == 50 {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	srvTLS, err := nestedtls.LoadServer(l.files())
	if err != nil {
		t.Fatal(err)
	}
	cliTLS, err := nestedtls.LoadClient(l.files())
	if err != nil {
		t.Fatal(err)
	}
	var peers []Peer
	for j, a := range l.addrs {
		if j != i {
			peers = append(peers, Peer{ID: l.id(j), Addr: a})
		}
	}
	s, err := NewServer(ServerOptions{Lab: true, ID: l.id(i), DataDir: l.dirs[i], TLS: srvTLS, Peers: peers, PeerTLS: cliTLS,
		SyncInterval: l.sync, Log: slog.New(slog.NewTextHandler(l.log, nil)), RPC: l.rpc,
		Restore: l.restore, RestorePassword: "backuppass"})
	if err != nil {
		t.Fatal(err)
	}
	l.servers[i] = s
	go s.Serve(ln)
}

func (l *loopback) stop(i int) {
	l.servers[i].Shutdown()
	l.servers[i] = nil
}

func (l *loopback) client(d Durability) *Remote {
	l.t.Helper()
	return l.clientWith(d, nil)
}

// clientWith is client with its TLS settings changed by set (nil: none).
func (l *loopback) clientWith(d Durability, set func(*nestedtls.ClientConfig)) *Remote {
	t := l.t
	t.Helper()
	cliTLS, err := nestedtls.LoadClient(l.files())
	if err != nil {
		t.Fatal(err)
	}
	if set != nil {
		set(&cliTLS)
	}
	var servers []Peer
	for i, a := range l.addrs {
		servers = append(servers, Peer{ID: l.id(i), Addr: a})
	}
	r, err := OpenRemote(RemoteOptions{ID: "remote-test", Servers: servers, TLS: cliTLS, Durability: d, ConnectWait: 2 * time.Second, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// waitFor polls cond until it holds or 10 s pass.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestRemoteClusterEndToEnd(t *testing.T) {
	l := newLoopback(t, 3, time.Hour)
	r := l.client(Durability{MinimumNodes: 3, AvailabilityCheck: true, RetryOnMissingKey: 2})
	ctx := context.Background()
	_, cu := activate(t, r.Embedded)

	keys, err := r.GenerateKey(ctx, cu, KeySpec{Type: TypeEC, Curve: "secp256r1", PublicLabel: "remote-ec", PrivateLabel: "remote-ec"})
	if err != nil {
		t.Fatal(err)
	}
	priv := keys[1]
	if priv.Attrs.Class != ClassPrivate {
		t.Fatalf("keys %+v: want public, private", keys)
	}
	if priv.Info.ClusterCoverage != CoverageFull || len(priv.Info.HSMCoverage) != 3 {
		t.Fatalf("coverage %+v", priv.Info)
	}
	for id, has := range priv.Info.HSMCoverage {
		if !has {
			t.Errorf("%s lacks the new key", id)
		}
	}
	// Signing spreads over the servers; every signature verifies.
	for i := range 6 {
		req := SignRequest{Ref: priv.Ref, Mechanism: MechECDSA, Hash: crypto.SHA256, Data: []byte(fmt.Sprint("msg ", i))}
		sig, err := r.Sign(ctx, cu, req)
		if err != nil {
			t.Fatalf("sign %d: %v", i, err)
		}
		req.Ref = keys[0].Ref
		if err := r.Verify(ctx, cu, req, sig); err != nil {
			t.Fatalf("verify %d: %v", i, err)
		}
	}
	// Each server holds the key on its own disk.
	for i, s := range l.servers {
		if !s.local.Has(priv.Ref) {
			t.Errorf("server %d does not hold the key", i+1)
		}
	}
	for _, h := range r.HSMs(ctx) {
		if h.State != StateActive || h.Keys() != "2" || !strings.HasPrefix(h.TLS, "outer ok · inner ok") {
			t.Errorf("hsm-info %+v", h)
		}
	}
	for _, x := range r.TLSInfo(ctx) {
		if x.Outer.Status != "ok" || x.Inner.Status != "ok" || x.Outer.Peer.Subject != "CN=hsmsh HSM server,O=hsmsh" ||
			x.Inner.Peer.Subject != "CN=hsmsh cluster remote-test,O=hsmsh" || !strings.Contains(x.Outer.Peer.VerifiedBy, pki.TrustDir) {
			t.Errorf("tls-info %+v", x)
		}
	}
	// A second client sees the users and keys the first one made.
	r2 := l.client(Durability{MinimumNodes: 1})
	cu2, err := r2.Login(ctx, "cu1", RoleCryptoUser, "cu1pass1")
	if err != nil {
		t.Fatal(err)
	}
	got, err := r2.Keys(ctx, cu2, Filter{Attrs: map[string]string{"label": "remote-ec"}})
	if err != nil || len(got) != 2 {
		t.Fatalf("second client's key list: %v, %v", got, err)
	}
	if !strings.Contains(l.log.String(), "client connected") || !strings.Contains(l.log.String(), `client="CN=hsmsh default client,O=hsmsh"`) {
		t.Errorf("server log lacks the connections:\n%s", l.log)
	}
}

// A server down while a key is made gets it from its peers by server-side
// sync alone: no client is involved once it is back.
func TestRemoteServerDownGetsKeyBySync(t *testing.T) {
	l := newLoopback(t, 3, 100*time.Millisecond)
	r := l.client(Durability{MinimumNodes: 1, AvailabilityCheck: true, RetryOnMissingKey: 2})
	ctx := context.Background()
	_, cu := activate(t, r.Embedded)

	l.stop(2)
	waitFor(t, "the client to see hsm-3 down", func() bool { return !r.Inspect().Up("hsm-3") })
	for _, h := range r.HSMs(ctx) {
		if (h.ID == "hsm-3") != (h.State == StateDown) {
			t.Errorf("hsm-info %+v", h)
		}
	}
	keys, err := r.GenerateKey(ctx, cu, KeySpec{Type: TypeAES, LengthBytes: 32, Label: "made-while-down"})
	if err != nil {
		t.Fatal(err)
	}
	ref := keys[0].Ref
	if keys[0].Info.HSMCoverage["hsm-3"] {
		t.Fatal("the down server reported holding the key")
	}
	// Operations route around the down server.
	if _, err := r.Keys(ctx, cu, Filter{Ref: &ref}); err != nil {
		t.Fatal(err)
	}
	// From here the client only watches: a remote client runs no sync.
	l.start(2, nil)
	waitFor(t, "hsm-3 to get the key by server-side sync", func() bool { return l.servers[2].local.Has(ref) })
	// The client redialled the server on its own, and sees the key there.
	waitFor(t, "the client to reconnect to hsm-3", func() bool { return r.Inspect().Up("hsm-3") })
	got, err := r.Keys(ctx, cu, Filter{Ref: &ref})
	if err != nil || len(got) != 1 || !got[0].Info.HSMCoverage["hsm-3"] {
		t.Fatalf("after the restart: %+v, %v", got, err)
	}
	// The pass is logged once it is over, just after the key is stored.
	waitFor(t, "hsm-3 to log its sync pass", func() bool {
		return strings.Contains(l.log.String(), `msg="server-side sync" hsm=hsm-3 result="copied 1,`)
	})
}

// The outer layer refuses a client certificate from a foreign CA, and the
// server logs who it was and which layer refused it.
func TestRemoteServerLogsRefusals(t *testing.T) {
	l := newLoopback(t, 1, time.Hour)
	foreign := t.TempDir()
	if _, err := pki.Init(pki.Options{Dir: foreign, ClusterID: "remote-test"}); err != nil {
		t.Fatal(err)
	}
	f := l.files()
	f.ClientCert, f.ClientKey = filepath.Join(foreign, pki.ClientCert), filepath.Join(foreign, pki.ClientKey)
	cfg, err := nestedtls.LoadClient(f)
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = nestedtls.Dial(context.Background(), l.addrs[0], cfg)
	var le *nestedtls.LayerError
	if !errors.As(err, &le) || le.Layer != nestedtls.Outer {
		t.Fatalf("dial with a foreign client certificate: %v", err)
	}
	waitFor(t, "the refusal in the log", func() bool {
		s := l.log.String()
		return strings.Contains(s, "connection refused") && strings.Contains(s, "layer=outer") && strings.Contains(s, "neither the default client certificate nor issued by customerCA")
	})
}

// Bad peers — garbage, an oversize frame, a slow-loris — are dropped alone:
// a good client on the same server goes on working meanwhile.
func TestRemoteServerBadPeers(t *testing.T) {
	l := newLoopback(t, 1, time.Hour, rpc.ServerOptions{FrameTimeout: 300 * time.Millisecond})
	r := l.client(Durability{MinimumNodes: 1})
	ctx := context.Background()
	_, cu := activate(t, r.Embedded)
	keys, err := r.GenerateKey(ctx, cu, KeySpec{Type: TypeEC, Curve: "secp256r1", PublicLabel: "k", PrivateLabel: "k"})
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := nestedtls.LoadClient(l.files())
	if err != nil {
		t.Fatal(err)
	}
	// Each bad peer, and the reason the server gives it before hanging up.
	why := map[string]string{"garbage": "bad magic", "oversize": "frame too large", "slow-loris": "stalled in the middle of a frame"}
	bad := map[string]func(c net.Conn) error{
		"garbage": func(c net.Conn) error {
			_, err := c.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
			return err
		},
		"oversize": func(c net.Conn) error {
			// wire.Write refuses to make one, so the header is made by hand:
			// it announces one byte over the limit, and the bytes follow.
			h := []byte{'H', 'S', wire.Version, byte(wire.KindRequest), 0, 0, 0, 1, 0, 0, 0, 0}
			binary.BigEndian.PutUint32(h[8:], wire.MaxPayload+1)
			_, err := c.Write(append(h, make([]byte, 64<<10)...))
			return err
		},
		"slow-loris": func(c net.Conn) error {
			_, err := c.Write([]byte{'H', 'S', wire.Version}) // and then nothing
			return err
		},
	}
	for name, send := range bad {
		t.Run(name, func(t *testing.T) {
			conn, _, err := nestedtls.Dial(ctx, l.addrs[0], cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			// In the background: an oversize frame is refused from its
			// header, so the rest of it may never be read.
			go send(conn)
			// The good client keeps signing while the bad one is handled.
			req := SignRequest{Ref: keys[1].Ref, Mechanism: MechECDSA, Hash: crypto.SHA256, Data: []byte("still here")}
			if _, err := r.Sign(ctx, cu, req); err != nil {
				t.Fatalf("good client after %s: %v", name, err)
			}
			// The bad one is hung up on, with a reason frame.
			conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			reason := ""
			for {
				f, err := wire.Read(conn, 0)
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					t.Fatalf("%s: the server did not hang up", name)
				}
				if err != nil {
					break
				}
				if f.ID == 0 && f.Kind == wire.KindError {
					reason = string(f.Payload)
				}
			}
			if !strings.Contains(reason, why[name]) {
				t.Errorf("%s: the server's reason was %q, want it to mention %q", name, reason, why[name])
			}
			if _, err := r.Sign(ctx, cu, req); err != nil {
				t.Fatalf("good client after %s was dropped: %v", name, err)
			}
		})
	}
	if !strings.Contains(l.log.String(), "client dropped") {
		t.Errorf("no drop logged:\n%s", l.log)
	}
}

// The lab's faults that act inside an HSM are refused for a server, with
// what to do instead; latency and sync control reach the servers.
func TestRemoteLab(t *testing.T) {
	l := newLoopback(t, 2, time.Hour)
	r := l.client(Durability{MinimumNodes: 1})
	err := r.FailHSM("hsm-1", false)
	if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "stop (or restart) its hsmsh serve process") {
		t.Errorf("fail: %v", err)
	}
	if err := r.FailHSM("hsm-9", false); err == nil || !strings.Contains(err.Error(), "no HSM \"hsm-9\"") {
		t.Errorf("fail of an unknown HSM: %v", err)
	}
	if err := r.SetLatency("hsm-2", 30*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if got := time.Duration(l.servers[1].local.latency.Load()); got != 30*time.Millisecond {
		t.Errorf("server latency %v", got)
	}
	r.PauseSync()
	if !r.SyncStatus().Paused || !l.servers[0].sync.Status().Paused {
		t.Error("pause did not reach the servers")
	}
	r.ResumeSync()
	if r.SyncStatus().Paused {
		t.Error("resume did not reach the servers")
	}
}

// An expired certificate is refused on each layer, over loopback, and the
// error names the layer and says "expired".
func TestRemoteExpiredCertificates(t *testing.T) {
	good, old := t.TempDir(), t.TempDir()
	if _, err := pki.Init(pki.Options{Dir: good, ClusterID: "c"}); err != nil {
		t.Fatal(err)
	}
	// A PKI whose certificates all expired yesterday.
	if _, err := pki.Init(pki.Options{Dir: old, ClusterID: "c", Now: time.Now().Add(-48 * time.Hour), Validity: 24 * time.Hour}); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name  string
		edit  func(f *nestedtls.Files) // what comes from the expired PKI
		layer nestedtls.Layer
		want  string
	}{
		{"outer: the server certificate", func(f *nestedtls.Files) {
			f.ServerCert, f.ServerKey, f.TrustDir = filepath.Join(old, pki.ServerCert), filepath.Join(old, pki.ServerKey), filepath.Join(old, pki.TrustDir)
		}, nestedtls.Outer, "the server certificate \"hsmsh HSM server\" expired on"},
		{"outer: the client certificate", func(f *nestedtls.Files) {
			f.ClientCert, f.ClientKey = filepath.Join(old, pki.ClientCert), filepath.Join(old, pki.ClientKey)
		}, nestedtls.Outer, "the server refused the client certificate"},
		{"inner: the cluster certificate", func(f *nestedtls.Files) {
			f.ClusterCert, f.ClusterKey, f.CustomerCA = filepath.Join(old, pki.ClusterCert), filepath.Join(old, pki.ClusterKey), filepath.Join(old, pki.CustomerCACert)
		}, nestedtls.Inner, "certificate has expired"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := PKIFiles(good, "c")
			tc.edit(&f)
			srvTLS, err := nestedtls.LoadServer(f)
			if err != nil {
				t.Fatal(err)
			}
			cliTLS, err := nestedtls.LoadClient(f)
			if err != nil {
				t.Fatal(err)
			}
			// f names the expired client certificate for the server too,
			// as its default client certificate: expiry is checked first.
			log := &syncBuffer{}
			s, err := NewServer(ServerOptions{ID: "hsm-1", TLS: srvTLS, Log: slog.New(slog.NewTextHandler(log, nil))})
			if err != nil {
				t.Fatal(err)
			}
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			go s.Serve(ln)
			defer s.Shutdown()
			_, _, err = nestedtls.Dial(context.Background(), ln.Addr().String(), cliTLS)
			var le *nestedtls.LayerError
			if !errors.As(err, &le) || le.Layer != tc.layer || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("dial: %v; want a %s-layer error with %q", err, tc.layer, tc.want)
			}
			if tc.name == "outer: the client certificate" {
				waitFor(t, "the server to log the expired client certificate", func() bool {
					return strings.Contains(log.String(), `layer=outer`) && strings.Contains(log.String(), `expired on`)
				})
			}
		})
	}
}

// BenchmarkSign measures ECDSA P-256 signing through the client library
// at concurrency 1 and 8: on the embedded cluster with each transport
// (direct Go calls; nested TLS over in-memory pipes, the default) and on a
// remote cluster of 3 servers on loopback (nested TLS over TCP). The
// baseline is crypto/ecdsa itself, measured by BenchmarkSignRaw.
func BenchmarkSign(b *testing.B) {
	type setup struct {
		name string
		open func(b *testing.B) *Embedded
	}
	embedded := func(transport string) func(b *testing.B) *Embedded {
		return func(b *testing.B) *Embedded {
			e, err := OpenEmbedded(Options{ID: "bench", HSMs: 3, Transport: transport, Durability: Durability{MinimumNodes: 3, AvailabilityCheck: true}})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { e.Close() })
			e.PauseSync()
			return e
		}
	}
	remote := func(b *testing.B) *Embedded {
		l := newLoopback(b, 3, time.Hour)
		return l.client(Durability{MinimumNodes: 3, AvailabilityCheck: true}).Embedded
	}
	for _, s := range []setup{{"embedded-direct", embedded(TransportDirect)}, {"embedded-tls", embedded(TransportTLS)}, {"remote-loopback", remote}} {
		for _, conc := range []int{1, 2, 8} {
			b.Run(fmt.Sprintf("%s/concurrency=%d", s.name, conc), func(b *testing.B) {
				e := s.open(b)
				ctx := context.Background()
				_, cu := activate(b, e)
				keys, err := e.GenerateKey(ctx, cu, KeySpec{Type: TypeEC, Curve: "secp256r1", PublicLabel: "b", PrivateLabel: "b"})
				if err != nil {
					b.Fatal(err)
				}
				req := SignRequest{Ref: keys[1].Ref, Mechanism: MechECDSA, Hash: crypto.SHA256, Data: make([]byte, 64)}
				signParallel(b, conc, func() error {
					_, err := e.Sign(ctx, cu, req)
					return err
				})
			})
		}
	}
}

// BenchmarkSignRaw is the baseline: crypto/ecdsa P-256 signing of a
// SHA-256 digest, at concurrency 1 and 8.
func BenchmarkSignRaw(b *testing.B) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	for _, conc := range []int{1, 2, 8} {
		b.Run(fmt.Sprintf("concurrency=%d", conc), func(b *testing.B) {
			signParallel(b, conc, func() error {
				d := sha256.Sum256(make([]byte, 64))
				_, err := ecdsa.SignASN1(rand.Reader, k, d[:])
				return err
			})
		})
	}
}

// signParallel runs op b.N times over conc goroutines and reports ops/s.
func signParallel(b *testing.B, conc int, op func() error) {
	b.ResetTimer()
	var next atomic.Int64
	var wg sync.WaitGroup
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(b.N) {
				if err := op(); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
}
