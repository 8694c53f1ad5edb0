package shell

import (
	"fmt"
	"strings"
	"testing"
	"time"

	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/x/ansi"

	"github.com/hsmsh/hsmsh/config"
	"github.com/hsmsh/hsmsh/themes"
)

// demoTestModel is the player as hsmsh demo NAME starts it on a terminal,
// at w×h, with its pauses shortened.
func demoTestModel(t *testing.T, name string, auto time.Duration, w, h int) *Model {
	t.Helper()
	title, text, err := readDemo(name)
	if err != nil {
		t.Fatal(err)
	}
	th, _ := themes.Builtin("mono")
	m, closeEnv, err := newDemoModel(th, config.Default(), title, text, auto)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if m.evCancel != nil {
			m.evCancel()
		}
		closeEnv()
	})
	m.demo.tick, m.demo.gap = time.Millisecond, time.Millisecond
	m.Update(tea.WindowSizeMsg{Width: w, Height: h})
	pump(t, m, m.Init(), func() bool { return !m.refreshing })
	return m
}

// stepDemo presses Enter and waits until the player waits again.
func stepDemo(t *testing.T, m *Model) {
	t.Helper()
	before := m.demo.ran
	cmd := press(m, tea.KeyEnter)
	pump(t, m, cmd, func() bool {
		d := m.demo
		return d.ran > before && !m.running && !m.refreshing && (d.phase == demoReady || d.phase == demoDone)
	})
}

// keyRow is the key pane's row of a label.
func keyRow(v, label string) string {
	rows, _ := pane(v, " Keys (")
	for _, r := range rows {
		if strings.HasPrefix(r, label+" ") {
			return r
		}
	}
	return ""
}

// checkFrame fails unless the screen is exactly w×h cells.
func checkFrame(t *testing.T, v string, w, h int) {
	t.Helper()
	lines := strings.Split(v, "\n")
	if len(lines) != h {
		t.Fatalf("%d lines, want %d:\n%s", len(lines), h, v)
	}
	for _, l := range lines {
		if n := ansi.StringWidth(l); n > w {
			t.Fatalf("a line of %d cells, want at most %d: %q", n, w, l)
		}
	}
}

// output is everything the output pane holds, as text.
func output(m *Model) string { return ansi.Strip(strings.Join(m.out, "\n")) }

// The demo file's comments become the steps' narration, one paragraph a
// comment block, without the header's "Run:" line for batch readers; a
// comment after commands starts the next step; "! " marks a command
// expected to fail.
func TestParseDemo(t *testing.T) {
	_, text, err := readDemo("lost-before-replication")
	if err != nil {
		t.Fatal(err)
	}
	steps := parseDemo(text)
	if len(steps) != 6 {
		t.Fatalf("%d steps, want 6: %+v", len(steps), steps)
	}
	first := steps[0]
	if len(first.narration) != 2 || !strings.HasPrefix(first.narration[0], "The durability problem (SPEC §1): a key is made on one HSM and used at once. If that HSM") ||
		first.narration[1] != "Keep server-side sync out of the way: we decide when keys move." {
		t.Errorf("first step's narration: %q", first.narration)
	}
	if len(first.cmds) != 6 || first.cmds[0].line != "lab sync pause" || first.cmds[0].lineNo != 8 {
		t.Errorf("first step's commands: %+v", first.cmds)
	}
	for _, st := range steps {
		for _, p := range st.narration {
			if strings.Contains(p, "Run:") {
				t.Errorf("narration keeps the batch line: %q", p)
			}
		}
	}
	last := steps[len(steps)-1]
	if c := last.cmds[len(last.cmds)-1]; !c.expectFail || !strings.HasPrefix(c.line, "crypto sign ecdsa") {
		t.Errorf("last command: %+v", c)
	}
}

