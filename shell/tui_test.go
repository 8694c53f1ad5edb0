package shell

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/lipgloss"
	"github.com/charmbracelet/x/ansi"
	"github.com/muesli/termenv"

	"github.com/hsmsh/hsmsh/commands"
	"github.com/hsmsh/hsmsh/config"
	"github.com/hsmsh/hsmsh/themes"
)

func init() {
	// Plain text views: tests compare characters, not colour codes.
	lipgloss.SetColorProfile(termenv.Ascii)
}

// newTestModel opens an in-memory cluster, activates it, creates a crypto
// user cu1 and, when login is set, logs it in before the model starts.
func newTestModel(t testing.TB, hsms int, login bool, dataDir string) *Model {
	t.Helper()
	return newTestModelOn(t, "direct", hsms, login, dataDir)
}

// newTestModelOn is newTestModel with the embedded cluster's transport
// given: "tls" for the tests of the TLS pane.
func newTestModelOn(t testing.TB, transport string, hsms int, login bool, dataDir string) *Model {
	t.Helper()
	cfg := config.Default()
	if err := cfg.Set("cluster.hsms", strconv.Itoa(hsms), config.SourceFlag); err != nil {
		t.Fatal(err)
	}
	if err := cfg.Set("cluster.transport", transport, config.SourceFlag); err != nil {
		t.Fatal(err)
	}
	env, err := commands.Open(cfg, "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { env.Close(context.Background()) })
	r := commands.NewRunner(env)
	for _, line := range []string{
		"lab sync pause",
		"cluster activate --password adminpass",
		"login --username admin --role admin --password adminpass",
		"user create --username cu1 --role crypto-user --password cu1pass1",
		"logout",
	} {
		if res, _ := r.RunLine(context.Background(), line); !res.OK() {
			t.Fatalf("%s: %v", line, res.Data)
		}
	}
	if login {
		if res, _ := r.RunLine(context.Background(), "login --username cu1 --role crypto-user --password cu1pass1"); !res.OK() {
			t.Fatal(res.Data)
		}
	}
	th, _ := themes.Builtin("mono")
	m := NewModel(env, r, th, dataDir)
	pump(t, m, m.Init(), func() bool { return !m.refreshing })
	t.Cleanup(func() {
		if m.evCancel != nil {
			m.evCancel()
		}
	})
	m.Update(tea.WindowSizeMsg{Width: 140, Height: 45})
	return m
}

// inbox collects the messages of commands started by pump, for every
// model: a command that finishes after one pump returned (the event
// follower) is delivered by the next.
var inbox = map[*Model]chan tea.Msg{}

// pump runs a command the model returned and feeds its messages back,
// until until() holds or the deadline passes. Commands that block (the
// event follower) keep running in the background.
func pump(t testing.TB, m *Model, cmd tea.Cmd, until func() bool) {
	t.Helper()
	msgs, ok := inbox[m]
	if !ok {
		msgs = make(chan tea.Msg, 1024)
		inbox[m] = msgs
	}
	var start func(c tea.Cmd)
	start = func(c tea.Cmd) {
		if c == nil {
			return
		}
		go func() {
			msg := c()
			if b, ok := msg.(tea.BatchMsg); ok {
				for _, sub := range b {
					start(sub)
				}
				return
			}
			if msg != nil {
				msgs <- msg
			}
		}()
	}
	start(cmd)
	deadline := time.After(20 * time.Second)
	for {
		// Deliver whatever has arrived before judging the condition.
		select {
		case msg := <-msgs:
			if _, isTick := msg.(tickMsg); isTick {
				continue // one tick loop is enough; tests drive refreshes
			}
			_, next := m.Update(msg)
			start(next)
			continue
		default:
		}
		if until() {
			return
		}
		select {
		case msg := <-msgs:
			if _, isTick := msg.(tickMsg); isTick {
				continue
			}
			_, next := m.Update(msg)
			start(next)
		case <-deadline:
			t.Fatalf("timed out; screen:\n%s", m.View())
		}
	}
}

func typeLine(m *Model, s string) {
	for _, r := range s {
		if r == ' ' {
			m.Update(tea.KeyMsg{Type: tea.KeySpace, Runes: []rune{' '}})
			continue
		}
		m.Update(tea.KeyMsg{Type: tea.KeyRunes, Runes: []rune{r}})
	}
}

func press(m *Model, k tea.KeyType) tea.Cmd {
	_, cmd := m.Update(tea.KeyMsg{Type: k})
	return cmd
}

// runLine types a line, presses Enter and waits for its result.
func runLine(t testing.TB, m *Model, line string) {
	t.Helper()
	typeLine(m, line)
	cmd := press(m, tea.KeyEnter)
	pump(t, m, cmd, func() bool { return !m.running && !m.refreshing })
}

func TestTypeCommandSeeResult(t *testing.T) {
	m := newTestModel(t, 3, false, "")
	m.Update(tea.WindowSizeMsg{Width: 140, Height: 140}) // room for the echo and the result (raft too)
	runLine(t, m, "cluster hsm-info")
	v := m.View()
	for _, want := range []string{"hsmsh > cluster hsm-info", `"id": "hsm-3"`, `"state": "active"`} {
		if !strings.Contains(v, want) {
			t.Errorf("screen lacks %q:\n%s", want, v)
		}
	}
	runLine(t, m, "key lst")
	if v := m.View(); !strings.Contains(v, `✗ unknown command "lst" after "key"`) {
		t.Errorf("error not shown:\n%s", v)
	}
}

func TestKeyAppearsInPane(t *testing.T) {
	m := newTestModel(t, 3, true, "")
	if strings.Contains(m.View(), "teachkey") {
		t.Fatal("key shown before it exists")
	}
	runLine(t, m, "key generate-symmetric aes --label teachkey --key-length-bytes 16")
	// A refresh that an event started while the key was still being
	// copied may be in flight; the pane converges on the next one.
	full := func() bool {
		if len(m.keys) != 1 {
			return false
		}
		for _, has := range m.keys[0].Holders {
			if !has {
				return false
			}
		}
		return true
	}
	deadline := time.Now().Add(10 * time.Second)
	for pump(t, m, m.refresh(), func() bool { return len(m.keys) == 1 && !m.refreshing }); !full(); pump(t, m, m.refresh(), func() bool { return !m.refreshing }) {
		if time.Now().After(deadline) {
			t.Fatalf("the key pane never showed the key on every HSM: %+v", m.keys)
		}
	}
	v := m.View()
	row := lineWith(v, "teachkey")
	if row == "" || !strings.Contains(row, "3/3") || strings.Count(row, "◆")+strings.Count(row, "●") != 3 {
		t.Errorf("key row %q; screen:\n%s", row, v)
	}
}

func lineWith(screen, s string) string {
	for _, l := range strings.Split(screen, "\n") {
		if strings.Contains(l, s) {
			return l
		}
	}
	return ""
}

func TestHSMFailChangesColumn(t *testing.T) {
	m := newTestModel(t, 3, true, "")
	runLine(t, m, "key generate-symmetric aes --label k1 --key-length-bytes 16")
	runLine(t, m, "lab hsm fail --hsm hsm-2")
	pump(t, m, m.refresh(), func() bool { return len(m.hsms) == 3 && m.hsms[1].State == "down" })
	v := m.View()
	if row := lineWith(v, "hsm-2   "); !strings.Contains(row, "✗ down") {
		t.Errorf("hsm-2 row %q:\n%s", row, v)
	}
	row := lineWith(v, "k1 ")
	// hsm-2's cell shows it down, and coverage counts the two that answer.
	if !strings.Contains(row, "● - ") && !strings.Contains(row, "◆ - ") || !strings.Contains(row, "2/3") {
		t.Errorf("key row after fail %q", row)
	}
	// The event log shows it, newest first.
	pump(t, m, nil, func() bool { return len(m.events) > 0 && m.events[0].Kind == "hsm-down" })
	if v := m.View(); !strings.Contains(v, "hsm-down hsm-2") {
		t.Errorf("event log lacks hsm-down:\n%s", v)
	}
}

func TestCompletionCandidates(t *testing.T) {
	m := newTestModel(t, 3, false, "")
	typeLine(m, "key gen")
	press(m, tea.KeyTab)
	v := m.View()
	for _, want := range []string{"generate-symmetric", "generate-asymmetric-pair", "generate-file"} {
		if !strings.Contains(v, want) {
			t.Errorf("candidates lack %q:\n%s", want, v)
		}
	}
	// The first Tab filled the common prefix; Tab again selects a
	// candidate (shown in the line), and again moves on; Enter takes it.
	if got := m.input.Value(); got != "key generate-" {
		t.Errorf("common prefix: %q", got)
	}
	press(m, tea.KeyTab)
	press(m, tea.KeyTab)
	press(m, tea.KeyEnter)
	if got := m.input.Value(); got != "key generate-file " {
		t.Errorf("after choosing: %q", got)
	}
	// A single candidate is taken at once.
	m.input.SetValue("")
	typeLine(m, "lab hsm rec")
	press(m, tea.KeyTab)
	if got := m.input.Value(); got != "lab hsm recover " {
		t.Errorf("single candidate: %q", got)
	}
}

func TestHistoryRecall(t *testing.T) {
	dir := t.TempDir()
	m := newTestModel(t, 3, false, dir)
	runLine(t, m, "cluster hsm-info")
	runLine(t, m, "user list")
	press(m, tea.KeyUp)
	if got := m.input.Value(); got != "user list" {
		t.Errorf("Up: %q", got)
	}
	press(m, tea.KeyUp)
	if got := m.input.Value(); got != "cluster hsm-info" {
		t.Errorf("Up Up: %q", got)
	}
	press(m, tea.KeyDown)
	press(m, tea.KeyDown)
	if got := m.input.Value(); got != "" {
		t.Errorf("back down: %q", got)
	}
	// Ctrl+R finds an older line.
	press(m, tea.KeyCtrlR)
	typeLine(m, "hsm-")
	press(m, tea.KeyEnter)
	if got := m.input.Value(); got != "cluster hsm-info" {
		t.Errorf("Ctrl+R: %q", got)
	}
	// Persisted, 0600.
	p := historyPath(dir, "cluster-local", "")
	st, err := os.Stat(p)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("history file %s: %v %v", p, err, st)
	}
}

