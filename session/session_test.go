package session

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/hsmsh/hsmsh/hsmcore"
	"github.com/hsmsh/hsmsh/hsmcore/host"
)

func newCluster(t *testing.T) *hsmcore.Embedded {
	t.Helper()
	c, err := host.Embedded(host.Options{ID: "s", HSMs: 2, Durability: hsmcore.Durability{MinimumNodes: 1}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	ctx := context.Background()
	if err := c.Activate(ctx, "adminpass"); err != nil {
		t.Fatal(err)
	}
	admin, _ := c.Login(ctx, "admin", hsmcore.RoleAdmin, "adminpass")
	if _, err := c.CreateUser(ctx, admin, "cu1", hsmcore.RoleCryptoUser, "cu1pass1"); err != nil {
		t.Fatal(err)
	}
	return c
}

func TestSessionLifecycle(t *testing.T) {
	ctx := context.Background()
	s := New(newCluster(t))
	steps := []struct {
		name string
		do   func() error
		want string // error substring, "" for none
	}{
		{"caller before login", func() error { _, err := s.Caller(); return err }, "not logged in"},
		{"logout before login", func() error { return s.Logout(ctx) }, "not logged in"},
		{"wrong password", func() error { _, err := s.Login(ctx, "cu1", hsmcore.RoleCryptoUser, "nope1234"); return err }, "invalid username, role or password"},
		{"login", func() error { _, err := s.Login(ctx, "CU1", hsmcore.RoleCryptoUser, "cu1pass1"); return err }, ""},
		{"second login", func() error { _, err := s.Login(ctx, "admin", hsmcore.RoleAdmin, "adminpass"); return err }, "already logged in as cu1"},
		{"caller", func() error {
			c, err := s.Caller()
			if err == nil && (c.Username != "cu1" || c.Role != hsmcore.RoleCryptoUser || c.Session == "") {
				return errors.New("wrong caller")
			}
			return err
		}, ""},
		{"logout", func() error { return s.Logout(ctx) }, ""},
		{"logged out", func() error {
			if s.LoggedIn() {
				return errors.New("still logged in")
			}
			return nil
		}, ""},
	}
	for _, st := range steps {
		err := st.do()
		if st.want == "" && err != nil || st.want != "" && (err == nil || !strings.Contains(err.Error(), st.want)) {
			t.Errorf("%s: err = %v, want %q", st.name, err, st.want)
		}
	}
}

func TestCloseDestroysSessionKeys(t *testing.T) {
	ctx := context.Background()
	c := newCluster(t)
	s := New(c)
	caller, err := s.Login(ctx, "cu1", hsmcore.RoleCryptoUser, "cu1pass1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.GenerateKey(ctx, caller, hsmcore.KeySpec{Type: hsmcore.TypeAES, Label: "tmp", LengthBytes: 16, Session: true}); err != nil {
		t.Fatal(err)
	}
	// Another login cannot see the key either way, so watch the cluster
	// say it destroyed it.
	events, cancel := c.Subscribe(16)
	defer cancel()
	if err := s.Close(ctx); err != nil {
		t.Fatal(err)
	}
	destroyed := 0
	for len(events) > 0 {
		if ev := <-events; ev.Kind == hsmcore.EventSessionKeys {
			destroyed += ev.Count
		}
	}
	if destroyed != 1 {
		t.Errorf("closing the session destroyed %d session keys, want 1", destroyed)
	}
	if err := s.Close(ctx); err != nil {
		t.Errorf("closing a closed session: %v", err)
	}
}
