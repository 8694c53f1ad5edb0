package themes

import (
	"sort"
	"strconv"
	"strings"
)

// The TOML decoder does not say where keys are, but an error message that
// names the line saves the user a search. locateKeys is a small lexer that
// runs over a file the decoder has already accepted and notes the line of
// every table header and key, including keys inside inline tables. It does
// not validate anything.

// keyLines maps dotted key paths ("palette.accent") to the 1-based line
// where they are first defined.
type keyLines map[string]int

// line returns the line of path, or of its nearest parent that is in the
// file (a key inside an array, say), or 0.
func (k keyLines) line(path string) int {
	for path != "" {
		if n, ok := k[path]; ok {
			return n
		}
		i := strings.LastIndexByte(path, '.')
		if i < 0 {
			break
		}
		path = path[:i]
	}
	return 0
}

func locateKeys(text string) keyLines {
	l := &locator{text: text, found: keyLines{}, starts: []int{0}}
	for i := 0; i < len(text); i++ {
		if text[i] == '\n' {
			l.starts = append(l.starts, i+1)
		}
	}
	l.scan()
	return l.found
}

type locator struct {
	text   string
	found  keyLines
	starts []int // offset of the start of each line
}

// record notes that path is defined at offset off, unless it already was.
func (l *locator) record(path string, off int) {
	if _, ok := l.found[path]; !ok {
		l.found[path] = sort.Search(len(l.starts), func(i int) bool { return l.starts[i] > off })
	}
}

func (l *locator) scan() {
	text := l.text
	table := ""
	for i := 0; i < len(text); {
		switch c := text[i]; {
		case c == ' ' || c == '\t' || c == '\r' || c == '\n':
			i++
		case c == '#':
			i = lineEnd(text, i)
		case c == '[':
			start := i
			closer := "]"
			if strings.HasPrefix(text[i:], "[[") {
				i++
				closer = "]]"
			}
			keys, j, ok := scanKey(text, i+1)
			j = skipBlank(text, j)
			if ok && strings.HasPrefix(text[j:], closer) {
				table = strings.Join(keys, ".")
				l.record(table, start)
			}
			i = lineEnd(text, start)
		default:
			start := i
			keys, j, ok := scanKey(text, i)
			j = skipBlank(text, j)
			if !ok || j >= len(text) || text[j] != '=' {
				i = lineEnd(text, start)
				continue
			}
			path := joinPath(table, keys)
			l.record(path, start)
			i = l.value(skipBlank(text, j+1), path)
		}
	}
}

// value skips the value starting at i, noting the keys of inline tables
// under path, and returns the offset after it.
func (l *locator) value(i int, path string) int {
	text := l.text
	if i >= len(text) {
		return i
	}
	switch text[i] {
	case '"', '\'':
		return endString(text, i)
	case '{':
		for i++; i < len(text); {
			switch c := text[i]; {
			case c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == ',':
				i++
			case c == '#':
				i = lineEnd(text, i)
			case c == '}':
				return i + 1
			default:
				keys, j, ok := scanKey(text, i)
				j = skipBlank(text, j)
				if !ok || j >= len(text) || text[j] != '=' {
					return lineEnd(text, i)
				}
				inner := joinPath(path, keys)
				l.record(inner, i)
				i = l.value(skipBlank(text, j+1), inner)
			}
		}
		return len(text)
	case '[':
		// Arrays hold no keys a theme could be told about; skip to the
		// matching bracket, minding strings and comments.
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
	// A number, boolean or date ends where the next thing begins.
	j := i
	for j < len(text) && !strings.ContainsRune(",]}#\r\n", rune(text[j])) {
		j++
	}
	return j
}

func joinPath(prefix string, keys []string) string {
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
