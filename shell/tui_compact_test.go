package shell

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
	"testing"

	tea "github.com/charmbracelet/bubbletea"
)

// Below 110 columns the output and the events share the space under the
// grid as two tabs: the output's title counts the events that came, and
// Ctrl+T shows them (at 100×30, a size the issue names).
func TestCompactEventsTab(t *testing.T) {
	m := newTestModel(t, 3, true, "")
	m.Update(tea.WindowSizeMsg{Width: 100, Height: 30})
	runLine(t, m, "lab hsm fail --hsm hsm-2")
	pump(t, m, nil, func() bool { return m.unseenEvents > 0 })
	v := m.View()
	checkFrame(t, v, 100, 30)
	if out, _ := pane(v, "Output · Events ("); out == nil {
		t.Fatalf("the output tab does not count new events:\n%s", v)
	}
	press(m, tea.KeyCtrlT)
	v = m.View()
	checkFrame(t, v, 100, 30)
	ev, _ := pane(v, "Events · Output: Ctrl+T")
	if !strings.Contains(strings.Join(ev, "\n"), "hsm-down hsm-2") {
		t.Fatalf("the events tab:\n%s", v)
	}
	if rows, _ := pane(v, " Keys ("); rows == nil {
		t.Errorf("the grid went with the events tab:\n%s", v)
	}
	press(m, tea.KeyCtrlT)
	if v := m.View(); !strings.Contains(v, "Output · Events: Ctrl+T") {
		t.Errorf("back on the output, the events seen are still counted:\n%s", v)
	}
}

// The event log names a key by its label, then its reference.
func TestEventsNameKeysByLabel(t *testing.T) {
	m := newTestModel(t, 3, true, "")
	runLine(t, m, "key generate-symmetric aes --label evkey --key-length-bytes 16")
	pump(t, m, nil, func() bool { return strings.Contains(m.View(), "key-replicated") })
	ev, _ := pane(m.View(), " Events ")
	text := strings.Join(ev, "\n")
	for _, kind := range []string{"key-created", "key-replicated"} {
		if !strings.Contains(text, kind+" hsm-") || !regexpMatch(`(?m)`+kind+` hsm-\d evkey 0x[0-9a-f]{16}`, text) {
			t.Errorf("%s does not name evkey:\n%s", kind, text)
		}
	}
	// A key that never reached a snapshot (made on one HSM, then
	// cleaned up): its label comes from its key-created event, and
	// names it in the cleanup's event too.
	runLine(t, m, "lab hsm fail --hsm hsm-2")
	runLine(t, m, "lab hsm fail --hsm hsm-3")
	runLine(t, m, "key generate-symmetric aes --label gone --key-length-bytes 16")
	pump(t, m, nil, func() bool { return strings.Contains(m.View(), "cleanup-done") })
	ev, _ = pane(m.View(), " Events ")
	text = strings.Join(ev, "\n")
	for _, kind := range []string{"key-created", "cleanup-done"} {
		if !regexpMatch(`(?m)`+kind+` hsm-1 gone 0x[0-9a-f]{16}`, text) {
			t.Errorf("%s does not name gone:\n%s", kind, text)
		}
	}
}

