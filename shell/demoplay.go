package shell

import (
	"bufio"
	"fmt"
	"strings"
	"time"

	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/x/ansi"

	"github.com/hsmsh/hsmsh/commands"
	"github.com/hsmsh/hsmsh/config"
	"github.com/hsmsh/hsmsh/themes"
)

// The interactive demo player: a demos/*.hsm file played in the
// full-screen shell. The file's comments are its narration, shown in a
// pane above the output; its commands are typed into the input line and
// run as if the teacher had typed them, so the panes move as they would.
// A step is a paragraph of narration and the commands under it: Enter
// runs them (or --auto does after a pause), one after another, each typed
// out first. The line stays the shell's own: a teacher may type and run
// commands of their own between steps.

// demoCmd is one command of a demo.
type demoCmd struct {
	line       string // as in the file, without the "! "
	expectFail bool   // the line started with "! ": the demo expects it to fail
	lineNo     int
}

// demoStep is a paragraph of narration and the commands that follow it.
type demoStep struct {
	narration []string // paragraphs, each one line (reflowed when drawn)
	cmds      []demoCmd
}

// parseDemo splits a demo file into steps: a comment after a command
// starts a new step. Comment lines are joined into paragraphs (a blank
// line or an empty comment ends one); the "Run: hsmsh … batch …" line of a
// file's header is for the batch reader, not the player's audience.
func parseDemo(text string) []demoStep {
	var steps []demoStep
	cur := demoStep{}
	para := ""
	endPara := func() {
		if para != "" {
			cur.narration = append(cur.narration, para)
			para = ""
		}
	}
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 64<<10), maxLine)
	lineNo := 0
	for {
		line, start, ok := nextLine(sc, &lineNo)
		if !ok {
			break
		}
		t := strings.TrimSpace(line)
		switch {
		case t == "":
			endPara()
		case strings.HasPrefix(t, "#"):
			if len(cur.cmds) > 0 {
				steps = append(steps, cur)
				cur = demoStep{}
			}
			c := strings.TrimSpace(strings.TrimPrefix(t, "#"))
			switch {
			case c == "":
				endPara()
			case strings.HasPrefix(c, "Run: "):
				endPara()
			default:
				if para != "" {
					para += " "
				}
				para += c
			}
		default:
			endPara()
			cmd := demoCmd{line: t, lineNo: start}
			if rest, ok := strings.CutPrefix(t, "! "); ok {
				cmd.line, cmd.expectFail = strings.TrimSpace(rest), true
			}
			cur.cmds = append(cur.cmds, cmd)
		}
	}
	endPara()
	if len(cur.cmds) > 0 || len(cur.narration) > 0 {
		steps = append(steps, cur)
	}
	return steps
}

// demoPhase is where the player is.
type demoPhase int

const (
	demoReady   demoPhase = iota // waiting for Enter (or --auto) to run the step's next commands
	demoPause                    // a moment between two commands of a step
	demoTyping                   // a command is being typed out
	demoRunning                  // a command is running
	demoDone                     // the last step has run
)

// Pacing of the player. Typing a command takes about a second however
// long its line, so a long key generation does not keep the class
// waiting.
const (
	demoTypeTick  = 25 * time.Millisecond
	demoTypeTicks = 40                     // a line is typed in at most this many ticks
	demoGap       = 600 * time.Millisecond // between the commands of a step: time to see each result
)

// demoPlayer is the player's state, on the Model while a demo plays.
type demoPlayer struct {
	name  string
	steps []demoStep
	step  int // the step whose narration shows
	next  int // its next command to run
	phase demoPhase
	typed int // runes of the command shown so far while typing
	auto  time.Duration
	held  bool // Ctrl+C stopped the player: no --auto until Enter
	// gen numbers the player's timers: a timer set before Enter,
	// Ctrl+C or a later step is stale when it fires.
	gen   int
	runID int // the Model's run of the demo command running
	// tick and gap pace the typing and the commands (tests shorten them).
	tick, gap time.Duration
	ran       int      // commands run so far
	bad       []string // "line N" of commands that did not go as the demo expects
	// clusters already known, so a cluster a command makes (cluster
	// clone) is shown beside the current one.
	clusters map[string]bool
}

