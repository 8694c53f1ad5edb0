package config

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/hsmsh/hsmsh/internal/tomlscan"
)

// Edit sets each named setting to its value in the file at path, creating
// the file if it does not exist.
//
// The file is edited as text so that the user's comments, ordering and
// formatting survive: an existing `key = value` line in the right table gets
// its value replaced (a trailing comment stays), a missing key is inserted
// right after its table's header, and a missing table is added. Values are
// checked as by Set, and the edited file must still load; otherwise nothing
// is written. Relative paths are written as given, so they are relative to
// the file's folder.
func Edit(path string, changes []Change) error {
	if path == "" {
		return errors.New("no config file to edit")
	}
	if len(changes) == 0 {
		return nil
	}
	check := Default()
	lits := make([]string, len(changes))
	for i, ch := range changes {
		if err := check.Set(ch.Name, ch.Value, SourceFile); err != nil {
			return err
		}
		s, _ := lookupSetting(ch.Name)
		lits[i] = s.literal(ch.Value)
	}
	text, err := readForEdit(path)
	if err != nil {
		return err
	}
	// A file that does not load as it stands is reported with its own
	// line numbers, not those of the edited text. (EditServers is how a
	// remote-mode file without servers gets fixed, so it skips this.)
	if text != "" {
		if _, err := load(path, []byte(text), nil); err != nil {
			return fmt.Errorf("not writing %s, it would not load: %w", path, err)
		}
	}
	for i, ch := range changes {
		text = setKey(text, ch.Name, lits[i])
	}
	return save(path, text)
}

// EditServers replaces every [[cluster.servers]] table of the file at path
// with servers, keeping the rest of the file as it is, and creating the file
// if it does not exist. Empty ids become hsm-1, hsm-2, ... by position.
func EditServers(path string, servers []Server) error {
	if path == "" {
		return errors.New("no config file to edit")
	}
	list := make([]Server, len(servers))
	seen := make(map[string]int)
	for i, s := range servers {
		key := fmt.Sprintf("cluster.servers[%d]", i)
		if s.ID == "" {
			s.ID = fmt.Sprintf("hsm-%d", i+1)
		}
		if err := checkID(s.ID); err != nil {
			return &Error{Key: key + ".id", Msg: err.Error()}
		}
		if err := checkAddress(s.Address); err != nil {
			return &Error{Key: key + ".address", Msg: err.Error()}
		}
		if j, dup := seen[s.ID]; dup {
			return &Error{Key: key + ".id", Msg: fmt.Sprintf("duplicate server id %q (also used by server %d); give each server its own id", s.ID, j+1)}
		}
		seen[s.ID] = i + 1
		list[i] = s
	}
	text, err := readForEdit(path)
	if err != nil {
		return err
	}
	return save(path, replaceServers(text, list))
}

// readForEdit returns the file's text, or "" if it does not exist yet.
func readForEdit(path string) (string, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("reading config: %w", err)
	}
	return string(data), nil
}

// save checks that text loads and writes it to path.
func save(path, text string) error {
	if _, err := load(path, []byte(text), nil); err != nil {
		return fmt.Errorf("not writing %s, it would not load: %w", path, err)
	}
	return writeFile(path, []byte(text))
}

// setKey returns text with the setting name set to the TOML literal lit.
func setKey(text, name, lit string) string {
	d := tomlscan.Scan(text)
	entries := wholeLines(d)
	nl := newline(text)
	for _, e := range entries {
		if !e.Header && e.Path == name {
			return text[:e.ValStart] + lit + text[e.ValEnd:]
		}
	}
	table, key, _ := strings.Cut(name, ".")
	line := key + " = " + lit + nl
	for _, e := range entries {
		if e.Header && !e.Array && e.Path == table {
			if e.EOL == len(text) {
				return text + nl + line
			}
			return text[:e.EOL+1] + line + text[e.EOL+1:]
		}
	}
	// TOML allows [table] after its sub-tables, but it reads better first.
	for _, e := range entries {
		if e.Header && (strings.HasPrefix(e.Path, table+".") || strings.HasPrefix(e.Path, table+"[")) {
			at := d.CommentsAbove(e.Start)
			return text[:at] + "[" + table + "]" + nl + line + nl + text[at:]
		}
	}
	return appendBlock(text, "["+table+"]"+nl+line, nl)
}