// The side-by-side key pane (compare) sizes itself as the grid does: at
// 80×24 and at 110×40 both clusters' marks show on every row, labels are
// whole when there is room, the newest key is first, and a line says
// what is below. Before, labels were cut at 14 cells and at 110 columns
// the clone's column fell off the pane.
func TestCompareViewSizing(t *testing.T) {
	m := newTestModel(t, 3, false, "")
	cloneDR(t, m)
	for i := range 12 {
		runLine(t, m, fmt.Sprintf("key generate-symmetric aes --label teaching-key-number-%02d --key-length-bytes 16", i))
	}
	runLine(t, m, "compare dr")
	pump(t, m, m.refresh(), func() bool { return !m.refreshing && m.cmp != nil })
	for _, size := range [][2]int{{80, 24}, {110, 40}, {160, 45}} {
		m.Update(tea.WindowSizeMsg{Width: size[0], Height: size[1]})
		v := m.View()
		checkFrame(t, v, size[0], size[1])
		lines, _ := pane(v, " Keys (12) · cluster-local | dr")
		var rows []string
		for _, l := range lines {
			if strings.HasPrefix(l, "teaching") {
				rows = append(rows, l)
			}
		}
		if len(rows) == 0 {
			t.Fatalf("%v: no rows:\n%s", size, v)
		}
		if !strings.HasPrefix(rows[0], "teaching-key-number-11 ") {
			t.Errorf("%v: the newest key is not first: %q", size, rows[0])
		}
		for _, r := range rows {
			_, right, ok := strings.Cut(r, "│")
			if !ok || strings.Count(right, "○") != 2 {
				t.Errorf("%v: row without the clone's two marks: %q\n%s", size, r, v)
			}
			if !regexpMatch(`^teaching-key-number-\d\d `, r) {
				t.Errorf("%v: label cut: %q", size, r)
			}
		}
		if len(rows) < 12 && !strings.Contains(strings.Join(lines, "\n"), fmt.Sprintf("↓ %d more below", 12-len(rows))) {
			t.Errorf("%v: %d rows shown and no more-below line:\n%s", size, len(rows), v)
		}
	}
}

func regexpMatch(re, s string) bool { return regexp.MustCompile(re).MatchString(s) }

// A long command line wraps at spaces only, never inside a flag such as
// --hash-function (ansi.Wrap alone breaks after any hyphen).
func TestOutputKeepsHyphenatedWords(t *testing.T) {
	m := newTestModel(t, 3, false, "")
	m.Update(tea.WindowSizeMsg{Width: 100, Height: 30})
	m.appendOut(strings.Repeat("x", 85) + " --hash-function sha256")
	out, _ := pane(m.View(), "Output")
	text := strings.Join(out, "\n")
	if strings.Contains(text, "hash-\n") || !strings.Contains(text, "\n--hash-function sha256") {
		t.Errorf("a flag broken at its hyphen:\n%s", text)
	}
}

// A refresh that fails (one racing an HSM's rejoin said "hsm-2 belongs
// to no domain") keeps the last keys on screen, shows no internal error
// and tries again at the next tick; only a failure that persists is said,
// as keys of the last good refresh. At 110×40 and at 100×30.
func TestFailedRefreshKeepsLastKeys(t *testing.T) {
	for _, size := range [][2]int{{110, 40}, {100, 30}} {
		m := newTestModel(t, 3, true, "")
		m.Update(tea.WindowSizeMsg{Width: size[0], Height: size[1]})
		runLine(t, m, "key generate-symmetric aes --label keep --key-length-bytes 16")
		pump(t, m, m.refresh(), func() bool { return !m.refreshing })
		if keyRow(m.View(), "keep") == "" {
			t.Fatalf("%v: no key:\n%s", size, m.View())
		}
		fail := snapshotMsg{hsms: m.hsms, err: errors.New("invalid request: hsm-2 belongs to no domain"), who: whoOf(m.env)}
		m.Update(fail)
		v := m.View()
		if keyRow(v, "keep") == "" || !strings.Contains(v, "Keys (1)") || strings.Contains(v, "no domain") {
			t.Errorf("%v: after one failed refresh:\n%s", size, v)
		}
		if !m.dirty {
			t.Errorf("%v: a failed refresh is not tried again", size)
		}
		m.Update(fail)
		m.Update(fail)
		v = m.View()
		lines, _ := pane(v, " Keys (1)")
		text := strings.Join(strings.Fields(strings.Join(lines, " ")), " ") // the note wraps
		if keyRow(v, "keep") == "" || !strings.Contains(text, "keys as of") || !strings.Contains(text, "refresh failing: invalid request: hsm-2 belongs to no domain") {
			t.Errorf("%v: a failure that persists is not said:\n%s", size, v)
		}
		pump(t, m, m.refresh(), func() bool { return !m.refreshing })
		if v := m.View(); strings.Contains(v, "refresh failing") {
			t.Errorf("%v: still failing after a good refresh:\n%s", size, v)
		}
		// Another user's failed refresh does not keep cu1's keys.
		runLine(t, m, "logout")
		m.Update(snapshotMsg{hsms: m.hsms, err: errors.New("x"), who: "admin@cluster-local"})
		if len(m.keys) != 0 {
			t.Errorf("%v: keys kept for another user: %d", size, len(m.keys))
		}
	}
}