// demoTimerMsg is one of the player's timers firing.
type demoTimerMsg struct {
	gen  int
	what demoTimer
}

type demoTimer int

const (
	timerType demoTimer = iota // type the next characters
	timerNext                  // start the step's next command
	timerAuto                  // --auto: run the next step
)

func newDemoPlayer(name, text string, auto time.Duration) *demoPlayer {
	return &demoPlayer{name: name, steps: parseDemo(text), auto: auto, tick: demoTypeTick, gap: demoGap}
}

func (d *demoPlayer) timer(after time.Duration, what demoTimer) tea.Cmd {
	gen := d.gen
	return tea.Tick(after, func(time.Time) tea.Msg { return demoTimerMsg{gen: gen, what: what} })
}

func (d *demoPlayer) cmds() []demoCmd {
	if d.step >= len(d.steps) {
		return nil
	}
	return d.steps[d.step].cmds
}

// current is the command being typed or run, or the next to run.
func (d *demoPlayer) current() (demoCmd, bool) {
	cmds := d.cmds()
	if d.next < len(cmds) {
		return cmds[d.next], true
	}
	return demoCmd{}, false
}

// startDemo puts the player on the model: the first step's narration
// shows, and Enter (or --auto) runs its commands.
func (m *Model) startDemo(d *demoPlayer) tea.Cmd {
	m.demo = d
	d.clusters = map[string]bool{}
	for _, id := range m.env.ClusterIDs() {
		d.clusters[id] = true
	}
	return m.demoSettle()
}

// demoSettle is called when the player has nothing running: it moves to
// the next step once a step's commands have run, ends the demo after the
// last, and arms --auto.
func (m *Model) demoSettle() tea.Cmd {
	d := m.demo
	d.phase = demoReady
	if d.next >= len(d.cmds()) {
		if d.step+1 < len(d.steps) && d.next > 0 {
			d.step, d.next = d.step+1, 0
		}
		if d.next >= len(d.cmds()) {
			d.phase = demoDone
			return nil
		}
	}
	if d.auto > 0 && !d.held {
		d.gen++
		return d.timer(d.auto, timerAuto)
	}
	return nil
}

// demoEnter is Enter on an empty line while a demo plays: run the step's
// commands, or, while one is being typed, run it at once.
func (m *Model) demoEnter() tea.Cmd {
	d := m.demo
	switch d.phase {
	case demoReady, demoPause:
		return m.demoType()
	case demoTyping:
		d.gen++
		return m.demoRun()
	}
	return nil
}

// demoType starts typing the step's next command.
func (m *Model) demoType() tea.Cmd {
	d := m.demo
	if _, ok := d.current(); !ok {
		return m.demoSettle()
	}
	d.gen++
	d.phase, d.typed, d.held = demoTyping, 0, false
	m.input.SetValue("")
	return d.timer(d.tick, timerType)
}

// demoTimer handles one of the player's timers.
func (m *Model) demoTimer(msg demoTimerMsg) tea.Cmd {
	d := m.demo
	if d == nil || msg.gen != d.gen {
		return nil // stale: Enter, Ctrl+C or a later step came first
	}
	switch msg.what {
	case timerAuto:
		if d.phase == demoReady && !m.running && m.mode == modeCommand && m.input.Value() == "" {
			return m.demoType()
		}
		// The teacher is typing or running something: try again later.
		return d.timer(d.auto, timerAuto)
	case timerNext:
		if d.phase == demoPause {
			return m.demoType()
		}
	case timerType:
		if d.phase != demoTyping {
			return nil
		}
		c, _ := d.current()
		shown := m.runner.Tree.Redact(c.line)
		rs := []rune(shown)
		d.typed += max(1, (len(rs)+demoTypeTicks-1)/demoTypeTicks)
		if d.typed < len(rs) {
			m.input.SetValue(string(rs[:d.typed]))
			m.input.CursorEnd()
			return d.timer(d.tick, timerType)
		}
		m.input.SetValue(shown)
		m.input.CursorEnd()
		return m.demoRun()
	}
	return nil
}

