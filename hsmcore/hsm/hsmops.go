package hsm

import (
	"fmt"
	"sort"
	"time"

	"github.com/hsmsh/hsmsh/hsmcore/protocol"
	"github.com/hsmsh/hsmsh/hsmcore/quorum"
)

// What an HSM does for a logged-in session beyond using a key: it makes
// keys, changes them, manages users and quorum, each decided here from the
// session's user and role and this HSM's own records. A change to the
// domain state (users, quorum) is passed on to the other HSMs of the
// domain, HSM to HSM, before the call returns.

// The command paths configured quorum rule sets name, for the calls that
// can be gated. The HSM works each out from the call itself, and passes
// it to approveIn: a client could claim another path to slip past a rule.
const (
	pathUserCreate     = "user create"
	pathUserDelete     = "user delete"
	pathChangePassword = "user change-password"
	pathUserReplicate  = "user replicate"
	pathSign           = "crypto sign"
	pathBackup         = "cluster backup create"
	pathSetQuorumValue = "quorum token-sign set-quorum-value"
	pathSetTimeout     = "quorum token-sign set-timeout"
	pathChangeMFA      = "user change-mfa"
)

// keyChangePaths are the paths of key-change's ops.
var keyChangePaths = map[string]string{protocol.OpShare: "key share", protocol.OpUnshare: "key unshare", protocol.OpSetAttribute: "key set-attribute"}

// approveIn checks and consumes an operation's approval, in the call that
// carries out the operation: the service's (or key's) quorum value and the
// rule sets decide whether one is needed. The token is spent by a
// committed entry before the operation runs: a majority has recorded its
// use, so no HSM accepts it again, whatever is paused or partitioned.
func (h *hsm) approveIn(c Caller, service string, ref Ref, path string, a *protocol.Approval) error {
	res, err := h.checkApproval(c, service, ref, path, a)
	if err != nil {
		return err
	}
	return h.spendApprovals(service, res)
}

// checkApproval is the verifying half of approveIn: on the committed
// state, it decides whether the operation needs an approval and checks
// the token, without spending it. spendApproval spends what it returns.
func (h *hsm) checkApproval(c Caller, service string, ref Ref, path string, a *protocol.Approval) (approvalResult, error) {
	req := approvalRequest{Service: service, Requester: c.Username, KeyRef: ref, Path: path}
	if err := h.catchUpFor(path); err != nil {
		return approvalResult{}, err
	}
	if a != nil {
		req.Token, req.Command = a.Token, a.Command
	}
	return h.Approve(req)
}

// spendApprovals is the spending half of approveIn: the tokens
// checkApproval accepted are marked used by one committed entry, which
// refuses them all if any was spent in the meantime. Results with no
// token spend nothing.
func (h *hsm) spendApprovals(service string, results ...approvalResult) error {
	var use []useTokenArgs
	now := time.Now()
	for _, r := range results {
		if r.Nonce != "" {
			use = append(use, useTokenArgs{Nonce: r.Nonce, At: now, Signers: r.Signers})
		}
	}
	if len(use) == 0 {
		return nil
	}
	if err := h.commit("use the approval", opUseTokens, use); err != nil {
		return err
	}
	for _, u := range use {
		h.event(Event{Kind: EventQuorumApproved, Detail: fmt.Sprintf("%s approved by %v", service, u.Signers)})
	}
	return nil
}

// checkNewRef refuses a reference the HSM holds or held: an existing key
// is never overwritten.
func (h *hsm) checkNewRef(ref Ref) error {
	if ref == 0 {
		return fmt.Errorf("%w: a new key needs a reference", ErrInvalid)
	}
	if h.RefTaken(ref) {
		return fmt.Errorf("%w: key reference %s is taken on %s", ErrInvalid, ref, h.id)
	}
	return nil
}

// checkSharing checks that each name is a crypto user this HSM knows,
// other than the owner.
func (h *hsm) checkSharing(owner string, names []string) ([]string, error) {
	out := make([]string, 0, len(names))
	h.mu.RLock()
	defer h.mu.RUnlock()
	for _, n := range names {
		name, err := NormalizeUsername(n)
		if err != nil {
			return nil, err
		}
		u := h.users[name]
		if u == nil {
			return nil, fmt.Errorf("%w: %s", ErrUserNotFound, name)
		}
		if u.Role != RoleCryptoUser {
			return nil, fmt.Errorf("%w: keys can be shared only with crypto users; %s is %s", ErrInvalid, name, u.Role)
		}
		if name == owner {
			return nil, fmt.Errorf("%w: %s owns the key; it cannot also be shared with them", ErrInvalid, name)
		}
		out = append(out, name)
	}
	sort.Strings(out)
	return out, nil
}

