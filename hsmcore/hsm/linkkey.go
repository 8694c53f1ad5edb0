package hsm

import (
	"bytes"
	"crypto/ecdh"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/hsmsh/hsmsh/hsmcore/authsession"
	"github.com/hsmsh/hsmsh/hsmcore/protocol"
)

// Link keys: the raft traffic between two HSMs is authenticated with an
// HMAC under a key the pair agreed, not with an ECDSA signature per call.
// A leader sends each follower a heartbeat ten times a second; signing
// each (0.7 ms of CPU) would cost a 28-HSM cluster's leader a core. The
// key comes from an ephemeral X25519 exchange in which each side signs
// both ephemeral keys with its identity key from the member list (the
// SIGMA pattern): only the two HSMs hold it, and neither ephemeral key
// outlives the exchange. A MAC'd call gets the same checks a signed one
// does (member, addressee, time, nonce); only raft RPCs may use one.

const (
	labelLinkKey = "hsmsh raft link key v1"
	// linkKeyLife is how long a link key serves; the sender agrees a new
	// one a minute before.
	linkKeyLife = 10 * time.Minute
	// maxLinkKeys bounds the keys an HSM keeps per sending peer.
	maxLinkKeys = 4
)

// errUnknownLinkKey is a MAC'd call under a key the receiver does not hold
// (it restarted, or the key expired): the sender agrees a new one.
var errUnknownLinkKey = errors.New("unknown link key: agree a new one")

// linkKey is one agreed key.
type linkKey struct {
	id       string
	key      []byte
	expires  time.Time
	identity []byte // the peer's identity key (PKIX DER) when it was agreed
}

// linkKeyArgs is the sender's half of the exchange (a signed peer call).
type linkKeyArgs struct {
	ID  string `json:"id"`  // the key's id, 16 random bytes in hex
	Eph []byte `json:"eph"` // the sender's ephemeral X25519 public key
}

// linkKeyReply is the receiver's half: its ephemeral key, and its
// signature over both.
type linkKeyReply struct {
	Eph []byte `json:"eph"`
	Sig []byte `json:"sig"`
}

func linkTranscript(from, to, id string, ephA, ephB []byte) [][]byte {
	return [][]byte{[]byte(from), []byte(to), []byte(id), ephA, ephB}
}

func deriveLinkKey(shared []byte, from, to, id string, ephA, ephB []byte) ([]byte, error) {
	info := authsession.Digest(labelLinkKey, linkTranscript(from, to, id, ephA, ephB)...)
	return hkdf.Key(sha512.New384, shared, []byte(id), string(info), 48)
}

// serveLinkKey is the receiver's side of the exchange with member from
// (the call's signature was checked already).
func (h *hsm) serveLinkKey(from string, a linkKeyArgs) (*linkKeyReply, error) {
	if len(a.ID) != 32 {
		return nil, fmt.Errorf("%w: a link key id is 16 bytes in hex", ErrInvalid)
	}
	peerEph, err := ecdh.X25519().NewPublicKey(a.Eph)
	if err != nil {
		return nil, fmt.Errorf("%w: link key from %s: %w", ErrInvalid, from, err)
	}
	eph, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	shared, err := eph.ECDH(peerEph)
	if err != nil {
		return nil, fmt.Errorf("%w: link key from %s: %w", ErrInvalid, from, err)
	}
	defer clear(shared)
	mine := eph.PublicKey().Bytes()
	key, err := deriveLinkKey(shared, from, h.id, a.ID, a.Eph, mine)
	if err != nil {
		return nil, err
	}
	h.mu.RLock()
	id, member := h.identity, h.members[from]
	h.mu.RUnlock()
	sig, err := id.Sign(labelLinkKey, linkTranscript(from, h.id, a.ID, a.Eph, mine)...)
	if err != nil {
		return nil, err
	}
	h.peer.mu.Lock()
	defer h.peer.mu.Unlock()
	if h.peer.inKeys == nil {
		h.peer.inKeys = map[string][]*linkKey{}
	}
	keys := append(h.peer.inKeys[from], &linkKey{id: a.ID, key: key, expires: time.Now().Add(linkKeyLife), identity: bytes.Clone(member)})
	if len(keys) > maxLinkKeys {
		clear(keys[0].key)
		keys = keys[1:]
	}
	h.peer.inKeys[from] = keys
	return &linkKeyReply{Eph: mine, Sig: sig}, nil
}

