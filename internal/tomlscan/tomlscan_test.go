package tomlscan

import (
	"reflect"
	"strings"
	"testing"
)

// firstLines maps each path of d to the line where it is first defined.
func firstLines(d *Doc) map[string]int {
	got := make(map[string]int)
	for _, e := range d.Entries {
		if _, ok := got[e.Path]; !ok {
			got[e.Path] = d.Line(e.Start)
		}
	}
	return got
}

func TestScan(t *testing.T) {
	tests := []struct {
		name string
		text string
		want map[string]int // every path found -> line of its first definition
	}{
		{"config file", `a = """
b = 1
"""
'c.d' . e = [ 1,
  # f = 2
  "]", ]
[ "x" . y ]
g = {h = 1} # i = 3
[[arr]]
[arr.sub]
j = 'k'
[[arr]]
l = 1`, map[string]int{
			"a": 1, "c.d.e": 4, "x.y": 7, "x.y.g": 8, "x.y.g.h": 8,
			"arr[0]": 9, "arr[0].sub": 10, "arr[0].sub.j": 11, "arr[1]": 12, "arr[1].l": 13,
		}},
		{"theme file", `# theme
name = "a # not a comment"
base = 'dark'
notes = """
[palette]
ok = 1
"""
list = [
  [1, 2],
  { x = "]" },
]
[palette]
  accent = "#fff" # trailing
"quoted.key" = "1"
inline = { a = 1, b = { c = "}" } }
[[arr]]
v = 1
`, map[string]int{
			"name": 2, "base": 3, "notes": 4, "list": 8, "palette": 12,
			"palette.accent": 13, "palette.quoted.key": 14,
			"palette.inline": 15, "palette.inline.a": 15, "palette.inline.b": 15, "palette.inline.b.c": 15,
			"arr[0]": 16, "arr[0].v": 17,
		}},
		{"servers as config writes them", "[cluster]\nmode = \"remote\"\n\n[[cluster.servers]]\nid = \"hsm-1\"\naddress = \"a:1\"\n\n[[cluster.servers]]\nid = \"hsm-2\"\n",
			map[string]int{
				"cluster": 1, "cluster.mode": 2,
				"cluster.servers[0]": 4, "cluster.servers[0].id": 5, "cluster.servers[0].address": 6,
				"cluster.servers[1]": 8, "cluster.servers[1].id": 9,
			}},
		{"nested arrays of tables", "[[a]]\n[[a.b]]\n[a.b.c]\nx = 1\n[[a.b]]\n[[a]]\n[[a.b]]\ny = 2\n",
			map[string]int{
				"a[0]": 1, "a[0].b[0]": 2, "a[0].b[0].c": 3, "a[0].b[0].c.x": 4, "a[0].b[1]": 5,
				"a[1]": 6, "a[1].b[0]": 7, "a[1].b[0].y": 8,
			}},
		{"dotted and quoted keys", "palette.ok = \"1\"\n\"a\\\"b\" = 1\n'c' . \"d.e\" = 2\n[t]\nu . v = 3\n",
			map[string]int{"palette.ok": 1, `a"b`: 2, "c.d.e": 3, "t": 4, "t.u.v": 5}},
		{"multi-line inline table", "palette = {\n  ok = \"1\", # fine\n  warn = [\n    \"}\",\n  ],\n  sub = { x = 1 }\n}\nafter = 1\n",
			map[string]int{"palette": 1, "palette.ok": 2, "palette.warn": 3, "palette.sub": 6, "palette.sub.x": 6, "after": 8}},
		{"keys in arrays are not recorded", "servers = [ { id = \"a\" },\n  { id = \"b\" } ]\nx = 1\n",
			map[string]int{"servers": 1, "x": 3}},
		{"multi-line strings hide keys", "a = '''\nb = 1\n[c]\n'''\nd = \"\"\"x\\\"\"\"\ne = 1\n\"\"\"\nf = \"\"\"\"\"quotes inside\"\"\"\"\"\ng = 1\n",
			map[string]int{"a": 1, "d": 5, "f": 8, "g": 9}},
		{"CRLF", "[t]\r\na = 1\r\nb = 'x'\r\n", map[string]int{"t": 1, "t.a": 2, "t.b": 3}},
		{"unreadable inline table", "q = { a = 1, ] b = 2 }\nr = { c = x]y }\nx = { d = {\n",
			map[string]int{"q": 1, "r": 2, "x": 3}},
		{"garbage is skipped", "not toml\n= 1\n[unclosed\n[[also\"\na = \"unclosed\nb = 2\n",
			map[string]int{"a": 5, "b": 6}},
		{"empty", "", map[string]int{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := Scan(tt.text)
			if got := firstLines(d); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Scan found %v\nwant %v", got, tt.want)
			}
		})
	}
}

