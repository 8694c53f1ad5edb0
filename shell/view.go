package shell

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/charmbracelet/lipgloss"
	"github.com/charmbracelet/x/ansi"

	"github.com/hsmsh/hsmsh/commands"
)

// Layout thresholds. From wideMinWidth × wideMinHeight up the output sits
// beside a column of panes (HSMs, keys, quorum tokens, events); below it
// the layout is compact: the key grid above the output, full width, with
// a line that sums up the HSMs, so the grid is there at 80×24 too.
const (
	wideMinWidth  = 110
	wideMinHeight = 20
	maxSuggest    = 6
	eventRows     = 8
)

// What the body of the screen shows.
const (
	layoutOutput  = iota // the output alone (Ctrl+L, or too little room)
	layoutCompact        // key grid, HSM summary line, output, one above the other
	layoutWide           // output | HSMs, keys, quorum tokens, events
)

// layout is the screen's geometry for the current size and content.
type layout struct {
	kind          int
	w, bodyH      int
	bottom        []string // suggestions, input line, status bar
	leftW, rightW int      // wide: the output's width and the panes'
	outH          int
	hsmH, keyH    int
	qH, evH       int
	narrH         int // the pane above the output: a token to sign, or the demo's narration (0: none)
}

func (m *Model) layout() layout {
	w, h := max(m.width, 20), max(m.height, 6)
	bottom := append(m.suggestView(w), m.inputView(w), m.statusView(w))
	lay := layout{kind: layoutOutput, w: w, bodyH: h - len(bottom), bottom: bottom, leftW: w}
	lay.outH = lay.bodyH
	if !m.showPanes {
		lay.narrH = m.topHeight(w, lay.bodyH)
		lay.outH -= lay.narrH
		return lay
	}
	bodyH := lay.bodyH
	keyNeed := m.keyPaneNeed()
	if w >= wideMinWidth && bodyH >= wideMinHeight {
		lay.kind = layoutWide
		lay.rightW = m.panesWidth(w)
		lay.leftW = w - lay.rightW
		lay.hsmH = min(2*len(m.hsms)+3, bodyH/3) // a line per HSM, and one for its TLS
		if len(m.tokens) > 0 {
			lay.qH = min(len(m.tokens)+3, bodyH/5) // pending quorum tokens, while there are any
		}
		avail := bodyH - lay.hsmH - lay.qH
		// The key pane takes what its rows need, up to all but a few
		// lines of events; the events take what they need of the rest,
		// and whatever is left goes back to the keys (room for new ones).
		evMin := min(eventRows+2, max(5, bodyH/8))
		lay.keyH = max(min(keyNeed, avail-evMin), min(5, avail-evMin))
		lay.evH = max(min(m.eventCount()+2, avail-lay.keyH), min(evMin, avail-lay.keyH))
		lay.keyH = avail - lay.evH
		// A demo's narration sits above the output, beside the panes.
		lay.narrH = m.topHeight(lay.leftW, bodyH)
		lay.outH = bodyH - lay.narrH
		return lay
	}
	// Compact: one line sums up the HSMs; the grid above the output, and
	// a demo's narration above both.
	lay.narrH = m.topHeight(w, bodyH)
	avail := bodyH - 1 - lay.narrH
	if avail < 9 {
		lay.outH = avail // too short for a grid: the output and the summary
		return lay
	}
	lay.kind = layoutCompact
	lay.keyH = max(min(keyNeed, avail*60/100), 5)
	lay.outH = avail - lay.keyH
	return lay
}

// panesWidth is the width of the wide layout's column of panes in a
// screen w wide: 45%, or more (leaving the output 50 columns) when the
// grid, or two clusters side by side, need it for two-cell marks and a
// useful label: 28 HSMs at 110 columns.
func (m *Model) panesWidth(w int) int {
	return max(w*45/100, min(max(gridWant(len(m.hsms)), m.compareWant())+2, w-50))
}