func TestPasswordRedaction(t *testing.T) {
	dir := t.TempDir()
	m := newTestModel(t, 3, false, dir)
	runLine(t, m, "login --username cu1 --role crypto-user --password cu1pass1")
	if v := m.View(); strings.Contains(v, "cu1pass1") || !strings.Contains(v, "--password ****") {
		t.Errorf("password on screen:\n%s", v)
	}
	runLine(t, m, "logout")
	// Without --password the shell asks in a masked field.
	typeLine(m, "login --username cu1 --role crypto-user")
	press(m, tea.KeyEnter)
	if m.mode != modeSecret || !strings.Contains(m.View(), "Password: ") {
		t.Fatalf("no password prompt:\n%s", m.View())
	}
	typeLine(m, "cu1pass1")
	if v := m.View(); strings.Contains(v, "cu1pass1") {
		t.Errorf("typed password visible:\n%s", v)
	}
	pump(t, m, press(m, tea.KeyEnter), func() bool { return !m.running })
	if u, _, ok := m.env.Who(); !ok || u != "cu1" {
		t.Fatalf("masked login failed:\n%s", m.View())
	}
	// Nothing secret in either history file.
	for _, user := range []string{"", "cu1"} {
		b, _ := os.ReadFile(historyPath(dir, "cluster-local", user))
		if strings.Contains(string(b), "cu1pass1") {
			t.Errorf("history of %q holds the password: %s", user, b)
		}
	}
	entries, _ := filepath.Glob(filepath.Join(dir, "history", "*", "*"))
	if len(entries) == 0 {
		t.Error("no history written")
	}
}

