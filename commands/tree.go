package commands

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/hsmsh/hsmsh/hsmcore"
)

// FlagKind is what a flag takes.
type FlagKind int

const (
	String FlagKind = iota // one value
	Int                    // one whole number
	Bool                   // no value
	List                   // one or more values, up to the next --flag
)

// Flag is one --flag of a command.
type Flag struct {
	Name     string
	Kind     FlagKind
	Required bool
	Help     string
	// Values, when set, are the only values the flag takes; completion
	// offers them too.
	Values []string
	// Secret marks a value that must never be echoed or kept in history.
	Secret bool
	// Path marks a value that names a file, for completion.
	Path bool
	// Short is the flag's one-letter form, as -v for --verbose ("" for
	// none).
	Short string
	// Default is the value that applies when the flag is left out, for
	// help ("" for none).
	Default string
}

// Who says who may run a command, as CloudHSM CLI's "user type".
type Who int

const (
	Anyone   Who = iota // no login needed
	LoggedIn            // any logged-in user
	AdminOnly
	CryptoUserOnly
	AdminOrCryptoUser
)

func (w Who) String() string {
	switch w {
	case LoggedIn:
		return "any logged-in user"
	case AdminOnly:
		return "admin"
	case CryptoUserOnly:
		return "crypto-user"
	case AdminOrCryptoUser:
		return "admin, crypto-user"
	}
	return "anyone"
}

// Command is one leaf of the command tree.
type Command struct {
	// Path is the command's words, e.g. ["key", "generate-symmetric", "aes"].
	Path    []string
	Summary string
	Who     Who
	Flags   []Flag
	// Args names positional arguments; the last may end in "..." to take
	// the rest.
	Args []string
	Run  func(ctx context.Context, env *Env, a *Args) (any, error)
}

// Name is the command's words joined by spaces.
func (c *Command) Name() string { return strings.Join(c.Path, " ") }

func (c *Command) flag(name string) *Flag {
	for i := range c.Flags {
		if c.Flags[i].Name == name {
			return &c.Flags[i]
		}
	}
	return nil
}

// short finds the flag whose one-letter form is s.
func (c *Command) short(s string) *Flag {
	for i := range c.Flags {
		if c.Flags[i].Short != "" && c.Flags[i].Short == s {
			return &c.Flags[i]
		}
	}
	return nil
}

// Usage is the one-line synopsis of a command.
func (c *Command) Usage() string {
	var b strings.Builder
	b.WriteString(c.Name())
	for _, f := range c.Flags {
		s := "--" + f.Name
		switch f.Kind {
		case String, Int:
			s += " <" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_")) + ">"
		case List:
			s += " <" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_")) + ">..."
		}
		if !f.Required {
			s = "[" + s + "]"
		}
		b.WriteString(" " + s)
	}
	for _, a := range c.Args {
		b.WriteString(" <" + a + ">")
	}
	return b.String()
}

// Args are a command's parsed flags and positional arguments.
type Args struct {
	values map[string][]string
	ints   map[string]int
	Pos    []string
}

