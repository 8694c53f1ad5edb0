package config

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// writeConfig writes content to hsmsh.toml in a fresh folder and returns
// its path.
func writeConfig(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "hsmsh.toml")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// env returns a getenv func over m.
func env(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

func cwd(t *testing.T) string {
	t.Helper()
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	return wd
}

func TestDefault(t *testing.T) {
	c := Default()
	pki := filepath.Join(cwd(t), "pki")
	want := &Config{
		Cluster: Cluster{ID: "cluster-local", Mode: "embedded", HSMs: 3, Transport: "direct", Profile: "none"},
		Durability: Durability{
			CreateObjectMinimumNodes: 1,
			KeyAvailabilityCheck:     true,
			ServerSyncInterval:       5 * time.Second,
		},
		Client: Client{RetryOnMissingKey: 3},
		TLS: TLS{
			PKIDir:      pki,
			TrustDir:    filepath.Join(pki, "certs"),
			ClientCert:  filepath.Join(pki, "client.crt"),
			ClientKey:   filepath.Join(pki, "client.key"),
			CustomerCA:  filepath.Join(pki, "customerCA.crt"),
			ServerCert:  filepath.Join(pki, "server.crt"),
			ServerKey:   filepath.Join(pki, "server.key"),
			ClusterCert: filepath.Join(pki, "cluster.crt"),
			ClusterKey:  filepath.Join(pki, "cluster.key"),
		},
		UI:     UI{Theme: "default"},
		Server: ServerLimits{IdleTimeout: 5 * time.Minute, MaxConnections: 512},
	}
	if c.Path != "" || !reflect.DeepEqual(c.Cluster, want.Cluster) || c.Durability != want.Durability ||
		c.Client != want.Client || c.TLS != want.TLS || c.UI != want.UI || c.Server != want.Server {
		t.Errorf("Default() = %+v\nwant %+v", c, want)
	}
	for _, s := range c.Settings() {
		if s.Source != SourceDefault {
			t.Errorf("%s: source %q, want default", s.Name, s.Source)
		}
	}

	// Loading no file, or a missing one, gives the same.
	for _, path := range []string{"", filepath.Join(t.TempDir(), "missing.toml")} {
		got, err := Load(path, false, nil)
		if err != nil {
			t.Fatalf("Load(%q): %v", path, err)
		}
		if got.Path != "" || !reflect.DeepEqual(got.Settings(), c.Settings()) {
			t.Errorf("Load(%q) = %+v, want defaults", path, got)
		}
	}
}

func TestDefaultPath(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("XDG_CONFIG_HOME", dir)
	t.Setenv("HOME", dir)
	t.Setenv("AppData", dir)
	userDir, err := os.UserConfigDir()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{"HSMSH_CONFIG": "/etc/hsmsh.toml"}, "/etc/hsmsh.toml"},
		{map[string]string{"HSMSH_CONFIG": ""}, filepath.Join(userDir, "hsmsh", "hsmsh.toml")},
		{nil, filepath.Join(userDir, "hsmsh", "hsmsh.toml")},
	}
	for _, tt := range tests {
		if got := DefaultPath(env(tt.env)); got != tt.want {
			t.Errorf("DefaultPath(%v) = %q, want %q", tt.env, got, tt.want)
		}
	}
	if got := DefaultPath(nil); got != tests[2].want {
		t.Errorf("DefaultPath(nil) = %q, want %q", got, tests[2].want)
	}
}

func TestLoadMissingMustExist(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nope.toml")
	_, err := Load(path, true, nil)
	if err == nil || !strings.Contains(err.Error(), path) || !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Load(missing, mustExist) error = %v, want one naming %s and wrapping fs.ErrNotExist", err, path)
	}
}

const fullFile = `# hsmsh configuration
[cluster]
id = "prod.eu-1"
mode = "remote"   # talk to real servers
hsms = 5

[[cluster.servers]]
id = "hsm-a"
address = "10.0.0.1:2223"

[[cluster.servers]]
id = 'hsm-b'
address = "[::1]:2224"

[durability]
create_object_minimum_nodes = 2
key_availability_check = false
server_sync_interval = "1m30s"

[client]
retry_on_missing_key = 0

[tls]
pki_dir = "/etc/hsmsh/pki"
client_cert = "mine/client.crt"
customer_ca = ""

[ui]
theme = "dark"
`

func TestLoadFullFile(t *testing.T) {
	path := writeConfig(t, fullFile)
	c, err := Load(path, true, nil)
	if err != nil {
		t.Fatal(err)
	}
	wantCluster := Cluster{ID: "prod.eu-1", Mode: "remote", HSMs: 5, Transport: "direct", Profile: "none", Servers: []Server{
		{ID: "hsm-a", Address: "10.0.0.1:2223"},
		{ID: "hsm-b", Address: "[::1]:2224"},
	}}
	if c.Path != path {
		t.Errorf("Path = %q, want %q", c.Path, path)
	}
	if !reflect.DeepEqual(c.Cluster, wantCluster) {
		t.Errorf("Cluster = %+v, want %+v", c.Cluster, wantCluster)
	}
	if want := (Durability{2, false, 90 * time.Second}); c.Durability != want {
		t.Errorf("Durability = %+v, want %+v", c.Durability, want)
	}
	if c.Client.RetryOnMissingKey != 0 || c.UI.Theme != "dark" {
		t.Errorf("Client = %+v, UI = %+v", c.Client, c.UI)
	}
	pki := filepath.FromSlash("/etc/hsmsh/pki")
	if c.TLS.PKIDir != pki ||
		c.TLS.ClientCert != filepath.Join(filepath.Dir(path), "mine", "client.crt") ||
		c.TLS.CustomerCA != filepath.Join(pki, "customerCA.crt") ||
		c.TLS.TrustDir != filepath.Join(pki, "certs") {
		t.Errorf("TLS = %+v", c.TLS)
	}
	for _, name := range []string{"cluster.id", "cluster.mode", "cluster.hsms", "durability.server_sync_interval",
		"client.retry_on_missing_key", "tls.pki_dir", "tls.customer_ca", "ui.theme"} {
		if got := c.Source(name); got != SourceFile {
			t.Errorf("Source(%s) = %q, want file", name, got)
		}
	}
	for _, name := range []string{"tls.trust_dir", "tls.server_key"} {
		if got := c.Source(name); got != SourceDefault {
			t.Errorf("Source(%s) = %q, want default", name, got)
		}
	}
	if got := c.Source("no.such"); got != "" {
		t.Errorf(`Source("no.such") = %q, want ""`, got)
	}
}

