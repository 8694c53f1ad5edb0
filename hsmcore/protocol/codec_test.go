package protocol

import (
	"bytes"
	"crypto"
	"os"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/hsmsh/hsmsh/hsmcore/authsession"
	"github.com/hsmsh/hsmsh/hsmcore/protocol/pb"
)

// Each typed call's arguments and answer survive the trip, in the Go
// types both ends use.
func TestTypedRoundTrip(t *testing.T) {
	req := SignRequest{Ref: 0x1234, Mechanism: MechRSAPKCSPS, Hash: crypto.SHA384, Data: []byte("data"), Digest: true, SaltLength: 48}
	tests := []struct {
		method string
		args   any // a value; decoded into a new one of its type
		answer any // nil: the call has no answer
	}{
		{CallEnveloped, authsession.Envelope{EKT: []byte("ekt"), Seq: 7<<48 | 3, Body: []byte("sealed")}, authsession.Envelope{Seq: 9, Body: []byte("answer")}},
		{CallSign, SignArgs{Req: req}, []byte("signature")},
		{CallSign, SignArgs{Req: req, Approval: &Approval{Token: []byte("tok"), Command: "crypto sign ecdsa --key-filter key-reference=0x1234"}}, []byte{}},
		{CallVerify, VerifyArgs{Req: req, Sig: []byte("sig")}, nil},
		{CallHas, Ref(0xffffffffffffffff), true},
		{CallRefTaken, Ref(1), false},
		{CallDeleteKey, Ref(42), nil},
		{CallPublicKey, Ref(42), []byte("-----BEGIN PUBLIC KEY-----\n")},
	}
	for _, tt := range tests {
		t.Run(tt.method, func(t *testing.T) {
			if _, _, ok := TypedMessages(tt.method); !ok {
				t.Fatalf("%s is not a typed call", tt.method)
			}
			check := func(what string, v any, enc func(string, any) ([]byte, error), dec func(string, []byte, any) error) {
				b, err := enc(tt.method, v)
				if err != nil {
					t.Fatalf("%s: encode: %v", what, err)
				}
				if v == nil {
					if len(b) != 0 {
						t.Fatalf("%s: no answer encoded as %d bytes", what, len(b))
					}
					return
				}
				got := reflect.New(reflect.TypeOf(v))
				if err := dec(tt.method, b, got.Interface()); err != nil {
					t.Fatalf("%s: decode: %v", what, err)
				}
				if !equalish(got.Elem().Interface(), v) {
					t.Errorf("%s: got %#v, want %#v", what, got.Elem().Interface(), v)
				}
			}
			check("arguments", tt.args, EncodeArgs, DecodeArgs)
			check("answer", tt.answer, EncodeAnswer, DecodeAnswer)
		})
	}
}

// equalish is reflect.DeepEqual with nil and empty byte strings the same
// (protocol buffers do not tell them apart).
func equalish(a, b any) bool {
	if x, ok := a.([]byte); ok {
		return bytes.Equal(x, b.([]byte))
	}
	norm := func(v any) any {
		switch x := v.(type) {
		case authsession.Envelope:
			if len(x.EKT) == 0 {
				x.EKT = nil
			}
			return x
		}
		return v
	}
	return reflect.DeepEqual(norm(a), norm(b))
}

// What a client that bypasses hsmsh's library might send: each is
// refused with an error, never a panic or a half-filled value taken as
// good.
func TestTypedDecodeRefuses(t *testing.T) {
	neg, _ := EncodeArgs(CallSign, SignArgs{Req: SignRequest{SaltLength: -1}})
	tests := []struct {
		name   string
		method string
		in     []byte
		into   any
		want   string
	}{
		{"garbage", CallSign, []byte{0xff, 0xff, 0xff}, new(SignArgs), "not a SignArgs"},
		{"JSON where a protocol buffer belongs", CallSign, []byte(`{"req":{"Ref":1}}`), new(SignArgs), "not a SignArgs"},
		{"no sign request at all", CallSign, nil, new(SignArgs), "no sign request"},
		{"negative PSS salt length", CallSign, neg, new(SignArgs), "out of range"},
		{"a truncated envelope", CallEnveloped, []byte{0x0a, 0x10, 'x'}, new(authsession.Envelope), "not a Envelope"},
		{"the wrong Go type", CallHas, nil, new(string), "cannot hold a KeyRef"},
		{"an answer to a call that has none", CallVerify, []byte{1}, nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var err error
			if tt.into == nil {
				err = typedCalls[tt.method].answer.dec(tt.in, nil)
				tt.want = "no answer"
			} else {
				err = DecodeArgs(tt.method, tt.in, tt.into)
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want it to say %q", err, tt.want)
			}
		})
	}
	if _, err := EncodeArgs(CallSign, "not sign args"); err == nil {
		t.Error("a string encoded as SignArgs")
	}
}