func TestEntries(t *testing.T) {
	text := "[a]\nx = { y = 1 }\n[[b]]\nz = 2 # c\n"
	want := []Entry{
		{Path: "a", Header: true, Start: 0, ValStart: 0, ValEnd: 3, EOL: 3},
		{Path: "a.x", Start: 4, ValStart: 8, ValEnd: 17, EOL: 17},
		{Path: "a.x.y", Inline: true, Start: 10, ValStart: 14, ValEnd: 15, EOL: 17},
		{Path: "b[0]", Header: true, Array: true, Start: 18, ValStart: 18, ValEnd: 23, EOL: 23},
		{Path: "b[0].z", Start: 24, ValStart: 28, ValEnd: 29, EOL: 33},
	}
	d := Scan(text)
	if !reflect.DeepEqual(d.Entries, want) {
		t.Errorf("Entries =\n%+v\nwant\n%+v", d.Entries, want)
	}
}

func TestValues(t *testing.T) {
	tests := []struct {
		name, text, path, want string
	}{
		{"basic string", `k = "a \" # b" # c`, "k", `"a \" # b"`},
		{"literal string", `k = 'a \' # c`, "k", `'a \'`},
		{"empty string", `k = ""`, "k", `""`},
		{"multi-line basic", "k = \"\"\"\na\n\\\"\"\"\nb\"\"\" # c\nx = 1", "k", "\"\"\"\na\n\\\"\"\"\nb\"\"\""},
		{"multi-line literal", "k = '''\na ''b'''' # c", "k", "'''\na ''b''''"},
		{"unclosed string", "k = \"abc\nx = 1\n", "k", `"abc`},
		{"unclosed string at end", `k = "abc`, "k", `"abc`},
		{"unclosed multi-line", "k = '''abc\n", "k", "'''abc\n"},
		{"number and comment", "k =   42  # c\n", "k", "42"},
		{"boolean at end", "k = true", "k", "true"},
		{"date-time with a space", "k = 1979-05-27 07:32:00  \n", "k", "1979-05-27 07:32:00"},
		{"CRLF", "k = 1\r\nx = 2\r\n", "k", "1"},
		{"array", "k = [ 1,\n  # ] \n  \"]\", [2], {a = '}'} ] # c", "k", "[ 1,\n  # ] \n  \"]\", [2], {a = '}'} ]"},
		{"unclosed array", "k = [1, 2\n", "k", "[1, 2\n"},
		{"inline table", "k = { a = 1 , b = \"}\" } # c", "k", "{ a = 1 , b = \"}\" }"},
		{"inline scalar before comma", "k = { a = 1 , b = 2}", "k.a", "1"},
		{"inline scalar before brace", "k = { a = 1 , b = 2}", "k.b", "2"},
		{"inline nested table", "k = { a = { b = 'x' }, c = 1 }", "k.a", "{ b = 'x' }"},
		{"unreadable inline table", "k = { = 1, {} }\nx = 1", "k", "{ = 1, {} }"},
		{"missing value", "k =\n", "k", ""},
		{"header", "  [ a . \"b\" ]  # c", "a.b", `[ a . "b" ]`},
		{"array header", "[[ a ]]", "a[0]", "[[ a ]]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := Scan(tt.text)
			for _, e := range d.Entries {
				if e.Path == tt.path {
					if got := tt.text[e.ValStart:e.ValEnd]; got != tt.want {
						t.Errorf("value of %s = %q, want %q", tt.path, got, tt.want)
					}
					return
				}
			}
			t.Errorf("%s not found in %+v", tt.path, d.Entries)
		})
	}
}