// A session key shows · on the HSMs that do not hold it, not the ○ that
// sync would fill: it never syncs.
func TestSessionKeyNeverMissing(t *testing.T) {
	m := newTestModel(t, 3, true, "")
	m.Update(tea.WindowSizeMsg{Width: 100, Height: 30})
	runLine(t, m, "key generate-symmetric aes --label ses --key-length-bytes 16 --session")
	pump(t, m, m.refresh(), func() bool { return !m.refreshing })
	row := keyRow(m.View(), "ses")
	if strings.Count(row, "●") != 1 || strings.Count(row, "·") != 2 || strings.Contains(row, "○") || strings.Contains(row, "!") {
		t.Errorf("session key row %q:\n%s", row, m.View())
	}
}

// The leader of the domain state's consensus group is marked: ★ after
// its id in the HSM pane (whose title says what ★ means), ★ for its ● in
// the compact summary. When it fails, the others elect a new one: the
// event log says so, and the mark moves.
func TestLeaderMarked(t *testing.T) {
	m := newTestModel(t, 3, false, "")
	m.Update(tea.WindowSizeMsg{Width: 120, Height: 40})
	leader := func() string {
		for _, x := range m.hsms {
			if x.Raft != nil && x.Raft.Role == "leader" {
				return x.ID
			}
		}
		return ""
	}
	pump(t, m, m.refresh(), func() bool { return !m.refreshing && leader() == "hsm-1" })
	v := m.View()
	checkFrame(t, v, 120, 40)
	hsmPane, _ := pane(v, " HSMs · cluster-local · ★ leader ")
	text := strings.Join(hsmPane, "\n")
	if !strings.Contains(text, "hsm-1 ★ ● active") || strings.Count(text, "★") != 1 {
		t.Errorf("the HSM pane does not mark hsm-1 alone:\n%s", v)
	}
	m.Update(tea.WindowSizeMsg{Width: 80, Height: 24})
	v = m.View()
	checkFrame(t, v, 80, 24)
	if !strings.Contains(v, " ★ hsm-1:0  ● hsm-2:0  ● hsm-3:0 ") {
		t.Errorf("compact summary:\n%s", v)
	}

	// The leader fails; a wrong password is a change to the domain state,
	// made once the others have elected a leader.
	runLine(t, m, "lab hsm fail --hsm hsm-1")
	runLine(t, m, "login --username cu1 --role crypto-user --password wrongpass1")
	m.Update(tea.WindowSizeMsg{Width: 160, Height: 45}) // event lines whole
	pump(t, m, m.refresh(), func() bool {
		return !m.refreshing && leader() != "" && leader() != "hsm-1" && strings.Contains(m.View(), "leader-elected")
	})
	v = m.View()
	hsmPane, _ = pane(v, " HSMs · cluster-local · ★ leader ")
	if text := strings.Join(hsmPane, "\n"); !strings.Contains(text, leader()+" ★ ● active") || strings.Count(text, "★") != 1 {
		t.Errorf("the HSM pane after the election:\n%s", v)
	}
	ev, _ := pane(v, " Events ")
	if text := strings.Join(ev, "\n"); !regexpMatch(`(?m)leader-elected `+leader()+` leads the domain state \(term \d+\)`, text) || !strings.Contains(text, "leader-lost ") {
		t.Errorf("the event log after the election:\n%s", v)
	}
}
