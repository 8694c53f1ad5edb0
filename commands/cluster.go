package commands

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/hsmsh/hsmsh/hsmcore"
)

// hsmInfoOut is one HSM as cluster hsm-info prints it: first the fields
// of the cluster-hsm-info page (vendor … fips-state, all strings), as they
// describe hsmsh's software HSM, then hsmsh's own (id, state, address, key
// and user counts, latency, TLS, identity key, domain, raft), which the
// page does not have.
type hsmInfoOut struct {
	Vendor               string `json:"vendor"`
	Model                string `json:"model"`
	SerialNumber         string `json:"serial-number"`
	HardwareVersionMajor string `json:"hardware-version-major"`
	HardwareVersionMinor string `json:"hardware-version-minor"`
	FirmwareVersionMajor string `json:"firmware-version-major"`
	FirmwareVersionMinor string `json:"firmware-version-minor"`
	FirmwareBuildNumber  string `json:"firmware-build-number"`
	FirmwareID           string `json:"firmware-id"`
	FIPSState            string `json:"fips-state"`
	hsmcore.HSMInfo
}

// Version is hsmsh's version. It is also the firmware version of every
// HSM, hsmcore as this hsmsh carries it.
const Version = "0.1.0"

// There is no hardware, so its version is 0.0; and hsmcore is no
// FIPS-validated module, so the state is the page's non-FIPS one.
const hsmFIPSState = "0 [non-FIPS mode with single factor authentication]"

func hsmInfoOf(h hsmcore.HSMInfo) hsmInfoOut {
	// The serial number is the HSM's identity key fingerprint: like a
	// serial number, it changes when the HSM is replaced. A down HSM that
	// never answered has none; its id stands in.
	serial := strings.TrimPrefix(h.Identity, "sha256:")
	if serial == "" {
		serial = h.ID
	}
	// Version is major.minor.build.
	fw := strings.SplitN(Version+"..", ".", 4)
	return hsmInfoOut{
		Vendor: "hsmsh", Model: "hsmcore software HSM", SerialNumber: serial,
		HardwareVersionMajor: "0", HardwareVersionMinor: "0",
		FirmwareVersionMajor: fw[0], FirmwareVersionMinor: fw[1], FirmwareBuildNumber: fw[2],
		FirmwareID: "HSMCORE-FW-" + fw[0] + "." + fw[1] + "-" + fw[2],
		FIPSState:  hsmFIPSState,
		HSMInfo:    h,
	}
}

// password returns --password, or asks for it on the terminal.
func password(env *Env, a *Args, prompt string) (string, error) {
	return secretFlag(env, a, "password", prompt)
}

// secretFlag returns a secret flag's value, or asks for it.
func secretFlag(env *Env, a *Args, name, prompt string) (string, error) {
	if a.Has(name) {
		return a.String(name), nil
	}
	if env.ReadPassword == nil {
		return "", fmt.Errorf("--%s is required: there is no terminal to ask for it on", name)
	}
	return env.ReadPassword(prompt)
}

// newPassword asks twice when it has to ask, as a new password deserves.
func newPassword(env *Env, a *Args) (string, error) {
	if a.Has("password") || env.ReadPassword == nil {
		return password(env, a, "")
	}
	p1, err := env.ReadPassword("New password: ")
	if err != nil {
		return "", err
	}
	p2, err := env.ReadPassword("Confirm password: ")
	if err != nil {
		return "", err
	}
	if p1 != p2 {
		return "", errors.New("the two passwords differ; nothing was changed")
	}
	return p1, nil
}

var passwordFlag = Flag{Name: "password", Kind: String, Secret: true, Help: "the password (asked for on the terminal when left out)"}

func roleFlag(values ...string) Flag {
	return Flag{Name: "role", Kind: String, Required: true, Values: values, Help: "the user's role"}
}