func TestLoadErrors(t *testing.T) {
	tests := []struct {
		name    string
		content string
		line    int
		key     string
		msg     string
	}{
		{"unknown key", "[cluster]\nid = \"a\"\n\n[durability]\n# the minimum\ncreate_object_minimum_nodes = 1\ncreate_objects_min = 2\n",
			7, "durability.create_objects_min",
			"unknown key (known keys in [durability]: create_object_minimum_nodes, key_availability_check, server_sync_interval)"},
		{"unknown table", "[cluster]\nhsms = 3\n\n[duarbility]\nx = 1\n",
			4, "duarbility", "unknown table (known tables: client, cluster, clusters, durability, quorum, server, session, tls, ui)"},
		{"unknown top-level key", "verbose = true\n[cluster]\n",
			1, "verbose", "unknown key (known tables: client, cluster, clusters, durability, quorum, server, session, tls, ui)"},
		{"unknown cluster key", "[cluster]\nhsms = 3\nserver = 1\n",
			3, "cluster.server", "known keys in [cluster]: hsms, id, mode, profile, servers"},
		{"wrong type", "[cluster]\nid = \"a\"\nhsms = \"three\"\n",
			3, "cluster.hsms", `must be an integer, got string "three"`},
		{"float for int", "[client]\nretry_on_missing_key = 1.5\n",
			2, "client.retry_on_missing_key", "must be an integer, got float 1.5"},
		{"string for bool", "[durability]\nkey_availability_check = \"yes\"\n",
			2, "durability.key_availability_check", `must be true or false, got string "yes"`},
		{"int for duration", "[durability]\nserver_sync_interval = 5\n",
			2, "durability.server_sync_interval", `must be a duration string such as "5s", got integer 5`},
		{"int for string", "[ui]\ntheme = 7\n",
			2, "ui.theme", "must be a string, got integer 7"},
		{"scalar for table", "cluster = 5\n",
			1, "cluster", "must be a table ([cluster]), got integer 5"},
		{"out of range", "[cluster]\nid = \"a\"\nhsms = 0\n",
			3, "cluster.hsms", "0 is out of range (1..28)"},
		{"quorum rule with a bad alternative", "[[quorum.rules]]\ncommand = \"user delete\"\nalternatives = [\"2 admin\", \"1 admins + 2 crypto-user\"]\n",
			3, "quorum.rules[0].alternatives", `"1 admins + 2 crypto-user": "admins" is not a role (use admin or crypto-user)`},
		{"servers not tables", "[cluster]\nservers = 5\n",
			2, "cluster.servers", "must be an array of tables ([[cluster.servers]]), got integer 5"},
		{"quorum rules holding a string", "[quorum]\nrules = [\"2 admin\"]\n",
			2, "quorum.rules", `must be an array of tables ([[quorum.rules]]), got an array holding string "2 admin"`},
		{"quorum rule without command", "[[quorum.rules]]\nalternatives = [\"2 admin\"]\n",
			1, "quorum.rules[0]", "rule has no command"},
		{"quorum rule count out of range", "[[quorum.rules]]\ncommand = \"key share\"\nalternatives = [\"9 admin\"]\n",
			3, "quorum.rules[0].alternatives", `"9" is not a count from 1 to 8`},
		{"quorum rule unknown key", "[[quorum.rules]]\ncommand = \"key share\"\nalternatives = [\"2 admin\"]\nmin = 2\n",
			4, "quorum.rules[0].min", "unknown key (known keys in [[quorum.rules]]: alternatives, command)"},
		{"two rules for one command", "[[quorum.rules]]\ncommand = \"key share\"\nalternatives = [\"2 admin\"]\n[[quorum.rules]]\ncommand = \"key  share\"\nalternatives = [\"3 admin\"]\n",
			5, "quorum.rules[1].command", `a second rule for "key share" (the first is at line 2)`},
		{"out of range high", "[durability]\n\ncreate_object_minimum_nodes = 29\n",
			3, "durability.create_object_minimum_nodes", "29 is out of range (1..28)"},
		{"retry out of range", "[client]\nretry_on_missing_key = -1\n",
			2, "client.retry_on_missing_key", "-1 is out of range (0..10)"},
		{"bad duration", "[cluster]\n[durability]\ncreate_object_minimum_nodes = 1\nkey_availability_check = true\n\n\n\n\nserver_sync_interval = \"5 minutes\"\n",
			9, "durability.server_sync_interval", `"5 minutes" is not a duration (examples: 500ms, 5s, 1m30s)`},
		{"duration too short", "[durability]\nserver_sync_interval = \"50ms\"\n",
			2, "durability.server_sync_interval", "50ms is out of range (100ms..24h)"},
		{"duration too long", "[durability]\nserver_sync_interval = \"25h\"\n",
			2, "durability.server_sync_interval", "25h is out of range (100ms..24h)"},
		{"bad cluster id", "[cluster]\nid = \"my cluster\"\n",
			2, "cluster.id", `"my cluster" is not a valid id`},
		{"long cluster id", "[cluster]\nid = \"" + strings.Repeat("x", 65) + "\"\n",
			2, "cluster.id", "is not a valid id"},
		{"bad mode", "[cluster]\nmode = \"cloud\"\n",
			2, "cluster.mode", `"cloud" is not a mode (use "embedded" or "remote")`},
		{"empty theme", "[ui]\ntheme = \"\"\n",
			2, "ui.theme", "must not be empty"},
		{"syntax error", "[cluster]\nid = \"a\"\nhsms = \n",
			3, "", "syntax error: expected value"},
		{"duplicate key", "[cluster]\nhsms = 3\nhsms = 4\n",
			3, "", "syntax error: Key 'cluster.hsms' has already been defined."},
		{"remote without servers", "[cluster]\nid = \"a\"\nmode = \"remote\"\n",
			3, "cluster.mode", "add [[cluster.servers]] entries"},
		{"duplicate server ids", "[cluster]\nmode = \"remote\"\n[[cluster.servers]]\nid = \"hsm-1\"\naddress = \"a:1\"\n[[cluster.servers]]\nid = \"hsm-1\"\naddress = \"b:1\"\n",
			7, "cluster.servers[1].id", `duplicate server id "hsm-1" (also used at line 4)`},
		{"server without address", "[cluster]\nmode = \"remote\"\n\n[[cluster.servers]]\nid = \"hsm-1\"\naddress = \"a:1\"\n\n[[cluster.servers]]\nid = \"hsm-2\"\n",
			8, "cluster.servers[1]", `server has no address; add address = "HOST:PORT"`},
		{"server without id", "[[cluster.servers]]\naddress = \"a:1\"\n",
			1, "cluster.servers[0]", `server has no id; add id = "hsm-1"`},
		{"server bad address", "[[cluster.servers]]\nid = \"x\"\naddress = \"10.0.0.1\"\n",
			3, "cluster.servers[0].address", `"10.0.0.1" is not a host:port address`},
		{"server bad port", "[[cluster.servers]]\nid = \"x\"\naddress = \"h:70000\"\n",
			3, "cluster.servers[0].address", "the port must be a number from 1 to 65535"},
		{"server unknown key", "[[cluster.servers]]\nid = \"x\"\naddress = \"h:1\"\nport = 1\n",
			4, "cluster.servers[0].port", "unknown key (known keys in [[cluster.servers]]: address, id)"},
		{"server bad id type", "[[cluster.servers]]\nid = 1\naddress = \"h:1\"\n",
			2, "cluster.servers[0].id", "must be a string, got integer 1"},
		{"quoted and dotted keys", "[cluster]\n\"hsms\" = 3\n[ui]\ntheme = \"x\"\ndurability.min = 1\n",
			5, "ui.durability", "unknown key (known keys in [ui]: theme)"},
		{"root dotted key", "cluster.id = \"a\"\ncluster.hsms = 99\n",
			2, "cluster.hsms", "99 is out of range"},
		{"after multi-line string", "[ui]\ntheme = \"\"\"\n[cluster]\nhsms = 3\n\"\"\"\n[cluster]\nid = 'x'\nhsms = 0\n",
			8, "cluster.hsms", "0 is out of range"},
		{"after multi-line array", "[cluster]\nservers = [\n  {id = \"a\", address = \"h:1\"},\n  # hsms = 1\n]\n\nhsms = 0\n",
			7, "cluster.hsms", "0 is out of range"},
		{"key in multi-line inline table", "cluster = {\n  id = \"a\",\n  hsms = 0\n}\n",
			3, "cluster.hsms", "0 is out of range"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := writeConfig(t, tt.content)
			_, err := Load(path, true, nil)
			if err == nil {
				t.Fatalf("Load succeeded, want error with %q", tt.msg)
			}
			prefix := path + ":" + strconv.Itoa(tt.line) + ": "
			if tt.key != "" {
				prefix += tt.key + ": "
			}
			if !strings.Contains(err.Error(), prefix) || !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("error = %q\nwant it to contain %q and %q", err, prefix, tt.msg)
			}
		})
	}
}

