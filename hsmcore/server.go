package hsmcore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"sync"
	"time"

	"github.com/hsmsh/hsmsh/hsmcore/nestedtls"
	"github.com/hsmsh/hsmsh/hsmcore/quorum"
	"github.com/hsmsh/hsmsh/hsmcore/rpc"
)

// Peer is another HSM server of the same cluster.
type Peer struct {
	ID   string
	Addr string
}

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
}

// Server is one HSM server: an HSM with its own store, reached over the
// nested TLS connection, syncing from its peers.
type Server struct {
	opts  ServerOptions
	local *hsm
	group *Embedded // local + peers: what server-side sync runs over
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
	g := &Embedded{id: opts.ID, sessions: map[string]Caller{}, deleted: map[Ref]bool{}, sessionKeys: map[Ref]sessionKey{}, auth: map[string]*clientSession{},
		dur: Durability{MinimumNodes: 1, ServerSyncInterval: opts.SyncInterval}}
	var st store
	if opts.DataDir != "" {
		l, err := lockDir(opts.DataDir)
		if err != nil {
			return nil, err
		}
		g.lock = l
		s, err := openBoltStore(filepath.Join(opts.DataDir, opts.ID))
		if err != nil {
			g.Close()
			return nil, fmt.Errorf("open %s: %w", opts.ID, err)
		}
		st = s
	}
	h, err := newHSM(opts.ID, st)
	if err != nil {
		if st != nil {
			st.close()
		}
		g.Close()
		return nil, fmt.Errorf("open %s: %w", opts.ID, err)
	}
	h.rules = opts.QuorumRules
	if opts.Restore != nil {
		if err := restoreServer(h, opts, log); err != nil {
			h.Close()
			g.Close()
			return nil, err
		}
	}
	g.hsms = []node{h}
	for _, p := range opts.Peers {
		pn := dialNode(p.ID, p.Addr, opts.PeerTLS, 0)
		pn.notify = func(ev Event) {
			log.Info("peer "+string(ev.Kind), "peer", ev.HSM, "detail", ev.Detail)
		}
		g.hsms = append(g.hsms, pn)
	}
	g.syncInto = func(n node) bool { return n == node(h) }
	s := &Server{opts: opts, local: h, group: g, log: log}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	for _, n := range g.hsms[1:] {
		n.(*remoteNode).start(0) // in the background: peers may start later
	}
	events, _ := g.Subscribe(64)
	go func() {
		for ev := range events {
			if ev.Kind == EventSyncFinished && ev.Count > 0 {
				log.Info("server-side sync", "hsm", opts.ID, "result", ev.Detail)
			}
		}
	}()
	g.startSync()
	return s, nil
}

// dialNode is a node for an HSM server at addr, reached over nested TLS.
func dialNode(id, addr string, cfg nestedtls.ClientConfig, timeout time.Duration) *remoteNode {
	return newRemoteNode(id, addr, timeout, func(ctx context.Context) (net.Conn, nestedtls.Info, error) {
		return nestedtls.Dial(ctx, addr, cfg)
	})
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
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				// Out of file descriptors and the like: back off, go on.
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				time.Sleep(delay)
				continue
			}
			return err
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
	err = rpc.Serve(s.ctx, acc, s.handle(), s.opts.RPC)
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

// handle answers the node methods with the server's HSM, and the sync
// and latency controls the lab sends in remote mode.
func (s *Server) handle() rpc.Handler {
	base := nodeHandler(s.local)
	return func(ctx context.Context, method string, args json.RawMessage) (any, error) {
		switch method {
		case mSyncNow:
			return s.group.SyncNow(ctx), nil
		case mSyncPause:
			s.group.PauseSync()
			s.log.Info("server-side sync paused by a client", "hsm", s.opts.ID)
			return s.group.SyncStatus(), nil
		case mSyncResume:
			s.group.ResumeSync()
			s.log.Info("server-side sync resumed by a client", "hsm", s.opts.ID)
			return s.group.SyncStatus(), nil
		case mSyncStatus:
			return s.group.SyncStatus(), nil
		case mLatency:
			var d time.Duration
			if err := json.Unmarshal(args, &d); err != nil || d < 0 || d > maxLatency {
				return nil, &rpc.RemoteError{Code: codeInvalid, Message: fmt.Sprintf("%v: latency must be 0 to %v", ErrInvalid, maxLatency)}
			}
			s.local.latency.Store(int64(d))
			s.log.Info("latency set by a client", "hsm", s.opts.ID, "latency", d.String())
			return nil, nil
		}
		return base(ctx, method, args)
	}
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
	err := s.group.Close()
	s.log.Info("stopped", "hsm", s.opts.ID)
	return err
}

// SyncNow runs one server-side sync pass at once.
func (s *Server) SyncNow(ctx context.Context) SyncStats { return s.group.SyncNow(ctx) }

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
