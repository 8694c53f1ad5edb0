// Package bench is hsmsh bench: it measures one operation (an ECDSA
// signature, a durable token key, a lookup by label, a login) on a fresh
// cluster of its own, through the command layer with the words a user
// types, and prints ops/s and latency percentiles beside the raw Go
// crypto baseline for the same operation at the same concurrency, and the
// ratio of the two.
//
// It is a tool for people measuring hsmsh, never a timed test: the
// figures in BENCHMARKS.md come from it and from bench/softhsm, which runs
// the same operations against SoftHSM2 for a side-by-side comparison.
//
// The shell hands it the arguments after "bench" and the global flags
// given before (Options); bench builds its cluster from its own flags —
// embedded in this process, or with --remote as HSM servers on loopback
// TCP — and reads no configuration file.
package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"golang.org/x/term"

	"github.com/hsmsh/hsmsh/commands"
	"github.com/hsmsh/hsmsh/config"
)

// Usage is bench's usage, for hsmsh bench --help and hsmsh help bench.
const Usage = `usage: hsmsh bench --op OP [--hsms N[,N...]] [--duration D] [--concurrency C] [--transport direct|tls | --remote]
                   [--profile none|hsm1.medium|hsm2m.medium] [--data-dir DIR | --ephemeral] [--json] [--cpuprofile FILE]
                   [--no-baseline]
ops: ecdsa-p256-sign, ecdsa-p384-sign, rsa2048-sign, aes-token-gen, ec-token-gen, key-list-10k, login
defaults: --hsms 3, --duration 5s (1s to 10m), --concurrency 1 (1 to 256), --transport direct (in-process calls, hsmsh's default), --profile none, in memory
--remote runs the cluster as hsmsh servers on loopback TCP in this process (nested TLS, a throwaway PKI)
also the raw Go crypto baseline for the op at the same concurrency (half before hsmsh's run, half after) and the ratio:
  ecdsa-p256-sign, ecdsa-p384-sign: crypto/ecdsa SignASN1 of the SHA-256 (SHA-384) digest of the same 64 bytes
  rsa2048-sign: crypto/rsa SignPKCS1v15 of the SHA-256 digest; ec-token-gen: crypto/ecdsa P-256 GenerateKey
  aes-token-gen, key-list-10k, login: n/a (no one primitive they could be held against); --no-baseline skips it`

// Options are the global flags hsmsh was given before "bench".
type Options struct {
	ConfigPath string // --config: refused, bench builds its own cluster
	DataDir    string // --data-dir before bench; bench's own flag wins
	Ephemeral  bool   // --ephemeral
}

// The benchmark's operations. Every op goes through the command runner
// with the words a user types; see prepare for what each one runs.
var opNames = []string{"ecdsa-p256-sign", "ecdsa-p384-sign", "rsa2048-sign", "aes-token-gen", "ec-token-gen", "key-list-10k", "login"}

// unavailableOps are ops that were asked for but that hsmsh has no command
// for yet: they are refused rather than measured on something else.
var unavailableOps = map[string]string{
	"aes-gcm-1k": "op aes-gcm-1k: hsmsh has no AES-GCM encrypt command yet",
}

var profiles = []string{"none", "hsm1.medium", "hsm2m.medium"}

const (
	minDuration    = time.Second
	maxDuration    = 10 * time.Minute
	maxConcurrency = 256
	maxHSMs        = 32
	// listKeys is how many keys key-list-10k's setup creates, and
	// setupWorkers how many run the creation at once.
	listKeys     = 10000
	setupWorkers = 8
	// tick is how often the progress line is rewritten.
	tick = 250 * time.Millisecond
)

// The benchmark's own users, in its own cluster.
const (
	adminPassword = "benchadmin1"
	userName      = "bench"
	userPassword  = "benchuser1"
)

// options are bench's flags.
type options struct {
	op          string
	hsms        []int
	duration    time.Duration
	concurrency int
	transport   string // "direct", "tls"; "remote" with --remote
	profile     string
	dataDir     string // "" keeps the cluster in memory
	json        bool
	cpuprofile  string
	noBaseline  bool
	help        bool
}

