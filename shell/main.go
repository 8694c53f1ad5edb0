// Package shell is hsmsh's front end: it reads the command line, sets up
// the configuration and the cluster, and runs commands in one of the modes
// a user asks for (single command, batch file, interactive).
package shell

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"

	"golang.org/x/term"

	"github.com/hsmsh/hsmsh/bench"
	"github.com/hsmsh/hsmsh/commands"
	"github.com/hsmsh/hsmsh/config"
)

// Version is hsmsh's version (commands.Version, which cluster hsm-info
// also reports as the HSMs' firmware).
const Version = commands.Version

const usage = `hsmsh — an HSM administration shell in the style of AWS CloudHSM CLI

Usage:
  hsmsh [global flags]                     interactive on a terminal; otherwise commands from stdin
  hsmsh [global flags] interactive         interactive line mode
  hsmsh [global flags] batch FILE|-  [--keep-going] [--events]
  hsmsh [global flags] COMMAND...          run one command (credentials from HSMSH_ROLE and HSMSH_PIN=user:password, or CLOUDHSM_ROLE and CLOUDHSM_PIN)
  hsmsh [global flags] serve --config FILE --id ID [--data-dir DIR] [--restore BACKUP]   one HSM server of a remote cluster
  hsmsh [global flags] bench --op OP [--hsms N[,N...]] [--duration D] [--concurrency C] [--json] ...   measure one operation (hsmsh bench --help)
  hsmsh [global flags] demo [NAME|FILE.hsm] [--auto DELAY]   play a teaching demo on a fresh in-memory cluster:
                                           step by step in the full-screen shell on a terminal, else as a transcript; no NAME lists them
  hsmsh quorum approve --token FILE --key KEY.pem --username U          sign a quorum token offline (no login)
  hsmsh pki init --dir DIR [--key-type ecdsa-p256|ecdsa-p384|rsa-2048|rsa-3072] [--cluster-id ID] [--host NAME...]
  hsmsh [global flags] configure [--disable-key-availability-check | --enable-key-availability-check]
                                 [--create-object-minimum-nodes N] [-a HOST:PORT...]
                                 [--hsm-ca-cert F] [--client-cert-file F --client-key-file F]

Global flags:
  --config FILE     the config file (default $HSMSH_CONFIG, then the user config dir's hsmsh/hsmsh.toml)
  --data-dir DIR    where HSM stores live: the embedded cluster's, a server's (default $XDG_DATA_HOME/hsmsh)
  --ephemeral       keep the embedded cluster in memory only: nothing is written
  --theme NAME      the colour theme of the interactive shell
  --no-color        no colours (NO_COLOR is honoured too)
  --help, --version

Run "hsmsh help" for the command list, "hsmsh help key list" for one command,
"hsmsh MODE --help" (or "hsmsh help MODE") for a mode: batch, interactive, demo,
configure, serve, pki, bench.
`

// globals are the flags that come before the mode or command.
type globals struct {
	configPath string
	dataDir    string
	ephemeral  bool
	theme      string
	noColor    bool
}

func parseGlobals(args []string) (globals, []string, error) {
	var g globals
	for len(args) > 0 {
		a := args[0]
		name, val, hasVal := strings.Cut(a, "=")
		takeValue := func() (string, error) {
			if hasVal {
				return val, nil
			}
			if len(args) < 2 {
				return "", fmt.Errorf("%s needs a value", name)
			}
			args = args[1:]
			return args[0], nil
		}
		var err error
		switch name {
		case "--config":
			g.configPath, err = takeValue()
		case "--data-dir":
			g.dataDir, err = takeValue()
		case "--theme":
			g.theme, err = takeValue()
		case "--ephemeral":
			g.ephemeral = true
		case "--no-color":
			g.noColor = true
		default:
			return g, args, nil
		}
		if err != nil {
			return g, nil, err
		}
		args = args[1:]
	}
	return g, args, nil
}

