package shell

import (
	"fmt"
	"strings"

	"github.com/hsmsh/hsmsh/commands"
	"github.com/hsmsh/hsmsh/themes"
)

// renderResult renders a command's envelope for the output pane: the JSON
// CloudHSM CLI prints, coloured by token. A failure is its message alone,
// in the error style (the envelope would only say it again), and help is
// text to read.
func renderResult(th themes.Theme, res commands.Result) []string {
	if !res.OK() {
		if msg := strings.TrimSpace(toString(res.Data)); msg != "" {
			return []string{th.Error.Render("✗ " + msg)}
		}
	}
	if res.Text != "" {
		// help's clap-style text, as CloudHSM CLI prints it.
		return strings.Split(strings.TrimRight(res.Text, "\n"), "\n")
	}
	if lines := renderHelp(th, res.Data); lines != nil {
		return lines
	}
	return strings.Split(strings.TrimRight(colorJSON(th, string(res.JSON())), "\n"), "\n")
}

// renderHelp writes help's results as text: the command list, or one
// command's usage and flags. Other data gives nil.
func renderHelp(th themes.Theme, data any) []string {
	switch d := data.(type) {
	case commands.CommandHelp:
		out := []string{th.Title.Render(d.Command) + " — " + d.Summary, "", "usage: " + d.Usage}
		if d.Who != "" {
			out = append(out, "who:   "+d.Who)
		}
		if len(d.Flags) > 0 {
			out = append(out, "", "flags:")
		}
		for _, f := range d.Flags {
			help := f.Help
			if f.Required {
				help = "(required) " + help
			}
			if len(f.Values) > 0 {
				help += " [" + strings.Join(f.Values, ", ") + "]"
			}
			// Pad before styling: escape codes would count as width.
			out = append(out, "  "+th.Prompt.Render(fmt.Sprintf("%-28s", f.Flag))+" "+help)
		}
		return out
	case map[string]any:
		list, ok := d["commands"].([]commands.CommandSummary)
		if !ok || len(d) != 1 {
			return nil
		}
		width := 0
		for _, c := range list {
			width = max(width, len(c.Command))
		}
		out := make([]string, 0, len(list)+2)
		for _, c := range list {
			out = append(out, "  "+th.Prompt.Render(fmt.Sprintf("%-*s", width, c.Command))+"  "+c.Summary)
		}
		return append(out, "", th.Dim.Render("help COMMAND (or COMMAND --help) describes one command"))
	}
	return nil
}

func toString(v any) string {
	if s, ok := v.(string); ok {
		return s
	}
	return ""
}

// colorJSON colours indented JSON: keys, strings, numbers, booleans, null.
// It scans the text once and never reorders or reformats it.
func colorJSON(th themes.Theme, s string) string {
	var b strings.Builder
	b.Grow(len(s) * 2)
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == '"':
			j := i + 1
			for j < len(s) && s[j] != '"' {
				if s[j] == '\\' {
					j++
				}
				j++
			}
			j = min(j+1, len(s))
			tok := s[i:j]
			k := j
			for k < len(s) && s[k] == ' ' {
				k++
			}
			if k < len(s) && s[k] == ':' {
				b.WriteString(th.JSONKey.Render(tok))
			} else {
				b.WriteString(th.JSONString.Render(tok))
			}
			i = j
		case c == '-' || (c >= '0' && c <= '9'):
			j := i + 1
			for j < len(s) && strings.IndexByte("0123456789.eE+-", s[j]) >= 0 {
				j++
			}
			b.WriteString(th.JSONNumber.Render(s[i:j]))
			i = j
		case strings.HasPrefix(s[i:], "true"):
			b.WriteString(th.JSONBool.Render("true"))
			i += 4
		case strings.HasPrefix(s[i:], "false"):
			b.WriteString(th.JSONBool.Render("false"))
			i += 5
		case strings.HasPrefix(s[i:], "null"):
			b.WriteString(th.JSONNull.Render("null"))
			i += 4
		default:
			b.WriteByte(c)
			i++
		}
	}
	return b.String()
}
