package shell

import (
	"strings"
	"testing"
	"time"

	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/x/ansi"
)

// Recalling a login whose password history masked, and pressing Enter,
// asks for the password (masked) instead of sending ****.
func TestRecalledMaskedPasswordAsksAgain(t *testing.T) {
	m := newTestModel(t, 3, false, t.TempDir())
	runLine(t, m, "login --username cu1 --role crypto-user --password cu1pass1")
	runLine(t, m, "logout")
	press(m, tea.KeyUp)
	press(m, tea.KeyUp)
	if got := m.input.Value(); got != "login --username cu1 --role crypto-user --password ****" {
		t.Fatalf("recalled %q", got)
	}
	cmd := press(m, tea.KeyEnter)
	if m.mode != modeSecret || m.running || !strings.Contains(m.View(), "Password: ") {
		pump(t, m, cmd, func() bool { return !m.running })
		t.Fatalf("the recalled line ran without asking for the password:\n%s", m.View())
	}
	typeLine(m, "cu1pass1")
	if v := m.View(); strings.Contains(v, "cu1pass1") {
		t.Errorf("password visible:\n%s", v)
	}
	pump(t, m, press(m, tea.KeyEnter), func() bool { return !m.running })
	if u, _, ok := m.env.Who(); !ok || u != "cu1" {
		t.Fatalf("login failed:\n%s", m.View())
	}
}

// A second Ctrl+R moves to an older match, past repeats of the same line.
func TestSecondCtrlRMovesOlder(t *testing.T) {
	m := newTestModel(t, 3, false, "")
	for _, l := range []string{"cluster hsm-info", "cluster list", "lab sync status", "cluster list"} {
		runLine(t, m, l)
	}
	press(m, tea.KeyCtrlR)
	typeLine(m, "cluster")
	if got := m.input.Value(); got != "cluster list" {
		t.Fatalf("first match %q", got)
	}
	press(m, tea.KeyCtrlR)
	if got := m.input.Value(); got != "cluster hsm-info" {
		t.Errorf("second Ctrl+R: %q, want the older cluster hsm-info", got)
	}
}

// After Ctrl+C clears a recalled line, ↑ starts from the newest entry.
func TestCtrlCAfterRecallRestartsHistory(t *testing.T) {
	m := newTestModel(t, 3, false, "")
	for _, l := range []string{"cluster hsm-info", "cluster list", "lab sync status"} {
		runLine(t, m, l)
	}
	press(m, tea.KeyUp)
	press(m, tea.KeyUp)
	if got := m.input.Value(); got != "cluster list" {
		t.Fatalf("Up Up: %q", got)
	}
	press(m, tea.KeyCtrlC)
	if m.input.Value() != "" {
		t.Fatal("Ctrl+C did not clear the line")
	}
	press(m, tea.KeyUp)
	if got := m.input.Value(); got != "lab sync status" {
		t.Errorf("Up after Ctrl+C: %q, want the newest line", got)
	}
}

// Tab fills the candidates' longest common prefix, and cycling shows the
// selected candidate in the line.
func TestTabCommonPrefixAndPreview(t *testing.T) {
	m := newTestModel(t, 3, false, "")
	typeLine(m, "key gen")
	press(m, tea.KeyTab)
	if got := m.input.Value(); got != "key generate-" {
		t.Errorf("Tab did not fill the common prefix: %q", got)
	}
	if !strings.Contains(m.View(), "generate-symmetric") {
		t.Errorf("no candidate list:\n%s", m.View())
	}
	press(m, tea.KeyTab)
	if got := m.input.Value(); got != "key generate-asymmetric-pair " {
		t.Errorf("cycling previews nothing: %q", got)
	}
	press(m, tea.KeyTab)
	if got := m.input.Value(); got != "key generate-file " {
		t.Errorf("second candidate: %q", got)
	}
	press(m, tea.KeyEsc)
	if got := m.input.Value(); got != "key generate-" {
		t.Errorf("Esc did not go back to what was typed: %q", got)
	}
}

