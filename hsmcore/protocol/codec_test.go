package protocol

import (
	"bytes"
	"crypto"
	"fmt"
	"maps"
	"math"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/hsmsh/hsmsh/hsmcore/authsession"
	"github.com/hsmsh/hsmsh/hsmcore/protocol/pb"
)

// sample is one call's arguments and answer, as the Go values both ends
// use (nil: the call takes or answers nothing).
type sample struct {
	method       string
	args, answer any
}

// samples are representative values of every typed call: zero values,
// nil and set pointers (a set one empty too), nil and filled lists and
// maps, unicode, a large byte string, times with nanoseconds and the zero
// time. The round-trip test and the fuzz target's seeds use them.
func samples() []sample {
	req := SignRequest{Ref: 0x1234, Mechanism: MechRSAPKCSPS, Hash: crypto.SHA384, Data: []byte("data"), Digest: true, SaltLength: 48}
	created := time.Date(2025, 3, 14, 15, 9, 26, 535897932, time.UTC)
	attrs := Attributes{KeyType: TypeEC, Label: "clé de signature ✍", ID: "id-1", CheckValue: "0x1a2b3c", Class: ClassPrivate,
		Decrypt: true, Token: true, AlwaysSensitive: true, Destroyable: true, Local: true, Modifiable: true, NeverExtractable: true,
		Private: true, Sensitive: true, Sign: true, Unwrap: true, KeyLengthBytes: 32, ECPoint: "0x04ab", Curve: "secp256r1"}
	meta := KeyMeta{Ref: 0x7fff_ffff_ffff_fffe, Attrs: attrs, Owner: "cu1", Shared: []string{"cu2", "cu3"}, UseQuorum: 2,
		ManageQuorum: 1, Created: created, Session: "sess-1"}
	pub := KeyMeta{Ref: 1, Attrs: Attributes{KeyType: TypeRSA, Class: ClassPublic, Verify: true, Modulus: "0xc0ffee",
		ModulusSizeBits: 2048, PublicExponent: "0x10001", MLDSAAlgorithm: "ML-DSA-65"}, Owner: "cu1", Created: created}
	big := bytes.Repeat([]byte{0xa5, 0x00, 0xff}, 1<<20/3) // a wrapped blob near a MiB
	wrapped := &WrappedKey{Domain: "dom-1", Ref: 7, Body: big}
	appr := &Approval{Token: []byte(`{"version":"2.0"}`), Command: "key set-attribute --name label --value ✓"}
	spec := KeySpec{Type: TypeRSA, Label: "ключ", PublicLabel: "pub", PrivateLabel: "priv", LengthBytes: 32, Curve: "secp384r1",
		ModulusBits: 4096, Exponent: 65537, MLDSAParams: "ML-DSA-87", Session: true,
		Attributes: map[string]string{"sign": "true", "label": "ü"}, PublicAttributes: map[string]string{"verify": "true"},
		PrivateAttributes: map[string]string{"sensitive": "true"}, ShareWith: []string{"cu2"}, MinServers: 2, UseQuorum: 1, ManageQuorum: 2}
	zero := 0
	ref0 := Ref(0)
	params := WrapParams{Mechanism: WrapAESGCM, TagLengthBits: 128, AAD: []byte("aad"), IV: []byte("iv-iv-iv-iv-"), Hash: "sha256", MGF: "mgf1-sha256"}
	settings := QuorumSettings{Values: map[string]int{"user": 2, "quorum": 3}, GeneratedS: 600, ApprovedS: 300, Updated: 1_700_000_000_123_456_789}
	view := UserView{Username: "cu1", Role: RoleCryptoUser, Locked: true, QuorumKey: true, MFA: true, Updated: -1}
	stats := SyncStats{Copied: 3, Deleted: 1, Users: 2, Failed: 1, Took: 1500*time.Millisecond + 1, TookMS: 1500.000001}
	return []sample{
		// Bare.
		{CallInfo, nil, HSMInfo{ID: "hsm-1", State: StateActive, Address: "10.0.0.1:2223", TokenKeyCount: &zero, UserCount: 4,
			LatencyMS: 0.125, TLS: "TLS 1.3", Identity: "sha256:ab", Domain: "dom-1",
			Raft: &RaftInfo{Role: "leader", Leader: "hsm-1", Term: 9, CommitIndex: 1 << 40, AppliedIndex: 1<<40 - 1, LastContact: "0s", Voters: 3}}},
		{CallInfo, nil, HSMInfo{ID: "hsm-2", State: StateDown}}, // nil count, nil raft
		{CallInfo, nil, HSMInfo{Raft: &RaftInfo{}}},             // a raft info, all zero
		{CallDomainInfo, nil, DomainInfo{ID: "hsm-1", Identity: []byte{0x30, 0x76}, Domain: "dom-1",
			Members: map[string][]byte{"hsm-1": {0x30, 1}, "hsm-2": {0x30, 2}}}},
		{CallDomainInfo, nil, DomainInfo{}},
		{CallHandshake, HandshakeArgs{Hello: &authsession.Hello{Client: "client-ü", Q1: []byte{4, 1, 2}, Sig: []byte{0x30}},
			ClientKey: []byte{0x30, 0x59}, User: "cu1", Lifetime: 8*time.Hour + time.Nanosecond},
			&authsession.Reply{HSM: "hsm-1", Q2: []byte{4, 9}, ESK: []byte("esk"), EKT: []byte("ekt"), Sig: []byte("sig")}},
		{CallHandshake, HandshakeArgs{}, authsession.Reply{}}, // no hello
		{CallAuthenticate, AuthArgs{EKT: []byte("ekt"), Envelope: authsession.Envelope{EKT: []byte("ekt"), Seq: 1 << 63, Body: []byte("sealed")}},
			authsession.Envelope{Seq: 1, Body: []byte("verdict")}},
		{CallActivate, ActivateArgs{Password: "pässwörd ✓"}, nil},
		{CallActivate, ActivateArgs{}, nil},
		{CallUsers, nil, []UserView{view, {Username: "admin", Role: RoleAdmin}}},
		{CallUsers, nil, []UserView(nil)},
		{CallQuorumValues, nil, settings},
		{CallQuorumValues, nil, QuorumSettings{}},
		{CallEnveloped, authsession.Envelope{EKT: []byte("ekt"), Seq: 7<<48 | 3, Body: []byte("sealed")}, authsession.Envelope{Seq: 9, Body: []byte("answer")}},
		{CallMTLSState, nil, MTLSState{Anchors: []TrustAnchor{{Ref: 1, DER: []byte{0x30, 0x82}}, {Ref: 2, DER: big}}, Level: MTLSCluster, Updated: 42}},
		{CallMTLSState, nil, MTLSState{}},

		// Session: key use.
		{CallSign, SignArgs{Req: req}, []byte("signature")},
		{CallSign, SignArgs{Req: req, Approval: appr}, []byte{}},
		{CallVerify, VerifyArgs{Req: req, Sig: []byte("sig")}, nil},
		{CallHas, Ref(0xffffffffffffffff), true},
		{CallRefTaken, Ref(1), false},
		{CallDeleteKey, Ref(42), nil},
		{CallPublicKey, Ref(42), []byte("-----BEGIN PUBLIC KEY-----\n")},
		// Session: keys.
		{CallKeyMeta, Ref(0x1234), meta},
		{CallKeyMeta, Ref(0), KeyMeta{}},
		{CallSnapshot, SnapshotArgs{Filter: Filter{Ref: &ref0, Attrs: map[string]string{"label": "ключ", "class": ClassPrivate}}, After: 99},
			SnapshotReply{Keys: []KeyMeta{meta, pub}, More: true}},
		{CallSnapshot, SnapshotArgs{}, SnapshotReply{}},
		{CallGenerateKey, GenerateArgs{Spec: spec, Ref: 0x42, Wrap: true, Stage: true},
			&CreateReply{Keys: []KeyMeta{pub, meta}, Wrapped: []*WrappedKey{wrapped, {Domain: "dom-1", Ref: 8}}, Staged: true}},
		{CallGenerateKey, GenerateArgs{Spec: KeySpec{Type: TypeAES, Label: "bench", LengthBytes: 32}, Ref: 1}, CreateReply{Keys: []KeyMeta{meta}}},
		{CallImportKey, ImportArgs{Spec: ImportSpec{PEM: []byte("-----BEGIN PUBLIC KEY-----"), Label: "imported ✓", Class: "ec-public",
			Attributes: map[string]string{"verify": "true"}, Session: true, MinServers: 3}, Ref: 5, Wrap: true}, CreateReply{}},
		{CallExportWrapped, Ref(7), wrapped},
		{CallExportWrapped, Ref(7), WrappedKey{}},
		{CallImportWrapped, ImportWrappedArgs{Key: wrapped}, nil},
		{CallImportWrapped, ImportWrappedArgs{Key: &WrappedKey{}, Approval: &Approval{}}, nil}, // set, and empty
		{CallImportWrapped, ImportWrappedArgs{}, nil},                                          // nil key, nil approval
		{CallKeyChange, KeyChangeArgs{Ref: 3, Op: OpSetAttribute, User: "cu2", Name: "label", Value: "nouvelle étiquette", Approval: appr}, meta},
		{CallWrapKey, WrapArgs{Params: params, Payload: 1, Wrapping: 2, PayloadApproval: appr, WrappingApproval: &Approval{Command: "x"}},
			&WrapReply{IV: []byte("iv"), Data: big}},
		{CallWrapKey, WrapArgs{}, WrapReply{}},
		{CallUnwrapKey, UnwrapArgs{Spec: UnwrapSpec{Params: params, Unwrapping: 2, Data: big, KeyTypeClass: "rsa-private", Label: "déballé",
			Attributes: map[string]string{"sign": "true"}, Session: true, ShareWith: []string{"cu2", "cu3"}, UseQuorum: 2, ManageQuorum: 1,
			MinServers: 2, Approval: appr}, Ref: 77, Wrap: true}, &CreateReply{Keys: []KeyMeta{meta}}},
		{CallUnwrapKey, UnwrapArgs{}, CreateReply{}},
		// Session: the session.
		{CallDestroySession, "sess-ü", 3},
		{CallDestroySession, "", 0},
		{CallEndSession, "sess-1", nil},
		// Session: users.
		{CallCreateUser, UserArgs{Username: "cu1", Role: RoleCryptoUser, Password: "pässwörd1", Approval: appr}, view},
		{CallCreateUser, UserArgs{}, UserView{}},
		{CallRemoveUser, UserArgs{Username: "cu1", Role: RoleCryptoUser}, nil},
		{CallSetPassword, UserArgs{Username: "admin", Role: RoleAdmin, Password: "секретный"}, nil},
		{CallOwns, "cu1", true},
		{CallExportUser, UserArgs{Username: "cu1", Role: RoleCryptoUser}, &WrappedKey{Domain: "dom-1", User: "cu1", Body: []byte("sealed")}},
		{CallImportUser, ImportWrappedArgs{Key: &WrappedKey{Domain: "dom-1", User: "cu1", Body: []byte("sealed")}, Approval: appr}, nil},
		{CallRegisterMFA, RegisterArgs{PubPEM: []byte("-----BEGIN PUBLIC KEY-----"), File: []byte("{}")}, nil},
		{CallDeregisterMFA, UserArgs{Username: "cu1", Role: RoleCryptoUser}, nil},
		{CallRegisterQuorum, RegisterArgs{PubPEM: []byte("pem"), File: big}, nil},
		{CallDeregisterQuorum, UserArgs{Username: "admin", Role: RoleAdmin, Approval: appr}, nil},
		// Session: quorum, backup, mTLS.
		{CallQuorumList, nil, QuorumList{Settings: settings, Tokens: []*Token{
			{Nonce: "n1", ApprovalData: []byte("data"), Service: "user", Requester: "admin", Expires: created},
			{Nonce: "n2", Service: "quorum", Requester: "admin2", Expires: created.Add(time.Hour), Used: created.Add(time.Minute), Signers: []string{"a", "b"}},
		}}},
		{CallQuorumList, nil, QuorumList{}},
		{CallIssueToken, IssueArgs{Service: "key-usage", KeyRef: &ref0, Command: "crypto sign", Cluster: "cluster-1"}, []byte("token file")},
		{CallIssueToken, IssueArgs{Service: "user", Cluster: "cluster-1"}, []byte(nil)},
		{CallDeleteTokens, DeleteTokensArgs{All: true}, 7},
		{CallDeleteTokens, DeleteTokensArgs{}, 0},
		{CallSetQuorum, SetQuorumArgs{Service: "user", Value: 3, Generated: 10*time.Minute + 1, Approved: -time.Second, Approval: appr}, nil},
		{CallSetQuorum, SetQuorumArgs{}, nil},
		{CallBackup, BackupArgs{Cluster: "cluster-1", Key: bytes.Repeat([]byte{1}, 32), Approval: appr,
			Info: BackupInfo{Format: BackupFormat, Cluster: "cluster-1", HSM: "hsm-1", Domain: "dom-1", Created: created, Keys: 100000,
				Users: 12, Salt: bytes.Repeat([]byte{2}, 16), Time: 2, Memory: 19 * 1024, Threads: 255}}, big},
		{CallBackup, BackupArgs{}, []byte{}},
		{CallMTLSRegister, MTLSArgs{CertPEM: []byte("-----BEGIN CERTIFICATE-----"), Approval: appr}, MTLSState{Anchors: []TrustAnchor{{Ref: 1, DER: []byte{1}}}}},
		{CallMTLSDeregister, MTLSArgs{Ref: 2}, MTLSState{Level: MTLSNone, Updated: 1}},
		{CallMTLSSetLevel, MTLSArgs{Level: MTLSCluster}, MTLSState{}},

		// Lab.
		{CallSyncNow, nil, stats},
		{CallSyncPause, nil, SyncStatus{Paused: true, Interval: time.Minute, Last: stats}},
		{CallSyncResume, nil, SyncStatus{Interval: 30 * time.Second, Next: created}},
		{CallSyncStatus, nil, SyncStatus{}},
	}
}