// View draws the whole screen.
func (m *Model) View() string {
	if m.child != nil {
		return m.child.View() // a demo plays in place of this shell
	}
	if m.quitting {
		return ""
	}
	if m.showHelp {
		return m.helpView()
	}
	lay := m.layout()
	w := lay.w
	var body string
	switch lay.kind {
	case layoutWide:
		rightW := lay.rightW
		panes := []string{
			m.box(m.hsmTitle(), m.hsmLines(rightW-2, lay.hsmH-2), rightW, lay.hsmH),
			m.box(m.keyTitle(), m.keyLines(rightW-2, lay.keyH-2), rightW, lay.keyH),
		}
		if lay.qH > 0 {
			panes = append(panes, m.box(fmt.Sprintf("Quorum tokens (%d)", len(m.tokens)), m.tokenLines(), rightW, lay.qH))
		}
		panes = append(panes, m.box("Events", m.eventLines(rightW-2, lay.evH-2), rightW, lay.evH))
		right := lipgloss.JoinVertical(lipgloss.Left, panes...)
		left := m.box("Output", m.outLines(lay.leftW-2, lay.outH-2), lay.leftW, lay.outH)
		if lay.narrH > 0 {
			left = lipgloss.JoinVertical(lipgloss.Left, m.topBox(lay.leftW, lay.narrH), left)
		}
		body = lipgloss.JoinHorizontal(lipgloss.Top, left, right)
	case layoutCompact:
		// Below the grid, the output or the events, one at a time
		// (Ctrl+T): there is no room for both beside the grid.
		lower := m.box(m.tabTitle(), m.outLines(w-2, lay.outH-2), w, lay.outH)
		if m.showEvents {
			lower = m.box(m.tabTitle(), m.eventLines(w-2, lay.outH-2), w, lay.outH)
		}
		body = lipgloss.JoinVertical(lipgloss.Left,
			m.box(m.keyTitle(), m.keyLines(w-2, lay.keyH-2), w, lay.keyH),
			ansi.Truncate(m.hsmSummary(), w, "…"),
			lower)
	default:
		if m.showPanes {
			body = lipgloss.JoinVertical(lipgloss.Left,
				m.box("Output", m.outLines(w-2, lay.outH-2), w, lay.outH),
				ansi.Truncate(m.hsmSummary(), w, "…"))
		} else {
			body = m.box("Output", m.outLines(w-2, lay.outH-2), w, lay.outH)
		}
	}
	if lay.narrH > 0 && lay.kind != layoutWide {
		body = lipgloss.JoinVertical(lipgloss.Left, m.topBox(w, lay.narrH), body)
	}
	return lipgloss.JoinVertical(lipgloss.Left, body, strings.Join(lay.bottom, "\n"))
}

// box draws a pane of exactly w×h cells with a title in its top border.
func (m *Model) box(title string, lines []string, w, h int) string {
	inner := max(h-2, 0)
	for len(lines) < inner {
		lines = append(lines, "")
	}
	lines = lines[:inner]
	for i, l := range lines {
		lines[i] = ansi.Truncate(l, max(w-2, 0), "…")
	}
	b := m.theme.Pane.Width(max(w-2, 0)).Height(inner).Render(strings.Join(lines, "\n"))
	// Put the title into the top border.
	first, rest, _ := strings.Cut(b, "\n")
	t := " " + ansi.Truncate(title, max(w-6, 0), "…") + " "
	if w >= 8 {
		first = ansi.Truncate(first, 2, "") + m.theme.PaneTitle.Render(t) + ansi.TruncateLeft(first, 2+ansi.StringWidth(t), "")
	}
	return first + "\n" + rest
}

func (m *Model) inputView(w int) string {
	p := m.theme.Prompt.Render(m.promptText())
	s := p + m.input.View()
	if m.running && m.ask == nil { // a question waits on the user, not the command
		s = m.spin.View() + " " + s
	}
	return ansi.Truncate(s, w, "…")
}

