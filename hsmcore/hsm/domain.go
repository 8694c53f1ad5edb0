package hsm

import (
	"encoding/json"
	"fmt"
	"maps"
	"strconv"
	"time"

	"github.com/hsmsh/hsmsh/hsmcore/authsession"
	"github.com/hsmsh/hsmsh/hsmcore/protocol"
)

// The cluster's domain, for authenticated sessions (KMS seed): every HSM
// has an identity key pair (ECDSA P-384) of its own, and the HSMs of one
// cluster share a domain key that never leaves them in clear. The domain
// state records the member HSMs' identity keys; the domain key moves from
// one member to another only wrapped for the receiver and signed by the
// sender (authsession.WrapDomain), so whatever carries it never sees it.

// Names of the HSM's secrets in its store.
const (
	secretIdentity = "identity"
	secretDomain   = "domain"
	secretMembers  = "domain-members"
	secretClients  = "clients"
	// secretMembersVersion orders member lists, so that an HSM that missed
	// a join takes the newer list from a peer and never an older one.
	secretMembersVersion = "domain-members-version"
)

// loadDomain reads the HSM's identity and domain from its secrets, making
// (and storing) an identity on first start.
func (h *hsm) loadDomain(secrets map[string][]byte) error {
	if der, ok := secrets[secretIdentity]; ok {
		id, err := authsession.ParseIdentity(der)
		if err != nil {
			return fmt.Errorf("%s: identity key: %w", h.id, err)
		}
		h.identity = id
	} else {
		id, err := authsession.NewIdentity()
		if err != nil {
			return err
		}
		der, err := id.MarshalPrivate()
		if err != nil {
			return err
		}
		if h.store != nil {
			if err := h.store.putSecret(secretIdentity, der); err != nil {
				return fmt.Errorf("%s: store the identity key: %w", h.id, err)
			}
		}
		h.identity = id
	}
	if b, ok := secrets[secretDomain]; ok {
		if len(b) != len(authsession.DomainKey{}) {
			return fmt.Errorf("%s: the stored domain key is %d bytes, not %d", h.id, len(b), len(authsession.DomainKey{}))
		}
		var d authsession.DomainKey
		copy(d[:], b)
		h.domain = &d
	}
	if b, ok := secrets[secretMembers]; ok {
		if err := json.Unmarshal(b, &h.members); err != nil {
			return fmt.Errorf("%s: domain members: %w", h.id, err)
		}
	}
	if b, ok := secrets[secretMembersVersion]; ok {
		v, err := strconv.ParseInt(string(b), 10, 64)
		if err != nil {
			return fmt.Errorf("%s: domain members' version: %w", h.id, err)
		}
		h.membersVersion = v
	}
	h.clients = nil
	if b, ok := secrets[secretClients]; ok {
		if err := json.Unmarshal(b, &h.clients); err != nil {
			return fmt.Errorf("%s: registered clients: %w", h.id, err)
		}
	}
	return nil
}

func (h *hsm) DomainInfo() (protocol.DomainInfo, error) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	if !h.up {
		return protocol.DomainInfo{}, protocol.ErrDown(h.id)
	}
	der, err := authsession.MarshalPublic(h.identity.Public())
	if err != nil {
		return protocol.DomainInfo{}, err
	}
	info := protocol.DomainInfo{ID: h.id, Identity: der, Members: maps.Clone(h.members)}
	if h.domain != nil {
		info.Domain = h.domain.ID()
	}
	return info, nil
}

// saveDomainLocked stores the domain key and members; h.mu is held.
func (h *hsm) saveDomainLocked() error {
	if h.store == nil {
		return nil
	}
	b, err := json.Marshal(h.members)
	if err != nil {
		return err
	}
	if err := h.store.putSecret(secretMembers, b); err != nil {
		return fmt.Errorf("%s: store the domain members: %w", h.id, err)
	}
	if err := h.store.putSecret(secretMembersVersion, strconv.AppendInt(nil, h.membersVersion, 10)); err != nil {
		return fmt.Errorf("%s: store the domain members: %w", h.id, err)
	}
	return h.store.putSecret(secretDomain, h.domain[:])
}

// CreateDomain makes a new domain key, with this HSM its only member: the
// others join it (peer.go).
func (h *hsm) CreateDomain() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.up {
		return protocol.ErrDown(h.id)
	}
	if h.domain != nil {
		return fmt.Errorf("%w: %s already belongs to domain %s", ErrInvalid, h.id, h.domain.ID())
	}
	d, err := authsession.NewDomainKey()
	if err != nil {
		return err
	}
	der, err := authsession.MarshalPublic(h.identity.Public())
	if err != nil {
		return err
	}
	h.domain, h.members = &d, map[string][]byte{h.id: der}
	h.membersVersion = time.Now().UnixNano()
	if err := h.setRaftHow(raftBootstrap); err != nil {
		return err
	}
	return h.saveDomainLocked()
}

// ImportDomain joins the domain whose key w carries, checking that the
// sender is one of members and signed it.
func (h *hsm) ImportDomain(w *authsession.WrappedDomain, m membersArgs) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.up {
		return protocol.ErrDown(h.id)
	}
	if w == nil {
		return fmt.Errorf("%w: no wrapped domain key", ErrInvalid)
	}
	der, ok := m.Members[w.From]
	if !ok {
		return fmt.Errorf("%w: the domain key comes from %s, which is not an HSM of the domain", ErrPermission, w.From)
	}
	pub, err := authsession.ParsePublic(der)
	if err != nil {
		return err
	}
	d, err := authsession.UnwrapDomain(w, h.identity, pub)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrPermission, err)
	}
	if h.domain != nil && *h.domain != d {
		return fmt.Errorf("%w: %s already belongs to domain %s, not %s", ErrInvalid, h.id, h.domain.ID(), d.ID())
	}
	h.domain, h.members, h.membersVersion = &d, maps.Clone(m.Members), m.Version
	if h.raftHow() != raftRestored {
		if err := h.setRaftHow(raftJoined); err != nil {
			return err
		}
	}
	return h.saveDomainLocked()
}
