// Package themes holds every colour and text style the hsmsh TUI uses, so
// that view code never contains a colour literal and the whole look can be
// switched in one place: by a built-in theme name, by a custom TOML theme
// file, or to no colour at all (NO_COLOR, --no-color, the "mono" theme).
//
// A Theme is built from a Palette by New. Colourless themes are not merely a
// palette with the colours removed: they use their own set of text
// attributes (bold, faint, underline, reverse) chosen so that the states an
// operator must tell apart, such as a key that is present, missing or lost
// on an HSM, still look different.
//
// The package is a leaf: it imports only the standard library, lipgloss and
// the TOML decoder, so any part of hsmsh can use it.
package themes

import (
	"fmt"
	"slices"
	"strings"

	"github.com/charmbracelet/lipgloss"
)

// Palette is a theme's colours, as lipgloss colour strings ("#rrggbb" or ANSI
// numbers "0".."255"); "" means the terminal's default.
type Palette struct {
	Foreground, Background, Dim, Accent, Border, Title  string
	OK, Warn, Error                                     string
	JSONKey, JSONString, JSONNumber, JSONBool, JSONNull string
	Present, Missing, Lost, Syncing, Down               string // key-presence cells and HSM states
	StatusFg, StatusBg                                  string
	SelectionFg, SelectionBg                            string
}

// Theme is a set of ready styles made from a palette.
//
// The styles carry colours and attributes only, never sizes: a view sets
// Width, Padding and the like on a copy (styles are values, so this does not
// change the theme).
type Theme struct {
	Name    string
	Palette Palette
	NoColor bool // every style renders without colour (NO_COLOR, --no-color, the "mono" theme)

	// Styles; use them, never lipgloss.Color literals in views.
	Prompt, Input, Output, Dim, Title, Border, Error, OK, Warn lipgloss.Style
	JSONKey, JSONString, JSONNumber, JSONBool, JSONNull        lipgloss.Style
	Present, Missing, Lost, Syncing, Down                      lipgloss.Style // grid cells / HSM state words
	// Breach marks a key row that breaks the availability quorum or the
	// minimum number of nodes; it must stand out from any cell state.
	Breach lipgloss.Style
	// Status is the status bar; the view sets its Width to the terminal's
	// so the background fills the line.
	Status lipgloss.Style
	// Selected is the highlighted completion candidate or selected row.
	Selected lipgloss.Style
	// Pane is a pane's border box: rounded in colour themes, plain lines in
	// colourless ones, where rounded corners would be the only decoration.
	Pane      lipgloss.Style
	PaneTitle lipgloss.Style
}

// New builds the styles from a palette. With noColor set the palette is kept
// in Theme.Palette for reference but no style uses it.
func New(name string, p Palette, noColor bool) Theme {
	return build(name, p, noColor, false)
}