func TestLoadReportsEveryError(t *testing.T) {
	path := writeConfig(t, "[ui]\ntheme = \"\"\n[cluster]\nhsms = 0\nfoo = 1\n")
	_, err := Load(path, true, nil)
	if err == nil {
		t.Fatal("Load succeeded, want errors")
	}
	lines := strings.Split(err.Error(), "\n")
	want := []string{path + ":2: ui.theme: ", path + ":4: cluster.hsms: ", path + ":5: cluster.foo: "}
	if len(lines) != len(want) {
		t.Fatalf("error = %q, want %d lines", err, len(want))
	}
	for i := range want {
		if !strings.HasPrefix(lines[i], want[i]) {
			t.Errorf("line %d = %q, want prefix %q", i, lines[i], want[i])
		}
	}
}

func TestLoadErrorType(t *testing.T) {
	path := writeConfig(t, "[cluster]\nhsms = 0\n")
	_, err := Load(path, true, nil)
	var e *Error
	if !errors.As(err, &e) || e.File != path || e.Line != 2 || e.Key != "cluster.hsms" {
		t.Errorf("error = %#v, want *Error at %s:2 for cluster.hsms", err, path)
	}
}

func TestEnv(t *testing.T) {
	path := writeConfig(t, "[cluster]\nhsms = 4\n[[cluster.servers]]\nid = \"a\"\naddress = \"h:1\"\n")
	c, err := Load(path, true, env(map[string]string{
		"HSMSH_CLUSTER_HSMS":                           "5",
		"HSMSH_DURABILITY_CREATE_OBJECT_MINIMUM_NODES": "2",
		"HSMSH_DURABILITY_KEY_AVAILABILITY_CHECK":      "false",
		"HSMSH_DURABILITY_SERVER_SYNC_INTERVAL":        "250ms",
		"HSMSH_CLUSTER_MODE":                           "remote",
		"HSMSH_TLS_PKI_DIR":                            "envpki",
		"HSMSH_UI_THEME":                               "light",
		// Not settings: ignored.
		"HSMSH_CONFIG": "/elsewhere.toml",
		"HSMSH_ROLE":   "admin",
		"HSMSH_PIN":    "1234",
		"HSMSH_BOGUS":  "x",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if c.Cluster.HSMs != 5 || c.Durability.CreateObjectMinimumNodes != 2 || c.Durability.KeyAvailabilityCheck ||
		c.Durability.ServerSyncInterval != 250*time.Millisecond || c.Cluster.Mode != "remote" || c.UI.Theme != "light" {
		t.Errorf("env not applied: %+v", c)
	}
	// Paths from the environment are relative to the current directory.
	if want := filepath.Join(cwd(t), "envpki"); c.TLS.PKIDir != want || c.TLS.ServerKey != filepath.Join(want, "server.key") {
		t.Errorf("TLS = %+v, want pki_dir %s", c.TLS, want)
	}
	for _, name := range []string{"cluster.hsms", "cluster.mode", "tls.pki_dir", "ui.theme"} {
		if got := c.Source(name); got != SourceEnv {
			t.Errorf("Source(%s) = %q, want env", name, got)
		}
	}
	if got := c.Source("cluster.id"); got != SourceDefault {
		t.Errorf("Source(cluster.id) = %q, want default", got)
	}

	// Without a file too.
	c, err = Load("", false, env(map[string]string{"HSMSH_CLIENT_RETRY_ON_MISSING_KEY": "7"}))
	if err != nil || c.Client.RetryOnMissingKey != 7 || c.Source("client.retry_on_missing_key") != SourceEnv {
		t.Errorf("Load with env only = %+v, %v", c, err)
	}
}

func TestBadEnv(t *testing.T) {
	tests := []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{"HSMSH_CLUSTER_HSMS": "lots"}, `HSMSH_CLUSTER_HSMS: must be an integer, got "lots"`},
		{map[string]string{"HSMSH_CLUSTER_HSMS": "29"}, "HSMSH_CLUSTER_HSMS: 29 is out of range (1..28)"},
		{map[string]string{"HSMSH_DURABILITY_KEY_AVAILABILITY_CHECK": "yes"}, `HSMSH_DURABILITY_KEY_AVAILABILITY_CHECK: must be true or false, got "yes"`},
		{map[string]string{"HSMSH_DURABILITY_SERVER_SYNC_INTERVAL": "soon"}, `HSMSH_DURABILITY_SERVER_SYNC_INTERVAL: "soon" is not a duration`},
		{map[string]string{"HSMSH_CLUSTER_ID": "a/b"}, `HSMSH_CLUSTER_ID: "a/b" is not a valid id`},
		{map[string]string{"HSMSH_CLUSTER_MODE": "remote"}, "HSMSH_CLUSTER_MODE: mode \"remote\" needs servers; add [[cluster.servers]] entries"},
	}
	for _, tt := range tests {
		_, err := Load("", false, env(tt.env))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Load with %v: error = %v, want %q", tt.env, err, tt.want)
		}
	}
}

