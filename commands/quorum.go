package commands

import (
	"cmp"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hsmsh/hsmsh/config"
	"github.com/hsmsh/hsmsh/hsmcore"
	"github.com/hsmsh/hsmsh/hsmcore/quorum"
)

// approvalFlag is --approval on every command a quorum may gate.
var approvalFlag = Flag{Name: "approval", Kind: String, Help: "a quorum token file signed by enough approvers (quorum token-sign generate)"}

// gated lists the commands that take --approval.
var gated = [][]string{
	{"user", "create"}, {"user", "delete"}, {"user", "change-password"},
	{"key", "share"}, {"key", "unshare"}, {"key", "set-attribute"},
	// key unwrap's --approval is for the unwrapping key's manage quorum;
	// key wrap takes --payload-approval and --wrapping-approval instead.
	{"key", "unwrap"},
	{"crypto", "sign"},
	{"quorum", "token-sign", "set-quorum-value"}, {"quorum", "token-sign", "set-timeout"},
	// hsmsh's own: a backup holds every key (the quorum service's M
	// admins), and user replicate makes a user (the user service's).
	{"cluster", "backup", "create"}, {"user", "replicate"},
	// cluster mtls, under the cluster quorum service.
	{"cluster", "mtls", "register-trust-anchor"}, {"cluster", "mtls", "deregister-trust-anchor"}, {"cluster", "mtls", "set-enforcement"},
}

// takesApproval adds --approval to the gated commands of t.
func takesApproval(cmds []*Command) {
	for _, c := range cmds {
		for _, g := range gated {
			if len(c.Path) >= len(g) && slices.Equal(c.Path[:len(g)], g) {
				c.Flags = append(c.Flags, approvalFlag)
			}
		}
	}
}

// maxTokenFile bounds what hsmsh reads of a token file.
const maxTokenFile = quorum.MaxFileSize

// readSmall reads a file of at most limit bytes.
func readSmall(path string, limit int64, what string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%s %s is larger than %d bytes: not a token file", what, path, limit)
	}
	return b, nil
}

// secretFlags are the flags whose values a bound command line leaves
// out; Default records them (a function value, to keep the package's
// initialisation free of a cycle through the command tree).
var (
	secretsOnce sync.Once
	secrets     map[string]bool
)

func secretFlags() map[string]bool { return secrets }

// commandLine is the canonical form of a command line a token may be
// bound to: its words re-quoted, without --approval and its value, and
// with secrets (a new user's password) as ****: approvers read the line,
// and a password is the requester's alone.
func commandLine(words []string) string {
	var kept []string
	for i := 0; i < len(words); i++ {
		w := words[i]
		if w == "--approval" {
			i++
			continue
		}
		if strings.HasPrefix(w, "--approval=") {
			continue
		}
		kept = append(kept, Quote(w))
	}
	return redactWords(kept, secretFlags())
}

// redactWords joins quoted words, replacing secret flags' values by ****.
func redactWords(words []string, secret map[string]bool) string {
	out := make([]string, 0, len(words))
	for i := 0; i < len(words); i++ {
		w := words[i]
		name, _, hasVal := strings.Cut(strings.TrimPrefix(w, "--"), "=")
		if strings.HasPrefix(w, "--") && secret[name] {
			if hasVal {
				out = append(out, "--"+name+"=****")
				continue
			}
			out = append(out, w)
			if i+1 < len(words) {
				out = append(out, "****")
				i++
			}
			continue
		}
		out = append(out, w)
	}
	return strings.Join(out, " ")
}

// withApproval tells the cluster which command an operation carries out,
// for tokens bound to a command line and rule sets written for a command,
// with the --approval file if one was given.
func withApproval(ctx context.Context, env *Env, cmd *Command, a *Args, words []string) (context.Context, error) {
	var token []byte
	line := ""
	if a.Has("approval") {
		b, err := readSmall(env.path(a.String("approval")), maxTokenFile, "--approval")
		if err != nil {
			return ctx, err
		}
		// Written out only with a token, the one thing it is checked
		// against: a busy signer pays nothing for it.
		token, line = b, commandLine(words)
	}
	return hsmcore.WithApproval(ctx, token, line, gatedPath(cmd.Path)), nil
}

