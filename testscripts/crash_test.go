//go:build unix

package testscripts

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// buildHsmsh builds the real hsmsh binary (not the test binary) from the
// module root, once per test that asks.
func buildHsmsh(t *testing.T) string {
	t.Helper()
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go tool to build hsmsh with")
	}
	root := ".."
	if out, err := exec.Command(goTool, "env", "GOMOD").Output(); err == nil {
		if mod := strings.TrimSpace(string(out)); mod != "" && mod != os.DevNull {
			root = filepath.Dir(mod)
		}
	}
	bin := filepath.Join(t.TempDir(), "hsmsh")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, goTool, "build", "-o", bin, "./cmd/hsmsh")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/hsmsh in %s: %v\n%s", root, err, out)
	}
	return bin
}

// isolatedEnv is the environment for hsmsh runs: the caller's, minus any
// HSMSH_ settings, with config and data folders under dir.
func isolatedEnv(dir string, extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "HSMSH_") && !strings.HasPrefix(kv, "XDG_") && !strings.HasPrefix(kv, "HOME=") {
			env = append(env, kv)
		}
	}
	env = append(env,
		"HOME="+dir,
		"XDG_CONFIG_HOME="+filepath.Join(dir, ".config"),
		"XDG_DATA_HOME="+filepath.Join(dir, ".local"),
		"NO_COLOR=1",
	)
	return append(env, extra...)
}

// envelope is one result as hsmsh prints it.
type envelope struct {
	ErrorCode int             `json:"error_code"`
	Data      json.RawMessage `json:"data"`
}

// listedKey is a key of key list --verbose.
type listedKey struct {
	Ref  string `json:"key-reference"`
	Info struct {
		ClusterCoverage string          `json:"cluster-coverage"`
		HSMCoverage     map[string]bool `json:"hsm-coverage"`
	} `json:"key-info"`
	Attrs map[string]any `json:"attributes"`
}

// runHsmsh runs hsmsh to completion in dir ("" for the test's own) with
// env and stdin, and returns what it printed.
func runHsmsh(ctx context.Context, bin, dir string, env []string, stdin string, args ...string) (stdout, stderr string, err error) {
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env, cmd.Dir = env, dir
	cmd.Stdin = strings.NewReader(stdin)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err = cmd.Run()
	return out.String(), errOut.String(), err
}

// keyList is the data of key list.
type keyList struct {
	Keys  []listedKey `json:"matched_keys"`
	Total int         `json:"total_key_count"`
}

// decodeKeyList reads key list's envelope from out, failing the test if it
// is not a successful one.
func decodeKeyList(t *testing.T, what, out string) keyList {
	t.Helper()
	var list envelope
	if err := json.Unmarshal([]byte(out), &list); err != nil || list.ErrorCode != 0 {
		t.Fatalf("%s: %v\n%s", what, err, out)
	}
	var res keyList
	if err := json.Unmarshal(list.Data, &res); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	return res
}