// agreeLinkKey runs the exchange with p and keeps the key for sending.
func (h *hsm) agreeLinkKey(p peerLink) (*linkKey, error) {
	eph, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	idb := make([]byte, 16)
	if _, err := rand.Read(idb); err != nil {
		return nil, err
	}
	a := linkKeyArgs{ID: hex.EncodeToString(idb), Eph: eph.PublicKey().Bytes()}
	var rep linkKeyReply
	if err := h.callPeer(p, protocol.CallLinkKey, a, &rep); err != nil {
		return nil, err
	}
	h.mu.RLock()
	member := h.members[p.ID()]
	h.mu.RUnlock()
	if member == nil {
		return nil, fmt.Errorf("%s is not an HSM of this domain", p.ID())
	}
	pub, err := authsession.ParsePublic(member)
	if err != nil {
		return nil, err
	}
	if err := authsession.Verify(pub, rep.Sig, labelLinkKey, linkTranscript(h.id, p.ID(), a.ID, a.Eph, rep.Eph)...); err != nil {
		return nil, fmt.Errorf("%w: link key with %s: %w", ErrPermission, p.ID(), err)
	}
	peerEph, err := ecdh.X25519().NewPublicKey(rep.Eph)
	if err != nil {
		return nil, fmt.Errorf("link key with %s: %w", p.ID(), err)
	}
	shared, err := eph.ECDH(peerEph)
	if err != nil {
		return nil, fmt.Errorf("link key with %s: %w", p.ID(), err)
	}
	defer clear(shared)
	key, err := deriveLinkKey(shared, h.id, p.ID(), a.ID, a.Eph, rep.Eph)
	if err != nil {
		return nil, err
	}
	k := &linkKey{id: a.ID, key: key, expires: time.Now().Add(linkKeyLife - time.Minute), identity: bytes.Clone(member)}
	h.peer.mu.Lock()
	if h.peer.outKeys == nil {
		h.peer.outKeys = map[string]*linkKey{}
	}
	h.peer.outKeys[p.ID()] = k
	h.peer.mu.Unlock()
	return k, nil
}

// sendKey returns the key for sending to p, agreeing one if there is none
// (or it is about to expire, or p's identity changed).
func (h *hsm) sendKey(p peerLink) (*linkKey, error) {
	h.mu.RLock()
	member := h.members[p.ID()]
	h.mu.RUnlock()
	h.peer.mu.Lock()
	k := h.peer.outKeys[p.ID()]
	h.peer.mu.Unlock()
	if k != nil && time.Now().Before(k.expires) && bytes.Equal(k.identity, member) {
		return k, nil
	}
	return h.agreeLinkKey(p)
}

func (pc *peerCall) mac(key []byte) []byte {
	m := hmac.New(sha512.New384, key)
	m.Write([]byte(pc.Key))
	m.Write(pc.transcript())
	return m.Sum(nil)
}

// callPeerMAC is callPeer with the call MAC'd under the pair's link key
// (raft RPCs). A receiver that lost the key says so, and the call is made
// again under a new one.
func (h *hsm) callPeerMAC(p peerLink, method string, args, reply any) error {
	if h.partitioned.Load() {
		return &protocol.DownError{ID: p.ID(), Why: fmt.Errorf("%s is cut off from its peers", h.id)}
	}
	for try := 0; ; try++ {
		k, err := h.sendKey(p)
		if err != nil {
			return err
		}
		pc, err := h.newPeerCall(p, method, args)
		if err != nil {
			return err
		}
		pc.Key = k.id
		pc.Sig = pc.mac(k.key)
		err = p.Call(protocol.CallPeer, pc, reply)
		if err != nil && try == 0 && strings.Contains(err.Error(), errUnknownLinkKey.Error()) {
			h.peer.mu.Lock()
			if h.peer.outKeys[p.ID()] == k {
				delete(h.peer.outKeys, p.ID())
			}
			h.peer.mu.Unlock()
			continue
		}
		return err
	}
}

// checkMAC checks a MAC'd peer call from member (its identity key, DER).
func (h *hsm) checkMAC(pc *peerCall, member []byte) error {
	if pc.Method != protocol.CallRaft {
		return fmt.Errorf("%q may not be sent under a link key", pc.Method)
	}
	h.peer.mu.Lock()
	var k *linkKey
	for _, x := range h.peer.inKeys[pc.From] {
		if x.id == pc.Key {
			k = x
		}
	}
	h.peer.mu.Unlock()
	if k == nil || time.Now().After(k.expires) || !bytes.Equal(k.identity, member) {
		return errUnknownLinkKey
	}
	if !hmac.Equal(pc.Sig, pc.mac(k.key)) {
		return errors.New("the MAC does not verify under the link key")
	}
	return nil
}
