package hsm

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"strconv"
	"time"

	"github.com/hashicorp/raft"

	"github.com/hsmsh/hsmsh/hsmcore/protocol"
)

// The domain state as raft's state machine: each committed entry is one
// operation below, applied in log order on every HSM of the domain. An
// operation's answer (an error, say "already used") is the same on every
// HSM, since each starts from the same state. Entries are applied to the
// HSM's own store, which records the last one applied (secretApplied), so
// that a restart neither loses nor repeats one.

// Operations of the state machine.
const (
	opPutUser     = "put-user"     // userRecord: newest version wins; failure counts kept
	opCreateUser  = "create-user"  // userRecord: refused if the name is taken
	opDropUser    = "drop-user"    // deleteUserArgs
	opLoginFailed = "login-failed" // loginArgs: one more wrong password
	opResetFails  = "reset-fails"  // loginArgs: a right password clears the count
	opPutQuorum   = "put-quorum"   // protocol.QuorumSettings
	opPutToken    = "put-token"    // protocol.Token
	opUseToken    = "use-token"    // useTokenArgs: refused if used or unknown
	opUseTokens   = "use-tokens"   // []useTokenArgs: all, or none if one is used or unknown
	opDropTokens  = "drop-tokens"  // requester ("" = every token)
	opPutMTLS     = "put-mtls"     // protocol.MTLSState
	opAddMember   = "add-member"   // memberArgs
	opDropMember  = "drop-member"  // memberArgs (ID only)
	// opSeed is the whole domain state but the members, committed once by
	// the HSM that formed the group: every HSM starts from it.
	opSeed = "seed"
)

// loginArgs names the user a login attempt was for.
type loginArgs struct {
	User string `json:"user"`
	HSM  string `json:"hsm"` // where the attempt was made, for the event log
	At   int64  `json:"at"`
}

// memberArgs is an HSM entering or leaving the domain.
type memberArgs struct {
	ID       string `json:"id"`
	Identity []byte `json:"identity,omitempty"`
}

// domainFSM is raft's view of one HSM's domain state.
type domainFSM struct{ h *hsm }

func (f *domainFSM) Apply(l *raft.Log) any {
	h := f.h
	if l.Type != raft.LogCommand {
		return nil
	}
	if l.Index <= h.raft.getApplied() {
		return applyResult{} // applied before a restart
	}
	var p proposal
	var res applyResult
	if err := json.Unmarshal(l.Data, &p); err != nil {
		res = applyResult{Code: protocol.CodeInvalid, Err: fmt.Sprintf("log entry %d is unreadable: %v", l.Index, err)}
	} else if err := h.applyOp(p.Op, p.Args, l.Index); err != nil {
		var n note
		if errors.As(err, &n) {
			res = applyResult{Note: string(n)}
		} else {
			res = applyResult{Code: protocol.CodeOf(err), Err: err.Error()}
		}
	}
	if h.store != nil {
		if err := h.store.putSecret(secretApplied, strconv.AppendUint(nil, l.Index, 10)); err != nil {
			h.event(Event{Kind: EventDomainState, Detail: fmt.Sprintf("%s: record applied entry %d: %v", h.id, l.Index, err)})
		}
	}
	h.raft.setApplied(l.Index)
	return res
}

// note is what an entry did, where that is not an error: applyOp returns
// it, and Apply passes it on in the applyResult.
type note string

func (n note) Error() string { return string(n) }