func clusterCommands() []*Command {
	return []*Command{
		{
			Path: []string{"cluster", "activate"}, Who: Anyone,
			Summary: "activate a new cluster by setting the built-in admin's password",
			Flags:   []Flag{passwordFlag},
			Run: func(ctx context.Context, env *Env, a *Args) (any, error) {
				pw, err := newPassword(env, a)
				if err != nil {
					return nil, err
				}
				if err := env.Session.Cluster().Activate(ctx, pw); err != nil {
					return nil, err
				}
				return Status("Cluster activation successful"), nil
			},
		},
		{
			Path: []string{"cluster", "hsm-info"}, Who: Anyone,
			Summary: "show each HSM of the cluster: state, address, key count, TLS, its raft role (leader, term, commit index, last contact)",
			Run: func(ctx context.Context, env *Env, a *Args) (any, error) {
				c := env.Session.Cluster()
				infos := c.HSMs(ctx)
				hsms := make([]hsmInfoOut, len(infos))
				for i, h := range infos {
					hsms[i] = hsmInfoOf(h)
				}
				return map[string]any{"cluster-id": c.ID(), "hsms": hsms}, nil
			},
		},
		{
			Path: []string{"cluster", "tls-info"}, Who: Anyone,
			Summary: "show each HSM's two TLS layers: outer (server certificate) and inner (cluster certificate)",
			Run: func(ctx context.Context, env *Env, a *Args) (any, error) {
				c := env.Session.Cluster()
				return map[string]any{"cluster-id": c.ID(), "hsms": c.TLSInfo(ctx)}, nil
			},
		},
		{
			Path: []string{"session", "info"}, Who: LoggedIn,
			Summary: "show the login session: id, user, role, HSMs that served it, EKT expiry, the handshake's curve and AEAD",
			Run: func(ctx context.Context, env *Env, a *Args) (any, error) {
				c, err := env.Session.Caller()
				if err != nil {
					return nil, err
				}
				return env.Session.Cluster().SessionInfo(ctx, c)
			},
		},
		{
			Path: []string{"login"}, Who: Anyone,
			Summary: "log in to the cluster; login … mfa-token-sign --token FILE for a user with token-sign MFA",
			Flags: []Flag{
				{Name: "username", Kind: String, Required: true, Help: "the user to log in as"},
				roleFlag(string(hsmcore.RoleAdmin), string(hsmcore.RoleCryptoUser)),
				passwordFlag,
				{Name: "token", Kind: String, Path: true, Help: "with mfa-token-sign: filepath where the unsigned token file will be written"},
			},
			// CloudHSM CLI's login takes its MFA strategy as a word after
			// the flags: login --username U --role R mfa-token-sign --token F.
			Args: []string{"[mfa-token-sign]..."},
			Run: func(ctx context.Context, env *Env, a *Args) (any, error) {
				role, err := hsmcore.ParseRole(a.String("role"))
				if err != nil {
					return nil, err
				}
				if env.Session.LoggedIn() {
					c, _ := env.Session.Caller()
					return nil, fmt.Errorf("already logged in as %s (%s): log out first", c.Username, c.Role)
				}
				pw, err := password(env, a, "Enter password: ")
				if err != nil {
					return nil, err
				}
				var c hsmcore.Caller
				switch strings.Join(a.Pos, " ") {
				case "":
					c, err = env.Session.Login(ctx, a.String("username"), role, pw)
				case "mfa-token-sign":
					c, err = loginMFA(ctx, env, a, a.String("username"), role, pw)
				default:
					return nil, fmt.Errorf("login takes mfa-token-sign after its flags, not %q", strings.Join(a.Pos, " "))
				}
				if err != nil {
					return nil, err
				}
				return userResult{Username: c.Username, Role: c.Role}, nil
			},
		},
		{
			Path: []string{"logout"}, Who: LoggedIn,
			Summary: "log out; the session keys of this login are destroyed",
			Run: func(ctx context.Context, env *Env, a *Args) (any, error) {
				if err := env.Session.Logout(ctx); err != nil {
					return nil, err
				}
				return Status("Logout successful"), nil
			},
		},
	}
}

