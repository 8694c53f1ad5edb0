package hsm

import (
	"context"
	"crypto"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"sync"
	"time"

	"github.com/hsmsh/hsmsh/hsmcore/link"
	"github.com/hsmsh/hsmsh/hsmcore/nestedtls"
	"github.com/hsmsh/hsmsh/hsmcore/protocol"
	"github.com/hsmsh/hsmsh/hsmcore/quorum"
	"github.com/hsmsh/hsmsh/hsmcore/rpc"
	"github.com/hsmsh/hsmsh/hsmcore/syncloop"
)

// ServerOptions configure one HSM server of a remote cluster.
type ServerOptions struct {
	ID string // the HSM's id, as the config's [[cluster.servers]] names it
	// DataDir holds the HSM's store; "" keeps it in memory.
	DataDir string
	TLS     nestedtls.ServerConfig
	// Peers are the cluster's other servers. This server pulls from them
	// what its HSM lacks (server-side sync), reaching them as a client
	// would, with PeerTLS: the servers authenticate each other with the
	// same PKI as clients.
	Peers        []Peer
	PeerTLS      nestedtls.ClientConfig
	SyncInterval time.Duration
	// Log receives one line per connection (who, and which layer failed
	// and why) and per sync pass that changed something.
	Log *slog.Logger
	// RPC bounds what one connection may cost.
	RPC rpc.ServerOptions
	// HandshakeTimeout bounds both TLS handshakes. Default 10s.
	HandshakeTimeout time.Duration
	// QuorumRules are KMS-style quorum rule sets by command path.
	QuorumRules map[string][]quorum.Rule
	// Restore, if set, is a backup (cluster backup create) a new server
	// starts from, opened with RestorePassword: a cluster restored into a
	// fresh set of servers. A server already in the backup's domain (a
	// restart with the same flags) starts as it is.
	Restore         []byte
	RestorePassword string
	// Lab turns on the lab's calls (pause, resume and trigger sync, add
	// latency) for any client of the cluster: for teaching, never for a
	// cluster that holds keys that matter.
	Lab bool
}

// Server is one HSM server: an HSM with its own store, reached over the
// nested TLS connection, syncing from its peers.
type Server struct {
	opts  ServerOptions
	local *hsm
	peers []*link.Node // the cluster's other servers, as peers reach them
	sync  syncloop.Loop
	lock  *dirLock
	log   *slog.Logger

	ctx    context.Context
	cancel context.CancelFunc
	conns  sync.WaitGroup

	mu  sync.Mutex
	lns []net.Listener
}