// build is New with the high-contrast emphasis: bold makes every style that
// carries information bold, which survives a washed-out projector better
// than colour alone. It only applies to colour themes, since the colourless
// styles use bold to tell states apart.
func build(name string, p Palette, noColor, bold bool) Theme {
	if noColor {
		return mono(name, p)
	}
	// fg is a style in colour c; "" keeps the terminal's foreground rather
	// than asking lipgloss for an empty colour.
	fg := func(c string) lipgloss.Style {
		s := lipgloss.NewStyle()
		if c != "" {
			s = s.Foreground(lipgloss.Color(c))
		}
		return s
	}
	// em is fg, made bold in a high-contrast theme.
	em := func(c string) lipgloss.Style { return fg(c).Bold(bold) }

	t := Theme{
		Name:    name,
		Palette: p,

		Prompt: fg(p.Accent).Bold(true),
		Input:  em(p.Foreground),
		Output: fg(p.Foreground),
		Dim:    fg(p.Dim),
		Title:  fg(p.Title).Bold(true),
		Border: fg(p.Border),
		Error:  fg(p.Error).Bold(true),
		OK:     em(p.OK),
		Warn:   em(p.Warn),

		JSONKey:    em(p.JSONKey),
		JSONString: em(p.JSONString),
		JSONNumber: em(p.JSONNumber),
		JSONBool:   em(p.JSONBool),
		JSONNull:   fg(p.JSONNull),

		Present: em(p.Present),
		// Missing is deliberately quiet: a key that is absent from some
		// HSMs is normal as long as the quorum holds, and Breach says when
		// it does not.
		Missing: fg(p.Missing),
		// Lost is the state that needs action, so it is bold even when the
		// palette gives it a colour close to Down's.
		Lost:    fg(p.Lost).Bold(true),
		Syncing: em(p.Syncing),
		Down:    em(p.Down),

		Breach: fg(p.Warn).Bold(true),

		PaneTitle: fg(p.Title).Bold(true),
	}

	t.Status = fg(p.StatusFg).Bold(bold)
	if p.StatusBg != "" {
		t.Status = t.Status.Background(lipgloss.Color(p.StatusBg))
	} else {
		// Without a background colour the bar would melt into the output
		// pane; reverse video keeps it a bar on any terminal.
		t.Status = t.Status.Reverse(true)
	}
	t.Selected = fg(p.SelectionFg).Bold(true)
	if p.SelectionBg != "" {
		t.Selected = t.Selected.Background(lipgloss.Color(p.SelectionBg))
	} else {
		t.Selected = t.Selected.Reverse(true)
	}

	t.Pane = lipgloss.NewStyle().Border(lipgloss.RoundedBorder())
	if p.Border != "" {
		t.Pane = t.Pane.BorderForeground(lipgloss.Color(p.Border))
	}
	if p.Background != "" {
		// Background is for themes that paint their own canvas; the usual
		// "" leaves the terminal's, which is what users have chosen.
		bg := lipgloss.Color(p.Background)
		t.Pane = t.Pane.Background(bg).BorderBackground(bg)
	}
	return t
}

// mono builds the colourless styles. Each state gets a different attribute
// or pair of attributes, so the grid and the HSM pane read the same without
// colour:
//
//	Present  bold          Missing  faint         Lost      bold reverse
//	Syncing  underline     Down     faint underline
//	Breach   bold reverse underline (a whole row)
func mono(name string, p Palette) Theme {
	plain := lipgloss.NewStyle()
	return Theme{
		Name:    name,
		Palette: p,
		NoColor: true,

		Prompt: plain.Bold(true),
		Input:  plain,
		Output: plain,
		Dim:    plain.Faint(true),
		Title:  plain.Bold(true).Underline(true),
		Border: plain.Faint(true),
		Error:  plain.Bold(true),
		OK:     plain,
		Warn:   plain.Underline(true),

		JSONKey:    plain.Bold(true),
		JSONString: plain,
		JSONNumber: plain,
		JSONBool:   plain,
		JSONNull:   plain.Faint(true),

		Present: plain.Bold(true),
		Missing: plain.Faint(true),
		Lost:    plain.Bold(true).Reverse(true),
		Syncing: plain.Underline(true),
		Down:    plain.Faint(true).Underline(true),

		Breach: plain.Bold(true).Reverse(true).Underline(true),

		Status:   plain.Reverse(true),
		Selected: plain.Bold(true).Reverse(true),

		Pane:      plain.Border(lipgloss.NormalBorder()),
		PaneTitle: plain.Bold(true),
	}
}

// Names returns the built-in theme names, sorted.
func Names() []string {
	names := make([]string, 0, len(builtins))
	for n := range builtins {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// Builtin returns the built-in theme called name.
func Builtin(name string) (Theme, bool) {
	b, ok := builtins[name]
	if !ok {
		return Theme{}, false
	}
	return build(name, b.palette, b.noColor, b.bold), true
}

// Load returns the named built-in, or, when nameOrPath names a file (contains
// a path separator or ends in .toml), a custom theme read from that TOML
// file. noColor forces colourless styles whatever the theme. An empty
// nameOrPath means "default".
func Load(nameOrPath string, noColor bool) (Theme, error) {
	if isPath(nameOrPath) {
		return loadFile(nameOrPath, noColor)
	}
	if nameOrPath == "" {
		nameOrPath = "default"
	}
	b, ok := builtins[nameOrPath]
	if !ok {
		return Theme{}, fmt.Errorf("unknown theme %q: use one of the built-in themes (%s) or the path of a .toml theme file",
			nameOrPath, strings.Join(Names(), ", "))
	}
	return build(nameOrPath, b.palette, b.noColor || noColor, b.bold), nil
}