// applyOp applies one operation to this HSM's state and store.
func (h *hsm) applyOp(op string, raw json.RawMessage, index uint64) error {
	decode := func(v any) error {
		if err := json.Unmarshal(raw, v); err != nil {
			return fmt.Errorf("%w: %s: %w", ErrInvalid, op, err)
		}
		return nil
	}
	switch op {
	case opPutUser, opCreateUser:
		var u userRecord
		if err := decode(&u); err != nil {
			return err
		}
		if u.Hash != "" {
			if err := validHash(u.Hash); err != nil {
				return fmt.Errorf("%w: user %s: %w", ErrInvalid, u.Username, err)
			}
		}
		if op == opCreateUser {
			h.mu.RLock()
			_, taken := h.users[u.Username]
			h.mu.RUnlock()
			if taken {
				return fmt.Errorf("%w: %s", ErrUserExists, u.Username)
			}
		}
		return h.PutUser(&u)
	case opDropUser:
		var a deleteUserArgs
		if err := decode(&a); err != nil {
			return err
		}
		if err := h.DeleteUser(a.Name, a.At); err != nil {
			return err
		}
		return h.UnshareAll(a.Name)
	case opLoginFailed, opResetFails:
		var a loginArgs
		if err := decode(&a); err != nil {
			return err
		}
		h.mu.Lock()
		u := h.users[a.User]
		if u == nil {
			h.mu.Unlock()
			return nil // a name no user has: the attempt is recorded, nothing counted
		}
		nu := *u
		if op == opLoginFailed {
			if u.locked() {
				h.mu.Unlock()
				return note(noteLocked) // not counted: the lock came first
			}
			nu.Failed++
		} else {
			if u.failures() == 0 {
				h.mu.Unlock()
				return nil
			}
			nu.resetFails(a.At)
		}
		if h.store != nil {
			if err := h.store.putUser(&nu); err != nil {
				h.mu.Unlock()
				return fmt.Errorf("%s: record the login attempt: %w", h.id, err)
			}
		}
		h.users[nu.Username] = &nu
		h.mu.Unlock()
		if op == opLoginFailed && nu.locked() {
			h.event(Event{Kind: EventDomainState, Detail: fmt.Sprintf("%s locked after %d wrong passwords (the last on %s)", a.User, nu.failures(), a.HSM)})
		}
		if op == opLoginFailed {
			return note(noteCounted)
		}
		return nil
	case opPutQuorum:
		var s protocol.QuorumSettings
		if err := decode(&s); err != nil {
			return err
		}
		return h.PutQuorumSettings(s)
	case opPutToken:
		var t protocol.Token
		if err := decode(&t); err != nil {
			return err
		}
		return h.PutToken(&t)
	case opUseToken, opUseTokens:
		var use []useTokenArgs
		if op == opUseToken {
			var a useTokenArgs
			if err := decode(&a); err != nil {
				return err
			}
			use = append(use, a)
		} else if err := decode(&use); err != nil {
			return err
		}
		h.mu.Lock()
		defer h.mu.Unlock()
		for _, a := range use {
			t, ok := h.tokens[a.Nonce]
			switch {
			case !ok:
				return fmt.Errorf("%w: this token was not issued by this cluster, or was deleted: generate a new one with quorum token-sign generate", ErrPermission)
			case !t.Used.IsZero():
				return fmt.Errorf("%w: this token was already used at %s: approvals are single use; generate a new token", ErrPermission, t.Used.UTC().Format(time.RFC3339))
			}
		}
		for _, a := range use {
			if err := h.useLocked(a.Nonce, a.At, a.Signers...); err != nil {
				return err
			}
		}
		return nil
	case opDropTokens:
		var who string
		if err := decode(&who); err != nil {
			return err
		}
		_, err := h.DeleteTokens(who)
		return err
	case opPutMTLS:
		var s protocol.MTLSState
		if err := decode(&s); err != nil {
			return err
		}
		return h.putMTLS(s)
	case opSeed:
		var s domainSnapshot
		if err := decode(&s); err != nil {
			return err
		}
		return h.replaceDomainState(s)
	case opAddMember, opDropMember:
		var m memberArgs
		if err := decode(&m); err != nil {
			return err
		}
		h.mu.Lock()
		if h.domain == nil {
			h.mu.Unlock()
			return h.notInDomain()
		}
		members := maps.Clone(h.members)
		if members == nil {
			members = map[string][]byte{}
		}
		if op == opAddMember {
			members[m.ID] = bytes.Clone(m.Identity)
		} else {
			delete(members, m.ID)
		}
		h.members, h.membersVersion = members, int64(index)
		err := h.saveDomainLocked()
		h.mu.Unlock()
		go h.reconcileVoters()
		return err
	}
	return fmt.Errorf("%w: unknown domain-state operation %q", ErrInvalid, op)
}

// domainSnapshot is the whole domain state, as raft snapshots it.
type domainSnapshot struct {
	Users          map[string]*userRecord  `json:"users"`
	UserTombs      map[string]int64        `json:"user_tombs"`
	Quorum         protocol.QuorumSettings `json:"quorum"`
	Tokens         []*protocol.Token       `json:"tokens"`
	MTLS           protocol.MTLSState      `json:"mtls"`
	Members        map[string][]byte       `json:"members"`
	MembersVersion int64                   `json:"members_version"`
}

func (f *domainFSM) Snapshot() (raft.FSMSnapshot, error) {
	b, err := json.Marshal(f.h.domainSnapshot())
	if err != nil {
		return nil, err
	}
	return snapshotBytes(b), nil
}

