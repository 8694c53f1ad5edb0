package hsm

// Key material stays inside the HSMs: nothing that crosses the boundary
// between the client library and an HSM — a bare call, a session
// envelope (opened here with the session key, so the plaintext is
// searched too), an answer or an error — holds a secret or private key's
// material, in any encoding.

import (
	"bytes"
	"context"
	"crypto"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hsmsh/hsmsh/hsmcore/client"
	"github.com/hsmsh/hsmsh/hsmcore/protocol"
	"github.com/hsmsh/hsmsh/hsmcore/quorum"

	"github.com/hsmsh/hsmsh/hsmcore/authsession"
)

// boundary records every message between the client library and the
// HSMs, at the HSMs' doors.
type boundary struct {
	mu    sync.Mutex
	msgs  []boundaryMsg
	calls map[string]int // method (a sealed call as "enveloped/METHOD") → count
	blobs int            // wrapped keys seen (in answers and in calls)
	plain int            // envelopes opened
	errs  []string       // envelopes that did not open: the test would be blind
}

type boundaryMsg struct {
	what string // "hsm-1 sign request (plaintext)" and the like
	b    []byte
}

func (r *boundary) add(what string, b []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.msgs = append(r.msgs, boundaryMsg{what, bytes.Clone(b)})
}

func (r *boundary) count(method string, blobs int, opened bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls[method]++
	r.blobs += blobs
	if opened {
		r.plain++
	}
}

func (r *boundary) fail(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errs = append(r.errs, fmt.Sprintf(format, args...))
}

// recorded is an HSM whose door records each call's arguments and answer
// as they cross, as the client library sends and receives them.
type recorded struct {
	*Device
	r *boundary
}

func (d recorded) Serve(method string, args []byte) ([]byte, error) {
	h := d.h
	d.r.add(h.id+" "+method+" request", args)
	out, err := d.Device.Serve(method, args)
	if err != nil {
		d.r.add(h.id+" "+method+" error", []byte(err.Error()))
	} else {
		d.r.add(h.id+" "+method+" answer", out)
	}
	d.r.open(h, method, args, out, err)
	return out, err
}

// open records the plaintext of a sealed call and its sealed answer,
// opened with the session key its EKT carries (this test holds the
// domain key; the client library holds the session key).
func (r *boundary) open(h *hsm, method string, args, out []byte, callErr error) {
	var env authsession.Envelope
	switch method {
	case protocol.CallEnveloped:
		if err := protocol.DecodeArgs(method, args, &env); err != nil {
			r.fail("%s: enveloped: %v", h.id, err)
			return
		}
	case protocol.CallAuthenticate:
		var a protocol.AuthArgs
		if err := protocol.DecodeArgs(method, args, &a); err != nil {
			r.fail("%s: authenticate: %v", h.id, err)
			return
		}
		env = a.Envelope
	default:
		r.count(method, 0, false)
		return
	}
	h.mu.RLock()
	d := h.domain
	h.mu.RUnlock()
	if d == nil {
		r.fail("%s: %s with no domain key to open it", h.id, method)
		return
	}
	sk, _, err := authsession.OpenEKT(*d, env.EKT, time.Time{})
	if err != nil {
		r.fail("%s: %s: the EKT: %v", h.id, method, err)
		return
	}
	plain, err := authsession.Open(sk, authsession.ToHSM, env.EKT, env)
	if err != nil {
		r.fail("%s: %s: the request: %v", h.id, method, err)
		return
	}
	inner := method
	blobs := 0
	if method == protocol.CallEnveloped {
		c, err := protocol.DecodeSessionCall(plain)
		if err != nil {
			r.fail("%s: the sealed call: %v", h.id, err)
			return
		}
		inner = protocol.CallEnveloped + "/" + c.Method
		if c.Method == protocol.CallImportWrapped {
			var a protocol.ImportWrappedArgs
			if c.DecodeArgs(&a) == nil && a.Key != nil && len(a.Key.Body) > 0 {
				blobs++
			}
		}
	}
	r.add(h.id+" "+inner+" request (plaintext)", plain)
	if callErr == nil {
		var resp authsession.Envelope
		if err := protocol.DecodeAnswer(method, out, &resp); err != nil {
			r.fail("%s: %s answered no envelope: %v", h.id, inner, err)
			return
		}
		ans, err := authsession.Open(sk, authsession.ToClient, env.EKT, resp)
		if err != nil {
			r.fail("%s: %s: the answer: %v", h.id, inner, err)
			return
		}
		r.add(h.id+" "+inner+" answer (plaintext)", ans)
		res, rerr := protocol.DecodeSessionResult(ans)
		if method == protocol.CallEnveloped && rerr == nil && res.Code == "" {
			var made protocol.CreateReply
			var w protocol.WrappedKey
			switch {
			case strings.HasSuffix(inner, "/"+protocol.CallGenerateKey) || strings.HasSuffix(inner, "/"+protocol.CallImportKey):
				if res.DecodeAnswer(strings.TrimPrefix(inner, protocol.CallEnveloped+"/"), &made) == nil {
					for _, x := range made.Wrapped {
						if x != nil && len(x.Body) > 0 {
							blobs++
						}
					}
				}
			case strings.HasSuffix(inner, "/"+protocol.CallExportWrapped):
				if res.DecodeAnswer(protocol.CallExportWrapped, &w) == nil && len(w.Body) > 0 {
					blobs++
				}
			}
		}
	}
	r.count(inner, blobs, true)
}