func TestResizeSmallTerminal(t *testing.T) {
	m := newTestModel(t, 3, true, "")
	runLine(t, m, "key generate-symmetric aes --label k1 --key-length-bytes 16")
	for _, size := range [][2]int{{80, 24}, {140, 45}, {60, 15}} {
		m.Update(tea.WindowSizeMsg{Width: size[0], Height: size[1]})
		v := m.View()
		lines := strings.Split(v, "\n")
		if len(lines) != size[1] {
			t.Errorf("%dx%d: %d lines", size[0], size[1], len(lines))
		}
		for i, l := range lines {
			if w := ansi.StringWidth(l); w > size[0] {
				t.Errorf("%dx%d: line %d is %d wide: %q", size[0], size[1], i, w, l)
			}
		}
		if !strings.Contains(v, "hsmsh [cu1@cluster-local] > ") {
			t.Errorf("%dx%d: prompt missing", size[0], size[1])
		}
	}
	// 80×24 keeps the key grid (compact layout) and a summary line.
	m.Update(tea.WindowSizeMsg{Width: 80, Height: 24})
	if v := m.View(); !strings.Contains(v, " Keys (") || !strings.Contains(v, "hsm-1:1") {
		t.Errorf("80x24 layout:\n%s", v)
	}
	// Ctrl+L hides the panes entirely, and brings them back.
	press(m, tea.KeyCtrlL)
	if v := m.View(); strings.Contains(v, "hsm-1:1") || strings.Contains(v, " Keys (") {
		t.Errorf("panes still shown after Ctrl+L")
	}
	press(m, tea.KeyCtrlL)
	if v := m.View(); !strings.Contains(v, " Keys (") {
		t.Errorf("Ctrl+L again did not bring the grid back:\n%s", v)
	}
}

