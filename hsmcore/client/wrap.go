package client

import (
	"context"
	"errors"
	"fmt"

	"github.com/hsmsh/hsmsh/hsmcore/protocol"
)

// Key wrap and unwrap. The HSM does both: the client library sends
// references and parameters, and gets back wrapped bytes (wrap) or a new
// key's attributes (unwrap), never key material.

// WrapRequest is a key wrap: the payload key wrapped under the wrapping
// key, with a mechanism's parameters. The approvals are signed quorum
// token files, for a key under a manage quorum.
type WrapRequest struct {
	Params           protocol.WrapParams
	Payload          Ref
	Wrapping         Ref
	PayloadApproval  []byte
	WrappingApproval []byte
}

// Wrapped is a wrapped key: its data and, for aes-gcm, the IV the HSM drew.
type Wrapped = protocol.WrapReply

// UnwrapSpec is a key unwrap.
type UnwrapSpec = protocol.UnwrapSpec

// WrapParams are a wrapping mechanism and its parameters.
type WrapParams = protocol.WrapParams

func approvalOfFile(file []byte) *protocol.Approval {
	if file == nil {
		return nil
	}
	return &protocol.Approval{Token: file}
}

// WrapKey has an HSM that holds both keys wrap the payload key.
func (e *Embedded) WrapKey(ctx context.Context, c Caller, req WrapRequest) (Wrapped, error) {
	var out Wrapped
	args := protocol.WrapArgs{Params: req.Params, Payload: req.Payload, Wrapping: req.Wrapping,
		PayloadApproval: approvalOfFile(req.PayloadApproval), WrappingApproval: approvalOfFile(req.WrappingApproval)}
	err := e.use(ctx, c, req.Payload, func(h *sealedNode) error {
		return h.call(protocol.CallWrapKey, args, &out)
	})
	return out, err
}

// UnwrapKey makes a new key from wrapped data, on an HSM that holds the
// unwrapping key, and replicates a token key as key generation does:
// minimum nodes, cleanup after a failed sync, the availability check (on
// the unwrapping key, which the unwrap uses).
func (e *Embedded) UnwrapKey(ctx context.Context, c Caller, spec UnwrapSpec) (Key, error) {
	if err := e.requireRole(c, RoleCryptoUser); err != nil {
		return Key{}, err
	}
	if spec.Approval == nil {
		spec.Approval = approvalFrom(ctx)
	}
	keys, err := e.createWith(ctx, c, 1, spec.Session, spec.MinServers, spec.Unwrapping, func(h *sealedNode, ref Ref, wrap bool) (protocol.CreateReply, error) {
		var out protocol.CreateReply
		err := h.call(protocol.CallUnwrapKey, protocol.UnwrapArgs{Spec: spec, Ref: ref, Wrap: wrap}, &out)
		return out, err
	})
	if err != nil {
		return Key{}, err
	}
	return keys[0], nil
}

// holdersFirst orders hs so that an HSM holding ref comes first: a
// session key's own HSM, or the first that holds the token key. With the
// availability check on, a token key on fewer than two HSMs is refused as
// any use of it is.
func (e *Embedded) holdersFirst(c Caller, hs []node, ref Ref) ([]node, error) {
	e.mu.RLock()
	sk, isSession := e.sessionKeys[ref]
	e.mu.RUnlock()
	sn := e.onAll(c, hs)
	if !isSession && e.Durability().AvailabilityCheck && !e.available(c, hs, ref) {
		return nil, errors.New(availabilityMessage(ref))
	}
	for i, h := range sn {
		if (isSession && h.ID() == sk.hsm) || (!isSession && h.Has(ref)) {
			out := append([]node{hs[i]}, hs[:i]...)
			return append(out, hs[i+1:]...), nil
		}
	}
	if isSession {
		return nil, fmt.Errorf("%w: session key %s was on %s, which is down", ErrKeyNotFound, ref, sk.hsm)
	}
	return nil, fmt.Errorf("%w: key %s is on no HSM that answers", ErrKeyNotFound, ref)
}
