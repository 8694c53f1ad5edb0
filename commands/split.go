package commands

import (
	"errors"
	"strings"
)

// Split breaks a command line into words the way a POSIX shell does:
// single quotes keep everything literally, double quotes keep spaces and
// honour \" \\ \$ and \`, a backslash outside quotes escapes the next
// character, and # at the start of a word starts a comment.
func Split(line string) ([]string, error) {
	var words []string
	var cur strings.Builder
	inWord := false
	rs := []rune(line)
	for i := 0; i < len(rs); i++ {
		c := rs[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		case c == '#' && !inWord:
			return words, nil
		case c == '\'':
			inWord = true
			j := i + 1
			for j < len(rs) && rs[j] != '\'' {
				j++
			}
			if j == len(rs) {
				return nil, errors.New("unterminated single quote: close the ' or escape it as \\'")
			}
			cur.WriteString(string(rs[i+1 : j]))
			i = j
		case c == '"':
			inWord = true
			j := i + 1
			for ; j < len(rs) && rs[j] != '"'; j++ {
				if rs[j] == '\\' && j+1 < len(rs) && strings.ContainsRune("\"\\$`", rs[j+1]) {
					j++
				} else if rs[j] == '\\' && j+1 < len(rs) && rs[j+1] == '\n' {
					j++
					continue
				}
				cur.WriteRune(rs[j])
			}
			if j == len(rs) {
				return nil, errors.New("unterminated double quote: close the \" or escape it as \\\"")
			}
			i = j
		case c == '\\':
			if i+1 == len(rs) {
				return nil, errors.New("a backslash ends the line: escape it as \\\\")
			}
			i++
			if rs[i] != '\n' { // backslash-newline joins lines
				inWord = true
				cur.WriteRune(rs[i])
			}
		default:
			inWord = true
			cur.WriteRune(c)
		}
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words, nil
}