func TestLocate(t *testing.T) {
	text := `[palette]
accent = "1"
[[arr]]
v = 1
[[arr]]
[arr.sub]
w = 2
[implicit.sub]
dotted.a = 1
inline = { a = 1 }
`
	tests := []struct {
		path string
		line int
	}{
		{"palette", 1},
		{"palette.accent", 2},
		{"palette.nope", 1},        // falls back to the table
		{"palette.accent.deep", 2}, // and to the key
		{"arr", 3},                 // the first element of the array
		{"arr[0].v", 4},
		{"arr[1]", 5},
		{"arr[1].sub.w", 7},
		{"arr[1].nope", 5},
		{"arr[7].v", 3}, // no such element: the array
		{"implicit", 8}, // defined only by its sub-table
		{"implicit.sub.dotted", 9},
		{"implicit.sub.inline.a", 10},
		{"nowhere", 0},
		{"", 0},
	}
	d := Scan(text)
	for _, tt := range tests {
		if got := d.KeyLine(tt.path); got != tt.line {
			t.Errorf("KeyLine(%q) = %d, want %d", tt.path, got, tt.line)
		}
	}
	if got := d.Locate("arr[0].v"); got != strings.Index(text, "v = 1") {
		t.Errorf(`Locate("arr[0].v") = %d, want the offset of "v = 1"`, got)
	}
	var none *Doc
	if got := none.Locate("a"); got != -1 {
		t.Errorf("nil Doc: Locate = %d, want -1", got)
	}
	if got := none.KeyLine("a"); got != 0 {
		t.Errorf("nil Doc: KeyLine = %d, want 0", got)
	}
}

func TestLines(t *testing.T) {
	text := "a = 1\n\n# one\n  # two\n[t]\nb = 2"
	d := Scan(text)
	tests := []struct {
		off, line, start, comments int
	}{
		{0, 1, 0, 0},
		{5, 1, 0, 0}, // the newline belongs to its line
		{6, 2, 6, 6},
		{strings.Index(text, "[t]"), 5, 21, 7},
		{strings.Index(text, "b ="), 6, 25, 25},
		{len(text) - 1, 6, 25, 25},
	}
	for _, tt := range tests {
		if got := d.Line(tt.off); got != tt.line {
			t.Errorf("Line(%d) = %d, want %d", tt.off, got, tt.line)
		}
		if got := d.LineStart(tt.off); got != tt.start {
			t.Errorf("LineStart(%d) = %d, want %d", tt.off, got, tt.start)
		}
		if got := d.CommentsAbove(tt.off); got != tt.comments {
			t.Errorf("CommentsAbove(%d) = %d, want %d", tt.off, got, tt.comments)
		}
	}
	if got := d.Line(-1); got != 0 {
		t.Errorf("Line(-1) = %d, want 0", got)
	}
}

// FuzzScan checks that Scan never panics and that its offsets make sense,
// whatever the text.
func FuzzScan(f *testing.F) {
	for _, s := range []string{
		"a = 1\n[t]\nb = 'x' # c\n", "[[a]]\n[[a.b]]\nc = { d = [1, {e = 2}], f = \"\"\"\n\"\"\" }\n",
		"k = \"\\", "k = '''", "[\"", "a.\"b", "x = {", "x = [", "x = { a = 1, = }", "\"\" = 1", "0={0=]\n0={}0",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, text string) {
		d := Scan(text)
		last := -1
		for _, e := range d.Entries {
			if !(0 <= e.Start && e.Start <= e.ValStart && e.ValStart <= e.ValEnd && e.ValEnd <= e.EOL && e.EOL <= len(text)) {
				t.Fatalf("bad offsets %+v in %q", e, text)
			}
			if e.Start <= last {
				t.Fatalf("entries out of order at %+v in %q", e, text)
			}
			last = e.Start
			if e.EOL < len(text) && text[e.EOL] != '\n' {
				t.Fatalf("EOL of %+v is not a newline in %q", e, text)
			}
			if d.Line(e.Start) < 1 || d.CommentsAbove(e.Start) > d.LineStart(e.Start) {
				t.Fatalf("bad lines for %+v in %q", e, text)
			}
			// An empty quoted key ("" = 1) has no path to look up.
			if e.Path != "" && d.KeyLine(e.Path) < 1 {
				t.Fatalf("KeyLine(%q) = 0 in %q", e.Path, text)
			}
		}
	})
}
