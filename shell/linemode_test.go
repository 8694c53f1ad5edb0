package shell

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hsmsh/hsmsh/internal/syncbuf"

	"github.com/hsmsh/hsmsh/commands"
	"github.com/hsmsh/hsmsh/shell/completion"
)

// syncBuffer is a buffer one goroutine writes while the test reads it.
type syncBuffer = syncbuf.Buffer

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A Ctrl+C (SIGINT) at line mode's prompt must not cancel every later
// command: it used to cancel the context all commands ran under.
func TestLineModeInterruptDoesNotPoisonLaterCommands(t *testing.T) {
	t.Setenv("XDG_CONFIG_HOME", t.TempDir())
	t.Setenv("HSMSH_CONFIG", "")
	// Keep this test process alive whatever hsmsh does with SIGINT.
	guard := make(chan os.Signal, 4)
	signal.Notify(guard, os.Interrupt)
	defer signal.Stop(guard)

	inR, inW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer inR.Close()
	var stdout, stderr syncBuffer
	done := make(chan int, 1)
	go func() { done <- Main([]string{"--ephemeral", "interactive", "--line"}, inR, &stdout, &stderr) }()

	io.WriteString(inW, "cluster hsm-info\n")
	waitFor(t, "the first result", func() bool { return strings.Count(stdout.String(), `"hsm-3"`) == 1 })
	syscall.Kill(os.Getpid(), syscall.SIGINT) // Ctrl+C at the empty prompt
	time.Sleep(200 * time.Millisecond)
	io.WriteString(inW, "cluster hsm-info\n")
	waitFor(t, "the second result", func() bool {
		out := stdout.String()
		return strings.Count(out, `"hsm-3"`) == 2 || strings.Contains(out, "cancelled")
	})
	inW.Close()
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		t.Fatal("line mode did not end at the end of its input")
	}
	if out := stdout.String(); strings.Contains(out, "cancelled") {
		t.Errorf("a command after Ctrl+C was cancelled:\n%s\nstderr:\n%s", out, stderr.String())
	}
}

// Ctrl+C while a slow command runs cancels that command only, says so at
// once, and the next command runs.
func TestLineModeInterruptCancelsRunningCommand(t *testing.T) {
	m := newTestModel(t, 3, true, "")
	inR, inW := io.Pipe()
	var out, errOut syncBuffer
	intr := make(chan os.Signal, 1)
	s := newLineShell(m.runner, "", inR, &out, &errOut, -1, false, intr)
	done := make(chan int, 1)
	go func() { done <- s.loop(context.Background()) }()

	for _, id := range []string{"hsm-1", "hsm-2", "hsm-3"} {
		io.WriteString(inW, "lab latency --ms 2000 --hsm "+id+"\n")
	}
	waitFor(t, "latency set", func() bool { return strings.Count(out.String(), `"error_code": 0`) == 3 })
	io.WriteString(inW, "key generate-symmetric aes --label slow --key-length-bytes 16\n")
	time.Sleep(300 * time.Millisecond)
	start := time.Now()
	intr <- os.Interrupt
	waitFor(t, "cancelled", func() bool { return strings.Contains(out.String(), `"data": "cancelled"`) })
	if took := time.Since(start); took > 200*time.Millisecond {
		t.Errorf("cancelling took %v", took)
	}
	for _, id := range []string{"hsm-1", "hsm-2", "hsm-3"} {
		io.WriteString(inW, "lab latency --ms 0 --hsm "+id+"\n")
	}
	io.WriteString(inW, "cluster list\n")
	inW.Close()
	<-done
	if s.late != nil { // let the cancelled command end before the cluster closes
		select {
		case <-s.late:
		case <-time.After(30 * time.Second):
			t.Fatal("the cancelled command never returned")
		}
	}
	got := out.String()
	if strings.Count(got, "cancelled") != 1 || strings.Contains(got, "context canceled") {
		t.Errorf("output:\n%s", got)
	}
	if !strings.Contains(got, "cluster-local") {
		t.Errorf("the command after the cancel did not run:\n%s", got)
	}
}

// The status line reads like the full-screen status bar.
func TestLineModeStatusLine(t *testing.T) {
	m := newTestModel(t, 3, true, "")
	got := statusLine(m.env)
	if strings.Contains(got, "check true") || strings.Contains(got, "check false") ||
		!strings.Contains(got, "cu1@cluster-local · crypto-user") || !strings.Contains(got, "availability check on") {
		t.Errorf("status line %q", got)
	}
}