func (m *Model) suggestView(w int) []string {
	if len(m.suggestions) == 0 || m.mode != modeCommand {
		return nil
	}
	first := max(0, min(m.sugSel-maxSuggest/2, len(m.suggestions)-maxSuggest))
	var out []string
	for i := first; i < min(first+maxSuggest, len(m.suggestions)); i++ {
		s := m.suggestions[i]
		line := fmt.Sprintf(" %-28s ", s.Text) + m.theme.Dim.Render(s.Description)
		if i == m.sugSel {
			line = m.theme.Selected.Render(fmt.Sprintf(" %-28s %s", s.Text, s.Description))
		}
		out = append(out, ansi.Truncate(line, w, "…"))
	}
	if len(m.suggestions) > maxSuggest {
		out = append(out, m.theme.Dim.Render(fmt.Sprintf(" %d candidates: Tab or ↑↓ to choose, Enter to take", len(m.suggestions))))
	}
	return out
}

// nbHyphen stands in for "-" while a line is wrapped: a non-breaking
// hyphen, one cell wide as "-" is.
const nbHyphen = "\u2011"

// outLines is the visible part of the output, wrapped to the pane.
func (m *Model) outLines(w, h int) []string {
	if h <= 0 {
		return nil
	}
	var rev []string
	skip := m.outScroll
	for i := len(m.out) - 1; i >= 0 && len(rev) < h+skip; i-- {
		// At spaces; a word longer than the line is cut. Not at hyphens,
		// where ansi.Wrap would break too: "--hash-" at the end of one
		// line and "function" on the next is no way to show a flag.
		line := strings.ReplaceAll(m.out[i], "-", nbHyphen)
		wrapped := strings.Split(strings.ReplaceAll(ansi.Wrap(line, max(w, 1), ""), nbHyphen, "-"), "\n")
		for j := len(wrapped) - 1; j >= 0; j-- {
			rev = append(rev, wrapped[j])
		}
	}
	if skip > len(rev) {
		skip = len(rev)
	}
	rev = rev[skip:]
	if len(rev) > h {
		rev = rev[:h]
	}
	out := make([]string, len(rev))
	for i, l := range rev {
		out[len(rev)-1-i] = l
	}
	if m.outScroll > 0 && len(out) > 0 {
		out[0] = m.theme.Dim.Render(fmt.Sprintf("↑ scrolled %d lines (PgDn to return)", m.outScroll))
	}
	return out
}

func (m *Model) outHeight() int { return max(m.height-4, 3) }

// stateStyle is an HSM's state as the HSM pane shows it: a destroyed HSM
// (its keys gone with it) is told apart from one that is only down.
func (m *Model) stateStyle(state string) string {
	word := fmt.Sprintf("%-9s", state)
	switch state {
	case "active":
		return m.theme.Present.Render("● " + word)
	case "down":
		return m.theme.Down.Render("✗ " + word)
	case "destroyed":
		return m.theme.Error.Render("× " + word)
	}
	return m.theme.Warn.Render("◐ " + word)
}

func (m *Model) hsmLines(w, h int) []string {
	var out []string
	// Each HSM's nested TLS connection, as its last handshake left it —
	// both layers ok, or which layer failed and why — on a line of its
	// own when the pane has room, else as a word at the end of the HSM's.
	roomy := 2*len(m.hsms) <= h
	for _, x := range m.hsms {
		count := x.Keys() // "?": a down HSM cannot say what it holds
		failed := strings.Contains(x.TLS, "failed") || strings.HasPrefix(x.TLS, "not connected")
		style := m.theme.Dim
		if failed {
			style = m.theme.Error
		}
		line := fmt.Sprintf("%-7s %s  keys %-5s ", x.ID+leaderMark(x, " "), m.stateStyle(string(x.State)), count)
		if x.State == "active" {
			line += fmt.Sprintf("lat %4.0fms  ", x.LatencyMS) // nothing else answers to be timed
		}
		if roomy {
			out = append(out, line+m.theme.Dim.Render(x.Address), style.Render("    TLS "+x.TLS))
			continue
		}
		word := "tls ok"
		switch {
		case strings.HasPrefix(x.TLS, "not connected"):
			word = "tls not connected" // the state says why
		case failed:
			word = "tls ✗"
		case strings.HasPrefix(x.TLS, "none"):
			word = "no tls"
		}
		out = append(out, line+style.Render(word)+"  "+m.theme.Dim.Render(x.Address))
	}

	return out
}