// generateKey makes a key inside the HSM for c and stores it: a token key
// durably, a session key in volatile memory for c's session. The answer
// is the key's records without material.
func (h *hsm) generateKey(c Caller, a protocol.GenerateArgs) (*protocol.CreateReply, error) {
	if c.Role != RoleCryptoUser {
		return nil, fmt.Errorf("%w: only a crypto user makes keys; the session is %s's, a %s", ErrPermission, c.Username, c.Role)
	}
	if err := h.checkNewRef(a.Ref); err != nil {
		return nil, err
	}
	shared, err := h.checkSharing(c.Username, a.Spec.ShareWith)
	if err != nil {
		return nil, err
	}
	if err := protocol.CheckKeyQuorum(a.Spec.UseQuorum, 1+len(shared), "use-key-quorum-value"); err != nil {
		return nil, err
	}
	if err := protocol.CheckKeyQuorum(a.Spec.ManageQuorum, 1+len(shared), "manage-key-quorum-value"); err != nil {
		return nil, err
	}
	recs, err := generate(a.Spec)
	if err != nil {
		return nil, err
	}
	defer func() {
		for _, r := range recs {
			clear(r.Material)
		}
	}()
	now := time.Now().UTC()
	for i, r := range recs {
		r.Ref = a.Ref + Ref(i) // a pair: public, then private
		if i > 0 {
			if err := h.checkNewRef(r.Ref); err != nil {
				return nil, err
			}
		}
		r.Owner, r.Shared, r.Created = c.Username, shared, now
		r.UseQuorum, r.ManageQuorum = a.Spec.UseQuorum, a.Spec.ManageQuorum
		if r.Attrs.Class == ClassPublic {
			// As CloudHSM CLI does: sharing and key quorum values go to
			// a pair's private key; its public key is every crypto
			// user's to use already.
			r.Shared, r.UseQuorum, r.ManageQuorum = nil, 0, 0
		}
		if a.Spec.Session {
			r.Session = c.Session
		}
	}
	if a.Stage && !a.Spec.Session {
		return h.staged(recs)
	}
	if err := h.PutKeys(recs); err != nil {
		return nil, err
	}
	return h.created(recs, a.Wrap && !a.Spec.Session)
}

// staged answers a key generation that stores nothing here: each record
// wrapped under the domain key, for the client to store on every HSM at
// once (GenerateArgs.Stage). The material leaves only sealed, as in
// client-side sync.
func (h *hsm) staged(recs []*keyRecord) (*protocol.CreateReply, error) {
	out := &protocol.CreateReply{Keys: metasOf(recs), Staged: true}
	h.mu.RLock()
	defer h.mu.RUnlock()
	if !h.up {
		return nil, protocol.ErrDown(h.id)
	}
	for _, r := range recs {
		w, err := h.wrapLocked(r)
		if err != nil {
			return nil, err
		}
		out.Wrapped = append(out.Wrapped, w)
	}
	return out, nil
}

// created answers a key creation: the records without material, and if
// wrap, each wrapped for the cluster's other HSMs.
func (h *hsm) created(recs []*keyRecord, wrap bool) (*protocol.CreateReply, error) {
	out := &protocol.CreateReply{Keys: metasOf(recs)}
	if !wrap {
		return out, nil
	}
	for _, r := range recs {
		w, err := h.ExportWrapped(r.Ref)
		if err != nil {
			return nil, err
		}
		out.Wrapped = append(out.Wrapped, w)
	}
	return out, nil
}

// importKey stores a public key the user brought, made into a key here.
func (h *hsm) importKey(c Caller, a protocol.ImportArgs) (*protocol.CreateReply, error) {
	if c.Role != RoleCryptoUser {
		return nil, fmt.Errorf("%w: only a crypto user imports keys", ErrPermission)
	}
	if err := h.checkNewRef(a.Ref); err != nil {
		return nil, err
	}
	r, err := parseImport(a.Spec)
	if err != nil {
		return nil, err
	}
	r.Ref, r.Owner, r.Created = a.Ref, c.Username, time.Now().UTC()
	if a.Spec.Session {
		r.Session = c.Session
	}
	if err := h.PutKeys([]*keyRecord{r}); err != nil {
		return nil, err
	}
	return h.created([]*keyRecord{r}, a.Wrap && !a.Spec.Session)
}

