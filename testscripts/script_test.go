package testscripts

import (
	"encoding/asn1"
	"encoding/base64"
	"encoding/json"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rogpeppe/go-internal/testscript"

	"github.com/hsmsh/hsmsh/shell"
)

func TestMain(m *testing.M) {
	testscript.Main(m, map[string]func(){
		"hsmsh": func() { os.Exit(shell.Main(os.Args[1:], os.Stdin, os.Stdout, os.Stderr)) },
	})
}

func TestScripts(t *testing.T) {
	testscript.Run(t, testscript.Params{
		Dir:                 ".",
		RequireExplicitExec: true,
		RequireUniqueNames:  true,
		Setup: func(env *testscript.Env) error {
			// Every script gets its own data and config folders, so the
			// user's real ones are never touched.
			env.Setenv("HSMSH_DATA_DIR", filepath.Join(env.WorkDir, "data"))
			env.Setenv("XDG_CONFIG_HOME", filepath.Join(env.WorkDir, ".config"))
			env.Setenv("XDG_DATA_HOME", filepath.Join(env.WorkDir, ".local"))
			env.Setenv("HOME", env.WorkDir)
			env.Setenv("NO_COLOR", "1")
			// The teaching demos are run from the repository, as a user
			// runs them.
			demos, err := filepath.Abs("../demos")
			if err != nil {
				return err
			}
			env.Setenv("DEMOS", demos)
			// A race-enabled hsmsh (the test binary, under go test -race)
			// would sleep a second at exit by default; scripts run it
			// hundreds of times.
			env.Setenv("GORACE", strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0"))
			return nil
		},
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			"jsonpath":  cmdJSONPath,
			"setjson":   cmdSetJSON,
			"rs2der":    cmdRS2DER,
			"b64dec":    cmdB64Dec,
			"jsonfind":  cmdJSONFind,
			"flipbit":   cmdFlipBit,
			"der2rs":    cmdDER2RS,
			"envfile":   cmdEnvFile,
			"truncate":  cmdTruncate,
			"jsoncount": cmdJSONCount,
			"freeport":  cmdFreePort,
			"waitport":  cmdWaitPort,
			"expandenv": cmdExpandEnv,
			"jsonshape": cmdJSONShape,
		},
	})
}

// documents decodes every JSON document in a script file (stdout holds
// one envelope per command).
func documents(ts *testscript.TestScript, name string) []any {
	dec := json.NewDecoder(strings.NewReader(ts.ReadFile(name)))
	var docs []any
	for {
		var v any
		err := dec.Decode(&v)
		if err == io.EOF {
			break
		}
		if err != nil {
			ts.Fatalf("%s: not a JSON stream: %v", name, err)
		}
		docs = append(docs, v)
	}
	if len(docs) == 0 {
		ts.Fatalf("%s holds no JSON document", name)
	}
	return docs
}

// lookup follows a path such as "#2.data.matched_keys.0.key-reference":
// "#N" picks the Nth document, from 0 (negative counts from the end;
// default the last), then dot-separated object keys and array indexes.
func lookup(ts *testscript.TestScript, file, path string) (any, bool) {
	docs := documents(ts, file)
	idx := len(docs) - 1
	if strings.HasPrefix(path, "#") {
		head, rest, _ := strings.Cut(path[1:], ".")
		n, err := strconv.Atoi(head)
		if err != nil {
			ts.Fatalf("bad document index in %q", path)
		}
		if n < 0 {
			n += len(docs)
		}
		if n < 0 || n >= len(docs) {
			// No such document: nothing there (so "! jsonpath stdout '#3'"
			// says there are at most three).
			return nil, false
		}
		idx, path = n, rest
	}
	v := docs[idx]
	for _, part := range strings.Split(strings.TrimPrefix(path, "."), ".") {
		if part == "" {
			continue
		}
		switch x := v.(type) {
		case map[string]any:
			next, ok := x[part]
			if !ok {
				return nil, false
			}
			v = next
		case []any:
			i, err := strconv.Atoi(part)
			if err != nil || i < 0 || i >= len(x) {
				return nil, false
			}
			v = x[i]
		default:
			return nil, false
		}
	}
	return v, true
}

func render(v any) string {
	if s, ok := v.(string); ok {
		return s
	}
	b, _ := json.Marshal(v)
	return string(b)
}

