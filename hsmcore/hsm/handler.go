package hsm

import (
	"context"
	"errors"
	"fmt"

	"github.com/hsmsh/hsmsh/hsmcore/authsession"
	"github.com/hsmsh/hsmsh/hsmcore/protocol"
	"github.com/hsmsh/hsmsh/hsmcore/rpc"
)

// The door of an HSM: every call it serves, and who may make it. Nothing
// reaches an HSM but through serve, in-process or over the network, so
// the table below is the whole of what an HSM answers.

// errUnknownMethod is a request for a call this HSM does not serve.
var errUnknownMethod = errors.New("unknown method")

// decodeArgs reads a call's arguments into v, in the call's encoding
// (protocol.DecodeArgs).
func decodeArgs(method string, args []byte, v any) error {
	if err := protocol.DecodeArgs(method, args, v); err != nil {
		return fmt.Errorf("%w: %s: bad arguments: %v", ErrInvalid, method, err)
	}
	return nil
}

// origin is where a call came from, as far as a check depends on it.
type origin struct {
	// remote: over a network connection to hsmsh serve; not in-process,
	// and not the embedded cluster's own pipes.
	remote bool
	// anchored: that connection's client certificate chained to a
	// registered trust anchor (an mTLS connection).
	anchored bool
}

type originKey struct{}

// withOrigin marks the context of a connection's calls with their origin.
func withOrigin(ctx context.Context, o origin) context.Context {
	return context.WithValue(ctx, originKey{}, o)
}

// originOf is the origin withOrigin recorded; none is in-process.
func originOf(ctx context.Context) origin {
	o, _ := ctx.Value(originKey{}).(origin)
	return o
}

// serve answers one call that arrived bare, in-process: serveFrom.
func (h *hsm) serve(method string, args []byte) (any, error) {
	return h.serveFrom(origin{}, method, args)
}

// serveFrom answers one call that arrived bare: the bootstrap calls, and
// the carriers of session and peer calls, which open, check and dispatch
// what they carry. A session or peer call sent bare is refused, whoever
// sends it: holding a cluster certificate proves nothing about who is
// asking.
func (h *hsm) serveFrom(o origin, method string, args []byte) (any, error) {
	class, ok := protocol.Calls[method]
	if !ok {
		return nil, fmt.Errorf("%w %q: the server runs another hsmsh version?", errUnknownMethod, method)
	}
	switch class {
	case protocol.ClassSession:
		return nil, fmt.Errorf("%w: %s needs a logged-in session: send it in a session envelope", ErrPermission, method)
	case protocol.ClassPeer:
		return nil, fmt.Errorf("%w: %s is served only to another HSM of the domain, in a signed peer call", ErrPermission, method)
	case protocol.ClassLab:
		lab := h.labControl()
		if lab == nil {
			return nil, fmt.Errorf("%w: %s is a lab control, and the lab of %s is off (start the server with hsmsh serve --lab)", ErrPermission, method, h.id)
		}
		return lab(method, args)
	}
	switch method {
	case protocol.CallInfo:
		return h.Info(), nil
	case protocol.CallDomainInfo:
		return h.DomainInfo()
	case protocol.CallHandshake:
		var a protocol.HandshakeArgs
		if err := decodeArgs(method, args, &a); err != nil {
			return nil, err
		}
		return h.Handshake(a)
	case protocol.CallAuthenticate:
		var a protocol.AuthArgs
		if err := decodeArgs(method, args, &a); err != nil {
			return nil, err
		}
		return h.Authenticate(a)
	case protocol.CallUsers:
		// What the domain has committed, not a follower's older copy.
		h.catchUp()
		return h.userViews()
	case protocol.CallMTLSState:
		h.catchUp()
		return h.MTLSState()
	case protocol.CallQuorumValues:
		h.catchUp()
		if !h.Up() {
			return nil, protocol.ErrDown(h.id)
		}
		return h.quorumSnapshot(), nil
	case protocol.CallActivate:
		var a protocol.ActivateArgs
		if err := decodeArgs(method, args, &a); err != nil {
			return nil, err
		}
		return nil, h.activate(a.Password)
	case protocol.CallEnveloped:
		var env authsession.Envelope
		if err := decodeArgs(method, args, &env); err != nil {
			return nil, err
		}
		return h.enveloped(o, env)
	case protocol.CallPeer:
		var pc peerCall
		if err := decodeArgs(method, args, &pc); err != nil {
			return nil, err
		}
		return h.servePeerCall(&pc)
	case protocol.CallJoin:
		var j joinRequest
		if err := decodeArgs(method, args, &j); err != nil {
			return nil, err
		}
		return h.acceptJoin(&j)
	}
	return nil, fmt.Errorf("%w %q", errUnknownMethod, method)
}

// handler is the HSM's door on a connection: serve, with errors coded
// for the wire.
func (h *hsm) handler() rpc.Handler {
	return func(ctx context.Context, method string, args []byte) ([]byte, error) {
		out, err := h.serveFrom(originOf(ctx), method, args)
		if err == nil {
			var b []byte
			if b, err = protocol.EncodeAnswer(method, out); err == nil {
				return b, nil
			}
			err = fmt.Errorf("encode the answer to %s: %w", method, err)
		}
		return nil, &rpc.RemoteError{Code: protocol.CodeOf(err), Message: err.Error()}
	}
}
