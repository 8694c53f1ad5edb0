package commands

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/hsmsh/hsmsh/hsmcore"
	"github.com/hsmsh/hsmsh/hsmcore/quorum"
)

// Token-sign MFA, as CloudHSM CLI does it: the HSM issues a token, hsmsh
// writes it to a file, the user signs it with their MFA private key
// (openssl pkeyutl -sign -pkeyopt digest:sha256), and hsmsh reads the
// signature back. The private key never reaches hsmsh.

// mfaFile is CloudHSM CLI's token file: base64 tokens to sign, and where
// their signatures go.
type mfaFile struct {
	Version string     `json:"version"`
	Tokens  []mfaToken `json:"tokens"`
}

type mfaToken struct {
	Unsigned string `json:"unsigned"`
	Signed   string `json:"signed"`
}

// maxMFAFile bounds what hsmsh reads back: a signed token file is a few
// kilobytes.
const maxMFAFile = 64 << 10

// SignedTokenPrompt asks where the signed MFA token is, in CloudHSM CLI's
// words.
const SignedTokenPrompt = "Enter signed token file path (press enter if same as the unsigned token file): "

// askSigned writes tok to path (a new file, 0600), asks where the signed
// file is (Enter: the same file), and returns the signature in it. It
// needs a terminal, as the user signs between the two steps.
func askSigned(env *Env, path string, tok []byte) ([]byte, error) {
	if env.ReadPassword == nil && env.WaitSigned == nil {
		return nil, errors.New("token-sign MFA needs a terminal to wait on while you sign the token: run it in line mode (hsmsh interactive --line) or as a single command on a terminal")
	}
	b, _ := json.MarshalIndent(mfaFile{Version: "2.0", Tokens: []mfaToken{{Unsigned: base64.StdEncoding.EncodeToString(tok)}}}, "", "  ")
	full := env.path(path)
	f, err := os.OpenFile(full, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("write the unsigned token to %s: %w (choose a new file name)", path, err)
	}
	if _, err := f.Write(append(b, '\n')); err != nil {
		f.Close()
		return nil, fmt.Errorf("write the unsigned token to %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return nil, fmt.Errorf("write the unsigned token to %s: %w", path, err)
	}
	var answer string
	if env.WaitSigned != nil {
		answer, err = env.WaitSigned(full)
	} else {
		answer, err = env.ReadPassword(SignedTokenPrompt)
	}
	if err != nil {
		return nil, err
	}
	signedPath := full
	if s := strings.TrimSpace(answer); s != "" {
		signedPath = env.path(s)
	}
	raw, err := readLimited(signedPath, maxMFAFile)
	if err != nil {
		return nil, fmt.Errorf("the signed token file: %w", err)
	}
	var signed mfaFile
	if err := json.Unmarshal(raw, &signed); err != nil || len(signed.Tokens) != 1 {
		return nil, fmt.Errorf("the signed token file %s is not a token file with one token (as hsmsh wrote it, with \"signed\" filled in)", signedPath)
	}
	if signed.Tokens[0].Unsigned != base64.StdEncoding.EncodeToString(tok) {
		return nil, fmt.Errorf("the signed token file %s holds another token than the one just written: sign the new one", signedPath)
	}
	sig, err := base64.StdEncoding.DecodeString(strings.TrimSpace(signed.Tokens[0].Signed))
	if err != nil || len(sig) == 0 {
		return nil, fmt.Errorf("the token in %s is not signed: put the base64 signature in its \"signed\" field", signedPath)
	}
	return sig, nil
}

// loginMFA runs login … mfa-token-sign --token FILE.
func loginMFA(ctx context.Context, env *Env, a *Args, username string, role hsmcore.Role, pw string) (hsmcore.Caller, error) {
	if !a.Has("token") {
		return hsmcore.Caller{}, errors.New("login mfa-token-sign needs --token FILE: where the unsigned token is written")
	}
	return env.Session.LoginMFA(ctx, username, role, pw, func(tok []byte) ([]byte, error) {
		return askSigned(env, a.String("token"), tok)
	})
}

// signedRegistration has the HSM issue a registration token for c,
// writes it to path for the user to sign, and returns the registration
// file with the signature in it: the proof that c holds the private key.
func signedRegistration(ctx context.Context, env *Env, cl hsmcore.Cluster, c hsmcore.Caller, path string) ([]byte, error) {
	file, err := cl.GenerateToken(ctx, c, quorum.ServiceRegistration, nil, "")
	if err != nil {
		return nil, err
	}
	var rf quorum.RegistrationFile
	if err := json.Unmarshal(file, &rf); err != nil || len(rf.Tokens) != 1 {
		return nil, fmt.Errorf("the HSM's registration token is malformed")
	}
	data, err := base64.StdEncoding.DecodeString(rf.Tokens[0].ApprovalData)
	if err != nil {
		return nil, fmt.Errorf("the HSM's registration token is malformed: %w", err)
	}
	sig, err := askSigned(env, path, data)
	if err != nil {
		return nil, err
	}
	rf.Tokens[0].Signed = base64.StdEncoding.EncodeToString(sig)
	return rf.Marshal(), nil
}

func mfaCommands() []*Command {
	return []*Command{
		{
			Path: []string{"user", "change-mfa", "token-sign"}, Who: LoggedIn,
			Summary: "register (--token) or deregister (--deregister) a user's token-sign MFA public key",
			Flags: []Flag{
				{Name: "username", Kind: String, Required: true, Help: "Username of the user that will be modified"},
				roleFlag(string(hsmcore.RoleAdmin), string(hsmcore.RoleCryptoUser)),
				{Name: "change-password", Kind: String, Help: "Optional: the user's password; asked for when left out", Secret: true},
				{Name: "token", Kind: String, Path: true, Help: "Filepath where the unsigned token file will be written. Required for enabling MFA for a user"},
				{Name: "approval", Kind: String, Path: true, Help: "Filepath of signed quorum token file to approve operation"},
				{Name: "deregister", Kind: Bool, Help: "Deregister the MFA public key, if present"},
				{Name: "change-quorum", Kind: Bool, Help: "Change the Quorum public key along with the MFA key"},
			},
			Run: func(ctx context.Context, env *Env, a *Args) (any, error) {
				c, role, err := callerAndRole(env, a)
				if err != nil {
					return nil, err
				}
				name, err := hsmcore.NormalizeUsername(a.String("username"))
				if err != nil {
					return nil, err
				}
				cl := env.Session.Cluster()
				if a.Bool("deregister") {
					if a.Has("approval") {
						tok, err := os.ReadFile(env.path(a.String("approval")))
						if err != nil {
							return nil, fmt.Errorf("--approval: %w", err)
						}
						ctx = hsmcore.WithApproval(ctx, tok, "", "")
					}
					if err := cl.DeregisterMFA(ctx, c, name, role); err != nil {
						return nil, err
					}
					return userResult{Username: name, Role: role}, nil
				}
				if !a.Has("token") {
					return nil, errors.New("user change-mfa token-sign needs --token FILE (to register a key) or --deregister")
				}
				if name != c.Username {
					return nil, fmt.Errorf("%w: a user registers their own MFA key (they alone hold its private key); an admin may --deregister another user's", hsmcore.ErrPermission)
				}
				// The HSM's registration token, signed with the MFA key,
				// proves the user holds it.
				signed, err := signedRegistration(ctx, env, cl, c, a.String("token"))
				if err != nil {
					return nil, err
				}
				pemPath, err := env.ReadPassword("Enter public key PEM file path: ")
				if err != nil {
					return nil, err
				}
				pub, err := readLimited(env.path(strings.TrimSpace(pemPath)), maxMFAFile)
				if err != nil {
					return nil, fmt.Errorf("the public key PEM file: %w", err)
				}
				if err := cl.RegisterMFAKey(ctx, c, pub, signed); err != nil {
					return nil, err
				}
				if a.Bool("change-quorum") {
					// A registration token is used once: the quorum key
					// takes a second one, signed with the same key.
					signed, err := signedRegistration(ctx, env, cl, c, a.String("token")+".quorum")
					if err == nil {
						err = cl.RegisterQuorumKey(ctx, c, pub, signed)
					}
					if err != nil {
						return nil, fmt.Errorf("MFA key registered; the quorum key: %w", err)
					}
				}
				return userResult{Username: name, Role: role}, nil
			},
		},
	}
}
