package client

import (
	"context"

	"errors"
	"fmt"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hsmsh/hsmsh/hsmcore/profile"
	"github.com/hsmsh/hsmsh/hsmcore/protocol"
	"github.com/hsmsh/hsmsh/hsmcore/syncloop"
)

// Options configure an embedded cluster.
type Options struct {
	ID   string
	HSMs int
	// DataDir is the folder that holds this cluster's HSM stores, one
	// sub-folder per HSM; "" keeps everything in memory (--ephemeral).
	DataDir    string
	Durability Durability
	// Transport is TransportTLS (also "") or TransportDirect.
	Transport string
	// Client is this client install's identity for authenticated
	// sessions; a zero value makes one for the process.
	Client ClientIdentity
	// SessionLifetime is how long a login session lasts (default 1h).
	SessionLifetime time.Duration
	// NoRenegotiate forgets the password after login: an expired session
	// then needs a new login instead of a transparent renegotiation.
	NoRenegotiate bool

	// Profile paces this client at a real HSM type's published
	// cluster-wide rates (package profile); the rack paces each HSM.
	Profile string
}

// Embedded is a cluster of in-process HSMs. It plays both parts: the HSMs,
// and the client library that routes operations to them and replicates new
// keys (client-side sync).
type Embedded struct {
	id   string
	hsms []node        // in-process HSMs (*hsm)
	next atomic.Uint64 // round-robin cursor

	dir string // the cluster's data folder; "" in memory

	mu       sync.RWMutex
	dur      Durability
	sessions map[string]Caller // live login sessions
	// deleted are the token keys this client deleted, and who deleted
	// them: a delete that only HSMs later destroyed took is retried, in
	// that user's session, where the key turns up again.
	deleted map[Ref]Caller
	// sessionKeys says which HSM holds each session key this client made:
	// a session key lives on one HSM only, and asking every HSM whether it
	// holds one would cost a round trip each on every use.
	sessionKeys map[Ref]sessionKey

	events      bus
	sync        syncloop.Loop
	failCleanup atomic.Bool // lab cleanup fail-next

	// ceiling paces this client at a profile's cluster-wide rates.
	ceiling *profile.Pacers
	profile string

	// avail is what the client remembers of the availability check, to
	// spare a round trip per use (available()).
	avail sync.Map // Ref → availability
	// The client's identity, and its authenticated sessions by session id.
	client   ClientIdentity
	lifetime time.Duration
	// keepCredentials keeps a login's password to renegotiate with.
	keepCredentials bool
	auth            map[string]*clientSession

	// transport puts in-process HSMs behind nested TLS; nil calls them
	// directly.
	transport *pipeTransport
	// rack makes and drops the in-process HSMs (lab hsm add and remove);
	// nil for a remote cluster.
	rack Rack
}

var _ Cluster = (*Embedded)(nil)

// newClient is the client library's side of a cluster, before it knows
// its HSMs: the embedded and the remote cluster both start from it.
func newClient(id string, dur Durability) *Embedded {
	e := &Embedded{id: id, dur: dur, sessions: map[string]Caller{}, deleted: map[Ref]Caller{},
		sessionKeys: map[Ref]sessionKey{}, auth: map[string]*clientSession{}}
	if e.dur.MinimumNodes < 1 {
		e.dur.MinimumNodes = 1
	}
	return e
}

// members returns the cluster's HSMs; lab hsm add and remove change the
// list, so callers work on a copy.
func (e *Embedded) members() []node {
	e.mu.RLock()
	defer e.mu.RUnlock()
	return append([]node(nil), e.hsms...)
}

// OpenEmbedded opens (or creates) an embedded cluster whose HSMs the
// rack makes, in this process: hsm-1 to hsm-N. The client library reaches
// each through its door only, over nested TLS on an in-memory pipe or by
// calling it.
func OpenEmbedded(opts Options, rack Rack) (*Embedded, error) {
	if opts.HSMs < 1 {
		return nil, fmt.Errorf("%w: a cluster needs at least one HSM", ErrInvalid)
	}
	if err := profile.Check(opts.Profile); err != nil {
		return nil, err
	}
	e := newClient(opts.ID, opts.Durability)
	e.dir, e.rack = opts.DataDir, rack
	rack.SetNotify(e.events.publish)
	e.ceiling, e.profile = profile.Ceiling(opts.Profile), opts.Profile
	if err := e.setClient(opts.Client, opts.SessionLifetime, !opts.NoRenegotiate); err != nil {
		return nil, err
	}
	switch opts.Transport {
	case "", TransportTLS:
		pkiDir := ""
		if opts.DataDir != "" {
			pkiDir = filepath.Join(opts.DataDir, "pki")
		}
		t, err := newPipeTransport(pkiDir, opts.ID)
		if err != nil {
			e.Close()
			return nil, err
		}
		e.transport = t
	case TransportDirect:
	default:
		e.Close()
		return nil, fmt.Errorf("%w: transport %q: use %q or %q", ErrInvalid, opts.Transport, TransportTLS, TransportDirect)
	}
	for i := 1; i <= opts.HSMs; i++ {
		d, err := rack.Add(fmt.Sprintf("hsm-%d", i), false)
		if err != nil {
			e.Close()
			return nil, err
		}
		e.hsms = append(e.hsms, e.wrap(d))
	}
	// The HSMs form their domain among themselves, in id order: the first
	// makes it when none has one, the others join it.
	if err := e.joinWaiting(); err != nil {
		e.Close()
		return nil, fmt.Errorf("domain: %w", err)
	}
	e.startSync()
	return e, nil
}

// wrap gives the client library its way to an in-process HSM: through
// the nested TLS transport, or directly.
func (e *Embedded) wrap(d Device) node {
	if e.transport == nil {
		return directNode{d}
	}
	return e.transport.wrap(d)
}

