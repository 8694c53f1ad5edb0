package hsm

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha512"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/hsmsh/hsmsh/hsmcore/authsession"
	"github.com/hsmsh/hsmsh/hsmcore/protocol"
)

// HSM to HSM: the peer class of calls. An HSM proves to another HSM of its
// domain that a call is its own by signing it with its identity key, which
// the receiver finds in the domain's member list (never in the call). The
// signature covers who sends, who receives, the call and its arguments, a
// time and a nonce, so a recorded call cannot be replayed, redirected or
// altered. A new HSM enters the member list only through a member, and
// only with an endorsement of its identity key by the cluster's key (the
// cluster certificate's, on servers; the embedded cluster's own, in
// process), which a client certificate cannot make.

// peerLink reaches another HSM's door: in process, or over a connection.
type peerLink interface {
	ID() string
	Call(method string, args, reply any) error
}

// peerCall is a call from one HSM of the domain to another.
type peerCall struct {
	From   string          `json:"from"`
	To     string          `json:"to"`
	Method string          `json:"method"`
	Args   json.RawMessage `json:"args,omitempty"`
	At     int64           `json:"at"` // Unix ns
	Nonce  []byte          `json:"nonce"`
	// Key names the pair's link key when Sig is an HMAC under it (raft
	// RPCs, linkkey.go); "" when Sig is an identity-key signature.
	Key string `json:"key,omitempty"`
	Sig []byte `json:"sig"`
}

const (
	labelPeerCall = "hsmsh peer call v1"
	labelJoin     = "hsmsh join v1"
	labelEndorse  = "hsmsh endorse hsm identity v1"
	// peerSkew is how far a peer call's time may be from the receiver's
	// clock; a nonce is remembered for twice as long.
	peerSkew = time.Minute
	// maxPeerNonces bounds the nonces an HSM remembers.
	maxPeerNonces = 200000
	// peerTimeout bounds one push to a peer, so a peer that hangs cannot
	// hold up the call that changed the domain state.
	peerTimeout = 5 * time.Second
)

func (pc *peerCall) transcript() []byte {
	var at [8]byte
	binary.BigEndian.PutUint64(at[:], uint64(pc.At))
	argsum := sha512.Sum384(pc.Args)
	return authsession.Digest(labelPeerCall, []byte(pc.From), []byte(pc.To), []byte(pc.Method), at[:], pc.Nonce, argsum[:])
}

// peerState is what an HSM keeps for peer calls.
type peerState struct {
	mu     sync.Mutex
	nonces map[string]time.Time // seen nonces → when they may be forgotten
	// links reaches the cluster's other HSMs; set by whoever runs the HSM.
	links func() []peerLink
	// endorser checks that an HSM asking to join was endorsed by the
	// cluster; endorse endorses this HSM's own identity for joining.
	endorser crypto.PublicKey
	endorse  func(digest []byte) ([]byte, error)
	// Link keys (linkkey.go): the keys this HSM agreed for sending to
	// each peer, and those each peer agreed for sending to it.
	outKeys map[string]*linkKey
	inKeys  map[string][]*linkKey
}

// setPeers gives the HSM its way to the other HSMs of its cluster and the
// cluster's endorsement key (signer for this HSM, public key to check
// others with).
func (h *hsm) setPeers(links func() []peerLink, endorser crypto.Signer) {
	h.peer.mu.Lock()
	defer h.peer.mu.Unlock()
	h.peer.links = links
	if endorser != nil {
		h.peer.endorser = endorser.Public()
		h.peer.endorse = func(d []byte) ([]byte, error) { return endorser.Sign(rand.Reader, d, crypto.SHA384) }
	}
}

func (h *hsm) peerLinks() []peerLink {
	h.peer.mu.Lock()
	links := h.peer.links
	h.peer.mu.Unlock()
	if links == nil {
		return nil
	}
	return links()
}

