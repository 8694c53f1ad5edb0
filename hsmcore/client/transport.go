package client

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/hsmsh/hsmsh/hsmcore/link"
	"github.com/hsmsh/hsmsh/hsmcore/nestedtls"
	"github.com/hsmsh/hsmsh/hsmcore/pki"
	"github.com/hsmsh/hsmsh/hsmcore/rpc"
)

// Transports: how the client library reaches the embedded cluster's HSMs.
const (
	// TransportTLS runs every in-process HSM behind the same nested TLS
	// stack and protocol as a remote server, over an in-memory pipe: the
	// TLS pane shows real handshakes with no set-up, for teaching the two
	// layers. The library's zero value, so that its tests exercise the
	// whole stack.
	TransportTLS = "tls"
	// TransportDirect calls each in-process HSM's door (Device.Serve) as
	// a function: the same calls, encoded as the wire carries them and
	// sealed in session envelopes, without TLS, pipes or goroutine
	// hand-offs. hsmsh's configured default: it is what people compare
	// with SoftHSM2 (BENCHMARKS.md).
	TransportDirect = "direct"
)

// PKIFiles names the files of a PKI folder that hsmsh pki init wrote.
func PKIFiles(dir, clusterID string) nestedtls.Files {
	p := func(name string) string { return filepath.Join(dir, name) }
	return nestedtls.Files{
		TrustDir: p(pki.TrustDir), ClientCert: p(pki.ClientCert), ClientKey: p(pki.ClientKey),
		CustomerCA: p(pki.CustomerCACert), ServerCert: p(pki.ServerCert), ServerKey: p(pki.ServerKey),
		ClusterCert: p(pki.ClusterCert), ClusterKey: p(pki.ClusterKey), ClusterID: clusterID,
	}
}

// pipeTransport connects the client library to in-process HSMs over
// in-memory pipes carrying the nested TLS connection.
type pipeTransport struct {
	server  nestedtls.ServerConfig
	client  nestedtls.ClientConfig
	ctx     context.Context
	cancel  context.CancelFunc
	serving sync.WaitGroup
}