// Subscribe follows the cluster's events. A subscriber that falls behind
// loses events; cancel ends the subscription.
func (e *Embedded) Subscribe(buffer int) (<-chan Event, func()) {
	return e.events.subscribe(buffer)
}

func (e *Embedded) ID() string { return e.id }

func (e *Embedded) Close() error {
	e.sync.Close()
	defer e.events.closeAll()
	var errs []error
	for _, h := range e.members() {
		if err := h.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	if e.transport != nil {
		e.transport.close()
	}
	if e.rack != nil {
		errs = append(errs, e.rack.Close())
	}
	return errors.Join(errs...)
}

func (e *Embedded) Durability() Durability {
	e.mu.RLock()
	defer e.mu.RUnlock()
	return e.dur
}

func (e *Embedded) SetDurability(d Durability) error {
	if d.MinimumNodes < 1 {
		return fmt.Errorf("%w: create_object_minimum_nodes must be at least 1", ErrInvalid)
	}
	if d.ServerSyncInterval < 0 {
		return fmt.Errorf("%w: server_sync_interval must not be negative", ErrInvalid)
	}
	if d.RetryOnMissingKey < 0 {
		return fmt.Errorf("%w: retry_on_missing_key must not be negative", ErrInvalid)
	}
	e.mu.Lock()
	changed := e.dur.ServerSyncInterval != d.ServerSyncInterval
	e.dur = d
	e.mu.Unlock()
	if changed {
		e.rescheduleSync()
	}
	return nil
}

func (e *Embedded) HSMs(ctx context.Context) []HSMInfo {
	all := e.members()
	out := make([]HSMInfo, 0, len(all))
	for _, h := range all {
		out = append(out, h.Info())
	}
	return out
}

// answering returns the HSMs that answer, in id order, without a turn of
// the round-robin: for bookkeeping (users, quorum) that should not shift
// where the next key operation goes.
func (e *Embedded) answering() []node {
	var out []node
	for _, h := range e.members() {
		if h.Up() {
			out = append(out, h)
		}
	}
	return out
}

// noHSM is ErrNoHSM with, per HSM, why it does not answer: a wrong
// cluster certificate, a refused connection, a lab fault.
func (e *Embedded) noHSM() error {
	all := e.members()
	if len(all) == 0 {
		return ErrNoHSM
	}
	why := make([]string, 0, len(all))
	for _, n := range all {
		why = append(why, n.ID()+": "+downWhy(n))
	}
	return fmt.Errorf("%w (%s)", ErrNoHSM, strings.Join(why, "; "))
}

// downWhy says why an HSM does not answer, as far as the client knows.
func downWhy(n node) string {
	switch n := n.(type) {
	case *localNode:
		if why := n.downReason(); why != "" {
			return why
		}
		return n.DownWhy()
	case remoteNode:
		return n.DownWhy()
	case directNode:
		switch n.d.Info().State {
		case StateDestroyed:
			return "destroyed (lab hsm fail --destroy)"
		case StateDown:
			return "down (lab hsm fail)"
		}
	}
	return "not answering"
}

// up returns the HSMs that answer, starting at the round-robin cursor, so
// that successive operations spread over the cluster.
func (e *Embedded) up() []node {
	all := e.members()
	n := len(all)
	if n == 0 {
		return nil
	}
	start := int((e.next.Add(1) - 1) % uint64(n)) // a new client starts at the first HSM
	out := make([]node, 0, n)
	for i := 0; i < n; i++ {
		if h := all[(start+i)%n]; h.Up() {
			out = append(out, h)
		}
	}
	return out
}

// session checks that c is a live login session.
func (e *Embedded) session(c Caller) error {
	e.mu.RLock()
	defer e.mu.RUnlock()
	if c.Session == "" {
		return ErrNotLoggedIn
	}
	if _, ok := e.sessions[c.Session]; !ok {
		return fmt.Errorf("%w (the login session has ended)", ErrNotLoggedIn)
	}
	return nil
}

func (e *Embedded) requireRole(c Caller, roles ...Role) error {
	if err := e.session(c); err != nil {
		return err
	}
	for _, r := range roles {
		if c.Role == r {
			return nil
		}
	}
	names := make([]string, len(roles))
	for i, r := range roles {
		names[i] = string(r)
	}
	return fmt.Errorf("%w: this needs the %s role; you are logged in as %s", ErrPermission, strings.Join(names, " or "), c.Role)
}

// userVersions resolves the users of the HSMs that answer, as c's session
// sees them: for each name the newest record. HSMs may disagree until sync
// runs (one was down when a user changed); the newest version is the
// truth.
func (e *Embedded) userVersions(c Caller) (map[string]protocol.UserView, error) {
	hs := e.answering()
	if len(hs) == 0 {
		return nil, e.noHSM()
	}
	users := map[string]protocol.UserView{}
	var errs []error
	for _, h := range hs {
		vs, err := usersOf(h)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, u := range vs {
			if cur, ok := users[u.Username]; !ok || u.Updated > cur.Updated {
				users[u.Username] = u
			}
		}
	}
	if len(errs) == len(hs) {
		return nil, errors.Join(errs...)
	}
	return users, nil
}

// findUser looks a user up on the HSMs that answer.
func (e *Embedded) findUser(c Caller, name string) (protocol.UserView, error) {
	users, err := e.userVersions(c)
	if err != nil {
		return protocol.UserView{}, err
	}
	if u, ok := users[name]; ok {
		return u, nil
	}
	return protocol.UserView{}, fmt.Errorf("%w: %s", ErrUserNotFound, name)
}

// first returns the first HSM that answers, as c's session reaches it.
func (e *Embedded) first(c Caller) (*sealedNode, error) {
	hs := e.answering()
	if len(hs) == 0 {
		return nil, e.noHSM()
	}
	return e.on(c, hs[0]), nil
}

// Activate gives the built-in admin its first password. The HSM that
// takes it passes it to the others.
func (e *Embedded) Activate(ctx context.Context, password string) error {
	if err := ValidatePassword(password); err != nil {
		return err
	}
	hs := e.answering()
	if len(hs) == 0 {
		return e.noHSM()
	}
	err := hs[0].call(protocol.CallActivate, protocol.ActivateArgs{Password: password}, nil)
	if err != nil && strings.Contains(err.Error(), "already activated") {
		return fmt.Errorf("the cluster %s is already activated", e.id)
	}
	return err
}

func (e *Embedded) Login(ctx context.Context, username string, role Role, password string) (Caller, error) {
	return e.login(username, role, password, nil)
}

// MFASigner signs a token-sign MFA token with the user's MFA private key,
// which never reaches hsmsh: the user signs (with openssl, say) and gives
// back the signature.
type MFASigner func(token []byte) (signature []byte, err error)

// ErrMFARequired is a login of a user with token-sign MFA made without a
// way to sign the token.
var ErrMFARequired = errors.New("this user logs in with token-sign MFA: use login --username U --role R mfa-token-sign --token FILE")

// LoginMFA is Login for a user with token-sign MFA: after the right
// password, sign signs the HSM's token with the user's MFA key.
func (e *Embedded) LoginMFA(ctx context.Context, username string, role Role, password string, sign MFASigner) (Caller, error) {
	return e.login(username, role, password, sign)
}

func (e *Embedded) login(username string, role Role, password string, mfa MFASigner) (Caller, error) {
	name, err := NormalizeUsername(username)
	if err != nil {
		return Caller{}, err
	}
	// The HSM checks the password (and the role), inside the session's
	// channel, and counts a failure itself, on every HSM it reaches.
	sess, ans, err := e.authenticate(name, role, password, nil, mfa)
	if errors.Is(err, ErrNotActivated) {
		return Caller{}, ErrNotActivated
	}
	if err != nil {
		return Caller{}, err
	}
	if !ans.OK && ans.MFAToken != nil {
		return Caller{}, ErrMFARequired
	}
	if !ans.OK {
		switch {
		// An unknown name is answered as a wrong password is (the HSM
		// counts both): the words do not tell which names exist.
		case ans.WasLocked:
			return Caller{}, ErrLocked
		case ans.Locked:
			return Caller{}, fmt.Errorf("%w; %w", ErrBadCredentials, ErrLocked)
		}
		return Caller{}, fmt.Errorf("%w (%d of %d attempts left before the user is locked)", ErrBadCredentials, ans.Left, MaxFailedLogins)
	}
	if e.keepCredentials && mfa == nil {
		// To renegotiate when the token expires. An MFA login cannot be
		// renegotiated without the user signing again: it logs in anew.
		sess.password = password
	}
	c := Caller{Username: name, Role: role, Session: sess.sid}
	e.mu.Lock()
	e.sessions[c.Session] = c
	e.auth[c.Session] = sess
	e.mu.Unlock()
	return c, nil
}

func (e *Embedded) Logout(ctx context.Context, c Caller) error {
	if err := e.session(c); err != nil {
		return err
	}
	for _, h := range e.members() {
		if n := e.on(c, h).DestroySession(c.Session); n > 0 {
			e.events.publish(Event{Kind: EventSessionKeys, HSM: h.ID(), Count: n, Detail: "logout of " + c.Username})
		}
	}
	e.endSession(c)
	e.mu.Lock()
	delete(e.sessions, c.Session)
	if s := e.auth[c.Session]; s != nil {
		s.end()
		delete(e.auth, c.Session)
	}
	for ref, sk := range e.sessionKeys {
		if sk.session == c.Session {
			delete(e.sessionKeys, ref)
		}
	}
	e.mu.Unlock()
	return nil
}

// countHolders says how many of hs hold ref. Over a transport each
// question is a round trip, so they are asked all at once.
func countHolders(hs []*sealedNode, ref Ref) int {
	var n atomic.Int32
	var wg sync.WaitGroup
	for _, h := range hs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if h.Has(ref) {
				n.Add(1)
			}
		}()
	}
	wg.Wait()
	return int(n.Load())
}

