// Package completion offers Tab completions for hsmsh's command line:
// command words, flags, and the values the shell knows (HSM ids,
// usernames, roles, key labels, curves, hash functions, file paths).
//
// It uses go-prompt's completion types (Suggest, Document and its filters)
// and nothing else of go-prompt: its terminal loop leaves the terminal raw
// on exit, calls os.Exit on signals and panics without a /dev/tty, so the
// bubbletea shell draws the candidates itself.
package completion

import (
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	prompt "github.com/c-bata/go-prompt"

	"github.com/hsmsh/hsmsh/commands"
)

// Source supplies the values only a live shell knows.
type Source interface {
	HSMIDs() []string
	Usernames() []string
	KeyLabels() []string
	KeyRefs() []string
	SettingNames() []string
}

// KeyInfo describes a key for completion: its label and what kind it is.
type KeyInfo struct {
	Ref   string
	Label string
	Class string // secret-key, public-key, private-key
	Type  string // aes, generic-secret, ec, rsa
}

// KeySource is a Source that can also say what kind each key is, so a
// command that uses one kind of key (crypto sign ecdsa: an EC private key)
// is offered only the labels of those.
type KeySource interface {
	Keys() []KeyInfo
}

// Completer completes command lines.
type Completer struct {
	Tree   *commands.Tree
	Source Source
	// Dir is the folder relative paths are completed in ("" = working folder).
	Dir string
}

// Complete returns the candidates for the word under the cursor at the end
// of line, and the byte offset where that word starts (the part a chosen
// candidate replaces).
func (c *Completer) Complete(line string) ([]prompt.Suggest, int) {
	buf := prompt.NewBuffer()
	buf.InsertText(line, false, true)
	doc := buf.Document()
	word := doc.GetWordBeforeCursor()
	start := len(doc.TextBeforeCursor()) - len(word)
	before := strings.Fields(doc.TextBeforeCursor()[:start])
	return filter(c.candidates(before, word), word), start
}

func filter(s []prompt.Suggest, word string) []prompt.Suggest {
	if word == "" {
		return s
	}
	if out := prompt.FilterHasPrefix(s, word, true); len(out) > 0 {
		return out
	}
	return prompt.FilterFuzzy(s, word, true)
}

func (c *Completer) candidates(before []string, word string) []prompt.Suggest {
	// "help WORDS…" completes command words.
	if len(before) > 0 && before[0] == "help" {
		before = before[1:]
		if _, _, err := c.Tree.Find(before); err == nil && len(before) > 0 && len(c.Tree.Children(before)) == 0 {
			return nil
		}
		return c.words(before)
	}
	cmd, rest, err := c.Tree.Find(before)
	if err != nil || cmd == nil {
		return c.words(before)
	}
	if strings.HasPrefix(word, "-") {
		return c.flags(cmd, rest)
	}
	// The value of the last flag given, if it takes one (list flags take
	// several).
	for i := len(rest) - 1; i >= 0; i-- {
		w := rest[i]
		if !strings.HasPrefix(w, "--") {
			continue
		}
		f := flag(cmd, strings.TrimPrefix(w, "--"))
		if f == nil || f.Kind == commands.Bool {
			break
		}
		if f.Kind != commands.List && i != len(rest)-1 {
			break
		}
		v := c.values(cmd, f, word)
		if f.Kind == commands.List {
			v = without(v, rest[i+1:]) // a value given already is not offered again
		}
		if len(v) > 0 || f.Kind != commands.List {
			return v
		}
		break
	}
	if cmd.Name() == "config set" && len(rest) == 0 && c.Source != nil {
		return plain(c.Source.SettingNames(), "setting")
	}
	return c.flags(cmd, rest)
}

// words lists the command words that may follow path.
func (c *Completer) words(path []string) []prompt.Suggest {
	var out []prompt.Suggest
	for _, w := range c.Tree.Children(path) {
		desc := ""
		if cmd, rest, err := c.Tree.Find(append(append([]string(nil), path...), w)); err == nil && len(rest) == 0 {
			desc = cmd.Summary
		}
		out = append(out, prompt.Suggest{Text: w, Description: desc})
	}
	if len(path) == 0 {
		out = append(out, prompt.Suggest{Text: "help", Description: "list the commands, or describe one"},
			prompt.Suggest{Text: "quit", Description: "leave the shell"})
		sort.Slice(out, func(i, j int) bool { return out[i].Text < out[j].Text })
	}
	return out
}

func flag(cmd *commands.Command, name string) *commands.Flag {
	for i := range cmd.Flags {
		if cmd.Flags[i].Name == name {
			return &cmd.Flags[i]
		}
	}
	return nil
}

// flags lists the flags not given yet, required ones first.
func (c *Completer) flags(cmd *commands.Command, rest []string) []prompt.Suggest {
	used := map[string]bool{}
	for _, w := range rest {
		if strings.HasPrefix(w, "--") {
			name, _, _ := strings.Cut(w[2:], "=")
			used[name] = true
		}
	}
	var req, opt []prompt.Suggest
	for _, f := range cmd.Flags {
		if used[f.Name] {
			continue
		}
		s := prompt.Suggest{Text: "--" + f.Name, Description: f.Help}
		if f.Required {
			s.Description = "(required) " + f.Help
			req = append(req, s)
		} else {
			opt = append(opt, s)
		}
	}
	return append(req, opt...)
}

