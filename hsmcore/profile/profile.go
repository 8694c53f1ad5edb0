// Package profile makes simulated HSMs serve at a real HSM type's
// published rates: a pacer per HSM, and a ceiling per client.
package profile

import (
	"fmt"
	"sync"
	"time"

	"github.com/hsmsh/hsmsh/hsmcore/protocol"
)

// Profiles make each simulated HSM serve at a real HSM type's rates, so
// that load-balancing demos and benchmarks behave like hardware: AWS
// publishes, for CloudHSM clusters of 2 / 3 / 6 HSMs, EC P-256 sign at
// 500 / 750 / 1,500 ops/s (hsm1.medium) and 3,000 / 4,500 / 7,000
// (hsm2m.medium), and RSA-2048 sign at 2,000 / 3,000 / 5,000 on both.
//
// The model: a pacer per HSM per operation class at the per-HSM rate (the
// 2- and 3-HSM rows are linear), and one pacer per client at the 6-HSM
// row where that row falls short of linear (what the published 6-HSM
// figures show is a client-side ceiling, not slower HSMs).

// Profile names.
const (
	None        = "none"
	HSM1Medium  = "hsm1.medium"
	HSM2mMedium = "hsm2m.medium"
)

// opClass is a class of operation a profile paces.
type opClass int

const (
	classECSign opClass = iota
	classRSASign
	numClasses
)

type profileRates struct {
	perHSM  [numClasses]float64 // ops/s per HSM; 0 is unpaced
	ceiling [numClasses]float64 // ops/s per client; 0 is none
}

var profiles = map[string]profileRates{
	HSM1Medium:  {perHSM: [numClasses]float64{250, 1000}, ceiling: [numClasses]float64{0, 5000}},
	HSM2mMedium: {perHSM: [numClasses]float64{1500, 1000}, ceiling: [numClasses]float64{7000, 5000}},
}

// Check says whether name is a profile.
func Check(name string) error {
	if name == "" || name == None {
		return nil
	}
	if _, ok := profiles[name]; !ok {
		return fmt.Errorf("%w: profile %q: use %q, %q or %q", protocol.ErrInvalid, name, None, HSM1Medium, HSM2mMedium)
	}
	return nil
}

// classOf is the class a sign request is paced in, if any.
func classOf(req protocol.SignRequest) (opClass, bool) {
	switch req.Mechanism {
	case protocol.MechECDSA:
		return classECSign, true
	case protocol.MechRSAPKCS, protocol.MechRSAPKCSPS:
		return classRSASign, true
	}
	return 0, false
}

// pacer spaces operations at a fixed rate (the generic cell rate
// algorithm, with no burst): each caller is given the next free slot and
// sleeps until it. Callers over the rate queue, as on a busy HSM.
type pacer struct {
	mu       sync.Mutex
	interval time.Duration
	next     time.Time
}

func newPacer(rate float64) *pacer {
	if rate <= 0 {
		return nil
	}
	return &pacer{interval: time.Duration(float64(time.Second) / rate)}
}

func (p *pacer) wait() {
	if p == nil {
		return
	}
	if d := time.Until(p.reserve(time.Now())); d > 0 {
		time.Sleep(d)
	}
}

// reserve books the next free slot for a caller arriving at now: now
// itself if the pacer has been idle, else one interval after the last.
func (p *pacer) reserve(now time.Time) time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.next.Before(now) {
		p.next = now
	}
	at := p.next
	p.next = p.next.Add(p.interval)
	return at
}

// Pacers are one pacer per operation class.
type Pacers [numClasses]*pacer

func newPacers(rates [numClasses]float64) *Pacers {
	var ps Pacers
	for i, r := range rates {
		ps[i] = newPacer(r)
	}
	return &ps
}

// Pace waits for a slot for req's class; nil paces nothing.
func (ps *Pacers) Pace(req protocol.SignRequest) {
	if ps == nil {
		return
	}
	if c, ok := classOf(req); ok {
		ps[c].wait()
	}
}

// PerHSM are the pacers of one HSM under the named profile; nil (which
// paces nothing) for none.
func PerHSM(name string) *Pacers {
	if p, ok := profiles[name]; ok {
		return newPacers(p.perHSM)
	}
	return nil
}

// Ceiling are the pacers of one client under the named profile; nil for
// none.
func Ceiling(name string) *Pacers {
	if p, ok := profiles[name]; ok {
		return newPacers(p.ceiling)
	}
	return nil
}