// demoRun runs the command being typed, as Enter would.
func (m *Model) demoRun() tea.Cmd {
	d := m.demo
	c, ok := d.current()
	if !ok {
		return m.demoSettle()
	}
	m.input.SetValue("")
	m.suggestions = nil
	m.outScroll = 0
	redacted := m.runner.Tree.Redact(c.line)
	if err := m.hist.Add(redacted); err != nil {
		m.appendOut(m.theme.Warn.Render("history: " + err.Error()))
	}
	m.histPos = len(m.hist.Lines())
	m.echo(redacted)
	words, err := commands.Split(c.line)
	if err != nil || len(words) == 0 {
		res := commands.Result{ErrorCode: 1, Data: fmt.Sprintf("%s line %d: %v", d.name, c.lineNo, err)}
		m.demoMark(c, res)
		d.next++
		return m.demoAfter()
	}
	d.phase = demoRunning
	cmd := m.run(words, redacted)
	d.runID = m.runID
	return cmd
}

// demoFinished takes the result of the demo's command: the output marks a
// failure the demo expects as expected, and one it does not as a problem.
func (m *Model) demoFinished(res commands.Result) tea.Cmd {
	d := m.demo
	c, _ := d.current()
	m.demoMark(c, res)
	d.next++
	// A cluster the command made (cluster clone) shows beside this one
	// in the key pane, as the clone-and-replicate demo asks.
	for _, id := range m.env.ClusterIDs() {
		if !d.clusters[id] {
			d.clusters[id] = true
			if m.compare == "" && id != m.env.ClusterID() {
				m.compare = id
				m.appendOut(m.theme.Dim.Render("the key pane shows " + m.env.ClusterID() + " and " + id + " side by side (compare off to stop)"))
			}
		}
	}
	return m.demoAfter()
}

// demoAfter follows a command of the step: the next one after a pause, or
// the next step.
func (m *Model) demoAfter() tea.Cmd {
	d := m.demo
	if d.next < len(d.cmds()) {
		d.gen++
		d.phase = demoPause
		return d.timer(d.gap, timerNext)
	}
	return m.demoSettle()
}

// demoMark writes the demo's reading of a result under it: a failure the
// file marks with "! " is expected; anything else that differs from the
// file's expectation is flagged.
func (m *Model) demoMark(c demoCmd, res commands.Result) {
	d := m.demo
	d.ran++
	msg := strings.TrimSpace(fmt.Sprint(res.Data))
	switch {
	case !res.OK() && c.expectFail:
		m.appendOut(m.theme.Warn.Render("✗ (expected) " + msg))
		return
	case !res.OK():
		m.appendOut(renderResult(m.theme, res)...)
	case c.expectFail:
		m.appendOut(renderResult(m.theme, res)...)
		m.appendOut(m.theme.Error.Render("✗ the demo expects this command to fail, but it succeeded"))
	default:
		m.appendOut(renderResult(m.theme, res)...)
		return
	}
	d.bad = append(d.bad, fmt.Sprintf("line %d", c.lineNo))
}

// demoInterrupt is Ctrl+C while the demo types or runs a command: the
// player stops where it is; Enter goes on with the step's next command.
func (m *Model) demoInterrupt() {
	d := m.demo
	d.gen++
	switch d.phase {
	case demoTyping:
		m.input.SetValue("")
	case demoRunning:
		d.next++ // the cancelled command is not run again
	}
	d.phase = demoReady
	d.held = true // the teacher has taken over: Enter goes on
	if d.next >= len(d.cmds()) {
		m.demoSettle()
	}
}

// demoHeight is the narration pane's height (with its border) at width w
// in a body of bodyH lines: what the narration needs, up to about 40% of
// the body; 0 without a demo.
func (m *Model) demoHeight(w, bodyH int) int {
	if m.demo == nil {
		return 0
	}
	return min(len(m.demoLines(w-2))+2, max(4, bodyH*2/5))
}

// demoTitle is the narration pane's title: the demo, the step, and
// whether server-side sync runs (the ○ of a missing copy lasts only until
// it does).
func (m *Model) demoTitle() string {
	d := m.demo
	t := fmt.Sprintf("Demo %s · step %d/%d", d.name, min(d.step+1, len(d.steps)), len(d.steps))
	if st, ok := m.env.Sync(); ok {
		if st.Paused {
			t += " · sync paused"
		} else if st.Interval > 0 {
			t += " · sync every " + st.Interval.String()
		}
	}
	return t
}

