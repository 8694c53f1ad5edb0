package themes

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/BurntSushi/toml"

	"github.com/hsmsh/hsmsh/internal/tomlscan"
)

// maxFileSize bounds a theme file. A real one is well under a kilobyte; the
// limit keeps a mistyped path (a log, a disk image) from being read whole.
const maxFileSize = 64 << 10

// paletteKeys maps the snake_case keys of a theme file's [palette] table to
// the Palette fields they set.
var paletteKeys = map[string]func(*Palette) *string{
	"foreground":   func(p *Palette) *string { return &p.Foreground },
	"background":   func(p *Palette) *string { return &p.Background },
	"dim":          func(p *Palette) *string { return &p.Dim },
	"accent":       func(p *Palette) *string { return &p.Accent },
	"border":       func(p *Palette) *string { return &p.Border },
	"title":        func(p *Palette) *string { return &p.Title },
	"ok":           func(p *Palette) *string { return &p.OK },
	"warn":         func(p *Palette) *string { return &p.Warn },
	"error":        func(p *Palette) *string { return &p.Error },
	"json_key":     func(p *Palette) *string { return &p.JSONKey },
	"json_string":  func(p *Palette) *string { return &p.JSONString },
	"json_number":  func(p *Palette) *string { return &p.JSONNumber },
	"json_bool":    func(p *Palette) *string { return &p.JSONBool },
	"json_null":    func(p *Palette) *string { return &p.JSONNull },
	"present":      func(p *Palette) *string { return &p.Present },
	"missing":      func(p *Palette) *string { return &p.Missing },
	"lost":         func(p *Palette) *string { return &p.Lost },
	"syncing":      func(p *Palette) *string { return &p.Syncing },
	"down":         func(p *Palette) *string { return &p.Down },
	"status_fg":    func(p *Palette) *string { return &p.StatusFg },
	"status_bg":    func(p *Palette) *string { return &p.StatusBg },
	"selection_fg": func(p *Palette) *string { return &p.SelectionFg },
	"selection_bg": func(p *Palette) *string { return &p.SelectionBg },
}

// topKeys are the keys allowed outside [palette].
var topKeys = []string{"base", "name", "palette"}

// isPath reports whether Load's argument names a file rather than a
// built-in. Built-in names never contain a separator or end in .toml, so a
// relative "mytheme.toml" works without "./".
func isPath(s string) bool {
	return strings.ContainsRune(s, '/') || strings.ContainsRune(s, filepath.Separator) ||
		strings.HasSuffix(s, ".toml")
}

// fileError is one problem in a theme file, printed as FILE:LINE: KEY: msg
// like hsmsh's config errors, leaving out the parts that are unknown.
type fileError struct {
	file string
	line int // 1-based, 0 if unknown
	key  string
	msg  string
}

func (e *fileError) Error() string {
	var b strings.Builder
	b.WriteString(e.file)
	if e.line > 0 {
		fmt.Fprintf(&b, ":%d", e.line)
	}
	b.WriteString(": ")
	if e.key != "" {
		b.WriteString(e.key)
		b.WriteString(": ")
	}
	b.WriteString(e.msg)
	return b.String()
}

// loadFile reads a custom theme from the TOML file at path.
func loadFile(path string, noColor bool) (Theme, error) {
	data, err := readFile(path)
	if err != nil {
		return Theme{}, err
	}
	return parseFile(path, data, noColor)
}

// readFile reads at most maxFileSize bytes of a regular file.
func readFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, &fileError{file: path, msg: fmt.Sprintf("theme file not found: give the path of a .toml theme file or a built-in theme (%s)",
				strings.Join(Names(), ", "))}
		}
		return nil, &fileError{file: path, msg: fmt.Sprintf("cannot read theme file: %v", cause(err))}
	}
	defer f.Close()
	// A FIFO or device would block or never end; only plain files are
	// theme files.
	if fi, err := f.Stat(); err != nil {
		return nil, &fileError{file: path, msg: fmt.Sprintf("cannot read theme file: %v", err)}
	} else if !fi.Mode().IsRegular() {
		return nil, &fileError{file: path, msg: "not a regular file: give the path of a .toml theme file"}
	}
	// Read one byte past the limit to tell a full-size file from a larger
	// one without trusting the size Stat gave (the file may be growing).
	data, err := io.ReadAll(io.LimitReader(f, maxFileSize+1))
	if err != nil {
		return nil, &fileError{file: path, msg: fmt.Sprintf("cannot read theme file: %v", err)}
	}
	if len(data) > maxFileSize {
		return nil, &fileError{file: path, msg: fmt.Sprintf("theme file is larger than %d KiB: is this the right file?", maxFileSize>>10)}
	}
	return data, nil
}

