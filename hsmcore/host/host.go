// Package host runs HSM devices (package hsm) in this process: the
// embedded cluster, a rack of HSMs that the client library (package
// client) reaches through their doors only, and one HSM server of a
// remote cluster (hsmsh serve). It is the one place that names both
// rooms, so that the client library, and the hsmcore names the command
// layer uses, never import the device.
package host

import (
	"fmt"
	"os"
	"time"

	"github.com/hsmsh/hsmsh/hsmcore/client"
	"github.com/hsmsh/hsmsh/hsmcore/hsm"
	"github.com/hsmsh/hsmsh/hsmcore/protocol"
	"github.com/hsmsh/hsmsh/hsmcore/quorum"
)

// Options configure an embedded cluster.
type Options struct {
	ID   string
	HSMs int
	// DataDir is the folder that holds this cluster's HSM stores, one
	// sub-folder per HSM; "" keeps everything in memory (--ephemeral).
	DataDir    string
	Durability client.Durability
	// Transport is client.TransportTLS (also "") or client.TransportDirect.
	Transport string
	// QuorumRules are KMS-style quorum rule sets by command path ("user
	// delete"), which the HSMs apply.
	QuorumRules map[string][]quorum.Rule
	// Client is this client install's identity for authenticated
	// sessions; a zero value makes one for the process.
	Client client.ClientIdentity
	// SessionLifetime is how long a login session lasts (default 1h).
	SessionLifetime time.Duration
	// NoRenegotiate forgets the password after login: an expired session
	// then needs a new login instead of a transparent renegotiation.
	NoRenegotiate bool
	// Profile makes each HSM serve at a real HSM type's published rates
	// (package profile's names).
	Profile string
}

func (o Options) clientOptions() client.Options {
	return client.Options{ID: o.ID, HSMs: o.HSMs, DataDir: o.DataDir, Durability: o.Durability,
		Transport: o.Transport, Client: o.Client, SessionLifetime: o.SessionLifetime,
		NoRenegotiate: o.NoRenegotiate, Profile: o.Profile}
}

// Embedded opens (or creates) an embedded cluster: device HSMs in this
// process (package hsm), which the client library (package client)
// reaches through their doors only, as it reaches a remote cluster's.
func Embedded(opts Options) (*client.Embedded, error) {
	return open(opts, nil)
}

// Clone makes a new embedded cluster from a backup: every HSM starts
// with the backup's domain, users and keys.
func Clone(opts Options, file []byte, password string) (*client.Embedded, client.BackupInfo, error) {
	info, b, err := hsm.OpenBackup(file, password)
	if err != nil {
		return nil, info, err
	}
	defer b.Clear()
	if opts.DataDir != "" {
		if entries, err := os.ReadDir(opts.DataDir); err == nil && len(entries) > 0 {
			return nil, info, fmt.Errorf("cluster %s already exists (%s): choose another id for the clone", opts.ID, opts.DataDir)
		}
	}
	e, err := open(opts, b)
	return e, info, err
}

func open(opts Options, restore *hsm.Backup) (*client.Embedded, error) {
	if opts.HSMs < 1 {
		return nil, fmt.Errorf("%w: a cluster needs at least one HSM", protocol.ErrInvalid)
	}
	r := &rack{}
	var err error
	r.Rack, err = hsm.NewRack(hsm.RackOptions{Dir: opts.DataDir, QuorumRules: opts.QuorumRules,
		Profile: opts.Profile, Restore: restore})
	if err != nil {
		return nil, err
	}
	e, err := client.OpenEmbedded(opts.clientOptions(), r)
	if err != nil {
		r.Close()
		return nil, err
	}
	return e, nil
}

// rack gives the client library the device rack under the client's own
// interface.
type rack struct {
	*hsm.Rack
}

func (r *rack) Add(id string, spare bool) (client.Device, error) {
	d, err := r.Rack.Add(id, spare)
	if err != nil {
		return nil, err
	}
	return d, nil
}

// ServerOptions configure one HSM server of a remote cluster.
type ServerOptions = hsm.ServerOptions

// Server is one HSM server: an HSM with its own store behind both TLS
// layers, syncing from its peers.
type Server = hsm.Server

// NewServer opens a server's HSM and starts syncing from its peers.
func NewServer(opts ServerOptions) (*Server, error) { return hsm.NewServer(opts) }
