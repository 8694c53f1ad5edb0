package protocol

import (
	"crypto"
	"encoding/json"
	"errors"
	"fmt"
	"math"

	"google.golang.org/protobuf/proto"

	"github.com/hsmsh/hsmsh/hsmcore/protocol/pb"
)

// The protocol's encoding, as hsmsh.proto describes it. A call's
// arguments and answer are encoded by the call's name: the calls in
// typedCalls as the protocol buffers of hsmsh.proto (inside a session
// call or result, as a field of it), every other call as the JSON of its
// Go type. Both ends encode and decode with the functions below and
// nothing else, so the choice lives in one place.

// codec encodes one Go type as one message of hsmsh.proto.
type codec struct {
	message string // the message's name in hsmsh.proto, "" for none
	enc     func(v any) ([]byte, error)
	dec     func(b []byte, v any) error
	// toMsg and fromMsg convert without encoding, for a message that
	// travels inside another (a session call's arguments, its result).
	toMsg   func(v any) (proto.Message, error)
	fromMsg func(m proto.Message, v any) error
}

// typed builds the codec of a Go type G and its message P.
func typed[G any, P any, PP interface {
	*P
	proto.Message
}](to func(G) PP, from func(PP) (G, error)) codec {
	var zero P
	name := string(PP(&zero).ProtoReflect().Descriptor().Name())
	toMsg := func(v any) (proto.Message, error) {
		switch g := v.(type) {
		case G:
			return to(g), nil
		case *G:
			if g != nil {
				return to(*g), nil
			}
		}
		return nil, fmt.Errorf("%T is not the Go type of %s", v, name)
	}
	fromMsg := func(m proto.Message, v any) error {
		out, ok := v.(*G)
		if !ok {
			return fmt.Errorf("%T cannot hold a %s", v, name)
		}
		pm, ok := m.(PP)
		if !ok || pm == nil {
			return fmt.Errorf("no %s", name)
		}
		g, err := from(pm)
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		*out = g
		return nil
	}
	return codec{
		message: name,
		toMsg:   toMsg,
		fromMsg: fromMsg,
		enc: func(v any) ([]byte, error) {
			m, err := toMsg(v)
			if err != nil {
				return nil, err
			}
			return proto.Marshal(m)
		},
		dec: func(b []byte, v any) error {
			if _, ok := v.(*G); !ok {
				return fmt.Errorf("%T cannot hold a %s", v, name)
			}
			var m P
			if err := proto.Unmarshal(b, PP(&m)); err != nil {
				return fmt.Errorf("not a %s: %w", name, err)
			}
			return fromMsg(PP(&m), v)
		},
	}
}

// none is the codec of a call that has no answer: nothing is encoded.
var none = codec{
	enc: func(v any) ([]byte, error) {
		if v != nil {
			return nil, fmt.Errorf("%T where the call has no answer", v)
		}
		return nil, nil
	},
	dec: func(b []byte, v any) error {
		if len(b) != 0 {
			return fmt.Errorf("%d bytes where the call has no answer", len(b))
		}
		return nil
	},
}

var (
	refCodec = typed(
		func(r Ref) *pb.KeyRef { return &pb.KeyRef{Ref: uint64(r)} },
		func(m *pb.KeyRef) (Ref, error) { return Ref(m.Ref), nil })
	bytesCodec = typed(
		func(b []byte) *pb.Bytes { return &pb.Bytes{Value: b} },
		func(m *pb.Bytes) ([]byte, error) { return m.Value, nil })
	boolCodec = typed(
		func(b bool) *pb.Bool { return &pb.Bool{Value: b} },
		func(m *pb.Bool) (bool, error) { return m.Value, nil })
	signArgsCodec = typed(
		func(a SignArgs) *pb.SignArgs {
			m := &pb.SignArgs{Req: signRequestPB(a.Req)}
			if a.Approval != nil {
				m.Approval = &pb.Approval{Token: a.Approval.Token, Command: a.Approval.Command}
			}
			return m
		},
		func(m *pb.SignArgs) (SignArgs, error) {
			req, err := signRequestOf(m.Req)
			a := SignArgs{Req: req}
			if m.Approval != nil {
				a.Approval = &Approval{Token: m.Approval.Token, Command: m.Approval.Command}
			}
			return a, err
		})
	verifyArgsCodec = typed(
		func(a VerifyArgs) *pb.VerifyArgs { return &pb.VerifyArgs{Req: signRequestPB(a.Req), Sig: a.Sig} },
		func(m *pb.VerifyArgs) (VerifyArgs, error) {
			req, err := signRequestOf(m.Req)
			return VerifyArgs{Req: req, Sig: m.Sig}, err
		})
)