// TestCrashKeepsAcknowledgedKeys kills hsmsh with SIGKILL while it is
// generating keys from a batch on stdin, then checks that every key whose
// result was printed survived on every HSM, and that no key was left half
// written.
func TestCrashKeepsAcknowledgedKeys(t *testing.T) {
	const (
		wantAcks = 50
		hsms     = 3
		deadline = 20 * time.Second // the whole run, after the build
	)
	bin := buildHsmsh(t)
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	env := isolatedEnv(dir)

	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()

	run := func(stdin string, extraEnv []string, args ...string) (string, string, error) {
		return runHsmsh(ctx, bin, "", append(env[:len(env):len(env)], extraEnv...), stdin, args...)
	}

	// A cluster with a crypto user.
	setup := "cluster activate --password adminpass\n" +
		"login --username admin --role admin --password adminpass\n" +
		"user create --username cu1 --role crypto-user --password cu1pass1\n"
	if out, errOut, err := run(setup, nil, "--data-dir", data, "batch", "-"); err != nil {
		t.Fatalf("setup: %v\nstdout:\n%s\nstderr:\n%s", err, out, errOut)
	}

	// The run to kill: commands arrive on a pipe as the test writes them.
	cmd := exec.CommandContext(ctx, bin, "--data-dir", data, "batch", "-")
	cmd.Env = env
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	killed, waited := false, false
	defer func() {
		if !waited {
			cmd.Process.Kill()
			cmd.Wait()
		}
	}()
	go func() {
		// Far more lines than will run; the writes fail once hsmsh is dead.
		if _, err := io.WriteString(stdin, "login --username cu1 --role crypto-user --password cu1pass1\n"); err != nil {
			return
		}
		for i := 1; i <= 100000; i++ {
			if _, err := fmt.Fprintf(stdin, "key generate-symmetric aes --label k%d --key-length-bytes 32\n", i); err != nil {
				return
			}
		}
	}()

	// Read the results as they come. Every complete envelope is an
	// acknowledgement: hsmsh said the key exists.
	acked := map[string]string{} // key-reference -> label
	dec := json.NewDecoder(stdout)
	n := 0
	checkedLock := false
	for {
		var env envelope
		if err := dec.Decode(&env); err != nil {
			break // EOF, or the half envelope hsmsh was printing when killed
		}
		n++
		if env.ErrorCode != 0 {
			t.Fatalf("result %d failed: %s\nstderr:\n%s", n, env.Data, stderr.String())
		}
		if n == 1 {
			continue // the login
		}
		var res struct {
			Key struct {
				Ref   string `json:"key-reference"`
				Attrs struct {
					Label string `json:"label"`
				} `json:"attributes"`
			} `json:"key"`
		}
		if err := json.Unmarshal(env.Data, &res); err != nil || res.Key.Ref == "" {
			t.Fatalf("result %d is not a generated key: %s", n, env.Data)
		}
		acked[res.Key.Ref] = res.Key.Attrs.Label

		// While it runs, the data folder is locked against a second hsmsh,
		// whose message names the folder and the holder's pid.
		if len(acked) == 10 && !checkedLock {
			checkedLock = true
			out, errOut, err := run("", nil, "--data-dir", data, "user", "list")
			want := fmt.Sprintf("hsmsh: data folder %s is in use by process %d (another hsmsh): close it, or use another --data-dir or --ephemeral\n",
				filepath.Join(data, "clusters", "cluster-local"), cmd.Process.Pid)
			if err == nil || errOut != want || out != "" {
				t.Errorf("a second hsmsh on the same data folder: err %v\nstdout %q\nstderr %q\nwant stderr %q", err, out, errOut, want)
			}
		}
		if len(acked) == wantAcks && !killed {
			// Kill a moment later (0 to 20 ms), so that the kill lands at
			// a different point of the next key's writes from run to run.
			killed = true
			delay := time.Duration(rand.IntN(21)) * time.Millisecond
			t.Logf("SIGKILL %v after the %dth acknowledgement", delay, wantAcks)
			time.AfterFunc(delay, func() { cmd.Process.Signal(syscall.SIGKILL) })
			// Keep reading: envelopes printed before the kill are
			// acknowledged too.
		}
	}
	werr := cmd.Wait()
	waited = true
	if ctx.Err() != nil {
		t.Fatalf("timed out after %v with %d keys acknowledged\nstderr:\n%s", deadline, len(acked), stderr.String())
	}
	if !killed {
		t.Fatalf("hsmsh stopped by itself after %d keys (%v)\nstderr:\n%s", len(acked), werr, stderr.String())
	}
	var exitErr *exec.ExitError
	if !errors.As(werr, &exitErr) || exitErr.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("hsmsh ended with %v, not by SIGKILL\nstderr:\n%s", werr, stderr.String())
	}
	t.Logf("%d keys acknowledged before the kill took effect", len(acked))

	// Reopen the same data folder.
	out, errOut, err := run("", []string{"HSMSH_ROLE=crypto-user", "HSMSH_PIN=cu1:cu1pass1"}, "--data-dir", data, "key", "list", "--verbose", "--max-items", "100000")
	if err != nil {
		t.Fatalf("key list after the crash: %v\nstdout:\n%s\nstderr:\n%s", err, out, errOut)
	}
	res := decodeKeyList(t, "key list after the crash", out)
	if res.Total != len(res.Keys) {
		t.Errorf("total_key_count %d, but %d keys listed", res.Total, len(res.Keys))
	}
	listed := map[string]listedKey{}
	labelRE := regexp.MustCompile(`^k[0-9]+$`)
	kcvRE := regexp.MustCompile(`^0x[0-9a-f]{6}$`)
	for _, k := range res.Keys {
		listed[k.Ref] = k
		// Acknowledged or not, a key that is there is whole.
		if l, _ := k.Attrs["label"].(string); !labelRE.MatchString(l) {
			t.Errorf("key %s: label %v, want kN", k.Ref, k.Attrs["label"])
		}
		if k.Attrs["key-type"] != "aes" || k.Attrs["class"] != "secret-key" || k.Attrs["token"] != true {
			t.Errorf("key %s: key-type %v class %v token %v, want aes secret-key true", k.Ref, k.Attrs["key-type"], k.Attrs["class"], k.Attrs["token"])
		}
		if k.Attrs["key-length-bytes"] != float64(32) {
			t.Errorf("key %s: key-length-bytes %v, want 32", k.Ref, k.Attrs["key-length-bytes"])
		}
		if kcv, _ := k.Attrs["check-value"].(string); !kcvRE.MatchString(kcv) {
			t.Errorf("key %s: check-value %v, want 0x and 6 hex digits", k.Ref, k.Attrs["check-value"])
		}
	}
	for ref, label := range acked {
		k, ok := listed[ref]
		if !ok {
			t.Errorf("acknowledged key %s (%s) is gone after the crash", ref, label)
			continue
		}
		if got := k.Attrs["label"]; got != label {
			t.Errorf("key %s: label %v after the crash, %s when acknowledged", ref, got, label)
		}
		if k.Info.ClusterCoverage != "full" {
			t.Errorf("acknowledged key %s (%s): cluster-coverage %q, want full", ref, label, k.Info.ClusterCoverage)
		}
		for i := 1; i <= hsms; i++ {
			if id := "hsm-" + strconv.Itoa(i); !k.Info.HSMCoverage[id] {
				t.Errorf("acknowledged key %s (%s) is missing on %s: hsm-coverage %v", ref, label, id, k.Info.HSMCoverage)
			}
		}
	}
	t.Logf("%d keys listed after the crash", len(res.Keys))
}