// gatedPath is the path rule sets name a command by: "crypto sign" for
// every mechanism of crypto sign.
func gatedPath(path []string) string {
	for _, g := range gated {
		if len(path) >= len(g) && slices.Equal(path[:len(g)], g) {
			return strings.Join(g, " ")
		}
	}
	return strings.Join(path, " ")
}

// quorumRules turns the configuration's rule sets into the HSMs', and
// refuses one for a command no quorum can gate.
func quorumRules(cfg *config.Config) (map[string][]quorum.Rule, error) {
	if len(cfg.Quorum.Rules) == 0 {
		return nil, nil
	}
	var names []string
	for _, g := range gated {
		names = append(names, strings.Join(g, " "))
	}
	out := map[string][]quorum.Rule{}
	for _, r := range cfg.Quorum.Rules {
		if !slices.Contains(names, r.Command) {
			return nil, fmt.Errorf("%s: [[quorum.rules]] command %q cannot be gated by a quorum (these can: %s)", cfg.Path, r.Command, strings.Join(names, ", "))
		}
		for _, alt := range r.Alternatives {
			var rule quorum.Rule
			for _, req := range alt {
				rule = append(rule, quorum.Requirement{Role: req.Role, Min: req.Min})
			}
			out[r.Command] = append(out[r.Command], rule)
		}
	}
	return out, nil
}

