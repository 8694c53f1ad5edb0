package commands

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/hsmsh/hsmsh/config"
	"github.com/hsmsh/hsmsh/hsmcore"
)

// testRunner is a runner on an embedded cluster in memory, activated, with
// crypto user cu1 logged in.
func testRunner(t *testing.T) *Runner {
	t.Helper()
	ctx := context.Background()
	cfg := config.Default()
	if err := cfg.Set("cluster.transport", "direct", config.SourceFlag); err != nil {
		t.Fatal(err)
	}
	env, err := Open(cfg, "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { env.Close(ctx) })
	r := NewRunner(env)
	for _, line := range []string{
		"cluster activate --password adminpass1",
		"login --username admin --role admin --password adminpass1",
		"user create --username cu1 --role crypto-user --password cu1pass12",
		"logout",
		"login --username cu1 --role crypto-user --password cu1pass12",
	} {
		if res, _ := r.RunLine(ctx, line); !res.OK() {
			t.Fatalf("%s: %v", line, res.Data)
		}
	}
	return r
}

// Where CloudHSM CLI's data is a plain string, hsmsh's is too.
func TestStatusIsAPlainString(t *testing.T) {
	got := string(success(Status("Logout successful")).JSON())
	want := "{\n  \"error_code\": 0,\n  \"data\": \"Logout successful\"\n}\n"
	if got != want {
		t.Errorf("JSON = %q, want %q", got, want)
	}
}

// A result that is text prints as that text; help --json keeps the
// envelope.
func TestHelpIsTextUnlessJSON(t *testing.T) {
	r := &Runner{Tree: Default()}
	tests := []struct {
		line     string
		text     []string // lines the text must hold
		jsonPath string   // with --json: a field of data
	}{
		{"help key list", []string{"Usage: key list [OPTIONS]", "Options:", "      --cluster-id <CLUSTER_ID>", "  -v, --verbose", "  -h, --help", "          Print help"}, ""},
		{"key list --help", []string{"Usage: key list [OPTIONS]"}, ""},
		{"key list -h", []string{"Usage: key list [OPTIONS]"}, ""},
		{"help key import pem", []string{"Usage: key import pem [OPTIONS] --path <PATH> --label <LABEL> --key-type-class <KEY_TYPE_CLASS>", "[possible values: ec-public, rsa-public]"}, ""},
		{"help quorum token-sign generate", []string{"Usage: quorum token-sign generate [OPTIONS] --service <SERVICE> --token <TOKEN>"}, ""},
		{"help use-cluster", []string{"Usage: use-cluster <CLUSTER-ID>", "Arguments:", "  <CLUSTER-ID>"}, ""},
		{"help", []string{"Usage: <COMMAND>", "Commands:", "  key list  "}, ""},
		{"help key generate-symmetric", []string{"Usage: key generate-symmetric <COMMAND>", "  aes             Generate an AES key"}, ""},
		{"key generate-symmetric --help", []string{"Usage: key generate-symmetric <COMMAND>"}, ""},
		{"help --json key list", nil, "command"},
		{"key list --help --json", nil, "command"},
		{"help --json", nil, "commands"},
	}
	for _, tt := range tests {
		res, _ := r.RunLine(context.Background(), tt.line)
		if !res.OK() {
			t.Errorf("%s: %v", tt.line, res.Data)
			continue
		}
		out := string(res.JSON())
		if tt.jsonPath != "" {
			var env struct {
				Data map[string]any `json:"data"`
			}
			if res.Text != "" || json.Unmarshal(res.JSON(), &env) != nil || env.Data[tt.jsonPath] == nil {
				t.Errorf("%s: want JSON with data.%s, got:\n%s", tt.line, tt.jsonPath, out)
			}
			continue
		}
		for _, want := range tt.text {
			if !strings.Contains(out, want+"\n") && !strings.Contains(out, want) {
				t.Errorf("%s: no %q in:\n%s", tt.line, want, out)
			}
		}
		if strings.Contains(out, `"error_code"`) {
			t.Errorf("%s: help printed JSON:\n%s", tt.line, out)
		}
	}
}

// -v is --verbose, as CloudHSM CLI documents for key list; other short
// words are still refused.
func TestShortFlags(t *testing.T) {
	tree := Default()
	tests := []struct {
		line    string
		verbose bool
		wantErr string
	}{
		{"key list -v", true, ""},
		{"key list --verbose", true, ""},
		{"key list --max-items 2 -v", true, ""},
		{"key list", false, ""},
		{"key list -x", false, `does not take "-x"`},
	}
	for _, tt := range tests {
		words, _ := Split(tt.line)
		cmd, rest, err := tree.Find(words)
		if err != nil {
			t.Fatalf("%s: %v", tt.line, err)
		}
		a, err := cmd.parse(rest)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("%s: err = %v, want %q", tt.line, err, tt.wantErr)
			}
			continue
		}
		if err != nil || a.Bool("verbose") != tt.verbose {
			t.Errorf("%s: verbose %v, %v; want %v", tt.line, a.Bool("verbose"), err, tt.verbose)
		}
	}
}

