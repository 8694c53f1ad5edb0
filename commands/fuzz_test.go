package commands

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/hsmsh/hsmsh/hsmcore"
)

// FuzzParseFilter feeds parseFilter the words of an arbitrary string split
// on spaces, as key commands' --filter receives them. The seed corpus is
// under testdata/fuzz/FuzzParseFilter.
//
// Properties: either an error with a message, or a Filter such that
//   - every Attrs key is a known attribute name (hsmcore.AttributeNames);
//   - every word was NAME=VALUE, and each attr.NAME took the value of its
//     last word, each key-reference the value of the last one;
//   - the key-reference reads back from its printed form.
func FuzzParseFilter(f *testing.F) {
	for _, s := range []string{
		"attr.label=my-key",
		"attr.label=my-key attr.class=private-key key-reference=0x0000000000100c4b",
		"key-reference=0X1F",
		"attr.labl=x",
		"label=x",
		"attr.label",
		"key-reference=0x12345678901234567",
		"attr.label= attr.label=b=c",
		"",
	} {
		f.Add(s)
	}
	known := hsmcore.AttributeNames()
	f.Fuzz(func(t *testing.T, s string) {
		var words []string
		if s != "" {
			words = strings.Split(s, " ")
		}
		flt, err := parseFilter(words)
		if err != nil {
			if err.Error() == "" {
				t.Fatal("empty error")
			}
			return
		}
		for k := range flt.Attrs {
			if !slices.Contains(known, k) {
				t.Errorf("filter has unknown attribute %q", k)
			}
		}
		want := map[string]string{}
		var ref *hsmcore.Ref
		for _, w := range words {
			k, v, ok := strings.Cut(w, "=")
			if !ok {
				t.Fatalf("accepted %q, which is not NAME=VALUE", w)
			}
			if name, ok := strings.CutPrefix(k, "attr."); ok {
				want[name] = v
				continue
			}
			if k != "key-reference" {
				t.Fatalf("accepted the filter name %q", k)
			}
			r, err := hsmcore.ParseRef(v)
			if err != nil {
				t.Fatalf("accepted key-reference %q: ParseRef says %v", v, err)
			}
			ref = &r
		}
		if len(want) != len(flt.Attrs) {
			t.Errorf("Attrs = %q, want %q", flt.Attrs, want)
		}
		for k, v := range want {
			if got, ok := flt.Attrs[k]; !ok || got != v {
				t.Errorf("Attrs = %q, want %q", flt.Attrs, want)
			}
		}
		if (ref == nil) != (flt.Ref == nil) || ref != nil && *ref != *flt.Ref {
			t.Fatalf("Ref = %v, want %v", flt.Ref, ref)
		}
		if flt.Ref != nil {
			if back, err := hsmcore.ParseRef(flt.Ref.String()); err != nil || back != *flt.Ref {
				t.Errorf("key-reference %s reads back as %v (%v)", flt.Ref, back, err)
			}
		}
	})
}

// secretWords returns the indexes of the words of rest that parse reads as
// the value of one of cmd's secret flags: a --NAME=VALUE word, or the word
// after --NAME when parse takes it as the value (any word but one that
// looks like a flag). Parse never looks inside a secret flag's value (they
// are plain strings without a list of allowed values), so replacing these
// values changes nothing but where a value could show up.
func secretWords(cmd *Command, rest []string) []int {
	var out []int
	for i := 0; i < len(rest); i++ {
		w := rest[i]
		if !strings.HasPrefix(w, "--") {
			continue
		}
		name, _, hasVal := strings.Cut(w[2:], "=")
		f := cmd.flag(name)
		if f == nil || !f.Secret {
			continue
		}
		if f.Kind != String || len(f.Values) > 0 {
			panic(fmt.Sprintf("secret flag --%s of %s is not a plain string flag; secretWords needs updating", name, cmd.Name()))
		}
		if hasVal {
			out = append(out, i)
		} else if i+1 < len(rest) && !(strings.HasPrefix(rest[i+1], "--") && len(rest[i+1]) > 2) {
			i++
			out = append(out, i)
		}
	}
	return out
}

// withCanaries returns words with the secret values at the indexes idx
// replaced by canaries, and the canaries. A canary starts with a prefix that
// no word holds, so that no other word can pass for one.
func withCanaries(words []string, idx []int) ([]string, []string) {
	out := slices.Clone(words)
	all := strings.Join(words, " ")
	prefix := "CANARY"
	for strings.Contains(all, prefix) {
		prefix += "X"
	}
	var canaries []string
	for _, i := range idx {
		c := fmt.Sprintf("%s%dSECRET", prefix, len(canaries))
		canaries = append(canaries, c)
		if name, _, ok := strings.Cut(out[i], "="); ok && strings.HasPrefix(out[i], "--") {
			out[i] = name + "=" + c
		} else {
			out[i] = c
		}
	}
	return out, canaries
}