func quorumCommands() []*Command {
	serviceFlag := Flag{Name: "service", Kind: String, Required: true, Values: quorum.Services, Help: "the quorum service"}
	return []*Command{
		{
			Path: []string{"quorum", "token-sign", "generate"}, Who: LoggedIn,
			Summary: "have the cluster issue a quorum token for approvers to sign",
			Flags: []Flag{
				serviceFlag,
				{Name: "token", Kind: String, Required: true, Help: "the file to write the token to"},
				{Name: "key-reference", Kind: String, Help: "the key a key-usage or key-management token is for"},
				{Name: "command", Kind: String, Help: "bind the token to this exact command line"},
			},
			Run: func(ctx context.Context, env *Env, a *Args) (any, error) {
				c, err := env.Session.Caller()
				if err != nil {
					return nil, err
				}
				var ref *hsmcore.Ref
				if a.Has("key-reference") {
					r, err := hsmcore.ParseRef(a.String("key-reference"))
					if err != nil {
						return nil, err
					}
					ref = &r
				}
				command := ""
				if a.Has("command") {
					words, err := Split(a.String("command"))
					if err != nil {
						return nil, fmt.Errorf("--command: %w", err)
					}
					command = commandLine(words)
				}
				// Refuse an existing file before the cluster issues a token
				// nobody could use; createFile still guards the write.
				if _, err := os.Lstat(env.path(a.String("token"))); err == nil {
					return nil, fmt.Errorf("%s already exists: choose another --token or remove it first", a.String("token"))
				}
				b, err := env.Session.Cluster().GenerateToken(ctx, c, a.String("service"), ref, command)
				if err != nil {
					return nil, err
				}
				if err := createFile(env.path(a.String("token")), a.String("token"), "--token", b, 0o600); err != nil {
					return nil, err
				}
				return map[string]any{"filepath": a.String("token")}, nil
			},
		},
		{
			Path: []string{"quorum", "token-sign", "list"}, Who: LoggedIn,
			Summary: "list live quorum tokens: service, approvals, seconds left",
			Run: func(ctx context.Context, env *Env, a *Args) (any, error) {
				c, err := env.Session.Caller()
				if err != nil {
					return nil, err
				}
				ts, err := env.Session.Cluster().QuorumTokens(ctx, c)
				if err != nil {
					return nil, err
				}
				out := make([]tokenOut, 0, len(ts))
				for _, t := range ts {
					out = append(out, tokenView(t))
				}
				// A steady order, whatever order the HSMs keep them in:
				// by user, then service (as the page's example lists them).
				slices.SortStableFunc(out, func(a, b tokenOut) int {
					return cmp.Or(strings.Compare(a.Username, b.Username), strings.Compare(a.Service, b.Service), strings.Compare(a.ID, b.ID))
				})
				return map[string]any{"tokens": out}, nil
			},
		},
		{
			// CloudHSM shows quorum values and timeouts without a login.
			Path: []string{"quorum", "token-sign", "list-quorum-values"}, Who: Anyone,
			Summary: "show the quorum value (M) of each service",
			Run: func(ctx context.Context, env *Env, a *Args) (any, error) {
				v, _, _, err := env.Session.Cluster().QuorumValues(ctx, hsmcore.Caller{})
				return v, err
			},
		},
		{
			Path: []string{"quorum", "token-sign", "set-quorum-value"}, Who: AdminOnly,
			Summary: "set a service's quorum value (1 = off, 2-8)",
			Flags: []Flag{
				{Name: "service", Kind: String, Required: true, Values: []string{quorum.ServiceUser, quorum.ServiceQuorum}, Help: "user or quorum"},
				{Name: "value", Kind: Int, Required: true, Help: "approvals needed: 1 (off) to 8"},
			},
			Run: func(ctx context.Context, env *Env, a *Args) (any, error) {
				c, err := env.Session.Caller()
				if err != nil {
					return nil, err
				}
				if err := env.Session.Cluster().SetQuorumValue(ctx, c, a.String("service"), a.Int("value")); err != nil {
					return nil, err
				}
				return Status("Set Quorum Value successful"), nil
			},
		},
		{
			Path: []string{"quorum", "token-sign", "delete"}, Who: LoggedIn,
			Summary: "delete your quorum tokens (--scope user) or every token (--scope all, admins)",
			Flags:   []Flag{{Name: "scope", Kind: String, Required: true, Values: []string{"user", "all"}, Help: "user or all"}},
			Run: func(ctx context.Context, env *Env, a *Args) (any, error) {
				c, err := env.Session.Caller()
				if err != nil {
					return nil, err
				}
				if _, err := env.Session.Cluster().DeleteTokens(ctx, c, a.String("scope") == "all"); err != nil {
					return nil, err
				}
				return Status("Deletion of quorum token(s) successful"), nil
			},
		},
		{
			Path: []string{"quorum", "token-sign", "list-timeouts"}, Who: Anyone,
			Summary: "show how long tokens wait for approval and stay usable",
			Run: func(ctx context.Context, env *Env, a *Args) (any, error) {
				_, g, ap, err := env.Session.Cluster().QuorumValues(ctx, hsmcore.Caller{})
				if err != nil {
					return nil, err
				}
				return map[string]any{"generated": int(g / time.Second), "approved": int(ap / time.Second)}, nil
			},
		},
		{
			Path: []string{"quorum", "token-sign", "set-timeout"}, Who: AdminOnly,
			Summary: "set the token timeouts, in seconds",
			// Either flag alone changes that timeout and keeps the other,
			// as CloudHSM CLI does.
			Flags: []Flag{
				{Name: "generated", Kind: Int, Help: "seconds a token may wait for its approvals"},
				{Name: "approved", Kind: Int, Help: "seconds an approved token stays usable"},
			},
			Run: func(ctx context.Context, env *Env, a *Args) (any, error) {
				c, err := env.Session.Caller()
				if err != nil {
					return nil, err
				}
				if !a.Has("generated") && !a.Has("approved") {
					return nil, errors.New("set-timeout: give --generated, --approved or both (seconds)")
				}
				_, g, ap, err := env.Session.Cluster().QuorumValues(ctx, c)
				if err != nil {
					return nil, err
				}
				if a.Has("generated") {
					g = time.Duration(a.Int("generated")) * time.Second
				}
				if a.Has("approved") {
					ap = time.Duration(a.Int("approved")) * time.Second
				}
				if err := env.Session.Cluster().SetQuorumTimeouts(ctx, c, g, ap); err != nil {
					return nil, err
				}
				return Status("Set token timeout successful"), nil
			},
		},
		{
			Path: []string{"quorum", "approve"}, Who: Anyone,
			Summary: "add your signature to a quorum token (or a registration) with your private key, as openssl pkeyutl would",
			Flags: []Flag{
				{Name: "token", Kind: String, Required: true, Help: "the token file to sign"},
				{Name: "key", Kind: String, Required: true, Help: "your private key, PEM"},
				{Name: "username", Kind: String, Required: true, Help: "the username you approve as"},
			},
			Run: func(ctx context.Context, env *Env, a *Args) (any, error) {
				res := Approve(env.path(a.String("token")), env.path(a.String("key")), a.String("username"))
				if !res.OK() {
					return nil, fmt.Errorf("%v", res.Data)
				}
				return res.Data, nil
			},
		},
		{
			// hsmsh's own, for approvers with no openssl (and for the
			// demos, which cannot run it): quorum approve's other half.
			Path: []string{"quorum", "keygen"}, Who: Anyone,
			Summary: "make an approver's key pair offline (EC P-256, PEM), as openssl genpkey and pkey -pubout would",
			Flags: []Flag{
				{Name: "private-key", Kind: String, Required: true, Path: true, Help: "the file for the private key (must not exist; keep it private)"},
				{Name: "public-key", Kind: String, Required: true, Path: true, Help: "the file for the public key, to register (must not exist)"},
			},
			Run: func(ctx context.Context, env *Env, a *Args) (any, error) {
				return approverKeyPair(env, a.String("private-key"), a.String("public-key"))
			},
		},
		{
			Path: []string{"user", "change-quorum", "token-sign", "register"}, Who: LoggedIn,
			Summary: "register your approver public key, with a signed registration token as proof of possession",
			Flags: []Flag{
				{Name: "public-key", Kind: String, Required: true, Help: "your public key, PEM (RSA 2048+ or EC P-256/P-384)"},
				{Name: "signed-token", Kind: String, Required: true, Help: "the registration token with its signed field filled"},
			},
			Run: func(ctx context.Context, env *Env, a *Args) (any, error) {
				c, err := env.Session.Caller()
				if err != nil {
					return nil, err
				}
				pub, err := readSmall(env.path(a.String("public-key")), 64<<10, "--public-key")
				if err != nil {
					return nil, err
				}
				tok, err := readSmall(env.path(a.String("signed-token")), maxTokenFile, "--signed-token")
				if err != nil {
					return nil, err
				}
				if err := env.Session.Cluster().RegisterQuorumKey(ctx, c, pub, tok); err != nil {
					return nil, err
				}
				return userResult{Username: c.Username, Role: c.Role}, nil
			},
		},
	}
}

