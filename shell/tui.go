package shell

import (
	"context"
	"fmt"
	"strings"
	"time"

	prompt "github.com/c-bata/go-prompt"
	"github.com/charmbracelet/bubbles/spinner"
	"github.com/charmbracelet/bubbles/textinput"
	tea "github.com/charmbracelet/bubbletea"

	"github.com/hsmsh/hsmsh/commands"
	"github.com/hsmsh/hsmsh/shell/completion"
	"github.com/hsmsh/hsmsh/themes"
)

// Limits that keep the shell's memory bounded however long it stays open.
const (
	maxOutputLines = 5000
	maxEvents      = 500
	refreshEvery   = 500 * time.Millisecond
	// recentFor is how long a fresh copy of a key shows as "syncing".
	recentFor = 2 * time.Second
)

// Messages of the shell's model.
type (
	// resultMsg is a command that finished.
	resultMsg struct {
		id   int // which run (a cancelled run's late result is told apart)
		res  commands.Result
		took time.Duration
	}
	eventsMsg   []commands.Event
	snapshotMsg struct {
		hsms   []commands.HSMInfo
		keys   []commands.KeyView
		tokens []commands.TokenView
		err    error
		cmp    *clusterView // the cluster compared side by side, if any
		who    string       // user@cluster the keys were read as
	}
	tickMsg time.Time
)

// mode is what the input line is being used for.
type mode int

const (
	modeCommand mode = iota
	modeSecret       // a masked password
	modeSearch       // Ctrl+R history search
	modeFilter       // the key pane's filter
	modeAsk          // a running command's question (ask.go)
)

// lostKey is a key the cluster reported lost, kept on the key pane so the
// class sees it die.
type lostKey struct {
	ref, label string
	at         time.Time
}

// Model is the full-screen shell. Commands run in the background (tea.Cmd),
// so the panes keep updating from the cluster's events while one runs.
type Model struct {
	env     *commands.Env
	runner  *commands.Runner
	theme   themes.Theme
	comp    *completion.Completer
	dataDir string
	hist    *History
	histFor string              // the cluster and user the loaded history belongs to
	hists   map[string]*History // every history loaded, so one kept in memory (--ephemeral) survives a logout

	width, height int
	input         textinput.Model
	mode          mode
	spin          spinner.Model

	out       []string // rendered output lines, oldest first
	outScroll int      // lines scrolled up from the bottom

	running  bool
	cancel   context.CancelFunc
	runLine  string
	runStart time.Time
	runID    int            // the current run's number
	late     map[int]string // cancelled runs still finishing: id → line
	// ask is the question the running command waits on (modeAsk): a
	// token to sign, or a line to type.
	ask *askReq

	// secret entry: the words waiting for a password, and what was typed.
	pending    []string
	secretFlag string
	confirm    bool
	firstEntry string

	histPos     int // position while browsing history with Up/Down
	searchQuery string
	searchHit   int
	draft       string

	// The completion list: the candidates, the one selected (-1 none),
	// where the word they replace starts, and the line (and cursor, a
	// byte offset) as it was before a candidate was previewed in it.
	suggestions []prompt.Suggest
	sugSel      int
	sugStart    int
	sugBase     string
	sugBasePos  int

	events    []commands.Event // newest first
	evCh      <-chan commands.Event
	evCluster string // the cluster the events come from
	// compare is a second cluster whose keys the key pane shows beside the
	// current one's (the clone-and-replicate demo); cmp its last state.
	compare   string
	cmp       *clusterView
	evCancel  func()
	hsms      []commands.HSMInfo
	keys      []commands.KeyView
	tokens    []commands.TokenView // live quorum tokens, for the Quorum pane
	lost      []lostKey
	recent    map[string]time.Time // ref+"@"+hsm → when a copy arrived
	keyScroll int
	keyFilter string
	// The grid's order: keySort, and when the shell first learnt of each
	// key (see keyStamp); keyCache the sorted, filtered rows.
	keySort    keySort
	seen       map[string]keyStamp
	created    map[string]time.Time // key-created events not yet in a snapshot
	snapN      int                  // snapshots taken
	keysVer    int                  // bumped when the keys or their stamps change
	keyCache   keyCache
	cmpCache   compareCache
	dirty      bool
	refreshing bool
	// A failed refresh keeps the last good keys (keysWho: read as whom);
	// snapFails counts failures in a row, snapOK is the last success.
	snapErr   error
	snapFails int
	snapOK    time.Time
	keysWho   string

	showPanes bool
	showHelp  bool
	// The compact layout shows the output or the events (Ctrl+T); the
	// events that arrived while the output showed are counted in its
	// title.
	showEvents   bool
	unseenEvents int
	// evLabels are the labels events gave keys (key-created says it in
	// its detail), so the log names a key a later event only references
	// (cleanup-done) and one no snapshot lists any more.
	evLabels  map[string]string
	labels    map[string]string // the listed keys' labels by reference
	quitArmed bool
	quitting  bool

	// demo plays a demo file in this shell (demoplay.go); child is the
	// shell a demo command started, drawn in this one's place until it
	// quits, on a cluster of its own that childClose ends.
	demo       *demoPlayer
	child      *Model
	childClose func() error
	childGen   int
}

