package hsm

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	mrand "math/rand/v2"
	"reflect"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hsmsh/hsmsh/hsmcore/quorum"
)

// The soak's domain-state workload and checks (issue 17): while keys are
// made, used and deleted under faults that now include killing the raft
// leader and cutting an HSM off from its peers, a guesser spreads wrong
// passwords for one user over the HSMs, and a registrar tries to spend
// each registration token twice at once. At the end every HSM's domain
// state must be the same, the user's failures never above the limit, and
// no token spent twice.

const soakVictim, soakVictimPass = "soak_victim", "soakvictimpass"

// soakDomain is the domain workload's bookkeeping.
type soakDomain struct {
	// counted is how many wrong passwords an HSM answered as counted
	// (not locked yet): at most MaxFailedLogins, however spread.
	counted, refused atomic.Int64
	mu               sync.Mutex
	spent            map[string]int // registration token nonce → registrations accepted
}

// soakDomainSetup makes the victim user; admin is the cluster's admin.
func soakDomainSetup(e *Embedded, admin Caller) error {
	_, err := e.CreateUser(context.Background(), admin, soakVictim, RoleCryptoUser, soakVictimPass)
	return err
}

// guesser spreads wrong passwords for the victim over the HSMs until end.
func (d *soakDomain) guesser(c *Embedded, ids []string, seed int64, end time.Time) {
	rng := mrand.New(mrand.NewPCG(uint64(seed), 77))
	for time.Now().Before(end) {
		id := ids[rng.IntN(len(ids))]
		ans, err := c.Inspect().Authenticate(id, soakVictim, RoleCryptoUser, "wrongguess")
		switch {
		case err != nil:
			d.refused.Add(1) // down, no majority, or not answered
		case ans.OK:
			d.counted.Add(1 << 20) // a wrong password accepted: never
		case !ans.WasLocked:
			d.counted.Add(1)
		}
		time.Sleep(time.Duration(20+rng.IntN(60)) * time.Millisecond)
	}
}

// registrar has user cu register a quorum key with each registration
// token twice at once (through the client, which spreads the calls over
// the HSMs) until end, and counts the registrations accepted per token.
func (d *soakDomain) registrar(c *Embedded, cu Caller, end time.Time) {
	ctx := context.Background()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return
	}
	der, _ := x509.MarshalPKIXPublicKey(k.Public())
	pub := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	for time.Now().Before(end) {
		file, err := c.GenerateToken(ctx, cu, quorum.ServiceRegistration, nil, "")
		if err != nil {
			time.Sleep(50 * time.Millisecond)
			continue
		}
		var rf quorum.RegistrationFile
		if json.Unmarshal(file, &rf) != nil || len(rf.Tokens) != 1 {
			continue
		}
		data, err := base64.StdEncoding.DecodeString(rf.Tokens[0].ApprovalData)
		if err != nil {
			continue
		}
		sig, err := quorum.SignDigest(k, quorum.Digest(data))
		if err != nil {
			continue
		}
		rf.Tokens[0].Signed = base64.StdEncoding.EncodeToString(sig)
		signed := rf.Marshal()
		_, ad, _, err := quorum.ParseRegistrationFile(signed)
		if err != nil {
			continue
		}
		var wg sync.WaitGroup
		var ok atomic.Int64
		for range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if c.RegisterQuorumKey(ctx, cu, pub, signed) == nil {
					ok.Add(1)
				}
			}()
		}
		wg.Wait()
		d.mu.Lock()
		if d.spent == nil {
			d.spent = map[string]int{}
		}
		d.spent[ad.Nonce] += int(ok.Load())
		d.mu.Unlock()
		time.Sleep(100 * time.Millisecond)
	}
}

// soakDomainView is one HSM's domain state, as the checks compare it.
type soakDomainView struct {
	Users   map[string]string // name → role, hash, failures, keys
	Tokens  map[string]bool   // nonce → used
	Members []string
	Quorum  string
}

func soakViewOf(h *hsm) soakDomainView {
	h.mu.RLock()
	defer h.mu.RUnlock()
	v := soakDomainView{Users: map[string]string{}, Tokens: map[string]bool{}, Quorum: fmt.Sprint(h.quorum)}
	for n, u := range h.users {
		v.Users[n] = fmt.Sprintf("%s %s %d %s %s", u.Role, u.Hash, u.failures(), u.QuorumKey, u.MFAKey)
	}
	for n, t := range h.tokens {
		v.Tokens[n] = !t.Used.IsZero()
	}
	for m := range h.members {
		v.Members = append(v.Members, m)
	}
	sort.Strings(v.Members)
	return v
}

// check runs the end-of-phase checks on hs, once the cluster is healed.
func (d *soakDomain) check(s *soakPhase, hs []*hsm) {
	// The same state everywhere, once each HSM applied what the leader
	// has (up to 20 s after heal).
	var views []soakDomainView
	deadline := time.Now().Add(20 * time.Second)
	for {
		views = views[:0]
		for _, h := range hs {
			h.catchUp()
			views = append(views, soakViewOf(h))
		}
		same := true
		for _, v := range views[1:] {
			same = same && reflect.DeepEqual(v, views[0])
		}
		if same || time.Now().After(deadline) {
			if !same {
				for i, v := range views[1:] {
					if !reflect.DeepEqual(v, views[0]) {
						s.violation("(f) the domain state of %s differs from %s's 20 s after heal: %s", hs[i+1].id, hs[0].id, soakTrunc(soakDiff(views[0], v), 600))
					}
				}
			}
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if n := d.counted.Load(); n >= 1<<20 {
		s.violation("(g) a wrong password for %s was accepted", soakVictim)
	} else if n > MaxFailedLogins {
		s.violation("(g) %d wrong passwords for %s were answered before the lock, more than %d", n, soakVictim, MaxFailedLogins)
	}
	for _, h := range hs {
		h.mu.RLock()
		u := h.users[soakVictim]
		h.mu.RUnlock()
		if u != nil && u.failures() > MaxFailedLogins {
			s.violation("(g) %s counts %d failures of %s, over the limit of %d", h.id, u.failures(), soakVictim, MaxFailedLogins)
		}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for nonce, n := range d.spent {
		if n > 1 {
			s.violation("(h) registration token %s…: spent %d times", nonce[:8], n)
		}
	}
}

func soakDiff(a, b soakDomainView) string {
	var out []string
	for n, x := range a.Users {
		if b.Users[n] != x {
			out = append(out, "user "+n)
		}
	}
	for n := range b.Users {
		if _, ok := a.Users[n]; !ok {
			out = append(out, "user "+n+" (only on one)")
		}
	}
	for n, x := range a.Tokens {
		if y, ok := b.Tokens[n]; !ok || x != y {
			out = append(out, "token "+n[:8])
		}
	}
	if !reflect.DeepEqual(a.Members, b.Members) {
		out = append(out, fmt.Sprintf("members %v vs %v", a.Members, b.Members))
	}
	if a.Quorum != b.Quorum {
		out = append(out, "quorum settings")
	}
	sort.Strings(out)
	return fmt.Sprint(out)
}