// Approve adds username's signature, made with the private key in
// keyPath, to the token file at tokenPath (hsmsh quorum approve). It runs
// offline: the HSM checks the signature when the token is used. The key
// file is read, used and dropped; nothing of it is printed.
func Approve(tokenPath, keyPath, username string) Result {
	b, err := readSmall(tokenPath, maxTokenFile, "--token")
	if err != nil {
		return failure(err)
	}
	kb, err := readSmall(keyPath, 64<<10, "--key")
	if err != nil {
		return failure(err)
	}
	key, err := quorum.ParsePrivateKey(kb)
	if err != nil {
		return failure(fmt.Errorf("%s: %w", keyPath, err))
	}
	if rf, ok := registrationFile(b); ok {
		return signRegistration(tokenPath, rf, key)
	}
	tf, ad, err := quorum.ParseTokenFile(b)
	if err != nil {
		return failure(fmt.Errorf("%s: %w", tokenPath, err))
	}
	if err := quorum.AddSignature(&tf, username, key); err != nil {
		return failure(err)
	}
	if err := writeReplace(tokenPath, tf.Marshal()); err != nil {
		return failure(err)
	}
	return success(map[string]any{"token": tokenPath, "username": username, "signatures": len(tf.Signatures),
		"service": ad.Service, "requester": ad.Requester, "command": ad.Command, "expires": ad.Expires})
}

// KeyGen is hsmsh quorum keygen from the command line: the key pair
// written offline — no login, no cluster — at paths as given.
func KeyGen(privPath, pubPath string) Result {
	v, err := approverKeyPair(&Env{}, privPath, pubPath)
	if err != nil {
		return failure(err)
	}
	return success(v)
}