// NewModel makes the shell's model. dataDir holds the per-user history
// ("" keeps it in memory).
func NewModel(env *commands.Env, runner *commands.Runner, th themes.Theme, dataDir string) *Model {
	in := textinput.New()
	in.Focus()
	in.CharLimit = 4096
	in.Prompt = ""
	sp := spinner.New()
	sp.Spinner = spinner.Dot
	m := &Model{
		env: env, runner: runner, theme: th, dataDir: dataDir,
		// Completion runs in Update, so its reads must never wait:
		// liveSource reads the session, which a login waiting on its MFA
		// token does not hold.
		comp:      &completion.Completer{Tree: runner.Tree, Source: &liveSource{env: env}, Dir: env.Dir},
		input:     in,
		spin:      sp,
		recent:    map[string]time.Time{},
		showPanes: true,
		width:     100, height: 30,
		dirty: true,
	}
	m.loadHistory()
	m.out = append(m.out, th.Title.Render("hsmsh "+Version)+th.Dim.Render("  — type help for commands, ? for keys, Ctrl+L toggles panes, quit to leave"))
	return m
}

// liveSource gives completion the values the cluster knows now.
type liveSource struct{ env *commands.Env }

func (s *liveSource) HSMIDs() []string {
	return commands.SortedHSMIDs(s.env.HSMs(context.Background()))
}
func (s *liveSource) Usernames() []string {
	return s.env.Usernames(context.Background())
}
func (s *liveSource) KeyLabels() []string {
	keys, _ := s.env.Keys(context.Background())
	seen := map[string]bool{}
	var out []string
	for _, k := range keys {
		if !seen[k.Label] {
			seen[k.Label] = true
			out = append(out, k.Label)
		}
	}
	return out
}
func (s *liveSource) Keys() []completion.KeyInfo {
	keys, _ := s.env.Keys(context.Background())
	out := make([]completion.KeyInfo, len(keys))
	for i, k := range keys {
		out[i] = completion.KeyInfo{Ref: k.Ref, Label: k.Label, Class: k.Class, Type: k.Type}
	}
	return out
}
func (s *liveSource) KeyRefs() []string {
	keys, _ := s.env.Keys(context.Background())
	out := make([]string, len(keys))
	for i, k := range keys {
		out[i] = k.Ref
	}
	return out
}
func (s *liveSource) SettingNames() []string {
	var out []string
	for _, st := range s.env.Config.Settings() {
		out = append(out, st.Name)
	}
	return out
}

func (m *Model) loadHistory() {
	user, _, _ := m.env.Who()
	id := m.env.ClusterID() + "\x00" + user
	if m.hist != nil && m.histFor == id {
		return
	}
	if m.hists == nil {
		m.hists = map[string]*History{}
	}
	h, ok := m.hists[id]
	if !ok {
		var err error
		h, err = LoadHistory(historyPath(m.dataDir, m.env.ClusterID(), user))
		if err != nil {
			m.appendOut(m.theme.Warn.Render("history: " + err.Error()))
		}
		m.hists[id] = h
	}
	m.hist, m.histFor = h, id
	m.histPos = len(h.Lines())
}

// Init starts following the cluster's events and the refresh tick.
func (m *Model) Init() tea.Cmd {
	m.evCh, m.evCancel = m.env.Subscribe(4096)
	m.evCluster = m.env.ClusterID()
	var demo tea.Cmd
	if m.demo != nil {
		demo = m.startDemo(m.demo)
	}
	return tea.Batch(textinput.Blink, waitEvents(m.evCh), tick(), m.refresh(), demo)
}