// Typing on while the list is open takes nothing behind the user's back:
// no space of its own before the one they type.
func TestTabNoDoubleSpace(t *testing.T) {
	m := newTestModel(t, 3, false, "")
	typeLine(m, "key generate-")
	press(m, tea.KeyTab) // the list opens
	typeLine(m, "symmetric aes --")
	if got := m.input.Value(); got != "key generate-symmetric aes --" {
		t.Errorf("typed through an open list: %q", got)
	}
	// Taking a candidate where a space follows adds none.
	m.suggestions = nil
	m.input.SetValue("key generate-sym aes")
	m.input.SetCursor(len("key generate-sym"))
	press(m, tea.KeyTab)
	if got := m.input.Value(); got != "key generate-symmetric aes" {
		t.Errorf("candidate before a space: %q", got)
	}
}

// Completing after a half-typed value replaces it, and a value already
// given is not offered again.
func TestTabNoDuplicateWord(t *testing.T) {
	m := newTestModel(t, 3, true, "")
	runLine(t, m, "key generate-asymmetric-pair ec --public-label pub --private-label priv --curve secp256r1 --public-attributes verify=true --private-attributes sign=true")
	pump(t, m, m.refresh(), func() bool { return !m.refreshing })
	m.input.SetValue("")
	typeLine(m, "crypto sign ecdsa --key-filter attr.label=pri")
	press(m, tea.KeyTab)
	typeLine(m, "riv")
	press(m, tea.KeyTab)
	if got := m.input.Value(); strings.Count(got, "attr.label=priv") != 1 {
		t.Errorf("the word was duplicated: %q", got)
	}
	// A half-typed word with the cursor inside it is replaced whole.
	m.suggestions = nil
	m.input.SetValue("lab hsm recxyz")
	m.input.SetCursor(len("lab hsm rec"))
	press(m, tea.KeyTab)
	if got := m.input.Value(); got != "lab hsm recover " {
		t.Errorf("cursor inside a word: %q", got)
	}
}

// An error is printed once: its message, not the message and then the
// same text again in the JSON envelope.
func TestErrorPrintedOnce(t *testing.T) {
	m := newTestModel(t, 3, false, "")
	runLine(t, m, "key lst")
	v := m.View()
	if n := strings.Count(v, "unknown command"); n != 1 {
		t.Errorf("the error shows %d times:\n%s", n, v)
	}
}

// "press Ctrl+C again" does not pile up in the output.
func TestQuitHintDoesNotPileUp(t *testing.T) {
	m := newTestModel(t, 3, false, "")
	for range 3 {
		press(m, tea.KeyCtrlC)
		typeLine(m, "x")
		press(m, tea.KeyCtrlC) // clears the x
	}
	press(m, tea.KeyCtrlC)
	if n := strings.Count(m.View(), "press Ctrl+C again"); n != 1 {
		t.Errorf("the hint shows %d times:\n%s", n, m.View())
	}
	typeLine(m, "x")
	if strings.Contains(m.View(), "press Ctrl+C again") {
		t.Errorf("the hint outlived its moment:\n%s", m.View())
	}
}

// The status bar says user@cluster as the prompt does (it said
// admin@admin: the user and the role).
func TestStatusBarUserAtCluster(t *testing.T) {
	m := newTestModel(t, 3, false, "")
	runLine(t, m, "login --username admin --role admin --password adminpass")
	v := m.View()
	if !strings.Contains(v, "hsmsh [admin@cluster-local] > ") {
		t.Fatalf("prompt:\n%s", v)
	}
	lines := strings.Split(v, "\n")
	status := lines[len(lines)-1]
	if strings.Contains(status, "admin@admin") || !strings.Contains(status, "admin@cluster-local") {
		t.Errorf("status bar %q", status)
	}
}

// A password mismatch says so once.
func TestPasswordMismatchOneMessage(t *testing.T) {
	m := newTestModel(t, 3, false, "")
	runLine(t, m, "login --username admin --role admin --password adminpass")
	typeLine(m, "user create --username cu2 --role crypto-user")
	press(m, tea.KeyEnter)
	typeLine(m, "password1")
	press(m, tea.KeyEnter)
	typeLine(m, "password2")
	press(m, tea.KeyEnter)
	v := m.View()
	if !strings.Contains(v, "the two passwords differ") || strings.Contains(v, "password entry cancelled") {
		t.Errorf("mismatch messages:\n%s", v)
	}
}

