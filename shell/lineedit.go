package shell

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode"

	"github.com/charmbracelet/x/ansi"
	"golang.org/x/term"

	"github.com/hsmsh/hsmsh/shell/completion"
)

// errInterrupted is Ctrl+C at the line editor's prompt: the line was
// cleared and nothing runs.
var errInterrupted = errors.New("interrupted")

// lineEditor is line mode's editor: a small raw-mode editor for a
// terminal (cursor keys, Home/End, history, Ctrl+R search, Tab
// completion, Ctrl+L, Ctrl+C, Ctrl+D), and plain line reading when stdin
// is not a terminal.
type lineEditor struct {
	in  *bufio.Reader
	out io.Writer
	// fd is the terminal put in raw mode while a line is read; -1 for
	// none (a pipe, or a test that feeds the keys itself).
	fd int
	// raw: edit the line (a terminal, or a test of the editing); false
	// reads plain lines.
	raw  bool
	hist func() []string
	comp *completion.Completer

	buf    []rune
	pos    int
	prompt string

	histPos int    // position while browsing the history
	draft   string // the line being typed before browsing

	lastTab bool // the previous key was a Tab that listed nothing new
	row     int  // the cursor's row within the line as drawn
	width   int  // the terminal's width for tests (0: ask the terminal)
}

func newLineEditor(in io.Reader, out io.Writer, fd int, raw bool, hist func() []string, comp *completion.Completer) *lineEditor {
	if hist == nil {
		hist = func() []string { return nil }
	}
	return &lineEditor{in: bufio.NewReaderSize(in, 4096), out: out, fd: fd, raw: raw, hist: hist, comp: comp}
}

// ReadLine reads one line after prompt. It returns io.EOF at the end of
// input (Ctrl+D on an empty line) and errInterrupted for Ctrl+C.
func (e *lineEditor) ReadLine(prompt string) (string, error) {
	if !e.raw {
		fmt.Fprint(e.out, prompt)
		line, err := e.in.ReadString('\n')
		if err != nil && (line == "" || !errors.Is(err, io.EOF)) {
			return "", err
		}
		return strings.TrimRight(line, "\r\n"), nil
	}
	if e.fd >= 0 {
		old, err := term.MakeRaw(e.fd)
		if err != nil {
			return "", fmt.Errorf("terminal: %w", err)
		}
		defer term.Restore(e.fd, old)
	}
	e.prompt, e.buf, e.pos, e.row = prompt, nil, 0, 0
	e.histPos, e.draft, e.lastTab = len(e.hist()), "", false
	e.redraw()
	for {
		k, err := e.readKey()
		if err != nil {
			if errors.Is(err, io.EOF) && len(e.buf) > 0 {
				fmt.Fprint(e.out, "\r\n")
				return string(e.buf), nil
			}
			return "", err
		}
		line, done, err := e.handle(k)
		if done || err != nil {
			return line, err
		}
	}
}

// key is one key press: a rune, or a named key.
type key struct {
	r    rune
	name string // "up", "down", "left", "right", "home", "end", "delete", "esc", or "" for r
}

func (e *lineEditor) readKey() (key, error) {
	r, _, err := e.in.ReadRune()
	if err != nil {
		return key{}, err
	}
	if r != 0x1b {
		return key{r: r}, nil
	}
	// A lone Esc: nothing follows in what the terminal sent.
	if e.in.Buffered() == 0 {
		return key{name: "esc"}, nil
	}
	b, _ := e.in.ReadByte()
	switch b {
	case '[':
		var params []byte
		for {
			c, err := e.in.ReadByte()
			if err != nil {
				return key{name: "esc"}, nil
			}
			if c >= 0x40 && c <= 0x7e {
				return key{name: csiName(string(params), c)}, nil
			}
			params = append(params, c)
		}
	case 'O':
		c, _ := e.in.ReadByte()
		return key{name: csiName("", c)}, nil
	}
	return key{name: "alt"}, nil
}

