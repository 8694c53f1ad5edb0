package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/hsmsh/hsmsh/commands"
	"github.com/hsmsh/hsmsh/config"
	"github.com/hsmsh/hsmsh/hsmcore/pki"
)

// remoteClusterID is the id of --remote's cluster: its PKI's cluster
// certificate names it.
const remoteClusterID = "bench-remote"

// servers are --remote's HSM servers: hsmsh serve's code, run in this
// process on loopback TCP, with a throwaway PKI.
type servers struct {
	client *config.Config // the clients' configuration: mode "remote"
	tmp    string         // the PKI and the config file
	cancel context.CancelFunc
	done   []chan error
}

// startServers starts n HSM servers on free loopback ports, each keeping
// its store under dataDir ("" in memory), and waits until each accepts
// connections.
func startServers(ctx context.Context, n int, dataDir string) (_ *servers, err error) {
	tmp, err := os.MkdirTemp("", "hsmsh-bench-remote-")
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	s := &servers{tmp: tmp, cancel: cancel}
	defer func() {
		if err != nil {
			s.stop(io.Discard)
		}
	}()
	if _, err := pki.Init(pki.Options{Dir: filepath.Join(tmp, "pki"), ClusterID: remoteClusterID}); err != nil {
		return nil, fmt.Errorf("--remote: pki: %w", err)
	}
	var toml strings.Builder
	fmt.Fprintf(&toml, "[cluster]\nid = %q\nmode = \"remote\"\n", remoteClusterID)
	addrs := make([]string, n)
	for i := range n {
		if addrs[i], err = freePort(); err != nil {
			return nil, fmt.Errorf("--remote: %w", err)
		}
		fmt.Fprintf(&toml, "\n[[cluster.servers]]\nid = \"hsm-%d\"\naddress = %q\n", i+1, addrs[i])
	}
	fmt.Fprintf(&toml, "\n[durability]\nkey_availability_check = %t\n\n[tls]\npki_dir = %q\n",
		availabilityCheck(n), filepath.Join(tmp, "pki"))
	path := filepath.Join(tmp, "hsmsh.toml")
	if err := os.WriteFile(path, []byte(toml.String()), 0o600); err != nil {
		return nil, err
	}
	// No environment: HSMSH_* settings of the caller's must not reshape
	// the benchmark's cluster.
	cfg, err := config.Load(path, true, func(string) string { return "" })
	if err != nil {
		return nil, fmt.Errorf("--remote: %w", err)
	}
	s.client = cfg
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	for i := range n {
		done := make(chan error, 1)
		s.done = append(s.done, done)
		id := "hsm-" + strconv.Itoa(i+1)
		go func() { done <- commands.Serve(ctx, cfg, id, dataDir, quiet, nil, "", false) }()
	}
	for i, addr := range addrs {
		if err := waitListening(addr, s.done[i]); err != nil {
			return nil, fmt.Errorf("--remote: server hsm-%d: %w", i+1, err)
		}
	}
	return s, nil
}

// stop shuts the servers down and removes the PKI; a server's error is
// reported on w.
func (s *servers) stop(w io.Writer) {
	s.cancel()
	for i, done := range s.done {
		if err := <-done; err != nil {
			fmt.Fprintf(w, "hsmsh bench: server hsm-%d: %v\n", i+1, err)
		}
	}
	os.RemoveAll(s.tmp)
}

// freePort is a loopback address with a port nobody listens on now.
func freePort() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// waitListening waits until addr accepts a TCP connection, or the server
// behind it has stopped (done), for at most 10 seconds.
func waitListening(addr string, done chan error) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		select {
		case serr := <-done:
			done <- serr // stop reads it again
			if serr == nil {
				serr = errors.New("stopped before it listened")
			}
			return serr
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not listening on %s after 10s: %v", addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
