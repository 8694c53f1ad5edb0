package hsmcore

import (
	"context"

	"errors"
	"fmt"
	"github.com/hsmsh/hsmsh/hsmcore/quorum"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
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
	// QuorumRules are KMS-style quorum rule sets by command path ("user
	// delete"), which the HSMs apply.
	QuorumRules map[string][]quorum.Rule
	// Client is this client install's identity for authenticated
	// sessions; a zero value makes one for the process.
	Client ClientIdentity
	// SessionLifetime is how long a login session lasts (default 1h).
	SessionLifetime time.Duration
	// NoRenegotiate forgets the password after login: an expired session
	// then needs a new login instead of a transparent renegotiation.
	NoRenegotiate bool

	// Profile makes each HSM serve at a real HSM type's published rates
	// ("none", ProfileHSM1Medium, ProfileHSM2mMedium; profile.go).
	Profile string

	// restore, set by OpenClone, is a backup every new HSM starts from.
	restore *backupContents
}

// Embedded is a cluster of in-process HSMs. It plays both parts: the HSMs,
// and the client library that routes operations to them and replicates new
// keys (client-side sync).
type Embedded struct {
	id   string
	hsms []node // in-process HSMs (*hsm)
	lock *dirLock
	next atomic.Uint64 // round-robin cursor

	dir string // the cluster's data folder; "" in memory

	mu       sync.RWMutex
	dur      Durability
	sessions map[string]Caller // live login sessions
	deleted  map[Ref]bool      // token keys this client deleted
	// sessionKeys says which HSM holds each session key this client made:
	// a session key lives on one HSM only, and asking every HSM whether it
	// holds one would cost a round trip each on every use.
	sessionKeys map[Ref]sessionKey

	events      bus
	sync        syncer
	failCleanup atomic.Bool // lab cleanup fail-next

	// ruled lists the command paths a configured quorum rule set gates.
	ruled map[string]bool
	// domainMu serialises bringing HSMs into the domain; domainID is the
	// cluster's domain once seen, which it guards.
	domainMu sync.Mutex
	domainID string

	// ceiling paces this client at a profile's cluster-wide rates.
	ceiling *pacers
	profile string

	// gates and avail are what the client remembers of keys to spare a
	// round trip per use (use()).
	gates sync.Map // Ref → gate
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
	// syncInto, when set, limits what server-side sync writes to: an HSM
	// server syncs into its own HSM only, pulling from its peers.
	syncInto func(node) bool
}

var _ Cluster = (*Embedded)(nil)

// members returns the cluster's HSMs; lab hsm add and remove change the
// list, so callers work on a copy.
func (e *Embedded) members() []node {
	e.mu.RLock()
	defer e.mu.RUnlock()
	return append([]node(nil), e.hsms...)
}

// builtinAdmin is the admin every new cluster has, unactivated until
// cluster activate gives it a password.
const builtinAdmin = "admin"

// OpenEmbedded opens (or creates) an embedded cluster.
func OpenEmbedded(opts Options) (*Embedded, error) {
	if opts.HSMs < 1 {
		return nil, fmt.Errorf("%w: a cluster needs at least one HSM", ErrInvalid)
	}
	if err := CheckProfile(opts.Profile); err != nil {
		return nil, err
	}
	e := &Embedded{id: opts.ID, dir: opts.DataDir, dur: opts.Durability, ruled: ruledCommands(opts.QuorumRules), sessions: map[string]Caller{}, deleted: map[Ref]bool{}, sessionKeys: map[Ref]sessionKey{}, auth: map[string]*clientSession{}}
	if e.dur.MinimumNodes < 1 {
		e.dur.MinimumNodes = 1
	}
	if p, ok := profiles[opts.Profile]; ok {
		e.ceiling, e.profile = newPacers(p.ceiling), opts.Profile
	}
	if err := e.setClient(opts.Client, opts.SessionLifetime, !opts.NoRenegotiate); err != nil {
		return nil, err
	}
	if opts.DataDir != "" {
		l, err := lockDir(opts.DataDir)
		if err != nil {
			return nil, err
		}
		e.lock = l
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
		id := fmt.Sprintf("hsm-%d", i)
		var st store
		if opts.DataDir != "" {
			s, err := openBoltStore(filepath.Join(opts.DataDir, id))
			if err != nil {
				e.Close()
				return nil, fmt.Errorf("open %s: %w", id, err)
			}
			st = s
		}
		h, err := newHSM(id, st)
		if err != nil {
			if st != nil {
				st.close()
			}
			e.Close()
			return nil, fmt.Errorf("open %s: %w", id, err)
		}
		h.rules = opts.QuorumRules
		if p, ok := profiles[opts.Profile]; ok {
			h.paced = newPacers(p.perHSM)
		}
		if opts.restore != nil {
			if err := h.restore(opts.restore); err != nil {
				h.Close()
				e.Close()
				return nil, fmt.Errorf("clone: %w", err)
			}
		}
		e.hsms = append(e.hsms, e.wrap(h))
	}
	if err := e.prepare(); err != nil {
		e.Close()
		return nil, err
	}
	e.startSync()
	return e, nil
}

