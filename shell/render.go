package shell

import (
	"strings"

	"github.com/hsmsh/hsmsh/commands"
	"github.com/hsmsh/hsmsh/themes"
)

// renderResult renders a command's envelope for the output pane: the JSON
// CloudHSM CLI prints, coloured by token; a failure leads with its message
// in the error style so it reads at a glance.
func renderResult(th themes.Theme, res commands.Result) []string {
	var head []string
	if !res.OK() {
		head = append(head, th.Error.Render("✗ "+strings.TrimSpace(toString(res.Data))))
	}
	return append(head, strings.Split(strings.TrimRight(colorJSON(th, string(res.JSON())), "\n"), "\n")...)
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