// The calls not in the table travel as the JSON of their Go types.
func TestUntypedCallsAreJSON(t *testing.T) {
	b, err := EncodeArgs(CallActivate, ActivateArgs{Password: "x"})
	if err != nil || string(b) != `{"password":"x"}` {
		t.Fatalf("activate args: %s, %v", b, err)
	}
	var a ActivateArgs
	if err := DecodeArgs(CallActivate, b, &a); err != nil || a.Password != "x" {
		t.Fatalf("decode: %+v, %v", a, err)
	}
	if err := DecodeAnswer(CallUsers, []byte("garbage"), new([]UserView)); err == nil {
		t.Error("garbage JSON decoded")
	}
}

// The session layer's messages: a call and a result survive the trip, and
// garbage is refused.
func TestSessionLayer(t *testing.T) {
	c := SessionCall{HSM: "hsm-2", Method: CallSign, Args: []byte{1, 2, 3}}
	b, err := EncodeSessionCall(c)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := DecodeSessionCall(b); err != nil || !reflect.DeepEqual(got, c) {
		t.Errorf("session call: %+v, %v", got, err)
	}
	r := SessionResult{Code: CodeInvalid, Error: "bad"}
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
}

// hsmsh.proto is the protocol's one description: every message the codec
// uses is in it, every typed call is a call the HSM serves, the header
// comment lists exactly the typed calls, and no message in it is unused.
func TestProtoDescribesTheCodec(t *testing.T) {
	msgs := pb.File_hsmsh_proto.Messages()
	used := map[string]bool{"Request": true, "Error": true, "SessionCall": true, "SessionResult": true,
		"SignRequest": true, "Approval": true} // the layers, and parts of others
	for method, tc := range typedCalls {
		if _, ok := Calls[method]; !ok {
			t.Errorf("typed call %q is not a call an HSM serves", method)
		}
		for _, m := range []string{tc.args.message, tc.answer.message} {
			if m == "" {
				continue
			}
			if msgs.ByName(protoreflect.Name(m)) == nil {
				t.Errorf("%s uses message %s, which hsmsh.proto lacks", method, m)
			}
			used[m] = true
		}
	}
	for i := range msgs.Len() {
		if n := string(msgs.Get(i).Name()); !used[n] {
			t.Errorf("hsmsh.proto's message %s is used by no call", n)
		}
	}
	src, err := os.ReadFile("hsmsh.proto")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?s)key use:\s*\n?//\s*(.*?)\) are encoded`).FindSubmatch(src)
	if m == nil {
		t.Fatal("hsmsh.proto's header no longer lists the key-use calls")
	}
	listed := map[string]bool{CallEnveloped: true}
	for _, f := range strings.FieldsFunc(string(m[1]), func(r rune) bool { return r == ',' || r == ' ' || r == '\n' || r == '/' }) {
		if f != "and" && f != "" {
			listed[f] = true
		}
	}
	for method := range typedCalls {
		if !listed[method] {
			t.Errorf("typed call %s is not named in hsmsh.proto's header", method)
		}
		delete(listed, method)
	}
	for f := range listed {
		t.Errorf("hsmsh.proto's header names %q, which is not a typed call", f)
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
	if err != nil || d.HSM != "hsm-3" || d.Method != CallSign || d.Args != nil {
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
		{CallActivate, new(ActivateArgs), "takes JSON arguments"},
	} {
		d.Method = tt.method
		if err := d.DecodeArgs(tt.into); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("sign arguments read as %s: %v, want %q", tt.method, err, tt.want)
		}
	}
	// A typed call with no message, or with JSON instead.
	if err := (SessionCall{Method: CallSign, Args: []byte(`{}`)}).DecodeArgs(new(SignArgs)); err == nil || !strings.Contains(err.Error(), "carries none") {
		t.Errorf("sign with JSON arguments: %v", err)
	}

	r, err := NewSessionResult(CallSign, []byte("sig"))
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
	var sig []byte
	if err := rd.DecodeAnswer(CallSign, &sig); err != nil || string(sig) != "sig" {
		t.Errorf("signature %q, %v", sig, err)
	}
	var ok bool
	if err := rd.DecodeAnswer(CallHas, &ok); err == nil {
		t.Error("a signature read as has's answer")
	}
	if _, err := NewSessionResult(CallVerify, "an answer"); err == nil {
		t.Error("verify, which has no answer, took one")
	}
}