// FuzzCommandLine parses arbitrary command lines without running them, as
// Runner.Run does before it checks permissions: Split, Tree.Find, then the
// command's parse (which takes --cluster-id too). The seed corpus is under
// testdata/fuzz/FuzzCommandLine: valid lines of several commands (with and
// without secrets), flag errors, lines that do not split, and known-bug-*
// inputs of a fixed bug (--cluster-id between a secret flag and its value,
// once taken out of the line before the command parsed it).
//
// Properties:
//   - no panic, and every error has a message;
//   - redaction in errors: no parse error contains the value of a flag
//     marked Secret. The line is parsed again with each secret value
//     replaced by a canary: no error may contain a canary, and the two
//     parses must fail alike, with the same message (so the original message
//     cannot have held the value either);
//   - redaction in echo and history: for a line that parses, Tree.Redact of
//     the line with the secret values the command takes replaced by
//     canaries holds no canary;
//   - a secret given as --NAME=VALUE is what the parsed Args hold.
func FuzzCommandLine(f *testing.F) {
	for _, s := range []string{
		"login --username admin --role admin --password adminpass",
		"login --username admin --role admin --password=hunter2 extra",
		"user create --username alice --role crypto-user --password alicepass --password again",
		"cluster backup create --backup-password s3cret --name b1 --bogus",
		"cluster clone --backup b1 --id c2 --hsms x --backup-password s3cret",
		"key list --filter attr.label=k --cluster-id lab",
		"key generate-symmetric aes --label k --key-length-bytes 32 --attributes sign=true",
		"crypto sign ecdsa --key-filter attr.label=priv --hash-function sha256 --data aGVsbG8=",
		"login --password",
		"login -h --password p",
		"key 'unterminated",
		"frobnicate --password=p",
	} {
		f.Add(s)
	}
	tree := Default()
	f.Fuzz(func(t *testing.T, line string) {
		nonEmpty := func(stage string, err error) {
			if err.Error() == "" {
				t.Fatalf("%s: empty error for %q", stage, line)
			}
		}
		all, err := Split(line)
		if err != nil {
			nonEmpty("Split", err)
			return
		}
		if len(all) == 0 || all[0] == "quit" || all[0] == "exit" || all[0] == "help" {
			return
		}
		cmd, rest, err := tree.Find(all)
		if err != nil {
			nonEmpty("Find", err)
			// An unknown command's error shows no flag's value.
			for _, w := range all {
				if name, v, ok := strings.Cut(w, "="); ok && strings.HasPrefix(name, "--") && len(v) > 3 && strings.Contains(err.Error(), fmt.Sprintf("%q", w)) {
					t.Fatalf("Find(%q): the error shows the value of %s: %v", all, name, err)
				}
			}
			return
		}

		// The secret values, as indexes into rest and into all.
		inRest := secretWords(cmd, rest)
		inAll := make([]int, len(inRest))
		for j, i := range inRest {
			inAll[j] = len(all) - len(rest) + i
		}

		// Errors.
		args, err := cmd.parse(rest)
		canaryRest, restCanaries := withCanaries(rest, inRest)
		_, err2 := cmd.parse(canaryRest)
		var h errHelp
		if errors.As(err, &h) {
			err = nil
		}
		if errors.As(err2, &h) {
			err2 = nil
		}
		if err2 != nil {
			for _, c := range restCanaries {
				if strings.Contains(err2.Error(), c) {
					t.Fatalf("%s: the error shows a secret flag's value:\n%v\n(line %q)", cmd.Name(), err2, line)
				}
			}
		}
		if (err == nil) != (err2 == nil) || err != nil && err.Error() != err2.Error() {
			t.Fatalf("%s: a secret flag's value changed the parse:\n%v\nwith the values replaced:\n%v\n(line %q)", cmd.Name(), err, err2, line)
		}
		if err != nil {
			nonEmpty(cmd.Name(), err)
			return
		}
		if args == nil {
			return // help
		}
		// Echo and history: a line that parses shows none of the secret
		// values the command takes.
		canaryAll, canaries := withCanaries(all, inAll)
		quoted := make([]string, len(canaryAll))
		for i, w := range canaryAll {
			quoted[i] = Quote(w)
		}
		shown := tree.Redact(strings.Join(quoted, " "))
		for _, c := range canaries {
			if strings.Contains(shown, c) {
				t.Fatalf("%s: the redacted line (echo, history) shows a secret flag's value the command takes:\n%s\n(line %q)", cmd.Name(), shown, line)
			}
		}
		for _, w := range rest {
			name, v, ok := strings.Cut(strings.TrimPrefix(w, "--"), "=")
			if f := cmd.flag(name); ok && strings.HasPrefix(w, "--") && f != nil && f.Secret && args.String(name) != v {
				t.Errorf("--%s=%q parsed as %q", name, v, args.String(name))
			}
		}
	})
}
