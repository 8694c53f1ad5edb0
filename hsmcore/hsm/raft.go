package hsm

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"go.etcd.io/bbolt"

	"github.com/hsmsh/hsmsh/hsmcore/protocol"
)

// The domain state (users and their roles, password hashes and failed-login
// counts, quorum values and tokens, mTLS settings, the member list) is a
// replicated state machine on hashicorp/raft: a change is made only once a
// majority of the domain's HSMs has recorded it, and every HSM applies the
// same changes in the same order. Keys stay out of it on purpose: they
// follow CloudHSM's best-effort sync (sync.go), and can be lost.
//
// The raft RPCs travel as signed peer calls (peer.go), over whatever
// reaches the other HSMs: both TLS layers between servers, the in-process
// doors in the embedded cluster. Every member is a voter.

// Raft timing: raft's defaults. A leader sends a heartbeat a tenth of
// HeartbeatTimeout apart (an HMAC'd peer call, linkkey.go); a follower
// that hears none for HeartbeatTimeout starts an election, so a leader
// lost is replaced in one to two seconds. Shorter timeouts made leaders
// step down on a loaded machine (a CI run with the race detector).
const (
	raftHeartbeat = time.Second
	raftLease     = 500 * time.Millisecond
	// commitTimeout bounds how long a change waits for a majority (an
	// election included) before it is refused.
	commitTimeout = 8 * time.Second
	// raftRPCTimeout bounds one raft RPC to a peer; a snapshot gets longer.
	raftRPCTimeout      = 3 * time.Second
	raftSnapshotTimeout = 30 * time.Second
	// Snapshots are taken often, so that an HSM that comes back empty
	// (destroyed and replaced) catches up from one, as the issue asks.
	raftSnapshotThreshold = 64
	raftSnapshotInterval  = 5 * time.Second
	raftTrailingLogs      = 64
)

// Names of the raft marker and applied index in the HSM's secrets.
const (
	// secretRaft records how this HSM entered its raft group: "bootstrap"
	// (it formed the domain) or "join"; a store from before raft has none.
	secretRaft = "raft"
	// secretApplied is the index of the last log entry applied to the
	// store, so a restart does not apply an entry twice.
	secretApplied = "raft-applied"
)

// raftNode is one HSM's member of the consensus group.
type raftNode struct {
	// kickMu and kicked pace electNow.
	kickMu sync.Mutex
	kicked time.Time
	r      *raft.Raft
	trans  *raftTransport
	close  func() error // the log and stable stores
	obs    *raft.Observer
	done   chan struct{}
}

// raftMem keeps an in-memory HSM's raft stores across a fail and recover,
// as its (volatile) keys are kept: only destroy loses them.
type raftMem struct {
	logs  *raft.InmemStore
	snaps *raft.InmemSnapshotStore
}

// raftState is what an HSM keeps for raft (h.raft).
type raftState struct {
	mu   sync.Mutex
	node *raftNode
	mem  *raftMem
	dir  string // the HSM's data folder ("" in memory)
	how  string // secretRaft
	// seedMu orders the seed before every other change (seed).
	seedMu sync.Mutex
	// snaps is the running node's snapshot store, for Restore to learn
	// the index it restored to.
	snaps raft.SnapshotStore

	// applied is the last entry applied here; waiters wait for it.
	appliedMu sync.Mutex
	applied   uint64
	appliedCh chan struct{}
}

func (s *raftState) getApplied() uint64 {
	s.appliedMu.Lock()
	defer s.appliedMu.Unlock()
	return s.applied
}

func (s *raftState) setApplied(i uint64) {
	s.appliedMu.Lock()
	defer s.appliedMu.Unlock()
	s.applied = max(s.applied, i)
	if s.appliedCh != nil {
		close(s.appliedCh)
		s.appliedCh = nil
	}
}

// waitApplied waits until entry i is applied here, or until deadline.
func (s *raftState) waitApplied(i uint64, deadline time.Time) bool {
	for {
		s.appliedMu.Lock()
		if s.applied >= i {
			s.appliedMu.Unlock()
			return true
		}
		if s.appliedCh == nil {
			s.appliedCh = make(chan struct{})
		}
		ch := s.appliedCh
		s.appliedMu.Unlock()
		d := time.Until(deadline)
		if d <= 0 {
			return false
		}
		select {
		case <-ch:
		case <-time.After(d):
		}
	}
}

func (h *hsm) raftHow() string {
	h.raft.mu.Lock()
	defer h.raft.mu.Unlock()
	return h.raft.how
}

func (h *hsm) raftNode() *raftNode {
	h.raft.mu.Lock()
	defer h.raft.mu.Unlock()
	return h.raft.node
}

