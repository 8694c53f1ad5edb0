package commands

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/hsmsh/hsmsh/hsmcore"
)

// maxData bounds what crypto sign and verify read: the HSM hashes it in
// memory.
const maxData = 16 << 20

func hashNames() []string {
	names := make([]string, 0, len(hsmcore.Hashes))
	for n := range hsmcore.Hashes {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// maxEd25519Data is the most crypto sign ed25519 and crypto verify ed25519
// take, as CloudHSM CLI's pages say: PureEdDSA holds the whole message in
// the HSM; ed25519ph hashes larger ones first.
const maxEd25519Data = 16000

func cryptoFlags(mech hsmcore.Mechanism, verify bool) []Flag {
	keyFilter := Flag{Name: "key-filter", Kind: List, Required: true, Help: "attr.NAME=VALUE or key-reference=0x… matching exactly one key"}
	data := []Flag{
		{Name: "data", Kind: String, Help: "the data, base64"},
		{Name: "data-path", Kind: String, Path: true, Help: "a file holding the data"},
	}
	var fl []Flag
	switch mech {
	case hsmcore.MechEd25519:
		// PureEdDSA signs the message itself: no hash, no data type.
		fl = append([]Flag{keyFilter}, data...)
	case hsmcore.MechMLDSA:
		// As on CloudHSM CLI's page: raw, or external-mu, which the HSM
		// refuses with its reason; --hash-function shake256, the page's
		// only value, names ML-DSA's own internal hash (FIPS 204), so it
		// changes nothing. The page requires it; hsmsh takes it or its
		// absence, as before.
		fl = append(append([]Flag{keyFilter}, data...),
			Flag{Name: "data-type", Kind: String, Required: true, Values: []string{"raw", "external-mu"}, Help: "raw (the message itself) or external-mu (a 64-byte mu; not supported by hsmsh)"},
			Flag{Name: "hash-function", Kind: String, Values: []string{"shake256"}, Help: "the hash function: shake256, ML-DSA's own internal hash (the only value; may be left out)"})
	case hsmcore.MechEd25519ph:
		// As on CloudHSM CLI's page: both required, and SHA-512 only.
		fl = append(append([]Flag{keyFilter}, data...),
			Flag{Name: "data-type", Kind: String, Required: true, Values: []string{"raw", "digest"}, Help: "raw (hashed here) or digest (a 64-byte SHA-512 digest)"},
			Flag{Name: "hash-function", Kind: String, Required: true, Values: []string{"sha512"}, Help: "the hash function (Ed25519ph uses SHA-512 only)"})
	default:
		fl = append([]Flag{keyFilter,
			{Name: "hash-function", Kind: String, Required: true, Values: hashNames(), Help: "the hash function"}},
			data...)
		fl = append(fl, Flag{Name: "data-type", Kind: String, Values: []string{"raw", "digest"}, Help: "raw (hashed here, the default) or digest (already hashed)"})
	}
	if mech == hsmcore.MechRSAPKCSPS {
		fl = append(fl,
			Flag{Name: "mgf", Kind: String, Values: []string{"mgf1-sha1", "mgf1-sha224", "mgf1-sha256", "mgf1-sha384", "mgf1-sha512"}, Help: "mask generation function; must use the same hash"},
			Flag{Name: "salt-length", Kind: Int, Help: "salt length in bytes (default: the hash's length)"})
	}
	if verify {
		fl = append(fl,
			Flag{Name: "signature", Kind: String, Help: "the signature, base64"},
			Flag{Name: "signature-path", Kind: String, Path: true, Help: "a file holding the signature (base64 or binary)"})
	}
	return fl
}

// exactlyOne reads the value of one of two flags that exclude each other:
// inline base64, or a file.
func exactlyOne(env *Env, a *Args, inline, path string, pathBase64 bool) ([]byte, error) {
	switch {
	case a.Has(inline) && a.Has(path):
		return nil, fmt.Errorf("give --%s or --%s, not both", inline, path)
	case a.Has(inline):
		b, err := base64.StdEncoding.DecodeString(a.String(inline))
		if err != nil {
			return nil, fmt.Errorf("--%s is not valid base64: %v", inline, err)
		}
		return b, nil
	case a.Has(path):
		b, err := readLimited(env.path(a.String(path)), maxData)
		if err != nil {
			return nil, err
		}
		if pathBase64 {
			if d, err := base64.StdEncoding.DecodeString(string(bytes.TrimSpace(b))); err == nil {
				return d, nil
			}
		}
		return b, nil
	}
	return nil, fmt.Errorf("give --%s (base64) or --%s (a file)", inline, path)
}

func signRequest(ctx context.Context, env *Env, a *Args, mech hsmcore.Mechanism) (hsmcore.Caller, hsmcore.SignRequest, error) {
	var req hsmcore.SignRequest
	data, err := exactlyOne(env, a, "data", "data-path", false)
	if err != nil {
		return hsmcore.Caller{}, req, err
	}
	if mech == hsmcore.MechEd25519 && len(data) > maxEd25519Data {
		return hsmcore.Caller{}, req, fmt.Errorf("the data is %d bytes; ed25519 takes at most %d bytes: use ed25519ph (it hashes the data with SHA-512 first) for a larger message", len(data), maxEd25519Data)
	}
	c, ref, err := keyToUse(ctx, env, a.List("key-filter"))
	if err != nil {
		return c, req, err
	}
	req = hsmcore.SignRequest{
		Ref: ref, Mechanism: mech, Hash: hsmcore.Hashes[a.String("hash-function")],
		Data: data, SaltLength: a.Int("salt-length"),
		// ML-DSA's external mu is, like a digest, something computed from
		// the message beforehand; the HSM says whether it takes it.
		Digest: a.String("data-type") == "digest" || a.String("data-type") == "external-mu",
	}
	if m := a.String("mgf"); m != "" && strings.TrimPrefix(m, "mgf1-") != a.String("hash-function") {
		return c, req, errors.New("--mgf must use the same hash as --hash-function (Go's RSA-PSS uses one hash for both)")
	}
	if a.Has("salt-length") && req.SaltLength < 1 {
		return c, req, errors.New("--salt-length must be at least 1")
	}
	return c, req, nil
}

// keyToUse resolves the key a crypto command uses. A filter that is just a
// key reference needs no listing: the HSM that serves the command checks
// the key exists, is the caller's to use and suits the mechanism, and a
// listing would cost a question to every HSM on every signature.
func keyToUse(ctx context.Context, env *Env, words []string) (hsmcore.Caller, hsmcore.Ref, error) {
	if len(words) == 1 {
		if v, ok := strings.CutPrefix(words[0], "key-reference="); ok {
			c, err := env.Session.Caller()
			if err != nil {
				return c, 0, err
			}
			ref, err := hsmcore.ParseRef(v)
			if err != nil {
				return c, 0, fmt.Errorf("filter %q: %w", words[0], err)
			}
			return c, ref, nil
		}
	}
	c, k, err := oneKey(ctx, env, words)
	return c, k.Ref, err
}

func cryptoCommands() []*Command {
	var out []*Command
	for _, mech := range []hsmcore.Mechanism{hsmcore.MechECDSA, hsmcore.MechEd25519, hsmcore.MechEd25519ph, hsmcore.MechMLDSA, hsmcore.MechRSAPKCS, hsmcore.MechRSAPKCSPS} {
		out = append(out, &Command{
			Path: []string{"crypto", "sign", string(mech)}, Who: CryptoUserOnly,
			Summary: "sign data with a private key (" + string(mech) + ")",
			Flags:   cryptoFlags(mech, false),
			Run: func(ctx context.Context, env *Env, a *Args) (any, error) {
				c, req, err := signRequest(ctx, env, a, mech)
				if err != nil {
					return nil, err
				}
				sig, err := env.Session.Cluster().Sign(ctx, c, req)
				if err != nil {
					return nil, err
				}
				return map[string]string{"key-reference": req.Ref.String(), "signature": base64.StdEncoding.EncodeToString(sig)}, nil
			},
		}, &Command{
			Path: []string{"crypto", "verify", string(mech)}, Who: CryptoUserOnly,
			Summary: "verify a signature with a public key (" + string(mech) + ")",
			Flags:   cryptoFlags(mech, true),
			Run: func(ctx context.Context, env *Env, a *Args) (any, error) {
				sig, err := exactlyOne(env, a, "signature", "signature-path", true)
				if err != nil {
					return nil, err
				}
				c, req, err := signRequest(ctx, env, a, mech)
				if err != nil {
					return nil, err
				}
				if err := env.Session.Cluster().Verify(ctx, c, req, sig); err != nil {
					return nil, err
				}
				return "Signature verified successfully", nil
			},
		})
	}
	return out
}