// Main runs hsmsh with the given arguments (without the program name) and
// returns the exit status.
func Main(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	g, rest, err := parseGlobals(args)
	if err != nil {
		fmt.Fprintf(stderr, "hsmsh: %v\n%s", err, usage)
		return 2
	}
	if modeHelp(rest, stdout) {
		return 0
	}
	if len(rest) > 0 {
		switch rest[0] {
		case "--help", "-h":
			fmt.Fprint(stdout, usage)
			return 0
		case "--version", "version":
			fmt.Fprintf(stdout, "hsmsh %s\n", Version)
			return 0
		case "configure":
			return configure(g, rest[1:], stdout, stderr)
		case "pki":
			return pkiCommand(rest[1:], stdout, stderr)
		case "quorum":
			if code := approveCommand(rest[1:], stdout, stderr); code >= 0 {
				return code
			}
		case "serve":
			return serveCommand(g, rest[1:], stdout, stderr)
		case "bench":
			return bench.Main(rest[1:], stdout, stderr, bench.Options{ConfigPath: g.configPath, DataDir: g.dataDir, Ephemeral: g.ephemeral})
		case "demo":
			return demoCommand(g, rest[1:], stdin, stdout, stderr)
		}
		if strings.HasPrefix(rest[0], "--") {
			fmt.Fprintf(stderr, "hsmsh: unknown global flag %s\n%s", rest[0], usage)
			return 2
		}
	}

	// Line mode handles Ctrl+C itself, one command at a time: a SIGINT
	// there cancels the running command only, and must not cancel the
	// context every later command runs under.
	sigs := []os.Signal{os.Interrupt, syscall.SIGTERM}
	if lineMode(rest, isTerminal(stdin) && isTerminal(stdout)) {
		sigs = []os.Signal{syscall.SIGTERM}
	}
	ctx, stop := signal.NotifyContext(context.Background(), sigs...)
	defer stop()

	cfg, err := loadConfig(g)
	if err != nil {
		fmt.Fprintf(stderr, "hsmsh: %v\n", err)
		return 1
	}
	dataDir, err := dataDir(g)
	if err != nil {
		fmt.Fprintf(stderr, "hsmsh: %v\n", err)
		return 1
	}
	env, err := commands.Open(cfg, dataDir)
	if err != nil {
		fmt.Fprintf(stderr, "hsmsh: %v\n", err)
		return 1
	}
	defer func() {
		if err := env.Close(context.Background()); err != nil {
			fmt.Fprintf(stderr, "hsmsh: close: %v\n", err)
		}
	}()
	runner := commands.NewRunner(env)

	stdinTTY := isTerminal(stdin)
	if stdinTTY {
		env.ReadPassword = readPassword(stdin, stderr)
	}
	terminal := stdinTTY && isTerminal(stdout)
	switch {
	case len(rest) == 0 && terminal:
		return fullScreen(ctx, env, runner, g, dataDir, stdin, stdout, stderr)
	case len(rest) == 0:
		return batch(ctx, runner, "-", stdin, stdout, stderr, false)
	case rest[0] == "interactive":
		line := false
		for _, a := range rest[1:] {
			if a != "--line" {
				fmt.Fprintf(stderr, "hsmsh: interactive: unknown flag %q; usage: hsmsh interactive [--line]\n", a)
				return 2
			}
			line = true
		}
		if line || !terminal {
			return lineLoop(ctx, runner, dataDir, stdin, stdout, stderr)
		}
		return fullScreen(ctx, env, runner, g, dataDir, stdin, stdout, stderr)
	case rest[0] == "batch":
		return batchCommand(ctx, runner, rest[1:], stdin, stdout, stderr)
	}
	if msg := transientLab(env, rest); msg != "" {
		stdout.Write(commands.Result{ErrorCode: 1, Data: msg}.JSON())
		fmt.Fprintln(stderr, "hsmsh: "+msg)
		return 1
	}
	return single(ctx, runner, rest, stdout, stderr)
}