// callPeer makes a signed peer call to p.
func (h *hsm) callPeer(p peerLink, method string, args, reply any) error {
	if h.partitioned.Load() {
		return &protocol.DownError{ID: p.ID(), Why: fmt.Errorf("%s is cut off from its peers", h.id)}
	}
	pc, err := h.newPeerCall(p, method, args)
	if err != nil {
		return err
	}
	h.mu.RLock()
	id := h.identity
	h.mu.RUnlock()
	if pc.Sig, err = id.Sign(labelPeerCall, pc.transcript()); err != nil {
		return err
	}
	return p.Call(protocol.CallPeer, pc, reply)
}

// newPeerCall is a peer call to p, dated now, with a fresh nonce; unsigned.
func (h *hsm) newPeerCall(p peerLink, method string, args any) (*peerCall, error) {
	raw, err := json.Marshal(args)
	if err != nil {
		return nil, err
	}
	pc := &peerCall{From: h.id, To: p.ID(), Method: method, Args: raw, At: time.Now().UnixNano(), Nonce: make([]byte, 16)}
	if _, err := rand.Read(pc.Nonce); err != nil {
		return nil, err
	}
	return pc, nil
}

// servePeerCall checks a peer call and serves it: the sender must be a
// member of this HSM's domain, the signature its identity key's, the call
// addressed to this HSM, recent, and not seen before.
func (h *hsm) servePeerCall(pc *peerCall) (any, error) {
	if protocol.Calls[pc.Method] != protocol.ClassPeer {
		return nil, fmt.Errorf("%w: %q is not a peer call", ErrPermission, pc.Method)
	}
	if h.partitioned.Load() {
		return nil, protocol.ErrDown(h.id) // its peers cannot reach it
	}
	h.mu.RLock()
	up, member, inDomain := h.up, h.members[pc.From], h.domain != nil
	h.mu.RUnlock()
	switch {
	case !up:
		return nil, protocol.ErrDown(h.id)
	case !inDomain:
		return nil, fmt.Errorf("%w: %s belongs to no domain yet, so it serves no peer calls", ErrPermission, h.id)
	case member == nil:
		return nil, fmt.Errorf("%w: %q is not an HSM of this domain", ErrPermission, pc.From)
	case pc.To != h.id:
		return nil, fmt.Errorf("%w: the peer call is addressed to %q, not %s", ErrPermission, pc.To, h.id)
	}
	if pc.Key != "" {
		if err := h.checkMAC(pc, member); err != nil {
			return nil, fmt.Errorf("%w: peer call from %s: %w", ErrPermission, pc.From, err)
		}
	} else {
		pub, err := authsession.ParsePublic(member)
		if err != nil {
			return nil, err
		}
		if err := authsession.Verify(pub, pc.Sig, labelPeerCall, pc.transcript()); err != nil {
			return nil, fmt.Errorf("%w: peer call from %s: %w", ErrPermission, pc.From, err)
		}
	}
	now := time.Now()
	at := time.Unix(0, pc.At)
	if at.Before(now.Add(-peerSkew)) || at.After(now.Add(peerSkew)) {
		return nil, fmt.Errorf("%w: the peer call from %s is dated %s, more than %v from this HSM's clock", ErrPermission, pc.From, at.UTC().Format(time.RFC3339), peerSkew)
	}
	if err := h.peer.fresh(pc.Nonce, now); err != nil {
		return nil, fmt.Errorf("%w: peer call from %s: %w", ErrPermission, pc.From, err)
	}
	// A member that calls is up: this HSM's own way to it, if lost and
	// waiting out a redial backoff, dials now, so that a change this HSM
	// forwards to a leader just back does not wait seconds for it.
	for _, l := range h.peerLinks() {
		if r, ok := l.(interface{ Redial() }); ok && l.ID() == pc.From {
			r.Redial()
		}
	}
	return h.servePeer(pc.From, pc.Method, pc.Args)
}

