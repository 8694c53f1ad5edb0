package hsm

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hsmsh/hsmsh/hsmcore/profile"
	"github.com/hsmsh/hsmsh/hsmcore/protocol"
	"github.com/hsmsh/hsmsh/hsmcore/quorum"
	"github.com/hsmsh/hsmsh/hsmcore/rpc"
)

// Device is one HSM running in this process: the embedded cluster's
// hardware. Its door (Serve, Handler) is the only way to what it holds;
// the other methods are the lab's hands on the box (pull the power,
// destroy it, restart it, slow it down) and return nothing a door would
// not: no key material, no user records.
type Device struct {
	h    *hsm
	rack *Rack
}

// ID is the HSM's id.
func (d *Device) ID() string { return d.h.id }

// Serve is the HSM's door as a function: a call encoded as the wire
// carries it, answered as the wire would answer it, errors included (as
// *protocol.Error, by their codes). An in-process client calls this and
// nothing else.
func (d *Device) Serve(method string, args []byte) ([]byte, error) {
	out, err := d.h.serve(method, args)
	if err != nil {
		return nil, &protocol.Error{Code: protocol.CodeOf(err), Msg: err.Error()}
	}
	b, err := protocol.EncodeAnswer(method, out)
	if err != nil {
		return nil, fmt.Errorf("encode the answer to %s: %w", method, err)
	}
	return b, nil
}

// Handler is the same door for an rpc connection: the embedded cluster's
// in-memory pipes serve it behind nested TLS.
func (d *Device) Handler() rpc.Handler { return d.h.handler() }

// Info describes the HSM for cluster hsm-info; a down HSM says so and
// counts its keys as unknown.
func (d *Device) Info() protocol.HSMInfo { return d.h.Info() }

// Up says whether the HSM answers.
func (d *Device) Up() bool { return d.h.Up() }

// Close closes the HSM's store.
func (d *Device) Close() error { return d.h.Close() }

// Fail stops the HSM answering, as pulling its power would; destroy also
// erases its store, as losing the hardware would. It returns what the
// failure cost, as references and labels for the lab's event log: the
// session keys that died with its volatile memory and, when destroyed, the
// token keys its store held.
//
// A failure the lab injects comes at a quiet moment: the HSM first applies
// what the domain has committed (a change its peers acknowledged a moment
// ago may not have reached it yet), so that a demo's "hsm-3 comes back
// knowing carol is locked" holds on a loaded machine too. A real crash can
// come in between; the HSM then learns the rest from the next leader it
// reaches.
func (d *Device) Fail(destroy bool) (sessionKeys, tokenKeys []protocol.KeyMeta, err error) {
	h := d.h
	if !destroy {
		h.catchUp()
	}
	labels := h.labels()
	h.mu.RLock()
	sessionKeys = metasOf(metasLocked(h.sessionKeys))
	h.mu.RUnlock()
	held, err := h.fail(destroy, d.rack.dir(h.id))
	for _, ref := range held {
		tokenKeys = append(tokenKeys, protocol.KeyMeta{Ref: ref, Attrs: Attributes{Label: labels[ref]}})
	}
	return sessionKeys, tokenKeys, err
}

// Recover brings a failed HSM back; a destroyed one comes back as new
// hardware, empty, outside the domain until EnsureDomain.
func (d *Device) Recover() error { return d.h.recover(d.rack.opener(d.h.id)) }

// Restart wipes the HSM's volatile memory and returns the session keys
// that died with it.
func (d *Device) Restart() []protocol.KeyMeta { return metasOf(d.h.restart()) }

// SetLatency slows every operation on the HSM down by l.
func (d *Device) SetLatency(l time.Duration) error {
	if l < 0 || l > protocol.MaxLatency {
		return fmt.Errorf("%w: latency must be 0 to %v", ErrInvalid, protocol.MaxLatency)
	}
	d.h.latency.Store(int64(l))
	return nil
}

// SetPartitioned cuts the HSM off from the other HSMs of its cluster, or
// joins it back: a network partition between HSMs, with clients still
// reaching it.
func (d *Device) SetPartitioned(cut bool) { d.h.partitioned.Store(cut) }

// TokenRefs are the references of the token keys the HSM holds: the lab
// asks which keys a destroyed HSM's peers still hold, to tell which died.
func (d *Device) TokenRefs() []Ref {
	refs, _ := d.h.TokenState()
	return refs
}

// EnsureDomain has an HSM outside the domain form it (the lowest id, when
// every peer answers and none has one) or join it through a member. An
// HSM that must wait for a member is not an error.
func (d *Device) EnsureDomain() error {
	if err := d.h.ensureDomain(); err != nil && !errors.Is(err, errNoDomainYet) {
		return fmt.Errorf("%s: %w", d.h.id, err)
	}
	return nil
}

// SyncPass is one server-side sync pass of the HSM: it pulls what it
// lacks from its peers, HSM to HSM.
func (d *Device) SyncPass(ctx context.Context) protocol.SyncStats { return d.h.syncPass(ctx) }

// RackOptions configure the embedded cluster's HSMs.
type RackOptions struct {
	// Dir holds one store folder per HSM; "" keeps everything in memory.
	Dir string
	// QuorumRules are KMS-style quorum rule sets by command path, which
	// the HSMs apply.
	QuorumRules map[string][]quorum.Rule
	// Profile paces each HSM at a hardware type's rates (package profile).
	Profile string
	// Restore is a backup every new HSM starts from (a clone); nil makes
	// each a new HSM with the cluster's unactivated admin.
	Restore *Backup
}