func TestStartingToken(t *testing.T) {
	keys := []hsmcore.Key{{Ref: 0x10}, {Ref: 0x20}, {Ref: 0x30}}
	tests := []struct {
		token   string
		want    int
		wantErr bool
	}{
		{"", 0, false},
		{"0", 0, false},
		{"2", 2, false}, // CloudHSM CLI's: keys to skip
		{"3", 3, false},
		{"4", 0, true},
		{"-1", 0, true},
		{"0x10", 1, false}, // hsmsh's: after this key
		{"0x25", 2, false}, // a key deleted meanwhile: the next one
		{"0x30", 3, false},
		{"abc", 0, true},
	}
	for _, tt := range tests {
		got, err := startingToken(keys, tt.token)
		if (err != nil) != tt.wantErr || (err == nil && got != tt.want) {
			t.Errorf("startingToken(%q) = %d, %v; want %d (error %v)", tt.token, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestTokenView(t *testing.T) {
	tests := []struct {
		in   hsmcore.QuorumToken
		need int
	}{
		{hsmcore.QuorumToken{Service: "user", Required: "2 admin", Signers: []string{"a"}}, 2},
		{hsmcore.QuorumToken{Service: "key-usage", Required: "3 crypto-user"}, 3},
		{hsmcore.QuorumToken{Service: "quorum", Required: "none"}, 0},
		{hsmcore.QuorumToken{Service: "registration", Required: "the requester's own signature"}, 1},
	}
	for _, tt := range tests {
		got := tokenView(tt.in)
		if got.ApprovalsRequired != tt.need || got.Approvals != len(tt.in.Signers) || got.ClusterCoverage != "full" || got.ApprovedBy == nil {
			t.Errorf("tokenView(%+v) = %+v; want approvals-required %d", tt.in, got, tt.need)
		}
	}
}

func TestCredentialsFromEnv(t *testing.T) {
	tests := []struct {
		name        string
		vars        map[string]string
		destination bool
		want        EnvCredentials
		ok          bool
		wantErr     string
	}{
		{"none", nil, false, EnvCredentials{}, false, ""},
		{"CloudHSM CLI's", map[string]string{"CLOUDHSM_ROLE": "crypto-user", "CLOUDHSM_PIN": "cu1:pw:with:colons"}, false,
			EnvCredentials{Prefix: "CLOUDHSM", Username: "cu1", Password: "pw:with:colons", Role: "crypto-user"}, true, ""},
		{"hsmsh's", map[string]string{"HSMSH_ROLE": "admin", "HSMSH_PIN": "admin:pw"}, false,
			EnvCredentials{Prefix: "HSMSH", Username: "admin", Password: "pw", Role: "admin"}, true, ""},
		{"hsmsh's win", map[string]string{"HSMSH_ROLE": "admin", "HSMSH_PIN": "admin:pw", "CLOUDHSM_ROLE": "crypto-user", "CLOUDHSM_PIN": "cu1:pw"}, false,
			EnvCredentials{Prefix: "HSMSH", Username: "admin", Password: "pw", Role: "admin"}, true, ""},
		{"destination", map[string]string{"CLOUDHSM_ROLE": "admin", "CLOUDHSM_PIN": "a:b", "DESTINATION_CLOUDHSM_ROLE": "crypto-user", "DESTINATION_CLOUDHSM_PIN": "cu1:pw"}, true,
			EnvCredentials{Prefix: "DESTINATION_CLOUDHSM", Username: "cu1", Password: "pw", Role: "crypto-user"}, true, ""},
		{"no destination", map[string]string{"CLOUDHSM_ROLE": "admin", "CLOUDHSM_PIN": "a:b"}, true, EnvCredentials{}, false, ""},
		{"no colon", map[string]string{"CLOUDHSM_ROLE": "admin", "CLOUDHSM_PIN": "admin"}, false, EnvCredentials{}, false, "CLOUDHSM_PIN must be username:password"},
		{"no role", map[string]string{"CLOUDHSM_PIN": "admin:pw"}, false, EnvCredentials{}, false, "CLOUDHSM_PIN is set but CLOUDHSM_ROLE is not"},
	}
	for _, tt := range tests {
		got, ok, err := CredentialsFromEnv(func(k string) string { return tt.vars[k] }, tt.destination)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("%s: err = %v, want %q", tt.name, err, tt.wantErr)
			}
			continue
		}
		if err != nil || ok != tt.ok || got != tt.want {
			t.Errorf("%s: got %+v, %v, %v; want %+v, %v", tt.name, got, ok, err, tt.want, tt.ok)
		}
	}
}

func TestLoginFromEnv(t *testing.T) {
	r := testRunner(t)
	ctx := context.Background()
	r.Run(ctx, []string{"logout"})
	vars := map[string]string{"CLOUDHSM_ROLE": "crypto-user", "CLOUDHSM_PIN": "cu1:wrongpass"}
	getenv := func(k string) string { return vars[k] }
	if res, msg := r.LoginFromEnv(ctx, getenv, false, ""); res == nil || res.OK() || msg != "login from CLOUDHSM_ROLE/CLOUDHSM_PIN failed" {
		t.Fatalf("wrong password: %+v, %q", res, msg)
	}
	vars["CLOUDHSM_PIN"] = "cu1:cu1pass12"
	if res, msg := r.LoginFromEnv(ctx, getenv, false, ""); res != nil || msg != "" {
		t.Fatalf("login: %+v, %q", res, msg)
	}
	if u, _, ok := r.Env.Who(); !ok || u != "cu1" {
		t.Errorf("logged in as %q (%v), want cu1", u, ok)
	}
}

// The JSON shapes of the commands whose CloudHSM CLI pages show them.
func TestAWSShapes(t *testing.T) {
	r := testRunner(t)
	ctx := context.Background()
	dir := t.TempDir()
	r.Env.Dir = dir
	tests := []struct {
		line string
		want string // data, as compact JSON; "" to skip
		keys []string
	}{
		{"key generate-asymmetric-pair ec --curve secp256r1 --public-label p --private-label q --public-attributes verify=true --private-attributes sign=true", "", []string{"public_key", "private_key"}},
		{"key generate-file --encoding pem --path p.pem --filter attr.label=p", `{"message":"Successfully generated key file"}`, nil},
		{"key import pem --path p.pem --label imported --key-type-class ec-public", "", []string{"key", "message"}},
		{"quorum token-sign generate --service registration --token t.json", `{"filepath":"t.json"}`, nil},
		{"quorum token-sign list-timeouts", `{"approved":600,"generated":600}`, nil},
		{"quorum token-sign delete --scope user", `"Deletion of quorum token(s) successful"`, nil},
		{"logout", `"Logout successful"`, nil},
	}
	for _, tt := range tests {
		res, _ := r.RunLine(ctx, tt.line)
		if !res.OK() {
			t.Fatalf("%s: %v", tt.line, res.Data)
		}
		b, _ := json.Marshal(res.Data)
		if tt.want != "" && string(b) != tt.want {
			t.Errorf("%s: data %s, want %s", tt.line, b, tt.want)
		}
		if tt.keys != nil {
			var m map[string]json.RawMessage
			if err := json.Unmarshal(b, &m); err != nil || len(m) != len(tt.keys) {
				t.Errorf("%s: data %s, want the keys %v", tt.line, b, tt.keys)
				continue
			}
			for _, k := range tt.keys {
				if _, ok := m[k]; !ok {
					t.Errorf("%s: no %q in %s", tt.line, k, b)
				}
			}
		}
	}
	// The public key comes first, as on the page.
	res, _ := r.RunLine(ctx, "login --username cu1 --role crypto-user --password cu1pass12")
	if !res.OK() {
		t.Fatal(res.Data)
	}
	res, _ = r.RunLine(ctx, "key generate-asymmetric-pair ec --curve secp256r1 --public-label p2 --private-label q2 --public-attributes verify=true --private-attributes sign=true")
	if out := string(res.JSON()); strings.Index(out, `"public_key"`) > strings.Index(out, `"private_key"`) {
		t.Errorf("private_key before public_key:\n%s", out)
	}
}