// A recalled line whose password history masked asks for it again.
func TestLineModeRecalledPasswordAsks(t *testing.T) {
	m := newTestModel(t, 3, false, "")
	words := unmask(m.runner.Tree, []string{"login", "--username", "cu1", "--role", "crypto-user", "--password", "****"})
	if strings.Join(words, " ") != "login --username cu1 --role crypto-user" {
		t.Errorf("unmask: %q", words)
	}
	if got := unmask(m.runner.Tree, []string{"login", "--password=****"}); len(got) != 1 {
		t.Errorf("unmask --password=****: %q", got)
	}
	if got := unmask(m.runner.Tree, []string{"key", "list", "--filter", "****"}); len(got) != 4 {
		t.Errorf("a non-secret flag lost its value: %q", got)
	}
	// Through the editor: the password is asked for, masked.
	var out syncBuffer
	in := strings.NewReader("login --username cu1 --role crypto-user --password ****\rcu1pass1\r")
	s := newLineShell(m.runner, "", in, &out, io.Discard, -1, true, nil)
	s.loop(context.Background())
	if u, _, ok := m.env.Who(); !ok || u != "cu1" {
		t.Fatalf("not logged in after the password was asked for:\n%s", out.String())
	}
	if strings.Contains(out.String(), "cu1pass1") || !strings.Contains(out.String(), "********") {
		t.Errorf("the password was not masked:\n%q", out.String())
	}
}

func testEditor(t *testing.T, input string, hist []string) (*lineEditor, *bytes.Buffer) {
	t.Helper()
	var out bytes.Buffer
	comp := &completion.Completer{Tree: commands.Default()}
	return newLineEditor(strings.NewReader(input), &out, -1, true, func() []string { return hist }, comp), &out
}

func TestLineEditorEditing(t *testing.T) {
	hist := []string{"cluster hsm-info", "cluster list", "key list", "cluster list", "user list"}
	tests := []struct{ name, in, want string }{
		{"left and insert", "abc\x1b[D\x1b[DX\r", "aXbc"},
		{"home and end", "bc\x1b[Ha\x1b[Fd\r", "abcd"},
		{"home and end, other codes", "bc\x1bOHa\x1b[4~d\r", "abcd"},
		{"ctrl+a ctrl+e", "bc\x01a\x05d\r", "abcd"},
		{"backspace", "abx\x7fc\r", "abc"},
		{"delete", "abxc\x1b[D\x1b[D\x1b[3~\r", "abc"},
		{"up recalls", "\x1b[A\r", "user list"},
		{"up up", "\x1b[A\x1b[A\r", "cluster list"},
		{"up down", "\x1b[A\x1b[A\x1b[B\r", "user list"},
		{"down to the draft", "dra\x1b[A\x1b[B\r", "dra"},
		{"ctrl+r", "\x12hsm\r\r", "cluster hsm-info"},
		{"ctrl+r twice moves to an older match", "\x12list\x12\r\r", "cluster list"},
		{"ctrl+r then edit", "\x12key\x1b[C x\r", "key list x"},
		{"ctrl+r skips a repeat", "\x12cluster\x12\r\r", "cluster hsm-info"},
		{"tab completes one", "cluster hsm-i\t\r", "cluster hsm-info "},
		{"tab fills the common prefix", "key gen\t\r", "key generate-"},
		{"tab never inserts a tab", "zzz\t\t\r", "zzz"},
		{"ctrl+l keeps the line", "ab\x0cc\r", "abc"},
		{"ctrl+u", "abc\x15x\r", "x"},
		{"ctrl+w", "key list\x17user\r", "key user"},
		{"utf-8", "é\x1b[Dà\r", "àé"},
	}
	for _, tt := range tests {
		ed, out := testEditor(t, tt.in, hist)
		got, err := ed.ReadLine("hsmsh > ")
		if err != nil || got != tt.want {
			t.Errorf("%s: %q, %v; want %q", tt.name, got, err, tt.want)
		}
		if strings.Contains(out.String(), "^L") || strings.Contains(out.String(), "\t") {
			t.Errorf("%s: output %q", tt.name, out.String())
		}
	}
}

func TestLineEditorControlKeys(t *testing.T) {
	ed, out := testEditor(t, "ab\x0c\r", nil)
	if _, err := ed.ReadLine("> "); err != nil || !strings.Contains(out.String(), "\x1b[2J") {
		t.Errorf("ctrl+l did not clear the screen: %q %v", out.String(), err)
	}
	// Ctrl+C clears the line; the next line reads normally.
	ed, _ = testEditor(t, "abc\x03x\r", nil)
	if _, err := ed.ReadLine("> "); !errors.Is(err, errInterrupted) {
		t.Errorf("ctrl+c: %v", err)
	}
	if got, err := ed.ReadLine("> "); got != "x" || err != nil {
		t.Errorf("after ctrl+c: %q %v", got, err)
	}
	// Ctrl+D ends on an empty line, deletes otherwise.
	ed, _ = testEditor(t, "ab\x01\x04\r\x04", nil)
	if got, err := ed.ReadLine("> "); got != "b" || err != nil {
		t.Errorf("ctrl+d in a line: %q %v", got, err)
	}
	if _, err := ed.ReadLine("> "); !errors.Is(err, io.EOF) {
		t.Errorf("ctrl+d on an empty line: %v", err)
	}
	// A second Tab lists the candidates.
	ed, out = testEditor(t, "key generate-\t\t\r", nil)
	ed.ReadLine("> ")
	if !strings.Contains(out.String(), "generate-symmetric") || !strings.Contains(out.String(), "generate-file") {
		t.Errorf("no candidate list: %q", out.String())
	}
	// Passwords are masked.
	ed, out = testEditor(t, "s3cret\r", nil)
	if pw, err := ed.ReadPassword("Password: "); pw != "s3cret" || err != nil || strings.Contains(out.String(), "s3cret") || !strings.Contains(out.String(), "******") {
		t.Errorf("password %q %v, shown %q", pw, err, out.String())
	}
	ed, _ = testEditor(t, "s3\x03", nil)
	if _, err := ed.ReadPassword("Password: "); err == nil {
		t.Error("ctrl+c did not give up the password")
	}
}