// fresh records a nonce, refusing one seen before.
func (p *peerState) fresh(nonce []byte, now time.Time) error {
	if len(nonce) != 16 {
		return errors.New("the nonce is not 16 bytes")
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.nonces == nil {
		p.nonces = map[string]time.Time{}
	}
	if _, seen := p.nonces[string(nonce)]; seen {
		return errors.New("replayed: this call was served before")
	}
	if len(p.nonces) >= maxPeerNonces {
		for n, until := range p.nonces {
			if now.After(until) {
				delete(p.nonces, n)
			}
		}
		if len(p.nonces) >= maxPeerNonces {
			return errors.New("too many peer calls in the replay window: try again shortly")
		}
	}
	p.nonces[string(nonce)] = now.Add(2 * peerSkew)
	return nil
}

// useTokenArgs marks a token used on a peer.
type useTokenArgs struct {
	Nonce   string    `json:"nonce"`
	At      time.Time `json:"at"`
	Signers []string  `json:"signers,omitempty"`
}

// membersArgs is the domain's member list, with its version.
type membersArgs struct {
	Members map[string][]byte `json:"members"`
	Version int64             `json:"version"`
}

// servePeer serves one checked peer call from HSM from.
func (h *hsm) servePeer(from, method string, args []byte) (any, error) {
	decode := func(v any) error { return decodeArgs(method, args, v) }
	switch method {
	case protocol.CallTokenState:
		keys, tombs := h.TokenState()
		return tokenState{Keys: keys, Tombstones: tombs}, nil
	case protocol.CallTokenKeys:
		var refs []Ref
		if err := decode(&refs); err != nil {
			return nil, err
		}
		return h.wrapTokenKeys(refs)
	case protocol.CallRaft:
		var m raftMessage
		if err := decode(&m); err != nil {
			return nil, err
		}
		return h.serveRaft(from, m)
	case protocol.CallLinkKey:
		var a linkKeyArgs
		if err := decode(&a); err != nil {
			return nil, err
		}
		return h.serveLinkKey(from, a)
	case protocol.CallPropose:
		var p proposal
		if err := decode(&p); err != nil {
			return nil, err
		}
		return h.serveProposal(from, p)
	case protocol.CallPutMeta:
		var m protocol.KeyMeta
		if err := decode(&m); err != nil {
			return nil, err
		}
		err := h.UpdateMeta(recordOf(m))
		if errors.Is(err, ErrKeyNotFound) {
			return nil, nil // not held here: sync brings it with its new attributes
		}
		return nil, err
	}
	return nil, fmt.Errorf("%w %q", errUnknownMethod, method)
}

// push sends a peer call to every other HSM of the cluster at once and
// waits for them (each at most peerTimeout): a change to the domain state
// reaches every HSM that answers before the call that made it returns.
// An HSM that misses it gets it from server-side sync.
func (h *hsm) push(method string, args any) {
	links := h.peerLinks()
	var wg sync.WaitGroup
	for _, p := range links {
		wg.Add(1)
		go func() {
			defer wg.Done()
			within(peerTimeout, "", func() error { return h.callPeer(p, method, args, nil) })
		}()
	}
	wg.Wait()
}

// joinRequest is an HSM asking a member to let it into the domain.
type joinRequest struct {
	ID       string `json:"id"`
	Identity []byte `json:"identity"` // PKIX DER
	// Endorsement is the cluster key's signature over the id and identity.
	Endorsement []byte `json:"endorsement"`
	At          int64  `json:"at"`
	// Sig is the joining HSM's own signature (proof that it holds the
	// identity key it presents).
	Sig []byte `json:"sig"`
}

// joinReply is the domain key wrapped to the joining HSM, and the members.
type joinReply struct {
	Wrapped *authsession.WrappedDomain `json:"wrapped"`
	Members membersArgs                `json:"members"`
}

func endorseDigest(id string, identity []byte) []byte {
	return authsession.Digest(labelEndorse, []byte(id), identity)
}

func joinTranscript(j *joinRequest) []byte {
	var at [8]byte
	binary.BigEndian.PutUint64(at[:], uint64(j.At))
	return authsession.Digest(labelJoin, []byte(j.ID), j.Identity, j.Endorsement, at[:])
}

// verifyEndorsement checks sig over digest with the cluster key pub.
func verifyEndorsement(pub crypto.PublicKey, digest, sig []byte) bool {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		return ecdsa.VerifyASN1(k, digest, sig)
	case *rsa.PublicKey:
		return rsa.VerifyPKCS1v15(k, crypto.SHA384, digest, sig) == nil
	}
	return false
}

