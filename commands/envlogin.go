package commands

import (
	"context"
	"fmt"
	"strings"
)

// Single-command mode logs in from the environment, as CloudHSM CLI does:
// CLOUDHSM_ROLE and CLOUDHSM_PIN (username:password), and for the
// destination of key replicate and user replicate DESTINATION_CLOUDHSM_ROLE
// and DESTINATION_CLOUDHSM_PIN. hsmsh's own names, HSMSH_ROLE/HSMSH_PIN and
// DESTINATION_HSMSH_ROLE/DESTINATION_HSMSH_PIN, work as well; where both
// PINs are set, hsmsh's own win.

// EnvCredentials are a login read from the environment.
type EnvCredentials struct {
	// Prefix is the variables' prefix the login came from, e.g. CLOUDHSM
	// (its variables are Prefix_ROLE and Prefix_PIN).
	Prefix   string
	Username string
	Password string
	Role     string
}

// credentialPrefixes are the variable prefixes single-command mode reads,
// in order of precedence.
func credentialPrefixes(destination bool) []string {
	if destination {
		return []string{"DESTINATION_HSMSH", "DESTINATION_CLOUDHSM"}
	}
	return []string{"HSMSH", "CLOUDHSM"}
}

// CredentialsFromEnv reads a login from the environment (getenv is
// os.Getenv in the shell): the source cluster's, or with destination the
// destination cluster's of a replicate command. ok is false when no PIN
// variable is set; a PIN or role that is set but wrong is an error that
// names the variable.
func CredentialsFromEnv(getenv func(string) string, destination bool) (cred EnvCredentials, ok bool, err error) {
	for _, p := range credentialPrefixes(destination) {
		pin := getenv(p + "_PIN")
		if pin == "" {
			continue
		}
		user, pw, found := strings.Cut(pin, ":")
		if !found || user == "" {
			return cred, false, fmt.Errorf("%s_PIN must be username:password", p)
		}
		role := getenv(p + "_ROLE")
		if role == "" {
			return cred, false, fmt.Errorf("%s_PIN is set but %s_ROLE is not: set it to admin or crypto-user", p, p)
		}
		return EnvCredentials{Prefix: p, Username: user, Password: pw, Role: role}, true, nil
	}
	return cred, false, nil
}

// LoginFromEnv logs in to cluster ("" the current one) with the
// credentials CredentialsFromEnv reads, when a PIN variable is set. A
// failed login gives its result and a message; a bad variable gives a
// message only; no variable, or a login that worked, gives neither.
func (r *Runner) LoginFromEnv(ctx context.Context, getenv func(string) string, destination bool, cluster string) (*Result, string) {
	cred, ok, err := CredentialsFromEnv(getenv, destination)
	if err != nil {
		return nil, err.Error()
	}
	if !ok {
		return nil, ""
	}
	login := []string{"login", "--username", cred.Username, "--role", cred.Role, "--password", cred.Password}
	if cluster != "" {
		login = append(login, "--cluster-id", cluster)
	}
	if res := r.Run(ctx, login); !res.OK() {
		return &res, fmt.Sprintf("login from %s_ROLE/%s_PIN failed", cred.Prefix, cred.Prefix)
	}
	return nil, ""
}