// replaceServers returns text with its servers replaced by servers.
func replaceServers(text string, servers []Server) string {
	d := tomlscan.Scan(text)
	entries := wholeLines(d)
	nl := newline(text)
	var b strings.Builder
	for i, s := range servers {
		if i > 0 {
			b.WriteString(nl)
		}
		b.WriteString("[[cluster.servers]]" + nl)
		b.WriteString("id = " + quote(s.ID) + nl)
		b.WriteString("address = " + quote(s.Address) + nl)
	}
	block := b.String()

	// Find the servers' tables, each from its header to its last key, and
	// any inline `servers = [...]`.
	type span struct {
		start, end int
		table      bool
	}
	var spans []span
	for i, e := range entries {
		switch {
		case e.Header && strings.HasPrefix(e.Path, "cluster.servers["):
			end := e.EOL
			for _, f := range entries[i+1:] {
				if f.Header {
					break
				}
				end = f.EOL
			}
			spans = append(spans, span{d.LineStart(e.Start), min(end+1, len(text)), true})
		case !e.Header && e.Path == "cluster.servers":
			spans = append(spans, span{d.LineStart(e.Start), min(e.EOL+1, len(text)), false})
		}
	}

	// The new tables go where the first old one was.
	var out strings.Builder
	prev, placed := 0, false
	for _, sp := range spans {
		gap := text[prev:sp.start]
		if !(placed && strings.TrimSpace(gap) == "") {
			out.WriteString(gap)
		}
		wrote := false
		if sp.table && !placed {
			out.WriteString(block)
			placed, wrote = true, block != ""
		}
		prev = sp.end
		if !wrote && endsWithBlankLine(out.String()) {
			// Do not leave two blank lines where a table was removed.
			prev = skipBlankLines(text, prev)
		}
	}
	out.WriteString(text[prev:])
	res := out.String()
	if placed || block == "" {
		return res
	}

	// No tables to replace: add them after the [cluster] table's keys, or at
	// the end.
	entries = wholeLines(tomlscan.Scan(res))
	for i, e := range entries {
		if !e.Header || e.Array || e.Path != "cluster" {
			continue
		}
		end := e.EOL
		for _, f := range entries[i+1:] {
			if f.Header {
				break
			}
			end = f.EOL
		}
		if end == len(res) {
			return res + nl + nl + block
		}
		after := res[end+1:]
		ins := nl + block
		if after != "" && skipBlankLines(after, 0) == 0 {
			ins += nl
		}
		return res[:end+1] + ins + after
	}
	return appendBlock(res, block, nl)
}

// wholeLines returns the headers and key/value lines of d, leaving out the keys
// inside inline tables: edits replace or insert whole lines, and a key in
// `cluster = { mode = "remote" }` is not one.
func wholeLines(d *tomlscan.Doc) []tomlscan.Entry {
	return slices.DeleteFunc(slices.Clone(d.Entries), func(e tomlscan.Entry) bool { return e.Inline })
}

// newline returns the file's line ending, so that added lines match it.
func newline(text string) string {
	if strings.Contains(text, "\r\n") {
		return "\r\n"
	}
	return "\n"
}

// appendBlock appends block to text, after a blank line.
func appendBlock(text, block, nl string) string {
	if text == "" {
		return block
	}
	if !strings.HasSuffix(text, "\n") {
		text += nl
	}
	if !endsWithBlankLine(text) {
		text += nl
	}
	return text + block
}

// endsWithBlankLine reports whether text is empty or its last complete line
// is blank.
func endsWithBlankLine(text string) bool {
	if text == "" {
		return true
	}
	if !strings.HasSuffix(text, "\n") {
		return false
	}
	body := text[:len(text)-1]
	last := body[strings.LastIndexByte(body, '\n')+1:]
	return strings.TrimSpace(last) == ""
}

// skipBlankLines returns the offset after the blank lines starting at i.
func skipBlankLines(text string, i int) int {
	for i < len(text) {
		n := strings.IndexByte(text[i:], '\n')
		if n < 0 || strings.TrimSpace(text[i:i+n]) != "" {
			return i
		}
		i += n + 1
	}
	return i
}

// writeFile replaces the file at path with data atomically: a reader sees
// either the old file or the new one, never a mix, even after a crash. The
// file keeps its mode; a new file is private (0600) since it names keys and
// servers.
func writeFile(path string, data []byte) (err error) {
	// Write through a symlink, keeping the link.
	if target, err := filepath.EvalSymlinks(path); err == nil {
		path = target
	}
	perm := fs.FileMode(0o600)
	if fi, err := os.Stat(path); err == nil {
		perm = fi.Mode().Perm()
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("creating config folder: %w", err)
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("writing config: %w", err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
			err = fmt.Errorf("writing config %s: %w", path, err)
		}
	}()
	if _, err = f.Write(data); err != nil {
		return err
	}
	if err = f.Chmod(perm); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	if err = os.Rename(f.Name(), path); err != nil {
		return err
	}
	// Make the rename itself durable. Some systems cannot sync a folder;
	// the file is already safely written, so that is not an error.
	if dirf, err := os.Open(dir); err == nil {
		dirf.Sync()
		dirf.Close()
	}
	return nil
}
