package themes

import (
	"io"
	"reflect"
	"strings"
	"testing"

	"github.com/charmbracelet/lipgloss"
	"github.com/charmbracelet/x/ansi"
	"github.com/muesli/termenv"
)

// FuzzLoadTheme feeds arbitrary bytes to the theme file parser (parseFile,
// what Load uses for a path once the file is read). The seed corpus is under
// testdata/fuzz/FuzzLoadTheme: valid themes (base, inline and dotted
// palettes), bad colours, unknown keys, syntax errors.
//
// Properties:
//   - an error's text starts with the file's path (FILE:LINE: or FILE:);
//   - a theme has a name, every palette colour is in the normalised form
//     lipgloss handles ("", "#rrggbb" in lower case, or an ANSI number
//     0-255 without leading zeros);
//   - every style renders a sample string, under every colour profile,
//     without panicking and with the sample intact once the escape
//     sequences are stripped;
//   - with noColor, no style emits a colour.
func FuzzLoadTheme(f *testing.F) {
	for _, s := range []string{
		"name = \"solarized\"\nbase = \"dark\"\n[palette]\naccent = \"#268bd2\"\nerror = \"#DC322F\"\npresent = \"2\"\njson_null = \"#abc\"\nstatus_bg = \"\"\n",
		"",
		"palette = { ok = \"10\", warn = \"11\" }\n",
		"palette.down = \"#000\"\nbase = \"mono\"\n",
		"[palette]\naccent = \"256\"\nborder = \"#12345g\"\nfoo = \"1\"\n",
		"name = 1\nbase = \"nope\"\nextra = true\n",
		"[palette\n",
	} {
		f.Add([]byte(s), false)
		f.Add([]byte(s), true)
	}
	const path = "/themes/fuzz.toml"
	const sample = "hsm-1 0x00ab present"
	profiles := []termenv.Profile{termenv.TrueColor, termenv.ANSI256, termenv.ANSI, termenv.Ascii}
	f.Fuzz(func(t *testing.T, data []byte, noColor bool) {
		th, err := parseFile(path, data, noColor)
		if err != nil {
			if msg := err.Error(); !strings.HasPrefix(msg, path+":") {
				t.Fatalf("error does not start with %q:\n%s", path+":", msg)
			}
			return
		}
		if th.Name == "" {
			t.Error("theme has no name")
		}
		if noColor && !th.NoColor {
			t.Error("noColor given but the theme has colour")
		}
		pv := reflect.ValueOf(th.Palette)
		for i := range pv.NumField() {
			c := pv.Field(i).String()
			if n, ok := normalizeColor(c); !ok || n != c {
				t.Errorf("palette %s = %q is not a normalised colour", pv.Type().Field(i).Name, c)
			}
		}
		for name, s := range styles(th) {
			for _, p := range profiles {
				r := lipgloss.NewRenderer(io.Discard)
				r.SetColorProfile(p)
				out := s.Renderer(r).Render(sample)
				if !strings.Contains(ansi.Strip(out), sample) {
					t.Errorf("%s under profile %v renders %q, which lost the sample", name, p, out)
				}
				if th.NoColor && p == termenv.TrueColor {
					if c := colourCodes(out); len(c) > 0 {
						t.Errorf("colourless theme's %s has colour %v: %q", name, c, out)
					}
				}
			}
		}
	})
}