// tokenLines lists live quorum tokens: service, requester, what it is
// bound to, time left, and whether it has been used.
func (m *Model) tokenLines() []string {
	out := []string{m.theme.Dim.Render(fmt.Sprintf("%-15s %-10s %6s  %s", "service", "requester", "left", "approves"))}
	for _, t := range m.tokens {
		what := t.Command
		if what == "" {
			what = "any " + t.Service + " operation"
		}
		left := fmt.Sprintf("%ds", t.SecondsLeft)
		line := fmt.Sprintf("%-15s %-10s %6s  %s", t.Service, t.Requester, left, what)
		if t.Used {
			out = append(out, m.theme.Dim.Render(line+"  (used)"))
			continue
		}
		out = append(out, line)
	}
	return out
}

// leaderMark is the mark of the HSM that leads the domain state's
// consensus group (raft), after sep; "" for the others.
func leaderMark(x commands.HSMInfo, sep string) string {
	if x.Raft != nil && x.Raft.Role == "leader" {
		return sep + "★"
	}
	return ""
}

// hsmTitle is the HSM pane's title: the cluster, and what ★ marks, or
// that no HSM leads the domain state (an election, or no majority).
func (m *Model) hsmTitle() string {
	t := "HSMs · " + m.env.ClusterID()
	grouped := false
	for _, x := range m.hsms {
		if leaderMark(x, " ") != "" {
			return t + " · ★ leader"
		}
		grouped = grouped || x.Raft != nil
	}
	if grouped {
		t += " · no leader"
	}
	return t
}

// hsmSummary is the compact layout's line for the HSMs: each one's state
// and key count ("?" while it cannot say), down and destroyed told apart,
// ★ for ● on the leader of the domain state.
func (m *Model) hsmSummary() string {
	parts := make([]string, 0, len(m.hsms))
	grouped, led := false, false
	for _, x := range m.hsms {
		grouped = grouped || x.Raft != nil
		led = led || leaderMark(x, "") != ""
		switch x.State {
		case "active":
			dot := "●"
			if leaderMark(x, "") != "" {
				dot = "★" // the leader is up: its star says active too
			}
			parts = append(parts, fmt.Sprintf("%s %s:%s", m.theme.Present.Render(dot), x.ID, x.Keys()))
		case "destroyed":
			parts = append(parts, m.theme.Error.Render(fmt.Sprintf("× %s:%s destroyed", x.ID, x.Keys())))
		default:
			parts = append(parts, m.theme.Down.Render(fmt.Sprintf("✗ %s:%s %s", x.ID, x.Keys(), x.State)))
		}
	}
	tail := fmt.Sprintf("   keys %d", len(m.keys))
	if grouped && !led {
		// An election, or no majority: the domain state cannot change.
		tail = fmt.Sprintf("   no leader · keys %d", len(m.keys))
	}
	if len(m.tokens) > 0 {
		tail += fmt.Sprintf(" · quorum tokens %d", len(m.tokens))
	}

	return " " + strings.Join(parts, "  ") + m.theme.Dim.Render(tail+" · Ctrl+L panes")
}

func (m *Model) keyTitle() string {
	t := fmt.Sprintf("Keys (%d) · %s", len(m.visibleKeys()), m.env.ClusterID())
	if m.compare != "" {
		t += " | " + m.compare
	}
	if m.keyFilter != "" {
		t += " filter: " + m.keyFilter
	}
	if m.compare == "" {
		t += " · " + m.keySort.String() + " (Ctrl+O)"
	}
	return t
}

func shortType(k commands.KeyView) string {
	switch k.Class {
	case "public-key":
		return k.Type + "/pub"
	case "private-key":
		return k.Type + "/prv"
	}
	if k.Type == "generic-secret" {
		return "secret"
	}
	return k.Type
}

func trunc(s string, n int) string {
	if ansi.StringWidth(s) <= n {
		return s
	}
	return ansi.Truncate(s, n, "…")
}