func signRequestPB(r SignRequest) *pb.SignRequest {
	return &pb.SignRequest{Ref: uint64(r.Ref), Mechanism: string(r.Mechanism), Hash: uint32(r.Hash),
		Data: r.Data, Digest: r.Digest, SaltLength: int64(r.SaltLength)}
}

func signRequestOf(m *pb.SignRequest) (SignRequest, error) {
	if m == nil {
		return SignRequest{}, errors.New("no sign request")
	}
	if m.SaltLength < 0 || m.SaltLength > math.MaxInt32 {
		return SignRequest{}, fmt.Errorf("PSS salt length %d is out of range", m.SaltLength)
	}
	return SignRequest{Ref: Ref(m.Ref), Mechanism: Mechanism(m.Mechanism), Hash: crypto.Hash(m.Hash),
		Data: m.Data, Digest: m.Digest, SaltLength: int(m.SaltLength)}, nil
}

// typedCall is how one call's arguments and answer are encoded.
type typedCall struct{ args, answer codec }

// typedCalls are the calls encoded as protocol buffers: the session
// envelope, and key use. The rest travel as JSON.
var typedCalls = map[string]typedCall{
	CallEnveloped: {envelopeFast, envelopeFast},
	CallSign:      {signArgsCodec, bytesCodec},
	CallVerify:    {verifyArgsCodec, none},
	CallHas:       {refCodec, boolCodec},
	CallRefTaken:  {refCodec, boolCodec},
	CallDeleteKey: {refCodec, none},
	CallPublicKey: {refCodec, bytesCodec},
}

// TypedMessages names the messages of hsmsh.proto that method's
// arguments and answer are ("" for no answer); ok is false for a call
// that travels as JSON.
func TypedMessages(method string) (args, answer string, ok bool) {
	t, ok := typedCalls[method]
	return t.args.message, t.answer.message, ok
}

// EncodeArgs encodes the arguments v of method.
func EncodeArgs(method string, v any) ([]byte, error) {
	if t, ok := typedCalls[method]; ok {
		return t.args.enc(v)
	}
	return json.Marshal(v)
}

// DecodeArgs decodes the arguments of method from b into v, a pointer.
func DecodeArgs(method string, b []byte, v any) error {
	if t, ok := typedCalls[method]; ok {
		return t.args.dec(b, v)
	}
	return json.Unmarshal(b, v)
}

// EncodeAnswer encodes v, the answer to method.
func EncodeAnswer(method string, v any) ([]byte, error) {
	if t, ok := typedCalls[method]; ok {
		return t.answer.enc(v)
	}
	return json.Marshal(v)
}

// DecodeAnswer decodes the answer to method from b into v, a pointer; a
// nil v ignores the answer.
func DecodeAnswer(method string, b []byte, v any) error {
	if v == nil {
		return nil
	}
	if t, ok := typedCalls[method]; ok {
		return t.answer.dec(b, v)
	}
	return json.Unmarshal(b, v)
}

// NewSessionCall is method's call with args, for the HSM hsm.
func NewSessionCall(hsm, method string, args any) (SessionCall, error) {
	c := SessionCall{HSM: hsm, Method: method}
	var err error
	if t, ok := typedCalls[method]; ok {
		c.msg, err = t.args.toMsg(args)
	} else {
		c.Args, err = json.Marshal(args)
	}
	return c, err
}

// DecodeArgs decodes the call's arguments into v, a pointer.
func (c SessionCall) DecodeArgs(v any) error {
	if t, ok := typedCalls[c.Method]; ok {
		if c.msg == nil {
			return fmt.Errorf("%s takes a %s, and the call carries none", c.Method, t.args.message)
		}
		return t.args.fromMsg(c.msg, v)
	}
	if c.msg != nil {
		return fmt.Errorf("%s takes JSON arguments, and the call carries a %s", c.Method, c.msg.ProtoReflect().Descriptor().Name())
	}
	return json.Unmarshal(c.Args, v)
}