// Rack is the embedded cluster's HSMs, side by side in one process: they
// reach each other through their doors (peer calls), and the rack's own
// key endorses each one's identity so it can join the domain (a server's
// cluster certificate key does that across machines). The key lives in
// memory only: every HSM that joins is made by this process.
type Rack struct {
	opts     RackOptions
	endorser crypto.Signer
	lock     *dirLock // the data folder, against a second process
	notify   atomic.Pointer[func(Event)]

	mu      sync.RWMutex
	devices []*Device
}

// NewRack makes an empty rack.
func NewRack(opts RackOptions) (*Rack, error) {
	if err := profile.Check(opts.Profile); err != nil {
		return nil, err
	}
	endorser, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	r := &Rack{opts: opts, endorser: endorser}
	if opts.Dir != "" {
		l, err := lockDir(opts.Dir)
		if err != nil {
			return nil, err
		}
		r.lock = l
	}
	return r, nil
}

// SetNotify has f hear what the rack's HSMs do on their own (sync,
// pushes): the embedded cluster's event log.
func (r *Rack) SetNotify(f func(Event)) { r.notify.Store(&f) }

func (r *Rack) publish(ev Event) {
	if f := r.notify.Load(); f != nil && *f != nil {
		(*f)(ev)
	}
}

// Close releases the rack's data folder. Close its HSMs first.
func (r *Rack) Close() error {
	r.lock.release()
	return nil
}

func (r *Rack) dir(id string) string {
	if r.opts.Dir == "" {
		return ""
	}
	return filepath.Join(r.opts.Dir, id)
}

func (r *Rack) opener(id string) func() (store, error) {
	dir := r.dir(id)
	if dir == "" {
		return nil
	}
	return func() (store, error) { return openBoltStore(dir) }
}

// Add opens (or creates) the HSM id and puts it in the rack. A cluster's
// first HSMs start with its unactivated admin (or, for a clone, from the
// backup); spare is new hardware joining a running cluster, which starts
// empty and gets users and keys from its domain. Add does not join the
// domain yet: call EnsureDomain once the rack holds its peers.
func (r *Rack) Add(id string, spare bool) (*Device, error) {
	var st store
	if open := r.opener(id); open != nil {
		s, err := open()
		if err != nil {
			return nil, fmt.Errorf("open %s: %w", id, err)
		}
		st = s
	}
	h, err := newHSM(id, st)
	if err != nil {
		if st != nil {
			st.close()
		}
		return nil, fmt.Errorf("open %s: %w", id, err)
	}
	h.rules = r.opts.QuorumRules
	h.raft.dir = r.dir(id)
	h.paced = profile.PerHSM(r.opts.Profile)
	switch {
	case spare:
	case r.opts.Restore != nil:
		if err := h.restore(r.opts.Restore.c); err != nil {
			h.Close()
			return nil, fmt.Errorf("clone: %w", err)
		}
	default:
		if err := h.ensureAdmin(); err != nil {
			h.Close()
			return nil, fmt.Errorf("open %s: %w", id, err)
		}
	}
	d := &Device{h: h, rack: r}
	h.setPeers(func() []peerLink {
		r.mu.RLock()
		defer r.mu.RUnlock()
		out := make([]peerLink, 0, len(r.devices))
		for _, o := range r.devices {
			if o.h != h {
				out = append(out, directLink{to: o.h})
			}
		}
		return out
	}, r.endorser)
	h.mu.Lock()
	h.notify = r.publish
	h.mu.Unlock()
	r.mu.Lock()
	r.devices = append(r.devices, d)
	r.mu.Unlock()
	return d, nil
}

// Remove takes an HSM out of the rack: its peers stop reaching it.
//
// Leaving the domain is a change to its membership, committed through an
// HSM that stays: without a majority it fails, and the HSM stays in.
func (r *Rack) Remove(id string) error {
	r.mu.RLock()
	var via *hsm
	var inDomain bool
	for _, d := range r.devices {
		if d.h.id == id {
			d.h.mu.RLock()
			inDomain = d.h.domain != nil
			d.h.mu.RUnlock()
			continue
		}
		if via == nil && d.h.Up() && d.h.raftNode() != nil {
			via = d.h
		}
	}
	r.mu.RUnlock()
	if inDomain && via != nil {
		if err := via.commit("remove "+id+" from the domain", opDropMember, memberArgs{ID: id}); err != nil {
			return err
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.devices = slices.DeleteFunc(r.devices, func(d *Device) bool { return d.h.id == id })
	return nil
}

// directLink is one in-process HSM's way to another's door: the peer
// calls of the embedded cluster, encoded as the wire would carry them.
type directLink struct{ to *hsm }

func (l directLink) ID() string { return l.to.id }

func (l directLink) Call(method string, args, reply any) error {
	raw, err := protocol.EncodeArgs(method, args)
	if err != nil {
		return fmt.Errorf("encode %s: %w", method, err)
	}
	out, err := l.to.serve(method, raw)
	if err != nil {
		return &protocol.Error{Code: protocol.CodeOf(err), Msg: err.Error()}
	}
	if reply == nil {
		return nil
	}
	b, err := protocol.EncodeAnswer(method, out)
	if err != nil {
		return err
	}
	return protocol.DecodeAnswer(method, b, reply)
}

// Backup is an opened backup, for a clone's HSMs to start from.
type Backup struct{ c *backupContents }

// OpenBackup decrypts a backup file with its password.
func OpenBackup(file []byte, password string) (BackupInfo, *Backup, error) {
	info, c, err := openBackup(file, password)
	if err != nil {
		return info, nil, err
	}
	return info, &Backup{c: c}, nil
}

// Clear wipes the backup's secrets from memory once the clone is made.
func (b *Backup) Clear() {
	if b == nil || b.c == nil {
		return
	}
	clear(b.c.Domain)
	for i := range b.c.Keys {
		clear(b.c.Keys[i].Material)
	}
}