// Each typed call's arguments and answer survive the trip, bare and (for
// a session call) inside a session call and result, in the Go types both
// ends use.
func TestTypedRoundTrip(t *testing.T) {
	seen := map[string]bool{}
	for i, s := range samples() {
		seen[s.method] = true
		t.Run(fmt.Sprintf("%s/%d", s.method, i), func(t *testing.T) {
			if _, _, ok := TypedMessages(s.method); !ok {
				t.Fatalf("%s is not a typed call", s.method)
			}
			roundTrip(t, s)
		})
	}
	for m := range typedCalls {
		if !seen[m] {
			t.Errorf("typed call %s has no sample", m)
		}
	}
}

// roundTrip sends s's arguments and answer both ways a call can go, and
// requires each to come back the same.
func roundTrip(t *testing.T, s sample) {
	t.Helper()
	check := func(what string, v any, enc func(string, any) ([]byte, error), dec func(string, []byte, any) error) {
		t.Helper()
		b, err := enc(s.method, v)
		if err != nil {
			t.Fatalf("%s: encode: %v", what, err)
		}
		if v == nil {
			if len(b) != 0 {
				t.Fatalf("%s: nothing encoded as %d bytes", what, len(b))
			}
			return
		}
		got := reflect.New(reflect.TypeOf(v))
		if err := dec(s.method, b, got.Interface()); err != nil {
			t.Fatalf("%s: decode: %v", what, err)
		}
		if !sameGo(got.Elem().Interface(), v) {
			t.Errorf("%s: got %#v, want %#v", what, got.Elem().Interface(), v)
		}
	}
	check("arguments", s.args, EncodeArgs, DecodeArgs)
	check("answer", s.answer, EncodeAnswer, DecodeAnswer)
	if Calls[s.method] != ClassSession {
		return
	}
	c, err := NewSessionCall("hsm-1", s.method, s.args)
	if err != nil {
		t.Fatalf("session call: %v", err)
	}
	b, err := EncodeSessionCall(c)
	if err != nil {
		t.Fatalf("session call: encode: %v", err)
	}
	d, err := DecodeSessionCall(b)
	if err != nil || d.HSM != "hsm-1" || d.Method != s.method {
		t.Fatalf("session call: decoded %+v, %v", d, err)
	}
	if s.args != nil {
		got := reflect.New(reflect.TypeOf(s.args))
		if err := d.DecodeArgs(got.Interface()); err != nil || !sameGo(got.Elem().Interface(), s.args) {
			t.Errorf("session call: arguments %#v, %v; want %#v", got.Elem().Interface(), err, s.args)
		}
	} else if d.msg != nil {
		t.Errorf("session call: a call without arguments carries a %T", d.msg)
	}
	r, err := NewSessionResult(s.method, s.answer)
	if err != nil {
		t.Fatalf("session result: %v", err)
	}
	if b, err = EncodeSessionResult(r); err != nil {
		t.Fatalf("session result: encode: %v", err)
	}
	rd, err := DecodeSessionResult(b)
	if err != nil {
		t.Fatalf("session result: decode: %v", err)
	}
	if s.answer != nil {
		got := reflect.New(reflect.TypeOf(s.answer))
		if err := rd.DecodeAnswer(s.method, got.Interface()); err != nil || !sameGo(got.Elem().Interface(), s.answer) {
			t.Errorf("session result: answer %#v, %v; want %#v", got.Elem().Interface(), err, s.answer)
		}
	} else if rd.msg != nil {
		t.Errorf("session result: a call without an answer carries a %T", rd.msg)
	}
}

