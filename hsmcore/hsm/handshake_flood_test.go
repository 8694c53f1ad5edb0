package hsm

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/hsmsh/hsmsh/hsmcore/authsession"
	"github.com/hsmsh/hsmsh/hsmcore/protocol"
)

// Logins in progress are bounded in all (maxPending), and a full table
// drops its oldest entry rather than refusing new logins: otherwise anyone
// who can reach an HSM with a client certificate could keep every user
// locked out by opening logins it never finishes, under client ids it
// invents (the per-client cap does not stop that). Fails if a full table
// refuses new handshakes.
func TestHandshakeFloodCannotLockLoginsOut(t *testing.T) {
	if testing.Short() {
		t.Skip("opens more than a thousand handshakes")
	}
	e, err := OpenEmbedded(Options{ID: "flood", HSMs: 1, Transport: TransportDirect})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	_, cu := activate(t, e)
	ref := signer(t, e, cu)
	h := devices(e)[0]
	door := directLink{to: h}
	mine, err := authsession.NewIdentity()
	if err != nil {
		t.Fatal(err)
	}
	der, _ := authsession.MarshalPublic(mine.Public())
	for i := range maxPending + 50 {
		hello, _, err := authsession.NewHello(fmt.Sprintf("flood-%04d", i), mine)
		if err != nil {
			t.Fatal(err)
		}
		var reply *authsession.Reply
		if err := door.Call(protocol.CallHandshake, protocol.HandshakeArgs{Hello: hello, ClientKey: der, User: "admin", Lifetime: time.Hour}, &reply); err != nil {
			t.Fatalf("handshake %d of the flood: %v", i, err)
		}
	}
	h.mu.RLock()
	pending := 0
	for _, s := range h.sessions {
		if !s.pending.IsZero() {
			pending++
		}
	}
	h.mu.RUnlock()
	if pending > maxPending {
		t.Errorf("%d logins in progress held, more than the bound %d", pending, maxPending)
	}
	c, err := e.Login(context.Background(), "cu1", RoleCryptoUser, "cu1pass1")
	if err != nil {
		t.Fatalf("a real login with the table full of abandoned ones: %v", err)
	}
	if err := signOnce(e, c, ref, 0); err != nil {
		t.Fatalf("a real sign after the flood: %v", err)
	}
}