func tick() tea.Cmd {
	return tea.Tick(refreshEvery, func(t time.Time) tea.Msg { return tickMsg(t) })
}

// waitEvents returns the next batch of events: one blocking read, then
// whatever else is already queued, so a burst costs one redraw.
func waitEvents(ch <-chan commands.Event) tea.Cmd {
	return func() tea.Msg {
		ev, ok := <-ch
		if !ok {
			return nil
		}
		batch := eventsMsg{ev}
		for len(batch) < 1024 {
			select {
			case ev, ok := <-ch:
				if !ok {
					return batch
				}
				batch = append(batch, ev)
			default:
				return batch
			}
		}
		return batch
	}
}

// refresh reads the cluster's state for the panes in the background.
func (m *Model) refresh() tea.Cmd {
	if m.refreshing {
		return nil
	}
	m.refreshing, m.dirty = true, false
	env, compare := m.env.Current(), m.compare
	who := whoOf(env)
	return func() tea.Msg {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		keys, err := env.Keys(ctx)
		tokens, terr := env.Tokens(ctx)
		if err == nil {
			err = terr
		}
		msg := snapshotMsg{hsms: env.HSMs(ctx), keys: keys, tokens: tokens, err: err, who: who}
		if compare != "" {
			msg.cmp = viewCluster(ctx, env, compare)
		}
		return msg
	}
}

func (m *Model) appendOut(lines ...string) {
	for _, l := range lines {
		m.out = append(m.out, strings.Split(l, "\n")...)
	}
	if over := len(m.out) - maxOutputLines; over > 0 {
		m.out = append(m.out[:0], m.out[over:]...)
	}
}

// promptText is the prompt: hsmsh [user@cluster] > , or what a mode asks.
func (m *Model) promptText() string {
	switch m.mode {
	case modeSecret:
		if m.firstEntry != "" {
			return "Confirm password: "
		}
		return "Password: "
	case modeSearch:
		return fmt.Sprintf("(history search) '%s': ", m.searchQuery)
	case modeFilter:
		return "filter keys > "
	case modeAsk:
		return m.askPrompt()
	}
	return promptFor(m.env)
}

// Update handles one message.
func (m *Model) Update(msg tea.Msg) (tea.Model, tea.Cmd) {
	if cmd, handled := m.childUpdate(msg); handled {
		return m, cmd
	}
	switch msg := msg.(type) {
	case demoTimerMsg:
		return m, m.demoTimer(msg)
	case demoClosedMsg:
		if msg.err != nil {
			m.appendOut(m.theme.Warn.Render("demo: close its cluster: " + msg.err.Error()))
		}
		return m, nil
	case tea.WindowSizeMsg:
		m.width, m.height = msg.Width, msg.Height
		m.clampKeyScroll() // a taller pane shows more rows: no blank ones past the end
		return m, nil
	case tea.KeyMsg:
		return m.key(msg)
	case tea.MouseMsg:
		switch msg.Button {
		case tea.MouseButtonWheelUp:
			m.scrollOut(3)
		case tea.MouseButtonWheelDown:
			m.scrollOut(-3)
		}
		return m, nil
	case resultMsg:
		return m.finished(msg)
	case askMsg:
		return m.asked(msg)
	case eventsMsg:
		m.takeEvents(msg)
		return m, tea.Batch(waitEvents(m.evCh), m.refreshIfDirty())
	case snapshotMsg:
		m.refreshing = false
		m.hsms, m.cmp = msg.hsms, msg.cmp
		if msg.err != nil {
			// A refresh can race an HSM rejoining its domain (after lab
			// hsm fail --destroy and recover), or find no HSM answering
			// for a moment: the panes keep the last good keys and
			// tokens (of the same user) rather than show none, and the
			// next tick tries again. staleNote says so if it persists.
			m.snapErr = msg.err
			m.snapFails++
			if msg.who != m.keysWho {
				m.keys, m.tokens, m.keysWho = nil, nil, msg.who
			}
			m.dirty = true
			m.clampKeyScroll()
			return m, nil
		}
		m.keys, m.tokens, m.keysWho = msg.keys, msg.tokens, msg.who
		m.snapErr, m.snapFails, m.snapOK = nil, 0, time.Now()
		m.noteKeys(msg.keys)
		m.clampKeyScroll()
		return m, nil
	case tickMsg:
		return m, tea.Batch(tick(), m.refreshIfDirty())
	case spinner.TickMsg:
		if !m.running {
			return m, nil
		}
		var cmd tea.Cmd
		m.spin, cmd = m.spin.Update(msg)
		return m, cmd
	}
	return m, nil
}

