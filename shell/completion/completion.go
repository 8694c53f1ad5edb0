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
		if v := c.values(f, word); len(v) > 0 || f.Kind != commands.List {
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

// values lists what a flag may take.
func (c *Completer) values(f *commands.Flag, word string) []prompt.Suggest {
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
	case "filter", "key-filter":
		var out []prompt.Suggest
		for _, l := range c.Source.KeyLabels() {
			out = append(out, prompt.Suggest{Text: "attr.label=" + commands.Quote(l), Description: "key label"})
		}
		for _, r := range c.Source.KeyRefs() {
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
