package shell

import (
	"bufio"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/hsmsh/hsmsh/commands"
	"github.com/hsmsh/hsmsh/config"
	"github.com/hsmsh/hsmsh/demos"
)

const demoUsage = `usage: hsmsh demo [NAME | FILE.hsm]
       hsmsh demo NAME [--auto DELAY] [--transcript]

Plays a teaching demo on a fresh in-memory embedded cluster (as --ephemeral).

On a terminal it plays in the full-screen shell: the narration in a pane
at the top, and, step by step, each command typed out and run while the
HSM, key and event panes follow. Enter runs the next step (--auto DELAY,
e.g. --auto 4s, runs it by itself after DELAY); Ctrl+C stops a command;
commands of your own may be typed between steps; quit leaves. Inside the
shell, "demo NAME" does the same on a cluster of its own and comes back.

Outside a terminal (or with --transcript) it prints the demo's
transcript: the file's comments as narration, each command as
"> command" (passwords shown as ****) followed by a one-line summary of its
result ("ok: …", "✗ message", or "✗ (expected) message" for a line that
starts with "! ", a command the demo expects to fail), and the cluster's
events it caused, one per line:
  hh:mm:ss.mmm  kind  hsm  label-or-reference  detail
Without NAME it lists the demos built into hsmsh. NAME is a demo's name
(e.g. lost-before-replication); a path to any .hsm file plays that file.
The demos use hsmsh's default settings (the config file only with --config).

Exit status of a transcript: 0 when every command succeeded or failed as
the demo expects, 1 otherwise (the play goes on to the end); 2 for a bad
command line. The player says at its end what did not go as expected.

`