// wrap gives the client library its way to an in-process HSM: through
// the nested TLS transport, or directly.
func (e *Embedded) wrap(h *hsm) node {
	if e.transport == nil {
		return h
	}
	return e.transport.wrap(h)
}

// Subscribe follows the cluster's events. A subscriber that falls behind
// loses events; cancel ends the subscription.
func (e *Embedded) Subscribe(buffer int) (<-chan Event, func()) {
	return e.events.subscribe(buffer)
}

// prepare is what a client does on opening a cluster, embedded or remote:
// a new cluster gets its built-in admin, and every HSM that answers joins
// the domain.
func (e *Embedded) prepare() error {
	if err := e.ensureAdmin(); err != nil {
		return err
	}
	return e.ensureDomain()
}

// ensureAdmin gives a brand-new cluster its unactivated admin.
func (e *Embedded) ensureAdmin() error {
	// Only HSMs that answer count: a remote server that is down may hold
	// the cluster's users, and gets nothing written now.
	up := e.answering()
	for _, h := range up {
		if users, _ := h.UserState(); len(users) > 0 {
			return nil
		}
	}
	// The oldest possible version: an HSM that joins empty (a new server,
	// one that was down) and gets this record must never have it win over
	// the activated admin the others hold.
	admin := &userRecord{Username: builtinAdmin, Role: RoleUnactivatedAdmin, Updated: 1}
	for _, h := range up {
		if err := h.PutUser(admin); err != nil {
			return err
		}
	}
	return nil
}

func (e *Embedded) ID() string { return e.id }