// acceptJoin lets an endorsed HSM into the domain: it is added to the
// member list (which goes to the other members), and the domain key is
// wrapped to its identity key, which only it can unwrap.
func (h *hsm) acceptJoin(j *joinRequest) (*joinReply, error) {
	h.peer.mu.Lock()
	endorser := h.peer.endorser
	h.peer.mu.Unlock()
	if endorser == nil {
		return nil, fmt.Errorf("%w: %s takes no new HSMs: it has no cluster key to check them with", ErrPermission, h.id)
	}
	if j.ID == "" || j.ID == h.id {
		return nil, fmt.Errorf("%w: a join needs the id of another HSM", ErrInvalid)
	}
	if !verifyEndorsement(endorser, endorseDigest(j.ID, j.Identity), j.Endorsement) {
		return nil, fmt.Errorf("%w: %s's identity key is not endorsed by this cluster's key", ErrPermission, j.ID)
	}
	pub, err := authsession.ParsePublic(j.Identity)
	if err != nil {
		return nil, fmt.Errorf("%w: %s's identity key: %w", ErrInvalid, j.ID, err)
	}
	if err := authsession.Verify(pub, j.Sig, labelJoin, joinTranscript(j)); err != nil {
		return nil, fmt.Errorf("%w: join of %s: %w", ErrPermission, j.ID, err)
	}
	if at := time.Unix(0, j.At); time.Since(at).Abs() > peerSkew {
		return nil, fmt.Errorf("%w: the join of %s is dated %s, more than %v from this HSM's clock", ErrPermission, j.ID, at.UTC().Format(time.RFC3339), peerSkew)
	}
	h.mu.RLock()
	up, inDomain, changed := h.up, h.domain != nil, !bytes.Equal(h.members[j.ID], j.Identity)
	h.mu.RUnlock()
	if !up {
		return nil, protocol.ErrDown(h.id)
	}
	if !inDomain {
		return nil, h.notInDomain()
	}
	if changed {
		// A committed entry: every member learns the new HSM's identity
		// key, and the leader makes it a voter of the raft group.
		if err := h.commit("admit "+j.ID+" into the domain", opAddMember, memberArgs{ID: j.ID, Identity: j.Identity}); err != nil {
			return nil, err
		}
	}
	h.mu.RLock()
	if h.domain == nil {
		h.mu.RUnlock()
		return nil, h.notInDomain()
	}
	w, err := authsession.WrapDomain(*h.domain, h.id, h.identity, pub)
	m := membersArgs{Members: maps.Clone(h.members), Version: h.membersVersion}
	h.mu.RUnlock()
	if err != nil {
		return nil, err
	}
	return &joinReply{Wrapped: w, Members: m}, nil
}

// errNoDomainYet is an HSM that cannot join or form a domain now.
var errNoDomainYet = errors.New("waiting for the cluster's other HSMs to form or admit it into the domain")

// ensureDomain brings an HSM that belongs to no domain into its cluster's:
// it joins through a member that answers; when no HSM of the cluster has a
// domain and every one answers (a new cluster), the one with the lowest id
// makes it, and the others join it. An HSM that finds neither waits: a
// replaced HSM must not start a domain of its own while the rest are down.
func (h *hsm) ensureDomain() error {
	h.mu.RLock()
	was := h.domain != nil
	h.mu.RUnlock()
	if err := h.joinDomain(); err != nil {
		return err
	}
	// In the domain: its member of the raft group runs (it forms the
	// group, or waits for the leader to make it a voter).
	if err := h.startRaft(); err != nil {
		return err
	}
	if !was {
		// Just admitted: it holds the domain state (users, quorum) before
		// this returns, so a new or replaced HSM is never seen without it.
		h.awaitDomainState(3 * time.Second)
	}
	return nil
}