// newPipeTransport loads the cluster's PKI from dir, making it on first
// use; dir "" (an ephemeral cluster) gets a PKI that lives in memory only.
func newPipeTransport(dir, clusterID string) (*pipeTransport, error) {
	pkiDir := dir
	if dir == "" {
		tmp, err := os.MkdirTemp("", "hsmsh-pki-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(tmp)
		pkiDir = tmp
	}
	files := PKIFiles(pkiDir, clusterID)
	if _, err := os.Stat(files.CustomerCA); errors.Is(err, os.ErrNotExist) {
		if err := os.MkdirAll(pkiDir, 0o700); err != nil {
			return nil, fmt.Errorf("make the embedded cluster's PKI: %w", err)
		}
		if _, err := pki.Init(pki.Options{Dir: pkiDir, ClusterID: clusterID}); err != nil {
			return nil, fmt.Errorf("make the embedded cluster's PKI in %s: %w", pkiDir, err)
		}
	}
	srv, err := nestedtls.LoadServer(files)
	if err != nil {
		return nil, fmt.Errorf("the embedded cluster's PKI in %s: %w (delete the folder to have a new one made)", pkiDir, err)
	}
	cli, err := nestedtls.LoadClient(files)
	if err != nil {
		return nil, fmt.Errorf("the embedded cluster's PKI in %s: %w (delete the folder to have a new one made)", pkiDir, err)
	}
	if dir == "" {
		// The files are gone once loaded; say where they lived instead.
		cli.Trust.Dir, cli.CustomerCAFile = "(ephemeral PKI, in memory)/"+pki.TrustDir, "ephemeral PKI, in memory"
	}
	t := &pipeTransport{server: srv, client: cli}
	t.ctx, t.cancel = context.WithCancel(context.Background())
	return t, nil
}

// wrap puts h behind the nested TLS stack.
func (t *pipeTransport) wrap(h Device) node {
	dial := func(ctx context.Context) (net.Conn, nestedtls.Info, error) {
		c, s := net.Pipe()
		t.serving.Add(1)
		go func() {
			defer t.serving.Done()
			hctx, cancel := context.WithTimeout(t.ctx, 10*time.Second)
			acc, err := nestedtls.Handshake(hctx, s, t.server)
			cancel()
			if err != nil {
				s.Close()
				return
			}
			rpc.Serve(t.ctx, acc, h.Handler(), rpc.ServerOptions{})
		}()
		conn, info, err := nestedtls.Client(ctx, c, t.client)
		if err != nil {
			return nil, info, err
		}
		return pipeConn{Conn: conn, raw: c}, info, nil
	}
	n := &localNode{remoteNode: remoteNode{link.New(h.ID(), "in-process (pipe)", 0, dial)}, h: h}
	n.Start(10 * time.Second)
	return n
}

func (t *pipeTransport) close() {
	t.cancel()
	t.serving.Wait()
}

// pipeConn closes the pipe under the TLS layers first: a pipe has no
// buffer, so the close_notify alerts that both ends would otherwise write
// at once on closing wait on each other until TLS's 5 s deadline.
type pipeConn struct {
	net.Conn
	raw net.Conn
}

func (c pipeConn) Close() error {
	err := c.raw.Close()
	c.Conn.Close() // only fails to send close_notify on the closed pipe
	return err
}

// localNode is an in-process HSM reached over the pipe transport. Its
// up/down state is the HSM's own, which the lab sets; the connection to
// it does not go down unless the client closes it.
type localNode struct {
	remoteNode
	h Device
}

func (n *localNode) Up() bool { return n.h.Up() && n.Node.Up() }

func (n *localNode) Info() HSMInfo {
	info := n.h.Info()
	info.Address = n.Addr()
	info.TLS = n.TLSSummary()
	if why := n.downReason(); why != "" {
		info.TLS = "not connected: " + why
	}
	return info
}

// downReason says why an in-process HSM behind the pipe serves nothing
// although its connection stays open: the lab failed or destroyed it.
func (n *localNode) downReason() string {
	switch n.h.Info().State {
	case StateDown:
		return n.h.ID() + " is down (lab hsm fail)"
	case StateDestroyed:
		return n.h.ID() + " was destroyed (lab hsm fail --destroy)"
	}
	return ""
}

// Close ends the connection, then closes the HSM's store.
func (n *localNode) Close() error {
	return errors.Join(n.Node.Close(), n.h.Close())
}

// inProcess returns the in-process HSM behind a node, if there is one.
func inProcess(n node) (Device, bool) {
	switch n := n.(type) {
	case directNode:
		return n.d, true
	case *localNode:
		return n.h, true
	}
	return nil, false
}

// TLSInfo describes each HSM's nested TLS connection.
func (e *Embedded) TLSInfo(ctx context.Context) []HSMTLS {
	var out []HSMTLS
	for _, n := range e.members() {
		out = append(out, tlsInfo(n))
	}
	return out
}

func tlsInfo(n node) HSMTLS {
	var r *link.Node
	down := ""
	switch n := n.(type) {
	case remoteNode:
		r = n.Node
	case *localNode:
		r, down = n.Node, n.downReason()
	default:
		why := `not used: in-process calls through the HSM's door (transport = "direct", the default); set transport = "tls" to run both TLS layers over in-memory pipes`
		return HSMTLS{ID: n.ID(), Address: "in-process", Transport: TransportDirect,
			Outer: nestedtls.LayerInfo{Status: why}, Inner: nestedtls.LayerInfo{Status: why}}
	}
	info, err := r.TLS()
	t := HSMTLS{ID: r.ID(), Address: r.Addr(), Transport: "nested-tls", Outer: info.Outer, Inner: info.Inner}
	if err != nil {
		t.Error = err.Error()
	}
	if down != "" {
		// The pipe is still there, but nothing answers on it.
		t.Outer.Status, t.Inner.Status, t.Error = "not connected", "not connected", down
	}
	if t.Outer.Status == "" {
		t.Outer.Status = "not reached: no connection yet"
	}
	if t.Inner.Status == "" {
		t.Inner.Status = "not reached: the outer layer did not complete"
	}
	return t
}