// secretForms are the ways material could show up in a message: raw, in
// base64 (each alphabet, padded or not), in hex (either case), and for a
// private key its secret numbers (privateSecrets, fuzz_test.go).
func secretForms(material []byte) []string {
	out := []string{
		string(material),
		base64.StdEncoding.EncodeToString(material), base64.RawStdEncoding.EncodeToString(material),
		base64.URLEncoding.EncodeToString(material), base64.RawURLEncoding.EncodeToString(material),
		hex.EncodeToString(material), strings.ToUpper(hex.EncodeToString(material)),
	}
	return append(out, privateSecrets(material)...)
}

// expand returns b and what its base64 strings decode to, to depth 3: a
// secret base64 inside JSON that was itself base64'd (a blob's body in
// clear) shows only once decoded, at an offset base64 does not align.
func expand(b []byte, depth int) [][]byte {
	out := [][]byte{b}
	if depth == 0 {
		return out
	}
	isB64 := func(c byte) bool {
		return c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '+' || c == '/' || c == '-' || c == '_' || c == '='
	}
	for i := 0; i < len(b); {
		if !isB64(b[i]) {
			i++
			continue
		}
		j := i
		for j < len(b) && isB64(b[j]) {
			j++
		}
		if run := string(b[i:j]); len(run) >= 16 {
			for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
				if d, err := enc.DecodeString(run); err == nil {
					out = append(out, expand(d, depth-1)...)
					break
				}
			}
		}
		i = j
	}
	return out
}

// leaks says which secret (by name) a message holds, or "".
func leaks(msg []byte, secrets map[string][]string) string {
	for _, b := range expand(msg, 3) {
		for name, forms := range secrets {
			for _, f := range forms {
				if len(f) >= 8 && bytes.Contains(b, []byte(f)) {
					return name
				}
			}
		}
	}
	return ""
}