func TestSetPrecedence(t *testing.T) {
	const name = "durability.create_object_minimum_nodes"
	tests := []struct {
		name    string
		steps   []Source
		wantErr string // for the last step; "" = success
	}{
		{"default then command", []Source{SourceCommand}, ""},
		{"file then command", []Source{SourceFile, SourceCommand}, ""},
		{"env then command", []Source{SourceEnv, SourceCommand}, ""},
		{"command then command", []Source{SourceCommand, SourceCommand}, ""},
		{"command then flag", []Source{SourceCommand, SourceFlag}, ""},
		{"flag then flag", []Source{SourceFlag, SourceFlag}, ""},
		{"flag then command", []Source{SourceFlag, SourceCommand},
			name + " was set by a command-line flag; it takes precedence over config set"},
		{"command then env", []Source{SourceCommand, SourceEnv},
			name + " was set by config set; it takes precedence over the environment"},
		{"env then file", []Source{SourceEnv, SourceFile},
			name + " was set by the environment variable HSMSH_DURABILITY_CREATE_OBJECT_MINIMUM_NODES; it takes precedence over the config file"},
		{"file then default", []Source{SourceFile, SourceDefault},
			name + " was set by the config file; it takes precedence over the default"},
		{"unknown source", []Source{"magic"}, `unknown source "magic"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Default()
			var err error
			for i, src := range tt.steps {
				if err = c.Set(name, strconv.Itoa(i+2), src); err != nil && i < len(tt.steps)-1 {
					t.Fatalf("step %d (%s): %v", i, src, err)
				}
			}
			last := tt.steps[len(tt.steps)-1]
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Set: %v", err)
				}
				if c.Durability.CreateObjectMinimumNodes != len(tt.steps)+1 || c.Source(name) != last {
					t.Errorf("after Set: value %d source %q, want %d %q",
						c.Durability.CreateObjectMinimumNodes, c.Source(name), len(tt.steps)+1, last)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Set error = %v, want %q", err, tt.wantErr)
			}
			if c.Durability.CreateObjectMinimumNodes != len(tt.steps) && len(tt.steps) > 1 {
				t.Errorf("refused Set changed the value to %d", c.Durability.CreateObjectMinimumNodes)
			}
		})
	}
}

func TestSetValues(t *testing.T) {
	tests := []struct {
		name, value string
		check       func(*Config) bool
		wantErr     string
	}{
		{"cluster.id", "lab_2.x-y", func(c *Config) bool { return c.Cluster.ID == "lab_2.x-y" }, ""},
		{"cluster.mode", "remote", func(c *Config) bool { return c.Cluster.Mode == "remote" }, ""},
		{"cluster.hsms", "28", func(c *Config) bool { return c.Cluster.HSMs == 28 }, ""},
		{"client.retry_on_missing_key", "10", func(c *Config) bool { return c.Client.RetryOnMissingKey == 10 }, ""},
		{"durability.key_availability_check", "false", func(c *Config) bool { return !c.Durability.KeyAvailabilityCheck }, ""},
		{"durability.server_sync_interval", "24h", func(c *Config) bool { return c.Durability.ServerSyncInterval == 24*time.Hour }, ""},
		{"durability.server_sync_interval", "100ms", func(c *Config) bool { return c.Durability.ServerSyncInterval == 100*time.Millisecond }, ""},
		{"ui.theme", "solarized", func(c *Config) bool { return c.UI.Theme == "solarized" }, ""},
		{"tls.client_key", "/k/client.key", func(c *Config) bool { return c.TLS.ClientKey == filepath.FromSlash("/k/client.key") }, ""},
		{"cluster.hsms", "three", nil, `cluster.hsms: must be an integer, got "three"`},
		{"cluster.hsms", "29", nil, "cluster.hsms: 29 is out of range (1..28)"},
		{"durability.key_availability_check", "1", nil, `must be true or false, got "1"`},
		{"durability.server_sync_interval", "5 minutes", nil, `"5 minutes" is not a duration (examples: 500ms, 5s, 1m30s)`},
		{"durability.server_sync_interval", "1ms", nil, "1ms is out of range (100ms..24h)"},
		{"cluster.mode", "Remote", nil, `"Remote" is not a mode`},
		{"cluster.id", "", nil, `"" is not a valid id`},
		{"ui.theme", "", nil, "ui.theme: must not be empty"},
		{"durability.create_objects_min", "1", nil,
			`unknown setting "durability.create_objects_min" (known settings: client.retry_on_missing_key, cluster.hsms, cluster.id, cluster.mode, cluster.profile, cluster.transport, durability.create_object_minimum_nodes, durability.key_availability_check, durability.server_sync_interval, server.idle_timeout, server.max_connections, session.lifetime, session.renegotiate, tls.client_cert, tls.client_key, tls.cluster_cert, tls.cluster_key, tls.customer_ca, tls.pki_dir, tls.server_cert, tls.server_key, tls.trust_dir, ui.theme)`},
		{"cluster.servers", "x", nil, `unknown setting "cluster.servers"`},
	}
	for _, tt := range tests {
		c := Default()
		before := c.Settings()
		err := c.Set(tt.name, tt.value, SourceCommand)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("Set(%s, %q) error = %v, want %q", tt.name, tt.value, err, tt.wantErr)
			}
			if !reflect.DeepEqual(c.Settings(), before) {
				t.Errorf("Set(%s, %q) failed but changed the config", tt.name, tt.value)
			}
			continue
		}
		if err != nil {
			t.Errorf("Set(%s, %q): %v", tt.name, tt.value, err)
			continue
		}
		if !tt.check(c) || c.Source(tt.name) != SourceCommand {
			t.Errorf("Set(%s, %q): config %+v, source %q", tt.name, tt.value, c, c.Source(tt.name))
		}
	}
}

func TestSettings(t *testing.T) {
	path := writeConfig(t, "[cluster]\nhsms = 4\n[durability]\nserver_sync_interval = \"90s\"\n[tls]\npki_dir = \"p\"\n")
	c, err := Load(path, true, env(map[string]string{"HSMSH_UI_THEME": "dark", "HSMSH_CLUSTER_HSMS": "6"}))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Set("client.retry_on_missing_key", "5", SourceCommand); err != nil {
		t.Fatal(err)
	}
	if err := c.Set("durability.key_availability_check", "false", SourceFlag); err != nil {
		t.Fatal(err)
	}
	pki := filepath.Join(filepath.Dir(path), "p")
	// In embedded mode the tls.* paths are noted as unused: the embedded
	// cluster keeps its own PKI in its data folder.
	const embeddedTLS = "not used by the embedded cluster, which keeps its own PKI in its data folder (clusters/ID/pki); used in remote mode, by hsmsh serve and pki init"
	want := []Setting{
		{"client.retry_on_missing_key", "5", SourceCommand, ""},
		{"cluster.hsms", "6", SourceEnv, ""},
		{"cluster.id", "cluster-local", SourceDefault, ""},
		{"cluster.mode", "embedded", SourceDefault, ""},
		{"cluster.profile", "none", SourceDefault, ""},
		{"cluster.transport", "direct", SourceDefault, `in-process: the client library calls each HSM's door as a function, with no TLS (the default, and what BENCHMARKS.md holds against SoftHSM2); "tls" runs both TLS layers over in-memory pipes, for teaching them without servers`},
		{"durability.create_object_minimum_nodes", "1", SourceDefault, ""},
		{"durability.key_availability_check", "false", SourceFlag, ""},
		{"durability.server_sync_interval", "1m30s", SourceFile, ""},
		{"server.idle_timeout", "5m", SourceDefault, ""},
		{"server.max_connections", "512", SourceDefault, ""},
		{"session.lifetime", "1h", SourceDefault, ""},
		{"session.renegotiate", "true", SourceDefault, ""},
		{"tls.client_cert", filepath.Join(pki, "client.crt"), SourceDefault, embeddedTLS},
		{"tls.client_key", filepath.Join(pki, "client.key"), SourceDefault, embeddedTLS},
		{"tls.cluster_cert", filepath.Join(pki, "cluster.crt"), SourceDefault, embeddedTLS},
		{"tls.cluster_key", filepath.Join(pki, "cluster.key"), SourceDefault, embeddedTLS},
		{"tls.customer_ca", filepath.Join(pki, "customerCA.crt"), SourceDefault, embeddedTLS},
		{"tls.pki_dir", pki, SourceFile, embeddedTLS},
		{"tls.server_cert", filepath.Join(pki, "server.crt"), SourceDefault, embeddedTLS},
		{"tls.server_key", filepath.Join(pki, "server.key"), SourceDefault, embeddedTLS},
		{"tls.trust_dir", filepath.Join(pki, "certs"), SourceDefault, embeddedTLS},
		{"ui.theme", "dark", SourceEnv, ""},
	}
	if got := c.Settings(); !reflect.DeepEqual(got, want) {
		t.Errorf("Settings() =\n%v\nwant\n%v", got, want)
	}

	// Durations print without zero tails.
	for d, want := range map[time.Duration]string{
		5 * time.Second: "5s", 24 * time.Hour: "24h", time.Hour + 30*time.Minute: "1h30m",
		2 * time.Minute: "2m", 1500 * time.Millisecond: "1.5s", 100 * time.Millisecond: "100ms",
	} {
		if got := formatDuration(d); got != want {
			t.Errorf("formatDuration(%v) = %q, want %q", d, got, want)
		}
	}
}

func TestTLSPaths(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "conf", "hsmsh.toml")
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	abs := filepath.Join(dir, "abs", "ca.crt")
	content := "[tls]\npki_dir = \"certs/pki\"\ntrust_dir = \"../trust\"\ncustomer_ca = " + quote(abs) + "\nserver_key = \"\"\n"
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(path, true, nil)
	if err != nil {
		t.Fatal(err)
	}
	pki := filepath.Join(dir, "conf", "certs", "pki")
	want := TLS{
		PKIDir:      pki,
		TrustDir:    filepath.Join(dir, "trust"),
		ClientCert:  filepath.Join(pki, "client.crt"),
		ClientKey:   filepath.Join(pki, "client.key"),
		CustomerCA:  abs,
		ServerCert:  filepath.Join(pki, "server.crt"),
		ServerKey:   filepath.Join(pki, "server.key"),
		ClusterCert: filepath.Join(pki, "cluster.crt"),
		ClusterKey:  filepath.Join(pki, "cluster.key"),
	}
	if c.TLS != want {
		t.Errorf("TLS =\n%+v\nwant\n%+v", c.TLS, want)
	}

	// Without pki_dir in the file, the default is pki next to the file.
	path2 := writeConfig(t, "[ui]\ntheme = \"x\"\n")
	c2, err := Load(path2, true, nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(filepath.Dir(path2), "pki", "cluster.key"); c2.TLS.ClusterKey != want {
		t.Errorf("ClusterKey = %q, want %q", c2.TLS.ClusterKey, want)
	}

	// Changing pki_dir moves the derived paths along, not the explicit ones;
	// a relative path given to Set is relative to the current directory.
	if err := c.Set("tls.pki_dir", "other", SourceFlag); err != nil {
		t.Fatal(err)
	}
	other := filepath.Join(cwd(t), "other")
	if c.TLS.PKIDir != other || c.TLS.ClientCert != filepath.Join(other, "client.crt") ||
		c.TLS.TrustDir != filepath.Join(dir, "trust") || c.TLS.CustomerCA != abs {
		t.Errorf("after Set tls.pki_dir: %+v", c.TLS)
	}
	// An empty path means the default again.
	if err := c.Set("tls.trust_dir", "", SourceCommand); err != nil {
		t.Fatal(err)
	}
	if c.TLS.TrustDir != filepath.Join(other, "certs") {
		t.Errorf("TrustDir = %q, want %q", c.TLS.TrustDir, filepath.Join(other, "certs"))
	}
}

func TestClone(t *testing.T) {
	path := writeConfig(t, fullFile)
	c, err := Load(path, true, nil)
	if err != nil {
		t.Fatal(err)
	}
	d := c.Clone()
	if !reflect.DeepEqual(c, d) {
		t.Fatalf("Clone() = %+v, want %+v", d, c)
	}
	d.Cluster.Servers[0].Address = "changed:1"
	if err := d.Set("cluster.hsms", "9", SourceFlag); err != nil {
		t.Fatal(err)
	}
	if err := d.Set("tls.pki_dir", "/new", SourceFlag); err != nil {
		t.Fatal(err)
	}
	if c.Cluster.Servers[0].Address != "10.0.0.1:2223" || c.Cluster.HSMs != 5 ||
		c.Source("cluster.hsms") != SourceFile || c.TLS.PKIDir != filepath.FromSlash("/etc/hsmsh/pki") {
		t.Errorf("changing the clone changed the original: %+v", c)
	}
	// A clone of the defaults has no sources map yet; setting it must not
	// touch the original.
	def := Default()
	cl := def.Clone()
	if err := cl.Set("ui.theme", "x", SourceCommand); err != nil {
		t.Fatal(err)
	}
	if def.Source("ui.theme") != SourceDefault || def.UI.Theme != "default" {
		t.Errorf("Set on a clone of Default changed the original")
	}
}

const commented = `# hsmsh config — hand written
[cluster]
id = "lab"   # our lab
hsms = 3 # three HSMs

# Durability knobs.
[durability]
	key_availability_check = true
create_object_minimum_nodes = 1   # at least one

[ui] # look
theme = "default"
`

func TestEdit(t *testing.T) {
	tests := []struct {
		name    string
		initial string // "" = no file
		changes []Change
		want    string
	}{
		{
			"replace values keeping comments",
			commented,
			[]Change{
				{"cluster.hsms", "5"},
				{"durability.key_availability_check", "false"},
				{"ui.theme", "dark \"night\""},
			},
			strings.NewReplacer(
				"hsms = 3 # three HSMs", "hsms = 5 # three HSMs",
				"\tkey_availability_check = true", "\tkey_availability_check = false",
				`theme = "default"`, `theme = "dark \"night\""`,
			).Replace(commented),
		},
		{
			"insert into existing table",
			commented,
			[]Change{{"durability.server_sync_interval", "90s"}, {"cluster.mode", "embedded"}},
			strings.NewReplacer(
				"[durability]\n", "[durability]\nserver_sync_interval = \"90s\"\n",
				"[cluster]\n", "[cluster]\nmode = \"embedded\"\n",
			).Replace(commented),
		},
		{
			"append table",
			commented,
			[]Change{{"client.retry_on_missing_key", "07"}, {"tls.pki_dir", "my pki"}, {"tls.client_cert", `C:\certs\c.crt`}},
			commented + "\n[client]\nretry_on_missing_key = 7\n\n[tls]\nclient_cert = \"C:\\\\certs\\\\c.crt\"\npki_dir = \"my pki\"\n",
		},
		{
			"append to file without final newline",
			"[ui]\ntheme = \"x\"",
			[]Change{{"cluster.hsms", "2"}},
			"[ui]\ntheme = \"x\"\n\n[cluster]\nhsms = 2\n",
		},
		{
			"header on last line",
			"[ui]",
			[]Change{{"ui.theme", "x"}},
			"[ui]\ntheme = \"x\"\n",
		},
		{
			"table before its sub-tables",
			"# servers\n[[cluster.servers]]\nid = \"a\"\naddress = \"h:1\"\n",
			[]Change{{"cluster.mode", "remote"}},
			"[cluster]\nmode = \"remote\"\n\n# servers\n[[cluster.servers]]\nid = \"a\"\naddress = \"h:1\"\n",
		},
		{
			"dotted key at the root",
			"cluster.hsms = 2 # two\n",
			[]Change{{"cluster.hsms", "4"}},
			"cluster.hsms = 4 # two\n",
		},
		{
			"CRLF line endings",
			"[cluster]\r\nhsms = 3\r\n",
			[]Change{{"cluster.hsms", "4"}, {"cluster.id", "x"}, {"ui.theme", "y"}},
			"[cluster]\r\nid = \"x\"\r\nhsms = 4\r\n\r\n[ui]\r\ntheme = \"y\"\r\n",
		},
		{
			"new file",
			"",
			[]Change{{"durability.create_object_minimum_nodes", "2"}},
			"[durability]\ncreate_object_minimum_nodes = 2\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "hsmsh.toml")
			if tt.initial != "" {
				if err := os.WriteFile(path, []byte(tt.initial), 0o640); err != nil {
					t.Fatal(err)
				}
			}
			if err := Edit(path, tt.changes); err != nil {
				t.Fatalf("Edit: %v", err)
			}
			if got := readFile(t, path); got != tt.want {
				t.Errorf("file =\n%s\nwant\n%s", got, tt.want)
			}
			// The result loads with the new values from the file.
			c, err := Load(path, true, nil)
			if err != nil {
				t.Fatalf("Load after Edit: %v", err)
			}
			for _, ch := range tt.changes {
				if c.Source(ch.Name) != SourceFile {
					t.Errorf("%s: source %q after Edit, want file", ch.Name, c.Source(ch.Name))
				}
			}
			fi, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			wantMode := fs.FileMode(0o640)
			if tt.initial == "" {
				wantMode = 0o600
			}
			if runtime.GOOS != "windows" && fi.Mode().Perm() != wantMode {
				t.Errorf("mode = %v, want %v", fi.Mode().Perm(), wantMode)
			}
			entries, err := os.ReadDir(filepath.Dir(path))
			if err != nil || len(entries) != 1 {
				t.Errorf("folder holds %v (%v), want only the config file", entries, err)
			}
		})
	}
}

