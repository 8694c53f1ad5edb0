package shell

import (
	"fmt"
	"strings"
	"testing"
	"time"

	tea "github.com/charmbracelet/bubbletea"

	"github.com/hsmsh/hsmsh/commands"
)

// The sizes the issue was tried at in tmux.
var issueSizes = [][2]int{{80, 24}, {100, 30}, {110, 40}, {160, 45}, {200, 50}, {250, 60}}

// longLabel is a label that needs 35 cells: it shows whole only where the
// grid has room for it.
func longLabel(i int) string { return fmt.Sprintf("teaching-key-%04d-with-a-long-label", i) }

// gridModel is a logged-in model on n HSMs with the HSM list read.
func gridModel(t *testing.T, n int) *Model {
	t.Helper()
	m := newTestModel(t, n, true, "")
	pump(t, m, m.refresh(), func() bool { return !m.refreshing && len(m.hsms) == n })
	return m
}

// fakeKeys makes count keys on the model's HSMs, key-references in
// ascending order (the order the cluster lists them in), some copies
// missing.
func fakeKeys(m *Model, count int) []commands.KeyView {
	ids := commands.SortedHSMIDs(m.hsms)
	keys := make([]commands.KeyView, count)
	for i := range keys {
		holders := map[string]bool{}
		for j, id := range ids {
			holders[id] = (i+j)%4 != 0
		}
		keys[i] = commands.KeyView{Ref: fmt.Sprintf("0x%016x", i+1), Label: longLabel(i), Type: "aes", Class: "secret-key", Holders: holders}
	}
	return keys
}

// feed delivers a snapshot with these keys, as a refresh would.
func feed(m *Model, keys []commands.KeyView) {
	m.Update(snapshotMsg{hsms: m.hsms, keys: keys, tokens: m.tokens})
}

// pane returns the inner lines of the box whose title holds title, and
// the box's height with its border; nil if there is no such box.
func pane(screen, title string) (inner []string, height int) {
	lines := strings.Split(screen, "\n")
	for r, l := range lines {
		rs := []rune(l)
		at := strings.Index(l, title)
		if at < 0 {
			continue
		}
		col := len([]rune(l[:at]))
		for col >= 0 && rs[col] != '┌' {
			col--
		}
		if col < 0 {
			continue
		}
		end := col + 1
		for end < len(rs) && rs[end] != '┐' {
			end++
		}
		for _, below := range lines[r+1:] {
			br := []rune(below)
			if len(br) <= end || br[col] == '└' {
				break
			}
			inner = append(inner, string(br[col+1:end]))
		}
		return inner, len(inner) + 2
	}
	return nil, 0
}

// keyRows are the key pane's rows that show a key (by its label's
// start), and the pane's lines.
func keyRows(t *testing.T, screen string) (rows, lines []string) {
	t.Helper()
	lines, _ = pane(screen, " Keys (")
	if lines == nil {
		t.Errorf("no key pane:\n%s", screen)
	}
	for _, l := range lines {
		if strings.HasPrefix(strings.TrimSpace(l), "teaching") {
			rows = append(rows, l)
		}
	}
	return rows, lines
}

func countMarks(row string) int {
	n := 0
	for _, r := range row {
		if strings.ContainsRune("●○◆-×✗", r) {
			n++
		}
	}
	// "-" also appears in labels: count marks after the label only.
	for _, r := range strings.Fields(row)[0] {
		if r == '-' {
			n--
		}
	}
	return n
}

// At every size the issue names, on 3 HSMs and on 28, the key pane is
// there with a row per key that shows its label, one mark per HSM and the
// coverage: no HSM column is cut off. (Before: no grid below 110 columns,
// and from 110 to about 125 the HSM columns were cut off.)
func TestGridAtEverySize(t *testing.T) {
	for _, n := range []int{3, 28} {
		m := gridModel(t, n)
		feed(m, fakeKeys(m, 5))
		for _, size := range issueSizes {
			m.Update(tea.WindowSizeMsg{Width: size[0], Height: size[1]})
			v := m.View()
			rows, _ := keyRows(t, v)
			if len(rows) != 5 {
				t.Errorf("%d HSMs at %dx%d: %d key rows, want 5:\n%s", n, size[0], size[1], len(rows), v)
				continue
			}
			for _, row := range rows {
				if got := countMarks(row); got != n {
					t.Errorf("%d HSMs at %dx%d: %d marks in %q", n, size[0], size[1], got, row)
				}
				if !strings.Contains(row, fmt.Sprintf("/%d", n)) || strings.HasSuffix(strings.TrimSpace(row), "…") {
					t.Errorf("%d HSMs at %dx%d: coverage cut off in %q", n, size[0], size[1], row)
				}
				if l := shownLabel(row); !strings.HasPrefix(l, "teaching-") || !strings.Contains(l, "label") {
					t.Errorf("%d HSMs at %dx%d: no label in %q", n, size[0], size[1], row)
				}
			}
			for i, l := range strings.Split(v, "\n") {
				if w := len([]rune(l)); w > size[0] {
					t.Errorf("%d HSMs at %dx%d: line %d is %d wide", n, size[0], size[1], i, w)
				}
			}
			if got := len(strings.Split(v, "\n")); got != size[1] {
				t.Errorf("%d HSMs at %dx%d: %d lines", n, size[0], size[1], got)
			}
		}
	}
}

