package shell

import (
	"bufio"
	"bytes"
	"strings"
	"testing"

	"github.com/hsmsh/hsmsh/commands"
)

// batchScanner is the scanner batch reads a file with.
func batchScanner(data []byte) *bufio.Scanner {
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64<<10), maxLine)
	return sc
}

// trailingBackslashes counts the backslashes that end s.
func trailingBackslashes(s string) int {
	return len(s) - len(strings.TrimRight(s, "\\"))
}

// liveBackslash says whether s ends in a backslash that the shell's word
// splitting (commands.Split) would act on: one outside a comment that
// escapes the end of the line. A backslash inside a comment changes
// nothing, so Split reads s and s without it alike; a live one makes Split
// fail, where it accepts s without it.
func liveBackslash(s string) bool {
	if !strings.HasSuffix(s, "\\") {
		return false
	}
	_, errWith := commands.Split(s)
	_, errWithout := commands.Split(s[:len(s)-1])
	return errWith != nil && errWithout == nil
}

// FuzzBatchLines runs the batch reader's nextLine over arbitrary file
// contents, as batch does. The seed corpus is under
// testdata/fuzz/FuzzBatchLines: plain files, continuations (also at EOF
// and in quotes), comments ending in backslashes, CRLF files, blank lines,
// and the inputs of two fixed bugs (known-bug-*: a carriage return before
// "#", and a quote opened on an earlier continued line).
//
// Properties:
//   - it terminates: each logical line consumes at least one physical line,
//     and once it reports the end it keeps doing so;
//   - line numbers: each logical line starts on the line after the previous
//     one ended, start <= lineNo <= the number of physical lines, and at the
//     end every physical line has been counted;
//   - continuation: the physical lines of a logical line are joined exactly
//     when they end in an odd number of backslashes and are not comments
//     (so the logical line is as long as its physical lines together); a
//     line whose backslash the shell's word splitting reads as part of a
//     comment is never joined to the next (that would hide the next line
//     in the comment); and no logical line is returned with a live
//     backslash-newline continuation left at its end: the commands batch
//     runs never end in a backslash that the shell's word splitting would
//     take as escaping the newline.
func FuzzBatchLines(f *testing.F) {
	for _, s := range []string{
		"key list\nlogin --username admin --role admin --password adminpass\n",
		"user create --username alice \\\n  --role crypto-user \\\n  --password alicepass\nlogout\n",
		"# a comment ending in a backslash \\\nkey list\n",
		"key list # trailing comment \\\nlogout\n",
		"echo a\\\\\nnext\n",
		"last line continues \\",
		"\r\nkey list\r\n\r\n",
		"echo 'a b' \"c\\\" d\" \\\n",
		"! key delete --filter attr.label=x\n\n\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		// The physical lines, as batch's scanner splits them.
		var phys []string
		for sc := batchScanner(data); sc.Scan(); {
			phys = append(phys, sc.Text())
		}

		sc := batchScanner(data)
		lineNo, prevEnd := 0, 0
		for calls := 0; ; calls++ {
			if calls > len(phys) {
				t.Fatalf("nextLine returned more logical lines (%d) than there are physical lines (%d)", calls, len(phys))
			}
			line, start, ok := nextLine(sc, &lineNo)
			if !ok {
				if line != "" || start != 0 {
					t.Fatalf("end of input reported with line %q, start %d", line, start)
				}
				if lineNo != len(phys) {
					t.Fatalf("lineNo is %d at the end, want the %d physical lines", lineNo, len(phys))
				}
				if l, s, ok := nextLine(sc, &lineNo); ok || l != "" || s != 0 || lineNo != len(phys) {
					t.Fatalf("nextLine after the end returned %q, %d, %v (lineNo %d)", l, s, ok, lineNo)
				}
				return
			}
			if start != prevEnd+1 || start > lineNo || lineNo > len(phys) {
				t.Fatalf("logical line %q: start %d, lineNo %d after the previous ended at %d, with %d physical lines",
					line, start, lineNo, prevEnd, len(phys))
			}
			group := phys[start-1 : lineNo]
			prevEnd = lineNo
			fail := t.Fatalf

			// The physical lines were joined exactly where they continue.
			total := 0
			var sofar strings.Builder // the logical line before p, as nextLine builds it
			for i, p := range group {
				total += len(p)
				// Whether p ends in a comment depends on the quotes the lines
				// before it left open, and a carriage return separates words.
				continues := !endsInComment(sofar.String()+p) && trailingBackslashes(p)%2 == 1
				sofar.WriteString(strings.TrimSuffix(p, "\\"))
				sofar.WriteByte(' ')
				last := i == len(group)-1
				if !last && !continues {
					t.Fatalf("line %d %q was joined to the next, though it does not continue", start+i, p)
				}
				// A backslash that the word splitting reads as part of a
				// comment must not pull the next line into the comment.
				if !last && total <= len(line) {
					prefix := line[:total-1] + "\\"
					if words, err := commands.Split(prefix); err == nil {
						fail("line %d %q ends in a comment (the command so far, %q, splits as %q), but the next line was joined to it",
							start+i, p, prefix, words)
					}
				}
				if last && continues && lineNo != len(phys) {
					t.Fatalf("line %d %q continues but its logical line ended there", start+i, p)
				}
			}
			if len(line) != total {
				t.Fatalf("logical line %q is %d bytes; its physical lines %q are %d", line, len(line), group, total)
			}

			// No continuation is left at the end of a command.
			if liveBackslash(line) {
				fail("logical line %q (lines %d-%d: %q) ends in a backslash-newline continuation",
					line, start, lineNo, group)
			}
		}
	})
}