// String is a flag's value, "" if not given.
func (a *Args) String(name string) string {
	if v := a.values[name]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// Int is a flag's value, 0 if not given.
func (a *Args) Int(name string) int { return a.ints[name] }

// Bool says whether a flag was given.
func (a *Args) Bool(name string) bool { _, ok := a.values[name]; return ok }

// List is a list flag's values.
func (a *Args) List(name string) []string { return a.values[name] }

// Has says whether a flag was given.
func (a *Args) Has(name string) bool { _, ok := a.values[name]; return ok }

// errHelp asks for a command's help instead of running it.
type errHelp struct{ cmd *Command }

func (errHelp) Error() string { return "help requested" }

// clusterIDFlag names the cluster a command runs on (clusters.go).
var clusterIDFlag = Flag{Name: "cluster-id", Kind: String, Help: "the cluster to run on (default: the current one; see cluster list)"}

// parse reads the words after a command's path.
func (c *Command) parse(words []string) (*Args, error) {
	a := &Args{values: map[string][]string{}, ints: map[string]int{}}
	for i := 0; i < len(words); i++ {
		w := words[i]
		if w == "-h" || w == "--help" {
			return nil, errHelp{c}
		}
		var (
			name, val string
			hasVal    bool
			f         *Flag
		)
		switch {
		case len(w) == 2 && w[0] == '-' && w[1] != '-' && c.short(w[1:]) != nil:
			f = c.short(w[1:])
			name = f.Name
		case !strings.HasPrefix(w, "--") || w == "--":
			a.Pos = append(a.Pos, w)
			continue
		default:
			name, val, hasVal = strings.Cut(w[2:], "=")
			f = c.flag(name)
		}
		if f == nil && name == clusterIDFlag.Name {
			// Every command takes --cluster-id. It is parsed here, with the
			// command's own flags, so that a flag's value is never taken
			// for it (or the other way round) and the redaction of echo and
			// history reads the line as the command does.
			f = &clusterIDFlag
		}
		if f == nil {
			return nil, fmt.Errorf("unknown flag --%s for %s%s; run help %s to see its flags", name, c.Name(), suggest("--"+name, flagNames(c)), c.Name())
		}
		if _, dup := a.values[name]; dup {
			return nil, fmt.Errorf("--%s is given twice", name)
		}
		switch f.Kind {
		case Bool:
			if hasVal {
				b, err := strconv.ParseBool(val)
				if err != nil {
					return nil, fmt.Errorf("--%s takes no value or true/false, not %q", name, val)
				}
				if !b {
					continue
				}
			}
			a.values[name] = nil
		case String, Int:
			if !hasVal {
				if i+1 >= len(words) || (strings.HasPrefix(words[i+1], "--") && len(words[i+1]) > 2) {
					return nil, fmt.Errorf("--%s needs a value", name)
				}
				i++
				val = words[i]
			}
			a.values[name] = []string{val}
		case List:
			var vs []string
			if hasVal {
				vs = append(vs, val)
			}
			for i+1 < len(words) && !(strings.HasPrefix(words[i+1], "--") && len(words[i+1]) > 2) {
				i++
				vs = append(vs, words[i])
			}
			if len(vs) == 0 {
				return nil, fmt.Errorf("--%s needs at least one value", name)
			}
			a.values[name] = vs
		}
		if f.Kind == Int {
			n, err := strconv.Atoi(val)
			if err != nil {
				return nil, fmt.Errorf("--%s takes a whole number, not %q", name, val)
			}
			a.ints[name] = n
		}
		if len(f.Values) > 0 {
			for _, v := range a.values[name] {
				if !contains(f.Values, v) {
					return nil, fmt.Errorf("--%s: %q is not one of %s", name, v, strings.Join(f.Values, ", "))
				}
			}
		}
	}
	for _, f := range c.Flags {
		if _, ok := a.values[f.Name]; f.Required && !ok {
			return nil, fmt.Errorf("%s needs --%s; usage: %s", c.Name(), f.Name, c.Usage())
		}
	}
	max := len(c.Args)
	if max > 0 && strings.HasSuffix(c.Args[max-1], "...") {
		max = -1
	}
	switch {
	case max >= 0 && len(a.Pos) > max:
		return nil, fmt.Errorf("%s does not take %q; usage: %s", c.Name(), a.Pos[max], c.Usage())
	case max >= 0 && len(a.Pos) < max:
		return nil, fmt.Errorf("%s needs %d argument(s); usage: %s", c.Name(), max, c.Usage())
	}
	return a, nil
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func flagNames(c *Command) []string {
	out := make([]string, len(c.Flags))
	for i, f := range c.Flags {
		out[i] = "--" + f.Name
	}
	return out
}

// suggest returns " (did you mean X?)" for the closest of names, if one
// is close enough to be a likely typo.
func suggest(word string, names []string) string {
	best, bestD := "", 3
	for _, n := range names {
		d := distance(word, n)
		if len(word) >= 3 && strings.HasPrefix(n, word) {
			d = min(d, 1)
		}
		if d < bestD {
			best, bestD = n, d
		}
	}
	if best == "" {
		return ""
	}
	return fmt.Sprintf(" (did you mean %s?)", best)
}

// distance is the Levenshtein distance between a and b.
func distance(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}

// node is a word of the command tree.
type node struct {
	children map[string]*node
	cmd      *Command
}

// Tree is the command tree.
type Tree struct {
	root node
	all  []*Command
}

func (t *Tree) add(c *Command) {
	n := &t.root
	for _, w := range c.Path {
		if n.children == nil {
			n.children = map[string]*node{}
		}
		next, ok := n.children[w]
		if !ok {
			next = &node{}
			n.children[w] = next
		}
		n = next
	}
	n.cmd = c
	t.all = append(t.all, c)
}

// Commands lists every command, sorted by name.
func (t *Tree) Commands() []*Command {
	out := append([]*Command(nil), t.all...)
	sort.Slice(out, func(i, j int) bool { return out[i].Name() < out[j].Name() })
	return out
}

// Children lists the words that may follow path, for help and completion.
func (t *Tree) Children(path []string) []string {
	n := &t.root
	for _, w := range path {
		n = n.children[w]
		if n == nil {
			return nil
		}
	}
	out := make([]string, 0, len(n.children))
	for w := range n.children {
		out = append(out, w)
	}
	sort.Strings(out)
	return out
}

// Find resolves the leading words of args to a command, returning it and
// the words after its path.
func (t *Tree) Find(args []string) (*Command, []string, error) {
	n := &t.root
	for i, w := range args {
		if n.cmd != nil && len(n.children) == 0 {
			return n.cmd, args[i:], nil
		}
		next := n.children[w]
		if next == nil {
			if n.cmd != nil {
				return n.cmd, args[i:], nil
			}
			// A flag's value may be a secret: an error shows its name only.
			if name, _, ok := strings.Cut(w, "="); ok && strings.HasPrefix(w, "-") {
				w = name + "=…"
			}
			prefix := strings.Join(args[:i], " ")
			words := t.Children(args[:i])
			if i == 0 {
				return nil, nil, fmt.Errorf("unknown command %q%s; run help to list the commands", w, suggest(w, words))
			}
			return nil, nil, fmt.Errorf("unknown command %q after %q%s; %s takes one of: %s", w, prefix, suggest(w, words), prefix, strings.Join(words, ", "))
		}
		n = next
	}
	if n.cmd == nil {
		return nil, nil, fmt.Errorf("%q needs one more word, one of: %s", strings.Join(args, " "), strings.Join(t.Children(args), ", "))
	}
	return n.cmd, nil, nil
}

// allowed checks who may run a command, before the cluster checks again.
func (c *Command) allowed(env *Env) error {
	if c.Who == Anyone {
		return nil
	}
	caller, err := env.Session.Caller()
	if err != nil {
		return fmt.Errorf("%s: %w", c.Name(), err)
	}
	ok := false
	switch c.Who {
	case LoggedIn:
		ok = true
	case AdminOnly:
		ok = caller.Role == hsmcore.RoleAdmin
	case CryptoUserOnly:
		ok = caller.Role == hsmcore.RoleCryptoUser
	case AdminOrCryptoUser:
		ok = caller.Role == hsmcore.RoleAdmin || caller.Role == hsmcore.RoleCryptoUser
	}
	if !ok {
		return fmt.Errorf("%s: permission denied: only %s may run it; you are logged in as %s (%s)", c.Name(), c.Who, caller.Username, caller.Role)
	}
	return nil
}