// whoOf is who the panes read the cluster as: user@cluster.
func whoOf(env *commands.Env) string {
	user, _, _ := env.Who()
	return user + "@" + env.ClusterID()
}

// staleAfter is how many refreshes in a row must fail before the panes
// say so: one that races a rejoin succeeds at the next tick.
const staleAfter = 3

// staleNote says, once refreshes have kept failing, that the keys shown
// are those of the last good one, and why the newer ones failed.
func (m *Model) staleNote() string {
	if m.snapErr == nil || m.snapFails < staleAfter {
		return ""
	}
	if m.snapOK.IsZero() {
		return "cannot read the keys: " + m.snapErr.Error()
	}
	return "keys as of " + m.snapOK.Format("15:04:05") + "; refresh failing: " + m.snapErr.Error()
}

func (m *Model) refreshIfDirty() tea.Cmd {
	if m.dirty {
		return m.refresh()
	}
	return nil
}

func (m *Model) takeEvents(evs eventsMsg) {
	if m.evLabels == nil || len(m.evLabels) > 4*maxEvents {
		m.evLabels = map[string]string{} // bounded: older keys fall back to the key list
	}
	for _, ev := range evs {
		if ev.Ref != "" {
			if ev.Label != "" {
				m.evLabels[ev.Ref] = ev.Label
			} else if ev.Kind == "key-created" && ev.Detail != "" {
				m.evLabels[ev.Ref] = strings.TrimPrefix(ev.Detail, "session key ")
			}
		}
		switch ev.Kind {
		case "key-synced", "key-replicated":
			m.recent[ev.Ref+"@"+ev.HSM] = ev.Time
		case "key-lost":
			label := ev.Label
			if label == "" {
				label = m.labelOf(ev.Ref)
			}
			m.lost = append(m.lost, lostKey{ref: ev.Ref, at: ev.Time, label: label})
		case "key-created":
			m.noteCreated(ev.Ref, ev.Time)
		}
	}
	// The compact layout's output tab counts the events it hides.
	if !m.showEvents && m.layout().kind == layoutCompact {
		for _, ev := range evs {
			if newsworthy(ev) {
				m.unseenEvents++
			}
		}
	}
	// Newest first: the batch reversed, then what came before, cut to
	// the newest maxEvents.
	next := make([]commands.Event, 0, min(len(evs)+len(m.events), maxEvents))
	for i := len(evs) - 1; i >= 0 && len(next) < maxEvents; i-- {
		next = append(next, evs[i])
	}
	for _, ev := range m.events {
		if len(next) == maxEvents {
			break
		}
		next = append(next, ev)
	}
	m.events = next
	for k, t := range m.recent {
		if time.Since(t) > recentFor {
			delete(m.recent, k)
		}
	}
	m.dirty = true
}

// labelOf is a listed key's label: the event log asks for every line of
// every frame, so it is looked up in the index noteKeys builds.
func (m *Model) labelOf(ref string) string {
	return m.labels[ref]
}

func (m *Model) scrollOut(n int) {
	m.outScroll = max(0, min(m.outScroll+n, len(m.out)-1))
}

func (m *Model) key(k tea.KeyMsg) (tea.Model, tea.Cmd) {
	if m.showHelp {
		m.showHelp = false
		if k.String() != "ctrl+c" {
			return m, nil
		}
	}
	if m.demo != nil && m.demo.phase == demoTyping {
		// The player owns the line while it types a command: Enter runs
		// it at once, Ctrl+C stops the player; other keys wait.
		switch k.String() {
		case "enter":
			return m, m.demoEnter()
		case "ctrl+c":
			m.demoInterrupt()
			return m, nil
		}
		return m, nil
	}
	switch k.String() {
	case "ctrl+c":
		return m.interrupt()
	case "ctrl+l":
		m.showPanes = !m.showPanes
		return m, nil
	case "ctrl+t":
		m.showEvents = !m.showEvents
		m.unseenEvents = 0
		return m, nil
	case "ctrl+o":
		m.keySort = (m.keySort + 1) % sortCount
		m.keyScroll = 0
		return m, nil
	case "f1":
		m.showHelp = true
		return m, nil
	case "pgup":
		m.scrollOut(m.outHeight() - 1)
		return m, nil
	case "pgdown":
		m.scrollOut(-(m.outHeight() - 1))
		return m, nil
	case "shift+up", "ctrl+up":
		m.keyScroll--
		m.clampKeyScroll()
		return m, nil
	case "shift+down", "ctrl+down":
		m.keyScroll++
		m.clampKeyScroll()
		return m, nil
	}
	m.quitArmed = false
	switch m.mode {
	case modeSecret:
		return m.secretKey(k)
	case modeSearch:
		return m.searchKey(k)
	case modeFilter:
		return m.filterKey(k)
	case modeAsk:
		return m.askKey(k)
	}
	return m.commandKey(k)
}

