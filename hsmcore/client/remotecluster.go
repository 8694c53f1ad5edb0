package client

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/hsmsh/hsmsh/hsmcore/link"
	"github.com/hsmsh/hsmsh/hsmcore/nestedtls"
	"github.com/hsmsh/hsmsh/hsmcore/protocol"
	"github.com/hsmsh/hsmsh/hsmcore/syncloop"
)

// RemoteOptions configure a client of a remote cluster.
type RemoteOptions struct {
	ID      string
	Servers []Peer
	TLS     nestedtls.ClientConfig
	// Durability is the client's key-durability settings; server-side
	// sync runs on the servers at their own interval.
	Durability Durability
	// Timeout bounds one request to a server. Default 30s.
	Timeout time.Duration
	// Client is this client install's identity; SessionLifetime how long
	// a login session lasts.
	Client          ClientIdentity
	SessionLifetime time.Duration
	// NoRenegotiate: see Options.NoRenegotiate.
	NoRenegotiate bool
	// ConnectWait is how long Open waits for the first connections.
	// Default 5s; servers that are not up by then are down until they are.
	ConnectWait time.Duration
}

// Remote is a cluster of HSM servers reached over nested TLS. It is the
// same client library as the embedded cluster — routing, client-side
// sync, users, key use — over nodes that are connections; server-side
// sync runs on the servers, which the lab can pause, resume and trigger.
type Remote struct {
	*Embedded
}

var (
	_ Cluster = (*Remote)(nil)
	_ Lab     = (*Remote)(nil)
)

// OpenRemote connects to the servers of a remote cluster. A server that
// cannot be reached is down, not an error: operations route around it and
// the client keeps redialling it with backoff.
func OpenRemote(opts RemoteOptions) (*Remote, error) {
	if len(opts.Servers) == 0 {
		return nil, fmt.Errorf("%w: a remote cluster needs at least one server in [[cluster.servers]]", ErrInvalid)
	}
	if opts.ConnectWait <= 0 {
		opts.ConnectWait = 5 * time.Second
	}
	e := newClient(opts.ID, opts.Durability)
	if err := e.setClient(opts.Client, opts.SessionLifetime, !opts.NoRenegotiate); err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	for _, s := range opts.Servers {
		if seen[s.ID] {
			return nil, fmt.Errorf("%w: server id %q appears twice in [[cluster.servers]]", ErrInvalid, s.ID)
		}
		seen[s.ID] = true
		n := link.Dial(s.ID, s.Addr, opts.TLS, opts.Timeout)
		n.Notify = e.events.publish
		e.hsms = append(e.hsms, remoteNode{n})
	}
	var wg sync.WaitGroup
	for _, n := range e.hsms {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n.(remoteNode).Start(opts.ConnectWait)
		}()
	}
	wg.Wait()
	e.awaitDomain(opts.ConnectWait)
	return &Remote{Embedded: e}, nil
}

// errRemoteLab is the lab faults that act inside an HSM process, which a
// client cannot reach into on another machine.
func errRemoteLab(id, what string) error {
	return fmt.Errorf("%w: %s is an HSM server of a remote cluster: the lab cannot %s it from here; stop (or restart) its hsmsh serve process instead", ErrInvalid, id, what)
}

func (r *Remote) FailHSM(id string, destroy bool) error {
	if err := r.known(id); err != nil {
		return err
	}
	if destroy {
		return errRemoteLab(id, "destroy")
	}
	return errRemoteLab(id, "fail")
}

func (r *Remote) RecoverHSM(id string) error {
	if err := r.known(id); err != nil {
		return err
	}
	return errRemoteLab(id, "recover")
}

func (r *Remote) RestartHSM(id string) error {
	if err := r.known(id); err != nil {
		return err
	}
	return errRemoteLab(id, "restart")
}

func (r *Remote) AddHSM() (string, error) {
	return "", fmt.Errorf("%w: a remote cluster's HSMs are the servers in [[cluster.servers]]: start another hsmsh serve and add it to the config", ErrInvalid)
}

func (r *Remote) RemoveHSM(id string) error {
	if err := r.known(id); err != nil {
		return err
	}
	return fmt.Errorf("%w: %s is an HSM server: stop its hsmsh serve process and remove it from [[cluster.servers]]", ErrInvalid, id)
}

