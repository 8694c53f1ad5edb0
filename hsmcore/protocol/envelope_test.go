package protocol

import (
	"bytes"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/hsmsh/hsmsh/hsmcore/authsession"
	"github.com/hsmsh/hsmsh/hsmcore/protocol/pb"
)

// The hand-written envelope codec writes exactly what the generated code
// writes for hsmsh.proto's Envelope, and reads it back.
func TestEnvelopeMatchesGeneratedCode(t *testing.T) {
	tests := []authsession.Envelope{
		{},
		{Seq: 1},
		{EKT: []byte("ekt"), Seq: 1<<48 | 5, Body: []byte("sealed body")},
		{Seq: ^uint64(0), Body: bytes.Repeat([]byte{0xa5}, 70000)},
		{EKT: bytes.Repeat([]byte("t"), 300)},
	}
	for i, e := range tests {
		want, err := proto.MarshalOptions{Deterministic: true}.Marshal(&pb.Envelope{Ekt: e.EKT, Seq: e.Seq, Body: e.Body})
		if err != nil {
			t.Fatal(err)
		}
		got, err := envelopeFast.enc(e)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("envelope %d: hand-written %x, generated %x", i, got, want)
		}
		var back authsession.Envelope
		if err := envelopeFast.dec(want, &back); err != nil || !bytes.Equal(back.EKT, e.EKT) || back.Seq != e.Seq || !bytes.Equal(back.Body, e.Body) {
			t.Errorf("envelope %d read back as %+v, %v", i, back, err)
		}
	}
}

// FuzzEnvelope holds the hand-written reader to the generated one's
// verdict on any input: both refuse it, or both read the same envelope.
func FuzzEnvelope(f *testing.F) {
	seed, _ := envelopeFast.enc(authsession.Envelope{EKT: []byte("e"), Seq: 7, Body: []byte("b")})
	f.Add(seed)
	f.Add([]byte{0x0a, 0x01})                    // truncated EKT
	f.Add([]byte{0x10, 0x80})                    // truncated seq
	f.Add([]byte{0x0d, 0, 0, 0, 0})              // EKT as fixed32
	f.Add([]byte{0x22, 0x02, 'h', 'i', 0x10, 1}) // an unknown field first
	f.Add([]byte{0x1b, 0x1c})                    // a group
	f.Fuzz(func(t *testing.T, b []byte) {
		var m pb.Envelope
		gerr := proto.Unmarshal(b, &m)
		e, err := parseEnvelope(b)
		if (gerr == nil) != (err == nil) {
			t.Fatalf("%x: generated code says %v, hand-written %v", b, gerr, err)
		}
		if gerr == nil && (!bytes.Equal(e.EKT, m.Ekt) || e.Seq != m.Seq || !bytes.Equal(e.Body, m.Body)) {
			t.Fatalf("%x: generated %v, hand-written %+v", b, &m, e)
		}
	})
}
