package commands

import (
	"context"
	"sort"
	"strings"
	"time"

	"github.com/hsmsh/hsmsh/hsmcore"
)

// Read-only views of the cluster for live displays (the shell's panes).
// They go through the same cluster interface and the same access rules
// as the commands: a crypto user's key pane shows the keys key list shows.

// HSMInfo describes one HSM of the cluster.
type HSMInfo = hsmcore.HSMInfo

// SyncStatus is the state of server-side sync.
type SyncStatus = hsmcore.SyncStatus

// KeyView is one row of a key-presence display.
type KeyView struct {
	Ref     string
	Label   string
	Type    string
	Class   string
	Session bool
	// Holders maps every HSM id to whether it holds the key.
	Holders map[string]bool
}

// Held counts the HSMs that hold the key.
func (k KeyView) Held() int {
	n := 0
	for _, ok := range k.Holders {
		if ok {
			n++
		}
	}
	return n
}

// Who is the logged-in user and role, if any.
func (e *Env) Who() (user, role string, ok bool) {
	c, err := e.Current().Session.Caller()
	if err != nil {
		return "", "", false
	}
	return c.Username, string(c.Role), true
}

// SessionLeft is how long the login session has left, for the status
// bar; ok is false when nobody is logged in.
func (e *Env) SessionLeft(ctx context.Context) (left time.Duration, ok bool) {
	e = e.Current()
	c, err := e.Session.Caller()
	if err != nil {
		return 0, false
	}
	info, err := e.Session.Cluster().SessionInfo(ctx, c)
	if err != nil {
		return 0, false
	}
	return time.Duration(info.SecondsLeft) * time.Second, true
}

// ClusterID is the id of the cluster the session runs on.
func (e *Env) ClusterID() string { return e.Current().Session.Cluster().ID() }

// HSMs describes the cluster's HSMs.
func (e *Env) HSMs(ctx context.Context) []HSMInfo { return e.Current().Session.Cluster().HSMs(ctx) }

// Keys lists the keys the logged-in user may see, by reference; nil when
// nobody is logged in.
func (e *Env) Keys(ctx context.Context) ([]KeyView, error) {
	e = e.Current()
	c, err := e.Session.Caller()
	if err != nil {
		return nil, nil
	}
	keys, err := e.Session.Cluster().Keys(ctx, c, hsmcore.Filter{})
	if err != nil {
		return nil, err
	}
	out := make([]KeyView, len(keys))
	for i, k := range keys {
		out[i] = KeyView{Ref: k.Ref.String(), Label: k.Attrs.Label, Type: k.Attrs.KeyType, Class: k.Attrs.Class, Session: k.Session, Holders: k.Info.HSMCoverage}
	}
	return out, nil
}

// TokenView is a live quorum token as the panes show it.
type TokenView = hsmcore.QuorumToken

// Tokens lists the live quorum tokens the logged-in user may see (an
// admin sees all); none when nobody is logged in.
func (e *Env) Tokens(ctx context.Context) ([]TokenView, error) {
	e = e.Current()
	c, err := e.Session.Caller()
	if err != nil {
		return nil, nil
	}
	return e.Session.Cluster().QuorumTokens(ctx, c)
}

// Usernames lists the cluster's users, for completion.
func (e *Env) Usernames(ctx context.Context) []string {
	e = e.Current()
	c, _ := e.Session.Caller()
	users, err := e.Session.Cluster().Users(ctx, c)
	if err != nil {
		return nil
	}
	out := make([]string, len(users))
	for i, u := range users {
		out[i] = u.Username
	}
	return out
}

// Durability is the durability settings in force.
func (e *Env) Durability() hsmcore.Durability { return e.Current().Session.Cluster().Durability() }

// Sync reports server-side sync's state; ok is false for a cluster with no
// lab (remote servers sync on their own).
func (e *Env) Sync() (SyncStatus, bool) {
	e = e.Current()
	l, ok := e.Session.Cluster().(hsmcore.Lab)
	if !ok {
		return SyncStatus{}, false
	}
	return l.SyncStatus(), true
}

// SecretFlags lists the flags whose values must never be echoed, kept in
// history or logged.
func (t *Tree) SecretFlags() map[string]bool {
	m := map[string]bool{}
	for _, c := range t.all {
		for _, f := range c.Flags {
			if f.Secret {
				m[f.Name] = true
			}
		}
	}
	return m
}

// Redact returns a command line with the values of secret flags (such as
// --password) replaced by ****, for echoing and for history. A line that
// does not parse is redacted word by word as best it can be.
func (t *Tree) Redact(line string) string {
	secret := t.SecretFlags()
	words, err := Split(line)
	if err != nil {
		words = strings.Fields(line)
	}
	quoted := make([]string, len(words))
	for i, w := range words {
		quoted[i] = Quote(w)
	}
	return redactWords(quoted, secret)
}

// Quote writes a word so Split reads it back unchanged.
func Quote(w string) string {
	if w == "" {
		return "''"
	}
	if strings.ContainsAny(w, " \t\n\r'\"\\#$`") {
		return "'" + strings.ReplaceAll(w, "'", `'\''`) + "'"
	}
	return w
}

// AsksSecret says which secret flag a command would ask for on the
// terminal because the line leaves it out ("" if none), and whether it is
// a new secret (asked twice).
func (t *Tree) AsksSecret(words []string) (flag string, confirm bool) {
	cmd, rest, err := t.Find(words)
	if err != nil {
		return "", false
	}
	for _, f := range cmd.Flags {
		if !f.Secret {
			continue
		}
		given := false
		for _, w := range rest {
			if w == "--"+f.Name || strings.HasPrefix(w, "--"+f.Name+"=") || w == "-h" || w == "--help" {
				given = true
			}
		}
		if !given {
			return f.Name, cmd.Name() != "login"
		}
	}
	return "", false
}

// SortedHSMIDs lists HSM ids in their natural order (hsm-2 before hsm-10).
func SortedHSMIDs(infos []HSMInfo) []string {
	ids := make([]string, len(infos))
	for i, h := range infos {
		ids[i] = h.ID
	}
	sort.SliceStable(ids, func(i, j int) bool {
		if len(ids[i]) != len(ids[j]) {
			return len(ids[i]) < len(ids[j])
		}
		return ids[i] < ids[j]
	})
	return ids
}
