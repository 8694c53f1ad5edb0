package link

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/hsmsh/hsmsh/hsmcore/nestedtls"
	"github.com/hsmsh/hsmsh/hsmcore/protocol"
)

// A node redials with exponential backoff, capped, says why it is down,
// and tells its listener once per change of state.
func TestRemoteNodeBackoff(t *testing.T) {
	fail := errors.New("connection refused")
	var events []protocol.Event
	n := New("hsm-x", "10.0.0.1:1", time.Second, func(context.Context) (net.Conn, nestedtls.Info, error) {
		return nil, nestedtls.Info{}, &nestedtls.LayerError{Layer: nestedtls.Outer, Err: fail}
	})
	n.Notify = func(ev protocol.Event) { events = append(events, ev) }
	var got []time.Duration
	for range 8 {
		n.connect(context.Background())
		got = append(got, n.backoff)
	}
	want := []time.Duration{100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond, 800 * time.Millisecond,
		1600 * time.Millisecond, 3200 * time.Millisecond, maxBackoff, maxBackoff}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("backoff %v, want %v", got, want)
	}
	if n.Up() || len(events) != 1 || events[0].Kind != protocol.EventHSMDown {
		t.Errorf("up %v, events %+v: want down, announced once", n.Up(), events)
	}
	err := n.Call(protocol.CallDeleteKey, protocol.Ref(1), nil)
	var de *protocol.DownError
	if !errors.As(err, &de) || !errors.Is(err, fail) || !strings.Contains(err.Error(), "hsm-x is down: server TLS connection (outer) failed: connection refused") {
		t.Errorf("call on a down node: %v", err)
	}
	if info := n.Info(); info.State != protocol.StateDown || info.TLS != "outer layer failed: connection refused" {
		t.Errorf("info %+v", info)
	}
}