func TestEditCreatesFolder(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a", "hsmsh")
	path := filepath.Join(dir, "hsmsh.toml")
	if err := Edit(path, []Change{{"ui.theme", "dark"}}); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, path); got != "[ui]\ntheme = \"dark\"\n" {
		t.Errorf("file = %q", got)
	}
	if runtime.GOOS == "windows" {
		return
	}
	for p, want := range map[string]fs.FileMode{dir: 0o700, path: 0o600} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != want {
			t.Errorf("%s: mode %v, want %v", p, fi.Mode().Perm(), want)
		}
	}
}

func TestEditRefuses(t *testing.T) {
	tests := []struct {
		name    string
		initial string
		changes []Change
		wantErr string
	}{
		{"bad value", commented, []Change{{"ui.theme", "ok"}, {"cluster.hsms", "0"}}, "cluster.hsms: 0 is out of range (1..28)"},
		{"bad duration", commented, []Change{{"durability.server_sync_interval", "often"}}, `"often" is not a duration`},
		{"unknown name", commented, []Change{{"durability.create_objects_min", "1"}}, `unknown setting "durability.create_objects_min"`},
		{"result does not load", commented, []Change{{"cluster.mode", "remote"}}, "add [[cluster.servers]] entries"},
		{"file already broken", commented + "bogus = 1\n", []Change{{"ui.theme", "x"}}, ":13: ui.bogus: unknown key"},
		{"key in an inline table", "ui = { theme = \"dark\" }\n", []Change{{"ui.theme", "light"}}, "it would not load"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := writeConfig(t, tt.initial)
			err := Edit(path, tt.changes)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Edit error = %v, want %q", err, tt.wantErr)
			}
			if got := readFile(t, path); got != tt.initial {
				t.Errorf("refused Edit changed the file to\n%s", got)
			}
			if entries, _ := os.ReadDir(filepath.Dir(path)); len(entries) != 1 {
				t.Errorf("refused Edit left files behind: %v", entries)
			}
		})
	}
	if err := Edit("", []Change{{"ui.theme", "x"}}); err == nil {
		t.Error(`Edit("") succeeded, want an error`)
	}
}

