package testscripts

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestShapeDiff(t *testing.T) {
	tests := []struct {
		name, want, got string
		extra           []string
		diffs           []string // parts of the differences expected, in order
	}{
		{"equal", `{"a":1,"b":"x"}`, `{"b":"x","a":1}`, nil, nil},
		{"a value", `{"a":1}`, `{"a":2}`, nil, []string{"$.a: want 1, got 2"}},
		{"a type", `{"data":"Logout successful"}`, `{"data":{"message":"Logout successful"}}`, nil, []string{"$.data: want string"}},
		{"missing", `{"a":1,"b":2}`, `{"a":1}`, nil, []string{"$.b: missing"}},
		{"optional missing", `{"a":1,"b?":2}`, `{"a":1}`, nil, nil},
		{"optional present", `{"a":1,"b?":"<number>"}`, `{"a":1,"b":"two"}`, nil, []string{"$.b: want <number>"}},
		{"extra", `{"a":1}`, `{"a":1,"c":3}`, nil, []string{"$.c: not on the page"}},
		{"allowed extra", `{"a":{"b":1}}`, `{"a":{"b":1,"hsm-coverage":{}}}`, []string{"hsm-coverage"}, nil},
		{"masks", `{"r":"<ref>","h":"<hex>","s":"<string>","n":"<number>","b":"<bool>","l":"<array>"}`,
			`{"r":"0x00000000001c0686","h":"0x010001","s":"x","n":5,"b":false,"l":[1]}`, nil, nil},
		{"bad ref", `{"r":"<ref>"}`, `{"r":"0x1c0686"}`, nil, []string{"$.r: want <ref>"}},
		{"array: last stands for the rest", `[{"a":1},{"a":2}]`, `[{"a":1},{"a":2},{"a":2}]`, nil, nil},
		{"array element", `[{"a":1}]`, `[{"a":1},{"a":3}]`, nil, []string{"$.1.a: want 1, got 3"}},
		{"empty array", `{"l":[]}`, `{"l":[{"a":1}]}`, nil, []string{"$.l: want 0 elements, got 1"}},
		{"not empty", `{"l":[1]}`, `{"l":[]}`, nil, []string{"$.l: want 1 elements, got 0"}},
	}
	for _, tt := range tests {
		var want, got any
		if err := json.Unmarshal([]byte(tt.want), &want); err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal([]byte(tt.got), &got); err != nil {
			t.Fatal(err)
		}
		diffs := shapeDiff("$", want, got, tt.extra)
		if len(diffs) != len(tt.diffs) {
			t.Errorf("%s: differences %q, want %d like %q", tt.name, diffs, len(tt.diffs), tt.diffs)
			continue
		}
		for i, d := range tt.diffs {
			if !strings.Contains(diffs[i], d) {
				t.Errorf("%s: difference %q, want %q", tt.name, diffs[i], d)
			}
		}
	}
}