func csiName(params string, final byte) string {
	switch final {
	case 'A':
		return "up"
	case 'B':
		return "down"
	case 'C':
		return "right"
	case 'D':
		return "left"
	case 'H':
		return "home"
	case 'F':
		return "end"
	case '~':
		switch params {
		case "1", "7":
			return "home"
		case "4", "8":
			return "end"
		case "3":
			return "delete"
		}
	}
	return "unknown"
}

// handle applies one key; done says the line is finished.
func (e *lineEditor) handle(k key) (line string, done bool, err error) {
	tab := false
	defer func() { e.lastTab = tab }()
	switch k.name {
	case "left":
		e.pos = max(e.pos-1, 0)
	case "right":
		e.pos = min(e.pos+1, len(e.buf))
	case "home":
		e.pos = 0
	case "end":
		e.pos = len(e.buf)
	case "delete":
		if e.pos < len(e.buf) {
			e.buf = append(e.buf[:e.pos], e.buf[e.pos+1:]...)
		}
	case "up":
		e.browse(-1)
	case "down":
		e.browse(1)
	case "":
		switch k.r {
		case '\r', '\n':
			e.toEnd()
			fmt.Fprint(e.out, "\r\n")
			return string(e.buf), true, nil
		case 0x03: // Ctrl+C: clear the line
			e.toEnd()
			fmt.Fprint(e.out, "^C\r\n")
			return "", true, errInterrupted
		case 0x04: // Ctrl+D: end on an empty line, else delete
			if len(e.buf) == 0 {
				fmt.Fprint(e.out, "\r\n")
				return "", true, io.EOF
			}
			if e.pos < len(e.buf) {
				e.buf = append(e.buf[:e.pos], e.buf[e.pos+1:]...)
			}
		case 0x7f, 0x08: // Backspace
			if e.pos > 0 {
				e.buf = append(e.buf[:e.pos-1], e.buf[e.pos:]...)
				e.pos--
			}
		case 0x01: // Ctrl+A
			e.pos = 0
		case 0x05: // Ctrl+E
			e.pos = len(e.buf)
		case 0x02: // Ctrl+B
			e.pos = max(e.pos-1, 0)
		case 0x06: // Ctrl+F
			e.pos = min(e.pos+1, len(e.buf))
		case 0x0b: // Ctrl+K: delete to the end
			e.buf = e.buf[:e.pos]
		case 0x15: // Ctrl+U: delete to the start
			e.buf = append([]rune(nil), e.buf[e.pos:]...)
			e.pos = 0
		case 0x17: // Ctrl+W: delete the word before the cursor
			i := e.pos
			for i > 0 && e.buf[i-1] == ' ' {
				i--
			}
			for i > 0 && e.buf[i-1] != ' ' {
				i--
			}
			e.buf = append(e.buf[:i], e.buf[e.pos:]...)
			e.pos = i
		case 0x0c: // Ctrl+L: clear the screen, keep the line
			fmt.Fprint(e.out, "\x1b[H\x1b[2J")
			e.row = 0
		case 0x12: // Ctrl+R
			return e.search()
		case '\t':
			tab = true
			e.complete()
		default:
			if unicode.IsPrint(k.r) {
				e.buf = append(e.buf[:e.pos], append([]rune{k.r}, e.buf[e.pos:]...)...)
				e.pos++
			}
		}
	}
	e.redraw()
	return "", false, nil
}

// termWidth is the terminal's width, 0 when unknown.
func (e *lineEditor) termWidth() int {
	if e.width > 0 || e.fd < 0 {
		return e.width
	}
	w, _, err := term.GetSize(e.fd)
	if err != nil {
		return 0
	}
	return w
}

