package commands

import (
	"fmt"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Help as CloudHSM CLI prints it: text in the layout of its argument
// parser (clap), "Usage: key list [OPTIONS]", then "Options:" with each
// flag and its description on the line below, ending in "-h, --help".
// help --json (and COMMAND --help --json) gives the machine form instead:
// CommandHelp, or the command list.

// CommandHelp is help's machine form for one command.
type CommandHelp struct {
	Command string     `json:"command"`
	Summary string     `json:"summary"`
	Who     string     `json:"who"`
	Usage   string     `json:"usage"`
	Flags   []FlagHelp `json:"flags,omitempty"`
}

// FlagHelp describes one flag in help.
type FlagHelp struct {
	Flag     string   `json:"flag"`
	Short    string   `json:"short,omitempty"`
	Required bool     `json:"required"`
	Help     string   `json:"help"`
	Values   []string `json:"values,omitempty"`
	Default  string   `json:"default,omitempty"`
}

// CommandSummary is one line of the command list.
type CommandSummary struct {
	Command string `json:"command"`
	Summary string `json:"summary"`
}

func helpFor(c *Command) CommandHelp {
	h := CommandHelp{Command: c.Name(), Summary: c.Summary, Who: c.Who.String(), Usage: c.Usage()}
	for _, f := range c.Flags {
		short := ""
		if f.Short != "" {
			short = "-" + f.Short
		}
		h.Flags = append(h.Flags, FlagHelp{Flag: "--" + f.Name, Short: short, Required: f.Required, Help: f.Help, Values: f.Values, Default: f.Default})
	}
	return h
}

// helpResult is one command's help: text, or with asJSON its machine form.
func helpResult(c *Command, asJSON bool) Result {
	res := success(helpFor(c))
	if !asJSON {
		res.Text = HelpText(c)
	}
	return res
}

// valueName is how clap names a flag's value: --key-length-bytes takes
// <KEY_LENGTH_BYTES>.
func valueName(f Flag) string {
	return "<" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_")) + ">"
}

// flagSynopsis is a flag as the usage line and the option list show it.
func flagSynopsis(f Flag) string {
	switch f.Kind {
	case String, Int:
		return "--" + f.Name + " " + valueName(f)
	case List:
		return "--" + f.Name + " [" + valueName(f) + "...]"
	}
	return "--" + f.Name
}

// sentence starts s with a capital letter, as clap's descriptions do,
// unless its first word is a name to be written as it is (attr.NAME=…).
func sentence(s string) string {
	first, _, _ := strings.Cut(s, " ")
	for _, r := range first {
		if !unicode.IsLetter(r) && r != '\'' {
			return s
		}
	}
	r, n := utf8.DecodeRuneInString(s)
	if n == 0 {
		return s
	}
	return string(unicode.ToUpper(r)) + s[n:]
}

// HelpText is one command's help in CloudHSM CLI's layout.
func HelpText(c *Command) string {
	var b strings.Builder
	b.WriteString(sentence(c.Summary) + "\n\n")
	b.WriteString("Usage: " + c.Name())
	optional := false
	for _, f := range c.Flags {
		if !f.Required {
			optional = true
		}
	}
	if optional {
		b.WriteString(" [OPTIONS]")
	}
	for _, f := range c.Flags {
		if f.Required {
			b.WriteString(" " + flagSynopsis(f))
		}
	}
	for _, a := range c.Args {
		b.WriteString(" <" + strings.TrimSuffix(a, "...") + ">")
		if strings.HasSuffix(a, "...") {
			b.WriteString("...")
		}
	}
	b.WriteString("\n\n")
	if len(c.Args) > 0 {
		b.WriteString("Arguments:\n")
		for _, a := range c.Args {
			b.WriteString("  <" + strings.TrimSuffix(a, "...") + ">\n")
		}
		b.WriteString("\n")
	}
	b.WriteString("Options:\n")
	option := func(short, synopsis, help string) {
		lead := "      "
		if short != "" {
			lead = "  -" + short + ", "
		}
		b.WriteString(lead + synopsis + "\n          " + help + "\n")
	}
	// Every command runs on the cluster --cluster-id names, as in
	// CloudHSM CLI, whose help lists it first.
	if c.flag(clusterIDFlag.Name) == nil {
		option("", flagSynopsis(clusterIDFlag), sentence(clusterIDFlag.Help))
	}
	for _, f := range c.Flags {
		help := sentence(f.Help)
		if len(f.Values) > 0 {
			help += " [possible values: " + strings.Join(f.Values, ", ") + "]"
		}
		if f.Default != "" {
			help += " [default: " + f.Default + "]"
		}
		option(f.Short, flagSynopsis(f), help)
	}
	option("h", "--help", "Print help")
	b.WriteString("\nUser type: " + c.Who.String() + "\n")
	return b.String()
}

// builtins are the words the runner answers itself.
var builtins = []CommandSummary{
	{Command: "help", Summary: "list the commands, or describe one: help key list, or key list --help (--json: as JSON)"},
	{Command: "quit", Summary: "leave the shell"},
}

// listText is the command list (prefix "" for all, "key " for a group)
// in clap's layout.
func listText(prefix string, list []CommandSummary) string {
	var b strings.Builder
	group := strings.TrimSpace(prefix)
	if group == "" {
		b.WriteString("hsmsh: an HSM admin shell in the style of AWS CloudHSM CLI\n\nUsage: <COMMAND>\n\n")
	} else {
		b.WriteString("Usage: " + group + " <COMMAND>\n\n")
	}
	b.WriteString("Commands:\n")
	width := 0
	for _, c := range list {
		width = max(width, len(strings.TrimPrefix(c.Command, prefix)))
	}
	for _, c := range list {
		fmt.Fprintf(&b, "  %-*s  %s\n", width, strings.TrimPrefix(c.Command, prefix), sentence(c.Summary))
	}
	b.WriteString("\nOptions:\n  -h, --help  Print help\n\n")
	b.WriteString("help COMMAND (or COMMAND --help) describes one command; help --json gives help as JSON\n")
	return b.String()
}

// help answers help [--json] [COMMAND…].
func (r *Runner) help(words []string) Result {
	asJSON := slices.Contains(words, "--json")
	words = slices.DeleteFunc(slices.Clone(words), func(w string) bool { return w == "--json" || w == "-h" || w == "--help" })
	if len(words) > 0 {
		cmd, rest, err := r.Tree.Find(words)
		if err == nil && len(rest) == 0 {
			return helpResult(cmd, asJSON)
		}
		// A group such as "help key": list what is under it.
		if kids := r.Tree.Children(words); len(kids) > 0 {
			return r.listResult(strings.Join(words, " ")+" ", asJSON)
		}
		if err == nil {
			err = fmt.Errorf("%s takes no further words", cmd.Name())
		}
		return failure(err)
	}
	return r.listResult("", asJSON)
}

// groupHelp answers GROUP --help (key generate-symmetric -h) with the
// group's command list; ok is false when words are not that.
func (r *Runner) groupHelp(words []string) (Result, bool) {
	i := slices.IndexFunc(words, func(w string) bool { return w == "-h" || w == "--help" })
	if i < 1 || len(r.Tree.Children(words[:i])) == 0 {
		return Result{}, false
	}
	if cmd, rest, err := r.Tree.Find(words[:i]); err == nil && len(rest) == 0 && cmd != nil {
		return Result{}, false
	}
	return r.listResult(strings.Join(words[:i], " ")+" ", slices.Contains(words, "--json")), true
}

func (r *Runner) listResult(prefix string, asJSON bool) Result {
	list := r.summaries(prefix)
	res := success(map[string]any{"commands": list})
	if !asJSON {
		res.Text = listText(prefix, list)
	}
	return res
}

func (r *Runner) summaries(prefix string) []CommandSummary {
	var list []CommandSummary
	for _, c := range r.Tree.Commands() {
		if strings.HasPrefix(c.Name()+" ", prefix) {
			list = append(list, CommandSummary{Command: c.Name(), Summary: c.Summary})
		}
	}
	if prefix == "" {
		list = append(list, builtins...)
	}
	return list
}
