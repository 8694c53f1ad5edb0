package client

import (
	"cmp"
	"context"

	"github.com/hsmsh/hsmsh/hsmcore/protocol"
)

// cluster mtls, as the client library asks for it: the HSMs keep the
// settings and the servers' outer TLS layer applies them.

// MTLSState is the cluster's trust anchors and mTLS enforcement level.
type MTLSState = protocol.MTLSState

// MTLS returns the newest settings any HSM that answers holds, and for
// each trust anchor whether every HSM of the cluster holds it ("full") or
// not ("partial"). No login needed, as CloudHSM CLI lists trust anchors
// without one.
func (e *Embedded) MTLS(ctx context.Context) (MTLSState, map[int]string, error) {
	var newest MTLSState
	all := e.members()
	hs := e.answering()
	if len(hs) == 0 {
		return newest, nil, e.noHSM()
	}
	held := map[string]int{}
	var firstErr error
	for _, h := range hs {
		var s MTLSState
		if err := h.call(protocol.CallMTLSState, nil, &s); err != nil {
			firstErr = cmp.Or(firstErr, err)
			continue
		}
		if s.Updated >= newest.Updated {
			newest = s
		}
		for _, a := range s.Anchors {
			held[string(a.DER)]++
		}
	}
	if newest.Updated == 0 && firstErr != nil {
		return newest, nil, firstErr
	}
	coverage := map[int]string{}
	for _, a := range newest.Anchors {
		coverage[a.Ref] = "partial"
		if held[string(a.DER)] == len(all) {
			coverage[a.Ref] = "full"
		}
	}
	return newest, coverage, nil
}

// ChangeMTLS registers a trust anchor (CertPEM), deregisters one (Ref) or
// sets the enforcement level (Level), as admin c, with the cluster quorum
// service's approval from ctx when its value is above 1.
func (e *Embedded) ChangeMTLS(ctx context.Context, c Caller, change MTLSChange) (MTLSState, error) {
	var s MTLSState
	if err := e.requireRole(c, RoleAdmin); err != nil {
		return s, err
	}
	h, err := e.first(c)
	if err != nil {
		return s, err
	}
	method := protocol.CallMTLSSetLevel
	switch {
	case change.CertPEM != nil:
		method = protocol.CallMTLSRegister
	case change.Ref != 0:
		method = protocol.CallMTLSDeregister
	}
	args := protocol.MTLSArgs{CertPEM: change.CertPEM, Ref: change.Ref, Level: change.Level, Approval: approvalFrom(ctx)}
	err = h.call(method, args, &s)
	return s, err
}

// MTLSChange is one change to the mTLS settings: a trust anchor to
// register (CertPEM), one to deregister (Ref), or a level to set.
type MTLSChange struct {
	CertPEM []byte
	Ref     int
	Level   string
}
