package hsmcore

import (
	"encoding/json"
	"fmt"
	"maps"
	"sync"

	"github.com/hsmsh/hsmsh/hsmcore/authsession"
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
)

// domainInfo is what an HSM says of its place in the domain.
type domainInfo struct {
	ID       string            `json:"id"`
	Identity []byte            `json:"identity"`         // PKIX DER
	Domain   string            `json:"domain,omitempty"` // the domain key's public id
	Members  map[string][]byte `json:"members,omitempty"`
}

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
	h.clients = nil
	if b, ok := secrets[secretClients]; ok {
		if err := json.Unmarshal(b, &h.clients); err != nil {
			return fmt.Errorf("%s: registered clients: %w", h.id, err)
		}
	}
	return nil
}

func (h *hsm) DomainInfo() (domainInfo, error) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	if !h.up {
		return domainInfo{}, errDown(h.id)
	}
	der, err := authsession.MarshalPublic(h.identity.Public())
	if err != nil {
		return domainInfo{}, err
	}
	info := domainInfo{ID: h.id, Identity: der, Members: maps.Clone(h.members)}
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
	return h.store.putSecret(secretDomain, h.domain[:])
}

// CreateDomain makes a new domain key, with members as its HSMs.
func (h *hsm) CreateDomain(members map[string][]byte) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.up {
		return errDown(h.id)
	}
	if h.domain != nil {
		return fmt.Errorf("%w: %s already belongs to domain %s", ErrInvalid, h.id, h.domain.ID())
	}
	d, err := authsession.NewDomainKey()
	if err != nil {
		return err
	}
	h.domain, h.members = &d, maps.Clone(members)
	return h.saveDomainLocked()
}

// AddMembers records more HSMs of the domain.
func (h *hsm) AddMembers(members map[string][]byte) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.up {
		return errDown(h.id)
	}
	if h.domain == nil {
		return fmt.Errorf("%w: %s belongs to no domain yet", ErrInvalid, h.id)
	}
	if h.members == nil {
		h.members = map[string][]byte{}
	}
	maps.Copy(h.members, members)
	return h.saveDomainLocked()
}

// ExportDomain wraps the domain key for member to: only for an HSM the
// domain records, and signed by this one.
func (h *hsm) ExportDomain(to string) (*authsession.WrappedDomain, error) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	if !h.up {
		return nil, errDown(h.id)
	}
	if h.domain == nil {
		return nil, fmt.Errorf("%w: %s belongs to no domain", ErrInvalid, h.id)
	}
	der, ok := h.members[to]
	if !ok {
		return nil, fmt.Errorf("%w: %s is not an HSM of domain %s", ErrPermission, to, h.domain.ID())
	}
	pub, err := authsession.ParsePublic(der)
	if err != nil {
		return nil, err
	}
	return authsession.WrapDomain(*h.domain, h.id, h.identity, pub)
}

// ImportDomain joins the domain whose key w carries, checking that the
// sender is one of members and signed it.
func (h *hsm) ImportDomain(w *authsession.WrappedDomain, members map[string][]byte) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.up {
		return errDown(h.id)
	}
	if w == nil {
		return fmt.Errorf("%w: no wrapped domain key", ErrInvalid)
	}
	der, ok := members[w.From]
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
	h.domain, h.members = &d, maps.Clone(members)
	return h.saveDomainLocked()
}

// ensureDomain brings every HSM that answers into one domain: a new
// cluster's first HSM makes the domain key; the others get it wrapped
// from an HSM that has it. HSMs that already belong to another domain are
// left alone (and say so in cluster hsm-info).
func (e *Embedded) ensureDomain() error {
	e.domainMu.Lock()
	defer e.domainMu.Unlock()
	hs := e.answering()
	if len(hs) == 0 {
		return nil
	}
	infos := make([]domainInfo, len(hs))
	members := map[string][]byte{}
	for i, h := range hs {
		info, err := h.DomainInfo()
		if err != nil {
			return fmt.Errorf("domain: %s: %w", h.ID(), err)
		}
		infos[i] = info
		members[h.ID()] = info.Identity
	}
	// The source is the HSM whose domain most HSMs share.
	count := map[string]int{}
	for _, in := range infos {
		if in.Domain != "" {
			count[in.Domain]++
		}
	}
	src := -1
	for i, in := range infos {
		switch {
		case in.Domain == "":
		case e.domainID != "":
			// The domain this client has seen the cluster in wins: HSMs
			// replaced while the rest were down must not start another.
			if in.Domain == e.domainID && src < 0 {
				src = i
			}
		case src < 0 || count[in.Domain] > count[infos[src].Domain]:
			src = i
		}
	}
	if src < 0 && e.domainID != "" {
		// Only new hardware answers: it joins when an HSM of the domain
		// comes back.
		return nil
	}
	if src < 0 {
		if err := hs[0].CreateDomain(members); err != nil {
			return fmt.Errorf("domain: create on %s: %w", hs[0].ID(), err)
		}
		src = 0
		infos[0].Domain = "new"
	}
	if infos[src].Domain != "new" {
		e.domainID = infos[src].Domain
	} else if info, err := hs[src].DomainInfo(); err == nil {
		e.domainID = info.Domain
	}
	// Every member of the source's domain is known to it, old and new.
	all := maps.Clone(infos[src].Members)
	if all == nil {
		all = map[string][]byte{}
	}
	maps.Copy(all, members)
	if err := hs[src].AddMembers(all); err != nil {
		return fmt.Errorf("domain: %s: %w", hs[src].ID(), err)
	}
	var wg sync.WaitGroup
	errs := make([]error, len(hs))
	for i, h := range hs {
		if i == src || infos[i].Domain != "" {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			w, err := hs[src].ExportDomain(h.ID())
			if err == nil {
				err = h.ImportDomain(w, all)
			}
			if err != nil {
				errs[i] = fmt.Errorf("domain: %s joins from %s: %w", h.ID(), hs[src].ID(), err)
			}
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}
