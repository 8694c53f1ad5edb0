package shell

import (
	"cmp"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/charmbracelet/x/ansi"

	"github.com/hsmsh/hsmsh/commands"
)

// The key-presence grid: a row per key, a column per HSM. This file sizes
// its columns from the room there is, orders its rows and keeps the
// sorted, filtered rows cached, so a frame with 10,000 keys only draws the
// rows that fit.

// keySort is the order of the grid's rows; Ctrl+O moves to the next one.
type keySort int

const (
	sortNewest keySort = iota // newest first (the default)
	sortOldest
	sortLabel
	sortCount
)

func (s keySort) String() string {
	switch s {
	case sortOldest:
		return "oldest first"
	case sortLabel:
		return "by label"
	}
	return "newest first"
}

// keyStamp is when the shell learnt of a key. The cluster's key records
// (hsmcore.Key, commands.KeyView) carry no creation time, so "newest" is
// the key-created event's time when the shell saw that event, else the
// time of the first snapshot that listed the key; keys first seen in the
// same snapshot (those that existed before the shell started) are in
// label order among themselves.
type keyStamp struct {
	at    time.Time
	batch int // the snapshot that first listed the key
}

// keyCache is the grid's rows as last sorted and filtered, and the width
// of their widest label; rebuilt only when the keys, the filter, the
// order or a stamp change.
type keyCache struct {
	valid    bool
	src      []commands.KeyView
	filter   string
	sort     keySort
	ver      int
	keys     []commands.KeyView
	maxLabel int
}

// noteKeys stamps the keys of a new snapshot: a key seen before keeps its
// stamp, a new one takes its key-created event's time or now.
func (m *Model) noteKeys(keys []commands.KeyView) {
	m.snapN++
	now := time.Now()
	seen := make(map[string]keyStamp, len(keys))
	m.labels = make(map[string]string, len(keys))
	for _, k := range keys {
		m.labels[k.Ref] = k.Label
		st, ok := m.seen[k.Ref]
		if !ok {
			st = keyStamp{at: now, batch: m.snapN}
			if t, ok := m.created[k.Ref]; ok {
				st.at = t
			}
		}
		seen[k.Ref] = st
		delete(m.created, k.Ref)
	}
	m.seen = seen
	// Creation events for keys no snapshot has listed yet wait a while,
	// not for ever (a key created and deleted between two snapshots).
	for ref, t := range m.created {
		if now.Sub(t) > time.Minute {
			delete(m.created, ref)
		}
	}
	m.keysVer++
}

// noteCreated records a key-created event's time: it orders the key more
// exactly than the snapshot that first lists it.
func (m *Model) noteCreated(ref string, at time.Time) {
	if st, ok := m.seen[ref]; ok {
		if at.Before(st.at) {
			st.at = at
			m.seen[ref] = st
			m.keysVer++
		}
		return
	}
	if m.created == nil {
		m.created = map[string]time.Time{}
	}
	m.created[ref] = at
}

// visibleKeys is the keys the grid shows: filtered by Ctrl+F, in the
// chosen order. Cached between frames.
func (m *Model) visibleKeys() []commands.KeyView {
	c := &m.keyCache
	if c.valid && c.filter == m.keyFilter && c.sort == m.keySort && c.ver == m.keysVer && sameSlice(c.src, m.keys) {
		return c.keys
	}
	keys := m.keys
	if m.keyFilter != "" {
		f := strings.ToLower(m.keyFilter)
		keys = nil
		for _, k := range m.keys {
			if strings.Contains(strings.ToLower(k.Label), f) || strings.Contains(k.Ref, f) || strings.Contains(k.Type, f) {
				keys = append(keys, k)
			}
		}
	} else {
		keys = append([]commands.KeyView(nil), keys...)
	}
	// Sort the rows with their stamps beside them: no map lookups in
	// the comparisons (a snapshot of 10,000 keys sorts in a few ms).
	type row struct {
		st keyStamp
		k  commands.KeyView
	}
	rows := make([]row, len(keys))
	for i, k := range keys {
		rows[i] = row{m.seen[k.Ref], k}
	}
	byLabel := func(a, b *row) int {
		if c := strings.Compare(a.k.Label, b.k.Label); c != 0 {
			return c
		}
		return strings.Compare(a.k.Ref, b.k.Ref)
	}
	slices.SortStableFunc(rows, func(a, b row) int {
		if m.keySort == sortLabel {
			return byLabel(&a, &b)
		}
		c := a.st.at.Compare(b.st.at)
		if c == 0 {
			c = cmp.Compare(a.st.batch, b.st.batch)
		}
		if c == 0 {
			return byLabel(&a, &b)
		}
		if m.keySort == sortNewest {
			return -c
		}
		return c
	})
	for i := range rows {
		keys[i] = rows[i].k
	}
	maxLabel := 0
	for _, k := range keys {
		w := labelWidth(k.Label)
		if k.Session {
			w++ // the * a session key's label takes when the type column is hidden
		}
		maxLabel = max(maxLabel, w)
	}
	*c = keyCache{valid: true, src: m.keys, filter: m.keyFilter, sort: m.keySort, ver: m.keysVer, keys: keys, maxLabel: maxLabel}
	return keys
}