// Every field of every Go type a typed call carries survives the trip:
// each is filled with a value of its own (no zero value, which proto3
// leaves out and would hide a forgotten field), every pointer set, every
// list and map two long.
func TestEveryFieldSurvives(t *testing.T) {
	for _, m := range slices.Sorted(maps.Keys(typedCalls)) {
		tc := typedCalls[m]
		for _, part := range []struct {
			name string
			c    codec
		}{{"args", tc.args}, {"answer", tc.answer}} {
			p := part.c.newGo()
			if p == nil {
				continue
			}
			n := 0
			fill(reflect.ValueOf(p).Elem(), &n)
			s := sample{method: m}
			v := reflect.ValueOf(p).Elem().Interface()
			if part.name == "args" {
				s.args = v
				if tc.answer.newGo() != nil {
					s.answer = reflect.ValueOf(tc.answer.newGo()).Elem().Interface()
				}
			} else {
				s.answer = v
				if tc.args.newGo() != nil {
					s.args = reflect.ValueOf(tc.args.newGo()).Elem().Interface()
				}
			}
			t.Run(m+"/"+part.name, func(t *testing.T) { roundTrip(t, s) })
		}
	}
}

var timeType = reflect.TypeFor[time.Time]()

// fill gives every field reachable from v a distinct, non-zero value.
func fill(v reflect.Value, n *int) {
	*n++
	if v.Type() == timeType {
		v.Set(reflect.ValueOf(time.Unix(1_700_000_000+int64(*n), int64(*n)*1001).UTC()))
		return
	}
	switch v.Kind() {
	case reflect.String:
		v.SetString(fmt.Sprintf("välue %d ✓", *n))
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		v.SetInt(int64(*n) * 1009)
	case reflect.Uint8:
		v.SetUint(uint64(*n%250 + 1))
	case reflect.Uint, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		v.SetUint(uint64(*n) * 7919)
	case reflect.Float32, reflect.Float64:
		v.SetFloat(float64(*n) + 0.25)
	case reflect.Slice:
		if v.Type().Elem().Kind() == reflect.Uint8 {
			v.SetBytes(bytes.Repeat([]byte{byte(*n)}, 3))
			return
		}
		v.Set(reflect.MakeSlice(v.Type(), 2, 2))
		for i := range 2 {
			fill(v.Index(i), n)
		}
	case reflect.Map:
		v.Set(reflect.MakeMap(v.Type()))
		for range 2 {
			k := reflect.New(v.Type().Key()).Elem()
			fill(k, n)
			e := reflect.New(v.Type().Elem()).Elem()
			fill(e, n)
			v.SetMapIndex(k, e)
		}
	case reflect.Pointer:
		v.Set(reflect.New(v.Type().Elem()))
		fill(v.Elem(), n)
	case reflect.Struct:
		for i := range v.NumField() {
			if v.Field(i).CanSet() {
				fill(v.Field(i), n)
			}
		}
	default:
		panic("fill: a " + v.Kind().String())
	}
}