// The player at 100×30, stepped with Enter through a whole demo: the
// narration pane shows each step's text and what Enter runs; a command is
// typed out in the input line before it runs; the panes follow (the key
// made on hsm-1 alone, then LOST); the expected failure is marked so; the
// end is said; every frame fits the terminal.
func TestDemoPlayerSteps100x30(t *testing.T) {
	const w, h = 100, 30
	m := demoTestModel(t, "lost-before-replication", 0, w, h)
	v := m.View()
	checkFrame(t, v, w, h)
	narr, _ := pane(v, "Demo lost-before-replication · step 1/6")
	text := strings.Join(narr, "\n")
	for _, want := range []string{"The durability problem (SPEC §1)", "Keep server-side sync out of the way", "▶ Enter runs 6 commands: lab sync pause · cluster activate --password ****"} {
		if !strings.Contains(text, want) {
			t.Errorf("narration pane lacks %q:\n%s", want, v)
		}
	}
	if strings.Contains(v, "adminpass") {
		t.Errorf("a password on screen:\n%s", v)
	}

	// Enter starts typing the first command: one tick of the typist
	// shows a part of it in the input line.
	press(m, tea.KeyEnter)
	if m.demo.phase != demoTyping || m.input.Value() != "" {
		t.Fatalf("after Enter: phase %d, input %q", m.demo.phase, m.input.Value())
	}
	_, cmd := m.Update(demoTimerMsg{gen: m.demo.gen, what: timerType})
	if got := m.input.Value(); got == "" || len(got) >= len("lab sync pause") || !strings.HasPrefix("lab sync pause", got) {
		t.Fatalf("typed so far: %q", got)
	}
	checkFrame(t, m.View(), w, h)
	pump(t, m, cmd, func() bool { return m.demo.step == 1 && m.demo.phase == demoReady && !m.running && !m.refreshing })
	v = m.View()
	checkFrame(t, v, w, h)
	if !strings.Contains(v, "step 2/6 · sync paused") || !strings.Contains(v, "The SDK 3 defaults") {
		t.Errorf("after the first step:\n%s", v)
	}
	if out := output(m); !strings.Contains(out, "hsmsh > lab sync pause") || !strings.Contains(out, "hsmsh [admin@cluster-local] > logout") {
		t.Errorf("the first step's commands are not echoed:\n%s", out)
	}

	stepDemo(t, m) // the SDK 3 settings
	stepDemo(t, m) // hsm-2 and hsm-3 fail; the key is made on hsm-1
	v = m.View()
	checkFrame(t, v, w, h)
	if row := keyRow(v, "payroll-key"); !strings.Contains(row, "● - - 1/3") {
		t.Errorf("the key on hsm-1 alone: %q\n%s", row, v)
	}
	stepDemo(t, m) // it signs
	stepDemo(t, m) // hsm-1 destroyed; the others back
	v = m.View()
	if row := keyRow(v, "payroll-key"); !strings.Contains(row, "✗ ✗ ✗ LOST") {
		t.Errorf("the lost key: %q\n%s", row, v)
	}
	stepDemo(t, m) // nobody has it
	v = m.View()
	checkFrame(t, v, w, h)
	if m.demo.phase != demoDone || len(m.demo.bad) != 0 {
		t.Fatalf("phase %d, bad %v:\n%s", m.demo.phase, m.demo.bad, v)
	}
	if !strings.Contains(v, "■ The end.") || !strings.Contains(v, "step 6/6") {
		t.Errorf("the end is not said:\n%s", v)
	}
	if out := output(m); !strings.Contains(out, "✗ (expected) no key matches the filter attr.label=payroll-key") {
		t.Errorf("the expected failure is not marked:\n%s", out)
	}
	// The events, by label, in the compact layout's other tab.
	press(m, tea.KeyCtrlT)
	v = m.View()
	checkFrame(t, v, w, h)
	ev, _ := pane(v, "Events · Output")
	if !strings.Contains(strings.Join(ev, "\n"), "key-lost hsm-1 payroll-key 0x") {
		t.Errorf("events tab:\n%s", v)
	}
}

// --auto runs the steps by itself, one DELAY after the last; the demo
// plays to its end without a key.
func TestDemoPlayerAuto(t *testing.T) {
	m := demoTestModel(t, "session-key-dies", 5*time.Millisecond, 100, 30)
	if v := m.View(); !strings.Contains(v, "▶ In 5ms (Enter: now) runs") {
		t.Errorf("auto not said:\n%s", v)
	}
	pump(t, m, nil, func() bool { return m.demo.phase == demoDone && !m.running })
	total := 0
	for _, st := range m.demo.steps {
		total += len(st.cmds)
	}
	if m.demo.ran != total || len(m.demo.bad) != 0 {
		t.Errorf("ran %d of %d, bad %v:\n%s", m.demo.ran, total, m.demo.bad, output(m))
	}
}

// A command that does not go as the file expects is flagged under its
// result and counted at the end, with its line.
func TestDemoPlayerFlagsUnexpected(t *testing.T) {
	th, _ := themes.Builtin("mono")
	m, closeEnv, err := newDemoModel(th, config.Default(), "t", "# Sync stops.\n! lab sync pause\n# Not logged in.\nkey list\n", 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.evCancel(); closeEnv() })
	m.demo.tick, m.demo.gap = time.Millisecond, time.Millisecond
	m.Update(tea.WindowSizeMsg{Width: 100, Height: 30})
	pump(t, m, m.Init(), func() bool { return !m.refreshing })
	stepDemo(t, m)
	stepDemo(t, m)
	out := output(m)
	if !strings.Contains(out, "✗ the demo expects this command to fail, but it succeeded") {
		t.Errorf("an unexpected success is not flagged:\n%s", out)
	}
	if v := m.View(); !strings.Contains(v, "■ The end: 2 command(s) did not go as the demo expects (line 2, line 4)") {
		t.Errorf("the end:\n%s", v)
	}
}

