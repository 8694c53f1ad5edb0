package hsm

// Adversarial tests of the HSM's door (handler.go): an attacker who holds
// only what `pki init` gives every client — the default client
// certificate, the trust folder and the customer CA — and no login, talking
// to the HSMs directly (its own nested TLS connection and the rpc
// protocol, not hsmsh's client library), and logged-in users who seal
// hand-made envelopes that skip the library's checks. Each attack is
// followed by a look, through the client library as a legitimate admin and
// crypto user, at what the attack might have changed.

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"maps"
	"net"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hsmsh/hsmsh/hsmcore/authsession"
	"github.com/hsmsh/hsmsh/hsmcore/nestedtls"
	"github.com/hsmsh/hsmsh/hsmcore/protocol"
	"github.com/hsmsh/hsmsh/hsmcore/quorum"
	"github.com/hsmsh/hsmsh/hsmcore/rpc"
)

// ---------------------------------------------------------------------
// The attacker's tools.

// door is one HSM's door as some caller reaches it.
type door func(method string, args, reply any) error

// attacker is a connection of its own to one HSM server, made with the
// files every client gets: nested TLS with the default client
// certificate, then the rpc protocol. No client library, no login.
type attacker struct {
	hsm string
	c   *rpc.Client
}

func dialAttacker(t testing.TB, hsm, addr string, files nestedtls.Files) *attacker {
	t.Helper()
	cfg, err := nestedtls.LoadClient(files)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, _, err := nestedtls.Dial(ctx, addr, cfg)
	if err != nil {
		t.Fatalf("the attacker's dial of %s: %v", hsm, err)
	}
	c := rpc.NewClient(conn)
	t.Cleanup(func() { c.Close() })
	return &attacker{hsm: hsm, c: c}
}

// call makes one call; an HSM's refusal comes back matching the sentinel
// its code names, as the client library sees it.
func (a *attacker) call(method string, args, reply any) error {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	// The protocol's own encoding (hsmsh.proto): what any client sends.
	in, err := protocol.EncodeArgs(method, args)
	if err != nil {
		return err
	}
	out, err := a.c.Call(ctx, method, in)
	var re *rpc.RemoteError
	if errors.As(err, &re) {
		return protocol.RemoteError(re)
	}
	if err != nil {
		return err
	}
	return protocol.DecodeAnswer(method, out, reply)
}

// serverHSMs are the loopback servers' own HSMs, for looking inside.
func serverHSMs(l *loopback) []*hsm {
	out := make([]*hsm, len(l.servers))
	for i, s := range l.servers {
		out[i] = s.local
	}
	return out
}