// demoLines is the narration pane's text at width w: the step's
// narration, wrapped at words, then a line saying what Enter does.
func (m *Model) demoLines(w int) []string {
	d := m.demo
	var out []string
	if d.step < len(d.steps) {
		for i, p := range d.steps[d.step].narration {
			if i > 0 {
				out = append(out, "")
			}
			out = append(out, strings.Split(ansi.Wrap(p, max(w, 10), ""), "\n")...)
		}
	}
	if len(out) > 0 {
		out = append(out, "")
	}
	return append(out, m.demoStatus(w))
}

// demoStatus is the narration pane's last line: what runs next, what runs
// now, or the end.
func (m *Model) demoStatus(w int) string {
	d := m.demo
	cmds := d.cmds()
	switch d.phase {
	case demoTyping, demoRunning, demoPause:
		c, _ := d.current()
		s := fmt.Sprintf("▸ %d/%d  %s", d.next+1, len(cmds), m.runner.Tree.Redact(c.line))
		if c.expectFail {
			s += "   (expected to fail)"
		}
		return m.theme.Prompt.Render(trunc(s, w))
	case demoDone:
		s := "■ The end. Type commands to look around; quit leaves."
		if len(d.bad) > 0 {
			s = fmt.Sprintf("■ The end: %d command(s) did not go as the demo expects (%s). quit leaves.", len(d.bad), strings.Join(d.bad, ", "))
			return m.theme.Error.Render(trunc(s, w))
		}
		return m.theme.OK.Render(trunc(s, w))
	}
	names := make([]string, 0, len(cmds)-d.next)
	for _, c := range cmds[d.next:] {
		names = append(names, m.runner.Tree.Redact(c.line))
	}
	what := "runs"
	if d.next > 0 {
		what = "goes on with"
	}
	key := "Enter"
	if d.auto > 0 && !d.held {
		key = fmt.Sprintf("In %s (Enter: now)", d.auto)
	}
	s := fmt.Sprintf("▶ %s %s: %s", key, what, strings.Join(names, " · "))
	if len(names) > 1 {
		s = fmt.Sprintf("▶ %s %s %d commands: %s", key, what, len(names), strings.Join(names, " · "))
	}
	return m.theme.OK.Render(trunc(s, w))
}

// newDemoModel opens a fresh in-memory embedded cluster with cfg's
// settings and a shell on it that plays the demo. closeEnv ends the
// cluster once the shell is done with it.
func newDemoModel(th themes.Theme, cfg *config.Config, name, text string, auto time.Duration) (m *Model, closeEnv func() error, err error) {
	env, closeEnv, err := openDemoEnv(cfg)
	if err != nil {
		return nil, nil, err
	}
	env.ReadPassword = nil // the shell asks in its own masked field
	m = NewModel(env, commands.NewRunner(env), th, "")
	m.demo = newDemoPlayer(name, text, auto)
	return m, closeEnv, nil
}

// The shell's own demo command plays a demo in a second shell, on a
// cluster of its own, drawn in place of this one until it ends (quit, or
// Ctrl+C twice). The inner shell's messages travel wrapped, so that each
// shell gets its own: childMsg carries one, demoEndMsg says the inner
// shell quit.
type (
	childMsg struct {
		gen int
		msg tea.Msg
	}
	demoEndMsg    struct{ gen int }
	demoClosedMsg struct{ err error }
)

// wrapChild wraps the inner shell's command so its messages come back as
// childMsg, and its quit as demoEndMsg.
func wrapChild(gen int, c tea.Cmd) tea.Cmd {
	if c == nil {
		return nil
	}
	return func() tea.Msg {
		switch msg := c().(type) {
		case nil:
			return nil
		case tea.BatchMsg:
			out := make(tea.BatchMsg, 0, len(msg))
			for _, sub := range msg {
				if sub != nil {
					out = append(out, wrapChild(gen, sub))
				}
			}
			return out
		case tea.QuitMsg:
			return demoEndMsg{gen}
		default:
			return childMsg{gen, msg}
		}
	}
}

