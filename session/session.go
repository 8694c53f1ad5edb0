// Package session is a login session on a cluster: who is logged in, with
// which role, and the session identity that owns the session keys made
// during the login. The command layer holds one Session per shell, batch
// run or single command.
package session

import (
	"context"
	"fmt"
	"sync"

	"github.com/hsmsh/hsmsh/hsmcore"
)

// Session is one user's login on one cluster. It is safe for concurrent
// use: the TUI runs commands in the background while it renders.
type Session struct {
	cluster hsmcore.Cluster

	mu     sync.RWMutex
	caller *hsmcore.Caller
	// logging serializes logins without holding mu over the cluster's
	// login, which for token-sign MFA waits on the user: readers of who
	// is logged in (the panes, completion) go on meanwhile.
	logging sync.Mutex
}

// New returns a session on c with nobody logged in.
func New(c hsmcore.Cluster) *Session { return &Session{cluster: c} }

// Cluster is the cluster the session runs on.
func (s *Session) Cluster() hsmcore.Cluster { return s.cluster }

// Login logs a user in. A session holds one login at a time, as in
// CloudHSM CLI: log out first to switch users.
func (s *Session) Login(ctx context.Context, username string, role hsmcore.Role, password string) (hsmcore.Caller, error) {
	return s.login(func() (hsmcore.Caller, error) { return s.cluster.Login(ctx, username, role, password) })
}

// login runs one login: one at a time, and only while nobody is logged
// in; the session's lock is not held while the cluster logs in.
func (s *Session) login(do func() (hsmcore.Caller, error)) (hsmcore.Caller, error) {
	s.logging.Lock()
	defer s.logging.Unlock()
	s.mu.RLock()
	cur := s.caller
	s.mu.RUnlock()
	if cur != nil {
		return hsmcore.Caller{}, fmt.Errorf("already logged in as %s (%s): log out first", cur.Username, cur.Role)
	}
	c, err := do()
	if err != nil {
		return hsmcore.Caller{}, err
	}
	s.mu.Lock()
	s.caller = &c
	s.mu.Unlock()
	return c, nil
}

// LoginMFA is Login for a user with token-sign MFA: sign signs the HSM's
// token with the user's MFA private key (the user does, outside hsmsh).
func (s *Session) LoginMFA(ctx context.Context, username string, role hsmcore.Role, password string, sign hsmcore.MFASigner) (hsmcore.Caller, error) {
	return s.login(func() (hsmcore.Caller, error) { return s.cluster.LoginMFA(ctx, username, role, password, sign) })
}

// Logout ends the login; the cluster destroys its session keys.
func (s *Session) Logout(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.caller == nil {
		return hsmcore.ErrNotLoggedIn
	}
	err := s.cluster.Logout(ctx, *s.caller)
	s.caller = nil
	return err
}

// Caller is who is logged in, or ErrNotLoggedIn.
func (s *Session) Caller() (hsmcore.Caller, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.caller == nil {
		return hsmcore.Caller{}, hsmcore.ErrNotLoggedIn
	}
	return *s.caller, nil
}

// LoggedIn says whether somebody is logged in.
func (s *Session) LoggedIn() bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.caller != nil
}

// Close logs out (destroying session keys) if somebody is logged in.
func (s *Session) Close(ctx context.Context) error {
	if !s.LoggedIn() {
		return nil
	}
	return s.Logout(ctx)
}