// sessionKey is where a session key this client made lives, and whose it is.
type sessionKey struct{ hsm, session string }

func (e *Embedded) CreateUser(ctx context.Context, c Caller, username string, role Role, password string) (User, error) {
	if err := e.requireRole(c, RoleAdmin); err != nil {
		return User{}, err
	}
	name, err := NormalizeUsername(username)
	if err != nil {
		return User{}, err
	}
	if role != RoleAdmin && role != RoleCryptoUser {
		return User{}, fmt.Errorf("%w: a new user's role must be admin or crypto-user", ErrInvalid)
	}
	if err := ValidatePassword(password); err != nil {
		return User{}, err
	}
	if _, err := e.findUser(c, name); err == nil {
		return User{}, fmt.Errorf("%w: %s", ErrUserExists, name)
	} else if !errors.Is(err, ErrUserNotFound) {
		return User{}, err
	}
	h, err := e.first(c)
	if err != nil {
		return User{}, err
	}
	var u protocol.UserView
	if err := h.call(protocol.CallCreateUser, protocol.UserArgs{Username: name, Role: role, Password: password, Approval: approvalFrom(ctx)}, &u); err != nil {
		return User{}, err
	}
	return e.userView(c, u), nil
}

// protocol.UserView reports a user with its coverage over the whole cluster.
func (e *Embedded) userView(c Caller, u protocol.UserView) User {
	held, all := 0, e.members()
	for _, h := range all {
		if !h.Up() {
			continue
		}
		vs, _ := usersOf(h)
		for _, v := range vs {
			if v.Username == u.Username {
				held++
				break
			}
		}
	}
	cov := CoverageFull
	if held < len(all) {
		cov = CoveragePartial
	}
	q := []QuorumStrategy{}
	if u.QuorumKey {
		q = append(q, QuorumStrategy{Strategy: "token-sign", Status: "enabled"})
	}
	return User{Username: u.Username, Role: u.Role, Locked: fmt.Sprint(u.Locked), MFA: mfaOf(u.MFA), Quorum: q, ClusterCoverage: cov}
}