// Below 110 columns Ctrl+L hides the grid and brings it back (before, it
// could not bring back what was never there).
func TestCtrlLBringsGridBackWhenNarrow(t *testing.T) {
	m := gridModel(t, 3)
	feed(m, fakeKeys(m, 2))
	for _, size := range issueSizes[:2] {
		m.Update(tea.WindowSizeMsg{Width: size[0], Height: size[1]})
		press(m, tea.KeyCtrlL)
		if lines, _ := pane(m.View(), " Keys ("); lines != nil {
			t.Errorf("%dx%d: the grid is still there after Ctrl+L", size[0], size[1])
		}
		press(m, tea.KeyCtrlL)
		if rows, _ := keyRows(t, m.View()); len(rows) != 2 {
			t.Errorf("%dx%d: Ctrl+L again shows %d rows", size[0], size[1], len(rows))
		}
	}
}

// shownLabel is the label as a row shows it (cut with … when the column
// is narrower than the label).
func shownLabel(row string) string { return strings.Fields(row)[0] }

// shows is whether shown is label, whole or cut in the middle.
func shows(label, shown string) bool {
	head, tail, cut := strings.Cut(shown, "…")
	if !cut {
		return label == shown
	}
	return strings.HasPrefix(label, head) && strings.HasSuffix(label, tail)
}

// The label column takes the room there is (it was 14 cells at every
// size): whole labels where they fit, and wider as the key pane widens.
func TestLabelColumnWidensWithSpace(t *testing.T) {
	for _, n := range []int{3, 28} {
		m := gridModel(t, n)
		keys := fakeKeys(m, 3)
		for i := range keys {
			keys[i].Label = fmt.Sprintf("teaching-key-%d-", i) + strings.Repeat("x", 45) // 60 cells
		}
		feed(m, keys)
		width := map[[2]int]int{}
		for _, size := range issueSizes {
			m.Update(tea.WindowSizeMsg{Width: size[0], Height: size[1]})
			rows, _ := keyRows(t, m.View())
			if len(rows) == 0 {
				t.Errorf("%d HSMs at %dx%d: no rows", n, size[0], size[1])
				continue
			}
			width[size] = len([]rune(shownLabel(rows[0])))
			if width[size] <= 14 {
				t.Errorf("%d HSMs at %dx%d: label column %d cells: %q", n, size[0], size[1], width[size], rows[0])
			}
		}
		if n != 3 {
			continue
		}
		for _, size := range [][2]int{{80, 24}, {100, 30}, {160, 45}, {200, 50}, {250, 60}} {
			if width[size] != 60 {
				t.Errorf("%dx%d: label shown in %d cells, want the whole 60", size[0], size[1], width[size])
			}
		}
		// The wide layout at 110 columns has a narrower pane than at 160:
		// the label is cut there, and widens with the pane.
		if !(width[[2]int{110, 40}] < width[[2]int{160, 45}]) {
			t.Errorf("label widths do not grow with the pane: %v", width)
		}
	}
}

// The newest key is the first row (before: key-reference order, so a new
// key landed anywhere), and Ctrl+O changes the order: oldest first, then
// by label, then newest first again.
func TestNewestKeyFirstAndSortToggle(t *testing.T) {
	m := gridModel(t, 3)
	keys := fakeKeys(m, 3)
	keys[0].Label, keys[1].Label, keys[2].Label = "teaching-b-oldest", "teaching-c-middle", "teaching-a-newest"
	feed(m, keys[:1])
	feed(m, keys[:2])
	feed(m, keys) // the newest has the highest key-reference: listed last
	for _, size := range issueSizes {
		m.Update(tea.WindowSizeMsg{Width: size[0], Height: size[1]})
		for i := 0; i < 3 && !strings.Contains(m.View(), "newest first"); i++ {
			press(m, tea.KeyCtrlO) // back to the first order
		}
		order := func() string {
			rows, _ := keyRows(t, m.View())
			var got []string
			for _, r := range rows {
				got = append(got, shownLabel(r))
			}
			return strings.Join(got, " ")
		}
		want := []string{
			"teaching-a-newest teaching-c-middle teaching-b-oldest",
			"teaching-b-oldest teaching-c-middle teaching-a-newest",
			"teaching-a-newest teaching-b-oldest teaching-c-middle",
			"teaching-a-newest teaching-c-middle teaching-b-oldest",
		}
		for i, w := range want {
			if i > 0 {
				press(m, tea.KeyCtrlO)
			}
			if got := order(); got != w {
				t.Errorf("%dx%d, after %d Ctrl+O: rows %q, want %q", size[0], size[1], i, got, w)
			}
		}
	}
}

