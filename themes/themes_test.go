package themes

import (
	"io"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/charmbracelet/lipgloss"
	"github.com/muesli/termenv"
)

// render renders s under a truecolor profile, whatever the test's output
// is, so that colours show up as escape sequences.
func render(s lipgloss.Style, text string) string {
	r := lipgloss.NewRenderer(io.Discard)
	r.SetColorProfile(termenv.TrueColor)
	return s.Renderer(r).Render(text)
}

var sgr = regexp.MustCompile("\x1b\\[([0-9;]*)m")

// colourCodes returns the SGR parameters in out that set a colour:
// foreground 30-39 and 90-97, background 40-49 and 100-107, underline
// colour 58. Attributes such as bold (1), faint (2), underline (4) and
// reverse (7) are not colours.
func colourCodes(out string) []int {
	var codes []int
	for _, m := range sgr.FindAllStringSubmatch(out, -1) {
		for _, p := range strings.Split(m[1], ";") {
			n, err := strconv.Atoi(p)
			if err != nil {
				continue
			}
			if n >= 30 && n <= 49 || n >= 90 && n <= 107 || n == 58 {
				codes = append(codes, n)
				break // the rest are the colour's own numbers
			}
		}
	}
	return codes
}

// hasParam reports whether out has an SGR sequence with parameter n.
func hasParam(out string, n int) bool {
	for _, m := range sgr.FindAllStringSubmatch(out, -1) {
		if slices.Contains(strings.Split(m[1], ";"), strconv.Itoa(n)) {
			return true
		}
	}
	return false
}

// styles returns every lipgloss.Style field of t by name, so that a style
// added later is covered by the colour tests without editing them.
func styles(t Theme) map[string]lipgloss.Style {
	m := make(map[string]lipgloss.Style)
	v := reflect.ValueOf(t)
	for i := 0; i < v.NumField(); i++ {
		if s, ok := v.Field(i).Interface().(lipgloss.Style); ok {
			m[v.Type().Field(i).Name] = s
		}
	}
	return m
}

func TestNames(t *testing.T) {
	want := []string{"dark", "default", "high-contrast", "light", "mono"}
	got := Names()
	if !slices.Equal(got, want) {
		t.Fatalf("Names() = %q, want %q", got, want)
	}
	if !slices.IsSorted(got) {
		t.Errorf("Names() not sorted: %q", got)
	}
	for _, n := range got {
		if _, ok := Builtin(n); !ok {
			t.Errorf("Builtin(%q) not found", n)
		}
	}
	if _, ok := Builtin("solarized"); ok {
		t.Error(`Builtin("solarized") found`)
	}
}

func TestBuiltins(t *testing.T) {
	tests := []struct {
		name    string
		noColor bool
		corner  string // top-left corner of a Pane
	}{
		{"default", false, "╭"},
		{"dark", false, "╭"},
		{"light", false, "╭"},
		{"high-contrast", false, "╭"},
		{"mono", true, "┌"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			th, err := Load(tt.name, false)
			if err != nil {
				t.Fatalf("Load(%q): %v", tt.name, err)
			}
			b, _ := Builtin(tt.name)
			if th.Name != tt.name || b.Name != tt.name {
				t.Errorf("Name = %q / %q, want %q", th.Name, b.Name, tt.name)
			}
			if th.NoColor != tt.noColor {
				t.Errorf("NoColor = %v, want %v", th.NoColor, tt.noColor)
			}
			if !reflect.DeepEqual(th.Palette, b.Palette) {
				t.Errorf("Load and Builtin palettes differ")
			}

			// The five cell states, and a breached row, must all look
			// different from each other and from plain output.
			distinct := []string{"Present", "Missing", "Lost", "Syncing", "Down", "Breach", "Output"}
			all := styles(th)
			seen := make(map[string]string)
			for _, n := range distinct {
				out := render(all[n], "k")
				if prev, dup := seen[out]; dup {
					t.Errorf("%s and %s render the same: %q", prev, n, out)
				}
				seen[out] = n
			}
			if render(th.Selected, "x") == render(th.Output, "x") {
				t.Error("Selected renders like Output")
			}
			if render(th.Status, "x") == render(th.Output, "x") {
				t.Error("Status renders like Output")
			}
			if pane := render(th.Pane, "x"); !strings.HasPrefix(pane, tt.corner) && !strings.Contains(pane, tt.corner) {
				t.Errorf("Pane = %q, want a %s corner", pane, tt.corner)
			}
		})
	}
}