// startLabOffServer runs one more HSM server on l's PKI, started the way
// `hsmsh serve` is without --lab.
func startLabOffServer(t *testing.T, l *loopback, id string) (*Server, string) {
	t.Helper()
	srvTLS, err := nestedtls.LoadServer(l.files())
	if err != nil {
		t.Fatal(err)
	}
	s, err := NewServer(ServerOptions{ID: id, TLS: srvTLS, SyncInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(ln)
	t.Cleanup(func() { s.Shutdown() })
	return s, ln.Addr().String()
}

// recordingLink is a peer link that records each signed peer call an HSM
// makes through it — what an attacker on the path would capture — and
// delivers it through deliver (nil: the call is recorded only, never
// served).
type recordingLink struct {
	id      string
	deliver door
	mu      sync.Mutex
	calls   []json.RawMessage
}

func (l *recordingLink) ID() string { return l.id }

func (l *recordingLink) Call(method string, args, reply any) error {
	b, err := json.Marshal(args)
	if err != nil {
		return err
	}
	l.mu.Lock()
	l.calls = append(l.calls, b)
	l.mu.Unlock()
	if l.deliver == nil {
		return nil
	}
	return l.deliver(method, json.RawMessage(b), reply)
}

func (l *recordingLink) last(t *testing.T) json.RawMessage {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.calls) == 0 {
		t.Fatal("no peer call was recorded")
	}
	return l.calls[len(l.calls)-1]
}

// signPeerCall makes a peer call signed with id, as an HSM (or someone
// holding its identity key) would.
func signPeerCall(t *testing.T, id *authsession.Identity, from, to, method string, args any, at time.Time) *peerCall {
	t.Helper()
	raw, err := json.Marshal(args)
	if err != nil {
		t.Fatal(err)
	}
	pc := &peerCall{From: from, To: to, Method: method, Args: raw, At: at.UnixNano(), Nonce: make([]byte, 16)}
	rand.Read(pc.Nonce)
	if pc.Sig, err = id.Sign(labelPeerCall, pc.transcript()); err != nil {
		t.Fatal(err)
	}
	return pc
}

func identityOf(h *hsm) *authsession.Identity {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return h.identity
}

// sealNext seals a hand-made call in c's session for HSM to, numbered on
// the session's next free lane as the client library numbers its own, so
// that the library's later calls in the same session are not refused as
// replays.
func sealNext(t *testing.T, e *Embedded, c Caller, to, method string, args any) (env authsession.Envelope, sk [32]byte, ekt []byte) {
	t.Helper()
	s, err := e.Inspect().Session(c)
	if err != nil {
		t.Fatal(err)
	}
	sk, ekt = s.Keys()
	lane, n := s.Next()
	return sealCall(t, sk, ekt, lane, n, to, method, args), sk, ekt
}

// sendSealed sends a hand-made session call through d and returns the
// HSM's verdict: its refusal of the envelope, or the command's own error.
func sendSealed(t *testing.T, e *Embedded, c Caller, d door, to, method string, args any) error {
	t.Helper()
	env, sk, ekt := sealNext(t, e, c, to, method, args)
	var resp authsession.Envelope
	if err := d(protocol.CallEnveloped, env, &resp); err != nil {
		return err
	}
	return answer(t, sk, ekt, resp)
}

func directDoor(h *hsm) door {
	return directLink{to: h}.Call
}

func pubPEMOf(t *testing.T, pub crypto.PublicKey) []byte {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

// mustRefuse checks that err is a refusal matching is and saying want.
func mustRefuse(t *testing.T, what string, err error, is error, want string) {
	t.Helper()
	if !errors.Is(err, is) {
		t.Errorf("%s: got %v, want a refusal matching %v", what, err, is)
		return
	}
	if want != "" && !strings.Contains(err.Error(), want) {
		t.Errorf("%s: refused with %q, want it to say %q", what, err, want)
	}
}

// ---------------------------------------------------------------------
// The scene: a cluster with a victim, and what an attack could change.

// scene is an activated cluster with admin, crypto users cu1 and cu2, a
// P-256 pair of cu1's, a live unused quorum token and a used one.
type scene struct {
	e              *Embedded
	hsms           []*hsm // the in-process HSMs behind e
	admin, cu, cu2 Caller
	pub, ref       Ref    // cu1's pair
	liveToken      string // an unused quorum token's nonce
	usedToken      string // a used (registration) token's nonce
}

func newScene(t *testing.T, e *Embedded, hsms []*hsm) *scene {
	t.Helper()
	ctx := context.Background()
	admin, cu := activate(t, e)
	if _, err := e.CreateUser(ctx, admin, "cu2", RoleCryptoUser, "cu2pass2"); err != nil {
		t.Fatal(err)
	}
	cu2, err := e.Login(ctx, "cu2", RoleCryptoUser, "cu2pass2")
	if err != nil {
		t.Fatal(err)
	}
	s := &scene{e: e, hsms: hsms, admin: admin, cu: cu, cu2: cu2}
	s.ref = signer(t, e, cu)
	s.pub = s.ref - 1
	file, err := e.GenerateToken(ctx, admin, quorum.ServiceQuorum, nil, "")
	if err != nil {
		t.Fatal(err)
	}
	_, ad, err := quorum.ParseTokenFile(file)
	if err != nil {
		t.Fatal(err)
	}
	s.liveToken = ad.Nonce
	// A registration token is used by registering the admin's approver key.
	reg, err := e.GenerateToken(ctx, admin, quorum.ServiceRegistration, nil, "")
	if err != nil {
		t.Fatal(err)
	}
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	signed := signRegistration(t, reg, k)
	_, rad, _, err := quorum.ParseRegistrationFile(signed)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.RegisterQuorumKey(ctx, admin, pubPEMOf(t, k.Public()), signed); err != nil {
		t.Fatal(err)
	}
	s.usedToken = rad.Nonce
	return s
}

// sceneState is what an attack on the scene could change: as the client
// library shows it to the admin and cu1, and inside each HSM.
type sceneState struct {
	Users    []User
	Keys     []Key           // cu1's keys, as cu1 lists them
	Tokens   map[string]bool // nonce → used
	Quorum   map[string]int
	Timeouts [2]time.Duration
	Members  []string // per HSM, its member list
	Material []string // per HSM, a digest of cu1's private key material
	Fails    []int    // per HSM, cu1's failed logins
	Latency  []time.Duration
	Cu1Ended []bool // per HSM, whether it ended cu1's session
}

func (s *scene) state(t *testing.T) sceneState {
	t.Helper()
	ctx := context.Background()
	var st sceneState
	var err error
	if st.Users, err = s.e.Users(ctx, s.admin); err != nil {
		t.Fatal(err)
	}
	if st.Keys, err = s.e.Keys(ctx, s.cu, Filter{}); err != nil {
		t.Fatal(err)
	}
	toks, err := s.e.QuorumTokens(ctx, s.admin)
	if err != nil {
		t.Fatal(err)
	}
	st.Tokens = map[string]bool{}
	for _, tk := range toks {
		st.Tokens[tk.Nonce] = tk.Used
	}
	if st.Quorum, st.Timeouts[0], st.Timeouts[1], err = s.e.QuorumValues(ctx, s.admin); err != nil {
		t.Fatal(err)
	}
	for _, h := range s.hsms {
		h.mu.RLock()
		var ms []string
		for _, id := range slices.Sorted(maps.Keys(h.members)) {
			sum := sha256.Sum256(h.members[id])
			ms = append(ms, id+":"+hex.EncodeToString(sum[:8]))
		}
		st.Members = append(st.Members, strings.Join(ms, ","))
		mat := "none"
		if r := h.keys[s.ref]; r != nil {
			sum := sha256.Sum256(r.Material)
			mat = r.Owner + ":" + hex.EncodeToString(sum[:])
		}
		st.Material = append(st.Material, mat)
		fails := -1
		if u := h.users["cu1"]; u != nil {
			fails = u.failures()
		}
		st.Fails = append(st.Fails, fails)
		_, ended := h.ended[s.cu.Session]
		st.Cu1Ended = append(st.Cu1Ended, ended)
		h.mu.RUnlock()
		st.Latency = append(st.Latency, time.Duration(h.latency.Load()))
	}
	return st
}

// unchanged checks that nothing an attack aimed at changed, and that cu1
// still signs with its key.
func (s *scene) unchanged(t *testing.T, before sceneState) {
	t.Helper()
	after := s.state(t)
	v := reflect.ValueOf(before)
	w := reflect.ValueOf(after)
	for i := range v.NumField() {
		if !reflect.DeepEqual(v.Field(i).Interface(), w.Field(i).Interface()) {
			t.Errorf("the attacks changed %s:\nbefore %+v\nafter  %+v", v.Type().Field(i).Name, v.Field(i).Interface(), w.Field(i).Interface())
		}
	}
	for _, u := range after.Users {
		if u.Username == "mallory" || u.Username == "evil" {
			t.Errorf("the attacker's user %s exists: %+v", u.Username, u)
		}
	}
	if err := signOnce(s.e, s.cu, s.ref, 99); err != nil {
		t.Errorf("cu1 can no longer sign with its key: %v", err)
	}
}

// attackArgs are plausible arguments for every call that is not bare,
// each aimed at the scene's victims: cu1's key, the admin, the tokens.
func (s *scene) attackArgs(t *testing.T) map[string]any {
	t.Helper()
	far := time.Now().Add(time.Hour).UnixNano()
	mine, _ := authsession.NewIdentity()
	mineDER, _ := authsession.MarshalPublic(mine.Public())
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	rec, err := s.hsms[0].KeyMeta(s.ref)
	if err != nil {
		t.Fatal(err)
	}
	rec.Owner, rec.Shared = "cu2", nil // cu2 takes cu1's key
	members := map[string][]byte{"hsm-evil": mineDER}
	s.hsms[0].mu.RLock()
	maps.Copy(members, s.hsms[0].members)
	s.hsms[0].mu.RUnlock()
	req := SignRequest{Ref: s.ref, Mechanism: MechECDSA, Hash: crypto.SHA256, Data: []byte("attack")}
	return map[string]any{
		// Session calls, sent bare.
		protocol.CallKeyMeta:        s.ref,
		protocol.CallHas:            s.ref,
		protocol.CallRefTaken:       s.ref,
		protocol.CallDeleteKey:      s.ref,
		protocol.CallSnapshot:       protocol.SnapshotArgs{},
		protocol.CallDestroySession: s.cu.Session,
		protocol.CallEndSession:     s.cu.Session,
		protocol.CallSign:           protocol.SignArgs{Req: req},
		protocol.CallVerify:         protocol.VerifyArgs{Req: req, Sig: []byte{0x30, 0}},
		protocol.CallPublicKey:      s.ref,
		protocol.CallGenerateKey:    protocol.GenerateArgs{Spec: KeySpec{Type: TypeAES, Label: "evil", LengthBytes: 32}, Ref: s.ref, Wrap: true},
		protocol.CallImportKey:      protocol.ImportArgs{Spec: ImportSpec{PEM: pubPEMOf(t, k.Public()), Label: "evil", Class: "ec-public"}, Ref: s.ref},
		protocol.CallExportWrapped:  s.ref,
		protocol.CallImportWrapped:  protocol.ImportWrappedArgs{Key: &protocol.WrappedKey{Domain: "x", Ref: s.ref, Body: make([]byte, 64)}},
		protocol.CallKeyChange:      protocol.KeyChangeArgs{Ref: s.ref, Op: protocol.OpShare, User: "cu2"},
		protocol.CallCreateUser:     protocol.UserArgs{Username: "mallory", Role: RoleAdmin, Password: "mallorypass"},
		protocol.CallRemoveUser:     protocol.UserArgs{Username: "cu1", Role: RoleCryptoUser},
		protocol.CallSetPassword:    protocol.UserArgs{Username: "admin", Role: RoleAdmin, Password: "mallorypass"},
		protocol.CallOwns:           "cu1",
		protocol.CallQuorumList:     nil,
		protocol.CallIssueToken:     protocol.IssueArgs{Service: quorum.ServiceUser, Cluster: s.e.ID()},
		protocol.CallDeleteTokens:   protocol.DeleteTokensArgs{All: true},
		protocol.CallSetQuorum:      protocol.SetQuorumArgs{Service: quorum.ServiceQuorum, Value: 2},
		protocol.CallRegisterQuorum: protocol.RegisterArgs{PubPEM: pubPEMOf(t, k.Public()), File: []byte(`{}`)},
		protocol.CallBackup:         protocol.BackupArgs{Cluster: s.e.ID(), Info: BackupInfo{Salt: make([]byte, 16), Time: 1, Memory: 8 * 1024, Threads: 1}, Key: make([]byte, 32)},
		protocol.CallExportUser:     protocol.UserArgs{Username: "admin", Role: RoleAdmin},
		protocol.CallImportUser:     protocol.ImportWrappedArgs{Key: &protocol.WrappedKey{Domain: "x", User: "mallory", Body: make([]byte, 64)}},
		// Wrap cu1's signing key under a key the attacker imported would
		// carry it out; unwrap would plant a key under cu1's name.
		// Registering an MFA key for cu1 would lock it out; removing it
		// would lift its second factor.
		protocol.CallRegisterMFA:      protocol.RegisterArgs{PubPEM: []byte("-----BEGIN PUBLIC KEY-----\n-----END PUBLIC KEY-----\n"), File: []byte("{}")},
		protocol.CallDeregisterMFA:    protocol.UserArgs{Username: "cu1", Role: RoleCryptoUser},
		protocol.CallDeregisterQuorum: protocol.UserArgs{Username: "admin", Role: RoleAdmin},
		protocol.CallMTLSRegister:     protocol.MTLSArgs{CertPEM: []byte("-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n")},
		protocol.CallMTLSDeregister:   protocol.MTLSArgs{Ref: 1},
		protocol.CallMTLSSetLevel:     protocol.MTLSArgs{Level: protocol.MTLSCluster},
		protocol.CallWrapKey:          protocol.WrapArgs{Params: protocol.WrapParams{Mechanism: protocol.WrapRSAOAEP, Hash: "sha256", MGF: "mgf1-sha256"}, Payload: s.ref, Wrapping: s.pub},
		protocol.CallUnwrapKey:        protocol.UnwrapArgs{Spec: protocol.UnwrapSpec{Params: protocol.WrapParams{Mechanism: protocol.WrapAESNoPad}, Unwrapping: s.ref, Data: make([]byte, 40), KeyTypeClass: "aes", Label: "planted"}, Ref: s.ref + 100},
		// Peer calls, sent bare.
		protocol.CallTokenState: nil,
		protocol.CallTokenKeys:  []Ref{s.pub, s.ref},
		protocol.CallPutMeta:    metaOf(rec),
		// A change to the domain state for the leader to commit: an admin
		// of the attacker's making.
		protocol.CallPropose: prop(t, opPutUser, &userRecord{Username: "mallory", Role: RoleAdmin, Hash: hashPassword("mallorypass"), Updated: far}),
		// A raft append carrying the same, as if from the leader, in a
		// term far ahead.
		// A link key agreed with the attacker would let it MAC raft RPCs.
		protocol.CallLinkKey: linkKeyArgs{ID: strings.Repeat("ab", 16), Eph: bytes.Repeat([]byte{9}, 32)},
		protocol.CallRaft:    raftAppend(t, "hsm-2", 1<<40, prop(t, opPutUser, &userRecord{Username: "mallory", Role: RoleAdmin, Hash: hashPassword("mallorypass"), Updated: far})),
		// Lab controls.
		protocol.CallSyncNow:    nil,
		protocol.CallSyncPause:  nil,
		protocol.CallSyncResume: nil,
		protocol.CallSyncStatus: nil,
		protocol.CallLatency:    300 * time.Millisecond,
	}
}

// attackEveryCall sends every call that is not bare through d, bare, with
// arguments aimed at the scene, and requires each to be refused with
// ErrPermission. withLab includes the lab's calls (for an HSM whose lab
// is off).
func attackEveryCall(t *testing.T, s *scene, d door, withLab bool) {
	t.Helper()
	args := s.attackArgs(t)
	want := map[protocol.Class]string{
		protocol.ClassSession: "needs a logged-in session",
		protocol.ClassPeer:    "is served only to another HSM of the domain",
		protocol.ClassLab:     "is a lab control, and the lab of",
	}
	for _, m := range slices.Sorted(maps.Keys(protocol.Calls)) {
		class := protocol.Calls[m]
		if class == protocol.ClassBare {
			continue
		}
		a, ok := args[m]
		if !ok {
			t.Errorf("no attack arguments for %s (%s): add them to attackArgs", m, class)
			continue
		}
		if class == protocol.ClassLab && !withLab {
			continue
		}
		var reply json.RawMessage
		err := d(m, a, &reply)
		if err == nil {
			t.Errorf("%s (%s call) sent bare was served: %s", m, class, excerpt(string(reply)))
			continue
		}
		mustRefuse(t, m+" ("+class.String()+" call) sent bare", err, ErrPermission, want[class])
	}
}

// ---------------------------------------------------------------------
// 1. Bare calls.

// The default client certificate buys the bare calls only: every session,
// peer and lab call in the table, sent bare with arguments aimed at a
// victim (its key's reference, a user record that makes an admin, a
// token record that un-uses a used token, a member list with the
// attacker in it...), is refused with ErrPermission, on the embedded
// cluster over its TLS pipes and on a remote cluster of servers through
// the attacker's own connection; the lab's calls are refused by an HSM
// whose lab is off. Afterwards nothing the attacks aimed at has changed.
func TestAttackerBareCallsRefused(t *testing.T) {
	t.Run("embedded cluster over the TLS pipe", func(t *testing.T) {
		e, err := OpenEmbedded(Options{ID: "adv", HSMs: 3, Durability: Durability{MinimumNodes: 3}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { e.Close() })
		s := newScene(t, e, inProcessHSMs(e))
		before := s.state(t)
		for _, h := range devices(e) {
			// The embedded HSMs' lab is off (the lab acts on them in
			// process, never through the door): lab calls are refused too.
			attackEveryCall(t, s, directDoor(h), true)
		}
		s.unchanged(t, before)
	})
	t.Run("remote cluster through the attacker's own connection", func(t *testing.T) {
		l := newLoopback(t, 3, time.Hour)
		r := l.client(Durability{MinimumNodes: 3})
		s := newScene(t, r.Embedded, serverHSMs(l))
		before := s.state(t)
		for i, addr := range l.addrs {
			// These servers run with --lab, which serves the lab's calls to
			// any client by design; the server below runs without it.
			attackEveryCall(t, s, dialAttacker(t, l.id(i), addr, l.files()).call, false)
		}
		srv, addr := startLabOffServer(t, l, "hsm-nolab")
		attackEveryCall(t, s, dialAttacker(t, "hsm-nolab", addr, l.files()).call, true)
		if d := time.Duration(srv.local.latency.Load()); d != 0 || srv.sync.Status().Paused {
			t.Errorf("the server without --lab took the attacker's lab calls: latency %v, paused %v", d, srv.sync.Status().Paused)
		}
		s.unchanged(t, before)
	})
}

// The call table is the whole door: every call constant of the protocol is
// in it, each call of it is answered by the part of the HSM its class
// names (none falls through to "unknown"), and a call not in it is
// answered with errUnknownMethod, on the wire too. A call added to the
// constants but not the table, or dispatched nowhere, fails here.
func TestAttackerCallTableIsTheWholeDoor(t *testing.T) {
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, "../protocol/table.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	var consts []string
	for _, d := range f.Decls {
		g, ok := d.(*ast.GenDecl)
		if !ok || g.Tok != token.CONST {
			continue
		}
		for _, spec := range g.Specs {
			vs := spec.(*ast.ValueSpec)
			for i, name := range vs.Names {
				if !strings.HasPrefix(name.Name, "Call") || i >= len(vs.Values) {
					continue
				}
				lit, ok := vs.Values[i].(*ast.BasicLit)
				if !ok || lit.Kind != token.STRING {
					continue
				}
				v, _ := strconv.Unquote(lit.Value)
				consts = append(consts, v)
				if _, ok := protocol.Calls[v]; !ok {
					t.Errorf("call %s (%q) is a method constant of the protocol but not in protocol.Calls", name.Name, v)
				}
			}
		}
	}
	if len(consts) != len(protocol.Calls) {
		t.Errorf("the protocol names %d calls, protocol.Calls has %d", len(consts), len(protocol.Calls))
	}

	h, err := newHSM("hsm-table", nil)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := NewServer(ServerOptions{ID: "hsm-lab", SyncInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Shutdown() })
	bad := json.RawMessage("[") // arguments no call decodes: nothing is done
	c := Caller{Username: "nobody", Role: RoleCryptoUser, Session: "s"}
	for _, m := range slices.Sorted(maps.Keys(protocol.Calls)) {
		var err error
		switch protocol.Calls[m] {
		case protocol.ClassBare:
			_, err = h.serve(m, bad)
		case protocol.ClassSession:
			_, err = h.serveAs(origin{}, c, protocol.SessionCall{Method: m})
		case protocol.ClassPeer:
			_, err = h.servePeer("hsm-x", m, bad)
		case protocol.ClassLab:
			_, err = srv.labCall(m, bad)
		default:
			t.Errorf("%s has class %v", m, protocol.Calls[m])
		}
		if errors.Is(err, errUnknownMethod) || err != nil && strings.Contains(err.Error(), "is not a session command") {
			t.Errorf("%s (%s) is in the table but not served: %v", m, protocol.Calls[m], err)
		}
	}
	for _, m := range []string{"no-such-call", "peer.no-such-call", "Sign", "sign ", ""} {
		if _, err := h.serve(m, nil); !errors.Is(err, errUnknownMethod) {
			t.Errorf("serve(%q) = %v, want errUnknownMethod", m, err)
		}
	}
	// Over the wire the same, with the HSM's words.
	l := newLoopback(t, 1, time.Hour)
	a := dialAttacker(t, "hsm-1", l.addrs[0], l.files())
	if err := a.call("no-such-call", nil, nil); err == nil || !strings.Contains(err.Error(), "unknown method") {
		t.Errorf("an unknown call over the wire: %v", err)
	}
}

// ---------------------------------------------------------------------
// 2. The attacks, one by one, with the default certificate and no login.

func TestAttackerWithTheDefaultCertificate(t *testing.T) {
	l := newLoopback(t, 3, time.Hour)
	r := l.client(Durability{MinimumNodes: 3})
	s := newScene(t, r.Embedded, serverHSMs(l))
	ctx := context.Background()
	// cu1 mistyped its password twice: two failures, counted on the HSMs.
	for range 2 {
		if _, err := r.Login(ctx, "cu1", RoleCryptoUser, "wrongpass"); !errors.Is(err, ErrBadCredentials) {
			t.Fatalf("a wrong password: %v", err)
		}
	}
	before := s.state(t)
	for i, f := range before.Fails {
		if f != 2 {
			t.Fatalf("hsm-%d counts %d failures of cu1, want 2", i+1, f)
		}
	}
	atk := make([]*attacker, 3)
	for i, addr := range l.addrs {
		atk[i] = dialAttacker(t, l.id(i), addr, l.files())
	}
	h1, h2 := s.hsms[0], s.hsms[1]
	refs := []Ref{s.pub, s.ref}

	// Key material, wrapped or not, is served only to a peer.
	t.Run("read key material", func(t *testing.T) {
		var ws []*protocol.WrappedKey
		mustRefuse(t, "peer.token-keys bare", atk[0].call(protocol.CallTokenKeys, refs, &ws), ErrPermission, "only to another HSM")
		mustRefuse(t, "peer.token-state bare", atk[0].call(protocol.CallTokenState, nil, nil), ErrPermission, "only to another HSM")
		mustRefuse(t, "peer.raft bare", atk[0].call(protocol.CallRaft, raftMessage{Kind: "vote", Body: json.RawMessage(`{}`)}, nil), ErrPermission, "only to another HSM")
		// In the peer carrier, unsigned.
		unsigned := peerCall{From: "hsm-2", To: "hsm-1", Method: protocol.CallTokenKeys, Args: json.RawMessage(`[` + strconv.FormatUint(uint64(s.ref), 10) + `]`), At: time.Now().UnixNano(), Nonce: make([]byte, 16)}
		mustRefuse(t, "an unsigned peer call", atk[0].call(protocol.CallPeer, unsigned, &ws), ErrPermission, "peer call from hsm-2")
		if len(ws) != 0 {
			t.Errorf("the attacker got %d wrapped keys", len(ws))
		}
	})
	// The user list is bare (CloudHSM lists users without a login), but
	// it holds no hash and no failure counts.
	t.Run("the bare user list holds no secrets", func(t *testing.T) {
		// The answer's bytes as the wire carries them (a UserList of
		// hsmsh.proto), searched for a password hash or a quorum key's
		// PEM; the type it decodes into has no field for either.
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		raw, err := atk[0].c.Call(ctx, protocol.CallUsers, nil)
		if err != nil {
			t.Fatal(err)
		}
		var views []protocol.UserView
		if err := protocol.DecodeAnswer(protocol.CallUsers, raw, &views); err != nil || len(views) == 0 {
			t.Fatalf("the user list: %d users, %v", len(views), err)
		}
		for _, secret := range []string{"argon2", "$v=", "-----BEGIN"} {
			if bytes.Contains(raw, []byte(secret)) {
				t.Errorf("the bare user list holds %q: %s", secret, excerpt(string(raw)))
			}
		}
	})

	// A peer call signed with the attacker's own fresh identity key in a
	// member's name: the receiver checks the signature against the key
	// its member list holds for that name, never one the call brings.
	t.Run("forged peer call", func(t *testing.T) {
		mine, err := authsession.NewIdentity()
		if err != nil {
			t.Fatal(err)
		}
		mineDER, _ := authsession.MarshalPublic(mine.Public())
		for _, tc := range []struct {
			method string
			args   any
		}{
			{protocol.CallTokenKeys, refs},
			{protocol.CallPropose, prop(t, opPutUser, &userRecord{Username: "mallory", Role: RoleAdmin, Hash: hashPassword("mallorypass"), Updated: time.Now().UnixNano()})},
			{protocol.CallPropose, prop(t, opAddMember, memberArgs{ID: "hsm-2", Identity: mineDER})},
			{protocol.CallPropose, prop(t, opDropTokens, "")},
			{protocol.CallRaft, raftAppend(t, "hsm-2", 1<<40, prop(t, opAddMember, memberArgs{ID: "hsm-3", Identity: mineDER}))},
		} {
			pc := signPeerCall(t, mine, "hsm-2", "hsm-1", tc.method, tc.args, time.Now())
			var out json.RawMessage
			mustRefuse(t, "forged "+tc.method, atk[0].call(protocol.CallPeer, pc, &out), ErrPermission, "peer call from hsm-2")
		}
		// In the name of an HSM that is no member.
		pc := signPeerCall(t, mine, "hsm-evil", "hsm-1", protocol.CallTokenKeys, refs, time.Now())
		mustRefuse(t, "a peer call from a stranger", atk[0].call(protocol.CallPeer, pc, nil), ErrPermission, `"hsm-evil" is not an HSM of this domain`)
		// A member's real signature on a call that is not a peer call.
		pc = signPeerCall(t, identityOf(h2), "hsm-2", "hsm-1", protocol.CallCreateUser, protocol.UserArgs{Username: "mallory", Role: RoleAdmin, Password: "mallorypass"}, time.Now())
		mustRefuse(t, "a session call in a signed peer call", atk[0].call(protocol.CallPeer, pc, nil), ErrPermission, "is not a peer call")
	})

	// A real peer call, captured on its way (hsm-1 asking hsm-2 for cu1's
	// wrapped keys), then sent again: refused as a replay.
	t.Run("replayed peer call", func(t *testing.T) {
		link := &recordingLink{id: "hsm-2", deliver: atk[1].call}
		var ws []*protocol.WrappedKey
		if err := h1.callPeer(link, protocol.CallTokenKeys, refs, &ws); err != nil || len(ws) != 2 {
			t.Fatalf("the real call: %d keys, %v", len(ws), err)
		}
		ws = nil
		mustRefuse(t, "the replay", atk[1].call(protocol.CallPeer, link.last(t), &ws), ErrPermission, "replayed")
		if len(ws) != 0 {
			t.Errorf("the replay got %d wrapped keys", len(ws))
		}
	})

	// A real peer call for hsm-2, captured before it arrived, sent to
	// hsm-3 instead: refused (addressed to another HSM); with its To
	// rewritten: refused (the signature covers it). The same bytes are
	// then served by hsm-2, so the capture was a good call.
	t.Run("redirected peer call", func(t *testing.T) {
		link := &recordingLink{id: "hsm-2"} // recorded, not delivered
		if err := h1.callPeer(link, protocol.CallTokenKeys, refs, nil); err != nil {
			t.Fatal(err)
		}
		captured := link.last(t)
		var ws []*protocol.WrappedKey
		mustRefuse(t, "redirected to hsm-3", atk[2].call(protocol.CallPeer, captured, &ws), ErrPermission, `addressed to "hsm-2", not hsm-3`)
		var pc peerCall
		if err := json.Unmarshal(captured, &pc); err != nil {
			t.Fatal(err)
		}
		pc.To = "hsm-3"
		mustRefuse(t, "redirected with To rewritten", atk[2].call(protocol.CallPeer, pc, &ws), ErrPermission, "peer call from hsm-1")
		if len(ws) != 0 {
			t.Errorf("hsm-3 answered with %d wrapped keys", len(ws))
		}
		if err := atk[1].call(protocol.CallPeer, captured, &ws); err != nil || len(ws) != 2 {
			t.Errorf("the captured call at hsm-2, its addressee: %d keys, %v", len(ws), err)
		}
	})

	// A peer call hsm-1's identity key really signed, but dated ten
	// minutes ago (or hence): refused. The same call dated now is served,
	// so the date is the only reason.
	t.Run("stale peer call", func(t *testing.T) {
		id := identityOf(h1)
		for _, at := range []time.Duration{-10 * time.Minute, 10 * time.Minute} {
			pc := signPeerCall(t, id, "hsm-1", "hsm-2", protocol.CallTokenKeys, refs, time.Now().Add(at))
			mustRefuse(t, fmt.Sprintf("a peer call dated %v", at), atk[1].call(protocol.CallPeer, pc, nil), ErrPermission, "more than 1m0s from this HSM's clock")
		}
		pc := signPeerCall(t, id, "hsm-1", "hsm-2", protocol.CallTokenKeys, refs, time.Now())
		if err := atk[1].call(protocol.CallPeer, pc, nil); err != nil {
			t.Errorf("the same call dated now: %v", err)
		}
	})

	// A join with a fresh identity of the attacker's and no endorsement, a
	// garbage one, or one signed with a key a client holds (the default
	// client certificate's, the attacker's own): refused, and no member
	// list changes. Only the cluster certificate's key endorses, which
	// servers hold and clients do not.
	t.Run("join", func(t *testing.T) {
		mine, _ := authsession.NewIdentity()
		der, _ := authsession.MarshalPublic(mine.Public())
		cfg, err := nestedtls.LoadClient(l.files())
		if err != nil {
			t.Fatal(err)
		}
		clientKey := cfg.Certificate.PrivateKey.(crypto.Signer)
		own, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		endorse := func(k crypto.Signer, id string) []byte {
			sig, err := k.Sign(rand.Reader, endorseDigest(id, der), crypto.SHA384)
			if err != nil {
				t.Fatal(err)
			}
			return sig
		}
		membersOf := func() []map[string][]byte {
			var out []map[string][]byte
			for _, a := range atk {
				var info protocol.DomainInfo
				if err := a.call(protocol.CallDomainInfo, nil, &info); err != nil {
					t.Fatal(err)
				}
				out = append(out, info.Members)
			}
			return out
		}
		was := membersOf()
		for _, tc := range []struct {
			name, id    string
			endorsement []byte
		}{
			{"no endorsement", "hsm-9", nil},
			{"a garbage endorsement", "hsm-9", []byte("endorsed, honest")},
			{"endorsed with the default client certificate's key", "hsm-9", endorse(clientKey, "hsm-9")},
			{"endorsed with the attacker's own key", "hsm-9", endorse(own, "hsm-9")},
			{"in a member's name, endorsed with the client key", "hsm-2", endorse(clientKey, "hsm-2")},
		} {
			j := joinRequest{ID: tc.id, Identity: der, Endorsement: tc.endorsement, At: time.Now().UnixNano()}
			j.Sig, _ = mine.Sign(labelJoin, joinTranscript(&j))
			var reply joinReply
			mustRefuse(t, "join: "+tc.name, atk[0].call(protocol.CallJoin, &j, &reply), ErrPermission, "not endorsed by this cluster's key")
			if reply.Wrapped != nil {
				t.Errorf("join: %s: the attacker got the domain key wrapped", tc.name)
			}
		}
		if now := membersOf(); !reflect.DeepEqual(now, was) {
			t.Errorf("the member lists changed: %v", now)
		}
	})

	// An admin of the attacker's own making, written as a user record.
	t.Run("create an admin", func(t *testing.T) {
		u := &userRecord{Username: "mallory", Role: RoleAdmin, Hash: hashPassword("mallorypass"), Updated: time.Now().UnixNano()}
		mustRefuse(t, "peer.propose bare", atk[0].call(protocol.CallPropose, prop(t, opPutUser, u), nil), ErrPermission, "only to another HSM")
		if _, err := r.Login(ctx, "mallory", RoleAdmin, "mallorypass"); !errors.Is(err, ErrBadCredentials) {
			t.Errorf("the attacker's admin logs in: %v", err)
		}
	})

	// cu1's record rewritten with its failure counters reset (a newer
	// reset epoch) and, while at it, the attacker's password.
	t.Run("reset failed logins", func(t *testing.T) {
		later := time.Now().Add(time.Hour).UnixNano()
		u := &userRecord{Username: "cu1", Role: RoleCryptoUser, Hash: hashPassword("mallorypass"), FailEpoch: later, Updated: later}
		for _, a := range atk {
			mustRefuse(t, "peer.propose bare on "+a.hsm, a.call(protocol.CallPropose, prop(t, opPutUser, u), nil), ErrPermission, "only to another HSM")
			mustRefuse(t, "a reset bare on "+a.hsm, a.call(protocol.CallPropose, prop(t, opResetFails, loginArgs{User: "cu1", At: later}), nil), ErrPermission, "only to another HSM")
		}
		for i, h := range s.hsms {
			h.mu.RLock()
			n := h.users["cu1"].failures()
			h.mu.RUnlock()
			if n != 2 {
				t.Errorf("hsm-%d counts %d failures of cu1 after the attack, want 2", i+1, n)
			}
		}
	})

	// Quorum tokens marked used (denying an approval), unused (replaying
	// one), or deleted.
	t.Run("quorum tokens", func(t *testing.T) {
		mustRefuse(t, "use a token bare", atk[0].call(protocol.CallPropose, prop(t, opUseToken, useTokenArgs{Nonce: s.liveToken, At: time.Now()}), nil), ErrPermission, "only to another HSM")
		unused := &protocol.Token{Nonce: s.usedToken, Service: quorum.ServiceRegistration, Requester: "admin", Expires: time.Now().Add(time.Hour)}
		mustRefuse(t, "put a token bare", atk[0].call(protocol.CallPropose, prop(t, opPutToken, unused), nil), ErrPermission, "only to another HSM")
		mustRefuse(t, "drop the tokens bare", atk[0].call(protocol.CallPropose, prop(t, opDropTokens, ""), nil), ErrPermission, "only to another HSM")
		toks, err := r.QuorumTokens(ctx, s.admin)
		if err != nil {
			t.Fatal(err)
		}
		seen := 0
		for _, tk := range toks {
			switch tk.Nonce {
			case s.liveToken:
				seen++
				if tk.Used {
					t.Error("the live token was marked used")
				}
			case s.usedToken:
				seen++
				if !tk.Used {
					t.Error("the used token was marked unused")
				}
			}
		}
		if seen != 2 {
			t.Errorf("the tokens are gone: %+v", toks)
		}
	})

	t.Run("delete a key", func(t *testing.T) {
		for _, a := range atk {
			mustRefuse(t, "delete-key bare on "+a.hsm, a.call(protocol.CallDeleteKey, s.ref, nil), ErrPermission, "needs a logged-in session")
		}
		for i, h := range s.hsms {
			if !h.Has(s.ref) {
				t.Errorf("hsm-%d lost cu1's key", i+1)
			}
		}
	})

	t.Run("read session ids", func(t *testing.T) {
		var snap json.RawMessage
		mustRefuse(t, "snapshot bare", atk[0].call(protocol.CallSnapshot, protocol.SnapshotArgs{}, &snap), ErrPermission, "needs a logged-in session")
		if strings.Contains(string(snap), s.cu.Session) {
			t.Error("the attacker read cu1's session id")
		}
	})

	// Ending another user's session: bare, and from inside cu2's own
	// session (sealed with cu2's session key, hand-made).
	t.Run("end other users' sessions", func(t *testing.T) {
		for _, m := range []string{protocol.CallEndSession, protocol.CallDestroySession} {
			mustRefuse(t, m+" bare", atk[0].call(m, s.cu.Session, nil), ErrPermission, "needs a logged-in session")
			for i, a := range atk {
				err := sendSealed(t, r.Embedded, s.cu2, a.call, l.id(i), m, s.cu.Session)
				mustRefuse(t, m+" of cu1's session in cu2's", err, ErrPermission, "may end only itself")
			}
		}
		if err := signOnce(r.Embedded, s.cu, s.ref, 1); err != nil {
			t.Errorf("cu1's session after the attack: %v", err)
		}
	})

	// The lab's calls on a server started without --lab.
	t.Run("lab calls without --lab", func(t *testing.T) {
		srv, addr := startLabOffServer(t, l, "hsm-nolab")
		a := dialAttacker(t, "hsm-nolab", addr, l.files())
		mustRefuse(t, "latency", a.call(protocol.CallLatency, protocol.MaxLatency, nil), ErrPermission, "the lab of hsm-nolab is off")
		mustRefuse(t, "sync-pause", a.call(protocol.CallSyncPause, nil, nil), ErrPermission, "the lab of hsm-nolab is off")
		mustRefuse(t, "sync-now", a.call(protocol.CallSyncNow, nil, nil), ErrPermission, "the lab of hsm-nolab is off")
		if d := time.Duration(srv.local.latency.Load()); d != 0 || srv.sync.Status().Paused {
			t.Errorf("latency %v, paused %v", d, srv.sync.Status().Paused)
		}
	})

	s.unchanged(t, before)
}

// ---------------------------------------------------------------------
// 3. Crash attempts.

// badArgonHash is a well-formed argon2id hash but for its parameters:
// p=0 makes argon2 panic (and t=0, a huge m, worse).
func badArgonHash(params string) string {
	salt := hashEncoding.EncodeToString(make([]byte, argonSaltLen))
	key := hashEncoding.EncodeToString(make([]byte, argonKeyLen))
	return "$argon2id$v=19$" + params + "$" + salt + "$" + key
}

// A user record whose hash would crash the login that checks it cannot be
// planted: sent bare it is refused (peer calls only), and even a real
// peer's record with it is refused by validHash. The server goes on
// serving logins.
func TestAttackerCannotPlantACrashingHash(t *testing.T) {
	l := newLoopback(t, 2, time.Hour)
	r := l.client(Durability{MinimumNodes: 2})
	s := newScene(t, r.Embedded, serverHSMs(l))
	a := dialAttacker(t, "hsm-1", l.addrs[0], l.files())
	before := s.state(t)
	s.hsms[0].mu.RLock()
	was := s.hsms[0].users["cu1"]
	s.hsms[0].mu.RUnlock()
	for _, params := range []string{"m=19456,t=2,p=0", "m=19456,t=0,p=1", "m=4194304,t=2,p=1"} {
		u := &userRecord{Username: "cu1", Role: RoleCryptoUser, Hash: badArgonHash(params), Updated: time.Now().Add(time.Hour).UnixNano()}
		mustRefuse(t, params+" bare", a.call(protocol.CallPropose, prop(t, opPutUser, u), nil), ErrPermission, "only to another HSM")
		// Even from a member of the domain, properly signed, to the
		// leader: it is refused before it reaches the log.
		leader := leaderOf(t, s.hsms)
		from := s.hsms[0]
		if from == leader {
			from = s.hsms[1]
		}
		pc := signPeerCall(t, identityOf(from), from.id, leader.id, protocol.CallPropose, prop(t, opPutUser, u), time.Now())
		la := a
		if leader.id != "hsm-1" {
			la = dialAttacker(t, leader.id, l.addrs[slices.IndexFunc(l.servers, func(s *Server) bool { return s.local == leader })], l.files())
		}
		mustRefuse(t, params+" from a peer", la.call(protocol.CallPeer, pc, nil), ErrInvalid, "argon2 parameters")
	}
	s.hsms[0].mu.RLock()
	now := s.hsms[0].users["cu1"]
	s.hsms[0].mu.RUnlock()
	if now.Hash != was.Hash {
		t.Errorf("cu1's hash changed to %s", excerpt(now.Hash))
	}
	if _, err := r.Login(context.Background(), "cu1", RoleCryptoUser, "cu1pass1"); err != nil {
		t.Errorf("cu1's login after the attempts: %v", err)
	}
	s.unchanged(t, before)
}

// A crashing hash that is stored (a damaged store, an old backup) is
// refused by validHash before argon2 runs: checkPassword says no, without
// panicking, and a login against it fails cleanly.
func TestAttackerCrashingHashNeverReachesArgon2(t *testing.T) {
	e, err := OpenEmbedded(Options{ID: "adv", HSMs: 1, Transport: TransportDirect})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	activate(t, e)
	h := inProcessHSMs(e)[0]
	calls := 0
	defer func(f func([]byte, []byte, uint32, uint32, uint8, uint32) []byte) { idKey = f }(idKey)
	idKey = func(pw, salt []byte, time, memory uint32, threads uint8, keyLen uint32) []byte {
		calls++
		panic(fmt.Sprintf("argon2 ran with t=%d m=%d p=%d", time, memory, threads))
	}
	for _, params := range []string{"m=19456,t=2,p=0", "m=19456,t=0,p=1", "m=4194304,t=2,p=1"} {
		hash := badArgonHash(params)
		ok := func() (ok bool) {
			defer func() {
				if r := recover(); r != nil {
					t.Errorf("checkPassword panicked on %s: %v", params, r)
				}
			}()
			return checkPassword(hash, "cu1pass1")
		}()
		if ok || calls != 0 {
			t.Errorf("%s: checkPassword = %v after %d argon2 runs", params, ok, calls)
		}
		// Stored, as a damaged store would hold it: the login fails.
		h.mu.Lock()
		u := *h.users["cu1"]
		u.Hash = hash
		h.users["cu1"] = &u
		h.mu.Unlock()
		func() {
			defer func() {
				if r := recover(); r != nil {
					t.Errorf("a login against %s panicked: %v", params, r)
				}
			}()
			if _, err := e.Login(context.Background(), "cu1", RoleCryptoUser, "cu1pass1"); !errors.Is(err, ErrBadCredentials) {
				t.Errorf("a login against %s: %v", params, err)
			}
		}()
		if calls != 0 {
			t.Errorf("argon2 ran %d times", calls)
		}
	}
}

// 2,000 idle TCP connections (no TLS handshake, nothing sent) to one
// server: a good client still connects, logs in and signs while they are
// held, in bounded time.
func TestAttackerIdleConnections(t *testing.T) {
	if testing.Short() {
		t.Skip("opens 2,000 connections")
	}
	l := newLoopback(t, 1, time.Hour)
	r := l.client(Durability{MinimumNodes: 1})
	_, cu := activate(t, r.Embedded)
	ref := signer(t, r.Embedded, cu)
	const n = 2000
	conns := make([]net.Conn, 0, n)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	d := net.Dialer{Timeout: 5 * time.Second}
	for range n {
		c, err := d.Dial("tcp", l.addrs[0])
		if err != nil {
			t.Fatalf("idle connection %d: %v", len(conns)+1, err)
		}
		conns = append(conns, c)
	}
	start := time.Now()
	// A new client: a new TLS connection the server must accept.
	r2 := l.client(Durability{MinimumNodes: 1})
	if !r2.Inspect().Up("hsm-1") {
		t.Fatalf("a new client cannot reach the server held by %d idle connections", n)
	}
	cu2, err := r2.Login(context.Background(), "cu1", RoleCryptoUser, "cu1pass1")
	if err != nil {
		t.Fatalf("login while %d idle connections are held: %v", n, err)
	}
	if err := signOnce(r2.Embedded, cu2, ref, 0); err != nil {
		t.Fatalf("sign while %d idle connections are held: %v", n, err)
	}
	if err := signOnce(r.Embedded, cu, ref, 1); err != nil {
		t.Fatalf("the first client's sign: %v", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("login and sign took %v with %d idle connections held", took, n)
	}
}

// A flood of handshakes (logins begun and never finished): 200 from
// distinct client ids leave room for a real login; 20 from one client id
// hit its cap (maxPendingClient) with ErrPermission.
func TestAttackerHandshakeFlood(t *testing.T) {
	l := newLoopback(t, 1, time.Hour)
	r := l.client(Durability{MinimumNodes: 1})
	_, cu := activate(t, r.Embedded)
	ref := signer(t, r.Embedded, cu)
	a := dialAttacker(t, "hsm-1", l.addrs[0], l.files())
	mine, err := authsession.NewIdentity()
	if err != nil {
		t.Fatal(err)
	}
	der, _ := authsession.MarshalPublic(mine.Public())
	handshake := func(client string) error {
		hello, _, err := authsession.NewHello(client, mine)
		if err != nil {
			t.Fatal(err)
		}
		var reply *authsession.Reply
		return a.call(protocol.CallHandshake, protocol.HandshakeArgs{Hello: hello, ClientKey: der, User: "admin", Lifetime: time.Hour}, &reply)
	}
	for i := range 200 {
		if err := handshake(fmt.Sprintf("flood-%03d", i)); err != nil {
			t.Fatalf("handshake %d of the flood: %v", i, err)
		}
	}
	login := func(when string) {
		c, err := r.Login(context.Background(), "cu1", RoleCryptoUser, "cu1pass1")
		if err != nil {
			t.Fatalf("a real login %s: %v", when, err)
		}
		if err := signOnce(r.Embedded, c, ref, 0); err != nil {
			t.Fatalf("a real sign %s: %v", when, err)
		}
	}
	login("after 200 pending handshakes")
	refused := 0
	for i := range 20 {
		err := handshake("flood-one")
		switch {
		case i < maxPendingClient && err != nil:
			t.Fatalf("handshake %d of one client: %v", i+1, err)
		case i >= maxPendingClient:
			mustRefuse(t, fmt.Sprintf("handshake %d of one client", i+1), err, ErrPermission, "logins in progress")
			refused++
		}
	}
	if refused != 20-maxPendingClient {
		t.Errorf("%d handshakes refused, want %d", refused, 20-maxPendingClient)
	}
	login("after one client hit its cap")
}

// ---------------------------------------------------------------------
// 4. Logged-in users who skip the client library's checks.

// Hand-made envelopes, sealed in real sessions: cu2 cannot overwrite or
// change cu1's key, an admin cannot create a user the user quorum gates,
// and nobody signs with a key under a use quorum without its approval.
func TestAdversaryLoggedInUsers(t *testing.T) {
	ctx := context.Background()
	t.Run("crypto user against another's key", func(t *testing.T) {
		r := newEnvelopeRig(t)
		// A key of cu1's that was deleted: its reference stays taken.
		gone, err := r.e.GenerateKey(ctx, r.cu, KeySpec{Type: TypeAES, Label: "gone", LengthBytes: 32})
		if err != nil {
			t.Fatal(err)
		}
		if err := r.e.DeleteKey(ctx, r.cu, gone[0].Ref); err != nil {
			t.Fatal(err)
		}
		material := func() [][]byte {
			var out [][]byte
			for _, h := range r.hsms {
				h.mu.RLock()
				for _, ref := range []Ref{r.ref - 1, r.ref} {
					k := h.keys[ref]
					if k == nil {
						t.Fatalf("%s lost key %s", h.id, ref)
					}
					out = append(out, append([]byte(k.Owner+":"), k.Material...))
				}
				h.mu.RUnlock()
			}
			return out
		}
		was, err := r.e.Keys(ctx, r.cu, Filter{})
		if err != nil {
			t.Fatal(err)
		}
		wasMaterial := material()
		other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		for _, tc := range []struct {
			name, method string
			args         any
			is           error
		}{
			{"generate-key over cu1's private key", protocol.CallGenerateKey, protocol.GenerateArgs{Spec: KeySpec{Type: TypeAES, Label: "x", LengthBytes: 32}, Ref: r.ref, Wrap: true}, ErrInvalid},
			{"generate-key pair over cu1's pair", protocol.CallGenerateKey, protocol.GenerateArgs{Spec: KeySpec{Type: TypeEC, Curve: "secp256r1", PublicLabel: "x", PrivateLabel: "x"}, Ref: r.ref - 1}, ErrInvalid},
			{"generate-key pair whose private half lands on cu1's public key", protocol.CallGenerateKey, protocol.GenerateArgs{Spec: KeySpec{Type: TypeEC, Curve: "secp256r1", PublicLabel: "x", PrivateLabel: "x"}, Ref: r.ref - 2}, ErrInvalid},
			{"generate-key over a deleted key's reference", protocol.CallGenerateKey, protocol.GenerateArgs{Spec: KeySpec{Type: TypeAES, Label: "x", LengthBytes: 32}, Ref: gone[0].Ref}, ErrInvalid},
			{"import-key over cu1's private key", protocol.CallImportKey, protocol.ImportArgs{Spec: ImportSpec{PEM: pubPEMOf(t, other.Public()), Label: "x", Class: "ec-public"}, Ref: r.ref}, ErrInvalid},
			{"key-change: share cu1's key with itself", protocol.CallKeyChange, protocol.KeyChangeArgs{Ref: r.ref, Op: protocol.OpShare, User: "cu2"}, ErrPermission},
			{"key-change: relabel cu1's key", protocol.CallKeyChange, protocol.KeyChangeArgs{Ref: r.ref, Op: protocol.OpSetAttribute, Name: "label", Value: "mine"}, ErrPermission},
			{"key-change: make cu1's key able to decrypt", protocol.CallKeyChange, protocol.KeyChangeArgs{Ref: r.ref, Op: protocol.OpSetAttribute, Name: "decrypt", Value: "true"}, ErrPermission},
			{"export-wrapped cu1's key", protocol.CallExportWrapped, r.ref, ErrKeyNotFound},
		} {
			for _, h := range r.hsms {
				err := sendSealed(t, r.e, r.cu2, directDoor(h), h.id, tc.method, tc.args)
				mustRefuse(t, tc.name+" on "+h.id, err, tc.is, "")
			}
		}
		now, err := r.e.Keys(ctx, r.cu, Filter{})
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(now, was) {
			t.Errorf("cu1's keys changed:\nbefore %+v\nafter  %+v", was, now)
		}
		if !reflect.DeepEqual(material(), wasMaterial) {
			t.Error("the material or owner of cu1's pair changed")
		}
		if keys, _ := r.e.Keys(ctx, r.cu2, Filter{}); len(keys) != 1 { // cu1's public key only
			t.Errorf("cu2 sees %d keys, want cu1's public key only: %+v", len(keys), keys)
		}
		if err := signOnce(r.e, r.cu2, r.ref, 0); !errors.Is(err, ErrKeyNotFound) {
			t.Errorf("cu2 signs with cu1's key: %v", err)
		}
		if err := signOnce(r.e, r.cu, r.ref, 0); err != nil {
			t.Errorf("cu1's sign: %v", err)
		}
	})

	t.Run("admin without the user quorum's approval", func(t *testing.T) {
		s := newApproverSet(t) // user quorum 2, three registered admins
		admin := s.admins["admin"]
		one := s.token(t, quorum.ServiceUser, "", "admin2")
		for _, h := range inProcessHSMs(s.e) {
			for _, appr := range []*protocol.Approval{nil, {Token: one}} {
				err := sendSealed(t, s.e, admin, directDoor(h), h.id, protocol.CallCreateUser, protocol.UserArgs{Username: "mallory", Role: RoleAdmin, Password: "mallorypass", Approval: appr})
				what := "create-user with no approval on " + h.id
				if appr != nil {
					what = "create-user with one approval on " + h.id
				}
				if appr == nil {
					mustRefuse(t, what, err, quorum.ErrApprovalRequired, "it needs the approval of 2 admin")
				} else if err == nil {
					t.Errorf("%s: served", what)
				}
			}
		}
		users, err := s.e.Users(ctx, admin)
		if err != nil {
			t.Fatal(err)
		}
		for _, u := range users {
			if u.Username == "mallory" {
				t.Errorf("mallory exists: %+v", u)
			}
		}
		for _, h := range inProcessHSMs(s.e) {
			if users, _ := h.UserState(); users["mallory"] != nil {
				t.Errorf("%s holds mallory", h.id)
			}
		}
	})

	t.Run("sign under a use quorum without approval", func(t *testing.T) {
		s := newApproverSet(t)
		admin := s.admins["admin"]
		tok := s.token(t, quorum.ServiceUser, "", "admin2", "admin3")
		if _, err := s.e.CreateUser(WithApproval(ctx, tok, "", ""), admin, "cu2", RoleCryptoUser, "cu2pass2"); err != nil {
			t.Fatal(err)
		}
		cu, err := s.e.Login(ctx, "cu1", RoleCryptoUser, "cu1pass1")
		if err != nil {
			t.Fatal(err)
		}
		cu2, err := s.e.Login(ctx, "cu2", RoleCryptoUser, "cu2pass2")
		if err != nil {
			t.Fatal(err)
		}
		keys, err := s.e.GenerateKey(ctx, cu, KeySpec{Type: TypeEC, Curve: "secp256r1", PublicLabel: "q", PrivateLabel: "q", ShareWith: []string{"cu2"}, UseQuorum: 2})
		if err != nil {
			t.Fatal(err)
		}
		ref := keys[1].Ref
		req := SignRequest{Ref: ref, Mechanism: MechECDSA, Hash: crypto.SHA256, Data: []byte("unapproved")}
		for _, c := range []Caller{cu, cu2} {
			for _, h := range inProcessHSMs(s.e) {
				if !h.Has(ref) {
					continue
				}
				err := sendSealed(t, s.e, c, directDoor(h), h.id, protocol.CallSign, protocol.SignArgs{Req: req})
				mustRefuse(t, c.Username+"'s sign on "+h.id, err, quorum.ErrApprovalRequired, "crypto-user")
			}
			if _, err := s.e.Sign(ctx, c, req); !errors.Is(err, quorum.ErrApprovalRequired) {
				t.Errorf("%s's sign through the library: %v", c.Username, err)
			}
		}
		got, err := s.e.Keys(ctx, cu, Filter{Ref: &ref})
		if err != nil || len(got) != 1 || got[0].Info.QuorumValues.Use != 2 || len(got[0].Info.SharedUsers) != 1 {
			t.Errorf("the key after the attempts: %+v, %v", got, err)
		}
	})
}

// A user deleted by an admin is no longer someone who proved who they
// are: the sessions it opened before must not go on changing state. (An
// attacker who learns a user was removed — a departing employee — keeps
// their open session; a deleted admin keeps administering.)
func TestAdversaryDeletedUsersSessionIsRefused(t *testing.T) {
	r := newEnvelopeRig(t)
	ctx := context.Background()
	if _, err := r.e.CreateUser(ctx, r.admin, "admin2", RoleAdmin, "admin2pass"); err != nil {
		t.Fatal(err)
	}
	admin2, err := r.e.Login(ctx, "admin2", RoleAdmin, "admin2pass")
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range []struct {
		name string
		role Role
	}{{"cu2", RoleCryptoUser}, {"admin2", RoleAdmin}} {
		if err := r.e.DeleteUser(ctx, r.admin, u.name, u.role); err != nil {
			t.Fatal(err)
		}
	}
	for _, h := range r.hsms {
		err := sendSealed(t, r.e, r.cu2, directDoor(h), h.id, protocol.CallGenerateKey, protocol.GenerateArgs{Spec: KeySpec{Type: TypeAES, Label: "ghost", LengthBytes: 32}, Ref: protocol.NewRef()})
		if err == nil {
			t.Errorf("BUG: %s made a key for cu2, a deleted user, in the session cu2 opened before it was deleted (sessionhsm.go serveAs trusts the EKT's user and role and never checks the user still exists)", h.id)
		}
		name := "mallory_" + strings.ReplaceAll(h.id, "-", "")
		err = sendSealed(t, r.e, admin2, directDoor(h), h.id, protocol.CallCreateUser, protocol.UserArgs{Username: name, Role: RoleAdmin, Password: "mallorypass"})
		if err == nil {
			t.Errorf("BUG: %s let admin2, a deleted admin, create the admin %s in its old session", h.id, name)
		}
	}
}

// User replicate (import-user) makes a user as create-user does, so it
// needs the user service's approval as create-user does: otherwise one
// admin alone brings back a user the quorum deleted (or, from a clone,
// any user) while the user quorum is 2.
func TestAdversaryUserReplicateNeedsTheUserQuorum(t *testing.T) {
	s := newApproverSet(t) // user quorum 2
	ctx := context.Background()
	admin := s.admins["admin"]
	saved, err := s.e.ExportUser(ctx, admin, "cu1", RoleCryptoUser)
	if err != nil {
		t.Fatal(err)
	}
	tok := s.token(t, quorum.ServiceUser, "", "admin2", "admin3")
	if err := s.e.DeleteUser(WithApproval(ctx, tok, "", ""), admin, "cu1", RoleCryptoUser); err != nil {
		t.Fatal(err)
	}
	h := inProcessHSMs(s.e)[0]
	err = sendSealed(t, s.e, admin, directDoor(h), h.id, protocol.CallImportUser, protocol.ImportWrappedArgs{Key: saved.Blob()})
	if !errors.Is(err, quorum.ErrApprovalRequired) {
		t.Errorf("BUG: import-user with no approval while the user quorum is 2: %v; want quorum.ErrApprovalRequired (backup.go importUser never calls approveIn)", err)
	}
	if _, err := s.e.Login(ctx, "cu1", RoleCryptoUser, "cu1pass1"); err == nil {
		t.Error("BUG: cu1, deleted with the quorum's approval, was brought back by one admin and logs in with its old password")
	}
}