// domainSnapshot copies this HSM's domain state.
func (h *hsm) domainSnapshot() domainSnapshot {
	h.mu.RLock()
	defer h.mu.RUnlock()
	s := domainSnapshot{
		Users: map[string]*userRecord{}, UserTombs: maps.Clone(h.userTombs),
		Quorum: h.quorum, MTLS: h.mtls, Members: maps.Clone(h.members), MembersVersion: h.membersVersion,
	}
	for n, u := range h.users {
		c := *u
		s.Users[n] = &c
	}
	for _, t := range h.tokens {
		c := *t
		s.Tokens = append(s.Tokens, &c)
	}
	return s
}

type snapshotBytes []byte

func (b snapshotBytes) Persist(sink raft.SnapshotSink) error {
	if _, err := sink.Write(b); err != nil {
		sink.Cancel()
		return err
	}
	return sink.Close()
}

func (snapshotBytes) Release() {}

// Restore replaces this HSM's domain state with a snapshot: an HSM that
// was away too long, or came back empty, catches up from the leader's.
func (f *domainFSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	h := f.h
	b, err := io.ReadAll(io.LimitReader(rc, maxRaftSnapshot+1))
	if err != nil {
		return err
	}
	var s domainSnapshot
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("%s: the domain state's snapshot is unreadable: %w", h.id, err)
	}
	if err := h.replaceDomainState(s); err != nil {
		return err
	}
	// The snapshot's index is the newest in the store raft just wrote it
	// to: entries up to it are applied now.
	if snaps := h.raft.snaps; snaps != nil {
		if metas, err := snaps.List(); err == nil && len(metas) > 0 {
			idx := metas[0].Index
			if h.store != nil {
				if err := h.store.putSecret(secretApplied, strconv.AppendUint(nil, idx, 10)); err != nil {
					return err
				}
			}
			h.raft.setApplied(idx)
		}
	}
	h.event(Event{Kind: EventDomainState, Detail: fmt.Sprintf("%s caught up from a snapshot of the domain state", h.id)})
	return nil
}

// replaceDomainState makes s this HSM's domain state (members only if s
// has them).
func (h *hsm) replaceDomainState(s domainSnapshot) error {
	for _, u := range s.Users {
		if u.Hash != "" {
			if err := validHash(u.Hash); err != nil {
				return fmt.Errorf("%s: user %s: %w", h.id, u.Username, err)
			}
		}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.store != nil {
		for n := range h.users {
			if _, keep := s.Users[n]; !keep {
				at := s.UserTombs[n]
				if err := h.store.deleteUser(n, at); err != nil {
					return err
				}
			}
		}
		for _, u := range s.Users {
			if err := h.store.putUser(u); err != nil {
				return err
			}
		}
		for n, at := range s.UserTombs {
			if _, live := s.Users[n]; !live {
				if err := h.store.deleteUser(n, at); err != nil {
					return err
				}
			}
		}
		var drop []string
		keep := map[string]bool{}
		for _, t := range s.Tokens {
			keep[t.Nonce] = true
		}
		for n := range h.tokens {
			if !keep[n] {
				drop = append(drop, n)
			}
		}
		if err := h.store.putQuorum(&s.Quorum, s.Tokens, drop); err != nil {
			return err
		}
		mb, err := json.Marshal(s.MTLS)
		if err != nil {
			return err
		}
		if err := h.store.putSecret(secretMTLS, mb); err != nil {
			return err
		}
	}
	h.users = s.Users
	if h.users == nil {
		h.users = map[string]*userRecord{}
	}
	h.userTombs = s.UserTombs
	if h.userTombs == nil {
		h.userTombs = map[string]int64{}
	}
	h.quorum = s.Quorum
	h.tokens = map[string]*protocol.Token{}
	for _, t := range s.Tokens {
		h.tokens[t.Nonce] = t
	}
	h.mtls = s.MTLS
	if len(s.Members) > 0 && h.domain != nil {
		h.members, h.membersVersion = s.Members, s.MembersVersion
		if err := h.saveDomainLocked(); err != nil {
			return err
		}
	}
	return nil
}

// loadApplied reads the index of the last applied entry from the secrets.
func loadApplied(secrets map[string][]byte) (uint64, error) {
	b, ok := secrets[secretApplied]
	if !ok {
		return 0, nil
	}
	v, err := strconv.ParseUint(string(b), 10, 64)
	if err != nil {
		return 0, errors.New("the applied raft index is unreadable")
	}
	return v, nil
}