// usageError is a problem with bench's command line (exit status 2).
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, a ...any) error { return usageError{fmt.Sprintf(format, a...)} }

// parseArgs reads bench's flags; g holds the global flags given before
// bench. Every error it returns is a usageError.
func parseArgs(g Options, args []string) (options, error) {
	o := options{hsms: []int{3}, duration: 5 * time.Second, concurrency: 1, transport: "direct", profile: "none"}
	if g.ConfigPath != "" {
		return o, usagef("bench reads no config file (it builds its own cluster from its flags): leave out --config")
	}
	dataDir, ephemeral := g.DataDir, g.Ephemeral
	var transportGiven, remote bool
	for i := 0; i < len(args); i++ {
		name, val, hasVal := strings.Cut(args[i], "=")
		value := func() (string, error) {
			if hasVal {
				return val, nil
			}
			if i+1 >= len(args) || strings.HasPrefix(args[i+1], "--") {
				return "", usagef("%s needs a value", name)
			}
			i++
			return args[i], nil
		}
		noValue := func() error {
			if hasVal {
				return usagef("%s takes no value", name)
			}
			return nil
		}
		var v string
		var err error
		switch name {
		case "--help", "-h":
			o.help = true
			return o, nil
		case "--op":
			o.op, err = value()
		case "--hsms":
			if v, err = value(); err == nil {
				o.hsms, err = parseHSMCounts(v)
			}
		case "--duration":
			if v, err = value(); err == nil {
				o.duration, err = parseDuration(v)
			}
		case "--concurrency":
			if v, err = value(); err == nil {
				n, cerr := strconv.Atoi(v)
				if cerr != nil || n < 1 || n > maxConcurrency {
					err = usagef("--concurrency %q: a whole number from 1 to %d", v, maxConcurrency)
				}
				o.concurrency = n
			}
		case "--transport":
			transportGiven = true
			if o.transport, err = value(); err == nil && o.transport != "direct" && o.transport != "tls" {
				err = usagef("--transport %q: use direct (in-process calls through each HSM's door, the default) or tls (nested TLS over in-memory pipes)", o.transport)
			}
		case "--remote":
			remote, err = true, noValue()
		case "--profile":
			if o.profile, err = value(); err == nil && !slices.Contains(profiles, o.profile) {
				err = usagef("--profile %q: use one of %s", o.profile, strings.Join(profiles, ", "))
			}
		case "--data-dir":
			dataDir, err = value()
		case "--ephemeral":
			ephemeral, err = true, noValue()
		case "--json":
			o.json, err = true, noValue()
		case "--cpuprofile":
			o.cpuprofile, err = value()
		case "--no-baseline":
			o.noBaseline, err = true, noValue()
		default:
			if strings.HasPrefix(args[i], "-") {
				return o, usagef("unknown flag %q", args[i])
			}
			return o, usagef("unexpected %q: bench takes flags only", args[i])
		}
		if err != nil {
			return o, err
		}
	}
	switch {
	case o.op == "":
		return o, usagef("--op is required: one of %s", strings.Join(opNames, ", "))
	case !slices.Contains(opNames, o.op) && unavailableOps[o.op] == "":
		return o, usagef("unknown op %q: use one of %s", o.op, strings.Join(opNames, ", "))
	case dataDir != "" && ephemeral:
		return o, usagef("--ephemeral and --data-dir exclude each other: choose one")
	case o.cpuprofile != "" && len(o.hsms) > 1:
		return o, usagef("--cpuprofile profiles one run: give one --hsms count with it")
	case remote && transportGiven:
		return o, usagef("--remote and --transport exclude each other: a remote cluster always runs nested TLS over TCP")
	case remote && o.profile != "none":
		return o, usagef("--remote and --profile exclude each other: profiles pace embedded HSMs")
	}
	if remote {
		o.transport = "remote"
	}
	if dataDir != "" {
		abs, err := filepath.Abs(dataDir)
		if err != nil {
			return o, usagef("--data-dir %q: %v", dataDir, err)
		}
		o.dataDir = abs
	}
	return o, nil
}

