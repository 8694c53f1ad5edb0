// Package tomlscan locates keys and values in TOML text, so that error
// messages can name the line of a bad setting and a file can be edited in
// place without losing its comments and layout.
//
// TOML decoders such as github.com/BurntSushi/toml say what a file holds but
// not where. [Scan] is a small, forgiving lexer that finds every table
// header and key/value pair, with the offsets of its key and value. It
// validates nothing: run it on text the decoder has accepted and let the
// decoder report syntax errors. On other text it does not fail, it only
// finds less.
package tomlscan

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Entry is one table header or key/value pair of a file.
type Entry struct {
	// Path is the dotted key, unquoted, with the table it is in:
	// "palette.accent" for accent under [palette], or for palette.accent
	// = … at the top. Elements of arrays of tables carry their index:
	// "cluster.servers[1].address".
	Path   string
	Header bool // a [table] or [[array]] header
	Array  bool // an [[array]] header
	// Inline marks a key inside an inline table: palette = { ok = "2" }
	// gives an entry "palette" and an inline one "palette.ok". Keys inside
	// arrays are not recorded; the array's own key stands for them.
	Inline bool
	// Start is the offset of the first byte of the header or key.
	Start int
	// ValStart and ValEnd delimit a key's value, without surrounding blanks
	// or a trailing comment; for a header, its brackets.
	ValStart, ValEnd int
	// EOL is the offset of the newline ending the line where the value (or
	// header) ends, or len(Text).
	EOL int
}

// Doc is the result of scanning a file.
type Doc struct {
	Text string
	// Entries are in file order; an inline table's keys come right after
	// the key holding the table.
	Entries []Entry
	lines   []int // offset of the start of each line
}

// Scan finds the headers and keys of the TOML text.
func Scan(text string) *Doc {
	d := &Doc{Text: text, lines: []int{0}}
	for i := 0; i < len(text); i++ {
		if text[i] == '\n' {
			d.lines = append(d.lines, i+1)
		}
	}
	counts := make(map[string]int) // array of tables -> elements seen
	table := ""
	for i := 0; i < len(text); {
		c := text[i]
		switch {
		case c == ' ' || c == '\t' || c == '\r' || c == '\n':
			i++
		case c == '#':
			i = lineEnd(text, i)
		case c == '[':
			start := i
			array := strings.HasPrefix(text[i:], "[[")
			closer := "]"
			if array {
				i++
				closer = "]]"
			}
			keys, j, ok := scanKey(text, i+1)
			j = skipBlank(text, j)
			if !ok || !strings.HasPrefix(text[j:], closer) {
				i = lineEnd(text, start)
				continue
			}
			end := j + len(closer)
			if array {
				arr := joinPath(indexPath(keys[:len(keys)-1], counts), keys[len(keys)-1])
				n := counts[arr]
				counts[arr] = n + 1
				table = arr + "[" + strconv.Itoa(n) + "]"
			} else {
				table = indexPath(keys, counts)
			}
			i = lineEnd(text, end)
			d.Entries = append(d.Entries, Entry{Path: table, Header: true, Array: array,
				Start: start, ValStart: start, ValEnd: end, EOL: i})
		default:
			ve, ok := d.keyValue(i, table, false)
			if !ok {
				i = lineEnd(text, i)
				continue
			}
			// Whatever follows the value on its line is a comment.
			i = lineEnd(text, ve)
		}
	}
	return d
}

// keyValue reads the key/value pair at i, under the table path prefix,
// recording it and the keys of any inline table in its value, and returns
// the offset just past the value. It reports false if there is no key and
// '=' at i, recording nothing, or if inline (the pair is inside an inline
// table) and the value is an inline table it cannot read.
func (d *Doc) keyValue(i int, prefix string, inline bool) (int, bool) {
	text := d.Text
	keys, j, ok := scanKey(text, i)
	j = skipBlank(text, j)
	if !ok || j >= len(text) || text[j] != '=' {
		return i, false
	}
	path := joinPath(prefix, keys...)
	// Record the key before its value, whose inline keys follow it.
	n := len(d.Entries)
	d.Entries = append(d.Entries, Entry{Path: path, Inline: inline, Start: i})
	vs := skipBlank(text, j+1)
	ve, ok := d.value(vs, path, inline)
	if !inline && vs < len(text) && text[vs] == '{' {
		// In TOML an inline table ends at its matching brace. Where the
		// braces say otherwise the text is not TOML: go by the braces, as
		// for an array, and forget the keys read inside.
		if end := endNested(text, vs); !ok || ve != end {
			d.Entries = d.Entries[:n+1]
			ve, ok = end, true
		}
	}
	if !ok {
		return ve, false
	}
	e := &d.Entries[n]
	e.ValStart, e.ValEnd, e.EOL = vs, ve, lineEnd(text, ve)
	return ve, true
}