// newsworthy is whether the event log shows an event: a sync pass that
// changed nothing is not news.
func newsworthy(ev commands.Event) bool {
	return ev.Kind != "sync-started" && (ev.Kind != "sync-finished" || ev.Count != 0)
}

// eventCount is how many lines the event log has to show.
func (m *Model) eventCount() int {
	n := 0
	for _, ev := range m.events {
		if newsworthy(ev) {
			n++
		}
	}
	return max(n, 1)
}

// tabTitle is the compact layout's lower pane title: which tab shows, the
// other one with the events that came since the events were last shown,
// and the key that switches.
func (m *Model) tabTitle() string {
	if m.showEvents {
		return "Events · Output: Ctrl+T"
	}
	if m.unseenEvents > 0 {
		return fmt.Sprintf("Output · Events (%d new): Ctrl+T", m.unseenEvents)
	}
	return "Output · Events: Ctrl+T"
}

func (m *Model) eventLines(w, h int) []string {
	var out []string
	for _, ev := range m.events {
		if len(out) >= h {
			break
		}
		if !newsworthy(ev) {
			continue
		}
		style := m.theme.Output
		switch ev.Kind {
		case "key-lost", "hsm-destroyed", "cleanup-failed":
			style = m.theme.Error
		case "hsm-down", "hsm-restarted", "session-keys-destroyed", "leader-lost":
			style = m.theme.Warn
		case "key-synced", "key-replicated", "hsm-up", "leader-elected":
			style = m.theme.OK
		}
		text := fmt.Sprintf("%s %s", ev.Time.Format("15:04:05"), ev.Kind)
		// A key by its label first, as people name it; its reference
		// after, to tell two keys of one label apart.
		label := ev.Label
		if label == "" && ev.Ref != "" {
			if label = m.evLabels[ev.Ref]; label == "" {
				label = m.labelOf(ev.Ref)
			}
		}
		detail := ev.Detail
		if ev.HSM != "" {
			// "hsm-3 leads the domain state": the HSM is said already.
			detail = strings.TrimPrefix(detail, ev.HSM+" ")
		}
		switch {
		case label == "":
		case detail == label:
			detail = "" // key-created says the label in its detail
		case detail == "session key "+label:
			detail = "(session key)"
		}
		for _, f := range []string{ev.HSM, label, ev.Ref, detail} {
			if f != "" {
				text += " " + f
			}
		}
		out = append(out, style.Render(text))
	}
	if len(out) == 0 {
		out = append(out, m.theme.Dim.Render("no events yet"))
	}
	return out
}

func (m *Model) statusView(w int) string {
	parts := statusParts(m.env)
	parts[0] = " " + parts[0]
	s := strings.Join(parts, " │ ")
	right := "? help "
	switch {
	case m.quitArmed:
		right = "press Ctrl+C again (or type quit) to leave hsmsh "
	case m.ask != nil:
		right = trunc(m.runLine, 30) + " waits for you · Enter · Esc cancels "
	case m.running:
		right = fmt.Sprintf("running %s (%.0fs) · Ctrl+C cancels ", trunc(m.runLine, 30), time.Since(m.runStart).Seconds())
	}
	pad := w - ansi.StringWidth(s) - ansi.StringWidth(right)
	if pad < 1 {
		s = ansi.Truncate(s, max(w-ansi.StringWidth(right)-1, 0), "…")
		pad = max(w-ansi.StringWidth(s)-ansi.StringWidth(right), 0)
	}
	return m.theme.Status.Render(ansi.Truncate(s+strings.Repeat(" ", pad)+right, w, ""))
}

var keyHelp = [][2]string{
	{"Enter", "run the command"},
	{"Tab", "complete; again to move through the candidates"},
	{"↑ ↓", "history (or move through candidates)"},
	{"Ctrl+R", "search the history"},
	{"PgUp PgDn / wheel", "scroll the output"},
	{"Shift+↑ Shift+↓", "scroll the key pane"},
	{"Ctrl+F", "filter the key pane (Esc clears)"},
	{"Ctrl+O", "order the key pane: newest, oldest, by label"},
	{"Ctrl+L", "show or hide the panes"},
	{"Ctrl+T", "below 110 columns: the output or the events"},
	{"Ctrl+C", "cancel the running command; clear the line; twice on an empty line quits"},
	{"? or F1", "this help"},
	{"help [COMMAND]", "the commands, or one command's flags"},
	{"demo [NAME]", "the teaching demos; one played step by step (Enter)"},
	{"quit", "leave hsmsh"},
}

