package hsm

import (
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/hsmsh/hsmsh/hsmcore/client"
	"github.com/hsmsh/hsmsh/hsmcore/quorum"
)

// The tests of this package drive the HSMs the way hsmsh does: through
// the client library (package client), which reaches them only through
// their doors. They assemble the embedded cluster as package host
// does, and keep the rack, so that a test can look inside an HSM (its
// store, its sessions) where it checks what the door must never let out.

// The client library's names the tests use.
type (
	Embedded       = client.Embedded
	Remote         = client.Remote
	RemoteOptions  = client.RemoteOptions
	Durability     = client.Durability
	Key            = client.Key
	User           = client.User
	ClientIdentity = client.ClientIdentity
	SyncError      = client.SyncError
	ReplicateError = client.ReplicateError
	WrapRequest    = client.WrapRequest
	UnwrapSpec     = client.UnwrapSpec
	MFASigner      = client.MFASigner
)

const (
	TransportDirect = client.TransportDirect
	TransportTLS    = client.TransportTLS
	CoverageFull    = client.CoverageFull
	CoveragePartial = client.CoveragePartial
)

var (
	WithApproval   = client.WithApproval
	OpenRemote     = client.OpenRemote
	PKIFiles       = client.PKIFiles
	ErrMFARequired = client.ErrMFARequired
)

// Options are host.Options: the embedded cluster's and its rack's.
type Options struct {
	ID              string
	HSMs            int
	DataDir         string
	Durability      Durability
	Transport       string
	QuorumRules     map[string][]quorum.Rule
	Client          ClientIdentity
	SessionLifetime time.Duration
	NoRenegotiate   bool
	Profile         string
}

// racks remembers each test cluster's rack.
var racks sync.Map // *Embedded → *Rack

// testRack is the rack under the client library's interface; wrap, if
// set, puts something between the client library and each HSM's door.
type testRack struct {
	*Rack
	wrap func(*Device) client.Device
}

func (r testRack) Add(id string, spare bool) (client.Device, error) {
	d, err := r.Rack.Add(id, spare)
	if err != nil {
		return nil, err
	}
	if r.wrap != nil {
		return r.wrap(d), nil
	}
	return d, nil
}

// OpenEmbedded assembles an embedded cluster as host.Embedded does.
func OpenEmbedded(opts Options) (*Embedded, error) { return openTest(opts, nil, nil) }

// OpenClone is host.Clone.
func OpenClone(opts Options, file []byte, password string) (*Embedded, BackupInfo, error) {
	info, b, err := OpenBackup(file, password)
	if err != nil {
		return nil, info, err
	}
	defer b.Clear()
	if opts.DataDir != "" {
		if entries, err := os.ReadDir(opts.DataDir); err == nil && len(entries) > 0 {
			return nil, info, fmt.Errorf("cluster %s already exists (%s): choose another id for the clone", opts.ID, opts.DataDir)
		}
	}
	e, err := openTest(opts, b, nil)
	return e, info, err
}

func openTest(opts Options, restore *Backup, wrap func(*Device) client.Device) (*Embedded, error) {
	if opts.HSMs < 1 {
		return nil, fmt.Errorf("%w: a cluster needs at least one HSM", ErrInvalid)
	}
	r, err := NewRack(RackOptions{Dir: opts.DataDir, QuorumRules: opts.QuorumRules, Profile: opts.Profile, Restore: restore})
	if err != nil {
		return nil, err
	}
	e, err := client.OpenEmbedded(client.Options{ID: opts.ID, HSMs: opts.HSMs, DataDir: opts.DataDir,
		Durability: opts.Durability, Transport: opts.Transport, Client: opts.Client,
		SessionLifetime: opts.SessionLifetime, NoRenegotiate: opts.NoRenegotiate, Profile: opts.Profile}, testRack{r, wrap})
	if err != nil {
		r.Close()
		return nil, err
	}
	racks.Store(e, r)
	return e, nil
}

// devices are a test cluster's HSMs, in the rack's order (hsm-1 first);
// lab hsm remove takes one out.
func devices(e *Embedded) []*hsm {
	v, ok := racks.Load(e)
	if !ok {
		panic("devices: not a test cluster")
	}
	r := v.(*Rack)
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]*hsm, len(r.devices))
	for i, d := range r.devices {
		out[i] = d.h
	}
	return out
}

// device is the test cluster's HSM id.
func device(e *Embedded, id string) *hsm {
	for _, h := range devices(e) {
		if h.id == id {
			return h
		}
	}
	panic("device: no HSM " + id)
}

// MTLSChangeOf is a client.MTLSChange.
func MTLSChangeOf(certPEM []byte, ref int, level string) client.MTLSChange {
	return client.MTLSChange{CertPEM: certPEM, Ref: ref, Level: level}
}