// Keys made by commands come out newest first too (the order the shell
// saw them made: the cluster's records carry no creation time).
func TestNewestKeyFirstLive(t *testing.T) {
	m := gridModel(t, 3)
	m.Update(tea.WindowSizeMsg{Width: 160, Height: 45})
	for i := range 5 {
		runLine(t, m, fmt.Sprintf("key generate-symmetric aes --label teaching-%d --key-length-bytes 16", i))
		time.Sleep(5 * time.Millisecond)
	}
	pump(t, m, m.refresh(), func() bool { return !m.refreshing && len(m.keys) == 5 })
	rows, _ := keyRows(t, m.View())
	var got []string
	for _, r := range rows {
		got = append(got, shownLabel(r))
	}
	if want := "teaching-4 teaching-3 teaching-2 teaching-1 teaching-0"; strings.Join(got, " ") != want {
		t.Errorf("rows %q, want %q", got, want)
	}
}

// With more keys than rows the pane says how many are below; Shift+↓
// scrolls to the last key and no further, never into blank rows.
func TestMoreBelowAndNoBlankRows(t *testing.T) {
	m := gridModel(t, 3)
	feed(m, fakeKeys(m, 300))
	for _, size := range issueSizes {
		m.Update(tea.WindowSizeMsg{Width: size[0], Height: size[1]})
		m.keyScroll = 0
		v := m.View()
		_, lines := keyRows(t, v)
		if !strings.Contains(strings.Join(lines, "\n"), "more below") {
			t.Errorf("%dx%d: no \"more below\":\n%s", size[0], size[1], v)
		}
		for range 400 {
			m.Update(tea.KeyMsg{Type: tea.KeyShiftDown})
		}
		v = m.View()
		rows, lines := keyRows(t, v)
		for i, l := range lines {
			if strings.TrimSpace(l) == "" {
				t.Errorf("%dx%d: blank row %d of the key pane after scrolling to the end:\n%s", size[0], size[1], i, v)
				break
			}
		}
		// The last row is the last key.
		all := m.visibleKeys()
		if len(rows) == 0 || !shows(all[len(all)-1].Label, shownLabel(rows[len(rows)-1])) {
			t.Errorf("%dx%d: the last row is not the last key:\n%s", size[0], size[1], v)
		}
		if joined := strings.Join(lines, "\n"); strings.Contains(joined, "more below") || !strings.Contains(joined, "above") {
			t.Errorf("%dx%d: at the end the hint says:\n%s", size[0], size[1], joined)
		}
		// One Shift+↑ moves back at once: the scroll did not run on
		// past the end.
		if len(rows) == 0 {
			continue
		}
		before := rows[0]
		m.Update(tea.KeyMsg{Type: tea.KeyShiftUp})
		if rows, _ := keyRows(t, m.View()); len(rows) == 0 || rows[0] == before {
			t.Errorf("%dx%d: Shift+↑ after scrolling past the end did not move", size[0], size[1])
		}
	}
}

// At 250×60 the key pane takes most of the height when there are many
// keys; with a few keys it is not left mostly empty while the events
// keep 8 rows: the event log takes the room.
func TestPanesShareHeightAtLargeSizes(t *testing.T) {
	m := gridModel(t, 3)
	m.Update(tea.WindowSizeMsg{Width: 250, Height: 60})
	var evs eventsMsg
	for i := range 40 {
		evs = append(evs, commands.Event{Time: time.Now(), Kind: "hsm-latency", HSM: "hsm-1", Detail: fmt.Sprintf("%dms", i)})
	}
	m.Update(evs)
	feed(m, fakeKeys(m, 300))
	v := m.View()
	if _, h := pane(v, " Keys ("); h < 60*6/10 {
		t.Errorf("300 keys: the key pane is %d of 60 rows:\n%s", h, v)
	}
	feed(m, fakeKeys(m, 3))
	v = m.View()
	_, lines := keyRows(t, v)
	blank := 0
	for _, l := range lines {
		if strings.TrimSpace(l) == "" {
			blank++
		}
	}
	if blank > 3 {
		t.Errorf("3 keys: %d blank rows in the key pane:\n%s", blank, v)
	}
	if ev, _ := pane(v, " Events "); len(ev) < 20 {
		t.Errorf("3 keys, 40 events: the event log shows %d rows:\n%s", len(ev), v)
	}
}

