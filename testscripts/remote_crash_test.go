//go:build unix

package testscripts

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hsmsh/hsmsh/internal/syncbuf"
)

// lockedBuffer collects a process's stderr while the test reads it.
type lockedBuffer = syncbuf.Buffer

// freePorts returns n loopback addresses that were free a moment ago.
func freePorts(t *testing.T, n int) []string {
	t.Helper()
	var addrs []string
	var lns []net.Listener
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln) // held until all are drawn, so they differ
		addrs = append(addrs, ln.Addr().String())
	}
	for _, ln := range lns {
		ln.Close()
	}
	return addrs
}

// TestServerKilledKeepsAcknowledgedKeys runs a 3-server remote cluster of
// real hsmsh serve processes, kills one server with SIGKILL while a client
// is making keys that must reach all three (create_object_minimum_nodes =
// 3), restarts it, and checks that every key the client acknowledged is
// on the killed server's disk — with server-side sync far too slow (24h)
// to have put it there. The servers are then stopped with SIGTERM and must
// exit cleanly, saying so.
func TestServerKilledKeepsAcknowledgedKeys(t *testing.T) {
	const wantAcks = 30
	bin := buildHsmsh(t)
	dir := t.TempDir()
	env := isolatedEnv(dir, "HSMSH_DATA_DIR="+filepath.Join(dir, "data"))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	run := func(stdin string, extraEnv []string, args ...string) (string, string, error) {
		return runHsmsh(ctx, bin, dir, append(env[:len(env):len(env)], extraEnv...), stdin, args...)
	}
	if out, errOut, err := run("", nil, "pki", "init", "--dir", "pki"); err != nil {
		t.Fatalf("pki init: %v\n%s%s", err, out, errOut)
	}
	addrs := freePorts(t, 3)
	cfg := "[cluster]\nmode = \"remote\"\n"
	for i, a := range addrs {
		cfg += fmt.Sprintf("[[cluster.servers]]\nid = \"hsm-%d\"\naddress = %q\n", i+1, a)
	}
	cfg += "[durability]\ncreate_object_minimum_nodes = 3\nserver_sync_interval = \"24h\"\n[tls]\npki_dir = \"pki\"\n"
	cfgPath := filepath.Join(dir, "hsmsh.toml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	env = append(env, "HSMSH_CONFIG="+cfgPath)

	type server struct {
		cmd *exec.Cmd
		log *lockedBuffer
	}
	servers := make([]*server, 3)
	start := func(i int) {
		s := &server{log: &lockedBuffer{}}
		s.cmd = exec.CommandContext(ctx, bin, "serve", "--config", cfgPath, "--id", fmt.Sprintf("hsm-%d", i+1))
		s.cmd.Env, s.cmd.Dir, s.cmd.Stderr = env, dir, s.log
		if err := s.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		servers[i] = s
		for {
			c, err := net.DialTimeout("tcp", addrs[i], time.Second)
			if err == nil {
				c.Close()
				return
			}
			if ctx.Err() != nil {
				t.Fatalf("hsm-%d never listened:\n%s", i+1, s.log)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	defer func() {
		for _, s := range servers {
			if s != nil && s.cmd.ProcessState == nil {
				s.cmd.Process.Kill()
				s.cmd.Wait()
			}
		}
	}()
	for i := range 3 {
		start(i)
	}

	setup := "cluster activate --password adminpass\n" +
		"login --username admin --role admin --password adminpass\n" +
		"user create --username cu1 --role crypto-user --password cu1pass1\n"
	if out, errOut, err := run(setup, nil, "batch", "-"); err != nil {
		t.Fatalf("setup: %v\nstdout:\n%s\nstderr:\n%s", err, out, errOut)
	}

	// The client makes keys from a pipe; each printed result is an
	// acknowledgement that the key is on all three servers' disks.
	cmd := exec.CommandContext(ctx, bin, "batch", "-")
	cmd.Env, cmd.Dir = env, dir
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr lockedBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		defer stdin.Close()
		if _, err := io.WriteString(stdin, "login --username cu1 --role crypto-user --password cu1pass1\n"); err != nil {
			return
		}
		for i := 1; i <= 100000; i++ {
			if _, err := fmt.Fprintf(stdin, "key generate-symmetric aes --label k%d --key-length-bytes 32\n", i); err != nil {
				return
			}
		}
	}()
	acked := map[string]bool{}
	killed, failed := false, 0
	dec := json.NewDecoder(stdout)
	for n := 0; ; n++ {
		var env envelope
		if err := dec.Decode(&env); err != nil {
			break
		}
		if n == 0 {
			continue // the login
		}
		if env.ErrorCode != 0 {
			// Once hsm-2 is gone, a key can no longer reach 3 HSMs, and
			// the batch stops at the first failure.
			if !killed {
				t.Fatalf("result %d failed before the kill: %s", n, env.Data)
			}
			failed++
			continue
		}
		var res struct {
			Key struct {
				Ref string `json:"key-reference"`
			} `json:"key"`
		}
		if err := json.Unmarshal(env.Data, &res); err != nil || res.Key.Ref == "" {
			t.Fatalf("result %d is not a key: %s", n, env.Data)
		}
		acked[res.Key.Ref] = true
		if len(acked) == wantAcks && !killed {
			killed = true
			delay := time.Duration(rand.IntN(11)) * time.Millisecond
			t.Logf("SIGKILL hsm-2 %v after the %dth acknowledgement", delay, wantAcks)
			time.AfterFunc(delay, func() { servers[1].cmd.Process.Signal(syscall.SIGKILL) })
		}
	}
	cmd.Wait()
	werr := servers[1].cmd.Wait()
	var exitErr *exec.ExitError
	if !errors.As(werr, &exitErr) || exitErr.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("hsm-2 ended with %v, not by SIGKILL", werr)
	}
	if failed == 0 {
		t.Fatalf("no key failed after the kill: the client never noticed hsm-2 was gone\nstderr:\n%s", stderr.String())
	}
	t.Logf("%d keys acknowledged; the client then failed as it must: %s", len(acked), strings.TrimSpace(stderr.String()))

	start(1)
	out, errOut, err := run("", []string{"HSMSH_ROLE=crypto-user", "HSMSH_PIN=cu1:cu1pass1"}, "key", "list", "--verbose", "--max-items", "100000")
	if err != nil {
		t.Fatalf("key list after the restart: %v\n%s\n%s", err, out, errOut)
	}
	res := decodeKeyList(t, "key list after the restart", out)
	onHSM2 := map[string]bool{}
	for _, k := range res.Keys {
		onHSM2[k.Ref] = k.Info.HSMCoverage["hsm-2"]
	}
	for ref := range acked {
		if !onHSM2[ref] {
			t.Errorf("acknowledged key %s is not on hsm-2 after its SIGKILL and restart", ref)
		}
	}

	// SIGTERM: each server finishes, closes its store, says so, exits 0.
	for i, s := range servers {
		s.cmd.Process.Signal(syscall.SIGTERM)
		if err := s.cmd.Wait(); err != nil {
			t.Errorf("hsm-%d after SIGTERM: %v\n%s", i+1, err, s.log)
		}
		if !strings.Contains(s.log.String(), fmt.Sprintf("msg=stopped hsm=hsm-%d", i+1)) {
			t.Errorf("hsm-%d did not log its stop:\n%s", i+1, s.log)
		}
	}
}