// jsonpath FILE PATH [VALUE]: the value at PATH equals VALUE (strings
// compared unquoted, anything else as compact JSON), or exists at all.
func cmdJSONPath(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) < 2 || len(args) > 3 {
		ts.Fatalf("usage: jsonpath FILE PATH [VALUE]")
	}
	v, ok := lookup(ts, args[0], args[1])
	match := ok
	if ok && len(args) == 3 {
		match = render(v) == args[2]
	}
	switch {
	case neg && match:
		ts.Fatalf("%s %s is %s; want anything else", args[0], args[1], render(v))
	case !neg && !ok:
		ts.Fatalf("%s has nothing at %s", args[0], args[1])
	case !neg && !match:
		ts.Fatalf("%s %s is %s; want %s", args[0], args[1], render(v), args[2])
	}
}

// setjson VAR FILE PATH: sets $VAR to the value at PATH.
func cmdSetJSON(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 3 {
		ts.Fatalf("usage: setjson VAR FILE PATH")
	}
	v, ok := lookup(ts, args[1], args[2])
	if !ok {
		ts.Fatalf("%s has nothing at %s", args[1], args[2])
	}
	ts.Setenv(args[0], render(v))
}

// rs2der B64 FILE: writes a raw r‖s ECDSA signature as the DER structure
// openssl dgst -verify expects.
func cmdRS2DER(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 2 {
		ts.Fatalf("usage: rs2der BASE64 FILE")
	}
	raw, err := base64.StdEncoding.DecodeString(args[0])
	if err != nil || len(raw)%2 != 0 {
		ts.Fatalf("not a base64 r‖s signature: %v", err)
	}
	half := len(raw) / 2
	der, err := asn1.Marshal(struct{ R, S *big.Int }{new(big.Int).SetBytes(raw[:half]), new(big.Int).SetBytes(raw[half:])})
	if err != nil {
		ts.Fatalf("%v", err)
	}
	writeFile(ts, args[1], der)
}

// b64dec B64 FILE: writes the decoded bytes.
func cmdB64Dec(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 2 {
		ts.Fatalf("usage: b64dec BASE64 FILE")
	}
	b, err := base64.StdEncoding.DecodeString(args[0])
	if err != nil {
		ts.Fatalf("%v", err)
	}
	writeFile(ts, args[1], b)
}

func writeFile(ts *testscript.TestScript, name string, b []byte) {
	if err := os.WriteFile(ts.MkAbs(name), b, 0o644); err != nil {
		ts.Fatalf("%v", err)
	}
}

// jsonfind FILE PATH NAME=VALUE...: the array at PATH holds an element
// (an object) whose fields match every NAME=VALUE (values compared as in
// jsonpath). With !, no element matches.
func cmdJSONFind(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) < 3 {
		ts.Fatalf("usage: jsonfind FILE PATH NAME=VALUE...")
	}
	v, ok := lookup(ts, args[0], args[1])
	if !ok {
		ts.Fatalf("%s has nothing at %s", args[0], args[1])
	}
	list, ok := v.([]any)
	if !ok {
		ts.Fatalf("%s %s is %s, not an array", args[0], args[1], render(v))
	}
	matches := func(el any) bool {
		obj, ok := el.(map[string]any)
		if !ok {
			return false
		}
		for _, pair := range args[2:] {
			name, want, _ := strings.Cut(pair, "=")
			if fv, ok := obj[name]; !ok || render(fv) != want {
				return false
			}
		}
		return true
	}
	found := false
	for _, el := range list {
		if matches(el) {
			found = true
			break
		}
	}
	switch {
	case neg && found:
		ts.Fatalf("%s %s holds an element with %s; want none", args[0], args[1], strings.Join(args[2:], " "))
	case !neg && !found:
		ts.Fatalf("%s %s holds no element with %s; it is %s", args[0], args[1], strings.Join(args[2:], " "), render(v))
	}
}

// flipbit VAR: flips one bit in the middle of the base64 value of $VAR and
// stores the result, base64 again, back in $VAR (a tampered signature).
func cmdFlipBit(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 1 {
		ts.Fatalf("usage: flipbit VAR")
	}
	b, err := base64.StdEncoding.DecodeString(ts.Getenv(args[0]))
	if err != nil || len(b) == 0 {
		ts.Fatalf("$%s is not base64: %v", args[0], err)
	}
	b[len(b)/2] ^= 1
	ts.Setenv(args[0], base64.StdEncoding.EncodeToString(b))
}