// approverKeyPair writes a new EC P-256 key pair for a quorum approver:
// the private key as PKCS#8 (what openssl genpkey writes), readable by
// its owner only, and the public key as PKIX (openssl pkey -pubout).
// Neither file may exist; nothing of the private key is printed.
func approverKeyPair(env *Env, privPath, pubPath string) (any, error) {
	if privPath == pubPath {
		return nil, errors.New("--private-key and --public-key name the same file")
	}
	for _, p := range [][2]string{{privPath, "--private-key"}, {pubPath, "--public-key"}} {
		if _, err := os.Lstat(env.path(p[0])); err == nil {
			return nil, fmt.Errorf("%s already exists: choose another %s or remove it first", p[0], p[1])
		}
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	pub, err := quorum.EncodePublicKey(key.Public())
	if err != nil {
		return nil, err
	}
	priv := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	clear(der)
	defer clear(priv)
	if err := createFile(env.path(privPath), privPath, "--private-key", priv, 0o600); err != nil {
		return nil, err
	}
	if err := createFile(env.path(pubPath), pubPath, "--public-key", []byte(pub), 0o644); err != nil {
		os.Remove(env.path(privPath)) // no private key without its public half
		return nil, err
	}
	return map[string]any{"private-key": privPath, "public-key": pubPath, "key-type": "ec", "curve": "secp256r1"}, nil
}

// writeReplace replaces a file's content atomically (a crash leaves the
// old token or the new one, never half of one).
func writeReplace(p string, data []byte) error {
	tmp := p + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		os.Remove(tmp)
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(tmp)
		return err
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return err
	}
	return os.Rename(tmp, p)
}

// registrationFile reads b as a registration token file, if it is one.
func registrationFile(b []byte) (quorum.RegistrationFile, bool) {
	var rf quorum.RegistrationFile
	if json.Unmarshal(b, &rf) != nil || len(rf.Tokens) != 1 {
		return rf, false
	}
	return rf, true
}

// signRegistration fills a registration token's signed field: the proof
// that the user holds the private key they are about to register.
func signRegistration(p string, rf quorum.RegistrationFile, key crypto.Signer) Result {
	t := &rf.Tokens[0]
	data, err := base64.StdEncoding.DecodeString(t.ApprovalData)
	if err != nil {
		return failure(fmt.Errorf("%s: approval_data is not base64: %w", p, err))
	}
	ad, err := quorum.DecodeApprovalData(data)
	if err != nil {
		return failure(fmt.Errorf("%s: %w", p, err))
	}
	digest := quorum.Digest(data)
	if t.Unsigned != base64.StdEncoding.EncodeToString(digest) {
		return failure(fmt.Errorf("%s: unsigned is not the SHA-256 of approval_data: the file was changed", p))
	}
	sig, err := quorum.SignDigest(key, digest)
	if err != nil {
		return failure(err)
	}
	t.Signed = base64.StdEncoding.EncodeToString(sig)
	if err := writeReplace(p, rf.Marshal()); err != nil {
		return failure(err)
	}
	return success(map[string]any{"token": p, "service": ad.Service, "requester": ad.Requester, "signed": true})
}

// tokenOut is a quorum token as CloudHSM CLI's quorum token-sign list
// prints it, followed by what hsmsh adds: the token's id, the key or
// command line it is bound to, whether it was used, and who approved it.
type tokenOut struct {
	Username          string   `json:"username"`
	Service           string   `json:"service"`
	ApprovalsRequired int      `json:"approvals-required"`
	Approvals         int      `json:"number-of-approvals"`
	TimeoutSeconds    int      `json:"token-timeout-seconds"`
	ClusterCoverage   string   `json:"cluster-coverage"`
	ID                string   `json:"token-id"`
	KeyRef            string   `json:"key-reference,omitempty"`
	Command           string   `json:"command,omitempty"`
	Used              bool     `json:"used"`
	ApprovedBy        []string `json:"approved-by"`
}

// tokenView maps the cluster's view of a token onto CloudHSM CLI's.
// approvals-required is the number of signatures the token's operation
// needs now: the quorum value ("2 admin"), 1 for a registration (the
// requester's own), 0 while the service's quorum is off.
func tokenView(t hsmcore.QuorumToken) tokenOut {
	need := 0
	if n, _, ok := strings.Cut(t.Required, " "); ok {
		if v, err := strconv.Atoi(n); err == nil {
			need = v
		}
	}
	if t.Service == quorum.ServiceRegistration {
		need = 1
	}
	signers := t.Signers
	if signers == nil {
		signers = []string{}
	}
	return tokenOut{Username: t.Requester, Service: t.Service, ApprovalsRequired: need, Approvals: len(t.Signers),
		TimeoutSeconds: t.SecondsLeft, ClusterCoverage: hsmcore.CoverageFull, ID: t.Nonce, KeyRef: t.KeyRef,
		Command: t.Command, Used: t.Used, ApprovedBy: signers}
}
