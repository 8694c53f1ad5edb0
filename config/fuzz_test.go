package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzLoad feeds arbitrary bytes to Load as the config file. The seed corpus
// is under testdata/fuzz/FuzzLoad: valid files (full, with [[clusters]] and
// [[quorum.rules]]), type and range errors, syntax errors and binary junk.
//
// Properties:
//   - Load either fails with an error whose text starts with the file's path
//     (every problem in a file is reported as FILE:LINE: or FILE:), or
//   - it returns a Config each of whose Settings() can be given back to Set
//     (as `config set` would, from SourceCommand) without error, and doing so
//     changes no setting's value: what `config show` prints can be typed
//     back in.
func FuzzLoad(f *testing.F) {
	for _, s := range []string{
		fullFile,
		"",
		"[cluster]\nhsms = 4\n[durability]\nserver_sync_interval = \"90s\"\n[tls]\npki_dir = \"p\"\n",
		"[[clusters]]\nid = \"lab\"\nhsms = 2\ntransport = \"direct\"\n\n[[clusters]]\nid = \"prod\"\nmode = \"remote\"\n[[clusters.servers]]\nid = \"hsm-1\"\naddress = \"10.0.0.1:2223\"\n",
		"[cluster]\nhsms = 0\nfoo = 1\n[ui]\ntheme = \"\"\n",
		"[cluster]\nmode = \"remote\"\n",
		"[cluster\n",
		"[session]\nlifetime = \"30s\"\nrenegotiate = \"yes\"\n",
		"clusters = [{id = \"a\", hsms = 1}, {id = \"a\"}]\n",
	} {
		f.Add([]byte(s))
	}
	noEnv := func(string) string { return "" }
	f.Fuzz(func(t *testing.T, data []byte) {
		path := filepath.Join(t.TempDir(), "hsmsh.toml")
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		c, err := Load(path, true, noEnv)
		if err != nil {
			if msg := err.Error(); !strings.HasPrefix(msg, path+":") {
				t.Fatalf("error does not start with %q:\n%s", path+":", msg)
			}
			return
		}
		if c == nil {
			t.Fatal("Load returned neither a Config nor an error")
		}
		before := c.Settings()
		for _, s := range before {
			if err := c.Set(s.Name, s.Value, SourceCommand); err != nil {
				t.Fatalf("Set(%q, %q) of a loaded setting: %v\nfile:\n%s", s.Name, s.Value, err, data)
			}
		}
		after := c.Settings()
		if len(after) != len(before) {
			t.Fatalf("Settings() has %d settings after Set, %d before", len(after), len(before))
		}
		for i := range before {
			if after[i].Name != before[i].Name || after[i].Value != before[i].Value {
				t.Errorf("setting %s changed from %q to %q when set to its own value", before[i].Name, before[i].Value, after[i].Value)
			}
			if after[i].Source != SourceCommand {
				t.Errorf("setting %s has source %q after Set, want %q", after[i].Name, after[i].Source, SourceCommand)
			}
		}
	})
}
