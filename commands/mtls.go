package commands

import (
	"context"
	"encoding/pem"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/hsmsh/hsmsh/hsmcore"
)

// cluster mtls: trust anchors for mutual TLS between clients and the HSM
// servers, and whether the servers' outer TLS layer enforces them. The
// HSMs keep the settings; an admin changes them under the cluster quorum
// service.

// maxAnchorFile bounds a trust anchor file: a CA certificate is a few
// kilobytes.
const maxAnchorFile = 64 << 10

// trustAnchor is one anchor as CloudHSM CLI prints it.
type trustAnchor struct {
	Ref      string `json:"certificate-reference"`
	Cert     string `json:"certificate"`
	Coverage string `json:"cluster-coverage"`
}

func anchorsOf(s hsmcore.MTLSState, coverage map[int]string) []trustAnchor {
	out := []trustAnchor{}
	for _, a := range s.Anchors {
		out = append(out, trustAnchor{Ref: fmt.Sprintf("0x%02x", a.Ref),
			Cert: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: a.DER})), Coverage: coverage[a.Ref]})
	}
	return out
}

func mtlsCommands() []*Command {
	change := func(ctx context.Context, env *Env, ch hsmcore.MTLSChange) (hsmcore.MTLSState, map[int]string, error) {
		c, err := env.Session.Caller()
		if err != nil {
			return hsmcore.MTLSState{}, nil, err
		}
		cl := env.Session.Cluster()
		if _, err := cl.ChangeMTLS(ctx, c, ch); err != nil {
			return hsmcore.MTLSState{}, nil, err
		}
		return cl.MTLS(ctx)
	}
	return []*Command{
		{
			Path: []string{"cluster", "mtls", "register-trust-anchor"}, Who: AdminOnly,
			Summary: "register a trust anchor (a CA certificate, PEM) for mutual TLS; at most two",
			Flags:   []Flag{{Name: "path", Kind: String, Required: true, Path: true, Help: "Filepath of the trust anchor to register"}},
			Run: func(ctx context.Context, env *Env, a *Args) (any, error) {
				b, err := readSmall(env.path(a.String("path")), maxAnchorFile, "--path")
				if err != nil {
					return nil, err
				}
				s, cov, err := change(ctx, env, hsmcore.MTLSChange{CertPEM: b})
				if err != nil {
					return nil, err
				}
				block, _ := pem.Decode(b)
				for _, t := range anchorsOf(s, cov) {
					if p, _ := pem.Decode([]byte(t.Cert)); p != nil && block != nil && string(p.Bytes) == string(block.Bytes) {
						return map[string]any{"trust_anchor": t}, nil
					}
				}
				return nil, errors.New("the trust anchor was registered, but no HSM lists it yet: run cluster mtls list-trust-anchors")
			},
		},
		{
			Path: []string{"cluster", "mtls", "deregister-trust-anchor"}, Who: AdminOnly,
			Summary: "deregister a trust anchor",
			Flags:   []Flag{{Name: "certificate-reference", Kind: String, Required: true, Help: "the trust anchor's certificate-reference, hexadecimal (0x01) or decimal (1)"}},
			Run: func(ctx context.Context, env *Env, a *Args) (any, error) {
				v := a.String("certificate-reference")
				// The page takes it in hexadecimal or decimal.
				digits, base := strings.ToLower(strings.TrimSpace(v)), 10
				if h, ok := strings.CutPrefix(digits, "0x"); ok {
					digits, base = h, 16
				}
				ref, err := strconv.ParseInt(digits, base, 32)
				if err != nil || ref < 1 {
					return nil, fmt.Errorf("--certificate-reference takes a reference as list-trust-anchors prints it, hexadecimal (0x01) or decimal (1), not %q", v)
				}
				if _, _, err := change(ctx, env, hsmcore.MTLSChange{Ref: int(ref)}); err != nil {
					return nil, err
				}
				// The page: {"message": "Trust anchor with reference 0x01
				// deregistered successfully"}, an object.
				return fmt.Sprintf("Trust anchor with reference 0x%02x deregistered successfully", ref), nil
			},
		},
		{
			Path: []string{"cluster", "mtls", "list-trust-anchors"}, Who: Anyone,
			Summary: "list the trust anchors registered for mutual TLS (no login needed)",
			Run: func(ctx context.Context, env *Env, a *Args) (any, error) {
				s, cov, err := env.Session.Cluster().MTLS(ctx)
				if err != nil {
					return nil, err
				}
				return map[string]any{"trust_anchors": anchorsOf(s, cov)}, nil
			},
		},
		{
			Path: []string{"cluster", "mtls", "set-enforcement"}, Who: AdminOnly,
			Summary: "set the mutual TLS enforcement level of the HSM servers' outer TLS layer",
			Flags:   []Flag{{Name: "level", Kind: String, Required: true, Values: []string{hsmcore.MTLSNone, hsmcore.MTLSCluster}, Help: "none: any client certificate the cluster accepts; cluster: only one a registered trust anchor issued"}},
			Run: func(ctx context.Context, env *Env, a *Args) (any, error) {
				if _, _, err := change(ctx, env, hsmcore.MTLSChange{Level: a.String("level")}); err != nil {
					return nil, err
				}
				// The page: {"message": "Mtls enforcement level set to
				// Cluster successfully"}, an object, the level capitalised.
				level := a.String("level")
				return "Mtls enforcement level set to " + strings.ToUpper(level[:1]) + level[1:] + " successfully", nil
			},
		},
		{
			Path: []string{"cluster", "mtls", "get-enforcement"}, Who: LoggedIn,
			Summary: "show the mutual TLS enforcement level",
			Run: func(ctx context.Context, env *Env, a *Args) (any, error) {
				s, _, err := env.Session.Cluster().MTLS(ctx)
				if err != nil {
					return nil, err
				}
				level := s.Level
				if level == "" {
					level = hsmcore.MTLSNone
				}
				return map[string]string{"mtls-enforcement-level": level}, nil
			},
		},
	}
}
