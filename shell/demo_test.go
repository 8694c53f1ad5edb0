package shell

import (
	"bytes"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/hsmsh/hsmsh/commands"
)

// Every demo built into hsmsh plays to the end with exit 0: each command
// succeeds, or fails where the file marks it with "! ". A demo added to
// demos/ is covered here before it has a transcript script of its own.
func TestEveryDemoPlays(t *testing.T) {
	names := demoNames()
	if len(names) < 8 {
		t.Fatalf("only %d demos built in: %v", len(names), names)
	}
	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			var out, errb bytes.Buffer
			if code := Main([]string{"demo", name}, strings.NewReader(""), &out, &errb); code != 0 {
				t.Fatalf("hsmsh demo %s: exit %d; stderr:\n%s\nstdout:\n%s", name, code, errb.String(), out.String())
			}
			if errb.Len() != 0 {
				t.Errorf("stderr: %s", errb.String())
			}
			if !regexp.MustCompile(`(?m)^> \S`).MatchString(out.String()) {
				t.Errorf("no command in the transcript:\n%s", out.String())
			}
		})
	}
}

func TestDemoEventLine(t *testing.T) {
	tr := &transcript{labels: map[string]string{}}
	at := time.Date(2026, 1, 2, 3, 4, 5, 678_000_000, time.Local)
	for _, c := range []struct {
		ev   commands.Event
		want string
	}{
		{commands.Event{Time: at, Kind: "key-created", HSM: "hsm-1", Ref: "0x01", Detail: "k"},
			"03:04:05.678  key-created             hsm-1  k  0x01"},
		{commands.Event{Time: at, Kind: "key-lost", HSM: "hsm-1", Ref: "0x02", Detail: "its only copy was on hsm-1", Label: "teaching-key"},
			"03:04:05.678  key-lost                hsm-1  teaching-key  0x02: its only copy was on hsm-1"},
		{commands.Event{Time: at, Kind: "key-synced", HSM: "hsm-2", Ref: "0x01"},
			"03:04:05.678  key-synced              hsm-2  k  0x01"},
		{commands.Event{Time: at, Kind: "key-deleted", HSM: "hsm-2", Ref: "0x03"},
			"03:04:05.678  key-deleted             hsm-2  0x03"},
		{commands.Event{Time: at, Kind: "hsm-destroyed", HSM: "hsm-1", Count: 2},
			"03:04:05.678  hsm-destroyed           hsm-1  -  2 keys erased"},
		{commands.Event{Time: at, Kind: "sync-paused"},
			"03:04:05.678  sync-paused             -      -"},
		{commands.Event{Time: at, Kind: "leader-elected", HSM: "hsm-2", Detail: "hsm-2 leads the domain state (term 3)"},
			"03:04:05.678  leader-elected          hsm-2  -  hsm-2 leads the domain state (term 3)"},
		{commands.Event{Time: at, Kind: "domain-state", HSM: "hsm-3", Detail: "carol locked after 5 wrong passwords (the last on hsm-2)"},
			"03:04:05.678  domain-state            hsm-3  -  carol locked after 5 wrong passwords (the last on hsm-2)"},
	} {
		if got := tr.event(c.ev); got != c.want {
			t.Errorf("event %+v:\n got %q\nwant %q", c.ev, got, c.want)
		}
	}
}

// cluster hsm-info in a transcript: each HSM's state and token keys ("?"
// while it is down), then the domain state's leader and its term, or that
// there is none.
func TestDemoHSMInfoSummary(t *testing.T) {
	tr := &transcript{labels: map[string]string{}}
	hsm := func(id, state string, keys any, role string) map[string]any {
		h := map[string]any{"id": id, "state": state, "token-key-count": keys}
		if role != "" {
			h["raft"] = map[string]any{"role": role, "term": float64(3)}
		}
		return h
	}
	words := []string{"cluster", "hsm-info"}
	for _, c := range []struct {
		hsms []any
		want string
	}{
		{[]any{hsm("hsm-1", "down", nil, ""), hsm("hsm-2", "active", float64(4), "leader"), hsm("hsm-3", "active", float64(4), "follower")},
			"hsm-1 down ? keys · hsm-2 active 4 keys · hsm-3 active 4 keys · leader hsm-2 (term 3)"},
		{[]any{hsm("hsm-1", "down", nil, ""), hsm("hsm-2", "active", float64(1), "candidate"), hsm("hsm-3", "down", nil, "")},
			"hsm-1 down ? keys · hsm-2 active 1 keys · hsm-3 down ? keys · no leader"},
		{[]any{hsm("hsm-1", "active", float64(0), "")},
			"hsm-1 active 0 keys"},
	} {
		if got := tr.summary(words, map[string]any{"cluster-id": "c", "hsms": c.hsms}); got != c.want {
			t.Errorf("got  %q\nwant %q", got, c.want)
		}
	}
}