// childUpdate routes a message while a demo plays inside the shell: keys,
// mouse and size go to the demo's shell, its own messages back to it; the
// outer shell's (its events, refreshes) stay with it. handled is false
// for a message the outer shell takes as usual.
func (m *Model) childUpdate(msg tea.Msg) (cmd tea.Cmd, handled bool) {
	switch msg := msg.(type) {
	case childMsg:
		if m.child == nil || msg.gen != m.childGen {
			return nil, true // from a demo that has ended
		}
		_, cmd := m.child.Update(msg.msg)
		return wrapChild(m.childGen, cmd), true
	case demoEndMsg:
		if m.child == nil || msg.gen != m.childGen {
			return nil, true
		}
		name, closeEnv := m.child.demo.name, m.childClose
		m.child, m.childClose = nil, nil
		m.appendOut(m.theme.Dim.Render("demo " + name + " ended; back on " + m.env.ClusterID()))
		m.dirty = true
		return tea.Batch(m.refresh(), func() tea.Msg { return demoClosedMsg{closeEnv()} }), true
	case tea.KeyMsg, tea.MouseMsg:
		if m.child == nil {
			return nil, false
		}
		_, cmd := m.child.Update(msg)
		return wrapChild(m.childGen, cmd), true
	case tea.WindowSizeMsg:
		if m.child == nil {
			return nil, false
		}
		m.child.Update(msg)
		return nil, false // the outer shell takes the size too
	}
	return nil, false
}

// demoCommand is the shell's demo [NAME|FILE.hsm] [--auto DELAY]: without
// a name the list of demos, else the demo played in a shell of its own.
func (m *Model) demoCommand(args []string) tea.Cmd {
	fail := func(msg string) tea.Cmd {
		m.appendOut(renderResult(m.theme, commands.Result{ErrorCode: 1, Data: msg})...)
		return nil
	}
	if m.demo != nil && m.demo.phase != demoDone {
		return fail("demo: a demo is playing already; quit it first")
	}
	name, auto, err := parseDemoArgs(args)
	if err != nil {
		return fail("demo: " + err.Error() + "; usage: demo [NAME|FILE.hsm] [--auto DELAY]")
	}
	if name == "" {
		var b strings.Builder
		listDemos(&b, &b)
		m.appendOut(strings.TrimRight(b.String(), "\n"))
		return nil
	}
	title, text, err := readDemo(name)
	if err != nil {
		return fail("demo: " + err.Error())
	}
	child, closeEnv, err := newDemoModel(m.theme, config.Default(), title, text, auto)
	if err != nil {
		return fail("demo: " + err.Error())
	}
	child.width, child.height = m.width, m.height
	m.childGen++
	m.child, m.childClose = child, closeEnv
	m.appendOut(m.theme.Dim.Render("demo " + title + " plays on a fresh in-memory cluster; quit ends it and comes back here"))
	return wrapChild(m.childGen, child.Init())
}

// parseDemoArgs reads NAME and --auto DELAY (or --auto=DELAY).
func parseDemoArgs(args []string) (name string, auto time.Duration, err error) {
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--auto" || strings.HasPrefix(a, "--auto="):
			v, ok := strings.CutPrefix(a, "--auto=")
			if !ok {
				if i+1 >= len(args) {
					return "", 0, fmt.Errorf("--auto needs a delay, such as 3s")
				}
				i++
				v = args[i]
			}
			if auto, err = time.ParseDuration(v); err != nil || auto <= 0 {
				return "", 0, fmt.Errorf("--auto %q: give a delay such as 3s", v)
			}
		case name == "" && !strings.HasPrefix(a, "-"):
			name = a
		default:
			return "", 0, fmt.Errorf("unexpected %q", a)
		}
	}
	return name, auto, nil
}

// narrationBox is the demo's narration pane, w×h. When the narration is
// longer than the pane its end is cut, never the line saying what Enter
// does.
func (m *Model) narrationBox(w, h int) string {
	lines := m.demoLines(w - 2)
	if inner := h - 2; len(lines) > inner && inner >= 1 {
		status := lines[len(lines)-1]
		lines = append(lines[:inner-1:inner-1], status)
		if inner >= 2 {
			lines[inner-2] = strings.TrimRight(ansi.Truncate(lines[inner-2], w-3, ""), " ") + "…"
		}
	}
	return m.box(m.demoTitle(), lines, w, h)
}