// interrupt is Ctrl+C: cancel the running command; clear a typed line; on
// an empty line, warn once and quit on the second.
func (m *Model) interrupt() (tea.Model, tea.Cmd) {
	switch {
	case m.running:
		// Cancel the command's context and say so at once: the command
		// may take a moment to notice, and its error chain says nothing
		// the user needs. Its late result is dropped unless it had
		// already done its work (see finished).
		if m.cancel != nil {
			m.cancel() // a question it waits on is answered by the cancel
		}
		if m.ask != nil {
			m.endAsk()
		}
		if m.late == nil {
			m.late = map[int]string{}
		}
		m.late[m.runID] = m.runLine
		m.running, m.cancel = false, nil
		m.appendOut(m.theme.Error.Render("✗ cancelled"))
		if m.demo != nil && m.demo.phase == demoRunning && m.demo.runID == m.runID {
			m.demoInterrupt()
		}
		return m, nil
	case m.demo != nil && m.demo.phase == demoPause:
		m.demoInterrupt() // the player stops between two commands
		return m, nil
	case m.mode != modeCommand:
		m.leaveMode()
		return m, nil
	case m.input.Value() != "":
		m.input.SetValue("")
		m.suggestions = nil
		m.histPos, m.draft = len(m.hist.Lines()), "" // ↑ starts again from the newest
		return m, nil
	case m.quitArmed:
		return m.quit()
	}
	// The hint shows in the status bar while armed, so it never piles up
	// in the output.
	m.quitArmed = true
	return m, nil
}

func (m *Model) quit() (tea.Model, tea.Cmd) {
	m.quitting = true
	if m.evCancel != nil {
		m.evCancel()
	}
	return m, tea.Quit
}

func (m *Model) leaveMode() {
	if m.mode == modeSecret {
		m.appendOut(m.theme.Dim.Render("password entry cancelled; nothing was run"))
	}
	m.mode = modeCommand
	m.pending, m.firstEntry = nil, ""
	m.input.EchoMode = textinput.EchoNormal
	m.input.SetValue(m.draft)
	m.input.CursorEnd()
}

func (m *Model) commandKey(k tea.KeyMsg) (tea.Model, tea.Cmd) {
	switch k.String() {
	case "tab":
		m.complete()
		return m, nil
	case "esc":
		if len(m.suggestions) > 0 && m.sugSel >= 0 {
			m.setInput(m.sugBase, m.sugBasePos) // back to what was typed
		}
		m.suggestions = nil
		return m, nil
	case "?":
		if m.input.Value() == "" {
			m.showHelp = true
			return m, nil
		}
	case "ctrl+r":
		m.mode, m.searchQuery, m.searchHit = modeSearch, "", len(m.hist.Lines())
		m.draft = m.input.Value()
		m.input.SetValue("")
		return m, nil
	case "ctrl+f":
		m.mode = modeFilter
		m.draft = m.input.Value()
		m.input.SetValue(m.keyFilter)
		m.input.CursorEnd()
		return m, nil
	case "up":
		if len(m.suggestions) > 0 {
			m.cycle(-1)
			return m, nil
		}
		m.browse(-1)
		return m, nil
	case "down":
		if len(m.suggestions) > 0 {
			m.cycle(1)
			return m, nil
		}
		m.browse(1)
		return m, nil
	case "enter":
		if len(m.suggestions) > 0 && m.sugSel >= 0 {
			m.suggestions = nil // the previewed candidate stays
			return m, nil
		}
		if m.demo != nil && strings.TrimSpace(m.input.Value()) == "" && !m.running {
			return m, m.demoEnter() // the demo's next step
		}
		return m.submit()
	}
	var cmd tea.Cmd
	before := m.input.Value()
	m.input, cmd = m.input.Update(k)
	if m.input.Value() != before && len(m.suggestions) > 0 {
		m.relist() // keep the list in step with typing
	}
	return m, cmd
}