// startRaft starts this HSM's member of the consensus group, once it is
// in the domain; bootstrap forms a new group with this HSM alone (a new
// domain, or a clone). It does nothing if the node runs.
func (h *hsm) startRaft() error {
	h.mu.RLock()
	up, inDomain, members := h.up, h.domain != nil, slices.Sorted(maps.Keys(h.members))
	h.mu.RUnlock()
	if !up || !inDomain {
		return nil
	}
	h.raft.mu.Lock()
	defer h.raft.mu.Unlock()
	if h.raft.node != nil {
		return nil
	}
	// Who forms the group: the HSM that made the domain; of a clone's
	// HSMs (each restored from the backup), the one with the lowest id,
	// which the others join; of a cluster from before raft, every member,
	// with the same list. An HSM that joined waits for the leader.
	peers := []string{h.id}
	for _, l := range h.peerLinks() {
		peers = append(peers, l.ID())
	}
	bootstrap, kick := false, slices.Min(peers) == h.id
	switch h.raft.how {
	case raftBootstrap:
		bootstrap, kick = true, true
	case raftRestored:
		bootstrap = kick
	case "":
		bootstrap, kick = true, slices.Min(members) == h.id
	}
	// Once started, only the HSM that formed the group seeds it (lead).
	if h.raft.how == raftRestored || h.raft.how == "" {
		how := raftJoined
		if kick {
			how = raftBootstrap
		}
		if err := h.setRaftHowLocked(how); err != nil {
			return fmt.Errorf("%s: record its raft group: %w", h.id, err)
		}
	}
	conf := raft.DefaultConfig()
	conf.LocalID = raft.ServerID(h.id)
	// One millisecond over, so that kick can lower it: raft then starts
	// an election at once rather than after a timeout.
	conf.HeartbeatTimeout, conf.ElectionTimeout, conf.LeaderLeaseTimeout = raftHeartbeat+time.Millisecond, raftHeartbeat+time.Millisecond, raftLease
	conf.SnapshotThreshold, conf.TrailingLogs = raftSnapshotThreshold, raftTrailingLogs
	conf.SnapshotInterval = raftSnapshotInterval
	// The store already holds every applied entry (secretApplied says
	// which): restoring an older snapshot at start would go back in time
	// on an HSM that starts alone.
	conf.NoSnapshotRestoreOnStart = true
	conf.Logger = hclog.NewNullLogger()

	var (
		logs   raft.LogStore
		stable raft.StableStore
		snaps  raft.SnapshotStore
		closer = func() error { return nil }
	)
	if h.raft.dir == "" {
		if h.raft.mem == nil {
			h.raft.mem = &raftMem{logs: raft.NewInmemStore(), snaps: raft.NewInmemSnapshotStore()}
		}
		logs, stable, snaps = h.raft.mem.logs, h.raft.mem.logs, h.raft.mem.snaps
	} else {
		dir := filepath.Join(h.raft.dir, "raft")
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return fmt.Errorf("%s: raft folder: %w", h.id, err)
		}
		path := filepath.Join(dir, "raft.db")
		if err := checkRaftDB(path); err != nil {
			return err
		}
		bs, err := raftboltdb.New(raftboltdb.Options{Path: path, BoltOptions: &bbolt.Options{Timeout: time.Second}})
		if err != nil {
			return fmt.Errorf("%s: the raft log %s does not open (%v): it is damaged; hsmsh never rewrites it: destroy this HSM's data folder and let it rejoin its domain, or restore the cluster from a backup", h.id, path, err)
		}
		fs, err := raft.NewFileSnapshotStoreWithLogger(dir, 2, hclog.NewNullLogger())
		if err != nil {
			bs.Close()
			return fmt.Errorf("%s: raft snapshots: %w", h.id, err)
		}
		restrictTree(dir)
		logs, stable, snaps, closer = bs, bs, privateSnapshots{fs, dir}, bs.Close
	}
	trans := newRaftTransport(h)
	h.raft.snaps = snaps
	existing, err := raft.HasExistingState(logs, stable, snaps)
	if err != nil {
		closer()
		return fmt.Errorf("%s: raft state: %w", h.id, err)
	}
	if !existing && bootstrap {
		// The first HSM of a domain forms its group alone; the others are
		// added as voters when they join (reconcileVoters).
		cfg := raft.Configuration{Servers: []raft.Server{{Suffrage: raft.Voter, ID: raft.ServerID(h.id), Address: raft.ServerAddress(h.id)}}}
		if len(members) > 1 {
			// A store from before raft: every member bootstraps with the
			// same list, which raft allows.
			cfg.Servers = nil
			for _, m := range members {
				cfg.Servers = append(cfg.Servers, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(m), Address: raft.ServerAddress(m)})
			}
		}
		if err := raft.BootstrapCluster(conf, logs, stable, snaps, trans, cfg); err != nil {
			closer()
			return fmt.Errorf("%s: form the domain's raft group: %w", h.id, err)
		}
	}
	r, err := raft.NewRaft(conf, &domainFSM{h: h}, logs, stable, snaps, trans)
	if err != nil {
		closer()
		return fmt.Errorf("%s: start raft: %w", h.id, err)
	}
	n := &raftNode{r: r, trans: trans, close: closer, done: make(chan struct{})}
	ch := make(chan raft.Observation, 16)
	n.obs = raft.NewObserver(ch, false, func(o *raft.Observation) bool {
		_, ok := o.Data.(raft.LeaderObservation)
		return ok
	})
	r.RegisterObserver(n.obs)
	go h.watchRaft(n, ch)
	h.raft.node = n
	if kick {
		n.electNow()
	}
	return nil
}