func (m *Model) helpView() string {
	w, h := max(m.width, 20), max(m.height, 6)
	inner := max(w-2, 1)
	lines := []string{m.theme.Title.Render("hsmsh key bindings") + m.theme.Dim.Render(" — press any key to return"), ""}
	// Wrap at words to the box, so nothing is cut at 80 columns: a
	// binding's text continues under itself.
	const keyW = 20
	descW := max(inner-keyW-3, 10)
	for _, k := range keyHelp {
		for i, part := range strings.Split(ansi.Wrap(k[1], descW, ""), "\n") {
			key := ""
			if i == 0 {
				key = k[0]
			}
			// Pad before styling: escape codes would count as width.
			lines = append(lines, "  "+m.theme.Prompt.Render(fmt.Sprintf("%-*s", keyW, key))+" "+part)
		}
	}
	lines = append(lines, "")
	for _, part := range strings.Split(ansi.Wrap("Key pane: ● present  ○ missing  ◆ just copied (syncing)  - HSM down  × HSM destroyed  ✗ LOST  ! breaks availability or minimum nodes  * session key (· never on that HSM)", inner-2, ""), "\n") {
		lines = append(lines, m.theme.Dim.Render(part))
	}
	return m.box("Help", lines, w, h)
}

// compareLines draws the key pane for two clusters side by side: a row per
// key of either, a column per HSM of each, so a teacher can show a key
// missing from a clone until key replicate copies it. Like the grid, its
// label column is as wide as the room allows, the key-reference shows
// only beside whole labels, the rows are in the grid's order (the current
// cluster's keys, then the other's own) and a line says what is below.
func (m *Model) compareLines(w, h int) []string {
	a, b := m.env.ClusterID(), m.cmp
	rows := m.compareRows()
	idsA, idsB := commands.SortedHSMIDs(m.hsms), commands.SortedHSMIDs(b.hsms)
	stA, stB := map[string]string{}, map[string]string{}
	for _, x := range m.hsms {
		stA[x.ID] = string(x.State)
	}
	for _, x := range b.hsms {
		stB[x.ID] = string(x.State)
	}
	c := compareLayout(w, len(a), len(idsA), len(b.id), len(idsB), m.cmpCache.maxLabel)
	cols := func(ids []string) string {
		var s strings.Builder
		for _, id := range ids {
			s.WriteString(fmt.Sprintf("%-2s", strings.TrimPrefix(id, "hsm-")))
		}
		return s.String()
	}
	prefix := func(label, ref string) string {
		s := pad(label, c.label) + " "
		if c.ref > 0 {
			s += pad(ref, c.ref) + " "
		}
		return s
	}
	head := prefix("", "") + pad(a, c.wA) + " │ " + b.id
	sub := prefix("label", "key-reference") + pad(cols(idsA), c.wA) + " │ " + cols(idsB)
	out := []string{m.theme.Dim.Render(head), m.theme.Dim.Render(sub)}
	if b.err != "" {
		out = append(out, m.theme.Warn.Render(trunc(b.err, w)))
	}
	if len(rows) == 0 {
		return append(out, m.theme.Dim.Render("no keys"))
	}
	mk := m.marks()
	side := func(k *commands.KeyView, ids []string, st map[string]string) string {
		var s strings.Builder
		for _, id := range ids {
			if k == nil {
				if st[id] != "active" {
					s.WriteString(mk.down)
				} else {
					s.WriteString(mk.missing)
				}
			} else {
				s.WriteString(m.cellMark(&mk, *k, id, st[id]))
			}
			s.WriteByte(' ')
		}
		return s.String()
	}
	start, n, hint := gridWindow(len(rows), h-len(out), m.keyScroll)
	for _, r := range rows[start : start+n] {
		line := prefix(r.label, r.ref) + side(r.k[0], idsA, stA) + strings.Repeat(" ", max(0, c.wA-2*len(idsA))) + " │ " + side(r.k[1], idsB, stB)
		out = append(out, line)
	}
	if hint {
		var parts []string
		if below := len(rows) - start - n; below > 0 {
			parts = append(parts, fmt.Sprintf("↓ %d more below", below))
		}
		if start > 0 {
			parts = append(parts, fmt.Sprintf("↑ %d above", start))
		}
		parts = append(parts, "Shift+↑↓ scrolls")
		out = append(out, m.theme.Dim.Render(trunc(strings.Join(parts, " · "), w)))
	}
	return out
}