// TestLineModeTerminal drives line mode in a real terminal (tmux): Ctrl+C
// at the prompt then a command, ↑ to recall it, Tab to complete.
func TestLineModeTerminal(t *testing.T) {
	dir, bin, tmux := tmuxRig(t)
	t.Cleanup(func() { tmux("kill-server") })
	script := bin + " --ephemeral interactive --line; echo hsmsh-exited-$?; sleep 30"
	if out, err := tmux("new-session", "-d", "-x", "120", "-y", "40", "-s", "t",
		"env", "NO_COLOR=1", "XDG_CONFIG_HOME="+filepath.Join(dir, "config"), "HSMSH_CONFIG=", "sh", "-c", script); err != nil {
		t.Fatalf("tmux: %v %s", err, out)
	}
	screen := func() string {
		s, _ := tmux("capture-pane", "-p", "-S", "-1000", "-t", "t")
		return s
	}
	waitScreen := func(what string, cond func(string) bool) string {
		t.Helper()
		deadline := time.Now().Add(15 * time.Second)
		for {
			s := screen()
			if cond(s) {
				return s
			}
			if time.Now().After(deadline) {
				t.Fatalf("never saw %s; screen:\n%s", what, s)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	waitScreen("the prompt", func(s string) bool { return strings.Contains(s, "hsmsh >") })
	time.Sleep(300 * time.Millisecond)
	tmux("send-keys", "-t", "t", "C-c")
	time.Sleep(200 * time.Millisecond)
	tmux("send-keys", "-t", "t", "-l", "cluster list")
	tmux("send-keys", "-t", "t", "Enter")
	s := waitScreen("cluster list's result", func(s string) bool {
		return strings.Contains(s, `"error_code"`) || strings.Contains(s, "hsmsh-exited")
	})
	if strings.Contains(s, "cancelled") || !strings.Contains(s, `"error_code": 0`) {
		t.Fatalf("after Ctrl+C, cluster list failed:\n%s", s)
	}
	// ↑ recalls it.
	tmux("send-keys", "-t", "t", "Up")
	tmux("send-keys", "-t", "t", "Enter")
	s = waitScreen("the recalled command's result", func(s string) bool {
		return strings.Count(s, `"error_code"`) >= 2 || strings.Contains(s, "hsmsh-exited")
	})
	if strings.Contains(s, "[A") || strings.Count(s, `"error_code": 0`) != 2 {
		t.Fatalf("↑ did not recall the command:\n%s", s)
	}
	// A line longer than the terminal is wide is edited in place.
	tmux("send-keys", "-t", "t", "-l", strings.Repeat("y", 130))
	tmux("send-keys", "-t", "t", "Home")
	tmux("send-keys", "-t", "t", "-l", "Z")
	s = waitScreen("the edited long line", func(s string) bool { return strings.Contains(s, "hsmsh > Zyyy") })
	if strings.Contains(s, "hsmsh > yyy") {
		t.Errorf("the long line was drawn twice:\n%s", s)
	}
	tmux("send-keys", "-t", "t", "C-c")
	// Tab completes.
	tmux("send-keys", "-t", "t", "-l", "cluster hsm-i")
	tmux("send-keys", "-t", "t", "Tab")
	waitScreen("the completed word", func(s string) bool { return strings.Contains(s, "hsmsh > cluster hsm-info") })
	tmux("send-keys", "-t", "t", "C-c")
	tmux("send-keys", "-t", "t", "-l", "quit")
	tmux("send-keys", "-t", "t", "Enter")
	s = waitScreen("the exit", func(s string) bool { return strings.Contains(s, "hsmsh-exited") })
	if !strings.Contains(s, "hsmsh-exited-0") {
		t.Errorf("hsmsh exited with an error:\n%s", s)
	}
}

// A line longer than the terminal is wide is redrawn from its first row.
func TestLineEditorWrappedLine(t *testing.T) {
	long := strings.Repeat("x", 30)
	ed, out := testEditor(t, long+"\x1b[H"+"a\r", nil)
	ed.width = 20
	got, err := ed.ReadLine("hsmsh > ")
	if err != nil || got != "a"+long {
		t.Fatalf("%q %v", got, err)
	}
	// After Home the cursor sits on the first row; the redraw after
	// typing must go up from the row it was on (the second) first.
	if !strings.Contains(out.String(), "\x1b[1A\r\x1b[J") {
		t.Errorf("no move to the first row: %q", out.String())
	}
}