// value returns the offset just past the value that starts at i, recording
// the keys of an inline table there under path. It reports false if that
// table cannot be read.
func (d *Doc) value(i int, path string, inline bool) (int, bool) {
	text := d.Text
	if i >= len(text) {
		return i, true
	}
	switch text[i] {
	case '"', '\'':
		return endString(text, i), true
	case '{':
		return d.inlineTable(i, path)
	case '[':
		return endNested(text, i), true
	}
	// A number, boolean or date: up to a comment or the end of the line,
	// or in an inline table to the comma or brace after it.
	stop := "#\r\n"
	if inline {
		stop = ",}#\r\n"
	}
	j := i
	for j < len(text) && strings.IndexByte(stop, text[j]) < 0 {
		j++
	}
	for j > i && (text[j-1] == ' ' || text[j-1] == '\t') {
		j--
	}
	return j, true
}

// inlineTable records the keys of the inline table whose brace is at open
// under path, and returns the offset just past its closing brace. It reports
// false if it cannot read the table.
func (d *Doc) inlineTable(open int, path string) (int, bool) {
	text := d.Text
	for i := open + 1; i < len(text); {
		switch c := text[i]; {
		case c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == ',':
			i++
		case c == '#':
			i = lineEnd(text, i)
		case c == '}':
			return i + 1, true
		default:
			end, ok := d.keyValue(i, path, true)
			if !ok {
				return end, false
			}
			i = end
		}
	}
	return len(text), false
}

// endNested returns the offset just past the bracket or brace that closes
// the one at i, minding strings and comments, or len(text).
func endNested(text string, i int) int {
	depth := 0
	for j := i; j < len(text); {
		switch text[j] {
		case '[', '{':
			depth++
			j++
		case ']', '}':
			depth--
			j++
			if depth == 0 {
				return j
			}
		case '"', '\'':
			j = endString(text, j)
		case '#':
			j = lineEnd(text, j)
		default:
			j++
		}
	}
	return len(text)
}

// indexPath joins keys, adding the index of the last element to every
// prefix that is an array of tables: a header [a.b] after [[a]] names a
// table inside the last element of a.
func indexPath(keys []string, counts map[string]int) string {
	p := ""
	for _, k := range keys {
		p = joinPath(p, k)
		if n, ok := counts[p]; ok {
			p += "[" + strconv.Itoa(n-1) + "]"
		}
	}
	return p
}

func joinPath(prefix string, keys ...string) string {
	for _, k := range keys {
		if prefix == "" {
			prefix = k
		} else {
			prefix += "." + k
		}
	}
	return prefix
}

// scanKey reads a possibly dotted key at i and returns its parts and the
// offset after it.
func scanKey(text string, i int) ([]string, int, bool) {
	var keys []string
	for {
		i = skipBlank(text, i)
		if i >= len(text) {
			return nil, i, false
		}
		var k string
		switch text[i] {
		case '"':
			end := endBasic(text, i+1)
			if end > len(text) || text[end-1] != '"' || end == i+1 {
				return nil, i, false
			}
			raw := text[i:end]
			if u, err := strconv.Unquote(raw); err == nil {
				k = u
			} else {
				k = raw[1 : len(raw)-1]
			}
			i = end
		case '\'':
			end := strings.IndexAny(text[i+1:], "'\n")
			if end < 0 || text[i+1+end] != '\'' {
				return nil, i, false
			}
			k = text[i+1 : i+1+end]
			i += end + 2
		default:
			j := i
			for j < len(text) && isBare(text[j]) {
				j++
			}
			if j == i {
				return nil, i, false
			}
			k = text[i:j]
			i = j
		}
		keys = append(keys, k)
		i = skipBlank(text, i)
		if i >= len(text) || text[i] != '.' {
			return keys, i, true
		}
		i++
	}
}

func isBare(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-'
}

func skipBlank(text string, i int) int {
	for i < len(text) && (text[i] == ' ' || text[i] == '\t') {
		i++
	}
	return i
}

