package shell

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// maxHistory bounds the history kept per user.
const maxHistory = 1000

// History is the command lines a user typed, oldest first. Lines are
// redacted before they get here: history never holds a password.
type History struct {
	path  string // "" keeps it in memory (--ephemeral)
	lines []string
}

// historyPath is where a user's history lives in the data folder.
func historyPath(dataDir, cluster, user string) string {
	if dataDir == "" {
		return ""
	}
	if user == "" {
		user = "_"
	}
	return filepath.Join(dataDir, "history", cluster, user)
}

// LoadHistory reads a history file; a missing one is an empty history.
func LoadHistory(path string) (*History, error) {
	h := &History{path: path}
	if path == "" {
		return h, nil
	}
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return h, nil
	}
	if err != nil {
		return h, fmt.Errorf("read history: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if l := sc.Text(); l != "" {
			h.lines = append(h.lines, l)
		}
	}
	if len(h.lines) > maxHistory {
		h.lines = h.lines[len(h.lines)-maxHistory:]
	}
	return h, sc.Err()
}

// Lines returns the history, oldest first.
func (h *History) Lines() []string { return h.lines }

// Add appends a (redacted) line, skipping a repeat of the last one, and
// appends it to the file (0600, in a 0700 folder).
func (h *History) Add(line string) error {
	line = strings.TrimSpace(line)
	if line == "" || (len(h.lines) > 0 && h.lines[len(h.lines)-1] == line) {
		return nil
	}
	h.lines = append(h.lines, line)
	if len(h.lines) > maxHistory {
		h.lines = h.lines[len(h.lines)-maxHistory:]
	}
	if h.path == "" {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(h.path), 0o700); err != nil {
		return err
	}
	f, err := os.OpenFile(h.path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = f.WriteString(strings.ReplaceAll(line, "\n", " ") + "\n")
	return err
}

// Search returns the index of the newest line before index from that
// contains query, or -1.
func (h *History) Search(query string, from int) int {
	for i := min(from, len(h.lines)) - 1; i >= 0; i-- {
		if strings.Contains(h.lines[i], query) {
			return i
		}
	}
	return -1
}