func userCommands() []*Command {
	userFlag := Flag{Name: "username", Kind: String, Required: true, Help: "the user's name: up to 31 letters, digits and _"}
	roles := roleFlag(string(hsmcore.RoleAdmin), string(hsmcore.RoleCryptoUser))
	result := func(name string, role hsmcore.Role) userResult {
		n, _ := hsmcore.NormalizeUsername(name)
		return userResult{Username: n, Role: role}
	}
	return []*Command{
		{
			Path: []string{"user", "create"}, Who: AdminOnly,
			Summary: "create a user",
			Flags:   []Flag{userFlag, roles, passwordFlag},
			Run: func(ctx context.Context, env *Env, a *Args) (any, error) {
				c, role, err := callerAndRole(env, a)
				if err != nil {
					return nil, err
				}
				pw, err := newPassword(env, a)
				if err != nil {
					return nil, err
				}
				u, err := env.Session.Cluster().CreateUser(ctx, c, a.String("username"), role, pw)
				if err != nil {
					return nil, err
				}
				return result(u.Username, u.Role), nil
			},
		},
		{
			Path: []string{"user", "delete"}, Who: AdminOnly,
			Summary: "delete a user who owns no keys",
			Flags:   []Flag{userFlag, roles},
			Run: func(ctx context.Context, env *Env, a *Args) (any, error) {
				c, role, err := callerAndRole(env, a)
				if err != nil {
					return nil, err
				}
				if err := env.Session.Cluster().DeleteUser(ctx, c, a.String("username"), role); err != nil {
					return nil, err
				}
				return result(a.String("username"), role), nil
			},
		},
		{
			Path: []string{"user", "list"}, Who: Anyone,
			Summary: "list the users of the cluster",
			Run: func(ctx context.Context, env *Env, a *Args) (any, error) {
				c, _ := env.Session.Caller()
				users, err := env.Session.Cluster().Users(ctx, c)
				if err != nil {
					return nil, err
				}
				return map[string]any{"users": users}, nil
			},
		},
		{
			Path: []string{"user", "change-password"}, Who: LoggedIn,
			Summary: "change a user's password (admins: any user, and it unlocks them; others: their own)",
			Flags: []Flag{userFlag, roles, passwordFlag,
				{Name: "deregister-mfa", Kind: Bool, Help: "Deregister the user's mfa public key, if present"},
				{Name: "deregister-quorum", Kind: Bool, Help: "Deregister the user's quorum public key, if present"},
			},
			Run: func(ctx context.Context, env *Env, a *Args) (any, error) {
				c, role, err := callerAndRole(env, a)
				if err != nil {
					return nil, err
				}
				pw, err := newPassword(env, a)
				if err != nil {
					return nil, err
				}
				cl := env.Session.Cluster()
				if err := cl.ChangePassword(ctx, c, a.String("username"), role, pw); err != nil {
					return nil, err
				}
				// A new password with the old keys gone: what an admin
				// does for a user who lost the device holding them.
				if a.Bool("deregister-mfa") {
					if err := cl.DeregisterMFA(ctx, c, a.String("username"), role); err != nil {
						return nil, fmt.Errorf("password changed; deregister the MFA key: %w", err)
					}
				}
				if a.Bool("deregister-quorum") {
					if err := cl.DeregisterQuorumKey(ctx, c, a.String("username"), role); err != nil {
						return nil, fmt.Errorf("password changed; deregister the quorum key: %w", err)
					}
				}
				return result(a.String("username"), role), nil
			},
		},
	}
}

func callerAndRole(env *Env, a *Args) (hsmcore.Caller, hsmcore.Role, error) {
	c, err := env.Session.Caller()
	if err != nil {
		return c, "", err
	}
	role, err := hsmcore.ParseRole(a.String("role"))
	return c, role, err
}

// userResult is what login and the user commands report, in CloudHSM
// CLI's field order.
type userResult struct {
	Username string       `json:"username"`
	Role     hsmcore.Role `json:"role"`
}