// known checks that id names one of the cluster's servers.
func (r *Remote) known(id string) error {
	if r.hsm(id) != nil {
		return nil
	}
	_, err := r.member(id) // the error that lists the HSMs
	return err
}

// SetLatency asks a server to slow its HSM down.
func (r *Remote) SetLatency(id string, d time.Duration) error {
	if err := r.known(id); err != nil {
		return err
	}
	if d < 0 || d > protocol.MaxLatency {
		return fmt.Errorf("%w: latency must be 0 to %v", ErrInvalid, protocol.MaxLatency)
	}
	if err := r.hsm(id).call(protocol.CallLatency, d, nil); err != nil {
		return fmt.Errorf("set latency on %s: %w", id, err)
	}
	r.events.publish(Event{Kind: EventHSMLatency, HSM: id, Detail: d.String()})
	return nil
}

// servers calls method on every server that answers, in id order, and
// returns the answers of those that did; it fails if none did, or if one
// refused (a server whose lab is off).
func servers[T any](r *Remote, method string) ([]T, error) {
	var out []T
	var errs, refused []error
	for _, n := range r.members() {
		var v T
		if err := n.call(method, nil, &v); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", n.ID(), err))
			if !protocol.IsDown(err) {
				refused = append(refused, fmt.Errorf("%s: %w", n.ID(), err))
			}
			continue
		}
		out = append(out, v)
	}
	if len(refused) > 0 {
		return out, errors.Join(refused...)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: %v", ErrNoHSM, errors.Join(errs...))
	}
	return out, nil
}

// PauseSync pauses server-side sync on every server that answers.
func (r *Remote) PauseSync() error {
	if _, err := servers[SyncStatus](r, protocol.CallSyncPause); err != nil {
		return err
	}
	r.events.publish(Event{Kind: EventSyncPaused})
	return nil
}

// ResumeSync resumes server-side sync on every server that answers.
func (r *Remote) ResumeSync() error {
	if _, err := servers[SyncStatus](r, protocol.CallSyncResume); err != nil {
		return err
	}
	r.events.publish(Event{Kind: EventSyncResumed})
	return nil
}

// SyncNow has every server that answers run one pass (each pulls what its
// HSM lacks from the others) and adds up what they did.
func (r *Remote) SyncNow(ctx context.Context) (SyncStats, error) {
	start := time.Now()
	r.events.publish(Event{Kind: EventSyncStarted, Count: len(r.up())})
	all, err := servers[SyncStats](r, protocol.CallSyncNow)
	var st SyncStats
	for _, s := range all {
		st.Copied += s.Copied
		st.Deleted += s.Deleted
		st.Users += s.Users
		st.Failed += s.Failed
	}
	st.Took = time.Since(start)
	st.TookMS = float64(st.Took.Microseconds()) / 1000
	r.events.publish(Event{Kind: EventSyncFinished, Count: st.Copied + st.Deleted, Detail: syncloop.Detail(st)})
	return st, err
}

// SyncStatus is the first answering server's sync state; paused if any
// server's sync is paused.
func (r *Remote) SyncStatus() SyncStatus {
	all, err := servers[SyncStatus](r, protocol.CallSyncStatus)
	if err != nil {
		return SyncStatus{}
	}
	st := all[0]
	st.Interval = r.Durability().ServerSyncInterval
	for _, s := range all[1:] {
		st.Paused = st.Paused || s.Paused
		if !s.Next.IsZero() && (st.Next.IsZero() || s.Next.Before(st.Next)) {
			st.Next = s.Next
		}
	}
	return st
}

// awaitDomain waits, up to wait, for every HSM that answers to belong to
// the cluster's domain: servers started together form it among themselves
// a moment after they start, and a login before that would be refused.
func (e *Embedded) awaitDomain(wait time.Duration) {
	deadline := time.Now().Add(wait)
	for {
		hs := e.answering()
		in := 0
		for _, h := range hs {
			if info, err := domainInfoOf(h); err == nil && info.Domain != "" {
				in++
			}
		}
		if in == len(hs) || time.Now().After(deadline) {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}