// EncodeSessionCall encodes the plaintext of a command envelope, the
// arguments with it.
func EncodeSessionCall(c SessionCall) ([]byte, error) {
	m := &pb.SessionCall{Hsm: c.HSM, Method: c.Method}
	switch a := c.msg.(type) {
	case nil:
		if c.Args != nil {
			m.Args = &pb.SessionCall_Json{Json: c.Args}
		}
	case *pb.SignArgs:
		m.Args = &pb.SessionCall_Sign{Sign: a}
	case *pb.VerifyArgs:
		m.Args = &pb.SessionCall_Verify{Verify: a}
	case *pb.KeyRef:
		m.Args = &pb.SessionCall_Ref{Ref: a}
	default:
		return nil, fmt.Errorf("a session call cannot carry a %T", a)
	}
	return proto.Marshal(m)
}

// DecodeSessionCall decodes the plaintext of a command envelope.
func DecodeSessionCall(b []byte) (SessionCall, error) {
	var m pb.SessionCall
	if err := proto.Unmarshal(b, &m); err != nil {
		return SessionCall{}, fmt.Errorf("not a SessionCall: %w", err)
	}
	c := SessionCall{HSM: m.Hsm, Method: m.Method}
	switch a := m.Args.(type) {
	case *pb.SessionCall_Json:
		c.Args = a.Json
	case *pb.SessionCall_Sign:
		c.msg = a.Sign
	case *pb.SessionCall_Verify:
		c.msg = a.Verify
	case *pb.SessionCall_Ref:
		c.msg = a.Ref
	}
	return c, nil
}

// NewSessionResult is the answer out to method.
func NewSessionResult(method string, out any) (SessionResult, error) {
	var r SessionResult
	var err error
	if t, ok := typedCalls[method]; ok {
		if t.answer.message == "" {
			_, err = t.answer.enc(out) // refuses an answer where none belongs
			return r, err
		}
		r.msg, err = t.answer.toMsg(out)
	} else {
		r.Result, err = json.Marshal(out)
	}
	return r, err
}

// DecodeAnswer decodes the answer to method into v, a pointer; a nil v
// ignores it.
func (r SessionResult) DecodeAnswer(method string, v any) error {
	if v == nil {
		return nil
	}
	if t, ok := typedCalls[method]; ok {
		if t.answer.message == "" {
			return nil
		}
		if r.msg == nil {
			return fmt.Errorf("%s answers a %s, and the answer carries none", method, t.answer.message)
		}
		return t.answer.fromMsg(r.msg, v)
	}
	if r.msg != nil {
		return fmt.Errorf("%s answers JSON, and the answer carries a %s", method, r.msg.ProtoReflect().Descriptor().Name())
	}
	return json.Unmarshal(r.Result, v)
}

// EncodeSessionResult encodes the plaintext of an answer envelope.
func EncodeSessionResult(r SessionResult) ([]byte, error) {
	m := &pb.SessionResult{Code: r.Code, Error: r.Error}
	switch a := r.msg.(type) {
	case nil:
		if r.Result != nil {
			m.Result = &pb.SessionResult_Json{Json: r.Result}
		}
	case *pb.Bytes:
		m.Result = &pb.SessionResult_Bytes{Bytes: a}
	case *pb.Bool:
		m.Result = &pb.SessionResult_Bool{Bool: a}
	default:
		return nil, fmt.Errorf("a session result cannot carry a %T", a)
	}
	return proto.Marshal(m)
}

// DecodeSessionResult decodes the plaintext of an answer envelope.
func DecodeSessionResult(b []byte) (SessionResult, error) {
	var m pb.SessionResult
	if err := proto.Unmarshal(b, &m); err != nil {
		return SessionResult{}, fmt.Errorf("not a SessionResult: %w", err)
	}
	r := SessionResult{Code: m.Code, Error: m.Error}
	switch a := m.Result.(type) {
	case *pb.SessionResult_Json:
		r.Result = a.Json
	case *pb.SessionResult_Bytes:
		r.msg = a.Bytes
	case *pb.SessionResult_Bool:
		r.msg = a.Bool
	}
	return r, nil
}