// changeKey shares, unshares or sets an attribute of a key c owns, with
// the approval its manage quorum needs, and passes the new record on to
// the other HSMs (which keep their own copy of the material).
func (h *hsm) changeKey(c Caller, a protocol.KeyChangeArgs) (protocol.KeyMeta, error) {
	cur, err := h.stored(a.Ref)
	if err != nil {
		return protocol.KeyMeta{}, err
	}
	adminAttr := a.Op == protocol.OpSetAttribute && protocol.AdminOnly(a.Name)
	switch {
	case adminAttr && (c.Role != RoleAdmin || cur.Session != ""):
		// CloudHSM's attribute table: only an admin marks a (token) key
		// trusted, so that wrap-with-trusted means an admin vouched for
		// the wrapping key.
		return protocol.KeyMeta{}, fmt.Errorf("%w: only an admin may set attribute %s", ErrPermission, a.Name)
	case !adminAttr && ((cur.Session != "" && cur.Session != c.Session) || c.Role != RoleCryptoUser || cur.Owner != c.Username):
		return protocol.KeyMeta{}, fmt.Errorf("%w: only the key's owner may change key %s", ErrPermission, a.Ref)
	}
	r := cur.meta()
	switch a.Op {
	case protocol.OpShare, protocol.OpUnshare:
		names, err := h.checkSharing(c.Username, []string{a.User})
		if err != nil {
			return protocol.KeyMeta{}, err
		}
		name := names[0]
		i := sort.SearchStrings(r.Shared, name)
		has := i < len(r.Shared) && r.Shared[i] == name
		switch {
		case a.Op == protocol.OpShare && has:
			return protocol.KeyMeta{}, fmt.Errorf("%w: key %s is already shared with %s", ErrInvalid, a.Ref, name)
		case a.Op == protocol.OpUnshare && !has:
			return protocol.KeyMeta{}, fmt.Errorf("%w: key %s is not shared with %s", ErrInvalid, a.Ref, name)
		case a.Op == protocol.OpShare:
			r.Shared = append(r.Shared[:i], append([]string{name}, r.Shared[i:]...)...)
		default:
			r.Shared = append(r.Shared[:i], r.Shared[i+1:]...)
			users := 1 + len(r.Shared)
			if r.UseQuorum > users || r.ManageQuorum > users {
				return protocol.KeyMeta{}, fmt.Errorf("%w: unsharing would leave fewer users than the key's quorum value", ErrInvalid)
			}
		}
	case protocol.OpSetAttribute:
		if err := r.Attrs.Set(a.Name, a.Value, false); err != nil {
			return protocol.KeyMeta{}, err
		}
	default:
		return protocol.KeyMeta{}, fmt.Errorf("%w: unknown key change %q", ErrInvalid, a.Op)
	}
	if err := h.approveIn(c, quorum.ServiceKeyManagement, a.Ref, keyChangePaths[a.Op], a.Approval); err != nil {
		return protocol.KeyMeta{}, err
	}
	if err := h.UpdateMeta(r); err != nil {
		return protocol.KeyMeta{}, err
	}
	m := metaOf(r)
	if r.Session == "" {
		h.push(protocol.CallPutMeta, m)
	}
	return m, nil
}

// activate gives the built-in admin its first password (cluster activate),
// once: an activated cluster refuses it.
func (h *hsm) activate(password string) error {
	if err := ValidatePassword(password); err != nil {
		return err
	}
	h.mu.RLock()
	u := h.users[protocol.BuiltinAdmin]
	up := h.up
	h.mu.RUnlock()
	if !up {
		return protocol.ErrDown(h.id)
	}
	if u == nil || u.Role != RoleUnactivatedAdmin {
		return fmt.Errorf("%w: the cluster is already activated", ErrInvalid)
	}
	n := &userRecord{Username: protocol.BuiltinAdmin, Role: RoleAdmin, Hash: hashPassword(password)}
	n.Updated = max(time.Now().UnixNano(), u.Updated+1)
	return h.commit("activate the cluster", opPutUser, n)
}