// NewServer opens the server's HSM (locking its data dir against a second
// process) and starts server-side sync from its peers.
func NewServer(opts ServerOptions) (*Server, error) {
	if opts.ID == "" {
		return nil, fmt.Errorf("%w: a server needs an HSM id", ErrInvalid)
	}
	if opts.HandshakeTimeout <= 0 {
		opts.HandshakeTimeout = 10 * time.Second
	}
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{opts: opts, log: log}
	var st store
	if opts.DataDir != "" {
		l, err := lockDir(opts.DataDir)
		if err != nil {
			return nil, err
		}
		s.lock = l
		bs, err := openBoltStore(filepath.Join(opts.DataDir, opts.ID))
		if err != nil {
			l.release()
			return nil, fmt.Errorf("open %s: %w", opts.ID, err)
		}
		st = bs
	}
	h, err := newHSM(opts.ID, st)
	if err != nil {
		if st != nil {
			st.close()
		}
		s.lock.release()
		return nil, fmt.Errorf("open %s: %w", opts.ID, err)
	}
	h.rules = opts.QuorumRules
	if opts.DataDir != "" {
		h.raft.dir = filepath.Join(opts.DataDir, opts.ID)
	}
	if opts.Restore == nil {
		// A new server starts with the cluster's unactivated admin; one
		// that joins a running cluster gets the activated one by sync,
		// whose newer version wins.
		if err := h.ensureAdmin(); err != nil {
			h.Close()
			s.lock.release()
			return nil, err
		}
	}
	if opts.Restore != nil {
		if err := restoreServer(h, opts, log); err != nil {
			h.Close()
			s.lock.release()
			return nil, err
		}
	}
	s.local = h
	// The outer layer asks the HSM about mTLS enforcement for every client
	// certificate; peers show the cluster certificate, which only servers
	// hold, so enforcement never cuts the servers off from each other.
	s.opts.TLS.Anchors = h.anchors
	if len(opts.TLS.Cluster.Certificate) > 0 {
		opts.PeerTLS.Certificate = opts.TLS.Cluster
	}
	for _, p := range opts.Peers {
		pn := link.Dial(p.ID, p.Addr, opts.PeerTLS, 0)
		pn.Notify = func(ev Event) {
			log.Info("peer "+string(ev.Kind), "peer", ev.HSM, "detail", ev.Detail)
		}
		s.peers = append(s.peers, pn)
	}
	// The cluster certificate's key endorses this HSM's identity to its
	// peers: only a server of the cluster holds it, never a client.
	endorser, _ := opts.TLS.Cluster.PrivateKey.(crypto.Signer)
	h.setPeers(func() []peerLink {
		out := make([]peerLink, len(s.peers))
		for i, p := range s.peers {
			out[i] = p
		}
		return out
	}, endorser)
	h.mu.Lock()
	h.notify = func(ev Event) {
		log.Info(string(ev.Kind), "hsm", opts.ID, "ref", ev.Ref, "detail", ev.Detail)
	}
	if opts.Lab {
		h.lab = s.labCall
	}
	h.mu.Unlock()
	s.ctx, s.cancel = context.WithCancel(context.Background())
	for _, n := range s.peers {
		n.Start(0) // in the background: peers may start later
	}
	s.sync.Start(func() time.Duration { return opts.SyncInterval }, func(ctx context.Context) SyncStats {
		return h.syncPass(ctx)
	}, func(ev Event) {
		if ev.Kind == EventSyncFinished && ev.Count > 0 {
			log.Info("server-side sync", "hsm", opts.ID, "result", ev.Detail)
		}
	})
	// A new server joins (or, with every peer new too, forms) the domain
	// as soon as it can, not only at the first sync pass.
	go func() {
		for s.ctx.Err() == nil {
			h.mu.RLock()
			in := h.domain != nil
			h.mu.RUnlock()
			if in {
				// Restarted, or just admitted: its raft node starts.
				if err := h.startRaft(); err != nil {
					log.Error("raft", "hsm", opts.ID, "reason", err.Error())
				}
				return
			}
			if err := h.ensureDomain(); err != nil && !errors.Is(err, errNoDomainYet) {
				log.Warn("domain", "hsm", opts.ID, "reason", err.Error())
			}
			select {
			case <-s.ctx.Done():
			case <-time.After(200 * time.Millisecond):
			}
		}
	}()
	return s, nil
}

// Serve accepts connections on ln until Shutdown. Each one must pass both
// TLS layers; each is logged with who it was, or which layer refused it
// and why.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.ctx.Err() != nil {
		s.mu.Unlock()
		ln.Close()
		return net.ErrClosed
	}
	s.lns = append(s.lns, ln)
	s.mu.Unlock()
	s.log.Info("serving", "hsm", s.opts.ID, "address", ln.Addr().String(), "peers", len(s.opts.Peers))
	var delay time.Duration
	for {
		raw, err := ln.Accept()
		if err != nil {
			if s.ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, net.ErrClosed) {
				return err
			}
			// Out of file descriptors (EMFILE) and the like: back off and
			// go on. A server must not exit because a flood of connections
			// used up its descriptors for a moment.
			if delay == 0 {
				s.log.Warn("accept failed; backing off", "hsm", s.opts.ID, "reason", err.Error())
			}
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			time.Sleep(delay)
			continue
		}
		delay = 0
		s.conns.Add(1)
		go func() {
			defer s.conns.Done()
			s.serveConn(raw)
		}()
	}
}