// sameGo says whether a and b are the same value as the protocol carries
// it: a nil byte string, list or map is the same as an empty one (proto3
// does not tell them apart, and no HSM or client does), and times are
// the same instant; everything else, nil pointers included, must match.
func sameGo(a, b any) bool { return same(reflect.ValueOf(a), reflect.ValueOf(b)) }

func same(a, b reflect.Value) bool {
	if !a.IsValid() || !b.IsValid() {
		return a.IsValid() == b.IsValid()
	}
	if a.Type() != b.Type() {
		return false
	}
	if a.Type() == timeType {
		return a.Interface().(time.Time).Equal(b.Interface().(time.Time))
	}
	switch a.Kind() {
	case reflect.Pointer, reflect.Interface:
		if a.IsNil() || b.IsNil() {
			return a.IsNil() == b.IsNil()
		}
		return same(a.Elem(), b.Elem())
	case reflect.Struct:
		for i := range a.NumField() {
			if !same(a.Field(i), b.Field(i)) {
				return false
			}
		}
		return true
	case reflect.Slice:
		if a.Len() != b.Len() {
			return false
		}
		for i := range a.Len() {
			if !same(a.Index(i), b.Index(i)) {
				return false
			}
		}
		return true
	case reflect.Map:
		if a.Len() != b.Len() {
			return false
		}
		for _, k := range a.MapKeys() {
			if e := b.MapIndex(k); !e.IsValid() || !same(a.MapIndex(k), e) {
				return false
			}
		}
		return true
	case reflect.Float32, reflect.Float64:
		return a.Float() == b.Float() || math.IsNaN(a.Float()) && math.IsNaN(b.Float())
	}
	return a.Equal(b)
}

