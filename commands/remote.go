package commands

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"

	"github.com/hsmsh/hsmsh/config"
	"github.com/hsmsh/hsmsh/hsmcore"
	"github.com/hsmsh/hsmsh/hsmcore/host"
	"github.com/hsmsh/hsmsh/hsmcore/nestedtls"
	"github.com/hsmsh/hsmsh/hsmcore/netguard"
	"github.com/hsmsh/hsmsh/hsmcore/rpc"
)

// tlsFiles names the PKI files the configuration's [tls] keys give.
func tlsFiles(cfg *config.Config) nestedtls.Files {
	t := cfg.TLS
	return nestedtls.Files{
		TrustDir: t.TrustDir, ClientCert: t.ClientCert, ClientKey: t.ClientKey, CustomerCA: t.CustomerCA,
		ServerCert: t.ServerCert, ServerKey: t.ServerKey, ClusterCert: t.ClusterCert, ClusterKey: t.ClusterKey,
		ClusterID: cfg.Cluster.ID,
	}
}

// pkiHint is what to do when the PKI files cannot be read.
func pkiHint(cfg *config.Config, err error) error {
	return fmt.Errorf("%w\n(the remote mode needs the certificates of hsmsh pki init --dir %s --cluster-id %s, or [tls] paths that name them; the config's pki_dir is %s)",
		err, cfg.TLS.PKIDir, cfg.Cluster.ID, cfg.TLS.PKIDir)
}

func servers(cfg *config.Config) []hsmcore.Peer {
	out := make([]hsmcore.Peer, 0, len(cfg.Cluster.Servers))
	for _, s := range cfg.Cluster.Servers {
		out = append(out, hsmcore.Peer{ID: s.ID, Addr: s.Address})
	}
	return out
}

// openRemote connects to the servers of [[cluster.servers]].
func openRemote(cfg *config.Config, dataDir string) (hsmcore.Cluster, error) {
	tlsCfg, err := nestedtls.LoadClient(tlsFiles(cfg))
	if err != nil {
		return nil, pkiHint(cfg, err)
	}
	// The servers apply the rule sets; a client's are checked for errors
	// only.
	_, client, err := clientSide(cfg, dataDir)
	if err != nil {
		return nil, err
	}
	c, err := hsmcore.OpenRemote(hsmcore.RemoteOptions{
		Client:          client,
		SessionLifetime: cfg.Session.Lifetime,
		NoRenegotiate:   !cfg.Session.Renegotiate,
		ID:              cfg.Cluster.ID,
		Servers:         servers(cfg),
		TLS:             tlsCfg,
		Durability:      durability(cfg),
	})
	if err != nil {
		return nil, err
	}
	return c, nil
}

// Serve runs the HSM server named id in the configuration's
// [[cluster.servers]], on that entry's address, until ctx is done; then it
// shuts down gracefully. Its HSM's store lives under dataDir ("" keeps it
// in memory). log receives the server's connection and sync lines.
// restore, if not nil, is a backup a new server starts from, opened with
// password: a cluster restored into a fresh set of servers. lab turns on
// the lab's calls (sync control, latency) for the cluster's clients.
func Serve(ctx context.Context, cfg *config.Config, id, dataDir string, log *slog.Logger, restore []byte, password string, lab bool) error {
	var me *config.Server
	var ids []string
	for i, s := range cfg.Cluster.Servers {
		ids = append(ids, s.ID)
		if s.ID == id {
			me = &cfg.Cluster.Servers[i]
		}
	}
	if me == nil {
		if len(ids) == 0 {
			where := cfg.Path
			if where == "" {
				where = "the configuration (no file was loaded: pass --config FILE)"
			}
			return fmt.Errorf("%s has no [[cluster.servers]]: add one table per HSM server, with id and address", where)
		}
		return fmt.Errorf("no server %q in [[cluster.servers]] of %s (servers: %s)", id, cfg.Path, strings.Join(ids, ", "))
	}
	files := tlsFiles(cfg)
	srvTLS, err := nestedtls.LoadServer(files)
	if err != nil {
		return pkiHint(cfg, err)
	}
	// The cluster certificate must name this cluster: clients check it
	// against [cluster] id, and would refuse every connection to a server
	// that started with another cluster's.
	if leaf, err := x509.ParseCertificate(srvTLS.Cluster.Certificate[0]); err == nil {
		if err := leaf.VerifyHostname(cfg.Cluster.ID); err != nil {
			return fmt.Errorf("server %s: the cluster certificate %s is not for cluster %q ([cluster] id of %s): %v; make one for this cluster with hsmsh pki init --cluster-id %s, or set [cluster] id to the certificate's", id, files.ClusterCert, cfg.Cluster.ID, cfg.Path, err, cfg.Cluster.ID)
		}
	}
	peerTLS, err := nestedtls.LoadClient(files)
	if err != nil {
		return pkiHint(cfg, err)
	}
	var peers []hsmcore.Peer
	for _, p := range servers(cfg) {
		if p.ID != id {
			peers = append(peers, p)
		}
	}
	dir := ""
	if dataDir != "" {
		dir = filepath.Join(dataDir, "servers", cfg.Cluster.ID, id)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return err
		}
	}
	ln, err := net.Listen("tcp", me.Address)
	if err != nil {
		return fmt.Errorf("server %s: listen on %s (its address in [[cluster.servers]]): %w", id, me.Address, err)
	}
	// [server] max_connections: a flood of connections is refused before
	// it can use up the process's file descriptors, and running out of
	// them (or any other accept failure) is waited out, not fatal.
	ln = netguard.Listen(ln, netguard.Options{MaxConns: cfg.Server.MaxConnections, Log: log})
	rules, err := quorumRules(cfg)
	if err != nil {
		ln.Close()
		return err
	}
	srv, err := host.NewServer(host.ServerOptions{
		QuorumRules: rules,
		ID:          id, DataDir: dir, TLS: srvTLS, Peers: peers, PeerTLS: peerTLS,
		SyncInterval: cfg.Durability.ServerSyncInterval, Log: log,
		Restore: restore, RestorePassword: password, Lab: lab,
		// [server] idle_timeout closes abandoned connections; a handler's
		// panic fails its one request and is logged here.
		RPC: rpc.ServerOptions{IdleTimeout: cfg.Server.IdleTimeout, Log: log},
	})
	if err != nil {
		ln.Close()
		return err
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	select {
	case <-ctx.Done():
		log.Info("shutting down", "hsm", id, "reason", "signal")
	case err = <-done:
	}
	if serr := srv.Shutdown(); serr != nil {
		err = errors.Join(err, serr)
	}
	return err
}
