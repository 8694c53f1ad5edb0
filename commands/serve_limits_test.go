package commands

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hsmsh/hsmsh/internal/syncbuf"

	"github.com/hsmsh/hsmsh/config"
	"github.com/hsmsh/hsmsh/hsmcore/nestedtls"
	"github.com/hsmsh/hsmsh/hsmcore/pki"
	"github.com/hsmsh/hsmsh/hsmcore/rpc"
)

type lockedBuffer = syncbuf.Buffer

// Serve applies the [server] table: max_connections caps the connections
// open at once (one more is closed at once, and logged), and idle_timeout
// closes a connection that sends no request.
func TestServeAppliesServerLimits(t *testing.T) {
	dir := t.TempDir()
	if _, err := pki.Init(pki.Options{Dir: filepath.Join(dir, "pki"), ClusterID: "cluster-local"}); err != nil {
		t.Fatal(err)
	}
	free, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := free.Addr().String()
	free.Close()
	path := filepath.Join(dir, "hsmsh.toml")
	toml := fmt.Sprintf(`[cluster]
mode = "remote"
[[cluster.servers]]
id = "hsm-1"
address = %q
[tls]
pki_dir = "pki"
[server]
idle_timeout = "1s"
max_connections = 2
`, addr)
	if err := os.WriteFile(path, []byte(toml), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(path, true, nil)
	if err != nil {
		t.Fatal(err)
	}
	var logs lockedBuffer
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() {
		served <- Serve(ctx, cfg, "hsm-1", "", slog.New(slog.NewTextHandler(&logs, nil)), nil, "", false)
	}()
	defer func() {
		cancel()
		select {
		case <-served:
		case <-time.After(10 * time.Second):
			t.Error("Serve did not stop")
		}
	}()

	// idle_timeout: a client that sends nothing is told so and dropped.
	cliTLS, err := nestedtls.LoadClient(tlsFiles(cfg))
	if err != nil {
		t.Fatal(err)
	}
	var conn net.Conn
	for start := time.Now(); ; time.Sleep(20 * time.Millisecond) {
		dctx, dcancel := context.WithTimeout(context.Background(), 5*time.Second)
		conn, _, err = nestedtls.Dial(dctx, addr, cliTLS)
		dcancel()
		if err == nil {
			break
		}
		if time.Since(start) > 10*time.Second {
			t.Fatalf("the server did not come up: %v\n%s", err, logs.String())
		}
	}
	c := rpc.NewClient(conn)
	defer c.Close()
	select {
	case <-c.Done():
		if !errors.Is(c.Err(), rpc.ErrIdle) {
			t.Errorf("the idle client was dropped with %v, want the idle timeout", c.Err())
		}
	case <-time.After(10 * time.Second):
		t.Error("an idle connection was kept past [server] idle_timeout")
	}

	// The server logs the drop after closing the socket, which frees its
	// place under max_connections.
	for start := time.Now(); !strings.Contains(logs.String(), "client dropped") && !strings.Contains(logs.String(), "client disconnected"); time.Sleep(10 * time.Millisecond) {
		if time.Since(start) > 10*time.Second {
			t.Fatalf("the server did not log the idle client's end:\n%s", logs.String())
		}
	}

	// max_connections: two connections open (in their handshakes), a third
	// is closed as soon as it is accepted.
	var raw []net.Conn
	defer func() {
		for _, r := range raw {
			r.Close()
		}
	}()
	for i := range 3 {
		time.Sleep(100 * time.Millisecond) // accepted in this order (the backlog is FIFO anyway)
		r, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		raw = append(raw, r)
		r.SetReadDeadline(time.Now().Add(time.Second))
		_, err = r.Read(make([]byte, 1))
		if closed := err != nil && !errors.Is(err, os.ErrDeadlineExceeded); closed != (i == 2) {
			t.Errorf("connection %d: read %v; only the third is over max_connections", i+1, err)
		}
	}
	// The refusal is logged just after the connection is closed: wait for
	// the line rather than race it.
	want := "connection refused: 2 connections open, the server's max_connections"
	for start := time.Now(); !strings.Contains(logs.String(), want); time.Sleep(10 * time.Millisecond) {
		if time.Since(start) > 5*time.Second {
			t.Errorf("the server's log lacks %q:\n%s", want, logs.String())
			break
		}
	}
}