// redraw writes the prompt and the line again and puts the cursor back.
// A line longer than the terminal is wide takes several rows: the redraw
// starts from the first of them.
func (e *lineEditor) redraw() {
	var b strings.Builder
	w := e.termWidth()
	if w <= 0 {
		b.WriteString("\r")
		b.WriteString(e.prompt)
		b.WriteString(string(e.buf))
		b.WriteString("\x1b[K")
		if back := len(e.buf) - e.pos; back > 0 {
			fmt.Fprintf(&b, "\x1b[%dD", back)
		}
		io.WriteString(e.out, b.String())
		return
	}
	if e.row > 0 {
		fmt.Fprintf(&b, "\x1b[%dA", e.row)
	}
	b.WriteString("\r\x1b[J")
	b.WriteString(e.prompt)
	b.WriteString(string(e.buf))
	plen := ansi.StringWidth(e.prompt)
	total := plen + ansi.StringWidth(string(e.buf))
	if total > 0 && total%w == 0 {
		b.WriteString("\r\n") // out of the pending wrap, onto the next row
	}
	endRow := total / w
	col := plen + ansi.StringWidth(string(e.buf[:e.pos]))
	e.row = col / w
	if up := endRow - e.row; up > 0 {
		fmt.Fprintf(&b, "\x1b[%dA", up)
	}
	b.WriteString("\r")
	if c := col % w; c > 0 {
		fmt.Fprintf(&b, "\x1b[%dC", c)
	}
	io.WriteString(e.out, b.String())
}

// toEnd puts the cursor after the line's last row, before output that
// follows the line.
func (e *lineEditor) toEnd() {
	if e.pos != len(e.buf) {
		e.pos = len(e.buf)
		e.redraw()
	}
}

func (e *lineEditor) set(s string) {
	e.buf = []rune(s)
	e.pos = len(e.buf)
}

// browse walks the history with ↑ (-1) and ↓ (+1).
func (e *lineEditor) browse(dir int) {
	lines := e.hist()
	e.histPos = min(e.histPos, len(lines))
	if e.histPos == len(lines) && dir < 0 {
		e.draft = string(e.buf)
	}
	e.histPos = max(0, min(e.histPos+dir, len(lines)))
	if e.histPos == len(lines) {
		e.set(e.draft)
	} else {
		e.set(lines[e.histPos])
	}
}

// search is Ctrl+R: a reverse incremental search of the history. Typing
// narrows it, Ctrl+R again finds an older match, Enter or a cursor key
// puts the match on the line to edit, Ctrl+C or Ctrl+G gives up.
func (e *lineEditor) search() (string, bool, error) {
	lines := e.hist()
	query, hit := "", -1
	find := func(from int) int {
		for i := min(from, len(lines)) - 1; i >= 0; i-- {
			if strings.Contains(lines[i], query) {
				return i
			}
		}
		return -1
	}
	draw := func() {
		shown := ""
		if hit >= 0 {
			shown = lines[hit]
		}
		state := "reverse-i-search"
		if hit < 0 && query != "" {
			state = "failing reverse-i-search"
		}
		text := fmt.Sprintf("(%s)'%s': %s", state, query, shown)
		up := ""
		if e.row > 0 {
			up = fmt.Sprintf("\x1b[%dA", e.row)
		}
		fmt.Fprintf(e.out, "%s\r\x1b[J%s", up, text)
		e.row = 0
		if w := e.termWidth(); w > 0 {
			n := ansi.StringWidth(text)
			if n > 0 && n%w == 0 {
				fmt.Fprint(e.out, "\r\n")
			}
			e.row = n / w
		}
	}
	draw()
	for {
		k, err := e.readKey()
		if err != nil {
			return "", true, err
		}
		switch {
		case k.name == "" && k.r == 0x12:
			switch {
			case hit >= 0:
				// An older match that reads differently: the same line
				// typed again would look like no move at all.
				i := find(hit)
				for i >= 0 && lines[i] == lines[hit] {
					i = find(i)
				}
				if i >= 0 {
					hit = i
				}
			case query != "":
				hit = find(len(lines))
			}
		case k.name == "" && (k.r == 0x7f || k.r == 0x08):
			if query != "" {
				q := []rune(query)
				query = string(q[:len(q)-1])
			}
			hit = -1
			if query != "" {
				hit = find(len(lines))
			}
		case k.name == "" && (k.r == 0x03 || k.r == 0x07):
			e.redraw()
			return "", false, nil
		case k.name == "" && (k.r == '\r' || k.r == '\n'), k.name != "":
			if hit >= 0 {
				e.set(lines[hit])
				e.histPos = hit
			}
			e.redraw()
			return "", false, nil
		case k.name == "" && unicode.IsPrint(k.r):
			query += string(k.r)
			from := len(lines)
			if hit >= 0 {
				from = hit + 1 // a longer query may still match this line
			}
			hit = find(from)
		}
		draw()
	}
}