// While server-side sync runs, the key pane says how long a ○ lasts and
// how to hold it; paused, it says nothing.
func TestSyncHintInKeyPane(t *testing.T) {
	m := gridModel(t, 3)
	feed(m, fakeKeys(m, 2))
	runLine(t, m, "lab sync resume")
	for _, size := range issueSizes {
		m.Update(tea.WindowSizeMsg{Width: size[0], Height: size[1]})
		_, lines := keyRows(t, m.View())
		if joined := strings.Join(lines, "\n"); !strings.Contains(joined, "lab sync pause") || !strings.Contains(joined, "○") {
			t.Errorf("%dx%d: no sync hint in the key pane:\n%s", size[0], size[1], joined)
		}
	}
	m.Update(tea.WindowSizeMsg{Width: 200, Height: 50})
	if _, lines := keyRows(t, m.View()); !strings.Contains(strings.Join(lines, "\n"), "sync runs every 5s: ○ lasts until then — lab sync pause to hold it") {
		t.Errorf("the full hint at 200x50:\n%s", strings.Join(lines, "\n"))
	}
	runLine(t, m, "lab sync pause")
	if _, lines := keyRows(t, m.View()); strings.Contains(strings.Join(lines, "\n"), "lab sync pause") {
		t.Errorf("a sync hint while sync is paused")
	}
}

// A down HSM and a destroyed one: each says so (destroyed is not down),
// its TLS is not connected and why, its key count is unknown, in the HSM
// pane, the compact summary, the grid and cluster hsm-info.
func TestDownAndDestroyedHSMs(t *testing.T) {
	// Over the TLS transport: the pane says why each HSM is not connected.
	m := newTestModelOn(t, "tls", 3, true, "")
	pump(t, m, m.refresh(), func() bool { return !m.refreshing && len(m.hsms) == 3 })
	runLine(t, m, "key generate-symmetric aes --label teaching-k --key-length-bytes 16")
	runLine(t, m, "lab hsm fail --hsm hsm-2")
	runLine(t, m, "lab hsm fail --hsm hsm-3 --destroy")
	pump(t, m, m.refresh(), func() bool {
		return !m.refreshing && len(m.hsms) == 3 && m.hsms[1].State == "down" && m.hsms[2].State == "destroyed"
	})
	m.Update(tea.WindowSizeMsg{Width: 160, Height: 45})
	v := m.View()
	hsmPane, _ := pane(v, " HSMs · ")
	text := strings.Join(hsmPane, "\n")
	for _, want := range []string{
		"hsm-2   ✗ down", "hsm-3   × destroyed",
		"TLS not connected: hsm-2 is down (lab hsm fail)",
		"TLS not connected: hsm-3 was destroyed (lab hsm fail --destroy)",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("HSM pane lacks %q:\n%s", want, text)
		}
	}
	for _, id := range []string{"hsm-2", "hsm-3"} {
		if row := lineWith(text, id+"   "); !strings.Contains(row, "keys ?") {
			t.Errorf("%s row %q: its key count is not unknown", id, row)
		}
	}
	rows, _ := keyRows(t, v)
	if len(rows) != 1 || !strings.Contains(rows[0], " - ×") {
		t.Errorf("grid row %q: want hsm-2 down (-) and hsm-3 destroyed (×)", rows)
	}
	// A short pane: one line an HSM, the TLS as a word.
	m.Update(tea.WindowSizeMsg{Width: 140, Height: 24})
	hsmPane, _ = pane(m.View(), " HSMs · ")
	if row := lineWith(strings.Join(hsmPane, "\n"), "hsm-3   "); !strings.Contains(row, "× destroyed") || !strings.Contains(row, "tls not connected") {
		t.Errorf("short HSM pane row %q", row)
	}
	// Compact: the summary line.
	m.Update(tea.WindowSizeMsg{Width: 100, Height: 30})
	v = m.View()
	if !strings.Contains(v, "✗ hsm-2:? down") || !strings.Contains(v, "× hsm-3:? destroyed") {
		t.Errorf("compact summary:\n%s", v)
	}
	// cluster hsm-info: null counts.
	m.Update(tea.WindowSizeMsg{Width: 160, Height: 120})
	runLine(t, m, "cluster hsm-info")
	v = m.View()
	if n := strings.Count(v, `"token-key-count": null`); n != 2 {
		t.Errorf("hsm-info shows %d unknown key counts, want 2:\n%s", n, v)
	}
}
