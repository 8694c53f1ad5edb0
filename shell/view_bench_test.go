package shell

import (
	"fmt"
	"testing"

	tea "github.com/charmbracelet/bubbletea"

	"github.com/hsmsh/hsmsh/commands"
)

// BenchmarkFullScreen10kKeys28HSMs renders the whole screen with 10,000
// keys on a 28-HSM cluster. The target is under 16 ms a frame (60 Hz);
// the key pane draws only the rows that fit, so the key count is cheap.
func BenchmarkFullScreen10kKeys28HSMs(b *testing.B) {
	m := newTestModel(b, 28, true, "")
	m.Update(tea.WindowSizeMsg{Width: 200, Height: 60})
	m.hsms = m.env.HSMs(b.Context())
	keys := make([]commands.KeyView, 10000)
	for i := range keys {
		holders := map[string]bool{}
		for j, h := range m.hsms {
			holders[h.ID] = (i+j)%5 != 0
		}
		keys[i] = commands.KeyView{Ref: fmt.Sprintf("0x%016x", i+1), Label: fmt.Sprintf("key-%05d", i), Type: "aes", Class: "secret-key", Holders: holders}
	}
	m.keys = keys
	for i := 0; i < 40; i++ {
		m.appendOut(fmt.Sprintf(`  "line": %d,`, i))
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if len(m.View()) == 0 {
			b.Fatal("empty view")
		}
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N)/1000, "ms/frame")
}