func TestEditThroughSymlink(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("symlinks need privileges on Windows")
	}
	target := writeConfig(t, "[ui]\ntheme = \"a\"\n")
	link := filepath.Join(t.TempDir(), "link.toml")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	if err := Edit(link, []Change{{"ui.theme", "b"}}); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Lstat(link); err != nil || fi.Mode()&fs.ModeSymlink == 0 {
		t.Errorf("link replaced by a file: %v %v", fi, err)
	}
	if got := readFile(t, target); got != "[ui]\ntheme = \"b\"\n" {
		t.Errorf("target = %q", got)
	}
}

func TestEditServers(t *testing.T) {
	tests := []struct {
		name    string
		initial string
		servers []Server
		want    string
	}{
		{
			"replace servers in place",
			"# hsmsh\n[cluster]\nmode = \"remote\"\n\n# our servers\n[[cluster.servers]]\nid = \"a\"\naddress = \"a:1\" # first\n\n[[cluster.servers]]\nid = \"b\"\naddress = \"b:1\"\n\n# look\n[ui]\ntheme = \"x\"\n",
			[]Server{{ID: "c", Address: "10.0.0.3:2223"}, {Address: "10.0.0.4:2223"}},
			"# hsmsh\n[cluster]\nmode = \"remote\"\n\n# our servers\n[[cluster.servers]]\nid = \"c\"\naddress = \"10.0.0.3:2223\"\n\n[[cluster.servers]]\nid = \"hsm-2\"\naddress = \"10.0.0.4:2223\"\n\n# look\n[ui]\ntheme = \"x\"\n",
		},
		{
			"add after cluster table",
			"[cluster]\nid = \"lab\" # lab\nmode = \"remote\"\n\n[ui]\ntheme = \"x\"\n",
			[]Server{{Address: "h1:2223"}},
			"[cluster]\nid = \"lab\" # lab\nmode = \"remote\"\n\n[[cluster.servers]]\nid = \"hsm-1\"\naddress = \"h1:2223\"\n\n[ui]\ntheme = \"x\"\n",
		},
		{
			"add after cluster table followed directly by another",
			"[cluster]\nmode = \"remote\"\n[ui]\ntheme = \"x\"\n",
			[]Server{{Address: "h1:2223"}},
			"[cluster]\nmode = \"remote\"\n\n[[cluster.servers]]\nid = \"hsm-1\"\naddress = \"h1:2223\"\n\n[ui]\ntheme = \"x\"\n",
		},
		{
			"add at the end",
			"[ui]\ntheme = \"x\"\n",
			[]Server{{Address: "h1:2223"}, {Address: "h2:2223"}},
			"[ui]\ntheme = \"x\"\n\n[[cluster.servers]]\nid = \"hsm-1\"\naddress = \"h1:2223\"\n\n[[cluster.servers]]\nid = \"hsm-2\"\naddress = \"h2:2223\"\n",
		},
		{
			"remove all",
			"[cluster]\nhsms = 3\n\n[[cluster.servers]]\nid = \"a\"\naddress = \"a:1\"\n\n[[cluster.servers]]\nid = \"b\"\naddress = \"b:1\"\n\n[ui]\ntheme = \"x\"\n",
			nil,
			"[cluster]\nhsms = 3\n\n[ui]\ntheme = \"x\"\n",
		},
		{
			"replace inline array",
			"[cluster]\nmode = \"remote\"\nservers = [\n  {id = \"a\", address = \"a:1\"},\n]\nhsms = 2\n",
			[]Server{{ID: "z", Address: "z:9"}},
			"[cluster]\nmode = \"remote\"\nhsms = 2\n\n[[cluster.servers]]\nid = \"z\"\naddress = \"z:9\"\n",
		},
		{
			"new file",
			"",
			[]Server{{Address: "[fe80::1]:2223"}},
			"[[cluster.servers]]\nid = \"hsm-1\"\naddress = \"[fe80::1]:2223\"\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "hsmsh.toml")
			if tt.initial != "" {
				if err := os.WriteFile(path, []byte(tt.initial), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			if err := EditServers(path, tt.servers); err != nil {
				t.Fatalf("EditServers: %v", err)
			}
			if got := readFile(t, path); got != tt.want {
				t.Errorf("file =\n%s\nwant\n%s", got, tt.want)
			}
			c, err := Load(path, true, nil)
			if err != nil {
				t.Fatalf("Load after EditServers: %v", err)
			}
			if len(c.Cluster.Servers) != len(tt.servers) {
				t.Errorf("loaded %d servers, want %d", len(c.Cluster.Servers), len(tt.servers))
			}
		})
	}
}

func TestEditServersRefuses(t *testing.T) {
	initial := "[cluster]\nmode = \"remote\"\n[[cluster.servers]]\nid = \"a\"\naddress = \"a:1\"\n"
	tests := []struct {
		name    string
		servers []Server
		wantErr string
	}{
		{"no port", []Server{{Address: "10.0.0.1"}}, `cluster.servers[0].address: "10.0.0.1" is not a host:port address`},
		{"bad port", []Server{{Address: "h:0"}}, "the port must be a number from 1 to 65535"},
		{"no host", []Server{{Address: ":2223"}}, `":2223" has no host`},
		{"bad id", []Server{{ID: "a b", Address: "h:1"}}, `cluster.servers[0].id: "a b" is not a valid id`},
		{"duplicate id", []Server{{ID: "hsm-2", Address: "h:1"}, {Address: "h:2"}}, `cluster.servers[1].id: duplicate server id "hsm-2"`},
		{"remote needs servers", nil, "add [[cluster.servers]] entries"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := writeConfig(t, initial)
			err := EditServers(path, tt.servers)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("EditServers error = %v, want %q", err, tt.wantErr)
			}
			if got := readFile(t, path); got != initial {
				t.Errorf("refused EditServers changed the file to\n%s", got)
			}
		})
	}
}

