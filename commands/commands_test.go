package commands

import (
	"reflect"
	"slices"
	"strings"
	"testing"
)

func TestSplit(t *testing.T) {
	tests := []struct {
		line    string
		want    []string
		wantErr string
	}{
		{"key list", []string{"key", "list"}, ""},
		{"  key   list  ", []string{"key", "list"}, ""},
		{"--label 'my key'", []string{"--label", "my key"}, ""},
		{`--label "my key"`, []string{"--label", "my key"}, ""},
		{`--label "say \"hi\""`, []string{"--label", `say "hi"`}, ""},
		{`--label 'it\s'`, []string{"--label", `it\s`}, ""},
		{`--label my\ key`, []string{"--label", "my key"}, ""},
		{`a'b'"c"d`, []string{"abcd"}, ""},
		{`--label ''`, []string{"--label", ""}, ""},
		{"key list # a comment", []string{"key", "list"}, ""},
		{"# only a comment", nil, ""},
		{"label=a#b", []string{"label=a#b"}, ""},
		{"'unterminated", nil, "unterminated single quote"},
		{`"unterminated`, nil, "unterminated double quote"},
		{`trailing\`, nil, "backslash ends the line"},
	}
	for _, tt := range tests {
		got, err := Split(tt.line)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("Split(%q) err = %v, want %q", tt.line, err, tt.wantErr)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, tt.want) {
			t.Errorf("Split(%q) = %q, %v; want %q", tt.line, got, err, tt.want)
		}
	}
}

func TestParseFlags(t *testing.T) {
	tree := Default()
	tests := []struct {
		line    string
		check   func(a *Args) bool
		wantErr string
	}{
		{"key generate-symmetric aes --label k --key-length-bytes 32", func(a *Args) bool { return a.String("label") == "k" && a.Int("key-length-bytes") == 32 }, ""},
		{"key generate-symmetric aes --label=k --key-length-bytes=16 --session", func(a *Args) bool { return a.Bool("session") && a.Int("key-length-bytes") == 16 }, ""},
		{"key generate-symmetric aes --label k --key-length-bytes 16 --attributes sign=true verify=true --session", func(a *Args) bool {
			return reflect.DeepEqual(a.List("attributes"), []string{"sign=true", "verify=true"}) && a.Bool("session")
		}, ""},
		{"key generate-symmetric aes --label k", nil, "needs --key-length-bytes"},
		{"key generate-symmetric aes --label k --key-length-bytes seven", nil, "whole number"},
		{"key generate-symmetric aes --labl k --key-length-bytes 16", nil, "unknown flag --labl"},
		{"key generate-symmetric aes --labl k --key-length-bytes 16", nil, "did you mean --label"},
		{"key generate-symmetric aes --label --key-length-bytes 16", nil, "--label needs a value"},
		{"key generate-symmetric aes --label a --label b --key-length-bytes 16", nil, "given twice"},
		{"key generate-asymmetric-pair ec --public-label p --private-label q --curve p999 --public-attributes verify=true --private-attributes sign=true", nil, "not one of"},
		{"key list --filter", nil, "at least one value"},
		{"config set a b c", nil, "does not take"},
		{"config set a", nil, "needs 2 argument"},
	}
	for _, tt := range tests {
		words, _ := Split(tt.line)
		cmd, rest, err := tree.Find(words)
		if err != nil {
			t.Fatalf("%s: %v", tt.line, err)
		}
		a, err := cmd.parse(rest)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("%s: err = %v, want %q", tt.line, err, tt.wantErr)
			}
			continue
		}
		if err != nil || !tt.check(a) {
			t.Errorf("%s: %v / %+v", tt.line, err, a)
		}
	}
}

func TestFind(t *testing.T) {
	tree := Default()
	tests := []struct {
		line, cmd, wantErr string
	}{
		{"key list --verbose", "key list", ""},
		{"crypto sign ecdsa", "crypto sign ecdsa", ""},
		{"key", "", "needs one more word"},
		{"kye list", "", `unknown command "kye"`},
		{"kye list", "", "did you mean key"},
		{"key lst", "", `unknown command "lst" after "key"`},
	}
	for _, tt := range tests {
		words, _ := Split(tt.line)
		c, _, err := tree.Find(words)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("Find(%q) err = %v, want %q", tt.line, err, tt.wantErr)
			}
			continue
		}
		if err != nil || c.Name() != tt.cmd {
			t.Errorf("Find(%q) = %v, %v", tt.line, c, err)
		}
	}
}

func TestParseFilter(t *testing.T) {
	tests := []struct {
		words   []string
		wantErr string
	}{
		{[]string{"attr.label=k", "attr.class=private-key"}, ""},
		{slices.Repeat([]string{"attr.label=k"}, maxFilterTerms+1), "the filter has 33 terms; at most 32 are allowed"},
		{[]string{"attr.label=" + strings.Repeat("x", maxFilterTerm)}, "at most 512 are allowed"},
		{[]string{"key-reference=0x0000000000000010"}, ""},
		{[]string{"label=k"}, "attr.ATTRIBUTE or key-reference"},
		{[]string{"attr.colour=red"}, "unknown attribute"},
		{[]string{"attr.label"}, "not NAME=VALUE"},
		{[]string{"key-reference=16"}, "not a key-reference"},
	}
	for _, tt := range tests {
		f, err := parseFilter(tt.words)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("parseFilter(%q) err = %v", tt.words, err)
			}
			continue
		}
		if err != nil || (f.Ref == nil && len(f.Attrs) == 0) {
			t.Errorf("parseFilter(%q) = %+v, %v", tt.words, f, err)
		}
	}
}

func TestResultJSON(t *testing.T) {
	got := string(success("done").JSON())
	want := "{\n  \"error_code\": 0,\n  \"data\": {\n    \"message\": \"done\"\n  }\n}\n"
	if got != want {
		t.Errorf("JSON = %q, want %q", got, want)
	}
	if got := string(Result{ErrorCode: 1, Data: "bad <thing>"}.JSON()); !strings.Contains(got, `"data": "bad <thing>"`) {
		t.Errorf("error JSON = %s", got)
	}
}

// FuzzSplit checks the command-line parser on arbitrary input: it never
// panics, and quoting any word it produced reads back as that word, which
// history and the shell's echo rely on.
func FuzzSplit(f *testing.F) {
	for _, s := range []string{"key list", `--label 'my key'`, `"a\"b" c\ d`, "# c", `x'y'"z"\`, "a\tb\nc"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, line string) {
		words, err := Split(line)
		if err != nil {
			return
		}
		for _, w := range words {
			back, err := Split(Quote(w))
			if err != nil || len(back) != 1 || back[0] != w {
				t.Fatalf("Quote(%q) = %q reads back as %q (%v)", w, Quote(w), back, err)
			}
		}
	})
}