// transientLab refuses, in single-command mode on the embedded cluster, a
// lab command whose effect lives in this process only (an HSM failed,
// restarted or slowed, sync paused, a cleanup set to fail): the process
// ends with the command, and so would the state it reported. Lab commands
// that leave their mark on disk (sync now, hsm fail --destroy, hsm
// remove) and those on a remote cluster's servers still run.
func transientLab(env *commands.Env, words []string) string {
	if len(words) < 2 || words[0] != "lab" || env.Config.Cluster.Mode == "remote" || flagValue(words, "--cluster-id") != "" {
		return ""
	}
	var names []string // the command path: the words before the flags
	for _, w := range words[1:] {
		if strings.HasPrefix(w, "-") || len(names) == 2 {
			break
		}
		names = append(names, w)
	}
	path := strings.Join(names, " ")
	switch {
	case path == "hsm fail" && !slices.Contains(words, "--destroy"),
		path == "hsm recover", path == "hsm restart", path == "hsm add",
		path == "sync pause", path == "sync resume",
		strings.HasPrefix(path, "latency"), strings.HasPrefix(path, "cleanup"):
		return fmt.Sprintf("lab %s changes the embedded cluster of this process only, which ends with this command: run it in the shell (hsmsh), with hsmsh interactive --line, or in a batch file", path)
	}
	return ""
}

func loadConfig(g globals) (*config.Config, error) {
	path, mustExist := g.configPath, g.configPath != ""
	if path == "" {
		mustExist = os.Getenv("HSMSH_CONFIG") != ""
		path = config.DefaultPath(os.Getenv)
	}
	cfg, err := config.Load(path, mustExist, os.Getenv)
	if err != nil {
		return nil, err
	}
	if g.theme != "" {
		if err := cfg.Set("ui.theme", g.theme, config.SourceFlag); err != nil {
			return nil, err
		}
	}
	return cfg, nil
}

// dataDir is where the embedded cluster's stores live: --data-dir, else
// HSMSH_DATA_DIR, else the user's data folder; "" with --ephemeral.
func dataDir(g globals) (string, error) {
	if g.ephemeral {
		if g.dataDir != "" {
			return "", errors.New("--ephemeral and --data-dir exclude each other: choose one")
		}
		return "", nil
	}
	if g.dataDir != "" {
		return filepath.Abs(g.dataDir)
	}
	if d := os.Getenv("HSMSH_DATA_DIR"); d != "" {
		return filepath.Abs(d)
	}
	if d := os.Getenv("XDG_DATA_HOME"); d != "" {
		return filepath.Join(d, "hsmsh"), nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("no data folder: set --data-dir or HSMSH_DATA_DIR, or use --ephemeral (%w)", err)
	}
	return filepath.Join(home, ".local", "share", "hsmsh"), nil
}

func isTerminal(f any) bool {
	if f, ok := f.(*os.File); ok {
		return term.IsTerminal(int(f.Fd()))
	}
	return false
}

// readPassword asks on the terminal without echo.
func readPassword(stdin io.Reader, stderr io.Writer) func(string) (string, error) {
	return func(prompt string) (string, error) {
		f := stdin.(*os.File)
		if prompt == "" {
			prompt = "Password: "
		}
		fmt.Fprint(stderr, prompt)
		b, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(stderr)
		if err != nil {
			return "", fmt.Errorf("read password: %w", err)
		}
		return string(b), nil
	}
}

