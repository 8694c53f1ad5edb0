package shell

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestTerminalStartAndQuit starts the real binary in a real terminal
// (tmux), waits for the full-screen shell, quits it, and checks the
// terminal came back: the alternate screen is gone and the shell's frame
// is no longer on it. Driving more than start-and-quit through a pty is
// flaky; the model tests cover the rest.
func TestTerminalStartAndQuit(t *testing.T) {
	_, bin, tmux := tmuxRig(t)
	t.Cleanup(func() { tmux("kill-server") })
	// A shell that prints a marker once hsmsh has exited, so we know the
	// terminal is ours again.
	script := bin + " --ephemeral; echo hsmsh-exited-$?; sleep 30"
	if out, err := tmux("new-session", "-d", "-x", "120", "-y", "40", "-s", "t", "env", "NO_COLOR=1", "sh", "-c", script); err != nil {
		t.Fatalf("tmux: %v %s", err, out)
	}
	waitScreen := func(want string) string {
		deadline := time.Now().Add(15 * time.Second)
		for {
			screen, _ := tmux("capture-pane", "-p", "-t", "t")
			if strings.Contains(screen, want) {
				return screen
			}
			if time.Now().After(deadline) {
				t.Fatalf("never saw %q; screen:\n%s", want, screen)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	waitScreen("hsmsh >")
	waitScreen("? help")
	screen := quitTmux(t, tmux)
	if !strings.Contains(screen, "hsmsh-exited-0") {
		t.Errorf("hsmsh exited with an error:\n%s", screen)
	}
	if strings.Contains(screen, "Output") || strings.Contains(screen, "? help") {
		t.Errorf("the shell's screen was left behind:\n%s", screen)
	}
	_ = os.Remove(bin)
}

// TestTerminalDemoPlayer starts hsmsh demo NAME in a real terminal at
// 100×30: the player comes up full screen with the demo's narration and
// what Enter runs, and quit leaves it with the terminal restored. The
// stepping itself is tested on the model (demoplay_test.go).
func TestTerminalDemoPlayer(t *testing.T) {
	_, bin, tmux := tmuxRig(t)
	t.Cleanup(func() { tmux("kill-server") })
	script := bin + " demo lost-before-replication; echo hsmsh-exited-$?; sleep 30"
	if out, err := tmux("new-session", "-d", "-x", "100", "-y", "30", "-s", "t", "env", "NO_COLOR=1", "sh", "-c", script); err != nil {
		t.Fatalf("tmux: %v %s", err, out)
	}
	var screen string
	deadline := time.Now().Add(15 * time.Second)
	for {
		screen, _ = tmux("capture-pane", "-p", "-t", "t")
		if strings.Contains(screen, "Demo lost-before-replication · step 1/6") && strings.Contains(screen, "▶ Enter runs 6 commands") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the player did not come up; screen:\n%s", screen)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !strings.Contains(screen, "The durability problem") || !strings.Contains(screen, " Keys (0)") {
		t.Errorf("no narration or key pane:\n%s", screen)
	}
	if n := len(strings.Split(strings.TrimRight(screen, "\n"), "\n")); n != 30 {
		t.Errorf("%d lines on a 30-line terminal:\n%s", n, screen)
	}
	screen = quitTmux(t, tmux)
	if !strings.Contains(screen, "hsmsh-exited-0") || strings.Contains(screen, "Demo lost-before") {
		t.Errorf("after quit:\n%s", screen)
	}
}

// quitTmux types quit into the session "t" until the shell in it has
// exited (the script then prints hsmsh-exited-STATUS), and returns the
// screen. The first keys can reach the terminal before the program reads
// its input, so quit is typed again until it is taken.
func quitTmux(t *testing.T, tmux func(args ...string) (string, error)) string {
	t.Helper()
	for try := 0; ; try++ {
		tmux("send-keys", "-t", "t", "quit", "Enter")
		time.Sleep(time.Second)
		screen, _ := tmux("capture-pane", "-p", "-t", "t")
		if strings.Contains(screen, "hsmsh-exited-") {
			return screen
		}
		if try == 5 {
			t.Fatalf("quit did not end the shell; screen:\n%s", screen)
		}
	}
}

// tmuxRig builds the real binary into a fresh folder and gives a tmux
// command on a socket of that folder, for the tests that drive a real
// terminal; it skips under -short and where tmux is not installed.
func tmuxRig(t *testing.T) (dir, bin string, tmux func(args ...string) (string, error)) {
	t.Helper()
	if testing.Short() {
		t.Skip("builds the binary")
	}
	if _, err := exec.LookPath("tmux"); err != nil {
		t.Skip("tmux is not installed: apt-get install tmux")
	}
	dir = t.TempDir()
	bin = filepath.Join(dir, "hsmsh")
	if out, err := exec.Command("go", "build", "-o", bin, "../cmd/hsmsh").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	sock := filepath.Join(dir, "tmux.sock")
	tmux = func(args ...string) (string, error) {
		out, err := exec.Command("tmux", append([]string{"-S", sock}, args...)...).CombinedOutput()
		return string(out), err
	}
	return dir, bin, tmux
}
