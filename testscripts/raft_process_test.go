//go:build unix

package testscripts

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// These tests run the domain state's raft group as it runs in production:
// three real hsmsh serve processes, each one HSM, with the raft RPCs
// travelling between them as signed peer calls. Server-side sync is set
// to 24h, far too slow to carry a user or a failed-login count anywhere
// during a test: whatever the HSMs agree on, raft put there.

// raftProc is one hsmsh serve process.
type raftProc struct {
	cmd  *exec.Cmd
	log  *lockedBuffer
	done chan struct{}
	err  error // cmd.Wait's, once done is closed
}

// raftCluster is three hsmsh serve processes and the client configs that
// reach them: cfg lists all three, one[i] lists only hsm-(i+1), so that a
// client run with it talks to that HSM alone.
type raftCluster struct {
	t     *testing.T
	ctx   context.Context
	bin   string
	dir   string
	env   []string // without HSMSH_CONFIG
	addrs []string
	cfg   string
	one   []string
	procs []*raftProc
}

// raftHSM is one HSM as cluster hsm-info prints it.
type raftHSM struct {
	ID    string `json:"id"`
	State string `json:"state"`
	Raft  *struct {
		Role         string `json:"role"`
		Leader       string `json:"leader"`
		Term         uint64 `json:"term"`
		CommitIndex  uint64 `json:"commit-index"`
		AppliedIndex uint64 `json:"applied-index"`
		LastContact  string `json:"last-contact"`
		Voters       int    `json:"voters"`
	} `json:"raft"`
}

const raftAdminPIN = "admin:adminpass"