// single runs one command, logging in first from HSMSH_ROLE and HSMSH_PIN
// as CloudHSM CLI does with CLOUDHSM_ROLE and CLOUDHSM_PIN: on the cluster
// the command names (--cluster-id, or --source-cluster-id for replicate),
// and, for replicate, on the destination from DESTINATION_HSMSH_ROLE and
// DESTINATION_HSMSH_PIN.
func single(ctx context.Context, r *commands.Runner, words []string, stdout, stderr io.Writer) int {
	fail := func(msg string) int {
		stdout.Write(commands.Result{ErrorCode: 1, Data: msg}.JSON())
		fmt.Fprintln(stderr, "hsmsh: "+msg)
		return 1
	}
	if words[0] != "login" {
		cluster := flagValue(words, "--cluster-id")
		if src := flagValue(words, "--source-cluster-id"); src != "" {
			cluster = src
		}
		logins := [][2]string{{"HSMSH", cluster}}
		if dst := flagValue(words, "--destination-cluster-id"); dst != "" {
			logins = append(logins, [2]string{"DESTINATION_HSMSH", dst})
		}
		for _, l := range logins {
			res, msg := r.LoginFromEnv(ctx, os.Getenv, l[0] == "DESTINATION_HSMSH", l[1])
			if res != nil { // the login's own answer says why
				stdout.Write(res.JSON())
				fmt.Fprintln(stderr, "hsmsh: "+msg)
				return 1
			}
			if msg != "" {
				return fail(msg)
			}
		}
	}
	res := r.Run(ctx, words)
	if msg, ok := res.Data.(string); ok && !res.OK() {
		// Each run logs in anew: "run login" would be of no use here.
		res.Data = strings.Replace(msg, notLoggedInAdvice, singleLoginAdvice, 1)
	}
	stdout.Write(res.JSON())
	if !res.OK() {
		return 1
	}
	return 0
}

// The advice of ErrNotLoggedIn, and what single-command mode says instead.
const (
	notLoggedInAdvice = "run login --username U --role R first"
	singleLoginAdvice = "set HSMSH_ROLE and HSMSH_PIN=username:password (or CLOUDHSM_ROLE and CLOUDHSM_PIN): single-command mode logs in anew for each command"
)

// flagValue is the value of --name in words ("--name V" or "--name=V").
func flagValue(words []string, name string) string {
	for i, w := range words {
		if w == name && i+1 < len(words) {
			return words[i+1]
		}
		if v, ok := strings.CutPrefix(w, name+"="); ok {
			return v
		}
	}
	return ""
}

func batchCommand(ctx context.Context, r *commands.Runner, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	keepGoing, events := false, false
	var file string
	for _, a := range args {
		switch {
		case a == "--keep-going":
			keepGoing = true
		case a == "--events":
			events = true
		case file == "" && (a == "-" || !strings.HasPrefix(a, "--")):
			file = a
		default:
			fmt.Fprintf(stderr, "hsmsh: batch: unexpected %q; usage: hsmsh batch FILE|- [--keep-going] [--events]\n", a)
			return 2
		}
	}
	if file == "" {
		fmt.Fprintln(stderr, "hsmsh: batch needs a file (or - for stdin); usage: hsmsh batch FILE|- [--keep-going]")
		return 2
	}
	in := stdin
	if file != "-" {
		f, err := os.Open(file)
		if err != nil {
			fmt.Fprintf(stderr, "hsmsh: batch: %v\n", err)
			return 1
		}
		defer f.Close()
		in = f
	}
	if events {
		// Events go to stderr as JSON lines, beside the diagnostics, so
		// stdout keeps only the command results.
		w := &lockedWriter{w: stderr}
		stderr = w
		ch, cancel := r.Env.Subscribe(4096)
		done := make(chan struct{})
		go func() {
			defer close(done)
			for ev := range ch {
				b, _ := json.Marshal(ev)
				w.Write(append(b, '\n'))
			}
		}()
		defer func() { cancel(); <-done }()
	}
	return batch(ctx, r, file, in, stdout, stderr, keepGoing)
}

// lockedWriter serialises writes from the event follower and the batch.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// maxLine bounds one line of a batch file.
const maxLine = 1 << 20