// userNamed returns a copy of a user this HSM knows.
func (h *hsm) userNamed(name string) (*userRecord, error) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	if !h.up {
		return nil, protocol.ErrDown(h.id)
	}
	u := h.users[name]
	if u == nil {
		return nil, fmt.Errorf("%w: %s", ErrUserNotFound, name)
	}
	c := *u
	return &c, nil
}

// userAs returns a copy of a user this HSM knows, who must have role.
func (h *hsm) userAs(name string, role Role) (*userRecord, error) {
	u, err := h.userNamed(name)
	if err != nil {
		return nil, err
	}
	if u.Role != role {
		return nil, fmt.Errorf("%w: %s has role %s, not %s", ErrUserNotFound, name, u.Role, role)
	}
	return u, nil
}

func requireAdmin(c Caller, what string) error {
	if c.Role != RoleAdmin {
		return fmt.Errorf("%w: %s needs the admin role; the session is %s's, a %s", ErrPermission, what, c.Username, c.Role)
	}
	return nil
}

// createUser makes a user, with the user service's approval.
func (h *hsm) createUser(c Caller, a protocol.UserArgs) (protocol.UserView, error) {
	if err := requireAdmin(c, "user create"); err != nil {
		return protocol.UserView{}, err
	}
	name, err := NormalizeUsername(a.Username)
	if err != nil {
		return protocol.UserView{}, err
	}
	if a.Role != RoleAdmin && a.Role != RoleCryptoUser {
		return protocol.UserView{}, fmt.Errorf("%w: a new user's role must be admin or crypto-user", ErrInvalid)
	}
	if err := ValidatePassword(a.Password); err != nil {
		return protocol.UserView{}, err
	}
	if _, err := h.userNamed(name); err == nil {
		return protocol.UserView{}, fmt.Errorf("%w: %s", ErrUserExists, name)
	}
	if err := h.approveIn(c, quorum.ServiceUser, 0, pathUserCreate, a.Approval); err != nil {
		return protocol.UserView{}, err
	}
	now := time.Now().UnixNano()
	u := &userRecord{Username: name, Role: a.Role, Hash: hashPassword(a.Password), Updated: now, Since: now}
	h.mu.RLock()
	if t := h.userTombs[name]; t >= u.Updated {
		u.Updated = t + 1
	}
	h.mu.RUnlock()
	if err := h.commit("create user "+name, opCreateUser, u); err != nil {
		return protocol.UserView{}, err
	}
	return viewOf(u), nil
}

// removeUser deletes a user that owns no key here, with the user
// service's approval; it keeps no access to keys shared with it.
func (h *hsm) removeUser(c Caller, a protocol.UserArgs) error {
	if err := requireAdmin(c, "user delete"); err != nil {
		return err
	}
	name, err := NormalizeUsername(a.Username)
	if err != nil {
		return err
	}
	u, err := h.userAs(name, a.Role)
	if err != nil {
		return err
	}
	if name == c.Username {
		return fmt.Errorf("%w: you cannot delete the user you are logged in as", ErrPermission)
	}
	if h.Owns(name) {
		return fmt.Errorf("%w: user %s owns keys on %s; the keys must be deleted first", ErrPermission, name, h.id)
	}
	if err := h.approveIn(c, quorum.ServiceUser, 0, pathUserDelete, a.Approval); err != nil {
		return err
	}
	at := max(time.Now().UnixNano(), u.Updated+1)
	return h.commit("delete user "+name, opDropUser, deleteUserArgs{Name: name, At: at})
}

// setPassword changes a password: a user's own, or, for an admin with the
// user service's approval, another user's. A new password unlocks.
func (h *hsm) setPassword(c Caller, a protocol.UserArgs) error {
	name, err := NormalizeUsername(a.Username)
	if err != nil {
		return err
	}
	own := name == c.Username
	if !own {
		if err := requireAdmin(c, "changing another user's password"); err != nil {
			return err
		}
	}
	if err := ValidatePassword(a.Password); err != nil {
		return err
	}
	u, err := h.userAs(name, a.Role)
	if err != nil {
		return err
	}
	if u.locked() && c.Role != RoleAdmin {
		return ErrLocked
	}
	if !own {
		if err := h.approveIn(c, quorum.ServiceUser, 0, pathChangePassword, a.Approval); err != nil {
			return err
		}
	}
	u.Hash = hashPassword(a.Password)
	now := time.Now().UnixNano()
	u.resetFails(now)
	u.Updated = max(now, u.Updated+1)
	return h.commit("change the password of "+name, opPutUser, u)
}

