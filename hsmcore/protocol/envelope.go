package protocol

import (
	"errors"
	"fmt"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/hsmsh/hsmsh/hsmcore/authsession"
)

// The session envelope is the one message every key use sends twice (the
// command and its answer) on every transport, so it is written and read
// by hand with protowire, in exactly the wire form of hsmsh.proto's
// Envelope, without the reflection and the copies of the generated code:
// a test holds the two to the same bytes, and a fuzz target to the same
// verdicts.

// Envelope field numbers, as in hsmsh.proto.
const (
	envelopeEKT  protowire.Number = 1
	envelopeSeq  protowire.Number = 2
	envelopeBody protowire.Number = 3
)

var envelopeFast = codec{
	message: "Envelope",
	newGo:   func() any { return new(authsession.Envelope) },
	enc: func(v any) ([]byte, error) {
		var e authsession.Envelope
		switch x := v.(type) {
		case authsession.Envelope:
			e = x
		case *authsession.Envelope:
			if x == nil {
				return nil, errors.New("no Envelope")
			}
			e = *x
		default:
			return nil, fmt.Errorf("%T is not the Go type of Envelope", v)
		}
		return appendEnvelope(nil, e), nil
	},
	dec: func(b []byte, v any) error {
		out, ok := v.(*authsession.Envelope)
		if !ok {
			return fmt.Errorf("%T cannot hold a Envelope", v)
		}
		e, err := parseEnvelope(b)
		if err != nil {
			return fmt.Errorf("not a Envelope: %w", err)
		}
		*out = e
		return nil
	},
}

// appendEnvelope appends e's wire form: fields in number order, zero
// values left out, as proto.Marshal writes them.
func appendEnvelope(b []byte, e authsession.Envelope) []byte {
	if b == nil {
		b = make([]byte, 0, 2*protowire.SizeBytes(len(e.EKT))+protowire.SizeBytes(len(e.Body))+12)
	}
	if len(e.EKT) > 0 {
		b = protowire.AppendTag(b, envelopeEKT, protowire.BytesType)
		b = protowire.AppendBytes(b, e.EKT)
	}
	if e.Seq != 0 {
		b = protowire.AppendTag(b, envelopeSeq, protowire.VarintType)
		b = protowire.AppendVarint(b, e.Seq)
	}
	if len(e.Body) > 0 {
		b = protowire.AppendTag(b, envelopeBody, protowire.BytesType)
		b = protowire.AppendBytes(b, e.Body)
	}
	return b
}

// parseEnvelope reads an Envelope as proto.Unmarshal would: the last of a
// repeated field wins, unknown fields (and a known number with another
// wire type) are skipped, a truncated field is an error. The byte strings
// alias b.
func parseEnvelope(b []byte) (authsession.Envelope, error) {
	var e authsession.Envelope
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return e, protowire.ParseError(n)
		}
		if !num.IsValid() {
			return e, fmt.Errorf("field number %d is out of range", num)
		}
		b = b[n:]
		switch {
		case (num == envelopeEKT || num == envelopeBody) && typ == protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return e, protowire.ParseError(n)
			}
			if num == envelopeEKT {
				e.EKT = v
			} else {
				e.Body = v
			}
			b = b[n:]
		case num == envelopeSeq && typ == protowire.VarintType:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return e, protowire.ParseError(n)
			}
			e.Seq = v
			b = b[n:]
		default:
			// Unknown, or a known number with another wire type: skipped,
			// as the generated code skips it.
			n := protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return e, protowire.ParseError(n)
			}
			b = b[n:]
		}
	}
	return e, nil
}
