package profile

import (
	"testing"
	"time"

	"github.com/hsmsh/hsmsh/hsmcore/protocol"
)

func TestPacerSlots(t *testing.T) {
	for _, tt := range []struct {
		rate     float64
		interval time.Duration
	}{{250, 4 * time.Millisecond}, {1500, 666666 * time.Nanosecond}, {1e9, time.Nanosecond}} {
		p := newPacer(tt.rate)
		if p.interval != tt.interval {
			t.Errorf("rate %v: interval %v, want %v", tt.rate, p.interval, tt.interval)
		}
		start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
		for i := range 3 {
			if at, want := p.reserve(start), start.Add(time.Duration(i)*tt.interval); !at.Equal(want) {
				t.Errorf("rate %v: caller %d at %v, want %v", tt.rate, i, at, want)
			}
		}
		later := start.Add(time.Hour)
		if at := p.reserve(later); !at.Equal(later) {
			t.Errorf("rate %v: after an idle hour the slot is %v, want %v", tt.rate, at, later)
		}
	}
	if newPacer(0) != nil {
		t.Error("a zero rate paces")
	}
	var none *Pacers
	none.Pace(protocol.SignRequest{Mechanism: protocol.MechECDSA}) // a nil set paces nothing, and does not panic
}