// TestNoKeyMaterialReachesTheClient drives a cluster end to end — token
// keys made and copied by client-side sync, a key made while an HSM is
// down and copied later by server-side sync, signing, sharing, a key
// exported and replicated as a blob, and a backup — recording every
// message between the client library and the HSMs, then checks that no
// secret or private key's material is in any of them, in any encoding,
// sealed envelopes included (opened here).
func TestNoKeyMaterialReachesTheClient(t *testing.T) {
	rec := &boundary{calls: map[string]int{}}
	e, err := openTest(Options{ID: "nm", HSMs: 3, Transport: TransportDirect, Durability: Durability{MinimumNodes: 2}}, nil,
		func(d *Device) client.Device { return recorded{d, rec} })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })

	ctx := context.Background()
	admin, cu := activate(t, e)
	if _, err := e.CreateUser(ctx, admin, "cu2", RoleCryptoUser, "cu2pass2"); err != nil {
		t.Fatal(err)
	}
	cu2, err := e.Login(ctx, "cu2", RoleCryptoUser, "cu2pass2")
	if err != nil {
		t.Fatal(err)
	}
	pair, err := e.GenerateKey(ctx, cu, KeySpec{Type: TypeEC, Curve: "secp256r1", PublicLabel: "ec-pub", PrivateLabel: "ec-priv"})
	if err != nil {
		t.Fatal(err)
	}
	aes, err := e.GenerateKey(ctx, cu, KeySpec{Type: TypeAES, Label: "aes", LengthBytes: 32})
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range append(pair, aes...) {
		if k.Info.ClusterCoverage != CoverageFull || len(k.Info.HSMCoverage) != 3 {
			t.Fatalf("key %s did not reach all three HSMs by client-side sync: %+v", k.Ref, k.Info.HSMCoverage)
		}
	}
	e.PauseSync()
	if err := e.FailHSM("hsm-3", false); err != nil {
		t.Fatal(err)
	}
	late, err := e.GenerateKey(ctx, cu, KeySpec{Type: TypeAES, Label: "made-while-down", LengthBytes: 32})
	if err != nil {
		t.Fatal(err)
	}
	if late[0].Info.HSMCoverage["hsm-3"] {
		t.Fatal("the down HSM got the key")
	}
	if err := e.RecoverHSM("hsm-3"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.SyncNow(ctx); err != nil {
		t.Fatal(err)
	}
	if got := coverage(t, e, late[0].Ref); len(got) != 3 {
		t.Fatalf("server-side sync left the late key on %v", got)
	}
	priv := pair[1].Ref
	req := SignRequest{Ref: priv, Mechanism: MechECDSA, Hash: crypto.SHA256, Data: []byte("no material")}
	sig, err := e.Sign(ctx, cu, req)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Verify(ctx, cu, SignRequest{Ref: pair[0].Ref, Mechanism: MechECDSA, Hash: crypto.SHA256, Data: req.Data}, sig); err != nil {
		t.Fatal(err)
	}
	if _, err := e.PublicKeyPEM(ctx, cu, priv); err != nil {
		t.Fatal(err)
	}
	if _, err := e.ShareKey(ctx, cu, priv, "cu2", true); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Sign(ctx, cu2, req); err != nil {
		t.Fatalf("cu2's sign with the shared key: %v", err)
	}
	kc, err := e.ExportKey(ctx, cu, aes[0].Ref)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.ReplicateKey(ctx, cu, kc); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Keys(ctx, admin, Filter{}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := e.CreateBackup(ctx, admin, "backuppass"); err != nil {
		t.Fatal(err)
	}

	// The material, from inside the HSMs.
	secrets := map[string][]string{}
	held := 0
	for _, h := range devices(e) {
		h.mu.RLock()
		for ref, r := range h.keys {
			if r.Attrs.Class == ClassPublic {
				continue // public keys are not secret: get-public-key serves them
			}
			held++
			secrets[fmt.Sprintf("%s's %s %s", h.id, r.Attrs.Class, ref)] = secretForms(r.Material)
		}
		h.mu.RUnlock()
	}
	if held != 9 {
		t.Fatalf("the HSMs hold %d secret and private keys, want 3 on each of 3", held)
	}

	rec.mu.Lock()
	defer rec.mu.Unlock()
	// Not vacuous: the recorder saw the traffic, opened every envelope,
	// and saw the wrapped blobs go by; the search finds material when it
	// is there, even base64'd inside base64.
	for _, why := range rec.errs {
		t.Errorf("the recorder is blind to a message: %s", why)
	}
	if len(rec.msgs) < 50 || rec.plain < 20 {
		t.Errorf("only %d messages recorded, %d envelopes opened", len(rec.msgs), rec.plain)
	}
	for _, m := range []string{protocol.CallHandshake, protocol.CallAuthenticate, protocol.CallUsers, protocol.CallEnveloped + "/" + protocol.CallGenerateKey, protocol.CallEnveloped + "/" + protocol.CallImportWrapped,
		protocol.CallEnveloped + "/" + protocol.CallExportWrapped, protocol.CallEnveloped + "/" + protocol.CallSign, protocol.CallEnveloped + "/" + protocol.CallKeyChange, protocol.CallEnveloped + "/" + protocol.CallSnapshot, protocol.CallEnveloped + "/" + protocol.CallBackup} {
		if rec.calls[m] == 0 {
			t.Errorf("no %s call was recorded; calls: %v", m, rec.calls)
		}
	}
	if rec.blobs < 4 {
		t.Errorf("only %d wrapped keys were seen crossing", rec.blobs)
	}
	for name, forms := range secrets {
		inClear, _ := json.Marshal(map[string]any{"body": []byte(`{"material":"` + base64.StdEncoding.EncodeToString([]byte(forms[0])) + `"}`)})
		if leaks(inClear, map[string][]string{name: forms}) == "" {
			t.Fatalf("the search misses %s base64'd inside base64", name)
		}
		break
	}

	for _, m := range rec.msgs {
		if name := leaks(m.b, secrets); name != "" {
			t.Errorf("%s holds the material of %s: %s", m.what, name, excerpt(string(m.b)))
		}
	}
	{
		names := make([]string, 0, len(rec.calls))
		for m, n := range rec.calls {
			names = append(names, fmt.Sprintf("%s×%d", m, n))
		}
		sort.Strings(names)
		t.Logf("calls recorded: %s", strings.Join(names, " "))
	}
}

// A backup holds every key's material and the domain key, sealed under a
// password whoever takes it knows: with the domain key a session token
// can be forged for any user. So taking one needs the quorum service's M
// admins, as changing quorum settings does: with M = 2 one admin alone is
// refused, and the same admin with a second approver gets the backup.
// (With quorum off, M = 1, any admin can: SECURITY.md says so.)
func TestBackupTakesTheQuorumOfAdmins(t *testing.T) {
	s := newApproverSet(t) // quorum service value 2
	ctx := context.Background()
	admin := s.admins["admin"]
	if _, _, err := s.e.CreateBackup(ctx, admin, "backuppass"); !errors.Is(err, quorum.ErrApprovalRequired) {
		t.Fatalf("one admin's backup with quorum 2: %v; want quorum.ErrApprovalRequired", err)
	}
	// Without an approval nothing was sealed for the admin to open; with
	// two approvers' signatures the backup is taken.
	tok := s.token(t, quorum.ServiceQuorum, "", "admin2", "admin3")
	file, _, err := s.e.CreateBackup(WithApproval(ctx, tok, "", ""), admin, "backuppass")
	if err != nil {
		t.Fatalf("backup with two approvals: %v", err)
	}
	if _, _, err := openBackup(file, "backuppass"); err != nil {
		t.Fatalf("the approved backup does not open: %v", err)
	}
	// The approval is single use: the same token does not buy a second.
	if _, _, err := s.e.CreateBackup(WithApproval(ctx, tok, "", ""), admin, "backuppass"); err == nil || !strings.Contains(err.Error(), "already used") {
		t.Errorf("a second backup on the same approval: %v", err)
	}
}