// Times cross as instants: nanoseconds kept, the zero time exactly the
// zero time (and sent as nothing), another zone read back in UTC.
func TestTimes(t *testing.T) {
	var c check
	if ts := c.timestamp("t", time.Time{}); ts != nil {
		t.Errorf("the zero time is sent as %v", ts)
	}
	year1 := &timestamppb.Timestamp{Seconds: -62135596800}
	if got := c.time("t", year1); got != (time.Time{}) {
		t.Errorf("year 1 spelled out reads as %#v, not the zero time", got)
	}
	paris := time.FixedZone("CET", 3600)
	in := time.Date(2024, 2, 29, 23, 59, 59, 999999999, paris)
	got := c.time("t", c.timestamp("t", in))
	if !got.Equal(in) || got.Location() != time.UTC || got.Nanosecond() != 999999999 {
		t.Errorf("%v read back as %v", in, got)
	}
	if c.err != nil {
		t.Fatal(c.err)
	}
	if c.timestamp("t", time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)); c.err == nil {
		t.Error("a time after year 9999 was sent")
	}
	for _, ts := range []*timestamppb.Timestamp{{Seconds: 1, Nanos: 1e9}, {Seconds: 1, Nanos: -1}, {Seconds: math.MaxInt64}, {Seconds: -62135596801}} {
		var c check
		if c.time("t", ts); c.err == nil {
			t.Errorf("timestamp %v read", ts)
		}
	}
}

