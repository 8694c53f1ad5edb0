package protocol

import (
	"testing"

	"github.com/hsmsh/hsmsh/hsmcore/authsession"
)

// FuzzDecode feeds arbitrary bytes to every decoder an HSM runs on what a
// client sends, and a client on what an HSM answers: each refuses or
// decodes, and never panics. A decoded session call encodes again to
// bytes that decode to the same call.
func FuzzDecode(f *testing.F) {
	seed, _ := EncodeArgs(CallSign, SignArgs{Req: SignRequest{Ref: 1, Mechanism: MechECDSA, Hash: 5, Data: []byte("x")}, Approval: &Approval{Token: []byte("t")}})
	f.Add(seed)
	call, _ := EncodeSessionCall(SessionCall{HSM: "hsm-1", Method: CallSign, Args: seed})
	f.Add(call)
	env, _ := EncodeArgs(CallEnveloped, authsession.Envelope{EKT: []byte("e"), Seq: 1, Body: []byte("b")})
	f.Add(env)
	f.Add([]byte{0x0a, 0x80, 0x80, 0x80, 0x80, 0x10})
	f.Fuzz(func(t *testing.T, b []byte) {
		var sa SignArgs
		DecodeArgs(CallSign, b, &sa)
		var va VerifyArgs
		DecodeArgs(CallVerify, b, &va)
		var ref Ref
		DecodeArgs(CallHas, b, &ref)
		var e authsession.Envelope
		DecodeArgs(CallEnveloped, b, &e)
		var sig []byte
		DecodeAnswer(CallSign, b, &sig)
		var ok bool
		DecodeAnswer(CallHas, b, &ok)
		DecodeSessionResult(b)
		c, err := DecodeSessionCall(b)
		if err != nil {
			return
		}
		again, err := EncodeSessionCall(c)
		if err != nil {
			t.Fatalf("a decoded call does not encode: %v", err)
		}
		if c2, err := DecodeSessionCall(again); err != nil || c2.HSM != c.HSM || c2.Method != c.Method || string(c2.Args) != string(c.Args) {
			t.Fatalf("round trip: %+v then %+v, %v", c, c2, err)
		}
	})
}