func TestCtrlCTwiceQuits(t *testing.T) {
	m := newTestModel(t, 3, false, "")
	if cmd := press(m, tea.KeyCtrlC); cmd != nil {
		t.Fatal("first Ctrl+C quit at once")
	}
	if !strings.Contains(m.View(), "press Ctrl+C again") {
		t.Error("no hint after the first Ctrl+C")
	}
	cmd := press(m, tea.KeyCtrlC)
	if cmd == nil {
		t.Fatal("second Ctrl+C did not quit")
	}
	if _, ok := cmd().(tea.QuitMsg); !ok {
		t.Error("second Ctrl+C did not return tea.Quit")
	}
}

// The HSM pane shows each HSM's nested TLS connection: on the embedded
// default, a real handshake on both layers; with transport = "direct",
// that there is none.
func TestHSMPaneShowsTLS(t *testing.T) {
	m := newTestModelOn(t, "tls", 3, false, "")
	pump(t, m, m.refresh(), func() bool { return len(m.hsms) == 3 })
	v := m.View()
	for _, id := range []string{"hsm-1", "hsm-2", "hsm-3"} {
		row := lineWith(v, id+" ") // "hsm-1 ★" on the leader's
		if !strings.Contains(row, "in-process (pipe)") {
			t.Errorf("%s row %q lacks its address:\n%s", id, row, v)
		}
	}
	if n := strings.Count(v, "TLS outer ok · inner ok · TLS 1.3"); n != 3 {
		t.Errorf("%d HSMs show both TLS layers ok, want 3:\n%s", n, v)
	}
	// A small terminal keeps a line per HSM and says "tls ok" on it.
	m.Update(tea.WindowSizeMsg{Width: 140, Height: 24})
	v = m.View()
	for _, id := range []string{"hsm-1", "hsm-2", "hsm-3"} {
		if row := lineWith(v, id+" "); !strings.Contains(row, "tls ok") {
			t.Errorf("%s row %q in a small pane:\n%s", id, row, v)
		}
	}
}

// The default transport calls the HSMs in-process, and the HSM pane says
// so plainly: no TLS layer, and how to have one.
func TestHSMPaneSaysInProcess(t *testing.T) {
	m := newTestModel(t, 3, false, "")
	pump(t, m, m.refresh(), func() bool { return len(m.hsms) == 3 })
	m.Update(tea.WindowSizeMsg{Width: 260, Height: 45})
	v := m.View()
	if n := strings.Count(v, "TLS none: in-process calls through the HSM's door"); n != 3 {
		t.Errorf("%d HSMs say they are called in-process, want 3:\n%s", n, v)
	}
	if strings.Contains(v, "tls ok") || strings.Contains(v, "TLS outer") {
		t.Errorf("the in-process default shows a TLS layer:\n%s", v)
	}
	m.Update(tea.WindowSizeMsg{Width: 140, Height: 24})
	v = m.View()
	for _, id := range []string{"hsm-1", "hsm-2", "hsm-3"} {
		if row := lineWith(v, id+" "); !strings.Contains(row, "no tls") {
			t.Errorf("%s row %q in a small pane", id, row)
		}
	}
}