// What a client that bypasses hsmsh's library might send, and what the
// Go side might wrongly hand the codec: each is refused with an error,
// never a panic, a half-filled value taken as good, or a value sent as
// something else.
func TestTypedDecodeRefuses(t *testing.T) {
	neg, _ := EncodeArgs(CallSign, SignArgs{Req: SignRequest{SaltLength: -1}})
	threads, _ := proto.Marshal(&pb.BackupArgs{Info: &pb.BackupInfo{KdfThreads: 256}})
	badTime, _ := proto.Marshal(&pb.KeyMeta{Created: &timestamppb.Timestamp{Seconds: 1, Nanos: 1e9}})
	badUsed, _ := proto.Marshal(&pb.QuorumList{Tokens: []*pb.Token{{Used: &timestamppb.Timestamp{Seconds: math.MaxInt64}}}})
	notUTF8 := protowire.AppendBytes(protowire.AppendTag(nil, 1, protowire.BytesType), []byte{0xff, 0xfe})
	tests := []struct {
		name   string
		method string
		answer bool
		in     []byte
		into   any
		want   string
	}{
		{"garbage", CallSign, false, []byte{0xff, 0xff, 0xff}, new(SignArgs), "not a SignArgs"},
		{"JSON where a protocol buffer belongs", CallSign, false, []byte(`{"req":{"Ref":1}}`), new(SignArgs), "not a SignArgs"},
		{"JSON generate-key arguments", CallGenerateKey, false, []byte(`{"spec":{"Type":"aes"},"ref":1}`), new(GenerateArgs), "not a GenerateArgs"},
		{"no sign request at all", CallSign, false, nil, new(SignArgs), "no sign request"},
		{"negative PSS salt length", CallSign, false, neg, new(SignArgs), "out of range"},
		{"a truncated envelope", CallEnveloped, false, []byte{0x0a, 0x10, 'x'}, new(authsession.Envelope), "not a Envelope"},
		{"the wrong Go type", CallHas, false, nil, new(string), "cannot hold a KeyRef"},
		{"the wrong Go type for an answer", CallGenerateKey, true, nil, new(KeyMeta), "cannot hold a CreateReply"},
		{"an answer to a call that has none", CallVerify, true, []byte{1}, new(int), "carries nothing"},
		{"arguments to a call that takes none", CallQuorumValues, false, []byte{1}, new(int), "carries nothing"},
		{"kdf threads beyond a uint8", CallBackup, false, threads, new(BackupArgs), "kdf_threads: 256 is out of range"},
		{"nanoseconds beyond a second", CallKeyMeta, true, badTime, new(KeyMeta), "created"},
		{"a token used after year 9999", CallQuorumList, true, badUsed, new(QuorumList), "used"},
		{"a username that is not UTF-8", CallCreateUser, false, notUTF8, new(UserArgs), "UTF-8"},
		{"a session id that is not UTF-8", CallEndSession, false, notUTF8, new(string), "UTF-8"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var err error
			if tt.answer {
				err = DecodeAnswer(tt.method, tt.in, tt.into)
			} else {
				err = DecodeArgs(tt.method, tt.in, tt.into)
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want it to say %q", err, tt.want)
			}
		})
	}

	encodes := []struct {
		name   string
		method string
		answer bool
		v      any
		want   string
	}{
		{"a string as sign arguments", CallSign, false, "not sign args", "not the Go type of SignArgs"},
		{"a nil pointer to an answer", CallGenerateKey, true, (*CreateReply)(nil), "not the Go type of CreateReply"},
		{"a nil wrapped key in a list", CallGenerateKey, true, CreateReply{Wrapped: []*WrappedKey{{}, nil}}, "wrapped[1]: no wrapped key"},
		{"a nil token in a list", CallQuorumList, true, QuorumList{Tokens: []*Token{nil}}, "tokens[0]: no token"},
		{"a time after year 9999", CallKeyMeta, true, KeyMeta{Created: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)}, "created"},
		{"a hash beyond 32 bits", CallSign, false, SignArgs{Req: SignRequest{Hash: crypto.Hash(1 << 40)}}, "hash"},
		{"a label that is not UTF-8", CallGenerateKey, false, GenerateArgs{Spec: KeySpec{Label: "\xff"}}, "UTF-8"},
		{"an answer where none belongs", CallDeleteKey, true, true, "where the call carries nothing"},
		{"arguments where none belong", CallQuorumList, false, "all", "where the call carries nothing"},
	}
	for _, tt := range encodes {
		t.Run("encode "+tt.name, func(t *testing.T) {
			var err error
			if tt.answer {
				_, err = EncodeAnswer(tt.method, tt.v)
			} else {
				_, err = EncodeArgs(tt.method, tt.v)
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want it to say %q", err, tt.want)
			}
		})
	}
}

// The calls typedCalls leaves out travel as the JSON of their Go types:
// the peer carrier and join (package hsm's own messages) and latency
// (which package hsm's lab decodes itself).
func TestUntypedCallsAreJSON(t *testing.T) {
	b, err := EncodeArgs(CallLatency, 300*time.Millisecond)
	if err != nil || string(b) != "300000000" {
		t.Fatalf("latency args: %s, %v", b, err)
	}
	var d time.Duration
	if err := DecodeArgs(CallLatency, b, &d); err != nil || d != 300*time.Millisecond {
		t.Fatalf("decode: %v, %v", d, err)
	}
	if err := DecodeAnswer(CallJoin, []byte("garbage"), new(map[string]any)); err == nil {
		t.Error("garbage JSON decoded")
	}
	var untyped []string
	for m, class := range Calls {
		if _, _, ok := TypedMessages(m); !ok && class != ClassPeer {
			untyped = append(untyped, m)
		}
	}
	slices.Sort(untyped)
	if want := []string{CallJoin, CallLatency, CallPeer}; !slices.Equal(untyped, want) {
		t.Errorf("the JSON calls are %v, want %v", untyped, want)
	}
}