func (e *Embedded) DeleteUser(ctx context.Context, c Caller, username string, role Role) error {
	if err := e.requireRole(c, RoleAdmin); err != nil {
		return err
	}
	name, err := NormalizeUsername(username)
	if err != nil {
		return err
	}
	u, err := e.findUser(c, name)
	if err != nil {
		return err
	}
	if u.Role != role {
		return fmt.Errorf("%w: %s has role %s, not %s", ErrUserNotFound, name, u.Role, role)
	}
	if name == c.Username {
		return fmt.Errorf("%w: you cannot delete the user you are logged in as", ErrPermission)
	}
	for _, h := range e.answering() {
		var owns bool
		if err := e.on(c, h).call(protocol.CallOwns, name, &owns); err == nil && owns {
			return fmt.Errorf("%w: user %s owns keys on %s; the keys must be deleted first", ErrPermission, name, h.ID())
		}
	}
	h, err := e.first(c)
	if err != nil {
		return err
	}
	return h.call(protocol.CallRemoveUser, protocol.UserArgs{Username: name, Role: role, Approval: approvalFrom(ctx)}, nil)
}

func (e *Embedded) Users(ctx context.Context, c Caller) ([]User, error) {
	users, err := e.userVersions(c)
	if err != nil {
		return nil, err
	}
	out := make([]User, 0, len(users))
	for _, u := range users {
		out = append(out, e.userView(c, u))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Username < out[j].Username })
	return out, nil
}

func (e *Embedded) ChangePassword(ctx context.Context, c Caller, username string, role Role, password string) error {
	if err := e.session(c); err != nil {
		return err
	}
	name, err := NormalizeUsername(username)
	if err != nil {
		return err
	}
	if c.Role != RoleAdmin && name != c.Username {
		return fmt.Errorf("%w: only an admin may change another user's password", ErrPermission)
	}
	if err := ValidatePassword(password); err != nil {
		return err
	}
	u, err := e.findUser(c, name)
	if err != nil {
		return err
	}
	if u.Role != role {
		return fmt.Errorf("%w: %s has role %s, not %s", ErrUserNotFound, name, u.Role, role)
	}
	if u.Locked && c.Role != RoleAdmin {
		return ErrLocked
	}
	// The HSM that knows the user's newest record changes it.
	var target *sealedNode
	var newest int64 = -1
	for _, h := range e.answering() {
		sn := e.on(c, h)
		vs, err := usersOf(h)
		if err != nil {
			continue
		}
		for _, v := range vs {
			if v.Username == name && v.Updated > newest {
				target, newest = sn, v.Updated
			}
		}
	}
	if target == nil {
		return fmt.Errorf("%w: %s", ErrUserNotFound, name)
	}
	return target.call(protocol.CallSetPassword, protocol.UserArgs{Username: name, Role: role, Password: password, Approval: approvalFrom(ctx)}, nil)
}

// checkCryptoUsers checks that each name is an existing crypto user other
// than the owner, and returns the names normalised.
func (e *Embedded) checkCryptoUsers(c Caller, owner string, names []string) ([]string, error) {
	out := make([]string, 0, len(names))
	for _, n := range names {
		name, err := NormalizeUsername(n)
		if err != nil {
			return nil, err
		}
		u, err := e.findUser(c, name)
		if err != nil {
			return nil, err
		}
		if u.Role != RoleCryptoUser {
			return nil, fmt.Errorf("%w: keys can be shared only with crypto users; %s is %s", ErrInvalid, name, u.Role)
		}
		if name == owner {
			return nil, fmt.Errorf("%w: %s owns the key; it cannot also be shared with them", ErrInvalid, name)
		}
		out = append(out, name)
	}
	return out, nil
}

func (e *Embedded) GenerateKey(ctx context.Context, c Caller, spec KeySpec) ([]Key, error) {
	if err := e.requireRole(c, RoleCryptoUser); err != nil {
		return nil, err
	}
	shared, err := e.checkCryptoUsers(c, c.Username, spec.ShareWith)
	if err != nil {
		return nil, err
	}
	if err := protocol.CheckKeyQuorum(spec.UseQuorum, 1+len(shared), "use-key-quorum-value"); err != nil {
		return nil, err
	}
	if err := protocol.CheckKeyQuorum(spec.ManageQuorum, 1+len(shared), "manage-key-quorum-value"); err != nil {
		return nil, err
	}
	spec.ShareWith = shared
	refs := 1
	if spec.Type == TypeEC || spec.Type == TypeRSA || spec.Type == TypeMLDSA {
		refs = 2 // a pair: public, then private
	}
	return e.create(ctx, c, refs, spec.Session, spec.MinServers, func(h *sealedNode, ref Ref, wrap bool) (protocol.CreateReply, error) {
		var out protocol.CreateReply
		// A token key for several HSMs is staged: made and wrapped on one,
		// then stored on all of them at once.
		err := h.call(protocol.CallGenerateKey, protocol.GenerateArgs{Spec: spec, Ref: ref, Wrap: wrap, Stage: wrap}, &out)
		return out, err
	})
}

func (e *Embedded) ImportKey(ctx context.Context, c Caller, spec ImportSpec) (Key, error) {
	if err := e.requireRole(c, RoleCryptoUser); err != nil {
		return Key{}, err
	}
	keys, err := e.create(ctx, c, 1, spec.Session, spec.MinServers, func(h *sealedNode, ref Ref, wrap bool) (protocol.CreateReply, error) {
		var out protocol.CreateReply
		err := h.call(protocol.CallImportKey, protocol.ImportArgs{Spec: spec, Ref: ref, Wrap: wrap}, &out)
		return out, err
	})
	if err != nil {
		return Key{}, err
	}
	return keys[0], nil
}

