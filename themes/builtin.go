package themes

// builtin is a built-in theme: its palette and how New is told to use it.
type builtin struct {
	palette Palette
	noColor bool // the theme is colourless whatever the palette
	bold    bool // high-contrast emphasis, see build
}

// builtins are the themes that need no file. A custom theme file starts from
// one of them (its base) and keeps its noColor and bold.
var builtins = map[string]builtin{
	// default uses only the 16 ANSI colours, which every terminal has and
	// whose actual shades the user's terminal scheme already adapts to a
	// dark or light background. Foreground is left to the terminal, and
	// blue text is avoided because dark blue on black is unreadable.
	"default": {palette: Palette{
		Dim:    "8",
		Accent: "6",
		Border: "8",
		Title:  "5",

		OK:    "2",
		Warn:  "3",
		Error: "1",

		JSONKey:    "6",
		JSONString: "2",
		JSONNumber: "5",
		JSONBool:   "3",
		JSONNull:   "8",

		Present: "2",
		Missing: "8",
		Lost:    "1",
		Syncing: "6",
		Down:    "9",

		// Bright white on blue reads on both dark and light terminals
		// and sets the bar apart from either.
		StatusFg:    "15",
		StatusBg:    "4",
		SelectionFg: "0",
		SelectionBg: "6",
	}},

	// dark is a truecolor palette for dark backgrounds: soft foreground,
	// saturated but not glaring state colours.
	"dark": {palette: Palette{
		Foreground: "#c0caf5",
		Dim:        "#565f89",
		Accent:     "#7aa2f7",
		Border:     "#3b4261",
		Title:      "#bb9af7",

		OK:    "#9ece6a",
		Warn:  "#e0af68",
		Error: "#f7768e",

		JSONKey:    "#7dcfff",
		JSONString: "#9ece6a",
		JSONNumber: "#ff9e64",
		JSONBool:   "#bb9af7",
		JSONNull:   "#565f89",

		Present: "#9ece6a",
		Missing: "#565f89",
		Lost:    "#f7768e",
		Syncing: "#7dcfff",
		Down:    "#db4b4b",

		StatusFg:    "#c0caf5",
		StatusBg:    "#2f3549",
		SelectionFg: "#1a1b26",
		SelectionBg: "#7aa2f7",
	}},

	// light is for light backgrounds: darker, more saturated shades, since
	// pale colours vanish on white.
	"light": {palette: Palette{
		Foreground: "#212121",
		Dim:        "#757575",
		Accent:     "#1565c0",
		Border:     "#9e9e9e",
		Title:      "#4527a0",

		OK:    "#2e7d32",
		Warn:  "#b26a00",
		Error: "#c62828",

		JSONKey:    "#1565c0",
		JSONString: "#2e7d32",
		JSONNumber: "#ad1457",
		JSONBool:   "#6a1b9a",
		JSONNull:   "#757575",

		Present: "#2e7d32",
		Missing: "#9e9e9e",
		Lost:    "#c62828",
		Syncing: "#0277bd",
		Down:    "#b71c1c",

		StatusFg:    "#ffffff",
		StatusBg:    "#37474f",
		SelectionFg: "#ffffff",
		SelectionBg: "#1565c0",
	}},

	// high-contrast is for projectors and poor eyesight, on the dark
	// background projector setups use: the bright ANSI colours (the
	// terminal's most saturated), bold text, and black text on bright bars.
	// Dim and borders stay at the terminal's foreground because dark grey
	// disappears on a projector; Missing is light grey and not bold, quiet
	// but still legible.
	"high-contrast": {bold: true, palette: Palette{
		Accent: "14",
		Title:  "11",

		OK:    "10",
		Warn:  "11",
		Error: "9",

		JSONKey:    "14",
		JSONString: "10",
		JSONNumber: "13",
		JSONBool:   "11",

		Present: "10",
		Missing: "7",
		Lost:    "9",
		Syncing: "14",
		Down:    "13",

		StatusFg:    "0",
		StatusBg:    "11",
		SelectionFg: "0",
		SelectionBg: "14",
	}},

	// mono has no colours at all; see mono in themes.go for how states stay
	// distinguishable.
	"mono": {noColor: true},
}