func TestColourless(t *testing.T) {
	tests := []struct {
		name       string
		noColor    bool
		wantColour bool
	}{
		{"mono", false, false},
		{"mono", true, false},
		{"default", true, false},
		{"dark", true, false},
		{"light", true, false},
		{"high-contrast", true, false},
		{"default", false, true},
		{"dark", false, true},
		{"light", false, true},
		{"high-contrast", false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name+"/noColor="+strconv.FormatBool(tt.noColor), func(t *testing.T) {
			th, err := Load(tt.name, tt.noColor)
			if err != nil {
				t.Fatal(err)
			}
			if th.NoColor == tt.wantColour {
				t.Errorf("NoColor = %v", th.NoColor)
			}
			coloured := 0
			for n, s := range styles(th) {
				out := render(s, "text")
				if codes := colourCodes(out); len(codes) > 0 {
					coloured++
					if !tt.wantColour {
						t.Errorf("%s has colour codes %v: %q", n, codes, out)
					}
				}
			}
			if tt.wantColour {
				if coloured == 0 {
					t.Error("no style has colour")
				}
				for _, n := range []string{"Present", "Missing", "Lost", "Error", "Status"} {
					if len(colourCodes(render(styles(th)[n], "x"))) == 0 {
						t.Errorf("%s has no colour", n)
					}
				}
			} else {
				// Colourless states still differ, by attributes.
				for _, n := range []string{"Present", "Missing", "Lost", "Syncing", "Down", "Breach", "Status", "Selected"} {
					if !sgr.MatchString(render(styles(th)[n], "x")) {
						t.Errorf("%s has no attributes in colourless mode", n)
					}
				}
			}
		})
	}
}

func TestNew(t *testing.T) {
	p := Palette{Present: "2", Missing: "#808080", Lost: "196"}
	th := New("mine", p, false)
	if th.Name != "mine" || th.NoColor || th.Palette != p {
		t.Fatalf("New = %+v", th)
	}
	// "" is the terminal's default: no colour codes for those styles.
	for _, n := range []string{"Output", "Input", "Dim", "JSONKey"} {
		if c := colourCodes(render(styles(th)[n], "x")); len(c) > 0 {
			t.Errorf("%s: empty palette colour gave codes %v", n, c)
		}
	}
	if out := render(th.Lost, "x"); !strings.Contains(out, "38;2;255;0;0") && !strings.Contains(out, "38;5;196") {
		t.Errorf("Lost = %q, want colour 196", out)
	}
	// Without a status or selection background, reverse video keeps the
	// bar visible.
	if out := render(th.Status, "x"); !hasParam(out, 7) {
		t.Errorf("Status without background = %q, want reverse", out)
	}
	mono := New("mine", p, true)
	if !mono.NoColor || mono.Palette != p {
		t.Errorf("New(noColor) = %+v", mono)
	}
	for n, s := range styles(mono) {
		if c := colourCodes(render(s, "x")); len(c) > 0 {
			t.Errorf("New(noColor).%s has colour %v", n, c)
		}
	}
}

func TestLoadUnknownName(t *testing.T) {
	for _, name := range []string{"solarized", "Dark", "nope"} {
		_, err := Load(name, false)
		if err == nil {
			t.Fatalf("Load(%q) succeeded", name)
		}
		msg := err.Error()
		for _, want := range append(Names(), strconv.Quote(name), ".toml") {
			if !strings.Contains(msg, want) {
				t.Errorf("Load(%q) = %q, want it to mention %q", name, msg, want)
			}
		}
	}
	th, err := Load("", false)
	if err != nil || th.Name != "default" {
		t.Errorf(`Load("") = %q, %v; want default`, th.Name, err)
	}
}