// lineEnd returns the offset of the newline at or after i, or len(text).
func lineEnd(text string, i int) int {
	if i >= len(text) {
		return len(text)
	}
	if n := strings.IndexByte(text[i:], '\n'); n >= 0 {
		return i + n
	}
	return len(text)
}

// endString returns the offset just past the string starting at i.
func endString(text string, i int) int {
	switch {
	case strings.HasPrefix(text[i:], `"""`):
		return endMulti(text, i+3, '"')
	case strings.HasPrefix(text[i:], "'''"):
		return endMulti(text, i+3, '\'')
	case text[i] == '"':
		return endBasic(text, i+1)
	}
	if n := strings.IndexAny(text[i+1:], "'\n"); n >= 0 {
		if text[i+1+n] == '\'' {
			return i + n + 2
		}
		return i + 1 + n
	}
	return len(text)
}

// endBasic returns the offset just past the closing quote of the basic
// string whose contents start at i (or the end of the line if unclosed).
func endBasic(text string, i int) int {
	for i < len(text) {
		switch text[i] {
		case '\\':
			i += 2
			continue
		case '"':
			return i + 1
		case '\n':
			return i
		}
		i++
	}
	return len(text)
}

// endMulti returns the offset just past the closing delimiter of a
// multi-line string whose contents start at i.
func endMulti(text string, i int, q byte) int {
	delim := strings.Repeat(string(q), 3)
	for i < len(text) {
		if q == '"' && text[i] == '\\' {
			i += 2
			continue
		}
		if strings.HasPrefix(text[i:], delim) {
			i += 3
			// Up to two quotes may sit just inside the delimiter.
			for n := 0; n < 2 && i < len(text) && text[i] == q; n++ {
				i++
			}
			return i
		}
		i++
	}
	return len(text)
}

// Line returns the 1-based line number of offset off, or 0 if off < 0 or d
// is nil.
func (d *Doc) Line(off int) int {
	if d == nil || off < 0 {
		return 0
	}
	return sort.Search(len(d.lines), func(i int) bool { return d.lines[i] > off })
}

// LineStart returns the offset of the start of the line holding off.
func (d *Doc) LineStart(off int) int {
	return d.lines[d.Line(off)-1]
}

// Locate returns the offset where the key path is first defined, falling
// back to the first thing defined under it (a table made only of dotted
// keys or sub-tables, or "a" for an array of tables a[0], a[1]…) and then
// to its parent, or -1 if d is nil or holds none of them. A path names
// array elements as Entry.Path does: "a.b[1].c".
func (d *Doc) Locate(path string) int {
	if d == nil {
		return -1
	}
	for path != "" {
		for _, e := range d.Entries {
			if e.Path == path {
				return e.Start
			}
		}
		for _, e := range d.Entries {
			if strings.HasPrefix(e.Path, path+".") || strings.HasPrefix(e.Path, path+"[") {
				return e.Start
			}
		}
		// Step up to the parent: "a.b[1].c" -> "a.b[1]" -> "a.b" -> "a".
		if i := strings.LastIndexAny(path, ".["); i >= 0 {
			path = path[:i]
		} else {
			path = ""
		}
	}
	return -1
}

// KeyLine returns the 1-based line that Locate finds for path, or 0.
func (d *Doc) KeyLine(path string) int {
	return d.Line(d.Locate(path))
}

// CommentsAbove returns the start of the comment lines right above the line
// holding off, or of that line if there are none: such comments usually
// describe what follows them, so an insertion before a table goes there.
func (d *Doc) CommentsAbove(off int) int {
	ln := d.Line(off) - 1
	for ln > 0 {
		prev := strings.TrimSpace(d.Text[d.lines[ln-1]:d.lines[ln]])
		if !strings.HasPrefix(prev, "#") {
			break
		}
		ln--
	}
	return d.lines[ln]
}

// Describe names the TOML type of a value BurntSushi/toml decoded, and
// shows it, for "must be X, got Y" errors.
func Describe(v any) string {
	switch x := v.(type) {
	case string:
		return fmt.Sprintf("string %q", x)
	case int64:
		return fmt.Sprintf("integer %d", x)
	case float64:
		return fmt.Sprintf("float %v", x)
	case bool:
		return fmt.Sprintf("boolean %v", x)
	case time.Time:
		return "datetime " + x.Format(time.RFC3339)
	case map[string]any:
		return "a table"
	case []map[string]any:
		return "an array of tables"
	case []any:
		return "an array"
	}
	return fmt.Sprintf("%T", v)
}