// cursor is the input's cursor as a byte offset into its value.
func (m *Model) cursor() int {
	rs := []rune(m.input.Value())
	return len(string(rs[:min(m.input.Position(), len(rs))]))
}

// setInput sets the input line with the cursor at a byte offset.
func (m *Model) setInput(v string, cursor int) {
	m.input.SetValue(v)
	m.input.SetCursor(len([]rune(v[:min(cursor, len(v))])))
}

// complete is Tab. A single candidate is taken at once; several fill
// their longest common prefix and open the list. Tab on an open list
// moves the selection, and the selected candidate shows in the line
// (Enter keeps it, Esc goes back to what was typed).
func (m *Model) complete() {
	if len(m.suggestions) > 0 {
		m.cycle(1)
		return
	}
	v, pos := m.input.Value(), m.cursor()
	sugs, start := m.comp.Complete(v[:pos])
	switch len(sugs) {
	case 0:
		return
	case 1:
		m.setInput(completion.Apply(v, pos, start, sugs[0].Text, true))
		return
	}
	if p := completion.CommonPrefix(sugs); len(p) > pos-start && strings.HasPrefix(p, v[start:pos]) {
		v, pos = completion.Apply(v, pos, start, p, false)
		m.setInput(v, pos)
	}
	m.suggestions, m.sugSel, m.sugStart, m.sugBase, m.sugBasePos = sugs, -1, start, v, pos
}

// relist follows typing while the list is open: the candidates for what
// the line says now, none selected. Nothing is taken without a Tab.
func (m *Model) relist() {
	v, pos := m.input.Value(), m.cursor()
	sugs, start := m.comp.Complete(v[:pos])
	if len(sugs) == 0 {
		m.suggestions = nil
		return
	}
	m.suggestions, m.sugSel, m.sugStart, m.sugBase, m.sugBasePos = sugs, -1, start, v, pos
}

// cycle moves the selection through the open list and previews it.
func (m *Model) cycle(dir int) {
	n := len(m.suggestions)
	if m.sugSel < 0 && dir < 0 {
		m.sugSel = n - 1
	} else {
		m.sugSel = (m.sugSel + dir + n) % n
	}
	m.setInput(completion.Apply(m.sugBase, m.sugBasePos, m.sugStart, m.suggestions[m.sugSel].Text, true))
}

// browse walks the history with Up (-1) and Down (+1).
func (m *Model) browse(dir int) {
	lines := m.hist.Lines()
	if m.histPos == len(lines) && dir < 0 {
		m.draft = m.input.Value()
	}
	m.histPos = max(0, min(m.histPos+dir, len(lines)))
	if m.histPos == len(lines) {
		m.input.SetValue(m.draft)
	} else {
		m.input.SetValue(lines[m.histPos])
	}
	m.input.CursorEnd()
}

func (m *Model) searchKey(k tea.KeyMsg) (tea.Model, tea.Cmd) {
	lines := m.hist.Lines()
	switch k.String() {
	case "esc":
		m.leaveMode()
		return m, nil
	case "enter":
		hit := ""
		if m.searchHit >= 0 && m.searchHit < len(lines) {
			hit = lines[m.searchHit]
		}
		m.mode = modeCommand
		m.input.SetValue(hit)
		m.input.CursorEnd()
		return m, nil
	case "ctrl+r":
		// An older match: one that reads differently from this one, or
		// the same line typed again would look like no move at all.
		i := m.hist.Search(m.searchQuery, m.searchHit)
		for i >= 0 && m.searchHit >= 0 && m.searchHit < len(lines) && lines[i] == lines[m.searchHit] {
			i = m.hist.Search(m.searchQuery, i)
		}
		if i >= 0 {
			m.searchHit = i
		}
	case "backspace":
		if m.searchQuery != "" {
			m.searchQuery = m.searchQuery[:len(m.searchQuery)-1]
		}
		m.searchHit = m.hist.Search(m.searchQuery, len(lines))
	default:
		if k.Type == tea.KeyRunes || k.Type == tea.KeySpace {
			m.searchQuery += string(k.Runes)
			if k.Type == tea.KeySpace {
				m.searchQuery += " "
			}
			m.searchHit = m.hist.Search(m.searchQuery, len(lines))
		}
	}
	if m.searchHit >= 0 && m.searchHit < len(lines) {
		m.input.SetValue(lines[m.searchHit])
	} else {
		m.input.SetValue("")
	}
	return m, nil
}