// newRaftCluster builds hsmsh, makes a PKI, starts three servers with
// durability as the config's [durability] lines, and activates the
// cluster. Everything the test does must end within timeout.
func newRaftCluster(t *testing.T, timeout time.Duration, durability string) *raftCluster {
	t.Helper()
	bin := buildHsmsh(t)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	t.Cleanup(cancel)
	dir := t.TempDir()
	c := &raftCluster{t: t, ctx: ctx, bin: bin, dir: dir,
		env: isolatedEnv(dir, "HSMSH_DATA_DIR="+filepath.Join(dir, "data"))}
	if out, errOut, err := runHsmsh(ctx, bin, dir, c.env, "", "pki", "init", "--dir", "pki"); err != nil {
		t.Fatalf("pki init: %v\n%s%s", err, out, errOut)
	}
	c.addrs = freePorts(t, 3)
	tail := "[durability]\nserver_sync_interval = \"24h\"\n" + durability + "[tls]\npki_dir = \"pki\"\n"
	write := func(name string, ids ...int) string {
		cfg := "[cluster]\nmode = \"remote\"\n"
		for _, i := range ids {
			cfg += fmt.Sprintf("[[cluster.servers]]\nid = \"hsm-%d\"\naddress = %q\n", i+1, c.addrs[i])
		}
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(cfg+tail), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	c.cfg = write("hsmsh.toml", 0, 1, 2)
	for i := range 3 {
		c.one = append(c.one, write(fmt.Sprintf("hsm-%d.toml", i+1), i))
	}
	c.procs = make([]*raftProc, 3)
	t.Cleanup(func() {
		for _, p := range c.procs {
			if p != nil && !p.exited() {
				p.cmd.Process.Kill()
				<-p.done
			}
		}
	})
	for i := range 3 {
		c.start(i)
	}
	c.mustOK(c.cfg, nil, "cluster activate", "cluster", "activate", "--password", "adminpass")
	return c
}

func (p *raftProc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// start starts hsm-(i+1) and waits until it listens.
func (c *raftCluster) start(i int) {
	c.t.Helper()
	p := &raftProc{log: &lockedBuffer{}, done: make(chan struct{})}
	p.cmd = exec.CommandContext(c.ctx, c.bin, "serve", "--config", c.cfg, "--id", fmt.Sprintf("hsm-%d", i+1))
	p.cmd.Env, p.cmd.Dir, p.cmd.Stderr = c.env, c.dir, p.log
	if err := p.cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	c.procs[i] = p
	for {
		conn, err := net.DialTimeout("tcp", c.addrs[i], time.Second)
		if err == nil {
			conn.Close()
			return
		}
		if p.exited() || c.ctx.Err() != nil {
			c.t.Fatalf("hsm-%d never listened (%v):\n%s", i+1, p.err, p.log)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// kill sends SIGKILL to hsm-(i+1) and waits until it is gone.
func (c *raftCluster) kill(i int) {
	c.t.Helper()
	p := c.procs[i]
	p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
	var exitErr *exec.ExitError
	if !errors.As(p.err, &exitErr) || exitErr.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		c.t.Fatalf("hsm-%d ended with %v, not by SIGKILL\n%s", i+1, p.err, p.log)
	}
}

// run runs one hsmsh command with the client config cfg; pin, if not "",
// logs in from HSMSH_ROLE/HSMSH_PIN first (role is the PIN's user's).
// It returns the last result printed, and the process's error.
func (c *raftCluster) run(cfg, role, pin string, args ...string) (envelope, string, error) {
	env := append(c.env[:len(c.env):len(c.env)], "HSMSH_CONFIG="+cfg)
	if pin != "" {
		env = append(env, "HSMSH_ROLE="+role, "HSMSH_PIN="+pin)
	}
	out, errOut, err := runHsmsh(c.ctx, c.bin, c.dir, env, "", args...)
	var last envelope
	dec := json.NewDecoder(strings.NewReader(out))
	for {
		var e envelope
		if dec.Decode(&e) != nil {
			break
		}
		last = e
	}
	return last, out + errOut, err
}

// mustOK runs a command that must succeed, and returns its data.
func (c *raftCluster) mustOK(cfg string, pin []string, what string, args ...string) json.RawMessage {
	c.t.Helper()
	role, p := "", ""
	if pin != nil {
		role, p = pin[0], pin[1]
	}
	res, out, err := c.run(cfg, role, p, args...)
	if err != nil || res.ErrorCode != 0 {
		c.t.Fatalf("%s: %v\n%s", what, err, out)
	}
	return res.Data
}

// hsmInfo is cluster hsm-info through cfg.
func (c *raftCluster) hsmInfo(cfg string) ([]raftHSM, error) {
	res, out, err := c.run(cfg, "", "", "cluster", "hsm-info")
	if err != nil || res.ErrorCode != 0 {
		return nil, fmt.Errorf("cluster hsm-info: %v\n%s", err, out)
	}
	var data struct {
		HSMs []raftHSM `json:"hsms"`
	}
	if err := json.Unmarshal(res.Data, &data); err != nil {
		return nil, fmt.Errorf("cluster hsm-info: %v\n%s", err, out)
	}
	return data.HSMs, nil
}

// users lists the users as the HSMs cfg names see them (one HSM, with a
// one-server config).
func (c *raftCluster) users(cfg string) (map[string]bool, error) {
	res, out, err := c.run(cfg, "", "", "user", "list")
	if err != nil || res.ErrorCode != 0 {
		return nil, fmt.Errorf("user list: %v\n%s", err, out)
	}
	var data struct {
		Users []struct {
			Username string `json:"username"`
		} `json:"users"`
	}
	if err := json.Unmarshal(res.Data, &data); err != nil {
		return nil, fmt.Errorf("user list: %v\n%s", err, out)
	}
	set := map[string]bool{}
	for _, u := range data.Users {
		set[u.Username] = true
	}
	return set, nil
}

// waitLeader polls cluster hsm-info until every HSM that is up agrees on
// one leader, itself up, that is not among exclude; it returns that
// leader and what hsm-info said. A failure names the last answer.
func (c *raftCluster) waitLeader(deadline time.Duration, exclude ...string) (string, []raftHSM) {
	c.t.Helper()
	end := time.Now().Add(deadline)
	var last []raftHSM
	var lastErr error
	for time.Now().Before(end) && c.ctx.Err() == nil {
		hsms, err := c.hsmInfo(c.cfg)
		lastErr = err
		if err == nil {
			last = hsms
			if l := agreedLeader(hsms); l != "" && !slices.Contains(exclude, l) {
				return l, hsms
			}
		}
		time.Sleep(25 * time.Millisecond)
	}
	b, _ := json.MarshalIndent(last, "", "  ")
	c.t.Fatalf("no leader (other than %v) that every HSM up agrees on within %v; last hsm-info: %s (%v)", exclude, deadline, b, lastErr)
	return "", nil
}

// agreedLeader is the leader every active HSM names, if they name the
// same one, it is active, and it says it leads; "" otherwise.
func agreedLeader(hsms []raftHSM) string {
	leader := ""
	up := map[string]bool{}
	for _, h := range hsms {
		if h.State != "active" {
			continue
		}
		if h.Raft == nil || h.Raft.Leader == "" || (leader != "" && h.Raft.Leader != leader) {
			return ""
		}
		leader = h.Raft.Leader
		up[h.ID] = true
	}
	if !up[leader] {
		return ""
	}
	for _, h := range hsms {
		if h.ID == leader && h.Raft.Role != "leader" {
			return ""
		}
	}
	return leader
}

// serverEvents is a server's log without its client connects and
// disconnects.
func serverEvents(log string) string {
	var keep []string
	for _, l := range strings.Split(log, "\n") {
		if !strings.Contains(l, `msg="client connected" from=`) && !strings.Contains(l, `msg="client disconnected"`) {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, "\n")
}

// TestRaftLeaderKilledMidBurstOfUserChanges kills the raft leader's
// process with SIGKILL in the middle of a burst of user create commands
// (each its own client process, three at a time), keeps the burst going,
// and checks that the other two elect a new leader and go on creating
// users; that the killed HSM, restarted, catches up (its applied index
// reaches the others'); and that then every acknowledged user is on every
// HSM, each asked alone, and no user is on some HSMs but not others.
func TestRaftLeaderKilledMidBurstOfUserChanges(t *testing.T) {
	const (
		total     = 30
		workers   = 3
		killAfter = 10 // acknowledgements
	)
	c := newRaftCluster(t, 100*time.Second, "")
	oldLeader, info := c.waitLeader(10 * time.Second)
	oldTerm := uint64(0)
	for _, h := range info {
		if h.Raft != nil {
			oldTerm = max(oldTerm, h.Raft.Term)
		}
	}
	li, _ := strconv.Atoi(strings.TrimPrefix(oldLeader, "hsm-"))
	li--
	if li < 0 || li > 2 {
		t.Fatalf("leader %q is none of hsm-1..3", oldLeader)
	}
	t.Logf("leader before the burst: %s (term %d)", oldLeader, oldTerm)

	type outcome struct {
		name          string
		acked         bool
		start, finish time.Time
		out           string
	}
	var (
		mu       sync.Mutex
		outcomes []outcome
		acks     int
		killNow  = make(chan struct{})
		killOnce sync.Once
		jobs     = make(chan string)
		wg       sync.WaitGroup
	)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for name := range jobs {
				o := outcome{name: name, start: time.Now()}
				res, out, err := c.run(c.cfg, "admin", raftAdminPIN,
					"user", "create", "--username", name, "--role", "crypto-user", "--password", name+"-password")
				o.finish, o.out = time.Now(), out
				o.acked = err == nil && res.ErrorCode == 0
				mu.Lock()
				outcomes = append(outcomes, o)
				if o.acked {
					acks++
					if acks == killAfter {
						killOnce.Do(func() { close(killNow) })
					}
				}
				mu.Unlock()
			}
		}()
	}
	go func() {
		defer close(jobs)
		for i := 1; i <= total; i++ {
			select {
			case jobs <- fmt.Sprintf("burst%02d", i):
			case <-c.ctx.Done():
				return
			}
		}
	}()

	select {
	case <-killNow:
	case <-c.ctx.Done():
		wg.Wait()
		t.Fatalf("fewer than %d of %d creates acknowledged before the kill: %+v", killAfter, total, outcomes)
	}
	time.Sleep(time.Duration(rand.IntN(15)) * time.Millisecond) // land inside a create
	killedAt := time.Now()
	c.kill(li)
	t.Logf("SIGKILL %s (the leader) after %d acknowledged creates", oldLeader, killAfter)

	newLeader, info := c.waitLeader(15*time.Second, oldLeader)
	electedIn := time.Since(killedAt)
	seenAt := time.Now()
	newTerm := uint64(0)
	for _, h := range info {
		if h.Raft != nil {
			newTerm = max(newTerm, h.Raft.Term)
		}
	}
	t.Logf("new leader %s (term %d) seen by both survivors %v after the kill of %s", newLeader, newTerm, electedIn.Round(time.Millisecond), oldLeader)
	if newTerm <= oldTerm {
		t.Errorf("the new leader's term %d is not past the old one's %d", newTerm, oldTerm)
	}
	wg.Wait()

	acked := map[string]bool{}
	var failed []string
	afterKill := 0
	for _, o := range outcomes {
		if o.acked {
			acked[o.name] = true
			if o.start.After(killedAt) {
				afterKill++
			}
			continue
		}
		failed = append(failed, o.name)
		t.Logf("%s not acknowledged (started %v after the kill): %s", o.name, o.start.Sub(killedAt).Round(time.Millisecond), strings.TrimSpace(o.out))
		// Two of three HSMs are a majority: once both follow the new
		// leader, a user change must go through.
		if o.start.After(seenAt) {
			t.Errorf("%s failed though it started %v after the new leader %s was elected: %s",
				o.name, o.start.Sub(seenAt).Round(time.Millisecond), newLeader, strings.TrimSpace(o.out))
		}
	}
	if len(outcomes) != total {
		t.Fatalf("%d of %d creates ran", len(outcomes), total)
	}
	if afterKill == 0 {
		t.Errorf("no create started after the kill was acknowledged: the two survivors never took a user change")
	}
	sort.Strings(failed)
	t.Logf("%d of %d creates acknowledged (%d started after the kill); not acknowledged: %v", len(acked), total, afterKill, failed)

	// The killed HSM comes back and catches up: every HSM follows one
	// leader and has applied as far as the leader has committed.
	c.start(li)
	restarted := time.Now()
	end := restarted.Add(20 * time.Second)
	var last []raftHSM
	for {
		hsms, err := c.hsmInfo(c.cfg)
		if err == nil {
			last = hsms
			if l := agreedLeader(hsms); l != "" && len(hsms) == 3 {
				var commit uint64
				for _, h := range hsms {
					if h.ID == l {
						commit = h.Raft.CommitIndex
					}
				}
				caught := true
				for _, h := range hsms {
					caught = caught && h.State == "active" && h.Raft.AppliedIndex >= commit && h.Raft.AppliedIndex == hsms[0].Raft.AppliedIndex
				}
				if caught {
					t.Logf("%s restarted; %v later all three had applied up to index %d (leader %s)", oldLeader, time.Since(restarted).Round(time.Millisecond), commit, l)
					break
				}
			}
		}
		if time.Now().After(end) || c.ctx.Err() != nil {
			b, _ := json.MarshalIndent(last, "", "  ")
			t.Fatalf("%s, restarted, did not catch up within 20s: last hsm-info %s (%v)\n%s log:\n%s", oldLeader, b, err, oldLeader, c.procs[li].log)
		}
		time.Sleep(50 * time.Millisecond)
	}

	on := make([]map[string]bool, 3)
	for i := range 3 {
		u, err := c.users(c.one[i])
		if err != nil {
			t.Fatalf("hsm-%d alone: %v", i+1, err)
		}
		on[i] = u
	}
	all := map[string]bool{}
	for i := range 3 {
		for name := range on[i] {
			all[name] = true
		}
	}
	for name := range acked {
		for i := range 3 {
			if !on[i][name] {
				t.Errorf("acknowledged user %s is not on hsm-%d", name, i+1)
			}
		}
	}
	for name := range all {
		var where []string
		for i := range 3 {
			if on[i][name] {
				where = append(where, fmt.Sprintf("hsm-%d", i+1))
			}
		}
		if len(where) != 3 {
			t.Errorf("user %s is on %v only: half applied", name, where)
		}
	}
	for _, name := range failed {
		if all[name] {
			t.Logf("%s was not acknowledged but was committed (on all three): allowed", name)
		}
	}
}

// TestRaftLockoutExactOverProcesses makes five wrong-password logins for
// one crypto user, spread over the three HSMs (each reached alone), and
// checks that each HSM counts the failures the others recorded, that the
// fifth locks the user, and that then the right password is refused as
// locked on every HSM. Server-side sync (24h) cannot carry a count.
func TestRaftLockoutExactOverProcesses(t *testing.T) {
	c := newRaftCluster(t, 60*time.Second, "")
	c.mustOK(c.cfg, []string{"admin", raftAdminPIN}, "user create",
		"user", "create", "--username", "cu1", "--role", "crypto-user", "--password", "cu1password")

	left := regexp.MustCompile(`\((\d+) of 5 attempts left`)
	for k, i := range []int{0, 1, 2, 0, 1} {
		res, out, err := c.run(c.one[i], "crypto-user", "cu1:wrong-password", "user", "list")
		if err == nil || res.ErrorCode == 0 {
			t.Fatalf("wrong password %d on hsm-%d was not refused:\n%s", k+1, i+1, out)
		}
		var msg string
		json.Unmarshal(res.Data, &msg)
		if k < 4 {
			m := left.FindStringSubmatch(msg)
			if m == nil {
				t.Fatalf("wrong password %d on hsm-%d: no count of attempts left in %q", k+1, i+1, msg)
			}
			if n, _ := strconv.Atoi(m[1]); n != 4-k {
				t.Errorf("wrong password %d on hsm-%d: %d attempts left, want %d (the failures on the other HSMs were not counted): %q", k+1, i+1, n, 4-k, msg)
			}
		} else if !strings.Contains(msg, "locked") {
			t.Errorf("fifth wrong password on hsm-%d did not lock the user: %q", i+1, msg)
		}
		t.Logf("wrong password %d on hsm-%d: %s", k+1, i+1, msg)
	}
	for i := range 3 {
		res, out, err := c.run(c.one[i], "crypto-user", "cu1:cu1password", "user", "list")
		if err == nil || res.ErrorCode == 0 {
			t.Errorf("hsm-%d let the locked user in with the right password:\n%s", i+1, out)
			continue
		}
		var msg string
		json.Unmarshal(res.Data, &msg)
		if !strings.Contains(msg, "locked") {
			t.Errorf("hsm-%d refused the right password, but not as locked: %q", i+1, msg)
		}
	}
}

// TestRaftNoMajorityOverProcesses kills two of the three servers and
// checks what the last one, hsm-3, still does alone: a change to the
// domain state (user create) is refused, naming the one HSM of three it
// reaches; a correct login works, and a key made before the kills (on
// hsm-3, with create_object_minimum_nodes = 1 and key_availability_check
// = false) still signs; a wrong password, which cannot be recorded, is
// refused as such, and from then on hsm-3 answers no attempt for that
// user, not even the right password (it is no oracle for guesses). Once
// one server is back, the unrecorded guess is counted, the right
// password works again, and the refused user is on no HSM.
func TestRaftNoMajorityOverProcesses(t *testing.T) {
	// Keys are outside raft: with the SDK 5 availability check off, a key
	// on one HSM is usable there alone.
	c := newRaftCluster(t, 90*time.Second, "create_object_minimum_nodes = 1\nkey_availability_check = false\n")
	c.mustOK(c.cfg, []string{"admin", raftAdminPIN}, "user create",
		"user", "create", "--username", "cu1", "--role", "crypto-user", "--password", "cu1password")
	cu1 := []string{"crypto-user", "cu1:cu1password"}
	// The key is made through hsm-3 alone, so it is on hsm-3.
	c.mustOK(c.one[2], cu1, "key generate-asymmetric-pair",
		"key", "generate-asymmetric-pair", "ec", "--curve", "secp256r1",
		"--public-label", "ec-public", "--private-label", "ec-private",
		"--public-attributes", "verify=true", "--private-attributes", "sign=true")
	sign := []string{"crypto", "sign", "ecdsa", "--key-filter", "attr.label=ec-private", "--hash-function", "sha256", "--data", "YWJjMTIz"}
	c.mustOK(c.one[2], cu1, "crypto sign before the kills", sign...)

	killedAt := time.Now()
	c.kill(0)
	c.kill(1)

	message := func(res envelope) string {
		var msg string
		json.Unmarshal(res.Data, &msg)
		return msg
	}
	res, out, err := c.run(c.one[2], "admin", raftAdminPIN,
		"user", "create", "--username", "cu2", "--role", "crypto-user", "--password", "cu2password")
	if err == nil || res.ErrorCode == 0 {
		t.Errorf("user create with 1 of 3 HSMs up succeeded:\n%s", out)
	} else if !strings.Contains(message(res), "only 1 of 3 HSMs reachable") {
		t.Errorf("user create with 1 of 3 HSMs up: want \"only 1 of 3 HSMs reachable\", got:\n%s", out)
	}

	data := c.mustOK(c.one[2], cu1, "crypto sign with hsm-3 alone up", sign...)
	var sig struct {
		Signature string `json:"signature"`
	}
	if err := json.Unmarshal(data, &sig); err != nil || sig.Signature == "" {
		t.Errorf("crypto sign with hsm-3 alone up gave no signature: %s", data)
	}

	res, out, err = c.run(c.one[2], "crypto-user", "cu1:wrong-password", "user", "list")
	if err == nil || res.ErrorCode == 0 {
		t.Errorf("a wrong password with 1 of 3 HSMs up was let in:\n%s", out)
	} else if !strings.Contains(message(res), "cannot record this attempt") {
		t.Errorf("a wrong password with 1 of 3 HSMs up: want \"cannot record this attempt\", got:\n%s", out)
	}
	// The unrecorded guess holds every further attempt back, the right
	// password too: otherwise hsm-3 would tell right from wrong without
	// counting.
	res, out, err = c.run(c.one[2], cu1[0], cu1[1], "user", "list")
	if err == nil || res.ErrorCode == 0 {
		t.Errorf("after an unrecorded wrong password, hsm-3 alone let the right one in (an oracle for guesses):\n%s", out)
	} else if !strings.Contains(message(res), "not recorded yet") {
		t.Errorf("after an unrecorded wrong password, the right one: want \"not recorded yet\", got:\n%s", out)
	}

	// A majority again: the held-back guess is counted before the next
	// attempt is answered. Once hsm-info shows hsm-1 and hsm-3 following
	// one leader, hsm-3 must be able to record an attempt.
	t.Logf("killed at %s", killedAt.Format("15:04:05.000"))
	c.start(0)
	restarted := time.Now()
	leader, _ := c.waitLeader(15 * time.Second)
	agreed := time.Now()
	t.Logf("hsm-1 restarted at %s; hsm-1 and hsm-3 follow %s from %v after", restarted.Format("15:04:05.000"), leader, agreed.Sub(restarted).Round(time.Millisecond))
	for try := 1; ; try++ {
		start := time.Now()
		res, out, _ = c.run(c.one[2], "crypto-user", "cu1:wrong-password", "user", "list")
		msg := message(res)
		if !strings.Contains(msg, "cannot record this attempt") {
			if !strings.Contains(msg, "(3 of 5 attempts left") {
				t.Errorf("a wrong password once the majority is back: want \"3 of 5 attempts left\" (the unrecorded one counted, then this one), got:\n%s", out)
			}
			break
		}
		if try == 1 {
			t.Errorf("hsm-3 could not record a login attempt (%v, answered in %v) after hsm-1 and hsm-3 agreed on leader %s (hsm-1 restarted at %s): %q\nhsm-3 log:\n%s\nhsm-1 log:\n%s",
				start.Sub(agreed).Round(time.Millisecond), time.Since(start).Round(time.Millisecond), leader, restarted.Format("15:04:05.000"), msg,
				serverEvents(c.procs[2].log.String()), serverEvents(c.procs[0].log.String()))
		}
		if time.Since(agreed) > 15*time.Second {
			t.Fatalf("hsm-3 still cannot record a login attempt %v after the majority is back: %s", time.Since(agreed).Round(time.Millisecond), out)
		}
		time.Sleep(100 * time.Millisecond)
	}
	c.mustOK(c.one[2], cu1, "the right password once the majority is back", "user", "list")
	for _, i := range []int{0, 2} {
		users, err := c.users(c.one[i])
		if err != nil {
			t.Fatal(err)
		}
		if !users["cu1"] {
			t.Errorf("hsm-%d does not list cu1: %v", i+1, users)
		}
		if users["cu2"] {
			t.Errorf("hsm-%d lists cu2, whose creation was refused", i+1)
		}
	}
}

// TestRaftTokenReplayOverProcesses spends a quorum token over real
// processes and replays it: three admins register approver keys (made
// and used with hsmsh quorum keygen and quorum approve), the user
// service's quorum value is raised to 2 (with the quorum service's
// approval), a user-service token approved by admin2 and admin3 deletes
// one user through hsm-1 alone, and the same token file is then offered
// at once through hsm-2 alone and hsm-3 alone to delete another. Both
// replays must be refused as already used: the token's use is a committed
// entry of the domain state, which server-side sync (24h) cannot carry.
// Each HSM, asked alone, must show the one deletion and not the other.
func TestRaftTokenReplayOverProcesses(t *testing.T) {
	c := newRaftCluster(t, 90*time.Second, "")
	file := func(name string) string { return filepath.Join(c.dir, name) }
	pins := map[string][]string{
		"admin":  {"admin", raftAdminPIN},
		"admin2": {"admin", "admin2:admin2pass"},
		"admin3": {"admin", "admin3:admin3pass"},
	}
	admin := pins["admin"]
	for _, u := range []struct{ name, role string }{
		{"admin2", "admin"}, {"admin3", "admin"}, {"victim", "crypto-user"}, {"victim2", "crypto-user"},
	} {
		c.mustOK(c.cfg, admin, "user create "+u.name,
			"user", "create", "--username", u.name, "--role", u.role, "--password", u.name+"pass")
	}

	// Each admin makes a key pair offline, signs a registration token of
	// its own with it, and registers the public key.
	approvers := []string{"admin", "admin2", "admin3"}
	for _, name := range approvers {
		c.mustOK(c.cfg, nil, "quorum keygen for "+name,
			"quorum", "keygen", "--private-key", file(name+".key"), "--public-key", file(name+".pub"))
		reg := file("reg-" + name + ".json")
		c.mustOK(c.cfg, pins[name], "registration token for "+name,
			"quorum", "token-sign", "generate", "--service", "registration", "--token", reg)
		c.mustOK(c.cfg, nil, name+" signs its registration token",
			"quorum", "approve", "--token", reg, "--key", file(name+".key"), "--username", name)
		c.mustOK(c.cfg, pins[name], "register "+name+"'s key",
			"user", "change-quorum", "token-sign", "register", "--public-key", file(name+".pub"), "--signed-token", reg)
	}
	approve := func(token string) {
		t.Helper()
		for _, name := range []string{"admin2", "admin3"} {
			c.mustOK(c.cfg, nil, name+" approves "+filepath.Base(token),
				"quorum", "approve", "--token", token, "--key", file(name+".key"), "--username", name)
		}
	}

	// M = 2 for the quorum service (allowed while it is off), then for the
	// user service, with the quorum service's approval.
	c.mustOK(c.cfg, admin, "set-quorum-value quorum 2",
		"quorum", "token-sign", "set-quorum-value", "--service", "quorum", "--value", "2")
	q := file("q.json")
	c.mustOK(c.cfg, admin, "quorum-service token",
		"quorum", "token-sign", "generate", "--service", "quorum", "--token", q)
	approve(q)
	c.mustOK(c.cfg, admin, "set-quorum-value user 2",
		"quorum", "token-sign", "set-quorum-value", "--service", "user", "--value", "2", "--approval", q)

	message := func(res envelope) string {
		var msg string
		json.Unmarshal(res.Data, &msg)
		return msg
	}
	// Without approval a user change is now refused (the quorum is in
	// force on the HSM the replays will be offered to).
	res, out, err := c.run(c.one[1], admin[0], admin[1], "user", "delete", "--username", "victim2", "--role", "crypto-user")
	if err == nil || res.ErrorCode == 0 || !strings.Contains(message(res), "Quorum approval is required") {
		t.Fatalf("user delete without approval through hsm-2 alone: want \"Quorum approval is required\", got (%v):\n%s", err, out)
	}

	del := file("del.json")
	c.mustOK(c.cfg, admin, "user-service token",
		"quorum", "token-sign", "generate", "--service", "user", "--token", del)
	approve(del)

	spent := time.Now()
	c.mustOK(c.one[0], admin, "user delete victim with the token through hsm-1 alone",
		"user", "delete", "--username", "victim", "--role", "crypto-user", "--approval", del)
	for _, i := range []int{1, 2} {
		start := time.Now()
		res, out, err := c.run(c.one[i], admin[0], admin[1],
			"user", "delete", "--username", "victim2", "--role", "crypto-user", "--approval", del)
		msg := message(res)
		switch {
		case err == nil && res.ErrorCode == 0:
			t.Errorf("the token, spent through hsm-1, was accepted again through hsm-%d alone (%v after the spend): victim2 deleted:\n%s",
				i+1, start.Sub(spent).Round(time.Millisecond), out)
		case !strings.Contains(msg, "this token was already used"):
			t.Errorf("the replay through hsm-%d alone was refused, but not as already used: want \"this token was already used\", got (%v):\n%s",
				i+1, err, out)
		default:
			t.Logf("replay through hsm-%d alone, %v after the spend: %s", i+1, start.Sub(spent).Round(time.Millisecond), msg)
		}
	}

	// Each HSM alone: victim deleted (once applied there), victim2 not.
	for i := range 3 {
		end := time.Now().Add(10 * time.Second)
		for {
			users, err := c.users(c.one[i])
			if err != nil {
				t.Fatalf("hsm-%d alone: %v", i+1, err)
			}
			if !users["victim"] {
				if !users["victim2"] {
					t.Errorf("hsm-%d does not list victim2: a replay of the spent token deleted it", i+1)
				}
				break
			}
			if time.Now().After(end) {
				t.Errorf("hsm-%d still lists victim 10s after its deletion was acknowledged: %v", i+1, users)
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}