// create has one HSM make a key (n references: one, or two for a pair)
// with mk: a session key stays there; a token key is then copied by
// client-side sync to every other HSM that answers, as a blob the HSM
// wrapped under the domain key, which the client cannot open.
func (e *Embedded) create(ctx context.Context, c Caller, n int, session bool, minServers int, mk func(h *sealedNode, ref Ref, wrap bool) (protocol.CreateReply, error)) ([]Key, error) {
	return e.createWith(ctx, c, n, session, minServers, 0, mk)
}

// createWith is create, made on an HSM that holds key `with` when it is
// not 0: key unwrap makes the new key where its unwrapping key is.
func (e *Embedded) createWith(ctx context.Context, c Caller, n int, session bool, minServers int, with Ref, mk func(h *sealedNode, ref Ref, wrap bool) (protocol.CreateReply, error)) ([]Key, error) {
	hs := e.up()
	if len(hs) == 0 {
		return nil, e.noHSM()
	}
	if with != 0 {
		var err error
		if hs, err = e.holdersFirst(c, hs, with); err != nil {
			return nil, err
		}
	}
	sn := e.onAll(c, hs)
	ref := e.freshRef(n)
	holders := map[string]bool{}
	for _, h := range e.members() {
		holders[h.ID()] = false
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	made, err := mk(sn[0], ref, !session && len(sn) > 1)
	if err != nil {
		return nil, err
	}
	recs := fromMetas(made.Keys)
	if session {
		holders[hs[0].ID()] = true
		e.mu.Lock()
		for _, r := range recs {
			e.sessionKeys[r.Ref] = sessionKey{hsm: hs[0].ID(), session: c.Session}
		}
		e.mu.Unlock()
		for _, r := range recs {
			e.events.publish(Event{Kind: EventKeyCreated, HSM: hs[0].ID(), Ref: r.Ref.String(), Detail: "session key " + r.Attrs.Label})
		}
	} else {
		// Report where the key was acknowledged, not a later look that a
		// concurrent fault could change.
		ok, err := e.replicate(ctx, c, sn, recs, made.Wrapped, minServers, made.Staged)
		if err != nil {
			return nil, err
		}
		for _, id := range ok {
			holders[id] = true
		}
	}
	out := make([]Key, len(recs))
	for i, r := range recs {
		out[i] = e.view(r, holders)
	}
	return out, nil
}

// freshRef draws n consecutive random references. It asks no HSM: a
// reference is 63 random bits, so two keys drawing the same one is not
// to be expected in the life of a cluster, and every HSM refuses one it
// holds or held for another key anyway (the creation then fails there
// like any other, and is cleaned up).
func (e *Embedded) freshRef(n int) Ref {
	for {
		if r := protocol.NewRef(); (r+Ref(n))>>63 == 0 {
			return r
		}
	}
}

// SyncError is a token key creation that reached too few HSMs.
type SyncError struct {
	Needed    int
	Succeeded []string
	Failed    map[string]error
	// Leftover lists HSMs where cleanup failed and key material remains.
	Leftover map[string]error
	Refs     []Ref
	// Availability says the creation met the minimum but not the SDK 5
	// key availability quorum.
	Availability bool
}

func (e *SyncError) Error() string {
	var b strings.Builder
	end := ""
	if e.Availability {
		fmt.Fprintf(&b, "%s (the key reached only %s", availabilityMessage(e.Refs[0]), strings.Join(e.Succeeded, ", "))
		end = ")"
	} else {
		fmt.Fprintf(&b, "key creation needed %d HSMs but succeeded on %d", e.Needed, len(e.Succeeded))
		if len(e.Succeeded) > 0 {
			fmt.Fprintf(&b, " (%s)", strings.Join(e.Succeeded, ", "))
		}
	}
	ids := make([]string, 0, len(e.Failed))
	for id := range e.Failed {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		fmt.Fprintf(&b, "; %s failed: %v", id, e.Failed[id])
	}
	if len(e.Leftover) == 0 {
		b.WriteString("; the copies made were cleaned up, so the command can be retried")
		return b.String() + end
	}
	left := make([]string, 0, len(e.Leftover))
	for id := range e.Leftover {
		left = append(left, id)
	}
	sort.Strings(left)
	refs := make([]string, len(e.Refs))
	for i, r := range e.Refs {
		refs[i] = r.String()
	}
	fmt.Fprintf(&b, "; cleanup failed, key material %s is left on %s: find it with key list --verbose and delete it with key delete", strings.Join(refs, ", "), strings.Join(left, ", "))
	return b.String() + end
}

// replicate copies a token key that hs[0] has just made to the other HSMs
// in parallel (client-side sync, best effort on all of them): hs[0]
// wrapped each record under the domain key (blobs, in the same call that
// made it) and the client relays the blobs, which each receiver unwraps
// and checks. The creation counts only if at least
// max(create_object_minimum_nodes, min-srv) HSMs hold it; otherwise the
// copies are removed so the caller can retry. A staged key (the
// maker stored nothing, GenerateArgs.Stage) is stored on hs[0] too, at the
// same time as on the others: one commit's wait instead of two in a row.
func (e *Embedded) replicate(ctx context.Context, c Caller, hs []*sealedNode, recs []*protocol.KeyMeta, blobs []*protocol.WrappedKey, minServers int, staged bool) ([]string, error) {
	dur := e.Durability()
	needed := max(dur.MinimumNodes, minServers, 1)
	maker := hs[0].ID()
	var succeeded []string
	targets := hs
	if !staged {
		// The maker stored the key before answering.
		for _, r := range recs {
			e.events.publish(Event{Kind: EventKeyCreated, HSM: maker, Ref: r.Ref.String(), Detail: r.Attrs.Label})
		}
		succeeded, targets = []string{maker}, hs[1:]
	}
	failed := map[string]error{}
	var wrapErr error
	if (staged || len(hs) > 1) && len(blobs) != len(recs) {
		wrapErr = fmt.Errorf("%s answered %d wrapped keys for %d records", maker, len(blobs), len(recs))
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, h := range targets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := ctx.Err()
			if err == nil {
				err = wrapErr
			}
			for _, w := range blobs {
				if err != nil {
					break
				}
				err = h.ImportWrapped(w)
			}
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				failed[h.ID()] = err
				return
			}
			succeeded = append(succeeded, h.ID())
			if staged {
				return // told in the HSMs' order below, once all have answered
			}
			for _, r := range recs {
				e.events.publish(Event{Kind: EventKeyReplicated, HSM: h.ID(), Ref: r.Ref.String(), Detail: "client-side sync from " + maker})
			}
		}()
	}
	wg.Wait()
	if staged {
		// A staged key was stored on every HSM at once; the panes hear it
		// as made on the maker and copied to the rest, in that order.
		stored := map[string]bool{}
		for _, id := range succeeded {
			stored[id] = true
		}
		for _, h := range hs {
			if !stored[h.ID()] {
				continue
			}
			for _, r := range recs {
				if h.ID() == maker {
					e.events.publish(Event{Kind: EventKeyCreated, HSM: maker, Ref: r.Ref.String(), Detail: r.Attrs.Label})
				} else {
					e.events.publish(Event{Kind: EventKeyReplicated, HSM: h.ID(), Ref: r.Ref.String(), Detail: "client-side sync from " + maker})
				}
			}
		}
	}
	if err := ctx.Err(); err != nil {
		// Cancelled by the user: the copies made so far are removed, and
		// the command says it was cancelled, not why sync fell short.
		se := &SyncError{Succeeded: succeeded, Failed: failed}
		for _, r := range recs {
			se.Refs = append(se.Refs, r.Ref)
		}
		e.cleanup(c, se, recs)
		return nil, fmt.Errorf("key creation %w after it reached %s; the copies were removed", err, strings.Join(succeeded, ", "))
	}
	// HSMs that were down count as failed too: the client tries them all.
	for _, h := range e.members() {
		if !h.Up() {
			failed[h.ID()] = protocol.ErrDown(h.ID())
		}
	}
	sort.Strings(succeeded)
	if len(succeeded) >= needed && (!dur.AvailabilityCheck || len(succeeded) >= 2) {
		return succeeded, nil
	}
	se := &SyncError{Needed: needed, Succeeded: succeeded, Failed: failed}
	for _, r := range recs {
		se.Refs = append(se.Refs, r.Ref)
	}
	se.Availability = len(succeeded) >= needed
	e.cleanup(c, se, recs)
	return nil, se
}

