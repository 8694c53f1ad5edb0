package shell

import (
	"fmt"
	"strings"
	"testing"

	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/lipgloss"
	"github.com/muesli/termenv"

	"github.com/hsmsh/hsmsh/commands"
	"github.com/hsmsh/hsmsh/themes"
)

// benchModel is a 28-HSM cluster whose key pane holds 10,000 keys (some
// copies missing), delivered as a refresh delivers them, with output and
// events to draw.
func benchModel(b *testing.B, w, h int) *Model {
	m := newTestModel(b, 28, true, "")
	m.Update(tea.WindowSizeMsg{Width: w, Height: h})
	m.hsms = m.env.HSMs(b.Context())
	keys := make([]commands.KeyView, 10000)
	for i := range keys {
		holders := map[string]bool{}
		for j, h := range m.hsms {
			holders[h.ID] = (i+j)%5 != 0
		}
		keys[i] = commands.KeyView{Ref: fmt.Sprintf("0x%016x", i+1), Label: fmt.Sprintf("key-%05d", i), Type: "aes", Class: "secret-key", Holders: holders}
	}
	m.Update(snapshotMsg{hsms: m.hsms, keys: keys})
	for i := 0; i < 40; i++ {
		m.appendOut(fmt.Sprintf(`  "line": %d,`, i))
	}
	var evs eventsMsg
	for i := 0; i < 20; i++ {
		evs = append(evs, commands.Event{Kind: "key-synced", HSM: "hsm-2", Ref: keys[i].Ref})
	}
	m.takeEvents(evs)
	return m
}

// BenchmarkFullScreen10kKeys28HSMs renders the whole screen with 10,000
// keys on a 28-HSM cluster. The target is under 16 ms a frame (60 Hz);
// the key pane draws only the rows that fit, so the key count is cheap.
func BenchmarkFullScreen10kKeys28HSMs(b *testing.B) {
	m := benchModel(b, 200, 60)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if len(m.View()) == 0 {
			b.Fatal("empty view")
		}
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N)/1000, "ms/frame")
}

// BenchmarkFullScreen10kKeys28HSMsTrueColor is the same frame in colour,
// as a truecolor terminal gets it (the dark theme: every mark and
// border carries its 24-bit colour), at the issue's sizes.
func BenchmarkFullScreen10kKeys28HSMsTrueColor(b *testing.B) {
	lipgloss.SetColorProfile(termenv.TrueColor)
	b.Cleanup(func() { lipgloss.SetColorProfile(termenv.Ascii) })
	th, _ := themes.Builtin("dark")
	for _, size := range issueSizes {
		b.Run(fmt.Sprintf("%dx%d", size[0], size[1]), func(b *testing.B) {
			m := benchModel(b, size[0], size[1])
			m.theme = th
			if v := m.View(); !strings.Contains(v, "\x1b[38;2;") {
				b.Fatalf("not a truecolor frame: %q", v[:min(len(v), 200)])
			}
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if len(m.View()) == 0 {
					b.Fatal("empty view")
				}
			}
			b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N)/1000, "ms/frame")
		})
	}
}

// BenchmarkSnapshotAndFrame10kKeys28HSMs is a refresh's new snapshot of
// 10,000 keys and the frame after it (truecolor, 200×50): the rows are
// stamped, sorted newest first and the grid redrawn.
func BenchmarkSnapshotAndFrame10kKeys28HSMs(b *testing.B) {
	lipgloss.SetColorProfile(termenv.TrueColor)
	b.Cleanup(func() { lipgloss.SetColorProfile(termenv.Ascii) })
	th, _ := themes.Builtin("dark")
	m := benchModel(b, 200, 50)
	m.theme = th
	if v := m.View(); !strings.Contains(v, "\x1b[38;2;") {
		b.Fatalf("not a truecolor frame: %q", v[:200])
	}
	keys := m.keys
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		m.Update(snapshotMsg{hsms: m.hsms, keys: append([]commands.KeyView(nil), keys...)})
		if len(m.View()) == 0 {
			b.Fatal("empty view")
		}
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N)/1000, "ms/frame")
}

// BenchmarkFullScreenCompare10kKeys is the side-by-side key pane
// (compare) with 10,000 keys in each of two 28-HSM clusters, truecolor at
// 160×45: the rows of both are merged every frame.
func BenchmarkFullScreenCompare10kKeys(b *testing.B) {
	lipgloss.SetColorProfile(termenv.TrueColor)
	b.Cleanup(func() { lipgloss.SetColorProfile(termenv.Ascii) })
	th, _ := themes.Builtin("dark")
	m := benchModel(b, 160, 45)
	m.theme = th
	m.compare = "dr"
	m.cmp = &clusterView{id: "dr", hsms: m.hsms, keys: m.keys}
	if v := m.View(); !strings.Contains(v, "| dr") {
		b.Fatalf("no side-by-side pane: %q", v[:min(len(v), 300)])
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if len(m.View()) == 0 {
			b.Fatal("empty view")
		}
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N)/1000, "ms/frame")
}
