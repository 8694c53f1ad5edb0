package testscripts

import (
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"sort"
	"strings"

	"github.com/rogpeppe/go-internal/testscript"
)

// jsonshape FILE PATH EXPECTED [EXTRA...]: the JSON value at PATH of FILE
// (as jsonpath reads it; "." for the whole last document) has the shape
// of the JSON document in the file EXPECTED, an AWS reference page's
// example output: the same keys, the same nesting, the same value types,
// and equal values, except where EXPECTED holds a mask:
//
//	"<string>", "<number>", "<bool>",
//	"<array>"                          any value of that type
//	"<ref>"                            a key-reference, 0x and 16 hex digits
//	"<hex>"                            0x and hex digits (check values, points)
//
// A key of EXPECTED ending in "?" may be missing (a field the page shows
// that hsmsh does not give yet; the script says why); when present it is
// compared as any other. An array in EXPECTED is matched element by element, its last element
// standing for any further ones; [] wants an empty array. EXTRA names
// keys hsmsh adds (such as hsm-coverage), allowed anywhere; any other key
// EXPECTED lacks is a difference. Every difference is listed, by path.
func cmdJSONShape(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) < 3 {
		ts.Fatalf("usage: jsonshape FILE PATH EXPECTED [EXTRA...]")
	}
	got, ok := lookup(ts, args[0], args[1])
	if !ok {
		ts.Fatalf("%s has nothing at %s", args[0], args[1])
	}
	var want any
	if err := json.Unmarshal([]byte(ts.ReadFile(args[2])), &want); err != nil {
		ts.Fatalf("%s is not JSON: %v", args[2], err)
	}
	diffs := shapeDiff("$", want, got, args[3:])
	switch {
	case neg && len(diffs) == 0:
		ts.Fatalf("%s %s has the shape of %s; want a difference", args[0], args[1], args[2])
	case !neg && len(diffs) > 0:
		ts.Fatalf("%s %s differs from %s:\n  %s\ngot: %s", args[0], args[1], args[2], strings.Join(diffs, "\n  "), render(got))
	}
}

// shapeDiff lists how got differs from want (see jsonshape).
func shapeDiff(path string, want, got any, extra []string) []string {
	if s, ok := want.(string); ok {
		if d, masked := maskDiff(path, s, got); masked {
			return d
		}
	}
	if kind(want) != kind(got) {
		return []string{fmt.Sprintf("%s: want %s %s, got %s %s", path, kind(want), render(want), kind(got), render(got))}
	}
	switch w := want.(type) {
	case map[string]any:
		g := got.(map[string]any)
		var out []string
		for _, wk := range sortedKeys(w) {
			k, optional := strings.CutSuffix(wk, "?")
			gv, ok := g[k]
			if !ok {
				if !optional {
					out = append(out, fmt.Sprintf("%s.%s: missing", path, k))
				}
				continue
			}
			out = append(out, shapeDiff(path+"."+k, w[wk], gv, extra)...)
		}
		for _, k := range sortedKeys(g) {
			_, known := w[k]
			_, knownOptional := w[k+"?"]
			if !known && !knownOptional && !slices.Contains(extra, k) {
				out = append(out, fmt.Sprintf("%s.%s: not on the page (%s)", path, k, render(g[k])))
			}
		}
		return out
	case []any:
		g := got.([]any)
		if len(w) == 0 || len(g) == 0 {
			if len(w) != len(g) {
				return []string{fmt.Sprintf("%s: want %d elements, got %d", path, len(w), len(g))}
			}
			return nil
		}
		var out []string
		for i, gv := range g {
			out = append(out, shapeDiff(fmt.Sprintf("%s.%d", path, i), w[min(i, len(w)-1)], gv, extra)...)
		}
		return out
	}
	if !reflect.DeepEqual(want, got) {
		return []string{fmt.Sprintf("%s: want %s, got %s", path, render(want), render(got))}
	}
	return nil
}

// maskDiff checks got against a mask; masked is false when s is none.
func maskDiff(path, s string, got any) (diffs []string, masked bool) {
	isHex := func(v string, digits int) bool {
		h, ok := strings.CutPrefix(v, "0x")
		if !ok || (digits > 0 && len(h) != digits) {
			return false
		}
		for _, r := range h {
			if !strings.ContainsRune("0123456789abcdef", r) {
				return false
			}
		}
		return true
	}
	var ok bool
	switch s {
	case "<string>":
		_, ok = got.(string)
	case "<number>":
		_, ok = got.(float64)
	case "<bool>":
		_, ok = got.(bool)
	case "<array>":
		_, ok = got.([]any)
	case "<ref>":
		v, isStr := got.(string)
		ok = isStr && isHex(v, 16)
	case "<hex>":
		v, isStr := got.(string)
		ok = isStr && isHex(v, 0)
	default:
		return nil, false
	}
	if !ok {
		return []string{fmt.Sprintf("%s: want %s, got %s", path, s, render(got))}, true
	}
	return nil, true
}

func kind(v any) string {
	switch v.(type) {
	case map[string]any:
		return "object"
	case []any:
		return "array"
	case string:
		return "string"
	case float64:
		return "number"
	case bool:
		return "bool"
	case nil:
		return "null"
	}
	return fmt.Sprintf("%T", v)
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