// complete is Tab: one candidate is taken; several fill their common
// prefix, and a second Tab lists them.
func (e *lineEditor) complete() {
	if e.comp == nil {
		return
	}
	line := string(e.buf)
	cur := len(string(e.buf[:e.pos]))
	sugs, start := e.comp.Complete(line[:cur])
	if len(sugs) == 0 {
		return
	}
	if len(sugs) == 1 {
		nl, np := completion.Apply(line, cur, start, sugs[0].Text, true)
		e.setBytes(nl, np)
		return
	}
	if p := completion.CommonPrefix(sugs); len(p) > cur-start && strings.HasPrefix(p, line[start:cur]) {
		nl, np := completion.Apply(line, cur, start, p, false)
		e.setBytes(nl, np)
		return
	}
	if !e.lastTab {
		e.lastTab = true
		fmt.Fprint(e.out, "\a")
		return
	}
	// The second Tab: list the candidates under the line.
	pos := e.pos
	e.toEnd()
	e.pos, e.row = pos, 0
	fmt.Fprint(e.out, "\r\n")
	const most = 40
	for i, s := range sugs {
		if i == most {
			fmt.Fprintf(e.out, "… and %d more\r\n", len(sugs)-most)
			break
		}
		fmt.Fprintf(e.out, "  %-28s %s\r\n", s.Text, s.Description)
	}
}

// setBytes sets the line and puts the cursor at a byte offset.
func (e *lineEditor) setBytes(line string, cursor int) {
	e.buf = []rune(line)
	e.pos = len([]rune(line[:cursor]))
}

// ReadPassword reads a password without echo, showing * per character.
// Ctrl+C gives up.
func (e *lineEditor) ReadPassword(prompt string) (string, error) {
	if e.fd >= 0 {
		old, err := term.MakeRaw(e.fd)
		if err != nil {
			return "", fmt.Errorf("terminal: %w", err)
		}
		defer term.Restore(e.fd, old)
	}
	fmt.Fprint(e.out, prompt)
	var pw []rune
	for {
		r, _, err := e.in.ReadRune()
		if err != nil {
			fmt.Fprint(e.out, "\r\n")
			return "", fmt.Errorf("read password: %w", err)
		}
		switch r {
		case '\r', '\n':
			fmt.Fprint(e.out, "\r\n")
			return string(pw), nil
		case 0x03, 0x04:
			fmt.Fprint(e.out, "^C\r\n")
			return "", errors.New("password entry cancelled")
		case 0x7f, 0x08:
			if len(pw) > 0 {
				pw = pw[:len(pw)-1]
				fmt.Fprint(e.out, "\b \b")
			}
		case 0x15:
			fmt.Fprint(e.out, strings.Repeat("\b \b", len(pw)))
			pw = nil
		case 0x1b:
			for e.in.Buffered() > 0 { // drop an escape sequence
				c, _ := e.in.ReadByte()
				if c >= 0x40 && c <= 0x7e && c != '[' && c != 'O' {
					break
				}
			}
		default:
			if unicode.IsPrint(r) {
				pw = append(pw, r)
				fmt.Fprint(e.out, "*")
			}
		}
	}
}