// parseHSMCounts reads --hsms: one count or several, comma-separated.
func parseHSMCounts(v string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(v, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 || n > maxHSMs {
			return nil, usagef("--hsms %q: HSM counts from 1 to %d, comma-separated (e.g. 3 or 1,2,3)", v, maxHSMs)
		}
		if slices.Contains(out, n) {
			return nil, usagef("--hsms %q names %d twice", v, n)
		}
		// The configuration has the last word on how many HSMs a cluster
		// may have.
		if err := config.Default().Set("cluster.hsms", strconv.Itoa(n), config.SourceFlag); err != nil {
			return nil, usagef("--hsms %d: %v", n, err)
		}
		out = append(out, n)
	}
	return out, nil
}

func parseDuration(v string) (time.Duration, error) {
	d, err := time.ParseDuration(v)
	if err != nil || d < minDuration || d > maxDuration {
		return 0, usagef("--duration %q: a Go duration from %s to %s, e.g. 5s, 1m30s", v, minDuration, "10m")
	}
	return d, nil
}

// summary is one run's figures: one row of the table, one object of the
// JSON output. The baseline fields are null where the op has none.
type summary struct {
	Op          string  `json:"op"`
	OpsPerSec   float64 `json:"ops_per_sec"`
	P50         int64   `json:"p50_us"`
	P99         int64   `json:"p99_us"`
	Max         int64   `json:"max_us"`
	HSMs        int     `json:"hsms"`
	Concurrency int     `json:"concurrency"`
	Transport   string  `json:"transport"`
	Profile     string  `json:"profile"`
	Duration    float64 `json:"duration_s"`
	Ops         int64   `json:"ops"`
	Errors      int64   `json:"errors"`
	// Baseline says what the baseline is ("n/a: why" where there is none),
	// BaselineOpsPerSec its figure in the same run at the same
	// concurrency, and Ratio OpsPerSec over it.
	Baseline          string   `json:"baseline"`
	BaselineOpsPerSec *float64 `json:"baseline_ops_per_sec"`
	Ratio             *float64 `json:"ratio"`
}

