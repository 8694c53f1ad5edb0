package protocol

import (
	"encoding/json"
	"errors"
	"fmt"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/hsmsh/hsmsh/hsmcore/protocol/pb"
)

// The protocol's encoding, as hsmsh.proto describes it. A call's
// arguments and answer are encoded by the call's name: the calls in
// typedCalls (every call but peer, join and latency) as the protocol
// buffers of hsmsh.proto, inside a session call or result as a field of
// it; peer, join and latency as the JSON of their Go types, which package
// hsm defines or decodes itself (hsmsh.proto's header says why). Both
// ends encode and decode with the functions below and nothing else, so
// the choice lives in one place.

// codec encodes one Go type as one message of hsmsh.proto.
type codec struct {
	message string // the message's name in hsmsh.proto, "" for none
	enc     func(v any) ([]byte, error)
	dec     func(b []byte, v any) error
	// toMsg and fromMsg convert without encoding, for a message that
	// travels inside another (a session call's arguments, its result).
	toMsg   func(v any) (proto.Message, error)
	fromMsg func(m proto.Message, v any) error
	// newGo is a pointer to a new value of the Go type, for the tests.
	newGo func() any
}

// typed builds the codec of a Go type G and its message P. It encodes a G
// or a non-nil *G, and decodes into a *G or (for an answer the caller
// keeps as a pointer) a **G.
func typed[G any, P any, PP interface {
	*P
	proto.Message
}](to func(G) (PP, error), from func(PP) (G, error)) codec {
	var zero P
	name := string(PP(&zero).ProtoReflect().Descriptor().Name())
	toMsg := func(v any) (proto.Message, error) {
		switch g := v.(type) {
		case G:
			return to(g)
		case *G:
			if g != nil {
				return to(*g)
			}
		}
		return nil, fmt.Errorf("%T is not the Go type of %s", v, name)
	}
	fromMsg := func(m proto.Message, v any) error {
		pm, ok := m.(PP)
		if !ok || pm == nil {
			return fmt.Errorf("no %s", name)
		}
		g, err := from(pm)
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		switch out := v.(type) {
		case *G:
			*out = g
		case **G:
			*out = &g
		default:
			return fmt.Errorf("%T cannot hold a %s", v, name)
		}
		return nil
	}
	return codec{
		message: name,
		toMsg:   toMsg,
		fromMsg: fromMsg,
		newGo:   func() any { return new(G) },
		enc: func(v any) ([]byte, error) {
			m, err := toMsg(v)
			if err != nil {
				return nil, err
			}
			return proto.Marshal(m)
		},
		dec: func(b []byte, v any) error {
			switch v.(type) {
			case *G, **G:
			default:
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

// none is the codec of a call that takes no arguments, or has no answer:
// nothing is encoded.
var none = codec{
	enc: func(v any) ([]byte, error) {
		if v != nil {
			return nil, fmt.Errorf("%T where the call carries nothing", v)
		}
		return nil, nil
	},
	dec: func(b []byte, v any) error {
		if len(b) != 0 {
			return fmt.Errorf("%d bytes where the call carries nothing", len(b))
		}
		return nil
	},
	newGo: func() any { return nil },
}

// plain is the codec of a Go type whose message needs no check either way.
func plain[G any, P any, PP interface {
	*P
	proto.Message
}](to func(G) PP, from func(PP) G) codec {
	return typed(func(g G) (PP, error) { return to(g), nil }, func(m PP) (G, error) { return from(m), nil })
}

var (
	refCodec = plain(
		func(r Ref) *pb.KeyRef { return &pb.KeyRef{Ref: uint64(r)} },
		func(m *pb.KeyRef) Ref { return Ref(m.Ref) })
	bytesCodec = plain(
		func(b []byte) *pb.Bytes { return &pb.Bytes{Value: b} },
		func(m *pb.Bytes) []byte { return m.Value })
	boolCodec = plain(
		func(b bool) *pb.Bool { return &pb.Bool{Value: b} },
		func(m *pb.Bool) bool { return m.Value })
	stringCodec = plain(
		func(s string) *pb.String { return &pb.String{Value: s} },
		func(m *pb.String) string { return m.Value })
	intCodec = typed(
		func(n int) (*pb.Int, error) { return &pb.Int{Value: int64(n)}, nil },
		func(m *pb.Int) (int, error) {
			var c check
			n := c.int("value", m.Value)
			return n, c.err
		})
	// The envelope, hand-written (envelope.go), and its message for a
	// call that carries one inside another (authenticate).
	envelopeCodec = envelopeFast

	signArgsCodec          = typed(signArgsPB, signArgsOf)
	verifyArgsCodec        = typed(verifyArgsPB, verifyArgsOf)
	keyMetaCodec           = typed(keyMetaPB, keyMetaOf)
	snapshotArgsCodec      = typed(snapshotArgsPB, snapshotArgsOf)
	snapshotReplyCodec     = typed(snapshotReplyPB, snapshotReplyOf)
	generateArgsCodec      = typed(generateArgsPB, generateArgsOf)
	importArgsCodec        = typed(importArgsPB, importArgsOf)
	createReplyCodec       = typed(createReplyPB, createReplyOf)
	wrappedKeyCodec        = typed(wrappedKeyPB, wrappedKeyOf)
	importWrappedArgsCodec = typed(importWrappedArgsPB, importWrappedArgsOf)
	keyChangeArgsCodec     = typed(keyChangeArgsPB, keyChangeArgsOf)
	wrapArgsCodec          = typed(wrapArgsPB, wrapArgsOf)
	wrapReplyCodec         = typed(wrapReplyPB, wrapReplyOf)
	unwrapArgsCodec        = typed(unwrapArgsPB, unwrapArgsOf)
	userArgsCodec          = typed(userArgsPB, userArgsOf)
	userViewCodec          = typed(userViewPB, userViewOf)
	userListCodec          = typed(userListPB, userListOf)
	registerArgsCodec      = typed(registerArgsPB, registerArgsOf)
	quorumSettingsCodec    = typed(quorumSettingsPB, quorumSettingsOf)
	quorumListCodec        = typed(quorumListPB, quorumListOf)
	issueArgsCodec         = typed(issueArgsPB, issueArgsOf)
	deleteTokensArgsCodec  = plain(
		func(a DeleteTokensArgs) *pb.DeleteTokensArgs { return &pb.DeleteTokensArgs{All: a.All} },
		func(m *pb.DeleteTokensArgs) DeleteTokensArgs { return DeleteTokensArgs{All: m.All} })
	setQuorumArgsCodec  = typed(setQuorumArgsPB, setQuorumArgsOf)
	backupArgsCodec     = typed(backupArgsPB, backupArgsOf)
	mtlsArgsCodec       = typed(mtlsArgsPB, mtlsArgsOf)
	mtlsStateCodec      = typed(mtlsStatePB, mtlsStateOf)
	hsmInfoCodec        = typed(hsmInfoPB, hsmInfoOf)
	domainInfoCodec     = typed(domainInfoPB, domainInfoOf)
	handshakeArgsCodec  = typed(handshakeArgsPB, handshakeArgsOf)
	handshakeReplyCodec = typed(handshakeReplyPB, handshakeReplyOf)
	authArgsCodec       = typed(authArgsPB, authArgsOf)
	activateArgsCodec   = plain(
		func(a ActivateArgs) *pb.ActivateArgs { return &pb.ActivateArgs{Password: a.Password} },
		func(m *pb.ActivateArgs) ActivateArgs { return ActivateArgs{Password: m.Password} })
	syncStatsCodec  = typed(syncStatsPB, syncStatsOf)
	syncStatusCodec = typed(syncStatusPB, syncStatusOf)
)

// typedCall is how one call's arguments and answer are encoded.
type typedCall struct{ args, answer codec }

// typedCalls are the calls encoded as protocol buffers: every call but
// peer, join and latency (hsmsh.proto's header says why those are not).
var typedCalls = map[string]typedCall{
	// Bare.
	CallInfo:         {none, hsmInfoCodec},
	CallDomainInfo:   {none, domainInfoCodec},
	CallHandshake:    {handshakeArgsCodec, handshakeReplyCodec},
	CallAuthenticate: {authArgsCodec, envelopeCodec},
	CallActivate:     {activateArgsCodec, none},
	CallUsers:        {none, userListCodec},
	CallQuorumValues: {none, quorumSettingsCodec},
	CallEnveloped:    {envelopeCodec, envelopeCodec},
	CallMTLSState:    {none, mtlsStateCodec},

	// Session: key use.
	CallSign:      {signArgsCodec, bytesCodec},
	CallVerify:    {verifyArgsCodec, none},
	CallHas:       {refCodec, boolCodec},
	CallRefTaken:  {refCodec, boolCodec},
	CallDeleteKey: {refCodec, none},
	CallPublicKey: {refCodec, bytesCodec},
	// Session: keys.
	CallKeyMeta:       {refCodec, keyMetaCodec},
	CallSnapshot:      {snapshotArgsCodec, snapshotReplyCodec},
	CallGenerateKey:   {generateArgsCodec, createReplyCodec},
	CallImportKey:     {importArgsCodec, createReplyCodec},
	CallExportWrapped: {refCodec, wrappedKeyCodec},
	CallImportWrapped: {importWrappedArgsCodec, none},
	CallKeyChange:     {keyChangeArgsCodec, keyMetaCodec},
	CallWrapKey:       {wrapArgsCodec, wrapReplyCodec},
	CallUnwrapKey:     {unwrapArgsCodec, createReplyCodec},
	// Session: the session itself.
	CallDestroySession: {stringCodec, intCodec},
	CallEndSession:     {stringCodec, none},
	// Session: users.
	CallCreateUser:       {userArgsCodec, userViewCodec},
	CallRemoveUser:       {userArgsCodec, none},
	CallSetPassword:      {userArgsCodec, none},
	CallOwns:             {stringCodec, boolCodec},
	CallExportUser:       {userArgsCodec, wrappedKeyCodec},
	CallImportUser:       {importWrappedArgsCodec, none},
	CallRegisterMFA:      {registerArgsCodec, none},
	CallDeregisterMFA:    {userArgsCodec, none},
	CallRegisterQuorum:   {registerArgsCodec, none},
	CallDeregisterQuorum: {userArgsCodec, none},
	// Session: quorum, backup, mTLS.
	CallQuorumList:     {none, quorumListCodec},
	CallIssueToken:     {issueArgsCodec, bytesCodec},
	CallDeleteTokens:   {deleteTokensArgsCodec, intCodec},
	CallSetQuorum:      {setQuorumArgsCodec, none},
	CallBackup:         {backupArgsCodec, bytesCodec},
	CallMTLSRegister:   {mtlsArgsCodec, mtlsStateCodec},
	CallMTLSDeregister: {mtlsArgsCodec, mtlsStateCodec},
	CallMTLSSetLevel:   {mtlsArgsCodec, mtlsStateCodec},

	// Lab.
	CallSyncNow:    {none, syncStatsCodec},
	CallSyncPause:  {none, syncStatusCodec},
	CallSyncResume: {none, syncStatusCodec},
	CallSyncStatus: {none, syncStatusCodec},
}

// TypedMessages names the messages of hsmsh.proto that method's
// arguments and answer are ("" for none); ok is false for a call that
// travels as JSON.
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

// sessionCodec is the codec of a session call: every one is typed.
func sessionCodec(method string) (typedCall, error) {
	t, ok := typedCalls[method]
	if !ok || Calls[method] != ClassSession {
		return t, fmt.Errorf("%q is not a session call", method)
	}
	return t, nil
}

// The fields of SessionCall's args and SessionResult's result, by the
// message each holds: each message appears once in each (a test checks),
// so the message says the field, and a new call needs no code here.
var (
	callArgs    = oneofOf(&pb.SessionCall{}, "args")
	resultField = oneofOf(&pb.SessionResult{}, "result")
)

// oneof is a oneof of messages, looked up once.
type oneof struct {
	desc   protoreflect.OneofDescriptor
	fields map[protoreflect.FullName]protoreflect.FieldDescriptor
}

func oneofOf(m proto.Message, name protoreflect.Name) oneof {
	o := oneof{desc: m.ProtoReflect().Descriptor().Oneofs().ByName(name)}
	fields := o.desc.Fields()
	o.fields = make(map[protoreflect.FullName]protoreflect.FieldDescriptor, fields.Len())
	for i := range fields.Len() {
		o.fields[fields.Get(i).Message().FullName()] = fields.Get(i)
	}
	return o
}

// set puts msg in m's field for msg's message, if m has one.
func (o oneof) set(m, msg proto.Message, what string) error {
	r := msg.ProtoReflect()
	f, ok := o.fields[r.Descriptor().FullName()]
	if !ok {
		return fmt.Errorf("a %s cannot carry a %s", what, r.Descriptor().Name())
	}
	m.ProtoReflect().Set(f, protoreflect.ValueOfMessage(r))
	return nil
}

// get is the message m's oneof holds, nil for none.
func (o oneof) get(m proto.Message) proto.Message {
	r := m.ProtoReflect()
	if f := r.WhichOneof(o.desc); f != nil {
		return r.Get(f).Message().Interface()
	}
	return nil
}

// The field numbers that carried JSON before every session call was
// typed (reserved in hsmsh.proto): an hsmsh that still sends one is told
// it is older than this one, rather than that its call carries nothing.
const (
	oldCallJSON   protowire.Number = 3
	oldResultJSON protowire.Number = 1
)

var errOldPeer = errors.New("it carries JSON, as an older hsmsh sends: run the same hsmsh version on both sides")

// hasField says whether the unknown fields b hold field num.
func hasField(b []byte, num protowire.Number) bool {
	for len(b) > 0 {
		n, typ, l := protowire.ConsumeTag(b)
		if l < 0 {
			return false
		}
		if n == num {
			return true
		}
		b = b[l:]
		if l = protowire.ConsumeFieldValue(n, typ, b); l < 0 {
			return false
		}
		b = b[l:]
	}
	return false
}

// NewSessionCall is method's call with args, for the HSM hsm.
func NewSessionCall(hsm, method string, args any) (SessionCall, error) {
	c := SessionCall{HSM: hsm, Method: method}
	t, err := sessionCodec(method)
	if err != nil {
		return c, err
	}
	if t.args.message == "" {
		_, err = t.args.enc(args) // refuses arguments where none belong
		return c, err
	}
	c.msg, err = t.args.toMsg(args)
	return c, err
}

// DecodeArgs decodes the call's arguments into v, a pointer.
func (c SessionCall) DecodeArgs(v any) error {
	t, err := sessionCodec(c.Method)
	if err != nil {
		return err
	}
	if t.args.message == "" {
		if c.msg != nil {
			return fmt.Errorf("%s takes no arguments, and the call carries a %s", c.Method, c.msg.ProtoReflect().Descriptor().Name())
		}
		return nil
	}
	if c.msg == nil {
		return fmt.Errorf("%s takes a %s, and the call carries none", c.Method, t.args.message)
	}
	return t.args.fromMsg(c.msg, v)
}

// EncodeSessionCall encodes the plaintext of a command envelope, the
// arguments with it.
func EncodeSessionCall(c SessionCall) ([]byte, error) {
	m := &pb.SessionCall{Hsm: c.HSM, Method: c.Method}
	// Key use, which an application makes thousands of times a second,
	// is set directly; the rest through the oneof's table (reflection,
	// about a microsecond more).
	switch a := c.msg.(type) {
	case nil:
	case *pb.SignArgs:
		m.Args = &pb.SessionCall_Sign{Sign: a}
	case *pb.VerifyArgs:
		m.Args = &pb.SessionCall_Verify{Verify: a}
	case *pb.KeyRef:
		m.Args = &pb.SessionCall_Ref{Ref: a}
	default:
		if err := callArgs.set(m, c.msg, "session call"); err != nil {
			return nil, err
		}
	}
	return proto.Marshal(m)
}

// DecodeSessionCall decodes the plaintext of a command envelope.
func DecodeSessionCall(b []byte) (SessionCall, error) {
	var m pb.SessionCall
	if err := proto.Unmarshal(b, &m); err != nil {
		return SessionCall{}, fmt.Errorf("not a SessionCall: %w", err)
	}
	if hasField(m.ProtoReflect().GetUnknown(), oldCallJSON) {
		return SessionCall{}, fmt.Errorf("a SessionCall of %s: %w", m.Method, errOldPeer)
	}
	c := SessionCall{HSM: m.Hsm, Method: m.Method}
	switch a := m.Args.(type) { // key use directly, as in EncodeSessionCall
	case nil:
	case *pb.SessionCall_Sign:
		c.msg = a.Sign
	case *pb.SessionCall_Verify:
		c.msg = a.Verify
	case *pb.SessionCall_Ref:
		c.msg = a.Ref
	default:
		c.msg = callArgs.get(&m)
	}
	return c, nil
}

// NewSessionResult is the answer out to method.
func NewSessionResult(method string, out any) (SessionResult, error) {
	var r SessionResult
	t, err := sessionCodec(method)
	if err != nil {
		return r, err
	}
	if t.answer.message == "" {
		_, err = t.answer.enc(out) // refuses an answer where none belongs
		return r, err
	}
	r.msg, err = t.answer.toMsg(out)
	return r, err
}

// DecodeAnswer decodes the answer to method into v, a pointer; a nil v
// ignores it.
func (r SessionResult) DecodeAnswer(method string, v any) error {
	if v == nil {
		return nil
	}
	t, err := sessionCodec(method)
	if err != nil {
		return err
	}
	if t.answer.message == "" {
		if r.msg != nil {
			return fmt.Errorf("%s has no answer, and the answer carries a %s", method, r.msg.ProtoReflect().Descriptor().Name())
		}
		return nil
	}
	if r.msg == nil {
		return fmt.Errorf("%s answers a %s, and the answer carries none", method, t.answer.message)
	}
	return t.answer.fromMsg(r.msg, v)
}

// EncodeSessionResult encodes the plaintext of an answer envelope.
func EncodeSessionResult(r SessionResult) ([]byte, error) {
	m := &pb.SessionResult{Code: r.Code, Error: r.Error}
	switch a := r.msg.(type) { // key use directly, as in EncodeSessionCall
	case nil:
	case *pb.Bytes:
		m.Result = &pb.SessionResult_Bytes{Bytes: a}
	case *pb.Bool:
		m.Result = &pb.SessionResult_Bool{Bool: a}
	default:
		if err := resultField.set(m, r.msg, "session result"); err != nil {
			return nil, err
		}
	}
	return proto.Marshal(m)
}

// DecodeSessionResult decodes the plaintext of an answer envelope.
func DecodeSessionResult(b []byte) (SessionResult, error) {
	var m pb.SessionResult
	if err := proto.Unmarshal(b, &m); err != nil {
		return SessionResult{}, fmt.Errorf("not a SessionResult: %w", err)
	}
	if hasField(m.ProtoReflect().GetUnknown(), oldResultJSON) {
		return SessionResult{}, fmt.Errorf("a SessionResult: %w", errOldPeer)
	}
	r := SessionResult{Code: m.Code, Error: m.Error}
	switch a := m.Result.(type) { // key use directly, as in EncodeSessionCall
	case nil:
	case *pb.SessionResult_Bytes:
		r.msg = a.Bytes
	case *pb.SessionResult_Bool:
		r.msg = a.Bool
	default:
		r.msg = resultField.get(&m)
	}
	return r, nil
}