// cleanup removes the copies of a creation that did not count. It is best
// effort: what it cannot remove is recorded in se.Leftover for the admin.
func (e *Embedded) cleanup(c Caller, se *SyncError, recs []*protocol.KeyMeta) {
	injected := e.failCleanup.Swap(false)
	for _, id := range se.Succeeded {
		h := e.hsm(id)
		for _, r := range recs {
			var err error
			if injected {
				err = fmt.Errorf("cleanup on %s failed (lab cleanup fail-next)", id)
			} else if h == nil {
				err = fmt.Errorf("%s left the cluster", id)
			} else {
				err = e.on(c, h).DeleteKey(r.Ref)
			}
			if err != nil {
				if se.Leftover == nil {
					se.Leftover = map[string]error{}
				}
				se.Leftover[id] = err
				e.events.publish(Event{Kind: EventCleanupFailed, HSM: id, Ref: r.Ref.String(), Detail: err.Error()})
				continue
			}
			e.events.publish(Event{Kind: EventCleanupDone, HSM: id, Ref: r.Ref.String()})
		}
	}
}

// availabilityMessage is the SDK 5 client's message, word for word.
func availabilityMessage(ref Ref) string {
	return fmt.Sprintf("Key %s does not meet the availability requirements - The key must be available on at least 2 HSMs before being used.", ref)
}

// hsm returns the cluster's HSM with id, or nil.
func (e *Embedded) hsm(id string) node {
	for _, h := range e.members() {
		if h.ID() == id {
			return h
		}
	}
	return nil
}

// holders returns, for every HSM, whether it holds ref (as c may see).
func (e *Embedded) holders(c Caller, ref Ref) map[string]bool {
	all := e.members()
	m := make(map[string]bool, len(all))
	for _, h := range all {
		m[h.ID()] = h.Up() && e.on(c, h).Has(ref)
	}
	return m
}

// view reports a key with its coverage.
func (e *Embedded) view(r *protocol.KeyMeta, holders map[string]bool) Key {
	n := 0
	for _, ok := range holders {
		if ok {
			n++
		}
	}
	cov := CoverageFull
	if r.Session == "" && n < len(holders) {
		cov = CoveragePartial
	}
	shared := make([]Owner, 0, len(r.Shared))
	for _, u := range r.Shared {
		shared = append(shared, Owner{Username: u, KeyCoverage: cov})
	}
	return Key{
		Ref:     r.Ref,
		Attrs:   r.Attrs,
		Session: r.Session != "",
		Info: KeyInfo{
			Owners:          []Owner{{Username: r.Owner, KeyCoverage: cov}},
			SharedUsers:     shared,
			QuorumValues:    KeyQuorumValues{Manage: r.ManageQuorum, Use: r.UseQuorum},
			ClusterCoverage: cov,
			HSMCoverage:     holders,
		},
	}
}

