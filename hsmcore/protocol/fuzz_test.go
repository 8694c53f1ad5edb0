package protocol

import (
	"maps"
	"slices"
	"testing"

	"google.golang.org/protobuf/proto"
)

// FuzzDecode feeds arbitrary bytes to every decoder an HSM runs on what a
// client sends, and a client on what an HSM answers: the arguments and
// the answer of every typed call, and the session call and result. Each
// refuses or decodes, and never panics; what decodes encodes again
// (nothing a decoder accepts is a value the encoder refuses) and reads
// back the same, so no decoder keeps what the wire cannot carry.
func FuzzDecode(f *testing.F) {
	for _, s := range samples() {
		if b, err := EncodeArgs(s.method, s.args); err == nil && len(b) < 1<<16 {
			f.Add(b)
		}
		if b, err := EncodeAnswer(s.method, s.answer); err == nil && len(b) < 1<<16 {
			f.Add(b)
		}
		if Calls[s.method] == ClassSession {
			if c, err := NewSessionCall("hsm-1", s.method, s.args); err == nil {
				if b, err := EncodeSessionCall(c); err == nil && len(b) < 1<<16 {
					f.Add(b)
				}
			}
		}
	}
	f.Add([]byte{0x0a, 0x80, 0x80, 0x80, 0x80, 0x10})
	methods := slices.Sorted(maps.Keys(typedCalls))
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, m := range methods {
			tc := typedCalls[m]
			for _, c := range []codec{tc.args, tc.answer} {
				v := c.newGo()
				if v == nil {
					c.dec(b, nil) // none: refuses any bytes
					continue
				}
				if c.dec(b, v) != nil {
					continue
				}
				again, err := c.enc(v)
				if err != nil {
					t.Fatalf("%s: a decoded %s does not encode: %v", m, c.message, err)
				}
				w := c.newGo()
				if err := c.dec(again, w); err != nil || !sameGo(v, w) {
					t.Fatalf("%s: %s round trip: %#v then %#v, %v", m, c.message, v, w, err)
				}
			}
		}
		if r, err := DecodeSessionResult(b); err == nil {
			again, err := EncodeSessionResult(r)
			if err != nil {
				t.Fatalf("a decoded result does not encode: %v", err)
			}
			if r2, err := DecodeSessionResult(again); err != nil || r2.Code != r.Code || r2.Error != r.Error || !sameMsg(r.msg, r2.msg) {
				t.Fatalf("result round trip: %+v then %+v, %v", r, r2, err)
			}
		}
		c, err := DecodeSessionCall(b)
		if err != nil {
			return
		}
		again, err := EncodeSessionCall(c)
		if err != nil {
			t.Fatalf("a decoded call does not encode: %v", err)
		}
		c2, err := DecodeSessionCall(again)
		if err != nil || c2.HSM != c.HSM || c2.Method != c.Method || !sameMsg(c.msg, c2.msg) {
			t.Fatalf("round trip: %+v then %+v, %v", c, c2, err)
		}
		// What the HSM does next: decode the arguments for the method the
		// call names, whatever message it carries.
		if tc, ok := typedCalls[c.Method]; ok && Calls[c.Method] == ClassSession {
			if v := tc.args.newGo(); v != nil {
				c.DecodeArgs(v)
			}
		}
	})
}

func sameMsg(a, b proto.Message) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	return proto.Equal(a, b)
}