// The session layer's messages: a call and a result survive the trip,
// garbage is refused, and so is what an older hsmsh sends (JSON).
func TestSessionLayer(t *testing.T) {
	c, err := NewSessionCall("hsm-2", CallQuorumList, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := EncodeSessionCall(c)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := DecodeSessionCall(b); err != nil || !reflect.DeepEqual(got, c) {
		t.Errorf("session call: %+v, %v", got, err)
	}
	r := SessionResult{Code: CodeInvalid, Error: "bad ✗"}
	b, err = EncodeSessionResult(r)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := DecodeSessionResult(b); err != nil || !reflect.DeepEqual(got, r) {
		t.Errorf("session result: %+v, %v", got, err)
	}
	if _, err := DecodeSessionCall([]byte{0x12, 0x05, 0xff}); err == nil {
		t.Error("a truncated session call decoded")
	}
	if _, err := DecodeSessionResult([]byte{0x12, 0x01, 0xff}); err == nil {
		t.Error("a session result with a string that is not UTF-8 decoded")
	}
	// Field 3 of a call and 1 of a result were JSON: reserved now, and
	// an hsmsh that sends them is told to match versions.
	old := protowire.AppendBytes(protowire.AppendTag([]byte{0x12, 0x04, 'o', 'w', 'n', 's'}, 3, protowire.BytesType), []byte(`"cu1"`))
	if _, err := DecodeSessionCall(old); err == nil || !strings.Contains(err.Error(), "older hsmsh") {
		t.Errorf("a call with JSON arguments: %v", err)
	}
	oldResult := protowire.AppendBytes(protowire.AppendTag(nil, 1, protowire.BytesType), []byte(`true`))
	if _, err := DecodeSessionResult(oldResult); err == nil || !strings.Contains(err.Error(), "older hsmsh") {
		t.Errorf("a result with a JSON answer: %v", err)
	}
	// Unknown fields of a newer hsmsh are skipped, as protocol buffers do.
	newer := protowire.AppendVarint(protowire.AppendTag([]byte{0x12, 0x04, 'o', 'w', 'n', 's'}, 99, protowire.VarintType), 1)
	if got, err := DecodeSessionCall(newer); err != nil || got.Method != CallOwns {
		t.Errorf("a call with an unknown field: %+v, %v", got, err)
	}
	for _, m := range []string{CallActivate, CallEnveloped, CallPropose, CallLatency, "no-such-call"} {
		if _, err := NewSessionCall("hsm-1", m, nil); err == nil || !strings.Contains(err.Error(), "is not a session call") {
			t.Errorf("%s as a session call: %v", m, err)
		}
		if _, err := NewSessionResult(m, nil); err == nil {
			t.Errorf("%s as a session result: no error", m)
		}
	}
}

// hsmsh.proto is the protocol's one description: every message the codec
// uses is in it, every typed call is a call the HSM serves, every message
// in it is used, each session call's messages have their field in
// SessionCall and SessionResult (and no field is left over), and the
// header names exactly the calls that are still JSON.
func TestProtoDescribesTheCodec(t *testing.T) {
	file := pb.File_hsmsh_proto
	msgs := file.Messages()
	used := map[protoreflect.FullName]bool{}
	var use func(d protoreflect.MessageDescriptor)
	use = func(d protoreflect.MessageDescriptor) {
		if used[d.FullName()] {
			return
		}
		used[d.FullName()] = true
		for i := range d.Fields().Len() {
			f := d.Fields().Get(i)
			if f.IsMap() {
				f = f.MapValue()
			}
			if f.Message() != nil {
				use(f.Message())
			}
		}
	}
	for _, layer := range []string{"Request", "Error"} {
		use(msgs.ByName(protoreflect.Name(layer)))
	}
	used["hsmsh.v1.SessionCall"], used["hsmsh.v1.SessionResult"] = true, true // their fields are the session calls' messages
	callFields, resultFields := map[protoreflect.FullName]bool{}, map[protoreflect.FullName]bool{}
	for method, tc := range typedCalls {
		if _, ok := Calls[method]; !ok {
			t.Errorf("typed call %q is not a call an HSM serves", method)
		}
		for i, m := range []string{tc.args.message, tc.answer.message} {
			if m == "" {
				continue
			}
			d := msgs.ByName(protoreflect.Name(m))
			if d == nil {
				t.Errorf("%s uses message %s, which hsmsh.proto lacks", method, m)
				continue
			}
			use(d)
			if Calls[method] != ClassSession {
				continue
			}
			fields, inOneof := callArgs, callFields
			if i == 1 {
				fields, inOneof = resultField, resultFields
			}
			if _, ok := fields.fields[d.FullName()]; !ok {
				t.Errorf("session call %s's %s has no field in the session layer's oneof", method, m)
			}
			inOneof[d.FullName()] = true
		}
	}
	for i := range msgs.Len() {
		if n := msgs.Get(i).FullName(); !used[n] {
			t.Errorf("hsmsh.proto's message %s is used by no call", n)
		}
	}
	for _, o := range []struct {
		msg    protoreflect.MessageDescriptor
		oneof  protoreflect.Name
		fields oneof
		used   map[protoreflect.FullName]bool
		json   protowire.Number
	}{
		{msgs.ByName("SessionCall"), "args", callArgs, callFields, oldCallJSON},
		{msgs.ByName("SessionResult"), "result", resultField, resultFields, oldResultJSON},
	} {
		fs := o.msg.Oneofs().ByName(o.oneof).Fields()
		if len(o.fields.fields) != fs.Len() {
			t.Errorf("%s.%s holds a message twice: the message would not say the field", o.msg.Name(), o.oneof)
		}
		for i := range fs.Len() {
			if m := fs.Get(i).Message(); m == nil || !o.used[m.FullName()] {
				t.Errorf("%s.%s's field %s is used by no session call", o.msg.Name(), o.oneof, fs.Get(i).Name())
			}
		}
		if !o.msg.ReservedRanges().Has(o.json) || !o.msg.ReservedNames().Has("json") {
			t.Errorf("%s no longer reserves the JSON field %d", o.msg.Name(), o.json)
		}
	}

	src, err := os.ReadFile("hsmsh.proto")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`except for\s+(?://\s+)?these JSON calls:\n//\n//\t([^\n]*)\n`).FindSubmatch(src)
	if m == nil {
		t.Fatal("hsmsh.proto's header no longer lists the JSON calls")
	}
	listed := strings.Split(string(m[1]), ", ")
	slices.Sort(listed)
	var json []string
	for method, class := range Calls {
		if _, ok := typedCalls[method]; !ok && class != ClassPeer { // the peer.* calls travel inside "peer"
			json = append(json, method)
		}
	}
	slices.Sort(json)
	if !slices.Equal(listed, json) {
		t.Errorf("hsmsh.proto's header names the JSON calls %v; they are %v", listed, json)
	}
}