// userViews lists the users this HSM knows, without their hashes.
func (h *hsm) userViews() ([]protocol.UserView, error) {
	users, _ := h.UserState()
	if users == nil {
		return nil, protocol.ErrDown(h.id)
	}
	out := make([]protocol.UserView, 0, len(users))
	for _, u := range users {
		out = append(out, viewOf(u))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Username < out[j].Username })
	return out, nil
}

// issueToken issues a quorum token for c, stored here and on every other
// HSM that answers.
func (h *hsm) issueToken(c Caller, a protocol.IssueArgs) ([]byte, error) {
	st, err := h.QuorumState()
	if err != nil {
		return nil, err
	}
	ref := ""
	switch a.Service {
	case quorum.ServiceKeyUsage, quorum.ServiceKeyManagement:
		if a.KeyRef == nil {
			return nil, fmt.Errorf("%w: a %s token is for one key: give --key-reference", ErrInvalid, a.Service)
		}
		ref = a.KeyRef.String()
	}
	ad, err := quorum.NewApprovalData(a.Service, c.Username, string(c.Role), a.Cluster, ref, a.Command, time.Now(), st.Settings.TTL())
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	t := &protocol.Token{Nonce: ad.Nonce, ApprovalData: ad.Encode(), Service: a.Service, Requester: c.Username, Expires: ad.Expires}
	if err := h.commit("issue a quorum token", opPutToken, t); err != nil {
		return nil, err
	}
	if a.Service == quorum.ServiceRegistration {
		return quorum.NewRegistrationFile(ad).Marshal(), nil
	}
	return quorum.NewTokenFile(ad).Marshal(), nil
}

// quorumFor is the quorum state as c may see it: every token for an
// admin, a user's own otherwise.
func (h *hsm) quorumFor(c Caller) (protocol.QuorumList, error) {
	st, err := h.QuorumState()
	if err != nil {
		return protocol.QuorumList{}, err
	}
	out := protocol.QuorumList{Settings: st.Settings}
	for _, t := range st.Tokens {
		if c.Role == RoleAdmin || t.Requester == c.Username {
			out.Tokens = append(out.Tokens, t)
		}
	}
	return out, nil
}

// deleteTokens deletes c's tokens, or every token (admins).
func (h *hsm) deleteTokens(c Caller, all bool) (int, error) {
	who := c.Username
	if all {
		if err := requireAdmin(c, "deleting every token"); err != nil {
			return 0, err
		}
		who = ""
	}
	st, err := h.QuorumState()
	if err != nil {
		return 0, err
	}
	n := 0
	for _, t := range st.Tokens {
		if who == "" || t.Requester == who {
			n++
		}
	}
	if err := h.commit("delete quorum tokens", opDropTokens, who); err != nil {
		return 0, err
	}
	return n, nil
}

// quorumSnapshot is this HSM's quorum settings.
func (h *hsm) quorumSnapshot() protocol.QuorumSettings {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return h.quorum
}

// setQuorum sets a service's quorum value or the token timeouts, with the
// quorum service's approval.
func (h *hsm) setQuorum(c Caller, a protocol.SetQuorumArgs) error {
	if err := requireAdmin(c, "changing quorum settings"); err != nil {
		return err
	}
	s := h.quorumSnapshot()
	if a.Service != "" {
		if a.Service != quorum.ServiceUser && a.Service != quorum.ServiceQuorum && a.Service != quorum.ServiceCluster {
			return fmt.Errorf("%w: --service takes user, quorum or cluster, not %q", ErrInvalid, a.Service)
		}
		if a.Value < 1 || a.Value > maxServiceQuorum {
			return fmt.Errorf("%w: a quorum value is 1 (off) to %d, not %d", ErrInvalid, maxServiceQuorum, a.Value)
		}
		if a.Service == quorum.ServiceUser && a.Value > s.Value(quorum.ServiceQuorum) {
			return fmt.Errorf("%w: the user service's quorum value (%d) may not exceed the quorum service's (%d): raise quorum first", ErrInvalid, a.Value, s.Value(quorum.ServiceQuorum))
		}
		if a.Service == quorum.ServiceQuorum && a.Value < s.Value(quorum.ServiceUser) {
			return fmt.Errorf("%w: the quorum service's value (%d) may not go below the user service's (%d): lower user first", ErrInvalid, a.Value, s.Value(quorum.ServiceUser))
		}
		admins := 0
		users, _ := h.UserState()
		for _, u := range users {
			if u.Role == RoleAdmin && u.QuorumKey != "" {
				admins++
			}
		}
		if a.Value > 1 && a.Value > admins {
			return fmt.Errorf("%w: only %d admins have registered a quorum key, fewer than %d: register more first (user change-quorum token-sign register)", ErrInvalid, admins, a.Value)
		}
	} else {
		for _, d := range []time.Duration{a.Generated, a.Approved} {
			// Down to a second, so a class can watch a token expire.
			if d < time.Second || d > 24*time.Hour {
				return fmt.Errorf("%w: a token timeout is 1 s to 24 h (86400), not %v", ErrInvalid, d)
			}
		}
	}
	path := pathSetTimeout
	if a.Service != "" {
		path = pathSetQuorumValue
	}
	if err := h.approveIn(c, quorum.ServiceQuorum, 0, path, a.Approval); err != nil {
		return err
	}
	s = h.quorumSnapshot()
	if a.Service != "" {
		vals := map[string]int{}
		for k, v := range s.Values {
			vals[k] = v
		}
		vals[a.Service] = a.Value
		s.Values = vals
	} else {
		s.GeneratedS, s.ApprovedS = int64(a.Generated/time.Second), int64(a.Approved/time.Second)
	}
	s.Updated = max(time.Now().UnixNano(), s.Updated+1)
	return h.commit("change the quorum settings", opPutQuorum, s)
}