func (m *Model) filterKey(k tea.KeyMsg) (tea.Model, tea.Cmd) {
	switch k.String() {
	case "esc":
		m.keyFilter = ""
		m.leaveMode()
		return m, nil
	case "enter":
		m.keyFilter = strings.TrimSpace(m.input.Value())
		m.keyScroll = 0
		m.leaveMode()
		return m, nil
	}
	var cmd tea.Cmd
	m.input, cmd = m.input.Update(k)
	m.keyFilter = m.input.Value()
	m.keyScroll = 0
	return m, cmd
}

// submit runs the typed line, asking for a password first when the
// command would ask for one on a terminal.
func (m *Model) submit() (tea.Model, tea.Cmd) {
	line := strings.TrimSpace(m.input.Value())
	m.input.SetValue("")
	m.suggestions = nil
	m.outScroll = 0
	if line == "" {
		return m, nil
	}
	if m.running {
		m.appendOut(m.theme.Warn.Render("a command is still running (Ctrl+C cancels it)"))
		m.input.SetValue(line)
		return m, nil
	}
	redacted := m.runner.Tree.Redact(line)
	if err := m.hist.Add(redacted); err != nil {
		m.appendOut(m.theme.Warn.Render("history: " + err.Error()))
	}
	m.histPos = len(m.hist.Lines())
	words, err := commands.Split(line)
	if err != nil {
		m.echo(redacted)
		m.appendOut(renderResult(m.theme, commands.Result{ErrorCode: 1, Data: err.Error()})...)
		return m, nil
	}
	if len(words) == 0 {
		return m, nil
	}
	// A line recalled from the history has **** where its password was:
	// ask for the password again (masked) rather than send the mask.
	words = unmask(m.runner.Tree, words)
	if words[0] == "compare" {
		m.echo(redacted)
		m.compareWith(words[1:])
		return m, m.refresh()
	}
	if words[0] == "demo" {
		m.echo(redacted)
		return m, m.demoCommand(words[1:])
	}
	if flag, confirm := m.runner.Tree.AsksSecret(words); flag != "" {
		m.echo(redacted)
		m.mode, m.pending, m.secretFlag, m.confirm, m.draft = modeSecret, words, flag, confirm, ""
		m.input.EchoMode = textinput.EchoPassword
		m.input.EchoCharacter = '•'
		return m, nil
	}
	m.echo(redacted)
	return m, m.run(words, redacted)
}

func (m *Model) echo(redacted string) {
	m.appendOut("", m.theme.Prompt.Render(m.promptText())+m.theme.Input.Render(redacted))
}

func (m *Model) secretKey(k tea.KeyMsg) (tea.Model, tea.Cmd) {
	switch k.String() {
	case "esc":
		m.leaveMode()
		return m, nil
	case "enter":
		pw := m.input.Value()
		m.input.SetValue("")
		if m.confirm && m.firstEntry == "" {
			m.firstEntry = pw
			return m, nil
		}
		if m.confirm && pw != m.firstEntry {
			m.appendOut(m.theme.Error.Render("✗ the two passwords differ; nothing was run"))
			m.mode = modeCommand // so leaveMode adds no second message
			m.leaveMode()
			return m, nil
		}
		words := append(append([]string(nil), m.pending...), "--"+m.secretFlag, pw)
		line := m.runner.Tree.Redact(strings.Join(quoteAll(m.pending), " "))
		m.mode, m.pending, m.firstEntry = modeCommand, nil, ""
		m.input.EchoMode = textinput.EchoNormal
		return m, m.run(words, line)
	}
	var cmd tea.Cmd
	m.input, cmd = m.input.Update(k)
	return m, cmd
}

func quoteAll(words []string) []string {
	out := make([]string, len(words))
	for i, w := range words {
		out[i] = commands.Quote(w)
	}
	return out
}

