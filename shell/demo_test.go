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
	} {
		if got := tr.event(c.ev); got != c.want {
			t.Errorf("event %+v:\n got %q\nwant %q", c.ev, got, c.want)
		}
	}
}
