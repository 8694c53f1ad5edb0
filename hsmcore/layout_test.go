package hsmcore

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/hsmsh/hsmsh"

// deps lists what pkg imports, directly or not, as go list reports it.
func deps(t *testing.T, pkg string) []string {
	t.Helper()
	out, err := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}}", pkg).CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps %s: %v\n%s", pkg, err, out)
	}
	return strings.Fields(string(out))
}

// The HSM boundary in the package graph: the device and the client
// library never import each other, in either direction and at any depth,
// and share only the protocol and leaf packages; hsmcore (the client
// library's names, as the command layer uses them) never imports the
// device; above hsmcore only package host, which runs devices in this
// process, names package hsm.
func TestLayout(t *testing.T) {
	for _, tt := range []struct {
		pkg       string
		forbidden []string
	}{
		{module + "/hsmcore/client", []string{module + "/hsmcore/hsm", module + "/hsmcore"}},
		{module + "/hsmcore/hsm", []string{module + "/hsmcore/client", module + "/hsmcore"}},
		{module + "/hsmcore/protocol", []string{module + "/hsmcore/client", module + "/hsmcore/hsm", module + "/hsmcore"}},
		// The names the command layer uses are the client library's: they
		// never bring the device along.
		{module + "/hsmcore", []string{module + "/hsmcore/hsm"}},
	} {
		got := deps(t, tt.pkg)
		for _, f := range tt.forbidden {
			if slices.Contains(got, f) {
				t.Errorf("%s imports %s", tt.pkg, f)
			}
		}
		// What the two sides share is the protocol and leaf packages of
		// hsmcore, none of which imports another side.
		for _, d := range got {
			if d == tt.pkg || d == module+"/hsmcore/client" && tt.pkg == module+"/hsmcore" || !strings.HasPrefix(d, module+"/") {
				continue
			}
			if !strings.HasPrefix(d, module+"/hsmcore/") && !strings.HasPrefix(d, module+"/internal/") {
				t.Errorf("%s imports %s, outside hsmcore", tt.pkg, d)
			}
		}
	}
	// The command layer and the UI reach a cluster through hsmcore only.
	for _, pkg := range []string{module + "/commands", module + "/session", module + "/shell"} {
		out, err := exec.Command("go", "list", "-f", `{{join .Imports "\n"}}`, pkg).CombinedOutput()
		if err != nil {
			t.Fatalf("go list %s: %v\n%s", pkg, err, out)
		}
		for _, imp := range strings.Fields(string(out)) {
			if imp == module+"/hsmcore/hsm" || imp == module+"/hsmcore/client" {
				t.Errorf("%s imports %s directly: go through hsmcore (and hsmcore/host to run HSMs)", pkg, imp)
			}
		}
	}
}