func plain(values []string, desc string) []prompt.Suggest {
	out := make([]prompt.Suggest, 0, len(values))
	for _, v := range values {
		out = append(out, prompt.Suggest{Text: v, Description: desc})
	}
	return out
}

// without drops the candidates already given.
func without(s []prompt.Suggest, given []string) []prompt.Suggest {
	if len(given) == 0 {
		return s
	}
	out := make([]prompt.Suggest, 0, len(s))
	for _, x := range s {
		if !slices.Contains(given, x.Text) {
			out = append(out, x)
		}
	}
	return out
}

// keyKind is the class and type of key a command uses, "" where any will
// do: crypto sign MECH takes a private key, crypto verify MECH a public
// one, of MECH's type.
func keyKind(cmd *commands.Command) (class, typ string) {
	p := cmd.Path
	if len(p) != 3 || p[0] != "crypto" {
		return "", ""
	}
	switch p[1] {
	case "sign":
		class = "private-key"
	case "verify":
		class = "public-key"
	default:
		return "", ""
	}
	switch {
	case strings.Contains(p[2], "ecdsa"), strings.HasPrefix(p[2], "ed25519"):
		typ = "ec" // Ed25519 keys are EC keys on curve ed25519

	case strings.Contains(p[2], "rsa"):
		typ = "rsa"
	case p[2] == "ml-dsa":
		typ = "ml-dsa"
	}
	return class, typ
}

// usable are the labels and references of the keys a command may use.
func (c *Completer) usable(cmd *commands.Command) (labels, refs []string) {
	class, typ := keyKind(cmd)
	ks, ok := c.Source.(KeySource)
	if class == "" || !ok {
		return c.Source.KeyLabels(), c.Source.KeyRefs()
	}
	for _, k := range ks.Keys() {
		if k.Class != class || (typ != "" && k.Type != typ) {
			continue
		}
		if !slices.Contains(labels, k.Label) {
			labels = append(labels, k.Label)
		}
		refs = append(refs, k.Ref)
	}
	return labels, refs
}

// values lists what a flag may take.
func (c *Completer) values(cmd *commands.Command, f *commands.Flag, word string) []prompt.Suggest {
	if len(f.Values) > 0 {
		return plain(f.Values, f.Help)
	}
	if f.Path {
		return c.paths(word)
	}
	if c.Source == nil {
		return nil
	}
	switch f.Name {
	case "hsm":
		return plain(c.Source.HSMIDs(), "HSM")
	case "username":
		return plain(c.Source.Usernames(), "user")
	case "filter", "key-filter", "payload-filter", "wrapping-filter":
		var out []prompt.Suggest
		labels, refs := c.usable(cmd)
		for _, l := range labels {
			out = append(out, prompt.Suggest{Text: "attr.label=" + commands.Quote(l), Description: "key label"})
		}
		for _, r := range refs {
			out = append(out, prompt.Suggest{Text: "key-reference=" + r, Description: "key"})
		}
		out = append(out, prompt.Suggest{Text: "attr.class=", Description: "secret-key, public-key, private-key"},
			prompt.Suggest{Text: "attr.key-type=", Description: "aes, generic-secret, ec, rsa"})
		return out
	case "share-crypto-users":
		return plain(c.Source.Usernames(), "crypto user")
	}
	return nil
}

// paths lists the files and folders that start with word.
func (c *Completer) paths(word string) []prompt.Suggest {
	dir, base := filepath.Split(word)
	look := dir
	if look == "" {
		look = "."
	}
	if !filepath.IsAbs(look) && c.Dir != "" {
		look = filepath.Join(c.Dir, look)
	}
	entries, err := os.ReadDir(look)
	if err != nil {
		return nil
	}
	var out []prompt.Suggest
	for _, e := range entries {
		name := e.Name()
		if !strings.HasPrefix(name, base) || (strings.HasPrefix(name, ".") && !strings.HasPrefix(base, ".")) {
			continue
		}
		desc := "file"
		if e.IsDir() {
			name += string(filepath.Separator)
			desc = "folder"
		}
		out = append(out, prompt.Suggest{Text: dir + name, Description: desc})
		if len(out) == 200 {
			break
		}
	}
	return out
}

// CommonPrefix is the longest prefix all candidates share.
func CommonPrefix(s []prompt.Suggest) string {
	if len(s) == 0 {
		return ""
	}
	p := s[0].Text
	for _, x := range s[1:] {
		i := 0
		for i < len(p) && i < len(x.Text) && p[i] == x.Text[i] {
			i++
		}
		p = p[:i]
	}
	return p
}

// Apply puts a candidate in place of the word under the cursor: from start
// (as Complete gave it) to the end of that word, so the rest of a
// half-typed word is replaced, not kept beside it. With final, a space
// follows the candidate unless one is there already or the candidate goes
// on being typed (a folder, an attr.NAME=). It returns the new line and
// the cursor's byte offset.
func Apply(line string, cursor, start int, text string, final bool) (string, int) {
	cursor = min(max(cursor, 0), len(line))
	start = min(max(start, 0), cursor)
	end := cursor
	for end < len(line) && line[end] != ' ' && line[end] != '\t' {
		end++
	}
	head, tail := line[:start], line[end:]
	out := head + text
	pos := len(out)
	if final && !strings.HasSuffix(text, "/") && !strings.HasSuffix(text, "=") {
		if strings.HasPrefix(tail, " ") {
			pos++ // step over the space that is there
		} else {
			out += " "
			pos++
		}
	}
	return out + tail, pos
}
