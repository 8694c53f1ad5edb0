package shell

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"time"

	"github.com/hsmsh/hsmsh/commands"
	"github.com/hsmsh/hsmsh/shell/completion"
)

// lineShell is the inline REPL (hsmsh interactive --line): results flow
// into the terminal's own scrollback, and a one-line status follows each
// command. Each command runs under a context of its own, which Ctrl+C
// cancels; the next command starts afresh.
type lineShell struct {
	r        *commands.Runner
	ed       *lineEditor
	out, err io.Writer
	dataDir  string
	hists    map[string]*History // per cluster and user, loaded once
	// interrupts are Ctrl+C while a command runs (SIGINT: the terminal
	// is in its normal mode then).
	interrupts <-chan os.Signal
	// late is a cancelled command still finishing in the background.
	late chan lateResult
}

type lateResult struct {
	line string
	res  commands.Result
}

// lineLoop runs line mode on stdin and stdout, with the raw-mode editor
// when stdin is a terminal and plain line reading when it is not.
func lineLoop(ctx context.Context, r *commands.Runner, dataDir string, stdin io.Reader, stdout, stderr io.Writer) int {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt)
	defer signal.Stop(sig)
	fd, tty := -1, false
	if f, ok := stdin.(*os.File); ok && isTerminal(f) {
		fd, tty = int(f.Fd()), true
	}
	s := newLineShell(r, dataDir, stdin, stdout, stderr, fd, tty, sig)
	return s.loop(ctx)
}

func newLineShell(r *commands.Runner, dataDir string, stdin io.Reader, stdout, stderr io.Writer, fd int, edit bool, interrupts <-chan os.Signal) *lineShell {
	s := &lineShell{r: r, out: stdout, err: stderr, dataDir: dataDir, interrupts: interrupts}
	if !edit {
		s.dataDir = "" // no history is kept for piped input
	}
	comp := &completion.Completer{Tree: r.Tree, Source: &liveSource{env: r.Env}, Dir: r.Env.Dir}
	s.ed = newLineEditor(stdin, stdout, fd, edit, func() []string { return s.history().Lines() }, comp)
	if edit {
		// Passwords are asked for in the editor: masked, and Ctrl+C
		// gives up.
		r.Env.ReadPassword = s.ed.ReadPassword
	}
	return s
}

// history is the logged-in user's history (per user, as in the
// full-screen shell).
func (s *lineShell) history() *History {
	user, _, _ := s.r.Env.Who()
	id := s.r.Env.ClusterID() + "\x00" + user
	if s.hists == nil {
		s.hists = map[string]*History{}
	}
	h, ok := s.hists[id]
	if !ok {
		var err error
		h, err = LoadHistory(historyPath(s.dataDir, s.r.Env.ClusterID(), user))
		if err != nil {
			fmt.Fprintln(s.err, "hsmsh: history:", err)
		}
		s.hists[id] = h
	}
	return h
}

func (s *lineShell) loop(ctx context.Context) int {
	for {
		s.reportLate()
		if ctx.Err() != nil {
			return 0
		}
		line, err := s.ed.ReadLine(promptFor(s.r.Env))
		if errors.Is(err, errInterrupted) {
			continue
		}
		if err != nil {
			if s.ed.raw {
				return 0 // Ctrl+D: the editor ended the line
			}
			fmt.Fprintln(s.out)
			return 0
		}
		if quit := s.runLine(ctx, line); quit {
			return 0
		}
	}
}

// runLine runs one line; it says whether the shell should end.
func (s *lineShell) runLine(ctx context.Context, line string) bool {
	line = strings.TrimSpace(line)
	if line == "" {
		return false
	}
	redacted := s.r.Tree.Redact(line)
	if s.ed.raw {
		if err := s.history().Add(redacted); err != nil {
			fmt.Fprintln(s.err, "hsmsh: history:", err)
		}
	}
	words, err := commands.Split(line)
	if err != nil {
		s.out.Write(commands.Result{ErrorCode: 1, Data: err.Error()}.JSON())
		return false
	}
	if len(words) == 0 {
		return false
	}
	// A line recalled from the history has **** where its password was:
	// ask for the password again rather than send the mask.
	words = unmask(s.r.Tree, words)
	// A Ctrl+C that came while no command ran is not for this one.
	for drained := false; !drained; {
		select {
		case <-s.interrupts:
		default:
			drained = true
		}
	}
	cctx, cancel := context.WithCancel(ctx)
	done := make(chan commands.Result, 1)
	go func() {
		done <- s.r.Run(cctx, words)
	}()
	var res commands.Result
	select {
	case res = <-done:
		cancel()
	case <-s.interrupts:
		cancel()
		// Say so at once; the command may take a moment to notice.
		s.out.Write(commands.Result{ErrorCode: 1, Data: "cancelled"}.JSON())
		late := make(chan lateResult, 1)
		s.late = late
		go func() { late <- lateResult{line: redacted, res: <-done} }()
		return false
	}
	s.out.Write(res.JSON())
	if res.Quit {
		return true
	}
	fmt.Fprintln(s.err, statusLine(s.r.Env))
	return false
}

// reportLate says so when a cancelled command had already changed the
// cluster: its result came back a success.
func (s *lineShell) reportLate() {
	if s.late == nil {
		return
	}
	select {
	case l := <-s.late:
		s.late = nil
		if l.res.OK() {
			fmt.Fprintf(s.err, "hsmsh: note: the cancelled command %q had already completed:\n", l.line)
			s.out.Write(l.res.JSON())
		}
	default:
	}
}

// unmask drops the value of a secret flag that is the history's mask
// (****), so the shell asks for the secret instead of sending the mask.
func unmask(t *commands.Tree, words []string) []string {
	secret := t.SecretFlags()
	out := make([]string, 0, len(words))
	for i := 0; i < len(words); i++ {
		w := words[i]
		if name, val, ok := strings.Cut(strings.TrimPrefix(w, "--"), "="); strings.HasPrefix(w, "--") && secret[name] {
			if ok && val == "****" {
				continue
			}
			if !ok && i+1 < len(words) && words[i+1] == "****" {
				i++
				continue
			}
		}
		out = append(out, w)
	}
	return out
}

// statusParts sum up the session as the full-screen status bar shows it:
// who is logged in to which cluster (as the prompt says), the durability
// settings in force, and server-side sync.
func statusParts(env *commands.Env) []string {
	who := env.ClusterID() + " · not logged in"
	if user, role, ok := env.Who(); ok {
		who = user + "@" + env.ClusterID() + " · " + role
		// The authenticated session's remaining lifetime (its EKT's).
		if left, ok := env.SessionLeft(context.Background()); ok {
			who += fmt.Sprintf(" · session %s left", left.Truncate(time.Second))
		}
	}
	d := env.Durability()
	check := "off"
	if d.AvailabilityCheck {
		check = "on"
	}
	parts := []string{
		who,
		fmt.Sprintf("min nodes %d · availability check %s · retry %d", d.MinimumNodes, check, d.RetryOnMissingKey),
	}
	if st, ok := env.Sync(); ok {
		switch {
		case st.Paused:
			parts = append(parts, "sync paused")
		case !st.Next.IsZero():
			parts = append(parts, fmt.Sprintf("sync in %.0fs", max(time.Until(st.Next).Seconds(), 0)))
		}
	}
	return parts
}

// statusLine is line mode's status after each command: the full-screen
// status bar's text.
func statusLine(env *commands.Env) string {
	return "[" + strings.Join(statusParts(env), " │ ") + "]"
}