// electNow has a follower that knows no leader ask for votes at once,
// rather than after its heartbeat timeout: a process that just opened
// its HSMs (a single command, a script) needs a leader for its first
// change. Raft starts an election when its heartbeat timeout is lowered
// and it has heard from no leader within it; a follower that hears from
// one does nothing, and pre-vote keeps a needless election from
// disturbing a leader the others follow.
func (n *raftNode) electNow() {
	n.kickMu.Lock()
	defer n.kickMu.Unlock()
	if time.Since(n.kicked) < raftHeartbeat/2 {
		return
	}
	n.kicked = time.Now()
	base := raft.ReloadableConfig{
		HeartbeatTimeout: raftHeartbeat, ElectionTimeout: raftHeartbeat,
		TrailingLogs: raftTrailingLogs, SnapshotInterval: raftSnapshotInterval, SnapshotThreshold: raftSnapshotThreshold,
	}
	if n.r.ReloadableConfig().HeartbeatTimeout <= raftHeartbeat {
		up := base
		up.HeartbeatTimeout += time.Millisecond
		up.ElectionTimeout += time.Millisecond
		n.r.ReloadConfig(up)
	}
	n.r.ReloadConfig(base)
}

// waitLeader waits until this node knows a leader (asking for an
// election once if it knows none), or until deadline.
func (n *raftNode) waitLeader(deadline time.Time) string {
	asked := false
	for {
		if _, id := n.r.LeaderWithID(); id != "" {
			return string(id)
		}
		if !asked && n.r.State() == raft.Follower {
			n.electNow()
			asked = true
		}
		if time.Now().After(deadline) {
			return ""
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// How an HSM entered its raft group (secretRaft).
const (
	raftBootstrap = "bootstrap" // it made the domain: it forms the group
	raftJoined    = "join"      // it joined through a member
	raftRestored  = "restored"  // restored from a backup (a clone)
	raftFormed    = "formed"    // it formed the group and seeded it
)

// setRaftHow records how the HSM entered its group. Lock order: h.mu
// (if held) before h.raft.mu.
func (h *hsm) setRaftHow(how string) error {
	h.raft.mu.Lock()
	defer h.raft.mu.Unlock()
	return h.setRaftHowLocked(how)
}

// setRaftHowLocked is setRaftHow with h.raft.mu held.
func (h *hsm) setRaftHowLocked(how string) error {
	h.raft.how = how
	if h.store == nil {
		return nil
	}
	return h.store.putSecret(secretRaft, []byte(how))
}

// privateSnapshots is raft's file snapshot store with the HSM's file
// modes: raft makes its folders 0755 and files 0644, and a snapshot holds
// the users' password hashes. (The raft folder itself is 0700 already.)
type privateSnapshots struct {
	*raft.FileSnapshotStore
	dir string
}

func (s privateSnapshots) Create(v raft.SnapshotVersion, index, term uint64, c raft.Configuration, ci uint64, t raft.Transport) (raft.SnapshotSink, error) {
	sink, err := s.FileSnapshotStore.Create(v, index, term, c, ci, t)
	if err != nil {
		return nil, err
	}
	restrictTree(s.dir)
	return privateSink{sink, s.dir}, nil
}

type privateSink struct {
	raft.SnapshotSink
	dir string
}

func (p privateSink) Close() error {
	err := p.SnapshotSink.Close()
	restrictTree(p.dir)
	return err
}

// restrictTree makes dir's folders 0700 and its files 0600.
func restrictTree(dir string) {
	filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if d.IsDir() {
			os.Chmod(path, 0o700)
		} else {
			os.Chmod(path, 0o600)
		}
		return nil
	})
}

// checkRaftDB refuses a raft log that is not a bolt file, with a message
// that says what to do, rather than bolt's own.
func checkRaftDB(path string) error {
	fi, err := os.Stat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if fi.Size() == 0 {
		return nil
	}
	if err := checkBoltHeader(path); err != nil {
		return fmt.Errorf("the raft log %s is damaged (%v): hsmsh never rewrites it: destroy this HSM's data folder and let it rejoin its domain, or restore the cluster from a backup", path, err)
	}
	return nil
}

// stopRaft shuts this HSM's raft node down (a failure, a close).
func (h *hsm) stopRaft() {
	h.raft.mu.Lock()
	n := h.raft.node
	h.raft.node = nil
	h.raft.mu.Unlock()
	if n == nil {
		return
	}
	n.r.DeregisterObserver(n.obs)
	n.r.Shutdown().Error()
	close(n.done)
	n.close()
}

// watchRaft turns leader changes into events: the pane marks the leader,
// and the event log shows elections and a lost majority.
func (h *hsm) watchRaft(n *raftNode, ch chan raft.Observation) {
	for {
		select {
		case <-n.done:
			return
		case o := <-ch:
			lo, ok := o.Data.(raft.LeaderObservation)
			if !ok {
				continue
			}
			if lo.LeaderID == "" {
				h.event(Event{Kind: EventNoLeader, Detail: "no leader: an election is under way, or no majority is reachable"})
				continue
			}
			if string(lo.LeaderID) == h.id {
				h.event(Event{Kind: EventLeader, Detail: fmt.Sprintf("%s leads the domain state (term %s)", h.id, n.r.Stats()["term"])})
				go h.lead()
			}
		}
	}
}

// lead is what a new leader does first: the HSM that formed the group
// seeds it with its own domain state (the built-in admin of a new
// cluster, a clone's users), once; then the voters follow the members.
func (h *hsm) lead() {
	if n := h.raftNode(); n != nil {
		h.seed(n)
	}
	h.reconcileVoters()
}

// seed commits the group's first change, on the HSM that formed it: its
// own domain state (the built-in admin of a new cluster, a clone's users,
// a cluster's state from before raft). Every other change waits for it,
// so none is overwritten by it.
func (h *hsm) seed(n *raftNode) error {
	h.raft.seedMu.Lock()
	defer h.raft.seedMu.Unlock()
	if h.raftHow() != raftBootstrap {
		return nil
	}
	s := h.domainSnapshot()
	s.Members = nil // members change only by joins and removals
	b, err := json.Marshal(s)
	if err != nil {
		return err
	}
	pb, err := json.Marshal(proposal{Op: opSeed, Args: b})
	if err != nil {
		return err
	}
	if err := n.r.Apply(pb, commitTimeout).Error(); err != nil {
		return err
	}
	return h.setRaftHow(raftFormed)
}

// reconcileVoters makes the raft configuration match the member list, on
// the leader: a member that joined becomes a voter, one that left is
// removed. It runs when this HSM becomes leader and after each change to
// the members.
func (h *hsm) reconcileVoters() {
	n := h.raftNode()
	if n == nil || n.r.State() != raft.Leader {
		return
	}
	f := n.r.GetConfiguration()
	if f.Error() != nil {
		return
	}
	voters := map[string]bool{}
	for _, s := range f.Configuration().Servers {
		voters[string(s.ID)] = true
	}
	h.mu.RLock()
	members := slices.Sorted(maps.Keys(h.members))
	h.mu.RUnlock()
	for _, m := range members {
		if !voters[m] {
			if err := n.r.AddVoter(raft.ServerID(m), raft.ServerAddress(m), 0, commitTimeout).Error(); err == nil {
				h.event(Event{Kind: EventDomainState, Detail: fmt.Sprintf("%s joins the domain state's raft group as a voter", m)})
			}
		}
		delete(voters, m)
	}
	for v := range voters {
		if v == h.id {
			continue
		}
		if err := n.r.RemoveServer(raft.ServerID(v), 0, commitTimeout).Error(); err == nil {
			h.event(Event{Kind: EventDomainState, Detail: fmt.Sprintf("%s leaves the domain state's raft group", v)})
		}
	}
}

// raftInfo is this HSM's view of the group, for cluster hsm-info.
func (h *hsm) raftInfo() *protocol.RaftInfo {
	n := h.raftNode()
	if n == nil {
		return nil
	}
	st := n.r.Stats()
	u := func(k string) uint64 { v, _ := strconv.ParseUint(st[k], 10, 64); return v }
	_, leader := n.r.LeaderWithID()
	info := &protocol.RaftInfo{
		Role: strings.ToLower(st["state"]), Leader: string(leader),
		Term: u("term"), CommitIndex: u("commit_index"), AppliedIndex: h.raft.getApplied(),
		LastContact: st["last_contact"],
	}
	if info.Role == "leader" {
		info.LastContact = "0s"
	} else if lc := n.r.LastContact(); !lc.IsZero() {
		info.LastContact = time.Since(lc).Round(time.Millisecond).String()
	}
	if f := n.r.GetConfiguration(); f.Error() == nil {
		for _, s := range f.Configuration().Servers {
			if s.Suffrage == raft.Voter {
				info.Voters++
			}
		}
	}
	return info
}

// Committing a change.

// proposal is a change to the domain state: an operation of the state
// machine (fsm.go) and its arguments.
type proposal struct {
	Op   string          `json:"op"`
	Args json.RawMessage `json:"args,omitempty"`
}

// proposeReply is what the leader answers a forwarded proposal with.
type proposeReply struct {
	Index  uint64      `json:"index"`
	Result applyResult `json:"result"`
}

// applyResult is the state machine's answer to one entry: the same on
// every HSM, since each applies the same entries to the same state.
type applyResult struct {
	Code string `json:"code,omitempty"`
	Err  string `json:"err,omitempty"`
	// Note is what the entry did, where its caller needs to know: for a
	// failed login, whether it counted (noteCounted) or found the user
	// locked already (noteLocked).
	Note string `json:"note,omitempty"`
}

const (
	noteCounted = "counted"
	noteLocked  = "locked"
)

func (r applyResult) err() error {
	if r.Err == "" {
		return nil
	}
	return &protocol.Error{Code: r.Code, Msg: r.Err}
}

// commit makes a change to the domain state: recorded by a majority of the
// domain's HSMs, then applied on each. It returns once the change is
// applied on this HSM too, with the state machine's answer; without a
// majority it fails, saying which HSMs were reachable. what names the
// change for that message ("user create").
func (h *hsm) commit(what, op string, args any) error {
	_, err := h.commitResult(what, op, args)
	return err
}

// commitResult is commit, with the state machine's note on the entry.
func (h *hsm) commitResult(what, op string, args any) (applyResult, error) {
	raw, err := json.Marshal(args)
	if err != nil {
		return applyResult{}, err
	}
	p := proposal{Op: op, Args: raw}
	if err := checkProposal(p); err != nil {
		return applyResult{}, err
	}
	start := time.Now()
	deadline := start.Add(commitTimeout)
	probed := false
	for time.Now().Before(deadline) {
		if !probed && time.Since(start) > probeAfter {
			probed = true
			if reach, total := h.reachable(); len(reach) <= total/2 {
				return applyResult{}, noMajorityOf(what, reach, total)
			}
		}
		n := h.raftNode()
		if n == nil {
			if !h.Up() {
				return applyResult{}, protocol.ErrDown(h.id)
			}
			// In the domain but its node not started yet (just back, and
			// asked before its own turn to rejoin): start it now.
			if err := h.startRaft(); err != nil {
				return applyResult{}, err
			}
			if n = h.raftNode(); n == nil {
				return applyResult{}, fmt.Errorf("%w: %s is not in its domain's raft group yet: try again in a moment", ErrNoMajority, h.id)
			}
		}
		var idx uint64
		var res applyResult
		if n.r.State() == raft.Leader {
			idx, res, err = h.applyAsLeader(n, p, time.Until(deadline))
		} else if leader := n.waitLeader(h.leaderWait(start, deadline, probed)); leader != "" {
			var rep proposeReply
			err = h.forward(leader, p, &rep)
			idx, res = rep.Index, rep.Result
		} else {
			err = errors.New("no leader")
		}
		if err != nil {
			if protocol.IsDown(err) && !h.Up() {
				return applyResult{}, err
			}
			// The leader refused the change itself (not for want of a
			// majority): no retry changes that.
			if errors.Is(err, ErrInvalid) || errors.Is(err, ErrPermission) {
				return applyResult{}, err
			}
			// Otherwise no leader yet, a leader that just lost its
			// majority, or one that went: try again until the deadline.
			time.Sleep(50 * time.Millisecond)
			continue
		}
		if !h.raft.waitApplied(idx, time.Now().Add(commitTimeout)) {
			return applyResult{}, fmt.Errorf("%s: %s was recorded by a majority but not yet applied here: try again", h.id, what)
		}
		return res, res.err()
	}
	return applyResult{}, h.noMajority(what)
}

// leaderWait is how long a change waits for a leader in one turn: until
// the probe is due, then until the deadline.
func (h *hsm) leaderWait(start, deadline time.Time, probed bool) time.Time {
	if p := start.Add(probeAfter); !probed && p.Before(deadline) {
		return p
	}
	return deadline
}

// opReadIndex asks the leader how far it has applied the log, changing
// nothing.
const opReadIndex = "read-index"

// catchUp brings this HSM up to what the domain has committed before it
// decides on a login: a follower asks the leader how far the log is
// committed and waits to have applied that far, so a lockout committed a
// moment ago elsewhere holds here too. With no leader reachable it goes
// on with what it has: a right password logs in on any HSM that is up.
func (h *hsm) catchUp() { h.catchUpFor("") }

// catchUpFor is catchUp before a change to the domain state (what names
// it): it is decided on the committed state or not at all, since an HSM
// just back from a failure may hold old quorum values, and would let a
// change through that now needs an approval.
func (h *hsm) catchUpFor(what string) error {
	strict := what != ""
	deadline := time.Now().Add(commitTimeout)
	for {
		n := h.raftNode()
		if n == nil {
			if strict {
				return fmt.Errorf("%w: %s is not in its domain's raft group yet: try again in a moment", ErrNoMajority, h.id)
			}
			return nil
		}
		if n.r.State() == raft.Leader {
			return nil // the leader has applied every change it acknowledged
		}
		// A login waits a little for a leader (a process that just opened
		// its HSMs elects one in milliseconds); a change waits as long as
		// a commit would.
		wait := deadline
		if !strict {
			wait = time.Now().Add(300 * time.Millisecond)
		}
		if leader := n.waitLeader(wait); leader != "" {
			var rep proposeReply
			if err := h.forward(leader, proposal{Op: opReadIndex}, &rep); err == nil {
				if !h.raft.waitApplied(rep.Index, time.Now().Add(time.Second)) && strict {
					return fmt.Errorf("%s has not caught up with the domain state yet: try again", h.id)
				}
				return nil
			}
		}
		if !strict {
			return nil
		}
		if time.Now().After(deadline) {
			return h.noMajority(what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// applyAsLeader appends p to the log and waits for a majority.
func (h *hsm) applyAsLeader(n *raftNode, p proposal, timeout time.Duration) (uint64, applyResult, error) {
	// A leader cut off from the majority would append the change to its
	// log and time out, and the change could still be committed later,
	// once the others are back: a refusal that turns into a change. It
	// checks first that a majority still follows it.
	if err := n.r.VerifyLeader().Error(); err != nil {
		return 0, applyResult{}, err
	}
	if err := h.seed(n); err != nil {
		return 0, applyResult{}, err
	}
	b, err := json.Marshal(p)
	if err != nil {
		return 0, applyResult{}, err
	}
	f := n.r.Apply(b, timeout)
	if err := f.Error(); err != nil {
		return 0, applyResult{}, err
	}
	res, _ := f.Response().(applyResult)
	return f.Index(), res, nil
}

// forward sends p to the leader, which commits it.
func (h *hsm) forward(leader string, p proposal, rep *proposeReply) error {
	l, err := h.linkTo(leader)
	if err != nil {
		return err
	}
	return within(commitTimeout, leader+" did not answer "+protocol.CallPropose, func() error {
		return h.callPeer(l, protocol.CallPropose, p, rep)
	})
}

// serveProposal commits a change another HSM forwarded to this leader.
func (h *hsm) serveProposal(from string, p proposal) (proposeReply, error) {
	if err := checkProposal(p); err != nil {
		return proposeReply{}, fmt.Errorf("a change from %s: %w", from, err)
	}
	n := h.raftNode()
	if n == nil || n.r.State() != raft.Leader {
		return proposeReply{}, fmt.Errorf("%w: %s is not the leader", ErrNoMajority, h.id)
	}
	if p.Op == opReadIndex {
		// Every change acknowledged so far is applied here (a change is
		// acknowledged once the leader applied it): that index covers them.
		return proposeReply{Index: h.raft.getApplied()}, nil
	}
	idx, res, err := h.applyAsLeader(n, p, commitTimeout)
	if err != nil {
		return proposeReply{}, fmt.Errorf("%w: %w", ErrNoMajority, err)
	}
	return proposeReply{Index: idx, Result: res}, nil
}

// checkProposal refuses, before it reaches the log, a change that every
// HSM would refuse anyway: a user record with a hash that is not one of
// hsmsh's argon2id hashes (a hash with other parameters could make the
// login that checks it exhaust the HSM's memory).
func checkProposal(p proposal) error {
	var users []*userRecord
	switch p.Op {
	case opPutUser, opCreateUser:
		var u userRecord
		if err := json.Unmarshal(p.Args, &u); err != nil {
			return fmt.Errorf("%w: %s: %w", ErrInvalid, p.Op, err)
		}
		users = append(users, &u)
	case opSeed:
		var s domainSnapshot
		if err := json.Unmarshal(p.Args, &s); err != nil {
			return fmt.Errorf("%w: %s: %w", ErrInvalid, p.Op, err)
		}
		for _, u := range s.Users {
			users = append(users, u)
		}
	}
	for _, u := range users {
		if u.Hash != "" {
			if err := validHash(u.Hash); err != nil {
				return fmt.Errorf("%w: user %s: %w", ErrInvalid, u.Username, err)
			}
		}
	}
	return nil
}

// noMajority says which HSMs this one reached, for a change it could not
// commit.
func (h *hsm) noMajority(what string) error {
	reach, total := h.reachable()
	return noMajorityOf(what, reach, total)
}

func noMajorityOf(what string, reach []string, total int) error {
	return fmt.Errorf("%w: cannot %s: only %d of %d HSMs reachable (%s); a change to the domain state needs a majority (%d of %d)",
		ErrNoMajority, what, len(reach), total, strings.Join(reach, ", "), total/2+1, total)
}

// probeAfter is how long a change waits for a leader before it asks which
// HSMs answer at all: with no majority among them it is refused at once,
// rather than at the end of commitTimeout.
const probeAfter = 1500 * time.Millisecond

// reachable lists the HSMs this one reaches over the peer channel that
// take part in the group (itself included), and how many HSMs there are.
func (h *hsm) reachable() (reach []string, total int) {
	reach = []string{h.id}
	links := h.peerLinks()
	total = 1
	var wg sync.WaitGroup
	var mu sync.Mutex
	for _, l := range links {
		total++
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Reached over the peer channel, up, and taking part in the
			// group (an HSM waiting to be admitted, or cut off from its
			// peers, counts for nothing).
			err := within(time.Second, l.ID()+" did not answer", func() error {
				return h.callPeerMAC(l, protocol.CallRaft, raftMessage{Kind: "ping"}, nil)
			})
			if err == nil {
				mu.Lock()
				reach = append(reach, l.ID())
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	sort.Strings(reach)
	return reach, total
}

// within runs f and gives up waiting after d, with the error timeout
// (f goes on in the background): a peer that hangs holds its caller no
// longer than d.
func within(d time.Duration, timeout string, f func() error) error {
	done := make(chan error, 1)
	go func() { done <- f() }()
	select {
	case err := <-done:
		return err
	case <-time.After(d):
		return fmt.Errorf("%s within %v", timeout, d)
	}
}

// linkTo is this HSM's link to peer id.
func (h *hsm) linkTo(id string) (peerLink, error) {
	for _, l := range h.peerLinks() {
		if l.ID() == id {
			return l, nil
		}
	}
	return nil, fmt.Errorf("%s is not among %s's peers", id, h.id)
}

// The transport: raft's RPCs as signed peer calls.

// raftMessage is one raft RPC on the peer channel.
type raftMessage struct {
	Kind string          `json:"kind"` // append, vote, prevote, snapshot, timeout, ping
	Body json.RawMessage `json:"body"`
	Data []byte          `json:"data,omitempty"` // a snapshot's contents
}

type raftTransport struct {
	h        *hsm
	consumer chan raft.RPC
	done     chan struct{}
	once     sync.Once
}

func newRaftTransport(h *hsm) *raftTransport {
	return &raftTransport{h: h, consumer: make(chan raft.RPC), done: make(chan struct{})}
}

var (
	_ raft.Transport   = (*raftTransport)(nil)
	_ raft.WithPreVote = (*raftTransport)(nil)
	_ raft.WithClose   = (*raftTransport)(nil)
)

func (t *raftTransport) Consumer() <-chan raft.RPC     { return t.consumer }
func (t *raftTransport) LocalAddr() raft.ServerAddress { return raft.ServerAddress(t.h.id) }
func (t *raftTransport) EncodePeer(_ raft.ServerID, a raft.ServerAddress) []byte {
	return []byte(a)
}
func (t *raftTransport) DecodePeer(b []byte) raft.ServerAddress { return raft.ServerAddress(b) }
func (t *raftTransport) SetHeartbeatHandler(func(raft.RPC))     {}
func (t *raftTransport) Close() error {
	t.once.Do(func() { close(t.done) })
	return nil
}

func (t *raftTransport) AppendEntriesPipeline(raft.ServerID, raft.ServerAddress) (raft.AppendPipeline, error) {
	return nil, raft.ErrPipelineReplicationNotSupported
}

func (t *raftTransport) AppendEntries(id raft.ServerID, _ raft.ServerAddress, args *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) error {
	return t.call(id, "append", args, nil, resp, raftRPCTimeout)
}

func (t *raftTransport) RequestVote(id raft.ServerID, _ raft.ServerAddress, args *raft.RequestVoteRequest, resp *raft.RequestVoteResponse) error {
	return t.call(id, "vote", args, nil, resp, raftRPCTimeout)
}

func (t *raftTransport) RequestPreVote(id raft.ServerID, _ raft.ServerAddress, args *raft.RequestPreVoteRequest, resp *raft.RequestPreVoteResponse) error {
	return t.call(id, "prevote", args, nil, resp, raftRPCTimeout)
}

func (t *raftTransport) TimeoutNow(id raft.ServerID, _ raft.ServerAddress, args *raft.TimeoutNowRequest, resp *raft.TimeoutNowResponse) error {
	return t.call(id, "timeout", args, nil, resp, raftRPCTimeout)
}

func (t *raftTransport) InstallSnapshot(id raft.ServerID, _ raft.ServerAddress, args *raft.InstallSnapshotRequest, resp *raft.InstallSnapshotResponse, data io.Reader) error {
	b, err := io.ReadAll(io.LimitReader(data, maxRaftSnapshot+1))
	if err != nil {
		return err
	}
	if len(b) > maxRaftSnapshot {
		return fmt.Errorf("the domain state's snapshot is over %d bytes", maxRaftSnapshot)
	}
	return t.call(id, "snapshot", args, b, resp, raftSnapshotTimeout)
}

// maxRaftSnapshot bounds a snapshot on the wire: the domain state is users,
// tokens and settings, never keys.
const maxRaftSnapshot = 64 << 20

func (t *raftTransport) call(id raft.ServerID, kind string, args any, data []byte, resp any, d time.Duration) error {
	body, err := json.Marshal(args)
	if err != nil {
		return err
	}
	link, err := t.h.linkTo(string(id))
	if err != nil {
		return err
	}
	var out json.RawMessage
	if err := within(d, fmt.Sprintf("%s did not answer a raft %s", id, kind), func() error {
		return t.h.callPeerMAC(link, protocol.CallRaft, raftMessage{Kind: kind, Body: body, Data: data}, &out)
	}); err != nil {
		return err
	}
	return json.Unmarshal(out, resp)
}

// serve hands a raft RPC from a peer to this HSM's raft node and returns
// its answer.
func (t *raftTransport) serve(from string, m raftMessage) (any, error) {
	var cmd any
	switch m.Kind {
	case "ping":
		return "pong", nil // noMajority asking who takes part
	case "append":
		cmd = &raft.AppendEntriesRequest{}
	case "vote":
		cmd = &raft.RequestVoteRequest{}
	case "prevote":
		cmd = &raft.RequestPreVoteRequest{}
	case "timeout":
		cmd = &raft.TimeoutNowRequest{}
	case "snapshot":
		cmd = &raft.InstallSnapshotRequest{}
	default:
		return nil, fmt.Errorf("%w: unknown raft message %q", ErrInvalid, m.Kind)
	}
	dec := json.NewDecoder(bytes.NewReader(m.Body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(cmd); err != nil {
		return nil, fmt.Errorf("%w: raft %s from %s: %w", ErrInvalid, m.Kind, from, err)
	}
	// The sender's identity was checked against the member list (the peer
	// call's signature): a header naming another HSM is refused.
	if hd, ok := cmd.(raft.WithRPCHeader); ok {
		if got := string(hd.GetRPCHeader().ID); got != "" && got != from {
			return nil, fmt.Errorf("%w: a raft %s signed by %s claims to come from %s", ErrPermission, m.Kind, from, got)
		}
	}
	ch := make(chan raft.RPCResponse, 1)
	rpc := raft.RPC{Command: cmd, RespChan: ch}
	if m.Kind == "snapshot" {
		rpc.Reader = bytes.NewReader(m.Data)
	}
	d := raftRPCTimeout
	if m.Kind == "snapshot" {
		d = raftSnapshotTimeout
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case t.consumer <- rpc:
	case <-t.done:
		return nil, protocol.ErrDown(t.h.id)
	case <-timer.C:
		return nil, fmt.Errorf("%s's raft node is busy", t.h.id)
	}
	select {
	case r := <-ch:
		if r.Error != nil {
			return nil, r.Error
		}
		return r.Response, nil
	case <-t.done:
		return nil, protocol.ErrDown(t.h.id)
	case <-timer.C:
		return nil, fmt.Errorf("%s's raft node did not answer", t.h.id)
	}
}

// serveRaft serves CallRaft from peer from.
func (h *hsm) serveRaft(from string, m raftMessage) (any, error) {
	n := h.raftNode()
	if n == nil {
		return nil, fmt.Errorf("%s is not in its domain's raft group yet", h.id)
	}
	return n.trans.serve(from, m)
}