// der2rs DERFILE RAWFILE SIZE: turns a DER ECDSA signature (as openssl
// writes it) into the raw r‖s form hsmsh takes, each half SIZE bytes.
func cmdDER2RS(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 3 {
		ts.Fatalf("usage: der2rs DERFILE RAWFILE SIZE")
	}
	size, err := strconv.Atoi(args[2])
	if err != nil || size < 1 {
		ts.Fatalf("bad size %q", args[2])
	}
	var sig struct{ R, S *big.Int }
	if rest, err := asn1.Unmarshal([]byte(ts.ReadFile(args[0])), &sig); err != nil || len(rest) != 0 {
		ts.Fatalf("%s is not a DER ECDSA signature: %v", args[0], err)
	}
	raw := make([]byte, 2*size)
	sig.R.FillBytes(raw[:size])
	sig.S.FillBytes(raw[size:])
	writeFile(ts, args[1], raw)
}

// envfile VAR FILE: writes the value of $VAR and a newline to FILE (a
// base64 signature file, as a user would save one).
func cmdEnvFile(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 2 {
		ts.Fatalf("usage: envfile VAR FILE")
	}
	writeFile(ts, args[1], []byte(ts.Getenv(args[0])+"\n"))
}

// truncate FILE SIZE: cuts FILE to SIZE bytes (a store cut short).
func cmdTruncate(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 2 {
		ts.Fatalf("usage: truncate FILE SIZE")
	}
	n, err := strconv.ParseInt(args[1], 10, 64)
	if err != nil || n < 0 {
		ts.Fatalf("bad size %q", args[1])
	}
	if err := os.Truncate(ts.MkAbs(args[0]), n); err != nil {
		ts.Fatalf("%v", err)
	}
}

// jsoncount FILE PATH VALUE N: the object or array at PATH holds exactly
// N values equal to VALUE (compared as in jsonpath), e.g. how many HSMs
// of an hsm-coverage map hold the key.
func cmdJSONCount(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 4 {
		ts.Fatalf("usage: jsoncount FILE PATH VALUE N")
	}
	want, err := strconv.Atoi(args[3])
	if err != nil || want < 0 {
		ts.Fatalf("bad count %q", args[3])
	}
	v, ok := lookup(ts, args[0], args[1])
	if !ok {
		ts.Fatalf("%s has nothing at %s", args[0], args[1])
	}
	var values []any
	switch x := v.(type) {
	case map[string]any:
		for _, el := range x {
			values = append(values, el)
		}
	case []any:
		values = x
	default:
		ts.Fatalf("%s %s is %s, not an object or array", args[0], args[1], render(v))
	}
	n := 0
	for _, el := range values {
		if render(el) == args[2] {
			n++
		}
	}
	if n != want {
		ts.Fatalf("%s %s holds %d values equal to %s; want %d: it is %s", args[0], args[1], n, args[2], want, render(v))
	}
}

// freeport VAR... sets each VAR to a TCP port on 127.0.0.1 that was free
// a moment ago, for the HSM servers a script starts.
func cmdFreePort(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) == 0 {
		ts.Fatalf("usage: freeport VAR...")
	}
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()
	for _, name := range args {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		ts.Check(err)
		lns = append(lns, ln) // held until all are drawn, so they differ
		ts.Setenv(name, strconv.Itoa(ln.Addr().(*net.TCPAddr).Port))
	}
}

// waitport HOST:PORT... waits (up to 20 s) until each address accepts TCP
// connections: a server started in the background is listening. With !,
// it waits until each one refuses them.
func cmdWaitPort(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) == 0 {
		ts.Fatalf("usage: waitport HOST:PORT...")
	}
	for _, addr := range args {
		deadline := time.Now().Add(20 * time.Second)
		for {
			c, err := net.DialTimeout("tcp", addr, time.Second)
			if c != nil {
				c.Close()
			}
			if (err == nil) != neg {
				break
			}
			if time.Now().After(deadline) {
				ts.Fatalf("%s: still %v after 20s", addr, map[bool]string{false: "refusing connections", true: "accepting connections"}[neg])
			}
			time.Sleep(25 * time.Millisecond)
		}
	}
}

// expandenv FILE replaces $VAR and ${VAR} in FILE with the script's
// environment: a config file naming the ports freeport drew.
func cmdExpandEnv(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 1 {
		ts.Fatalf("usage: expandenv FILE")
	}
	p := ts.MkAbs(args[0])
	b, err := os.ReadFile(p)
	ts.Check(err)
	ts.Check(os.WriteFile(p, []byte(os.Expand(string(b), ts.Getenv)), 0o600))
}