// A pending quorum token shows in its own pane, with what it approves.
func TestQuorumTokenPane(t *testing.T) {
	m := newTestModel(t, 3, false, "")
	runLine(t, m, "login --username admin --role admin --password adminpass")
	if strings.Contains(m.View(), "Quorum tokens") {
		t.Fatal("a token pane with no tokens")
	}
	dir := t.TempDir()
	runLine(t, m, "quorum token-sign generate --service user --token "+dir+"/t.json --command 'user delete --username cu1 --role crypto-user'")
	pump(t, m, m.refresh(), func() bool { return len(m.tokens) == 1 })
	v := m.View()
	if !strings.Contains(v, "Quorum tokens (1)") {
		t.Fatalf("no token pane:\n%s", v)
	}
	row := lineWith(v, "user            admin")
	// 1200 s of life (600 + 600), less the seconds the refresh took: a
	// loaded machine (CI with the race detector) takes a few.
	if !strings.Contains(row, "user delete --username cu") || !regexp.MustCompile(`\b1(1[89][0-9]|200)s\b`).MatchString(row) {
		t.Errorf("token row %q:\n%s", row, v)
	}
}

// The status bar shows how long the login session has left.
func TestStatusBarShowsSessionLifetime(t *testing.T) {
	m := newTestModel(t, 3, true, "")
	status := lineWith(m.View(), "cu1@cluster-local · crypto-user")
	if !strings.Contains(status, "· session 59m") || !strings.Contains(status, "s left") {
		t.Errorf("status bar %q", status)
	}
	runLine(t, m, "logout")
	if v := m.View(); strings.Contains(v, "s left") {
		t.Errorf("a session lifetime after logout:\n%s", lineWith(v, "not logged in"))
	}
}

// compare shows a clone's keys beside the source's: a key made after the
// backup is missing there (○) until key replicate copies it (●).
// cloneDR clones the shell's cluster as dr (2 HSMs) from a backup and
// logs cu1 in to both.
func cloneDR(t *testing.T, m *Model) {
	t.Helper()
	backup := filepath.Join(t.TempDir(), "b.hsmbak")
	for _, line := range []string{
		"login --username admin --role admin --password adminpass",
		"cluster backup create --backup-password backuppass1 --file " + backup,
		"logout",
		"cluster clone --backup " + backup + " --id dr --hsms 2 --backup-password backuppass1",
		"login --username cu1 --role crypto-user --password cu1pass1",
		"login --cluster-id dr --username cu1 --role crypto-user --password cu1pass1",
	} {
		runLine(t, m, line)
	}
}

func TestCompareClusters(t *testing.T) {
	m := newTestModel(t, 3, false, "")
	m.Update(tea.WindowSizeMsg{Width: 160, Height: 50})
	cloneDR(t, m)
	runLine(t, m, "key generate-symmetric aes --label teach --key-length-bytes 16")
	runLine(t, m, "compare dr")
	pump(t, m, m.refresh(), func() bool { return !m.refreshing && m.cmp != nil })
	v := m.View()
	if !strings.Contains(v, "Keys (1) · cluster-local | dr") || !strings.Contains(v, "HSMs · cluster-local") {
		t.Fatalf("pane titles do not name the clusters:\n%s", v)
	}
	// The key pane's part of the line: from the label to the pane's edge.
	pane := func(screen string) string {
		row := lineWith(screen, "teach ")
		row = row[strings.Index(row, "teach "):]
		return strings.TrimSuffix(strings.TrimRight(row, " "), "│")
	}
	row := pane(v)
	left, right, ok := strings.Cut(row, "│")
	if !ok || strings.Count(left, "○") != 0 || strings.Count(right, "○") != 2 || strings.Count(right, "●") != 0 {
		t.Fatalf("before replicate, row %q; screen:\n%s", row, v)
	}
	runLine(t, m, "key replicate --filter attr.label=teach --source-cluster-id cluster-local --destination-cluster-id dr")
	pump(t, m, m.refresh(), func() bool { return !m.refreshing })
	row = pane(m.View())
	if _, right, _ := strings.Cut(row, "│"); strings.Count(right, "●")+strings.Count(right, "◆") != 2 {
		t.Errorf("after replicate, row %q", row)
	}
	// use-cluster: the prompt and the panes follow.
	runLine(t, m, "use-cluster dr")
	if v := m.View(); !strings.Contains(v, "hsmsh [cu1@dr] > ") || !strings.Contains(v, "HSMs · dr") {
		t.Errorf("after use-cluster:\n%s", v)
	}
}