// Ctrl+C during a slow command (4 s latency on each HSM, then a key
// generate) cancels it at once and says "cancelled", not an error chain.
func TestCtrlCCancelsSlowCommand(t *testing.T) {
	m := newTestModel(t, 3, true, "")
	for _, id := range []string{"hsm-1", "hsm-2", "hsm-3"} {
		runLine(t, m, "lab latency --ms 4000 --hsm "+id)
	}
	typeLine(m, "key generate-symmetric aes --label slow --key-length-bytes 16")
	cmd := press(m, tea.KeyEnter)
	if !m.running {
		t.Fatal("not running")
	}
	// Run the command in the background as bubbletea would.
	msgs := make(chan tea.Msg, 16)
	go func() {
		for _, c := range cmd().(tea.BatchMsg) {
			go func(c tea.Cmd) {
				if c != nil {
					msgs <- c()
				}
			}(c)
		}
	}()
	time.Sleep(300 * time.Millisecond)
	start := time.Now()
	press(m, tea.KeyCtrlC)
	if took := time.Since(start); m.running || took > 200*time.Millisecond {
		t.Fatalf("still running after Ctrl+C (%v):\n%s", took, m.View())
	}
	v := m.View()
	if !strings.Contains(v, "cancelled") || strings.Contains(v, "context canceled") {
		t.Errorf("after Ctrl+C:\n%s", v)
	}
	// The late result, when it comes, adds no error chain.
	deadline := time.After(30 * time.Second)
	for len(m.late) > 0 {
		select {
		case msg := <-msgs:
			if _, ok := msg.(resultMsg); ok {
				_, next := m.Update(msg)
				pump(t, m, next, func() bool { return !m.refreshing })
			}
		case <-deadline:
			t.Fatal("the cancelled command never returned")
		}
	}
	if v := m.View(); strings.Contains(v, "context canceled") || strings.Count(v, "✗ cancelled") != 1 {
		t.Errorf("after the late result:\n%s", v)
	}
	for _, id := range []string{"hsm-1", "hsm-2", "hsm-3"} {
		runLine(t, m, "lab latency --ms 0 --hsm "+id)
	}
}

// help is text to read, not JSON.
func TestHelpIsText(t *testing.T) {
	m := newTestModel(t, 3, false, "")
	m.Update(tea.WindowSizeMsg{Width: 140, Height: 100})
	runLine(t, m, "help")
	v := m.View()
	if strings.Contains(v, `"summary"`) || strings.Contains(v, `"error_code"`) || !strings.Contains(v, "key list") {
		t.Errorf("help:\n%s", v)
	}
	runLine(t, m, "help key list")
	v = m.View()
	if strings.Contains(v, `"flag"`) || !strings.Contains(v, "Usage: ") || !strings.Contains(v, "--filter") {
		t.Errorf("help key list:\n%s", v)
	}
}

// Long output lines wrap at spaces, not in the middle of a word (80×24).
func TestOutputWrapsAtWords(t *testing.T) {
	m := newTestModel(t, 3, false, "")
	m.Update(tea.WindowSizeMsg{Width: 80, Height: 24})
	words := strings.Repeat("wrapping ", 20)
	m.appendOut(words)
	for _, l := range strings.Split(m.View(), "\n") {
		for _, f := range strings.Fields(strings.Trim(ansi.Strip(l), "│ ")) {
			if len(f) >= 3 && strings.Contains("wrapping", f) && f != "wrapping" {
				t.Fatalf("a word broken: %q in %q", f, l)
			}
		}
	}
}

// The help overlay at 80×24 shows every line whole.
func TestHelpOverlayFits80x24(t *testing.T) {
	m := newTestModel(t, 3, false, "")
	m.Update(tea.WindowSizeMsg{Width: 80, Height: 24})
	press(m, tea.KeyF1)
	v := m.View()
	if strings.Contains(v, "…") || !strings.Contains(v, "press any key to return") || !strings.Contains(v, "quits") || !strings.Contains(v, "session key") {
		t.Errorf("help overlay at 80x24:\n%s", v)
	}
	if n := len(strings.Split(v, "\n")); n != 24 {
		t.Errorf("%d lines", n)
	}
}

// With no data folder (--ephemeral) the history is kept in memory; a
// login and logout must not lose it.
func TestInMemoryHistorySurvivesLogout(t *testing.T) {
	m := newTestModel(t, 3, false, "")
	runLine(t, m, "login --username cu1 --role crypto-user --password cu1pass1")
	runLine(t, m, "logout")
	press(m, tea.KeyUp)
	press(m, tea.KeyUp)
	if got := m.input.Value(); !strings.HasPrefix(got, "login --username cu1") {
		t.Errorf("Up Up after logout: %q", got)
	}
}