func (e *Embedded) Keys(ctx context.Context, c Caller, f Filter) ([]Key, error) {
	if err := e.requireRole(c, RoleAdmin, RoleCryptoUser); err != nil {
		return nil, err
	}
	hs := e.up()
	if len(hs) == 0 {
		return nil, e.noHSM()
	}
	type entry struct {
		rec     *protocol.KeyMeta
		holders map[string]bool
	}
	found := map[Ref]*entry{}
	all := e.members()
	// Every HSM is asked at once: over a transport each is a round trip.
	snaps := make([][]*protocol.KeyMeta, len(all))
	errs := make([]error, len(all))
	var wg sync.WaitGroup
	for i, h := range all {
		wg.Add(1)
		go func() {
			defer wg.Done()
			snaps[i], errs[i] = e.on(c, h).Snapshot(f)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		// An HSM that is down holds nothing as far as the list can tell;
		// any other failure would make the list wrong, so it is an error.
		if err != nil && !protocol.IsDown(err) {
			return nil, fmt.Errorf("key list on %s: %w", all[i].ID(), err)
		}
	}
	for i, h := range all {
		for _, r := range snaps[i] {
			en, ok := found[r.Ref]
			if !ok {
				if !r.VisibleTo(c) || !f.Matches(r) {
					continue
				}
				en = &entry{rec: r, holders: map[string]bool{}}
				for _, x := range all {
					en.holders[x.ID()] = false
				}
				found[r.Ref] = en
			}
			en.holders[h.ID()] = true
		}
	}
	out := make([]Key, 0, len(found))
	for _, en := range found {
		out = append(out, e.view(en.rec, en.holders))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Ref < out[j].Ref })
	return out, nil
}

// ownKey finds a key the caller owns, for the commands that change keys.
func (e *Embedded) ownKey(ctx context.Context, c Caller, ref Ref) (Key, error) {
	keys, err := e.Keys(ctx, c, Filter{Ref: &ref})
	if err != nil {
		return Key{}, err
	}
	if len(keys) == 0 {
		return Key{}, fmt.Errorf("%w: no key %s that you can see", ErrKeyNotFound, ref)
	}
	k := keys[0]
	if k.Info.Owners[0].Username != c.Username {
		return Key{}, fmt.Errorf("%w: only the key's owner (%s) may do this", ErrPermission, k.Info.Owners[0].Username)
	}
	return k, nil
}

func (e *Embedded) DeleteKey(ctx context.Context, c Caller, ref Ref) error {
	k, err := e.ownKey(ctx, c, ref)
	if err != nil {
		return err
	}
	e.avail.Delete(ref)
	if !k.Session {
		e.mu.Lock()
		e.deleted[ref] = c
		e.mu.Unlock()
	}
	// Once one HSM has deleted the key (and kept a tombstone), the key is
	// deleted: server-side sync removes the copies on HSMs that did not
	// answer. So the delete fails only if no HSM took it.
	var errs []error
	done := 0
	for _, h := range e.members() {
		if k.Info.HSMCoverage[h.ID()] {
			// Not found is the end wanted: sync may have removed the copy
			// (from another HSM's tombstone) since the listing.
			if err := e.on(c, h).DeleteKey(ref); err != nil && !errors.Is(err, ErrKeyNotFound) {
				errs = append(errs, err)
				continue
			}
			done++
			e.events.publish(Event{Kind: EventKeyDeleted, HSM: h.ID(), Ref: ref.String()})
		}
	}
	if done == 0 && len(errs) > 0 {
		if !k.Session {
			e.mu.Lock()
			delete(e.deleted, ref)
			e.mu.Unlock()
		}
		return fmt.Errorf("delete key %s: %w", ref, errors.Join(errs...))
	}
	return nil
}

// changeKey has one HSM that holds the key change it, with the approval
// its manage quorum needs; that HSM passes the new record to the others.
func (e *Embedded) changeKey(ctx context.Context, c Caller, k Key, a protocol.KeyChangeArgs) (Key, error) {
	a.Approval = approvalFrom(ctx)
	var last error = fmt.Errorf("%w: %s", ErrKeyNotFound, k.Ref)
	for _, h := range e.members() {
		if !k.Info.HSMCoverage[h.ID()] || !h.Up() {
			continue
		}
		var m protocol.KeyMeta
		err := e.on(c, h).call(protocol.CallKeyChange, a, &m)
		if err == nil {
			return e.view(&m, e.holders(c, k.Ref)), nil
		}
		last = err
		if !errors.Is(err, ErrKeyNotFound) && !protocol.IsDown(err) {
			break
		}
	}
	return Key{}, last
}

func (e *Embedded) ShareKey(ctx context.Context, c Caller, ref Ref, username string, share bool) (Key, error) {
	k, err := e.ownKey(ctx, c, ref)
	if err != nil {
		return Key{}, err
	}
	names, err := e.checkCryptoUsers(c, c.Username, []string{username})
	if err != nil {
		return Key{}, err
	}
	op := protocol.OpShare
	if !share {
		op = protocol.OpUnshare
	}
	return e.changeKey(ctx, c, k, protocol.KeyChangeArgs{Ref: ref, Op: op, User: names[0]})
}

func (e *Embedded) SetAttribute(ctx context.Context, c Caller, ref Ref, name, value string) (Key, error) {
	var k Key
	var err error
	if protocol.AdminOnly(name) {
		// trusted is an admin's to set, on any token key it can see.
		if err := e.requireRole(c, RoleAdmin); err != nil {
			return Key{}, fmt.Errorf("attribute %s: %w", name, err)
		}
		keys, err := e.Keys(ctx, c, Filter{Ref: &ref})
		if err != nil {
			return Key{}, err
		}
		if len(keys) == 0 {
			return Key{}, fmt.Errorf("%w: no key %s that you can see", ErrKeyNotFound, ref)
		}
		k = keys[0]
	} else if k, err = e.ownKey(ctx, c, ref); err != nil {
		return Key{}, err
	}
	probe := k.Attrs
	if err := probe.Set(name, value, false); err != nil {
		return Key{}, err
	}
	return e.changeKey(ctx, c, k, protocol.KeyChangeArgs{Ref: ref, Op: protocol.OpSetAttribute, Name: name, Value: value})
}