// Main is hsmsh bench: it measures one operation on a cluster of its own,
// through the command layer, as a user would run it, and the op's raw
// crypto baseline around it. args are the arguments after "bench"; it returns the
// exit status (2 for a usage error).
func Main(args []string, stdout, stderr io.Writer, g Options) int {
	o, err := parseArgs(g, args)
	if err != nil {
		fmt.Fprintf(stderr, "hsmsh bench: %v\n%s\n", err, Usage)
		return 2
	}
	if o.help {
		fmt.Fprintln(stdout, Usage)
		return 0
	}
	fail := func(err error) int {
		if o.json {
			stdout.Write(commands.Result{ErrorCode: 1, Data: err.Error()}.JSON())
		}
		fmt.Fprintf(stderr, "hsmsh bench: %v\n", err)
		if errors.As(err, new(usageError)) {
			return 2
		}
		return 1
	}
	if msg := unavailableOps[o.op]; msg != "" {
		return fail(errors.New(msg))
	}
	if o.dataDir != "" {
		if err := checkEmptyDir(o.dataDir); err != nil {
			return fail(err)
		}
	}
	var profile *os.File
	if o.cpuprofile != "" {
		if profile, err = os.Create(o.cpuprofile); err != nil {
			return fail(fmt.Errorf("--cpuprofile: %w", err))
		}
		defer profile.Close()
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	var progress io.Writer // nil: no progress line
	if isTerminal(stderr) {
		progress = stderr
	}
	b := baselineFor(o.op, o.profile)
	if o.noBaseline {
		b = baseline{what: "n/a: --no-baseline"}
	}
	// The baseline runs in two halves, one before hsmsh's runs and one
	// after, so that a change in the machine's load during the run (it is
	// often shared) weighs on both figures alike; and while no cluster is
	// open, so that none of a cluster's background work takes its CPU.
	var base baselineRun
	if b.newWorker != nil {
		if err := base.half(ctx, o, b, progress); err != nil {
			return fail(err)
		}
	}
	var out []summary
	for _, n := range o.hsms {
		dir := o.dataDir
		if dir != "" && len(o.hsms) > 1 {
			dir = filepath.Join(dir, fmt.Sprintf("hsms-%d", n))
		}
		s, err := runOne(ctx, o, n, dir, profile, progress, stderr)
		if err != nil {
			return fail(err)
		}
		out = append(out, s)
	}
	if profile != nil {
		if err := profile.Close(); err != nil {
			return fail(fmt.Errorf("--cpuprofile: %w", err))
		}
	}
	var baseOps float64
	if b.newWorker != nil {
		if err := base.half(ctx, o, b, progress); err != nil {
			return fail(err)
		}
		baseOps = base.opsPerSec()
	}
	for i := range out {
		out[i].setBaseline(b.what, baseOps)
	}
	if o.json {
		var data any = out
		if len(out) == 1 {
			data = out[0]
		}
		stdout.Write(commands.Result{Data: data}.JSON())
		return 0
	}
	writeTable(stdout, out)
	return 0
}

// baselineRun adds up the halves of the baseline's run.
type baselineRun struct {
	ops     int
	elapsed time.Duration
}

// half runs the baseline for half of --duration.
func (r *baselineRun) half(ctx context.Context, o options, b baseline, progress io.Writer) error {
	d := o.duration / 2
	if progress != nil && d <= time.Second {
		progress = nil
	}
	m := measurement{duration: d, concurrency: o.concurrency, newWorker: b.newWorker, progress: progress,
		label: fmt.Sprintf(" baseline %s  c=%d", o.op, o.concurrency)}
	lat, _, elapsed, err := m.run(ctx)
	if err != nil {
		return fmt.Errorf("baseline: %w", err)
	}
	r.ops += len(lat)
	r.elapsed += elapsed
	return nil
}

// opsPerSec is the baseline's figure over both halves, rounded as
// hsmsh's are.
func (r *baselineRun) opsPerSec() float64 {
	if r.elapsed <= 0 {
		return 0
	}
	return roundTo(float64(r.ops)/r.elapsed.Seconds(), 1)
}

// setBaseline fills in the baseline fields: what the baseline is and, if
// it was measured (ops > 0), its figure and the ratio.
func (s *summary) setBaseline(what string, ops float64) {
	s.Baseline = what
	if ops <= 0 {
		return
	}
	ratio := roundTo(s.OpsPerSec/ops, 3)
	s.BaselineOpsPerSec, s.Ratio = &ops, &ratio
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// checkEmptyDir refuses a data folder that holds anything: the benchmark
// would run on, and add keys to, the stores already there.
func checkEmptyDir(dir string) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("--data-dir %s: %w", dir, err)
	}
	if len(entries) > 0 {
		return fmt.Errorf("--data-dir %s is not empty: a benchmark needs a new or empty folder (it would otherwise run on, and add keys to, the stores there); leave --data-dir out to run in memory", dir)
	}
	return nil
}

// writeTable prints hsmsh's figures, then, in a table of its own, the
// baseline and the ratio of each row.
func writeTable(w io.Writer, rows []summary) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "op\thsms\tconcurrency\ttransport\tprofile\tops/s\tp50 µs\tp99 µs\tmax µs\tops\terrors")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t%s\t%.1f\t%d\t%d\t%d\t%d\t%d\n",
			r.Op, r.HSMs, r.Concurrency, r.Transport, r.Profile, r.OpsPerSec, r.P50, r.P99, r.Max, r.Ops, r.Errors)
	}
	tw.Flush()
	if len(rows) == 0 {
		return
	}
	fmt.Fprintf(w, "\nbaseline (same run, concurrency %d): %s\n", rows[0].Concurrency, rows[0].Baseline)
	if rows[0].BaselineOpsPerSec == nil {
		return
	}
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "op\thsms\thsmsh ops/s\tbaseline ops/s\thsmsh/baseline")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%d\t%.1f\t%.1f\t%.3f\n", r.Op, r.HSMs, r.OpsPerSec, *r.BaselineOpsPerSec, *r.Ratio)
	}
	tw.Flush()
}