func (s *Server) serveConn(raw net.Conn) {
	from := raw.RemoteAddr().String()
	hctx, cancel := context.WithTimeout(s.ctx, s.opts.HandshakeTimeout)
	raw.SetDeadline(time.Now().Add(s.opts.HandshakeTimeout))
	acc, err := nestedtls.Handshake(hctx, raw, s.opts.TLS)
	cancel()
	if err != nil {
		raw.Close()
		var le *nestedtls.LayerError
		if errors.As(err, &le) {
			reason := le.Err.Error()
			if errors.Is(le.Err, io.EOF) {
				reason = "the peer hung up before the handshake was done (a port probe, or a client that gave up)"
			}
			s.log.Warn("connection refused", "from", from, "layer", string(le.Layer), "reason", reason)
		} else {
			s.log.Warn("connection refused", "from", from, "reason", err.Error())
		}
		return
	}
	raw.SetDeadline(time.Time{})
	s.log.Info("client connected", "from", from, "client", acc.Client)
	err = rpc.Serve(withOrigin(s.ctx, origin{remote: true, anchored: acc.Anchored}), acc, s.handle(), s.opts.RPC)
	// Close the socket under the TLS layers: a peer that is not reading
	// (one stuck writing an oversize frame) would hold a TLS close_notify
	// for its 5 s deadline.
	raw.Close()
	acc.Close()
	if err != nil && s.ctx.Err() == nil {
		s.log.Warn("client dropped", "from", from, "client", acc.Client, "reason", err.Error())
		return
	}
	s.log.Info("client disconnected", "from", from, "client", acc.Client)
}

// handle is the server's door: its HSM's.
func (s *Server) handle() rpc.Handler { return s.local.handler() }

// labCall serves the lab's calls, on a server started with --lab.
func (s *Server) labCall(method string, args []byte) (any, error) {
	switch method {
	case protocol.CallSyncNow:
		return s.sync.Now(s.ctx), nil
	case protocol.CallSyncPause:
		s.sync.Pause()
		s.log.Info("server-side sync paused by a client", "hsm", s.opts.ID)
		return s.sync.Status(), nil
	case protocol.CallSyncResume:
		s.sync.Resume()
		s.log.Info("server-side sync resumed by a client", "hsm", s.opts.ID)
		return s.sync.Status(), nil
	case protocol.CallSyncStatus:
		return s.sync.Status(), nil
	case protocol.CallLatency:
		var d time.Duration
		if err := json.Unmarshal(args, &d); err != nil || d < 0 || d > protocol.MaxLatency {
			return nil, fmt.Errorf("%w: latency must be 0 to %v", ErrInvalid, protocol.MaxLatency)
		}
		s.local.latency.Store(int64(d))
		s.log.Info("latency set by a client", "hsm", s.opts.ID, "latency", d.String())
		return nil, nil
	}
	return nil, fmt.Errorf("%w %q", errUnknownMethod, method)
}

// Shutdown stops accepting, ends every connection once its requests in
// flight are answered (a key acknowledged is on disk), stops sync and
// closes the store.
func (s *Server) Shutdown() error {
	s.mu.Lock()
	s.cancel()
	for _, ln := range s.lns {
		ln.Close()
	}
	s.mu.Unlock()
	s.conns.Wait()
	s.sync.Close()
	for _, p := range s.peers {
		p.Close()
	}
	err := s.local.Close()
	s.lock.release()
	s.log.Info("stopped", "hsm", s.opts.ID)
	return err
}

// SyncNow runs one server-side sync pass at once.
func (s *Server) SyncNow(ctx context.Context) SyncStats { return s.sync.Now(ctx) }

// restoreServer loads a backup into a new server's HSM.
func restoreServer(h *hsm, opts ServerOptions, log *slog.Logger) error {
	info, c, err := openBackup(opts.Restore, opts.RestorePassword)
	if err != nil {
		return fmt.Errorf("restore %s: %w", opts.ID, err)
	}
	defer func() {
		clear(c.Domain)
		for i := range c.Keys {
			clear(c.Keys[i].Material)
		}
	}()
	h.mu.RLock()
	already := h.domain != nil && h.domain.ID() == info.Domain
	h.mu.RUnlock()
	if already {
		log.Info("restore skipped: the HSM is already in the backup's domain", "hsm", opts.ID, "domain", info.Domain)
		return nil
	}
	if err := h.restore(c); err != nil {
		return fmt.Errorf("restore %s: %w", opts.ID, err)
	}
	log.Info("restored from backup", "hsm", opts.ID, "cluster", info.Cluster, "from", info.HSM, "keys", info.Keys, "users", info.Users, "domain", info.Domain)
	return nil
}