// cause strips the path from an os error, which the message already starts
// with.
func cause(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// parseFile builds a theme from the contents data of the file named path.
// Every problem is reported, in file order, not just the first.
func parseFile(path string, data []byte, noColor bool) (Theme, error) {
	text := string(data)
	var raw map[string]any
	if _, err := toml.Decode(text, &raw); err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			return Theme{}, &fileError{file: path, line: pe.Position.Line, msg: "syntax error: " + pe.Message}
		}
		return Theme{}, &fileError{file: path, msg: err.Error()}
	}

	doc := tomlscan.Scan(text)
	var errs []*fileError
	fail := func(key, format string, args ...any) {
		errs = append(errs, &fileError{file: path, line: doc.KeyLine(key), key: key, msg: fmt.Sprintf(format, args...)})
	}

	// A file without a name is known by its file name: "solarized.toml"
	// is the theme "solarized".
	name := strings.TrimSuffix(filepath.Base(path), ".toml")
	baseName := "default"
	var overrides map[string]any
	for _, k := range sortedKeys(raw) {
		v := raw[k]
		switch k {
		case "name", "base":
			s, ok := v.(string)
			switch {
			case !ok:
				fail(k, "must be a string, got %s", tomlscan.Describe(v))
			case s == "":
				fail(k, "must not be empty")
			case k == "name":
				name = s
			default:
				if _, ok := builtins[s]; !ok {
					fail(k, "unknown built-in theme %q (known: %s)", s, strings.Join(Names(), ", "))
				}
				baseName = s
			}
		case "palette":
			m, ok := v.(map[string]any)
			if !ok {
				fail(k, "must be a table ([palette]), got %s", tomlscan.Describe(v))
				continue
			}
			overrides = m
		default:
			fail(k, "unknown key (known: %s)", strings.Join(topKeys, ", "))
		}
	}

	base := builtins[baseName]
	p := base.palette
	for _, k := range sortedKeys(overrides) {
		key := "palette." + k
		v := overrides[k]
		field, ok := paletteKeys[k]
		if !ok {
			fail(key, "unknown key (known: %s)", strings.Join(sortedKeys(paletteKeys), ", "))
			continue
		}
		s, ok := v.(string)
		if !ok {
			fail(key, `must be a colour string such as "#268bd2" or "2" (ANSI numbers are quoted too), got %s`, tomlscan.Describe(v))
			continue
		}
		c, ok := normalizeColor(s)
		if !ok {
			fail(key, `%q is not a colour: use "#rrggbb", "#rgb" or an ANSI number 0-255 ("" for the terminal's default)`, s)
			continue
		}
		*field(&p) = c
	}

	if len(errs) > 0 {
		slices.SortStableFunc(errs, func(a, b *fileError) int {
			return cmp.Or(cmp.Compare(a.line, b.line), strings.Compare(a.key, b.key))
		})
		if len(errs) == 1 {
			return Theme{}, errs[0]
		}
		joined := make([]error, len(errs))
		for i, e := range errs {
			joined[i] = e
		}
		return Theme{}, errors.Join(joined...)
	}
	return build(name, p, base.noColor || noColor, base.bold), nil
}

// normalizeColor checks a palette colour and returns it in the form lipgloss
// handles everywhere: "#rgb" becomes "#rrggbb", hex digits lower case.
func normalizeColor(s string) (string, bool) {
	if s == "" {
		return "", true
	}
	if hex, ok := strings.CutPrefix(s, "#"); ok {
		if len(hex) != 3 && len(hex) != 6 {
			return "", false
		}
		for _, c := range hex {
			if !strings.ContainsRune("0123456789abcdefABCDEF", c) {
				return "", false
			}
		}
		hex = strings.ToLower(hex)
		if len(hex) == 3 {
			hex = string([]byte{hex[0], hex[0], hex[1], hex[1], hex[2], hex[2]})
		}
		return "#" + hex, true
	}
	if len(s) > 3 || strings.Trim(s, "0123456789") != "" {
		return "", false
	}
	n, err := strconv.Atoi(s)
	if err != nil || n > 255 {
		return "", false
	}
	return strconv.Itoa(n), true
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