// A typed call's arguments and answer travel inside the session call and
// result themselves (one encode, one decode); a message other than the one
// the method takes is refused.
func TestSessionLayerTyped(t *testing.T) {
	args := SignArgs{Req: SignRequest{Ref: 9, Mechanism: MechECDSA, Hash: crypto.SHA256, Data: []byte("d")}}
	c, err := NewSessionCall("hsm-3", CallSign, args)
	if err != nil {
		t.Fatal(err)
	}
	b, err := EncodeSessionCall(c)
	if err != nil {
		t.Fatal(err)
	}
	d, err := DecodeSessionCall(b)
	if err != nil || d.HSM != "hsm-3" || d.Method != CallSign {
		t.Fatalf("decoded %+v, %v", d, err)
	}
	var got SignArgs
	if err := d.DecodeArgs(&got); err != nil || !reflect.DeepEqual(got, args) {
		t.Errorf("arguments %+v, %v", got, err)
	}
	// The same bytes relabelled as another call: refused, not misread.
	for _, tt := range []struct {
		method string
		into   any
		want   string
	}{
		{CallHas, new(Ref), "no KeyRef"},
		{CallVerify, new(VerifyArgs), "no VerifyArgs"},
		{CallGenerateKey, new(GenerateArgs), "no GenerateArgs"},
		{CallCreateUser, new(UserArgs), "no UserArgs"},
		{CallQuorumList, new(QuorumList), "takes no arguments, and the call carries a SignArgs"},
		{CallActivate, new(ActivateArgs), `"activate" is not a session call`},
	} {
		d.Method = tt.method
		if err := d.DecodeArgs(tt.into); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("sign arguments read as %s: %v, want %q", tt.method, err, tt.want)
		}
	}
	// A typed call with no message.
	if err := (SessionCall{Method: CallSign}).DecodeArgs(new(SignArgs)); err == nil || !strings.Contains(err.Error(), "carries none") {
		t.Errorf("sign with no arguments: %v", err)
	}
	// A message the session layer has no field for.
	if _, err := EncodeSessionCall(SessionCall{Method: CallSign, msg: &pb.HSMInfo{}}); err == nil || !strings.Contains(err.Error(), "cannot carry a HSMInfo") {
		t.Errorf("a session call carrying an HSMInfo: %v", err)
	}
	if _, err := EncodeSessionResult(SessionResult{msg: &pb.SignArgs{}}); err == nil || !strings.Contains(err.Error(), "cannot carry a SignArgs") {
		t.Errorf("a session result carrying SignArgs: %v", err)
	}

	r, err := NewSessionResult(CallGenerateKey, &CreateReply{Keys: []KeyMeta{{Ref: 1}}, Staged: true})
	if err != nil {
		t.Fatal(err)
	}
	b, err = EncodeSessionResult(r)
	if err != nil {
		t.Fatal(err)
	}
	rd, err := DecodeSessionResult(b)
	if err != nil {
		t.Fatal(err)
	}
	var made CreateReply
	if err := rd.DecodeAnswer(CallGenerateKey, &made); err != nil || !made.Staged || len(made.Keys) != 1 {
		t.Errorf("created %+v, %v", made, err)
	}
	for _, tt := range []struct {
		method string
		into   any
		want   string
	}{
		{CallHas, new(bool), "no Bool"},
		{CallKeyMeta, new(KeyMeta), "no KeyMeta"},
		{CallVerify, new(int), "has no answer, and the answer carries a CreateReply"},
	} {
		if err := rd.DecodeAnswer(tt.method, tt.into); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("a CreateReply read as %s's answer: %v, want %q", tt.method, err, tt.want)
		}
	}
	if err := (SessionResult{}).DecodeAnswer(CallSign, new([]byte)); err == nil || !strings.Contains(err.Error(), "carries none") {
		t.Errorf("sign's answer missing: %v", err)
	}
	if _, err := NewSessionResult(CallVerify, "an answer"); err == nil {
		t.Error("verify, which has no answer, took one")
	}
}