// run starts a command in the background. The command runs in a
// goroutine of its own, so that it can wait on a question (token-sign
// MFA) while Update goes on: the run's tea.Cmd returns its first
// question (askMsg) or its result, and each question brings the wait for
// the next.
func (m *Model) run(words []string, shown string) tea.Cmd {
	ctx, cancel := context.WithCancel(context.Background())
	m.runID++
	m.running, m.cancel, m.runLine, m.runStart = true, cancel, shown, time.Now()
	asks := make(chan *askReq)
	done := make(chan resultMsg, 1)
	runner := m.askingRunner(ctx, asks)
	start, id := m.runStart, m.runID
	return tea.Batch(m.spin.Tick, func() tea.Msg {
		go func() {
			res := runner.Run(ctx, words)
			cancel()
			done <- resultMsg{id: id, res: res, took: time.Since(start)}
		}()
		return waitRun(id, asks, done)()
	})
}

func (m *Model) finished(msg resultMsg) (tea.Model, tea.Cmd) {
	if line, ok := m.late[msg.id]; ok {
		// A cancelled run: "cancelled" was said already. Only a run that
		// had done its work before the cancel reached it is news.
		delete(m.late, msg.id)
		m.dirty = true
		if msg.res.OK() && !msg.res.Quit {
			m.appendOut(m.theme.Warn.Render("the cancelled command had already completed: " + line))
			m.appendOut(renderResult(m.theme, msg.res)...)
			m.loadHistory()
		}
		return m, m.refresh()
	}
	if msg.id != m.runID {
		return m, nil
	}
	m.running, m.cancel = false, nil
	if m.ask != nil {
		m.endAsk() // the command ended without its answer
	}
	var demo tea.Cmd
	if m.demo != nil && m.demo.phase == demoRunning && m.demo.runID == msg.id {
		demo = m.demoFinished(msg.res) // the result, read as the demo expects it
	} else {
		m.appendOut(renderResult(m.theme, msg.res)...)
	}
	if msg.took > time.Second {
		m.appendOut(m.theme.Dim.Render(fmt.Sprintf("(%.1fs)", msg.took.Seconds())))
	}
	m.loadHistory() // the user may have changed (login, logout)
	m.dirty = true
	if msg.res.Quit {
		return m.quit()
	}
	var follow tea.Cmd
	if id := m.env.ClusterID(); id != m.evCluster {
		// use-cluster: the panes and the event log follow the new cluster.
		m.evCancel()
		m.evCh, m.evCancel = m.env.Subscribe(4096)
		m.evCluster, m.events, m.lost = id, nil, nil
		follow = waitEvents(m.evCh)
	}
	return m, tea.Batch(m.refresh(), follow, demo)
}

// clusterView is another cluster's keys, for the side-by-side key pane.
type clusterView struct {
	id   string
	hsms []commands.HSMInfo
	keys []commands.KeyView
	err  string
}

func viewCluster(ctx context.Context, env *commands.Env, id string) *clusterView {
	v := &clusterView{id: id}
	other, err := env.On(id)
	if err != nil {
		v.err = err.Error()
		return v
	}
	v.hsms = other.HSMs(ctx)
	if _, _, ok := other.Who(); !ok {
		v.err = "log in to " + id + " (login --cluster-id " + id + ") to see its keys"
		return v
	}
	v.keys, err = other.Keys(ctx)
	if err != nil {
		v.err = err.Error()
	}
	return v
}

// compareWith is the shell's own compare command: compare CLUSTER-ID shows
// that cluster's keys beside the current one's; compare off stops.
func (m *Model) compareWith(args []string) {
	switch {
	case len(args) != 1:
		m.appendOut(renderResult(m.theme, commands.Result{ErrorCode: 1, Data: "usage: compare CLUSTER-ID | compare off"})...)
	case args[0] == "off":
		m.compare, m.cmp = "", nil
		m.appendOut(m.theme.OK.Render("the key pane shows one cluster"))
	case args[0] == m.env.ClusterID():
		m.appendOut(renderResult(m.theme, commands.Result{ErrorCode: 1, Data: "compare: " + args[0] + " is the current cluster; name another (cluster list)"})...)
	default:
		if _, err := m.env.On(args[0]); err != nil {
			m.appendOut(renderResult(m.theme, commands.Result{ErrorCode: 1, Data: "compare: " + err.Error()})...)
			return
		}
		m.compare = args[0]
		m.appendOut(m.theme.OK.Render("the key pane shows " + m.env.ClusterID() + " and " + args[0] + " side by side"))
	}
}