// Ctrl+C while a command is typed stops the player there: the line is
// cleared, nothing runs, and Enter types the same command again.
func TestDemoPlayerCtrlCWhileTyping(t *testing.T) {
	m := demoTestModel(t, "session-key-dies", 0, 100, 30)
	press(m, tea.KeyEnter)
	m.Update(demoTimerMsg{gen: m.demo.gen, what: timerType})
	gen := m.demo.gen
	press(m, tea.KeyCtrlC)
	if m.demo.phase != demoReady || m.input.Value() != "" || m.demo.next != 0 || m.running {
		t.Fatalf("after Ctrl+C: phase %d next %d input %q running %v", m.demo.phase, m.demo.next, m.input.Value(), m.running)
	}
	// The typist's timer set before the Ctrl+C does nothing now.
	m.Update(demoTimerMsg{gen: gen, what: timerType})
	if m.input.Value() != "" {
		t.Errorf("a stale timer typed %q", m.input.Value())
	}
	if m.quitArmed {
		t.Error("Ctrl+C that stopped the player also armed quitting")
	}
	stepDemo(t, m)
	if out := output(m); !strings.Contains(out, "hsmsh > lab sync pause") {
		t.Errorf("Enter did not run the first command:\n%s", out)
	}
}

// demo NAME inside the shell plays on a cluster of its own, drawn in the
// shell's place; quit comes back to the shell, whose cluster and history
// the demo did not touch.
func TestDemoCommandInShell(t *testing.T) {
	m := newTestModel(t, 3, false, "")
	m.Update(tea.WindowSizeMsg{Width: 100, Height: 30})
	runLine(t, m, "demo")
	if out := output(m); !strings.Contains(out, "lost-before-replication") || !strings.Contains(out, "session-key-dies") {
		t.Fatalf("demo lists no demos:\n%s", out)
	}
	runLine(t, m, "demo session-key-dies")
	if m.child == nil {
		t.Fatalf("no demo started:\n%s", m.View())
	}
	m.child.demo.tick, m.child.demo.gap = time.Millisecond, time.Millisecond
	v := m.View()
	checkFrame(t, v, 100, 30)
	if !strings.Contains(v, "Demo session-key-dies · step 1/") {
		t.Fatalf("the demo is not on screen:\n%s", v)
	}
	pump(t, m, press(m, tea.KeyEnter), func() bool {
		return m.child.demo.step == 1 && m.child.demo.phase == demoReady && !m.child.running
	})
	if u, _, ok := m.child.env.Who(); !ok || u != "alice" {
		t.Errorf("the demo's shell is not logged in as alice: %q %v", u, ok)
	}
	if _, _, ok := m.env.Who(); ok {
		t.Error("the demo logged the shell's own session in")
	}
	typeLine(m, "quit")
	pump(t, m, press(m, tea.KeyEnter), func() bool { return m.child == nil })
	v = m.View()
	checkFrame(t, v, 100, 30)
	if !strings.Contains(v, "demo session-key-dies ended; back on cluster-local") || strings.Contains(v, "Demo session-key-dies") {
		t.Errorf("not back in the shell:\n%s", v)
	}
	for _, l := range m.hist.Lines() {
		if strings.Contains(l, "alice") {
			t.Errorf("the demo's commands in the shell's history: %q", l)
		}
	}
	// The shell works as before.
	runLine(t, m, "cluster hsm-info")
	if !strings.Contains(output(m), `"id": "hsm-3"`) {
		t.Errorf("the shell after the demo:\n%s", m.View())
	}
}

// Every built-in demo's narration and status fit the narration pane at
// the smallest size, 80×24, with the status line (what Enter runs) kept.
func TestDemoNarrationFits80x24(t *testing.T) {
	for _, name := range demoNames() {
		t.Run(name, func(t *testing.T) {
			m := demoTestModel(t, name, 0, 80, 24)
			for i := range m.demo.steps {
				m.demo.step, m.demo.next, m.demo.phase = i, 0, demoReady
				v := m.View()
				checkFrame(t, v, 80, 24)
				narr, _ := pane(v, fmt.Sprintf("step %d/%d", i+1, len(m.demo.steps)))
				if len(narr) == 0 || !strings.Contains(narr[len(narr)-1], "▶ Enter") {
					t.Errorf("step %d: the narration pane:\n%s", i+1, v)
				}
				if _, keyH := pane(v, " Keys ("); keyH < 5 {
					t.Errorf("step %d: the key pane has %d lines:\n%s", i+1, keyH, v)
				}
			}
		})
	}
}

// With --auto, Ctrl+C hands the player to the teacher: the narration
// says Enter goes on, and no timer starts the next command by itself.
func TestDemoPlayerCtrlCHoldsAuto(t *testing.T) {
	m := demoTestModel(t, "session-key-dies", time.Hour, 100, 30)
	autoGen := m.demo.gen
	press(m, tea.KeyEnter)
	press(m, tea.KeyCtrlC)
	if v := m.View(); !strings.Contains(v, "▶ Enter runs 8 commands") || strings.Contains(v, "In 1h") {
		t.Errorf("after Ctrl+C:\n%s", v)
	}
	m.Update(demoTimerMsg{gen: autoGen, what: timerAuto})
	if m.demo.phase != demoReady || m.running {
		t.Errorf("a timer from before the Ctrl+C started the demo: phase %d", m.demo.phase)
	}
}