func (e *Embedded) Close() error {
	if e.sync.stop != nil {
		e.sync.stop()
		<-e.sync.done
		e.sync.pass.Lock() // let a pass in flight finish
		defer e.sync.pass.Unlock()
	}
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
	e.lock.release()
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
	if changed && e.sync.kick != nil {
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

// up returns the HSMs that answer, starting at the round-robin cursor, so
// that successive operations spread over the cluster.
func (e *Embedded) up() []node {
	all := e.members()
	n := len(all)
	if n == 0 {
		return nil
	}
	start := int(e.next.Add(1) % uint64(n))
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

// userVersions resolves the users of the HSMs that answer: for each name
// the newest record, unless a newer deletion wins. HSMs may disagree until
// sync runs (one was down when a user changed); the newest version is the
// truth, so a user deleted elsewhere cannot log in on a stale HSM.
func (e *Embedded) userVersions() (map[string]*userRecord, map[string]int64, error) {
	hs := e.up()
	if len(hs) == 0 {
		return nil, nil, ErrNoHSM
	}
	users, tombs := map[string]*userRecord{}, map[string]int64{}
	var versions []*userRecord
	for _, h := range hs {
		us, ts := h.UserState()
		for n, u := range us {
			versions = append(versions, u)
			if cur, ok := users[n]; !ok || u.Updated > cur.Updated {
				c := *u
				users[n] = &c
			}
		}
		for n, t := range ts {
			tombs[n] = max(tombs[n], t)
		}
	}
	// Failure counters add up over every HSM's version.
	for _, v := range versions {
		users[v.Username].mergeFails(v)
	}
	for n, u := range users {
		if t, ok := tombs[n]; ok && t >= u.Updated {
			delete(users, n)
		}
	}
	return users, tombs, nil
}

// findUser looks a user up on the HSMs that answer.
func (e *Embedded) findUser(name string) (*userRecord, error) {
	users, _, err := e.userVersions()
	if err != nil {
		return nil, err
	}
	if u, ok := users[name]; ok {
		return u, nil
	}
	return nil, fmt.Errorf("%w: %s", ErrUserNotFound, name)
}

// stamp gives a user record a version newer than any before it.
func (e *Embedded) stamp(u *userRecord) {
	now := time.Now().UnixNano()
	u.Updated = max(now, u.Updated+1)
}

// spreadUser copies the newest record of a user (with its failure
// counters merged from every HSM) to every HSM that answers, so that a
// failed login counts cluster-wide at once rather than at the next sync.
func (e *Embedded) spreadUser(name string) error {
	u, err := e.findUser(name)
	if err != nil {
		return err
	}
	return e.putUserAll(u)
}

// putUserAll writes a new version of a user record to every HSM that
// answers; it succeeds if at least one took it. Bookkeeping with no
// session (activation, failed logins) writes it as it is.
func (e *Embedded) putUserAll(u *userRecord) error { return e.putUserAs(Caller{}, u) }

// putUserAs is putUserAll for a change c's session makes, sealed in its
// envelopes, so that each HSM checks c may make it.
func (e *Embedded) putUserAs(c Caller, u *userRecord) error {
	hs := e.up()
	if len(hs) == 0 {
		return ErrNoHSM
	}
	e.stamp(u)
	var errs []error
	for _, h := range e.onAll(c, hs) {
		if err := h.PutUser(u); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) == len(hs) {
		return errors.Join(errs...)
	}
	return nil
}

func (e *Embedded) Activate(ctx context.Context, password string) error {
	u, err := e.findUser(builtinAdmin)
	if err != nil {
		return err
	}
	if u.Role != RoleUnactivatedAdmin {
		return fmt.Errorf("the cluster %s is already activated", e.id)
	}
	if err := ValidatePassword(password); err != nil {
		return err
	}
	return e.putUserAll(&userRecord{Username: builtinAdmin, Role: RoleAdmin, Hash: hashPassword(password)})
}

func (e *Embedded) Login(ctx context.Context, username string, role Role, password string) (Caller, error) {
	name, err := NormalizeUsername(username)
	if err != nil {
		return Caller{}, err
	}
	if admin, err := e.findUser(builtinAdmin); err == nil && admin.Role == RoleUnactivatedAdmin {
		return Caller{}, ErrNotActivated
	}
	u, err := e.findUser(name)
	if errors.Is(err, ErrUserNotFound) {
		return Caller{}, ErrBadCredentials
	}
	if err != nil {
		return Caller{}, err
	}
	if u.locked() {
		return Caller{}, ErrLocked
	}
	// The HSM checks the password (and the role), inside the session's
	// channel, and counts a failure itself.
	sess, ans, err := e.authenticate(name, role, password, nil)
	if err != nil {
		return Caller{}, err
	}
	if ans.OK && u.failures() == 0 {
		// Nothing to spread.
	} else if err := e.spreadUser(name); err != nil {
		return Caller{}, fmt.Errorf("record the login attempt: %w", err)
	}
	if !ans.OK {
		if ans.Locked {
			return Caller{}, fmt.Errorf("%w; %w", ErrBadCredentials, ErrLocked)
		}
		return Caller{}, fmt.Errorf("%w (%d of %d attempts left before the user is locked)", ErrBadCredentials, ans.Left, MaxFailedLogins)
	}
	if e.keepCredentials {
		sess.password = password // to renegotiate when the token expires
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
	e.endSession(c.Session)
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
// question is a round trip, so they are asked all at once; in-process HSMs
// answer faster than a goroutine starts.
func countHolders(hs []node, ref Ref) int {
	if _, direct := hs[0].(*hsm); direct {
		n := 0
		for _, h := range hs {
			if h.Has(ref) {
				n++
			}
		}
		return n
	}
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
	if err := e.approve(ctx, c, "user", 0); err != nil {
		return User{}, err
	}
	if _, err := e.findUser(name); err == nil {
		return User{}, fmt.Errorf("%w: %s", ErrUserExists, name)
	} else if !errors.Is(err, ErrUserNotFound) {
		return User{}, err
	}
	u := &userRecord{Username: name, Role: role, Hash: hashPassword(password)}
	if err := e.putUserAs(c, u); err != nil {
		return User{}, err
	}
	return e.userView(u), nil
}

// userView reports a user with its coverage over the whole cluster.
func (e *Embedded) userView(u *userRecord) User {
	held, all := 0, e.members()
	for _, h := range all {
		if users, _ := h.UserState(); users[u.Username] != nil {
			held++
		}
	}
	cov := CoverageFull
	if held < len(all) {
		cov = CoveragePartial
	}
	q := []QuorumStrategy{}
	if u.QuorumKey != "" {
		q = append(q, QuorumStrategy{Strategy: "token-sign", Status: "enabled"})
	}
	return User{Username: u.Username, Role: u.Role, Locked: fmt.Sprint(u.locked()), MFA: []string{}, Quorum: q, ClusterCoverage: cov}
}

func (e *Embedded) DeleteUser(ctx context.Context, c Caller, username string, role Role) error {
	if err := e.requireRole(c, RoleAdmin); err != nil {
		return err
	}
	name, err := NormalizeUsername(username)
	if err != nil {
		return err
	}
	u, err := e.findUser(name)
	if err != nil {
		return err
	}
	if u.Role != role {
		return fmt.Errorf("%w: %s has role %s, not %s", ErrUserNotFound, name, u.Role, role)
	}
	if err := e.approve(ctx, c, "user", 0); err != nil {
		return err
	}
	if name == c.Username {
		return fmt.Errorf("%w: you cannot delete the user you are logged in as", ErrPermission)
	}
	for _, h := range e.members() {
		if h.Owns(name) {
			return fmt.Errorf("%w: user %s owns keys on %s; the keys must be deleted first", ErrPermission, name, h.ID())
		}
	}
	var errs []error
	hs := e.up()
	at := time.Now().UnixNano()
	if at <= u.Updated {
		at = u.Updated + 1 // the deletion must be newer than the record
	}
	for _, h := range e.onAll(c, hs) {
		if err := h.DeleteUser(name, at); err != nil {
			errs = append(errs, err)
		}
		// A deleted user keeps no access: a new user of the same name must
		// not inherit the keys shared with the old one.
		if err := h.UnshareAll(name); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (e *Embedded) Users(ctx context.Context, c Caller) ([]User, error) {
	users, _, err := e.userVersions()
	if err != nil {
		return nil, err
	}
	out := make([]User, 0, len(users))
	for _, u := range users {
		out = append(out, e.userView(u))
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
	if name != c.Username {
		// Changing another user's password is user management.
		if err := e.approve(ctx, c, "user", 0); err != nil {
			return err
		}
	}
	u, err := e.findUser(name)
	if err != nil {
		return err
	}
	if u.Role != role {
		return fmt.Errorf("%w: %s has role %s, not %s", ErrUserNotFound, name, u.Role, role)
	}
	if u.locked() && c.Role != RoleAdmin {
		return ErrLocked
	}
	u.Hash = hashPassword(password)
	u.resetFails(time.Now().UnixNano()) // a new password unlocks
	return e.putUserAs(c, u)
}

// checkCryptoUsers checks that each name is an existing crypto user other
// than the owner, and returns the names normalised.
func (e *Embedded) checkCryptoUsers(owner string, names []string) ([]string, error) {
	out := make([]string, 0, len(names))
	for _, n := range names {
		name, err := NormalizeUsername(n)
		if err != nil {
			return nil, err
		}
		u, err := e.findUser(name)
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

// checkKeyQuorum applies CloudHSM's limit: a key quorum value is 0 to 8
// and never more than the users associated with the key.
func checkKeyQuorum(value, users int, name string) error {
	if value < 0 || value > 8 {
		return fmt.Errorf("%w: %s must be 0 to 8", ErrInvalid, name)
	}
	if value > users {
		return fmt.Errorf("%w: %s %d is more than the %d users associated with the key", ErrInvalid, name, value, users)
	}
	return nil
}

func (e *Embedded) GenerateKey(ctx context.Context, c Caller, spec KeySpec) ([]Key, error) {
	if err := e.requireRole(c, RoleCryptoUser); err != nil {
		return nil, err
	}
	shared, err := e.checkCryptoUsers(c.Username, spec.ShareWith)
	if err != nil {
		return nil, err
	}
	if err := checkKeyQuorum(spec.UseQuorum, 1+len(shared), "use-key-quorum-value"); err != nil {
		return nil, err
	}
	if err := checkKeyQuorum(spec.ManageQuorum, 1+len(shared), "manage-key-quorum-value"); err != nil {
		return nil, err
	}
	recs, err := generate(spec)
	if err != nil {
		return nil, err
	}
	for _, r := range recs {
		r.Owner, r.Shared = c.Username, shared
		r.UseQuorum, r.ManageQuorum = spec.UseQuorum, spec.ManageQuorum
	}
	return e.create(ctx, c, recs, spec.Session, spec.MinServers)
}

func (e *Embedded) ImportKey(ctx context.Context, c Caller, spec ImportSpec) (Key, error) {
	if err := e.requireRole(c, RoleCryptoUser); err != nil {
		return Key{}, err
	}
	rec, err := parseImport(spec)
	if err != nil {
		return Key{}, err
	}
	rec.Owner = c.Username
	keys, err := e.create(ctx, c, []*keyRecord{rec}, spec.Session, spec.MinServers)
	if err != nil {
		return Key{}, err
	}
	return keys[0], nil
}

// create gives new records their references and stores them: a session
// key on one HSM, a token key on one HSM and then, by client-side sync, on
// every other HSM that answers.
func (e *Embedded) create(ctx context.Context, c Caller, recs []*keyRecord, session bool, minServers int) ([]Key, error) {
	now := time.Now().UTC()
	for _, r := range recs {
		r.Ref = e.freshRef()
		r.Created = now
		if session {
			r.Session = c.Session
		}
	}
	hs := e.up()
	if len(hs) == 0 {
		return nil, ErrNoHSM
	}
	hs = e.onAll(c, hs)
	holders := map[string]bool{}
	for _, h := range e.members() {
		holders[h.ID()] = false
	}
	if session {
		if err := hs[0].PutKeys(recs); err != nil {
			return nil, err
		}
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
		ok, err := e.replicate(ctx, c, hs, recs, minServers)
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

// freshRef draws a reference no HSM uses or has used. The HSMs are asked
// at once: over a transport each question is a round trip.
func (e *Embedded) freshRef() Ref {
	for {
		r := newRef()
		var clash atomic.Bool
		var wg sync.WaitGroup
		for _, h := range e.members() {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if h.RefTaken(r) {
					clash.Store(true)
				}
			}()
		}
		wg.Wait()
		if !clash.Load() {
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

// replicate makes a token key on the first HSM and copies it to the others
// in parallel (client-side sync, best effort on all of them). The creation
// counts only if at least max(create_object_minimum_nodes, min-srv) HSMs
// hold it; otherwise the copies are removed so the caller can retry.
func (e *Embedded) replicate(ctx context.Context, c Caller, hs []node, recs []*keyRecord, minServers int) ([]string, error) {
	dur := e.Durability()
	needed := max(dur.MinimumNodes, minServers, 1)
	if err := hs[0].PutKeys(recs); err != nil {
		return nil, fmt.Errorf("create key on %s: %w", hs[0].ID(), err)
	}
	for _, r := range recs {
		e.events.publish(Event{Kind: EventKeyCreated, HSM: hs[0].ID(), Ref: r.Ref.String(), Detail: r.Attrs.Label})
	}
	succeeded := []string{hs[0].ID()}
	failed := map[string]error{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, h := range hs[1:] {
		wg.Add(1)
		go func(h node) {
			defer wg.Done()
			err := ctx.Err()
			if err == nil {
				err = h.PutKeys(recs)
			}
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				failed[h.ID()] = err
				return
			}
			succeeded = append(succeeded, h.ID())
			for _, r := range recs {
				e.events.publish(Event{Kind: EventKeyReplicated, HSM: h.ID(), Ref: r.Ref.String(), Detail: "client-side sync from " + hs[0].ID()})
			}
		}(h)
	}
	wg.Wait()
	// HSMs that were down count as failed too: the client tries them all.
	for _, h := range e.members() {
		if !h.Up() {
			failed[h.ID()] = errDown(h.ID())
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
func (e *Embedded) cleanup(c Caller, se *SyncError, recs []*keyRecord) {
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

// holders returns, for every HSM, whether it holds ref.
func (e *Embedded) holders(ref Ref) map[string]bool {
	all := e.members()
	m := make(map[string]bool, len(all))
	for _, h := range all {
		m[h.ID()] = h.Has(ref)
	}
	return m
}

// view reports a key with its coverage.
func (e *Embedded) view(r *keyRecord, holders map[string]bool) Key {
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
		return nil, ErrNoHSM
	}
	type entry struct {
		rec     *keyRecord
		holders map[string]bool
	}
	found := map[Ref]*entry{}
	all := e.members()
	// Every HSM is asked at once: over a transport each is a round trip.
	snaps := make([][]*keyRecord, len(all))
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
		if err != nil && !isDown(err) {
			return nil, fmt.Errorf("key list on %s: %w", all[i].ID(), err)
		}
	}
	for i, h := range all {
		for _, r := range snaps[i] {
			en, ok := found[r.Ref]
			if !ok {
				if !r.visibleTo(c) || !f.match(r) {
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
	e.gates.Delete(ref)
	e.avail.Delete(ref)
	if !k.Session {
		e.mu.Lock()
		e.deleted[ref] = true
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

// update changes a key's record on every HSM that holds it.
func (e *Embedded) update(c Caller, ref Ref, holders map[string]bool, change func(r *keyRecord) error) (Key, error) {
	var last *keyRecord
	for _, h := range e.members() {
		if !holders[h.ID()] {
			continue
		}
		h = e.on(c, h)
		// Attributes and users only: the material stays in the HSM.
		r, err := h.KeyMeta(ref)
		if err != nil {
			return Key{}, err
		}
		if err := change(r); err != nil {
			return Key{}, err
		}
		if err := h.UpdateMeta(r); err != nil {
			return Key{}, err
		}
		last = r
	}
	if last == nil {
		return Key{}, fmt.Errorf("%w: %s", ErrKeyNotFound, ref)
	}
	return e.view(last, e.holders(ref)), nil
}

func (e *Embedded) ShareKey(ctx context.Context, c Caller, ref Ref, username string, share bool) (Key, error) {
	k, err := e.ownKey(ctx, c, ref)
	if err != nil {
		return Key{}, err
	}
	names, err := e.checkCryptoUsers(c.Username, []string{username})
	if err != nil {
		return Key{}, err
	}
	name := names[0]
	if e.needsApproval(ctx, k.Info.QuorumValues.Manage) {
		if err := e.approve(ctx, c, "key-management", ref); err != nil {
			return Key{}, err
		}
	}
	return e.update(c, ref, k.Info.HSMCoverage, func(r *keyRecord) error {
		i := sort.SearchStrings(r.Shared, name)
		has := i < len(r.Shared) && r.Shared[i] == name
		switch {
		case share && has:
			return fmt.Errorf("%w: key %s is already shared with %s", ErrInvalid, ref, name)
		case !share && !has:
			return fmt.Errorf("%w: key %s is not shared with %s", ErrInvalid, ref, name)
		case share:
			r.Shared = append(r.Shared[:i], append([]string{name}, r.Shared[i:]...)...)
		default:
			r.Shared = append(r.Shared[:i], r.Shared[i+1:]...)
			users := 1 + len(r.Shared)
			if r.UseQuorum > users || r.ManageQuorum > users {
				return fmt.Errorf("%w: unsharing would leave fewer users than the key's quorum value", ErrInvalid)
			}
		}
		return nil
	})
}

func (e *Embedded) SetAttribute(ctx context.Context, c Caller, ref Ref, name, value string) (Key, error) {
	k, err := e.ownKey(ctx, c, ref)
	if err != nil {
		return Key{}, err
	}
	probe := k.Attrs
	if err := probe.set(name, value, false); err != nil {
		return Key{}, err
	}
	if e.needsApproval(ctx, k.Info.QuorumValues.Manage) {
		if err := e.approve(ctx, c, "key-management", ref); err != nil {
			return Key{}, err
		}
	}
	return e.update(c, ref, k.Info.HSMCoverage, func(r *keyRecord) error {
		return r.Attrs.set(name, value, false)
	})
}

// use runs fn on one HSM that holds the key, once the caller's access to
// it is checked: the session key's own HSM, or for a token key the next
// HSM in turn, retrying on the next ones up to retry_on_missing_key times
// when the HSM does not hold the key. fn asks the HSM to use the key; the
// key's material stays there.
// gate, if not "", is the quorum service the use needs when the key's
// quorum value for it is on (crypto sign: key-usage).
func (e *Embedded) use(ctx context.Context, c Caller, ref Ref, fn func(h node) error, gate ...string) error {
	gated := func(r *keyRecord) error {
		if len(gate) > 0 && e.needsApproval(ctx, r.UseQuorum) {
			return e.approve(ctx, c, gate[0], ref)
		}
		return nil
	}
	if err := e.requireRole(c, RoleCryptoUser); err != nil {
		return err
	}
	// A session key this client made is used on its HSM only. Another
	// session's keys are not in the map; the HSM's record refuses them
	// below.
	e.mu.RLock()
	sk, isSession := e.sessionKeys[ref]
	e.mu.RUnlock()
	if isSession {
		id := sk.hsm
		h := e.hsm(id)
		if h == nil || !h.Up() {
			return fmt.Errorf("%w: session key %s was on %s, which is down", ErrKeyNotFound, ref, id)
		}
		h = e.on(c, h)
		r, err := h.KeyMeta(ref)
		if err != nil {
			return err
		}
		if r.Session != c.Session {
			return fmt.Errorf("%w: key %s", ErrKeyNotFound, ref)
		}
		if err := gated(r); err != nil {
			return err
		}
		return fn(h)
	}
	dur := e.Durability()
	hs := e.up()
	if len(hs) == 0 {
		return ErrNoHSM
	}
	if dur.AvailabilityCheck && !e.available(hs, ref) {
		return errors.New(availabilityMessage(ref))
	}
	attempts := min(1+dur.RetryOnMissingKey, len(hs))
	var last error
	for _, h := range e.onAll(c, hs[:attempts]) {
		if err := ctx.Err(); err != nil {
			return err
		}
		// What gates the use (the key's use quorum value, its session)
		// never changes after the key is made, so it is read once per key;
		// who may use the key can change, and the HSM checks that itself
		// on every use, inside the session.
		r, err := e.keyGate(h, ref)
		if err == nil && r.Session != "" && r.Session != c.Session {
			err = fmt.Errorf("%w: key %s", ErrKeyNotFound, ref)
		}
		if err == nil {
			err = gated(r)
		}
		if err == nil {
			err = fn(h)
		}
		if errors.Is(err, ErrKeyNotFound) {
			last = err
			continue
		}
		return err
	}
	return last
}

// gate is what the client remembers of a key to decide whether a use
// needs quorum approval.
type gate struct {
	session   string
	useQuorum int
}

// keyGate returns the key's gate, asking h the first time.
func (e *Embedded) keyGate(h node, ref Ref) (*keyRecord, error) {
	if g, ok := e.gates.Load(ref); ok {
		g := g.(gate)
		return &keyRecord{Ref: ref, Session: g.session, UseQuorum: g.useQuorum}, nil
	}
	r, err := h.KeyMeta(ref)
	if err != nil {
		return nil, err
	}
	e.gates.Store(ref, gate{session: r.Session, useQuorum: r.UseQuorum})
	return r, nil
}

// available is the SDK 5 availability check: the key is on at least two
// of the HSMs that answer. A pass is remembered for a second, until an
// HSM goes down or a key is deleted or lost (the bus's epoch moves): the
// check costs a question to every HSM, and a busy client asks it for every
// use of the same few keys.
func (e *Embedded) available(hs []node, ref Ref) bool {
	epoch := e.events.epoch.Load()
	if v, ok := e.avail.Load(ref); ok {
		a := v.(availability)
		if a.epoch == epoch && time.Since(a.at) < availabilityTTL {
			return true
		}
	}
	if countHolders(hs, ref) < 2 {
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
	e.ceiling.pace(req)
	var sig []byte
	err := e.use(ctx, c, req.Ref, func(h node) error {
		var err error
		sig, err = h.Sign(req)
		return err
	}, quorumKeyUsage)
	return sig, err
}

// quorumKeyUsage marks a use of a key that its use quorum value gates.
const quorumKeyUsage = "key-usage"

func (e *Embedded) Verify(ctx context.Context, c Caller, req SignRequest, sig []byte) error {
	return e.use(ctx, c, req.Ref, func(h node) error {
		return h.Verify(req, sig)
	})
}

func (e *Embedded) PublicKeyPEM(ctx context.Context, c Caller, ref Ref) ([]byte, error) {
	var out []byte
	err := e.use(ctx, c, ref, func(h node) error {
		var err error
		out, err = h.PublicKeyPEM(ref)
		return err
	})
	return out, err
}