// registerQuorum registers c's approver key, after checking the proof of
// possession, here and on every other HSM that answers.
func (h *hsm) registerQuorum(c Caller, a protocol.RegisterArgs) error {
	u, err := h.RegisterQuorumKey(c.Username, a.PubPEM, a.File)
	if err != nil {
		return err
	}
	return h.storeRegistered(u, a)
}

// registerMFA registers the caller's token-sign MFA key (user change-mfa
// token-sign): from then on its logins need the password and a token
// signed with the matching private key.
func (h *hsm) registerMFA(c Caller, a protocol.RegisterArgs) error {
	u, err := h.registerKey(c.Username, a.PubPEM, a.File, func(u *userRecord, pemText string) { u.MFAKey = pemText })
	if err != nil {
		return err
	}
	return h.storeRegistered(u, a)
}

// deregisterMFA turns a user's MFA off: the user itself, or an admin for
// another user (a lost MFA key), with the user service's approval.
func (h *hsm) deregisterMFA(c Caller, a protocol.UserArgs) error {
	return h.deregisterKey(c, a, "MFA", func(u *userRecord) { u.MFAKey = "" })
}

// deregisterQuorum removes a user's quorum approval key, on the same terms.
func (h *hsm) deregisterQuorum(c Caller, a protocol.UserArgs) error {
	return h.deregisterKey(c, a, "quorum", func(u *userRecord) { u.QuorumKey = "" })
}

// deregisterKey clears one of a user's registered public keys.
func (h *hsm) deregisterKey(c Caller, a protocol.UserArgs, what string, clearKey func(*userRecord)) error {
	name, err := NormalizeUsername(a.Username)
	if err != nil {
		return err
	}
	if name != c.Username && c.Role != RoleAdmin {
		return fmt.Errorf("%w: only an admin removes another user's %s key", ErrPermission, what)
	}
	if name != c.Username {
		if err := h.approveIn(c, quorum.ServiceUser, 0, pathChangeMFA, a.Approval); err != nil {
			return err
		}
	}
	u, err := h.userAs(name, a.Role)
	if err != nil {
		return err
	}
	nu := *u
	clearKey(&nu)
	nu.Updated = max(time.Now().UnixNano(), u.Updated+1)
	return h.commit("remove the "+what+" key of "+name, opPutUser, &nu)
}

// storeRegistered stores a user record a registration changed, passes it
// on, and marks the registration token used everywhere.
func (h *hsm) storeRegistered(u *userRecord, a protocol.RegisterArgs) error {
	u.Updated = max(time.Now().UnixNano(), u.Updated+1)
	// The registration token is spent first: a replayed registration
	// file is refused on every HSM.
	if _, ad, _, err := quorum.ParseRegistrationFile(a.File); err == nil {
		if err := h.commit("use the registration token", opUseToken, useTokenArgs{Nonce: ad.Nonce, At: time.Now()}); err != nil {
			return err
		}
	}
	return h.commit("register a key of "+u.Username, opPutUser, u)
}