// availabilityCheck says whether the benchmark's cluster of hsms HSMs
// runs with the key availability check: always, except with one HSM,
// where no token key could ever reach the 2 HSMs the check asks for (as
// with CloudHSM, a one-HSM cluster must turn it off).
func availabilityCheck(hsms int) bool { return hsms >= 2 }

// clusterConfig is the configuration of the benchmark's embedded
// cluster: the built-in defaults, with the flags' shape on top.
func clusterConfig(o options, hsms int) (*config.Config, error) {
	cfg := config.Default()
	settings := [][2]string{
		{"cluster.hsms", strconv.Itoa(hsms)},
		{"cluster.transport", o.transport},
		{"durability.key_availability_check", strconv.FormatBool(availabilityCheck(hsms))},
	}
	if o.profile != "none" {
		settings = append(settings, [2]string{"cluster.profile", o.profile})
	}
	for _, s := range settings {
		if err := cfg.Set(s[0], s[1], config.SourceFlag); err != nil {
			if s[0] == "cluster.profile" {
				return nil, fmt.Errorf("--profile %s: this build cannot apply a profile: %w", o.profile, err)
			}
			return nil, err
		}
	}
	return cfg, nil
}

// runOne opens a cluster of hsms HSMs, sets it up for the op and
// measures it.
func runOne(ctx context.Context, o options, hsms int, dir string, profile *os.File, progress, stderr io.Writer) (summary, error) {
	s := summary{Op: o.op, HSMs: hsms, Concurrency: o.concurrency, Transport: o.transport, Profile: o.profile}
	if !availabilityCheck(hsms) {
		fmt.Fprintf(stderr, "hsmsh bench: note: hsms=%d runs without the key availability check: a token key cannot reach 2 HSMs in a one-HSM cluster\n", hsms)
	}
	var env *commands.Env
	if o.transport == "remote" {
		servers, err := startServers(ctx, hsms, dir)
		if err != nil {
			return s, err
		}
		defer servers.stop(stderr)
		if env, err = commands.Open(servers.client, ""); err != nil {
			return s, err
		}
	} else {
		cfg, err := clusterConfig(o, hsms)
		if err != nil {
			return s, err
		}
		if env, err = commands.Open(cfg, dir); err != nil {
			return s, err
		}
	}
	defer func() {
		if err := env.Close(context.Background()); err != nil {
			fmt.Fprintf(stderr, "hsmsh bench: close: %v\n", err)
		}
	}()
	r := commands.NewRunner(env)
	newWorker, err := prepare(ctx, o.op, hsms, r, progress)
	if err != nil {
		return s, err
	}
	if !(progress != nil && o.duration > time.Second) {
		progress = nil
	}
	label := fmt.Sprintf(" %s  hsms=%d c=%d", o.op, hsms, o.concurrency)
	m := measurement{duration: o.duration, concurrency: o.concurrency, newWorker: newWorker, progress: progress, label: label}
	if profile != nil {
		if err := pprof.StartCPUProfile(profile); err != nil {
			return s, fmt.Errorf("--cpuprofile: %w", err)
		}
		// Stopped as soon as the workers are done; the defer covers the
		// paths that never get that far (stopping twice is harmless).
		m.stopped = pprof.StopCPUProfile
		defer pprof.StopCPUProfile()
	}
	lat, errs, elapsed, err := m.run(ctx)
	if err != nil {
		return s, err
	}
	s.Errors = errs
	summarize(&s, lat, elapsed)
	return s, nil
}