func TestParseAlternative(t *testing.T) {
	tests := []struct {
		in   string
		want []Requirement
		err  string
	}{
		{"2 admin", []Requirement{{"admin", 2}}, ""},
		{" 1 admin +  2 crypto-user ", []Requirement{{"admin", 1}, {"crypto-user", 2}}, ""},
		{"admin", nil, "is not N ROLE"},
		{"0 admin", nil, "not a count from 1 to 8"},
		{"2 admin + 1 admin", nil, "names admin twice"},
		{"2 auditor", nil, "is not a role"},
		{"", nil, "is not N ROLE"},
	}
	for _, tt := range tests {
		got, err := ParseAlternative(tt.in)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("ParseAlternative(%q) error %v, want %q", tt.in, err, tt.err)
			}
			continue
		}
		if err != nil || !slices.Equal(got, tt.want) {
			t.Errorf("ParseAlternative(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
		}
	}
}

func TestLoadQuorumRules(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "hsmsh.toml")
	os.WriteFile(p, []byte("[[quorum.rules]]\ncommand = \"user  delete\"\nalternatives = [\"2 admin\", \"1 admin + 2 crypto-user\"]\n"), 0o600)
	c, err := Load(p, true, func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	want := []QuorumRule{{Command: "user delete", Alternatives: [][]Requirement{{{"admin", 2}}, {{"admin", 1}, {"crypto-user", 2}}}}}
	if fmt.Sprint(c.Quorum.Rules) != fmt.Sprint(want) {
		t.Errorf("rules %v, want %v", c.Quorum.Rules, want)
	}
}