func sameSlice(a, b []commands.KeyView) bool {
	return len(a) == len(b) && (len(a) == 0 || &a[0] == &b[0])
}

func labelWidth(s string) int {
	if isASCII(s) {
		return len(s)
	}
	return ansi.StringWidth(s)
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

// pad fits s to exactly n cells: cut with … or padded with spaces.
func pad(s string, n int) string {
	if n <= 0 {
		return ""
	}
	w := labelWidth(s)
	if w > n {
		return cutMiddle(s, n)
	}
	return s + strings.Repeat(" ", n-w)
}

// cutMiddle shortens s to n cells with … in the middle: labels often
// differ only at the end (app-key-1, app-key-2), so both ends stay.
func cutMiddle(s string, n int) string {
	if n < 5 || !isASCII(s) {
		return ansi.Truncate(s, n, "…")
	}
	tail := (n - 1) / 2
	return s[:n-1-tail] + "…" + s[len(s)-tail:]
}

// gridCols is the grid's columns for a pane width: the marks and the
// coverage always (one cell a mark when two would cut the labels); the
// label as wide as the room allows, up to the widest label; the type and
// the key-reference only when every label still shows whole beside them.
type gridCols struct {
	label, ref, typ int // widths; 0 hides the column
	cell            int // cells a mark takes: 2 (a mark and a space), or 1 when tight
	n               int // HSMs
	cov             int
}

const (
	refColW  = 18 // 0x and 16 hex digits
	typeColW = 8  // "rsa/prv*"
	// A label keeps this many cells (or its whole width, if less) before
	// the reference and the type get any.
	labelWant = 16
)

func gridLayout(w, n, maxLabel int) gridCols {
	g := gridCols{cell: 2, n: n, cov: 2*len(strconv.Itoa(n)) + 1 + 2} // "28/28 !"
	fixed := func() int { return g.marksW() + 1 + g.cov + 1 }
	want := max(maxLabel, 5)
	if w-fixed() < want {
		g.cell = 1 // one-cell marks rather than labels cut short
	}
	r := w - fixed()
	// The type and the reference only beside a whole label.
	if r-(typeColW+1) >= want {
		g.typ = typeColW
		r -= typeColW + 1
	}
	if r-(refColW+1) >= want {
		g.ref = refColW
		r -= refColW + 1
	}
	g.label = max(min(r, want), 1)
	return g
}

// gridWant is the width a grid of n HSMs wants: two-cell marks, the
// coverage and a label of labelWant cells.
func gridWant(n int) int {
	g := gridCols{cell: 2, n: n, cov: 2*len(strconv.Itoa(n)) + 1 + 2}
	return g.marksW() + 1 + g.cov + 1 + labelWant
}

// marksW is the width of the marks: with 2-cell marks the last one's
// trailing space is left off.
func (g gridCols) marksW() int {
	if g.cell == 2 && g.n > 0 {
		return 2*g.n - 1
	}
	return g.n
}

// prefix is the label, reference and type columns, each followed by a
// space.
func (g gridCols) prefix(label, ref, typ string) string {
	var b strings.Builder
	b.WriteString(pad(label, g.label))
	b.WriteByte(' ')
	if g.ref > 0 {
		b.WriteString(pad(ref, g.ref))
		b.WriteByte(' ')
	}
	if g.typ > 0 {
		b.WriteString(pad(typ, g.typ))
		b.WriteByte(' ')
	}
	return b.String()
}

func (g gridCols) prefixW() int {
	w := g.label + 1
	if g.ref > 0 {
		w += g.ref + 1
	}
	if g.typ > 0 {
		w += g.typ + 1
	}
	return w
}

// hsmRuler is the marks' header: each HSM's id without "hsm-", written
// downwards when ids are longer than one character (hsm-10 … hsm-28), so
// every column is named however narrow it is.
func hsmRuler(ids []string, cell int) []string {
	tags := make([][]rune, len(ids))
	height := 1
	for i, id := range ids {
		r := []rune(strings.TrimPrefix(id, "hsm-"))
		if len(r) > 3 {
			r = r[len(r)-3:]
		}
		tags[i] = r
		height = max(height, len(r))
	}
	rows := make([]string, height)
	for row := range height {
		var b strings.Builder
		for i, t := range tags {
			if i > 0 && cell == 2 {
				b.WriteByte(' ')
			}
			if j := row - (height - len(t)); j >= 0 {
				b.WriteRune(t[j])
			} else {
				b.WriteByte(' ')
			}
		}
		rows[row] = b.String()
	}
	return rows
}

// marks are the grid's cells, rendered once a frame rather than once a
// cell.
type marks struct {
	present, syncing, missing, down, destroyed, lost string
	never                                            string // a session key's HSMs without it
}

func (m *Model) marks() marks {
	return marks{
		present:   m.theme.Present.Render("●"),
		syncing:   m.theme.Syncing.Render("◆"),
		missing:   m.theme.Missing.Render("○"),
		down:      m.theme.Down.Render("-"),
		destroyed: m.theme.Error.Render("×"),
		lost:      m.theme.Lost.Render("✗"),
		never:     m.theme.Dim.Render("·"),
	}
}

// cellMark is one key × HSM: present, syncing (a copy just arrived),
// missing, unknown because the HSM is down, or gone with a destroyed HSM.
// A session key lives on the one HSM that made it and is never synced:
// the others show · rather than a ○ that sync would fill.
func (m *Model) cellMark(mk *marks, k commands.KeyView, id, state string) string {
	switch {
	case state == "destroyed":
		return mk.destroyed
	case state != "active":
		return mk.down
	case k.Holders[id] && len(m.recent) > 0 && !m.recent[k.Ref+"@"+id].IsZero():
		return mk.syncing
	case k.Holders[id]:
		return mk.present
	case k.Session:
		return mk.never
	}
	return mk.missing
}

// syncHint says, while server-side sync runs, how long a ○ lasts and how
// to hold it for the class; "" when sync is paused or not the lab's.
func (m *Model) syncHint(w int) string {
	st, ok := m.env.Sync()
	if !ok || st.Paused || st.Interval <= 0 {
		return ""
	}
	every := st.Interval.String()
	for _, hint := range []string{
		"sync runs every " + every + ": ○ lasts until then — lab sync pause to hold it",
		"sync every " + every + ": ○ lasts till then · lab sync pause holds it",
		"○ lasts ≤" + every + " (sync) · lab sync pause holds it",
	} {
		if ansi.StringWidth(hint) <= w {
			return m.theme.Warn.Render(hint)
		}
	}
	return m.theme.Warn.Render(trunc("○ lasts ≤"+every+" · lab sync pause", w))
}

// gridHead is the lines above the rows: the sync hint, if any, then the
// column names with the HSM ruler.
func (m *Model) gridHead(g gridCols, ids []string, w int) []string {
	var out []string
	for _, l := range m.staleLines(w) {
		out = append(out, m.theme.Warn.Render(l))
	}
	if hint := m.syncHint(w); hint != "" {
		out = append(out, hint)
	}
	ruler := hsmRuler(ids, g.cell)
	blank := strings.Repeat(" ", g.prefixW())
	for i, r := range ruler {
		line := blank + r
		if i == len(ruler)-1 {
			line = g.prefix("label", "key-reference", "type") + r + " cov"
		}
		out = append(out, m.theme.Dim.Render(line))
	}
	return out
}

// staleLines is staleNote wrapped to the key pane, at most two lines.
func (m *Model) staleLines(w int) []string {
	note := m.staleNote()
	if note == "" {
		return nil
	}
	lines := strings.Split(ansi.Wrap(note, max(w, 10), ""), "\n")
	if len(lines) > 2 {
		lines = append(lines[:1], trunc(strings.Join(lines[1:], " "), w))
	}
	return lines
}

// keyPaneWidth is the key pane's inner width in the current layout.
func (m *Model) keyPaneWidth() int {
	if m.width >= wideMinWidth {
		return m.panesWidth(m.width) - 2
	}
	return max(m.width, 20) - 2
}

// gridHeadRows is how many lines gridHead takes.
func (m *Model) gridHeadRows() int {
	n := len(hsmRuler(commands.SortedHSMIDs(m.hsms), 2)) + len(m.staleLines(m.keyPaneWidth()))
	if m.syncHint(1000) != "" {
		n++
	}
	return n
}

// gridWindow is which rows of total fit in rows lines from scroll: the
// first row, how many, and whether a line is kept for "more below". The
// window never runs past the end, so scrolling shows no blank rows.
func gridWindow(total, rows, scroll int) (start, n int, hint bool) {
	if rows <= 0 {
		return 0, 0, false
	}
	if total > rows {
		hint = true
		rows = max(rows-1, 1)
	}
	start = max(0, min(scroll, total-rows))
	return start, min(rows, total-start), hint
}

// keyLines draws the key-presence grid in a pane w×h inside its border.
// Only the rows that fit are drawn, so thousands of keys cost nothing.
func (m *Model) keyLines(w, h int) []string {
	if m.compare != "" && m.cmp != nil {
		return m.compareLines(w, h)
	}
	if _, _, ok := m.env.Who(); !ok {
		return []string{m.theme.Dim.Render("log in to see keys (admins see every key, crypto users their own)")}
	}
	ids := commands.SortedHSMIDs(m.hsms)
	state := make(map[string]string, len(m.hsms))
	for _, x := range m.hsms {
		state[x.ID] = string(x.State)
	}
	keys := m.visibleKeys()
	maxLabel := m.keyCache.maxLabel
	for _, l := range m.lost {
		maxLabel = max(maxLabel, labelWidth(l.label))
	}
	g := gridLayout(w, len(ids), maxLabel)
	out := m.gridHead(g, ids, w)
	total := len(m.lost) + len(keys)
	if total == 0 {
		return append(out, m.theme.Dim.Render("no keys"))
	}
	start, n, hint := gridWindow(total, h-len(out), m.keyScroll)
	mk := m.marks()
	dur := m.env.Durability()
	var row strings.Builder
	for i := start; i < start+n; i++ {
		row.Reset()
		if i < len(m.lost) {
			l := m.lost[i]
			row.WriteString(g.prefix(l.label, l.ref, ""))
			for j := range ids {
				if j > 0 && g.cell == 2 {
					row.WriteByte(' ')
				}
				row.WriteString(mk.lost)
			}
			row.WriteByte(' ')
			row.WriteString(m.theme.Lost.Render("LOST"))
			out = append(out, row.String())
			continue
		}
		k := keys[i-len(m.lost)]
		kind, label := shortType(k), k.Label
		if k.Session {
			if g.typ > 0 {
				kind += "*"
			} else {
				label += "*"
			}
		}
		row.WriteString(g.prefix(label, k.Ref, kind))
		for j, id := range ids {
			if j > 0 && g.cell == 2 {
				row.WriteByte(' ')
			}
			row.WriteString(m.cellMark(&mk, k, id, state[id]))
		}
		held := k.Held()
		cov := strconv.Itoa(held) + "/" + strconv.Itoa(len(ids))
		row.WriteByte(' ')
		if !k.Session && ((dur.AvailabilityCheck && held < 2) || held < dur.MinimumNodes) {
			row.WriteString(m.theme.Breach.Render(cov + " !"))
		} else {
			row.WriteString(cov)
		}
		out = append(out, row.String())
	}
	if hint {
		var parts []string
		if below := total - start - n; below > 0 {
			parts = append(parts, fmt.Sprintf("↓ %d more below", below))
		}
		if start > 0 {
			parts = append(parts, fmt.Sprintf("↑ %d above", start))
		}
		parts = append(parts, "Shift+↑↓ scrolls · Ctrl+F filters")
		out = append(out, m.theme.Dim.Render(trunc(strings.Join(parts, " · "), w)))
	}
	return out
}

// keyRowCount is every row the grid could show: lost keys, then keys.
func (m *Model) keyRowCount() int {
	if m.compare != "" && m.cmp != nil {
		return len(m.compareRows())
	}
	return len(m.lost) + len(m.visibleKeys())
}

// keyHeadRows is how many lines the key pane takes above its rows.
func (m *Model) keyHeadRows() int {
	if m.compare != "" && m.cmp != nil {
		if m.cmp.err != "" {
			return 3
		}
		return 2
	}
	return m.gridHeadRows()
}

// keyPaneNeed is the height the key pane wants to show every row, with
// its border.
func (m *Model) keyPaneNeed() int {
	if m.compare != "" && m.cmp != nil {
		return 2 + 3 + max(len(m.compareRows()), 1)
	}
	return 2 + m.gridHeadRows() + max(m.keyRowCount(), 1)
}

// clampKeyScroll keeps the key pane's scroll inside its rows: at most the
// position that shows the last row at the bottom.
func (m *Model) clampKeyScroll() {
	total := m.keyRowCount()
	page := total
	if lay := m.layout(); lay.keyH > 0 {
		_, page, _ = gridWindow(total, lay.keyH-2-m.keyHeadRows(), total)
		page = max(page, 1)
	}
	m.keyScroll = max(0, min(m.keyScroll, total-page))
}