func writeTheme(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestLoadFile(t *testing.T) {
	dark, _ := Builtin("dark")
	def, _ := Builtin("default")
	tests := []struct {
		name    string
		file    string
		content string
		noColor bool
		check   func(t *testing.T, th Theme)
	}{
		{"with base", "x.toml", `
name = "solarized"
base = "dark"          # comment
[palette]
accent = "#268bd2"
error = "#DC322F"
present = "2"
json_null = "#abc"
status_bg = ""
`, false, func(t *testing.T, th Theme) {
			want := dark.Palette
			want.Accent, want.Error, want.Present, want.JSONNull, want.StatusBg = "#268bd2", "#dc322f", "2", "#aabbcc", ""
			if th.Name != "solarized" || th.NoColor || th.Palette != want {
				t.Errorf("got %q %v %+v\nwant palette %+v", th.Name, th.NoColor, th.Palette, want)
			}
			if out := render(th.Prompt, "x"); !strings.Contains(out, "38;2;38;139;210") {
				t.Errorf("Prompt = %q, want accent colour", out)
			}
		}},
		{"default base and file name", "ocean.toml", "[palette]\nlost = \"9\"\n", false, func(t *testing.T, th Theme) {
			want := def.Palette
			want.Lost = "9"
			if th.Name != "ocean" || th.Palette != want {
				t.Errorf("got %q %+v", th.Name, th.Palette)
			}
		}},
		{"empty file", "empty.toml", "", false, func(t *testing.T, th Theme) {
			if th.Name != "empty" || th.Palette != def.Palette {
				t.Errorf("got %q %+v", th.Name, th.Palette)
			}
		}},
		{"inline and dotted", "t.toml", "name = 'x'\npalette = { ok = \"10\", warn = \"11\" }\n", false, func(t *testing.T, th Theme) {
			if th.Palette.OK != "10" || th.Palette.Warn != "11" {
				t.Errorf("got %+v", th.Palette)
			}
		}},
		{"dotted keys", "t.toml", "palette.down = \"#000\"\n", false, func(t *testing.T, th Theme) {
			if th.Palette.Down != "#000000" {
				t.Errorf("Down = %q", th.Palette.Down)
			}
		}},
		{"mono base stays colourless", "m.toml", "base = \"mono\"\n[palette]\naccent = \"1\"\n", false, func(t *testing.T, th Theme) {
			if !th.NoColor || th.Palette.Accent != "1" || len(colourCodes(render(th.Prompt, "x"))) > 0 {
				t.Errorf("NoColor = %v, Prompt = %q", th.NoColor, render(th.Prompt, "x"))
			}
		}},
		{"noColor overrides the file", "c.toml", "[palette]\naccent = \"1\"\n", true, func(t *testing.T, th Theme) {
			for n, s := range styles(th) {
				if c := colourCodes(render(s, "x")); len(c) > 0 {
					t.Errorf("%s has colour %v", n, c)
				}
			}
		}},
		{"high-contrast base keeps its bold", "h.toml", "base = \"high-contrast\"\n", false, func(t *testing.T, th Theme) {
			hc, _ := Builtin("high-contrast")
			if render(th.OK, "x") != render(hc.OK, "x") || !hasParam(render(th.OK, "x"), 1) {
				t.Errorf("OK = %q, want bold like high-contrast's %q", render(th.OK, "x"), render(hc.OK, "x"))
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := writeTheme(t, tt.file, tt.content)
			th, err := Load(path, tt.noColor)
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			tt.check(t, th)
		})
	}
}

func TestLoadFileErrors(t *testing.T) {
	tests := []struct {
		name    string
		content string
		want    []string // each "LINE: rest", prefixed with the path; in order
	}{
		{"unknown palette key", "name = \"x\"\nbase = \"dark\"\n[palette]\nacent = \"#268bd2\"\n",
			[]string{"4: palette.acent: unknown key (known: accent, background, border, dim, down, error, foreground, json_bool, json_key, json_null, json_number, json_string, lost, missing, ok, present, selection_bg, selection_fg, status_bg, status_fg, syncing, title, warn)"}},
		{"unknown top-level key", "# a theme\n\ncolours = 1\n",
			[]string{"3: colours: unknown key (known: base, name, palette)"}},
		{"bad colour name", "[palette]\naccent = \"#268bd2\"\nerror   =   \"red\"\n",
			[]string{`3: palette.error: "red" is not a colour: use "#rrggbb", "#rgb" or an ANSI number 0-255`}},
		{"bad hex", "[palette]\n\n  ok = \"#12345\"\n", []string{`3: palette.ok: "#12345" is not a colour`}},
		{"bad hex digit", "[palette]\nok = \"#ggg\"\n", []string{`2: palette.ok: "#ggg" is not a colour`}},
		{"ANSI out of range", "[palette]\nok = \"256\"\n", []string{`2: palette.ok: "256" is not a colour`}},
		{"negative ANSI", "[palette]\nok = \"-1\"\n", []string{`2: palette.ok: "-1" is not a colour`}},
		{"unquoted ANSI number", "[palette]\npresent = 2\n",
			[]string{`2: palette.present: must be a colour string such as "#268bd2" or "2" (ANSI numbers are quoted too), got integer 2`}},
		{"name not a string", "name = 7\n", []string{"1: name: must be a string, got integer 7"}},
		{"empty name", "name = \"\"\n", []string{"1: name: must not be empty"}},
		{"palette not a table", "palette = \"dark\"\n", []string{`1: palette: must be a table ([palette]), got string "dark"`}},
		{"unknown base", "\nbase = \"solar\"\n",
			[]string{`2: base: unknown built-in theme "solar" (known: dark, default, high-contrast, light, mono)`}},
		{"syntax error", "name = \"x\"\n[palette]\naccent = \"#fff\n", []string{"3: syntax error: "}},
		{"duplicate key", "[palette]\nok = \"1\"\nok = \"2\"\n", []string{"3: syntax error: "}},
		{"every problem in file order", "[palette]\nwarn = \"yellow\"\nacent = \"1\"\n[extra]\n",
			[]string{`2: palette.warn: "yellow" is not a colour`, "3: palette.acent: unknown key", "4: extra: unknown key"}},
		{"inline table", "name = \"x\"\npalette = { ok = \"1\",\n  bad = \"2\" }\n",
			[]string{"3: palette.bad: unknown key"}},
		{"dotted key", "palette.ok = \"x\"\n", []string{`1: palette.ok: "x" is not a colour`}},
		{"table made of dotted keys", "name = \"x\"\nextra.a = 1\n", []string{"2: extra: unknown key"}},
		{"quoted key under header", "[palette]\n\"json key\" = \"1\"\n", []string{"2: palette.json key: unknown key"}},
		{"multi-line string does not confuse lines", "name = \"\"\"\n[palette]\nok = 1\n\"\"\"\n[palette]\nok = 1\n",
			[]string{"6: palette.ok: must be a colour string"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := writeTheme(t, "theme.toml", tt.content)
			_, err := Load(path, false)
			if err == nil {
				t.Fatal("Load succeeded")
			}
			lines := strings.Split(err.Error(), "\n")
			if len(lines) != len(tt.want) {
				t.Fatalf("got %d errors, want %d:\n%v", len(lines), len(tt.want), err)
			}
			for i, w := range tt.want {
				if !strings.HasPrefix(lines[i], path+":"+w) {
					t.Errorf("error %d = %q\nwant prefix %q", i, lines[i], path+":"+w)
				}
			}
		})
	}
}

func TestLoadFileSystemErrors(t *testing.T) {
	dir := t.TempDir()
	big := filepath.Join(dir, "big.toml")
	if err := os.WriteFile(big, []byte(strings.Repeat("#", maxFileSize)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	full := filepath.Join(dir, "full.toml")
	if err := os.WriteFile(full, []byte(strings.Repeat("#", maxFileSize-1)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(full, false); err != nil {
		t.Errorf("file of exactly 64 KiB: %v", err)
	}
	sub := filepath.Join(dir, "sub.toml")
	if err := os.Mkdir(sub, 0o700); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "nope.toml")

	tests := []struct {
		name string
		path string
		want []string
	}{
		{"missing", missing, append([]string{missing + ": theme file not found"}, Names()...)},
		{"missing without .toml", filepath.Join(dir, "nope"), []string{"theme file not found", "high-contrast"}},
		{"too large", big, []string{big + ": theme file is larger than 64 KiB"}},
		{"directory", sub, []string{sub + ": not a regular file"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Load(tt.path, false)
			if err == nil {
				t.Fatal("Load succeeded")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestLoadRelativeFile(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "mine.toml"), []byte("name = \"mine\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Chdir(dir)
	th, err := Load("mine.toml", false)
	if err != nil || th.Name != "mine" {
		t.Errorf(`Load("mine.toml") = %q, %v`, th.Name, err)
	}
}

func TestNormalizeColor(t *testing.T) {
	tests := []struct {
		in, want string
		ok       bool
	}{
		{"", "", true},
		{"#268bd2", "#268bd2", true},
		{"#268BD2", "#268bd2", true},
		{"#AbC", "#aabbcc", true},
		{"0", "0", true},
		{"255", "255", true},
		{"007", "7", true},
		{"256", "", false},
		{"1000", "", false},
		{"-1", "", false},
		{"+1", "", false},
		{"red", "", false},
		{"#12345", "", false},
		{"#1234567", "", false},
		{"#xyz", "", false},
		{"#", "", false},
		{" 1", "", false},
		{"268bd2", "", false},
	}
	for _, tt := range tests {
		got, ok := normalizeColor(tt.in)
		if got != tt.want || ok != tt.ok {
			t.Errorf("normalizeColor(%q) = %q, %v; want %q, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}