// compareRow is a key of either cluster in the side-by-side pane.
type compareRow struct {
	ref, label string
	k          [2]*commands.KeyView // the current cluster's copy, the other's
}

// compareCache is the side-by-side pane's rows as last merged, and their
// widest label; rebuilt when either cluster's keys, the filter or the
// order change, not every frame (10,000 keys a side take milliseconds).
type compareCache struct {
	cur      []commands.KeyView // the grid's rows they were merged from
	other    *clusterView
	rows     []compareRow
	maxLabel int
}

// compareRows is the side-by-side pane's rows: the current cluster's keys
// in the grid's order, then the keys only the other cluster has, by label.
func (m *Model) compareRows() []compareRow {
	cur := m.visibleKeys()
	if c := &m.cmpCache; c.other != nil && c.other == m.cmp && sameSlice(c.cur, cur) {
		return c.rows
	}
	byRef := make(map[string]int, len(cur))
	rows := make([]compareRow, 0, len(cur))
	for i := range cur {
		byRef[cur[i].Ref] = len(rows)
		rows = append(rows, compareRow{ref: cur[i].Ref, label: cur[i].Label, k: [2]*commands.KeyView{&cur[i], nil}})
	}
	var only []compareRow
	for i := range m.cmp.keys {
		k := &m.cmp.keys[i]
		if j, ok := byRef[k.Ref]; ok {
			rows[j].k[1] = k
			continue
		}
		only = append(only, compareRow{ref: k.Ref, label: k.Label, k: [2]*commands.KeyView{nil, k}})
	}
	slices.SortFunc(only, func(x, y compareRow) int {
		if c := strings.Compare(x.label, y.label); c != 0 {
			return c
		}
		return strings.Compare(x.ref, y.ref)
	})
	rows = append(rows, only...)
	maxLabel := 0
	for _, r := range rows {
		maxLabel = max(maxLabel, labelWidth(r.label))
	}
	m.cmpCache = compareCache{cur: cur, other: m.cmp, rows: rows, maxLabel: maxLabel}
	return rows
}

// compareCols is the side-by-side pane's column widths.
type compareCols struct {
	label, ref int // 0 hides the reference
	wA         int // the current cluster's block: its name or its marks
}

// compareLayout sizes the side-by-side pane's columns for a pane w wide:
// both clusters' marks always; the label as wide as there is room, up to
// the widest; the key-reference only beside whole labels.
func compareLayout(w, nameA, nA, nameB, nB, maxLabel int) compareCols {
	c := compareCols{wA: max(nameA, 2*nA)}
	fixed := c.wA + 3 + max(nameB, 2*nB) + 1
	want := max(maxLabel, 5)
	r := w - fixed
	if r-(refColW+1) >= want {
		c.ref = refColW
		r -= refColW + 1
	}
	c.label = max(min(r, want), 1)
	return c
}

// compareWant is the width the side-by-side pane wants: both blocks of
// marks and a label of labelWant cells.
func (m *Model) compareWant() int {
	if m.cmp == nil {
		return 0
	}
	return max(len(m.env.ClusterID()), 2*len(m.hsms)) + 3 + max(len(m.cmp.id), 2*len(m.cmp.hsms)) + 1 + labelWant + 1
}