// use runs fn on one HSM that holds the key: the session key's own HSM,
// or for a token key the next HSM in turn, retrying on the next ones up
// to retry_on_missing_key times when the HSM does not hold the key. fn
// asks the HSM to use the key; the key's material stays there, and the
// HSM checks the caller's access (and any approval) itself.
func (e *Embedded) use(ctx context.Context, c Caller, ref Ref, fn func(h *sealedNode) error) error {
	if err := e.requireRole(c, RoleCryptoUser); err != nil {
		return err
	}
	// A session key this client made is used on its HSM only. Another
	// session's keys are not in the map; the HSM's record refuses them.
	e.mu.RLock()
	sk, isSession := e.sessionKeys[ref]
	e.mu.RUnlock()
	if isSession {
		id := sk.hsm
		h := e.hsm(id)
		if h == nil || !h.Up() {
			return fmt.Errorf("%w: session key %s was on %s, which is down", ErrKeyNotFound, ref, id)
		}
		return fn(e.on(c, h))
	}
	dur := e.Durability()
	hs := e.up()
	if len(hs) == 0 {
		return e.noHSM()
	}
	if dur.AvailabilityCheck && !e.available(c, hs, ref) {
		return errors.New(availabilityMessage(ref))
	}
	attempts := min(1+dur.RetryOnMissingKey, len(hs))
	var last error
	for _, h := range hs[:attempts] {
		if err := ctx.Err(); err != nil {
			return err
		}
		// Reached as c's session only when tried: most uses take the first.
		err := fn(e.on(c, h))
		if errors.Is(err, ErrKeyNotFound) {
			last = err
			continue
		}
		return err
	}
	return last
}

// available is the SDK 5 availability check: the key is on at least two
// of the HSMs that answer. A pass is remembered for a second, until an
// HSM goes down or a key is deleted or lost (the bus's epoch moves): the
// check costs a question to every HSM, and a busy client asks it for every
// use of the same few keys.
func (e *Embedded) available(c Caller, hs []node, ref Ref) bool {
	epoch := e.events.epoch.Load()
	if v, ok := e.avail.Load(ref); ok {
		a := v.(availability)
		if a.epoch == epoch && time.Since(a.at) < availabilityTTL {
			return true
		}
	}
	if countHolders(e.onAll(c, hs), ref) < 2 {
		return false
	}
	e.avail.Store(ref, availability{epoch: epoch, at: time.Now()})
	return true
}

const availabilityTTL = time.Second

type availability struct {
	epoch int64
	at    time.Time
}

func (e *Embedded) Sign(ctx context.Context, c Caller, req SignRequest) ([]byte, error) {
	e.ceiling.Pace(req)
	appr := approvalFrom(ctx)
	var sig []byte
	err := e.use(ctx, c, req.Ref, func(h *sealedNode) error {
		var err error
		sig, err = h.Sign(req, appr)
		return err
	})
	return sig, err
}

func (e *Embedded) Verify(ctx context.Context, c Caller, req SignRequest, sig []byte) error {
	return e.use(ctx, c, req.Ref, func(h *sealedNode) error {
		return h.Verify(req, sig)
	})
}

func (e *Embedded) PublicKeyPEM(ctx context.Context, c Caller, ref Ref) ([]byte, error) {
	var out []byte
	err := e.use(ctx, c, ref, func(h *sealedNode) error {
		var err error
		out, err = h.PublicKeyPEM(ref)
		return err
	})
	return out, err
}

// MFAStrategy is one entry of user list's mfa field.
type MFAStrategy struct {
	Strategy string `json:"strategy"`
	Status   string `json:"status"`
}

func mfaOf(on bool) []MFAStrategy {
	if !on {
		return []MFAStrategy{}
	}
	return []MFAStrategy{{Strategy: "token-sign", Status: "enabled"}}
}

// RegisterMFAKey turns on token-sign MFA for the caller: pubPEM is its MFA
// public key, signedFile a registration token (GenerateToken with the
// registration service) signed with the matching private key.
func (e *Embedded) RegisterMFAKey(ctx context.Context, c Caller, pubPEM, signedFile []byte) error {
	if err := e.session(c); err != nil {
		return err
	}
	h, err := e.first(c)
	if err != nil {
		return err
	}
	return h.call(protocol.CallRegisterMFA, protocol.RegisterArgs{PubPEM: pubPEM, File: signedFile}, nil)
}

// DeregisterQuorumKey removes a user's quorum approval key: the caller's
// own, or (an admin, with the user service's approval) another user's.
func (e *Embedded) DeregisterQuorumKey(ctx context.Context, c Caller, username string, role Role) error {
	if err := e.session(c); err != nil {
		return err
	}
	h, err := e.first(c)
	if err != nil {
		return err
	}
	return h.call(protocol.CallDeregisterQuorum, protocol.UserArgs{Username: username, Role: role, Approval: approvalFrom(ctx)}, nil)
}

// DeregisterMFA turns token-sign MFA off for a user: the caller itself,
// or (an admin, with the user service's approval) another user.
func (e *Embedded) DeregisterMFA(ctx context.Context, c Caller, username string, role Role) error {
	if err := e.session(c); err != nil {
		return err
	}
	h, err := e.first(c)
	if err != nil {
		return err
	}
	return h.call(protocol.CallDeregisterMFA, protocol.UserArgs{Username: username, Role: role, Approval: approvalFrom(ctx)}, nil)
}
