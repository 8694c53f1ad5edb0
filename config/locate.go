package config

import (
	"sort"
	"strconv"
	"strings"
)

// The TOML decoder does not say where keys are, but good error messages and
// in-place edits need to. scan is a small, forgiving TOML lexer that finds
// every table header and key/value pair and where its value is. It does not
// validate anything: the real decoder reports syntax errors.

// entry is one table header or key/value pair of a file.
type entry struct {
	// path is the dotted key; elements of arrays of tables carry their
	// index: "cluster.servers[1].address".
	path   string
	header bool // a [table] or [[array]] header
	array  bool // an [[array]] header
	start  int  // offset of the first byte of the header or key
	// valStart and valEnd delimit a key's value, or the header's brackets.
	valStart, valEnd int
	// eol is the offset of the newline ending the entry's last line, or
	// len(text).
	eol int
}

// doc is the result of scanning a file.
type doc struct {
	text    string
	entries []entry
	lines   []int // offset of the start of each line
}

func scan(text string) *doc {
	d := &doc{text: text, lines: []int{0}}
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
			d.entries = append(d.entries, entry{path: table, header: true, array: array,
				start: start, valStart: start, valEnd: end, eol: i})
		default:
			start := i
			keys, j, ok := scanKey(text, i)
			j = skipBlank(text, j)
			if !ok || j >= len(text) || text[j] != '=' {
				i = lineEnd(text, start)
				continue
			}
			vs := skipBlank(text, j+1)
			ve := scanValue(text, vs)
			i = lineEnd(text, ve)
			d.entries = append(d.entries, entry{path: joinPath(table, keys...),
				start: start, valStart: vs, valEnd: ve, eol: i})
		}
	}
	return d
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

// scanValue returns the offset just past the value that starts at i.
func scanValue(text string, i int) int {
	if i >= len(text) {
		return i
	}
	switch c := text[i]; {
	case c == '"' || c == '\'':
		return endString(text, i)
	case c == '[' || c == '{':
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
	// A number, boolean or date: up to a comment or the end of the line.
	j := i
	for j < len(text) && text[j] != '#' && text[j] != '\n' && text[j] != '\r' {
		j++
	}
	for j > i && (text[j-1] == ' ' || text[j-1] == '\t') {
		j--
	}
	return j
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

// line returns the 1-based line number of offset off, or 0 if off < 0.
func (d *doc) line(off int) int {
	if d == nil || off < 0 {
		return 0
	}
	return sort.Search(len(d.lines), func(i int) bool { return d.lines[i] > off })
}

// lineStart returns the offset of the start of the line holding off.
func (d *doc) lineStart(off int) int {
	return d.lines[d.line(off)-1]
}

// locate returns the offset where the key path is defined, falling back to
// the first thing defined under it and then to its parent, or -1.
func (d *doc) locate(path string) int {
	if d == nil {
		return -1
	}
	for path != "" {
		for _, e := range d.entries {
			if e.path == path {
				return e.start
			}
		}
		for _, e := range d.entries {
			if strings.HasPrefix(e.path, path+".") || strings.HasPrefix(e.path, path+"[") {
				return e.start
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
