package commands

import (
	"context"

	"github.com/hsmsh/hsmsh/session"
)

// WithOwnSession returns a copy of e on its current cluster with a login
// session of its own, nobody logged in, so that several callers (the
// benchmark's workers) can each log in and out without touching e's login
// or each other's. The copy shares e's cluster and runs on it only:
// --cluster-id and use-cluster do not reach the other clusters from it.
//
// Release the copy with the function returned, which logs out if somebody
// is still logged in. Never Close the copy: that would close the shared
// cluster under e.
func (e *Env) WithOwnSession() (*Env, func(context.Context) error) {
	cur := e.Current()
	cp := &Env{
		Session: session.New(cur.Session.Cluster()),
		Config:  e.Config,
		Dir:     e.Dir,
		// ReadPassword stays nil: a worker has no terminal to ask on, so
		// login needs --password.
	}
	return cp, cp.Session.Close
}