// batch runs a file's commands in order in one session. It stops at the
// first failure, naming FILE:LINE, unless keepGoing.
func batch(ctx context.Context, r *commands.Runner, name string, in io.Reader, stdout, stderr io.Writer, keepGoing bool) int {
	if name == "-" {
		name = "stdin"
	}
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 64<<10), maxLine)
	status, lineNo := 0, 0
	for {
		line, start, ok := nextLine(sc, &lineNo)
		if !ok {
			break
		}
		if ctx.Err() != nil {
			fmt.Fprintf(stderr, "%s:%d: interrupted; the commands before this line have run\n", name, start)
			return 1
		}
		// A line starting with "! " is expected to fail, as in testscript:
		// demos show errors without stopping.
		expectFail := false
		if t := strings.TrimLeft(line, " \t"); strings.HasPrefix(t, "! ") {
			expectFail, line = true, t[2:]
		}
		res, ran := r.RunLine(ctx, line)
		if !ran {
			continue
		}
		stdout.Write(res.JSON())
		if res.Quit {
			break
		}
		var problem string
		switch {
		case expectFail && res.OK():
			problem = "expected this command to fail (the line starts with !), but it succeeded"
		case !expectFail && !res.OK():
			problem = fmt.Sprint(res.Data)
		}
		if problem != "" {
			status = 1
			fmt.Fprintf(stderr, "%s:%d: %s\n", name, start, problem)
			if !keepGoing {
				return 1
			}
		}
	}
	if err := sc.Err(); err != nil {
		fmt.Fprintf(stderr, "%s:%d: %v\n", name, lineNo+1, err)
		return 1
	}
	return status
}

// nextLine reads one logical line: a physical line ending in an odd
// number of backslashes (an unescaped one) continues on the next, as in a
// shell; a comment line never continues. It returns the number of the
// first line.
func nextLine(sc *bufio.Scanner, lineNo *int) (string, int, bool) {
	var b strings.Builder
	start := 0
	for sc.Scan() {
		*lineNo++
		if start == 0 {
			start = *lineNo
		}
		t := sc.Text()
		trailing := len(t) - len(strings.TrimRight(t, "\\"))
		// Whether the line ends in a comment depends on the quotes the
		// lines before it opened, so the logical line so far is read.
		if !endsInComment(b.String()+t) && trailing%2 == 1 {
			b.WriteString(t[:len(t)-1])
			b.WriteByte(' ')
			continue
		}
		b.WriteString(t)
		return b.String(), start, true
	}
	if start != 0 {
		return b.String(), start, true
	}
	return "", 0, false
}

// endsInComment says whether a line ends inside a # comment: a # that
// starts a word outside quotes, as the shell's word splitting reads it. A
// backslash there is part of the comment, not a continuation.
func endsInComment(line string) bool {
	var quote rune
	atWordStart := true
	rs := []rune(line)
	for i := 0; i < len(rs); i++ {
		c := rs[i]
		switch {
		case quote != 0:
			if c == quote {
				quote = 0
			} else if quote == '"' && c == '\\' {
				i++
			}
			atWordStart = false
		case c == '\\':
			i++
			atWordStart = false
		case c == '\'' || c == '"':
			quote = c
			atWordStart = false
		case c == ' ' || c == '\t' || c == '\r' || c == '\n': // as commands.Split separates words
			atWordStart = true
		case c == '#' && atWordStart:
			return true
		default:
			atWordStart = false
		}
	}
	return false
}

// promptFor is the REPL's prompt: who is logged in to which cluster, as
// CloudHSM CLI shows it with several clusters.
func promptFor(env *commands.Env) string {
	if user, _, ok := env.Who(); ok {
		return fmt.Sprintf("hsmsh [%s@%s] > ", user, env.ClusterID())
	}
	if ids := env.ClusterIDs(); len(ids) > 1 {
		return fmt.Sprintf("hsmsh [%s] > ", env.ClusterID())
	}
	return "hsmsh > "
}

// lineMode says whether the command line asks for line mode: hsmsh
// interactive --line, or interactive without a terminal.
func lineMode(rest []string, terminal bool) bool {
	if len(rest) == 0 || rest[0] != "interactive" {
		return false
	}
	for _, a := range rest[1:] {
		if a == "--line" {
			return true
		}
	}
	return !terminal
}