// awaitDomainState waits until the leader has made this HSM a voter and
// it has applied what the leader has, or for d.
func (h *hsm) awaitDomainState(d time.Duration) {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		n := h.raftNode()
		if n == nil {
			return
		}
		if _, leader := n.r.LeaderWithID(); leader != "" {
			h.catchUp()
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (h *hsm) joinDomain() error {
	h.mu.RLock()
	has, up := h.domain != nil, h.up
	var mine string
	var myKey []byte
	if has {
		mine, myKey = h.domain.ID(), h.members[h.id]
	}
	h.mu.RUnlock()
	if !up {
		return nil
	}
	links := h.peerLinks()
	if has {
		// An HSM restored from a backup knows only itself: it joins the
		// HSMs of its domain that do not know it yet.
		for _, p := range links {
			var info protocol.DomainInfo
			if p.Call(protocol.CallDomainInfo, nil, &info) != nil || info.Domain != mine {
				continue
			}
			if !bytes.Equal(info.Members[h.id], myKey) {
				h.join(p)
			}
		}
		return nil
	}
	type found struct {
		link peerLink
		info protocol.DomainInfo
	}
	var members []found
	all := true
	lowest := true
	for _, p := range links {
		var info protocol.DomainInfo
		if err := p.Call(protocol.CallDomainInfo, nil, &info); err != nil {
			all = false
			continue
		}
		if info.Domain != "" {
			members = append(members, found{p, info})
		}
		if p.ID() < h.id {
			lowest = false
		}
	}
	if len(members) > 0 {
		// The domain most HSMs share.
		count := map[string]int{}
		for _, m := range members {
			count[m.info.Domain]++
		}
		sort.SliceStable(members, func(i, j int) bool { return count[members[i].info.Domain] > count[members[j].info.Domain] })
		var errs []error
		for _, m := range members {
			err := h.join(m.link)
			if err == nil {
				return nil
			}
			errs = append(errs, fmt.Errorf("join through %s: %w", m.link.ID(), err))
		}
		if len(errs) > 0 && !slices.ContainsFunc(errs, func(err error) bool { return !errors.Is(err, ErrNoMajority) }) {
			// Admitting an HSM is a change to the members, which needs a
			// majority: it waits for one, as for a domain to join.
			return fmt.Errorf("%w (%w)", errNoDomainYet, errors.Join(errs...))
		}
		return errors.Join(errs...)
	}
	if !all || !lowest {
		return errNoDomainYet
	}
	return h.CreateDomain()
}

// join asks member p to let this HSM into the domain.
func (h *hsm) join(p peerLink) error {
	h.peer.mu.Lock()
	endorse := h.peer.endorse
	h.peer.mu.Unlock()
	if endorse == nil {
		return fmt.Errorf("%s has no cluster key to be endorsed with", h.id)
	}
	h.mu.RLock()
	id := h.identity
	h.mu.RUnlock()
	der, err := authsession.MarshalPublic(id.Public())
	if err != nil {
		return err
	}
	j := joinRequest{ID: h.id, Identity: der, At: time.Now().UnixNano()}
	if j.Endorsement, err = endorse(endorseDigest(h.id, der)); err != nil {
		return err
	}
	if j.Sig, err = id.Sign(labelJoin, joinTranscript(&j)); err != nil {
		return err
	}
	var reply joinReply
	if err := p.Call(protocol.CallJoin, &j, &reply); err != nil {
		return err
	}
	return h.ImportDomain(reply.Wrapped, reply.Members)
}

// Messages of the peer calls, between HSMs of the domain only.

type tokenState struct {
	Keys       []Ref             `json:"keys"`
	Tombstones map[Ref]time.Time `json:"tombstones"`
}

type deleteUserArgs struct {
	Name string `json:"name"`
	At   int64  `json:"at"`
}