// demoCommand is hsmsh demo: list the demos, or play one, in the
// full-screen shell on a terminal, else as a transcript.
func demoCommand(g globals, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	var rest []string
	transcriptOnly := false
	for _, a := range args {
		switch a {
		case "--help", "-h":
			fmt.Fprint(stdout, demoUsage)
			return 0
		case "--transcript":
			transcriptOnly = true
		default:
			rest = append(rest, a)
		}
	}
	name, auto, err := parseDemoArgs(rest)
	if err != nil {
		fmt.Fprintf(stderr, "hsmsh demo: %v\n%s", err, demoUsage)
		return 2
	}
	if name == "" {
		return listDemos(stdout, stderr)
	}
	var title, text string
	title, text, err = readDemo(name)
	if err != nil {
		fmt.Fprintf(stderr, "hsmsh demo: %v\n", err)
		return 2
	}
	cfg := config.Default()
	if g.configPath != "" {
		if cfg, err = loadConfig(g); err != nil {
			fmt.Fprintf(stderr, "hsmsh demo: %v\n", err)
			return 1
		}
	}
	if cfg.Cluster.Mode != "embedded" {
		fmt.Fprintln(stderr, "hsmsh demo: the demos play on the embedded cluster; this config names a remote one")
		return 1
	}
	if !transcriptOnly && isTerminal(stdin) && isTerminal(stdout) {
		return playDemoFullScreen(g, cfg, title, text, auto, stdin, stdout, stderr)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	env, closeEnv, err := openDemoEnv(cfg)
	if err != nil {
		fmt.Fprintf(stderr, "hsmsh demo: %v\n", err)
		return 1
	}
	defer func() {
		if err := closeEnv(); err != nil {
			fmt.Fprintf(stderr, "hsmsh demo: close: %v\n", err)
		}
	}()
	return playDemo(ctx, commands.NewRunner(env), title, text, stdout, stderr)
}

// demoNames are the built-in demos, sorted.
func demoNames() []string {
	var names []string
	entries, _ := fs.ReadDir(demos.Files, ".")
	for _, e := range entries {
		if n, ok := strings.CutSuffix(e.Name(), ".hsm"); ok && !e.IsDir() {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	return names
}

func listDemos(stdout, stderr io.Writer) int {
	names := demoNames()
	width := 0
	for _, n := range names {
		width = max(width, len(n))
	}
	fmt.Fprintln(stdout, "Demos (play one with hsmsh demo NAME):")
	for _, n := range names {
		b, err := demos.Files.ReadFile(n + ".hsm")
		if err != nil {
			fmt.Fprintf(stderr, "hsmsh demo: %v\n", err)
			return 1
		}
		fmt.Fprintf(stdout, "  %-*s  %s\n", width, n, firstComment(string(b)))
	}
	return 0
}

// firstComment is the text of a demo's first non-empty comment line.
func firstComment(text string) string {
	for _, l := range strings.Split(text, "\n") {
		t := strings.TrimSpace(l)
		if !strings.HasPrefix(t, "#") {
			continue
		}
		if c := strings.TrimSpace(strings.TrimPrefix(t, "#")); c != "" {
			return c
		}
	}
	return ""
}

// readDemo finds a demo by name among the built-in ones, or as a path.
func readDemo(name string) (title, text string, err error) {
	if strings.ContainsRune(name, os.PathSeparator) || strings.Contains(name, "/") || strings.HasSuffix(name, ".hsm") {
		if b, err := os.ReadFile(name); err == nil {
			return name, string(b), nil
		} else if !errors.Is(err, fs.ErrNotExist) || strings.Contains(name, "/") {
			return "", "", err
		}
	}
	base := strings.TrimSuffix(name, ".hsm")
	b, err := demos.Files.ReadFile(base + ".hsm")
	if err != nil {
		return "", "", fmt.Errorf("no demo %q; the demos are: %s (or give the path of a .hsm file)", name, strings.Join(demoNames(), ", "))
	}
	return base, string(b), nil
}

// transcript writes a demo's play.
type transcript struct {
	w      io.Writer
	labels map[string]string // key reference → label, as learnt from results and events
	blank  bool              // the last line written was blank
}

func (t *transcript) line(s string) {
	if s == "" {
		if t.blank {
			return
		}
		t.blank = true
	} else {
		t.blank = false
	}
	fmt.Fprintln(t.w, s)
}

// playDemo runs a demo's lines in one session, writing the transcript.
// It goes on after a command that did not behave as the demo expects and
// returns 1 at the end if there was one.
func playDemo(ctx context.Context, r *commands.Runner, name, text string, stdout, stderr io.Writer) int {
	t := &transcript{w: stdout, labels: map[string]string{}, blank: true}
	// The events of the cluster the demo starts on, and of the clusters it
	// makes (clones), whose events name their cluster: dr/hsm-1.
	type sub struct {
		prefix string
		ch     <-chan commands.Event
	}
	first, cancel := r.Env.Subscribe(4096)
	defer func() { cancel() }()
	subs := []sub{{"", first}}
	followed := map[string]bool{r.Env.ClusterID(): true}
	configured := map[string]bool{}
	for _, id := range r.Env.Config.ClusterIDs() {
		configured[id] = true
	}
	follow := func() {
		for _, id := range r.Env.ClusterIDs() {
			if followed[id] || configured[id] {
				continue // a configured cluster is opened only when a command uses it
			}
			on, err := r.Env.On(id)
			if err != nil {
				continue
			}
			followed[id] = true
			ch, c := on.Subscribe(4096)
			prev := cancel
			cancel = func() { c(); prev() }
			subs = append(subs, sub{id + "/", ch})
		}
	}
	drain := func() {
		var evs []commands.Event
		for _, s := range subs {
			for more := true; more; {
				select {
				case ev := <-s.ch:
					if s.prefix != "" {
						ev.HSM = strings.TrimSuffix(s.prefix+ev.HSM, "/")
					}
					evs = append(evs, ev)
				default:
					more = false
				}
			}
		}
		sort.SliceStable(evs, func(i, j int) bool { return evs[i].Time.Before(evs[j].Time) })
		for _, ev := range evs {
			t.line("  " + t.event(ev))
		}
	}

	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 64<<10), maxLine)
	var bad []string
	lineNo := 0
	for {
		line, start, ok := nextLine(sc, &lineNo)
		if !ok {
			break
		}
		trimmed := strings.TrimSpace(line)
		switch {
		case trimmed == "":
			t.line("")
			continue
		case strings.HasPrefix(trimmed, "#"):
			t.line(strings.TrimSpace(strings.TrimPrefix(trimmed, "#")))
			continue
		}
		if ctx.Err() != nil {
			fmt.Fprintf(stderr, "%s:%d: interrupted\n", name, start)
			return 1
		}
		expectFail := false
		if rest, ok := strings.CutPrefix(trimmed, "! "); ok {
			expectFail, trimmed = true, strings.TrimSpace(rest)
		}
		words, err := commands.Split(trimmed)
		if err == nil && len(words) == 0 {
			continue
		}
		t.line("> " + r.Tree.Redact(trimmed))
		var res commands.Result
		if err != nil {
			res = commands.Result{ErrorCode: 1, Data: err.Error()}
		} else {
			res = r.Run(ctx, words)
		}
		data := plain(res.Data)
		t.learn(data)
		switch {
		case !res.OK() && expectFail:
			t.line("  ✗ (expected) " + strings.TrimSpace(fmt.Sprint(res.Data)))
		case !res.OK():
			t.line("  ✗ " + strings.TrimSpace(fmt.Sprint(res.Data)))
			bad = append(bad, fmt.Sprintf("%d", start))
		case expectFail:
			t.line("  ✗ expected to fail, but it succeeded: " + t.summary(words, data))
			bad = append(bad, fmt.Sprintf("%d", start))
		default:
			t.line("  ok: " + t.summary(words, data))
		}
		drain()
		follow()
		if res.Quit {
			break
		}
	}
	if err := sc.Err(); err != nil {
		fmt.Fprintf(stderr, "%s:%d: %v\n", name, lineNo+1, err)
		return 1
	}
	// Events a command set off that arrived after it returned.
	time.Sleep(20 * time.Millisecond)
	drain()
	if len(bad) > 0 {
		where := "line " + bad[0]
		if len(bad) > 1 {
			where = "lines " + strings.Join(bad, ", ")
		}
		fmt.Fprintf(stderr, "hsmsh demo: %s: %d command(s) did not go as the demo expects (%s)\n", name, len(bad), where)
		return 1
	}
	return 0
}

// plain turns a result's data into JSON's generic values (maps, slices,
// strings, float64s), as its envelope shows it.
func plain(v any) any {
	b, err := json.Marshal(v)
	if err != nil {
		return nil
	}
	var out any
	if json.Unmarshal(b, &out) != nil {
		return nil
	}
	return out
}

// learn records the labels of the keys a result shows.
func (t *transcript) learn(v any) {
	switch x := v.(type) {
	case map[string]any:
		if ref, ok := x["key-reference"].(string); ok {
			if attrs, ok := x["attributes"].(map[string]any); ok {
				if l, ok := attrs["label"].(string); ok && l != "" {
					t.labels[ref] = l
				}
			}
		}
		for _, el := range x {
			t.learn(el)
		}
	case []any:
		for _, el := range x {
			t.learn(el)
		}
	}
}

// event is one event's transcript line (without indentation).
func (t *transcript) event(ev commands.Event) string {
	if ev.Ref != "" {
		if ev.Label != "" {
			t.labels[ev.Ref] = ev.Label
		} else if ev.Kind == "key-created" && ev.Detail != "" {
			t.labels[ev.Ref] = strings.TrimPrefix(ev.Detail, "session key ")
		}
	}
	hsm := ev.HSM
	if hsm == "" {
		hsm = "-"
	}
	name, detail := ev.Ref, ev.Detail
	if l := t.labels[ev.Ref]; l != "" && ev.Ref != "" {
		name = l
		switch detail {
		case "", l, "session key " + l:
			if detail == "session key "+l {
				detail = ev.Ref + " (session key)"
			} else {
				detail = ev.Ref
			}
		default:
			detail = ev.Ref + ": " + detail
		}
	}
	if name == "" {
		name = "-"
	}
	if ev.Count > 0 {
		var c string
		switch ev.Kind {
		case "hsm-destroyed":
			c = fmt.Sprintf("%d keys erased", ev.Count)
		case "hsm-removed":
			c = fmt.Sprintf("%d keys went with it", ev.Count)
		case "sync-started":
			c = fmt.Sprintf("%d HSMs up", ev.Count)
		case "session-keys-destroyed":
			c = fmt.Sprintf("%d session keys", ev.Count)
		case "sync-finished", "hsm-restarted":
			// The detail says it.
		default:
			c = fmt.Sprintf("count %d", ev.Count)
		}
		if c != "" {
			detail = strings.TrimSpace(c + ", " + detail)
			detail = strings.TrimSuffix(detail, ",")
		}
	}
	return strings.TrimRight(fmt.Sprintf("%s  %-22s  %-5s  %s  %s", ev.Time.Local().Format("15:04:05.000"), ev.Kind, hsm, name, detail), " ")
}

// keyDesc describes a key of a result: 0x… (label) on hsm-1, hsm-3.
func (t *transcript) keyDesc(v any) string {
	k, _ := v.(map[string]any)
	ref, _ := k["key-reference"].(string)
	s := ref
	if l := t.labels[ref]; l != "" {
		s += " (" + l + ")"
	}
	if info, ok := k["key-info"].(map[string]any); ok {
		if cov, ok := info["hsm-coverage"].(map[string]any); ok {
			var on []string
			for id, held := range cov {
				if held == true {
					on = append(on, id)
				}
			}
			sort.Strings(on)
			if len(on) == 0 {
				s += " on no HSM"
			} else {
				s += " on " + strings.Join(on, ", ")
			}
		}
	}
	return s
}

// summary is a short human reading of a successful result.
func (t *transcript) summary(words []string, data any) string {
	switch d := data.(type) {
	case map[string]any:
		str := func(k string) string { s, _ := d[k].(string); return s }
		num := func(m map[string]any, k string) string { return fmt.Sprint(m[k]) }
		switch {
		case d["private_key"] != nil && d["public_key"] != nil:
			return "private key " + t.keyDesc(d["private_key"]) + "; public key " + t.keyDesc(d["public_key"])
		case d["key"] != nil:
			// key replicate names the destination on its command line
			// (older results carried it in the data too).
			dst := str("destination-cluster-id")
			if dst == "" {
				dst = flagValue(words, "--destination-cluster-id")
			}
			if dst != "" {
				return "key " + t.keyDesc(d["key"]) + " of cluster " + dst
			}
			return "key " + t.keyDesc(d["key"])
		case str("message") != "":
			return str("message")
		case d["matched_keys"] != nil:
			keys, _ := d["matched_keys"].([]any)
			if len(keys) == 0 {
				return "no key matches"
			}
			descs := make([]string, 0, len(keys))
			for i, k := range keys {
				if i == 5 {
					descs = append(descs, fmt.Sprintf("and %d more", len(keys)-5))
					break
				}
				descs = append(descs, t.keyDesc(k))
			}
			noun := "keys"
			if len(keys) == 1 {
				noun = "key"
			}
			return fmt.Sprintf("%d %s: %s", len(keys), noun, strings.Join(descs, "; "))
		case str("signature") != "":
			ref := str("key-reference")
			if l := t.labels[ref]; l != "" {
				ref += " (" + l + ")"
			}
			sig := str("signature")
			if len(sig) > 16 {
				sig = sig[:16] + "…"
			}
			return "signed with " + ref + ": " + sig
		case str("private-key") != "" && str("public-key") != "":
			return fmt.Sprintf("key pair: %s (private, keep it so), %s (public, to register)", str("private-key"), str("public-key"))
		case str("filepath") != "" && len(d) == 1:
			return "token written to " + str("filepath")
		case str("token") != "" && str("service") != "" && d["signed"] == true:
			// A registration token: the file as the command line names it
			// (the result gives the full path of the demo's folder).
			return fmt.Sprintf("%s signed by %s, who asked for it", cmp.Or(flagValue(words, "--token"), str("token")), str("requester"))
		case str("token") != "" && d["signatures"] != nil:
			n := num(d, "signatures") + " signatures"
			if n == "1 signatures" {
				n = "1 signature"
			}
			return fmt.Sprintf("%s signed by %s: %s on %s's %s token", cmp.Or(flagValue(words, "--token"), str("token")), str("username"), n, str("requester"), str("service"))
		case str("hsm") != "" && str("state") != "":
			return str("hsm") + " " + str("state")
		case str("name") != "" && d["value"] != nil:
			return fmt.Sprintf("%s = %v (%s)", str("name"), d["value"], str("source"))
		case str("username") != "" && str("role") != "":
			who := fmt.Sprintf("%s (%s)", str("username"), str("role"))
			if len(words) > 0 && words[0] == "login" {
				return "logged in as " + who
			}
			if len(words) > 1 && words[0] == "user" {
				return "user " + who
			}
			return who
		case d["paused"] != nil:
			if d["paused"] == true {
				return "server-side sync paused"
			}
			return "server-side sync runs every " + str("interval")
		case d["sync"] != nil:
			s, _ := d["sync"].(map[string]any)
			return fmt.Sprintf("sync pass: %s keys copied, %s deleted, %s users copied, %s failures",
				num(s, "keys-copied"), num(s, "keys-deleted"), num(s, "users-copied"), num(s, "failures"))
		case str("backup-id") != "":
			return fmt.Sprintf("backup %s of %s, sealed by %s: %s keys, %s users", str("backup-id"), str("cluster-id"), str("hsm"), num(d, "keys"), num(d, "users"))
		case str("source-cluster-id") != "" && str("cluster-id") != "":
			return fmt.Sprintf("cluster %s cloned from %s's backup: %s HSMs, %s keys, %s users", str("cluster-id"), str("source-cluster-id"), num(d, "hsms"), num(d, "keys"), num(d, "users"))
		case d["hsms"] != nil:
			hsms, _ := d["hsms"].([]any)
			parts := make([]string, 0, len(hsms))
			// The domain state's leader, as the HSMs that answer say it;
			// nothing when none reports its place in the group.
			var leaders []string
			term, grouped := "", false
			for _, h := range hsms {
				m, _ := h.(map[string]any)
				keys := "?" // a down HSM cannot say what it holds
				if n, ok := m["token-key-count"].(float64); ok {
					keys = fmt.Sprintf("%.0f", n)
				}
				parts = append(parts, fmt.Sprintf("%v %v %s keys", m["id"], m["state"], keys))
				if r, ok := m["raft"].(map[string]any); ok {
					grouped = true
					if r["role"] == "leader" {
						leaders = append(leaders, fmt.Sprint(m["id"]))
						if tm, ok := r["term"].(float64); ok {
							term = fmt.Sprintf("%.0f", tm)
						}
					}
				}
			}
			switch {
			case len(leaders) == 1:
				parts = append(parts, fmt.Sprintf("leader %s (term %s)", leaders[0], term))
			case len(leaders) > 1: // an old leader that has not heard of the new term yet
				parts = append(parts, "leaders "+strings.Join(leaders, ", "))
			case grouped:
				parts = append(parts, "no leader")
			}
			return strings.Join(parts, " · ")
		case d["users"] != nil:
			list, _ := d["users"].([]any)
			parts := make([]string, 0, len(list))
			for _, u := range list {
				m, _ := u.(map[string]any)
				who := fmt.Sprintf("%v (%v)", m["username"], m["role"])
				if m["locked"] == "true" {
					who += " locked"
				}
				parts = append(parts, who)
			}
			return "users: " + strings.Join(parts, ", ")
		case d["settings"] != nil:
			list, _ := d["settings"].([]any)
			var parts []string
			for _, s := range list {
				m, _ := s.(map[string]any)
				if n, _ := m["name"].(string); strings.HasPrefix(n, "durability.") {
					parts = append(parts, fmt.Sprintf("%s = %v", n, m["value"]))
				}
			}
			return strings.Join(parts, ", ")
		}
	case string:
		return d // "data": "Logout successful", as CloudHSM CLI prints it
	case []any:
		var ids []string
		for _, el := range d {
			m, _ := el.(map[string]any)
			id, ok := m["cluster-id"].(string)
			if !ok {
				ids = nil
				break
			}
			if m["current"] == true {
				id += " (current)"
			}
			ids = append(ids, id)
		}
		if ids != nil {
			return "clusters: " + strings.Join(ids, ", ")
		}
	}
	b, _ := json.Marshal(data)
	s := string(b)
	if r := []rune(s); len(r) > 120 {
		s = string(r[:120]) + "…"
	}
	return s
}

// openDemoEnv opens a fresh in-memory embedded cluster for a demo, with a
// folder of its own for the files the demo writes (a wrapped key, say),
// removed with the cluster: a demo leaves nothing behind.
func openDemoEnv(cfg *config.Config) (*commands.Env, func() error, error) {
	dir, err := os.MkdirTemp("", "hsmsh-demo-")
	if err != nil {
		return nil, nil, err
	}
	env, err := commands.Open(cfg, "") // in memory: a fresh cluster every time
	if err != nil {
		os.RemoveAll(dir)
		return nil, nil, err
	}
	env.Dir = dir
	return env, func() error {
		err := env.Close(context.Background())
		return errors.Join(err, os.RemoveAll(dir))
	}, nil
}