// The [server] table bounds an HSM server's connections: idle_timeout (a
// duration, 0 to turn it off, else 1s..24h) and max_connections
// (1..100000). Each comes from the file, the environment or config set
// like any setting, and a value out of range names the key and the range.
func TestServerLimits(t *testing.T) {
	tests := []struct {
		name     string
		file     string            // the [server] table's body, "" for no table
		env      map[string]string // HSMSH_SERVER_*
		idle     time.Duration
		max      int
		wantErr  string // in Load's error; the rest is not checked then
		wantLine int    // the error's line in the file (0: no file)
	}{
		{"defaults", "", nil, 5 * time.Minute, 512, "", 0},
		{"from the file", "idle_timeout = \"90s\"\nmax_connections = 100\n", nil, 90 * time.Second, 100, "", 0},
		{"0 turns the idle timeout off", "idle_timeout = \"0\"\n", nil, 0, 512, "", 0},
		{"0s too", "idle_timeout = \"0s\"\n", nil, 0, 512, "", 0},
		{"the bounds", "idle_timeout = \"24h\"\nmax_connections = 100000\n", nil, 24 * time.Hour, 100000, "", 0},
		{"the lower bounds", "idle_timeout = \"1s\"\nmax_connections = 1\n", nil, time.Second, 1, "", 0},
		{"from the environment", "idle_timeout = \"90s\"\n", map[string]string{
			"HSMSH_SERVER_IDLE_TIMEOUT": "10m", "HSMSH_SERVER_MAX_CONNECTIONS": "64"}, 10 * time.Minute, 64, "", 0},
		{"idle timeout too long", "\nidle_timeout = \"25h\"\n", nil, 0, 0,
			"server.idle_timeout: 25h is out of range (0 to turn it off, or 1s..24h)", 3},
		{"idle timeout too short", "idle_timeout = \"500ms\"\n", nil, 0, 0,
			"server.idle_timeout: 500ms is out of range (0 to turn it off, or 1s..24h)", 2},
		{"negative idle timeout", "idle_timeout = \"-5m\"\n", nil, 0, 0,
			"server.idle_timeout: -5m is out of range (0 to turn it off, or 1s..24h)", 2},
		{"idle timeout not a duration", "idle_timeout = \"forever\"\n", nil, 0, 0,
			`server.idle_timeout: "forever" is not a duration (examples: 500ms, 5s, 1m30s)`, 2},
		{"idle timeout as a number", "idle_timeout = 300\n", nil, 0, 0,
			`server.idle_timeout: must be a duration string such as "5s", got integer 300`, 2},
		{"no connections", "max_connections = 0\n", nil, 0, 0,
			"server.max_connections: 0 is out of range (1..100000)", 2},
		{"too many connections", "max_connections = 100001\n", nil, 0, 0,
			"server.max_connections: 100001 is out of range (1..100000)", 2},
		{"max connections as a string", "max_connections = \"512\"\n", nil, 0, 0,
			`server.max_connections: must be an integer, got string "512"`, 2},
		{"unknown key", "max_conns = 5\n", nil, 0, 0,
			"server.max_conns: unknown key (known keys in [server]: idle_timeout, max_connections)", 2},
		{"environment out of range", "", map[string]string{"HSMSH_SERVER_MAX_CONNECTIONS": "0"}, 0, 0,
			"HSMSH_SERVER_MAX_CONNECTIONS: 0 is out of range (1..100000)", 0},
		{"environment idle timeout out of range", "", map[string]string{"HSMSH_SERVER_IDLE_TIMEOUT": "48h"}, 0, 0,
			"HSMSH_SERVER_IDLE_TIMEOUT: 48h is out of range (0 to turn it off, or 1s..24h)", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := ""
			if tt.file != "" {
				path = writeConfig(t, "[server]\n"+tt.file)
			}
			c, err := Load(path, true, env(tt.env))
			if tt.wantErr != "" {
				want := tt.wantErr
				if tt.wantLine > 0 {
					want = fmt.Sprintf("%s:%d: %s", path, tt.wantLine, tt.wantErr)
				}
				if err == nil || err.Error() != want {
					t.Fatalf("Load: %v\nwant the error %q", err, want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.Server.IdleTimeout != tt.idle || c.Server.MaxConnections != tt.max {
				t.Errorf("Server = %+v, want idle %v, max %d", c.Server, tt.idle, tt.max)
			}
			// config show lists both, with where each came from.
			shown := map[string]Setting{}
			for _, s := range c.Settings() {
				shown[s.Name] = s
			}
			for name, want := range map[string]string{
				"server.idle_timeout":    formatDuration(tt.idle),
				"server.max_connections": strconv.Itoa(tt.max),
			} {
				s, ok := shown[name]
				if !ok || s.Value != want {
					t.Errorf("config show: %s = %+v, want the value %q", name, s, want)
				}
				wantSrc := SourceDefault
				switch {
				case tt.env[envName(name)] != "":
					wantSrc = SourceEnv
				case strings.Contains(tt.file, strings.TrimPrefix(name, "server.")):
					wantSrc = SourceFile
				}
				if s.Source != wantSrc {
					t.Errorf("config show: %s came from %q, want %q", name, s.Source, wantSrc)
				}
			}
		})
	}

	// config set: the same checks, and a refused value changes nothing.
	sets := []struct {
		name, value, wantErr string
	}{
		{"server.idle_timeout", "0", ""},
		{"server.idle_timeout", "2h30m", ""},
		{"server.idle_timeout", "2ms", "server.idle_timeout: 2ms is out of range (0 to turn it off, or 1s..24h)"},
		{"server.max_connections", "2048", ""},
		{"server.max_connections", "-1", "server.max_connections: -1 is out of range (1..100000)"},
		{"server.max_connections", "lots", `server.max_connections: must be an integer, got "lots"`},
	}
	for _, tt := range sets {
		c := Default()
		before := c.Settings()
		err := c.Set(tt.name, tt.value, SourceCommand)
		if tt.wantErr != "" {
			if err == nil || err.Error() != tt.wantErr {
				t.Errorf("Set(%s, %q) = %v, want %q", tt.name, tt.value, err, tt.wantErr)
			}
			if !reflect.DeepEqual(c.Settings(), before) {
				t.Errorf("Set(%s, %q) failed but changed the config", tt.name, tt.value)
			}
			continue
		}
		if err != nil {
			t.Errorf("Set(%s, %q): %v", tt.name, tt.value, err)
		} else if c.Source(tt.name) != SourceCommand {
			t.Errorf("Set(%s, %q): source %q", tt.name, tt.value, c.Source(tt.name))
		}
	}
}

// config show says plainly what cluster.transport does, for each mode and
// value.
func TestTransportNote(t *testing.T) {
	tests := []struct {
		cluster Cluster
		want    string
	}{
		{Cluster{Mode: "embedded", Transport: "direct"}, "in-process: the client library calls each HSM's door as a function, with no TLS"},
		{Cluster{Mode: "embedded", Transport: "tls"}, "nested TLS over in-memory pipes to each in-process HSM"},
		{Cluster{Mode: "remote", Transport: "direct"}, "not used in remote mode"},
		{Cluster{Mode: "remote", Transport: "tls"}, "not used in remote mode"},
	}
	for _, tt := range tests {
		if got := transportNote(tt.cluster); !strings.HasPrefix(got, tt.want) {
			t.Errorf("%s/%s: %q, want it to start %q", tt.cluster.Mode, tt.cluster.Transport, got, tt.want)
		}
	}
}
