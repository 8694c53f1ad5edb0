package shell

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	mrand "math/rand/v2"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/hsmsh/hsmsh/commands"
	"github.com/hsmsh/hsmsh/config"
)

const benchUsage = `usage: hsmsh bench --op OP [--hsms N[,N...]] [--duration D] [--concurrency C] [--transport direct|tls]
                   [--profile none|hsm1.medium|hsm2m.medium] [--data-dir DIR | --ephemeral] [--json] [--cpuprofile FILE]
ops: ecdsa-p256-sign, ecdsa-p384-sign, rsa2048-sign, aes-token-gen, ec-token-gen, key-list-10k, login
defaults: --hsms 3, --duration 5s (1s to 10m), --concurrency 1 (1 to 256), --transport tls, --profile none, in memory`

// The benchmark's operations. Every op goes through the command runner
// with the words a user types; see prepareBench for what each one runs.
var benchOps = []string{"ecdsa-p256-sign", "ecdsa-p384-sign", "rsa2048-sign", "aes-token-gen", "ec-token-gen", "key-list-10k", "login"}

// unavailableOps are ops that were asked for but that hsmsh has no command
// for yet: they are refused rather than measured on something else.
var unavailableOps = map[string]string{
	"aes-gcm-1k": "op aes-gcm-1k: hsmsh has no AES-GCM encrypt command yet",
}

var benchProfiles = []string{"none", "hsm1.medium", "hsm2m.medium"}

const (
	benchMinDuration    = time.Second
	benchMaxDuration    = 10 * time.Minute
	benchMaxConcurrency = 256
	benchMaxHSMs        = 32
	// benchListKeys is how many keys key-list-10k's setup creates, and
	// benchSetupWorkers how many run the creation at once.
	benchListKeys     = 10000
	benchSetupWorkers = 8
	// benchTick is how often the progress line is rewritten.
	benchTick = 250 * time.Millisecond
)

// The benchmark's own users, in its own cluster.
const (
	benchAdminPassword = "benchadmin1"
	benchUser          = "bench"
	benchUserPassword  = "benchuser1"
)

// benchOpts are bench's flags.
type benchOpts struct {
	op          string
	hsms        []int
	duration    time.Duration
	concurrency int
	transport   string
	profile     string
	dataDir     string // "" keeps the cluster in memory
	json        bool
	cpuprofile  string
	help        bool
}

// usageError is a problem with bench's command line (exit status 2).
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, a ...any) error { return usageError{fmt.Sprintf(format, a...)} }

// parseBenchArgs reads bench's flags; g holds the global flags given
// before the subcommand. Every error it returns is a usageError.
func parseBenchArgs(g globals, args []string) (benchOpts, error) {
	o := benchOpts{hsms: []int{3}, duration: 5 * time.Second, concurrency: 1, transport: "tls", profile: "none"}
	if g.configPath != "" {
		return o, usagef("bench reads no config file (it builds its own cluster from its flags): leave out --config")
	}
	dataDir, ephemeral := g.dataDir, g.ephemeral
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
				o.duration, err = parseBenchDuration(v)
			}
		case "--concurrency":
			if v, err = value(); err == nil {
				n, cerr := strconv.Atoi(v)
				if cerr != nil || n < 1 || n > benchMaxConcurrency {
					err = usagef("--concurrency %q: a whole number from 1 to %d", v, benchMaxConcurrency)
				}
				o.concurrency = n
			}
		case "--transport":
			if o.transport, err = value(); err == nil && o.transport != "direct" && o.transport != "tls" {
				err = usagef("--transport %q: use direct (plain calls to the in-process HSMs) or tls (nested TLS over in-memory pipes)", o.transport)
			}
		case "--profile":
			if o.profile, err = value(); err == nil && !slices.Contains(benchProfiles, o.profile) {
				err = usagef("--profile %q: use one of %s", o.profile, strings.Join(benchProfiles, ", "))
			}
		case "--data-dir":
			dataDir, err = value()
		case "--ephemeral":
			ephemeral, err = true, noValue()
		case "--json":
			o.json, err = true, noValue()
		case "--cpuprofile":
			o.cpuprofile, err = value()
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
		return o, usagef("--op is required: one of %s", strings.Join(benchOps, ", "))
	case !slices.Contains(benchOps, o.op) && unavailableOps[o.op] == "":
		return o, usagef("unknown op %q: use one of %s", o.op, strings.Join(benchOps, ", "))
	case dataDir != "" && ephemeral:
		return o, usagef("--ephemeral and --data-dir exclude each other: choose one")
	case o.cpuprofile != "" && len(o.hsms) > 1:
		return o, usagef("--cpuprofile profiles one run: give one --hsms count with it")
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
		if err != nil || n < 1 || n > benchMaxHSMs {
			return nil, usagef("--hsms %q: HSM counts from 1 to %d, comma-separated (e.g. 3 or 1,2,3)", v, benchMaxHSMs)
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

func parseBenchDuration(v string) (time.Duration, error) {
	d, err := time.ParseDuration(v)
	if err != nil || d < benchMinDuration || d > benchMaxDuration {
		return 0, usagef("--duration %q: a Go duration from %s to %s, e.g. 5s, 1m30s", v, benchMinDuration, "10m")
	}
	return d, nil
}

// benchSummary is one run's figures: one row of the table, one object of
// the JSON output.
type benchSummary struct {
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
}

// percentile is the nearest-rank p-th percentile (0 < p <= 100) of
// sorted latencies: the smallest value that at least p% of them do not
// exceed. It is 0 for no latencies.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(p / 100 * float64(len(sorted))))
	return sorted[min(max(rank, 1), len(sorted))-1]
}

// summarize sorts the latencies of the ops that succeeded and fills in
// the figures: ops/s is those ops over the elapsed time.
func summarize(s *benchSummary, lat []time.Duration, elapsed time.Duration) {
	slices.Sort(lat)
	s.Ops = int64(len(lat))
	if elapsed > 0 {
		s.OpsPerSec = math.Round(float64(len(lat))/elapsed.Seconds()*10) / 10
	}
	s.Duration = math.Round(elapsed.Seconds()*1000) / 1000
	us := func(d time.Duration) int64 { return d.Round(time.Microsecond).Microseconds() }
	s.P50, s.P99 = us(percentile(lat, 50)), us(percentile(lat, 99))
	if len(lat) > 0 {
		s.Max = us(lat[len(lat)-1])
	}
}

// benchCommand is hsmsh bench: it measures one operation on a cluster of
// its own, through the command layer, as a user would run it.
func benchCommand(g globals, args []string, stdout, stderr io.Writer) int {
	o, err := parseBenchArgs(g, args)
	if err != nil {
		fmt.Fprintf(stderr, "hsmsh bench: %v\n%s\n", err, benchUsage)
		return 2
	}
	if o.help {
		fmt.Fprintln(stdout, benchUsage)
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
	var out []benchSummary
	for _, n := range o.hsms {
		dir := o.dataDir
		if dir != "" && len(o.hsms) > 1 {
			dir = filepath.Join(dir, fmt.Sprintf("hsms-%d", n))
		}
		s, err := benchOne(ctx, o, n, dir, profile, progress, stderr)
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
	if o.json {
		var data any = out
		if len(out) == 1 {
			data = out[0]
		}
		stdout.Write(commands.Result{Data: data}.JSON())
		return 0
	}
	writeBenchTable(stdout, out)
	return 0
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

func writeBenchTable(w io.Writer, rows []benchSummary) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "op\thsms\tconcurrency\ttransport\tprofile\tops/s\tp50 µs\tp99 µs\tmax µs\tops\terrors")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t%s\t%.1f\t%d\t%d\t%d\t%d\t%d\n",
			r.Op, r.HSMs, r.Concurrency, r.Transport, r.Profile, r.OpsPerSec, r.P50, r.P99, r.Max, r.Ops, r.Errors)
	}
	tw.Flush()
}

// availabilityCheck says whether the benchmark's cluster of hsms HSMs
// runs with the key availability check: always, except with one HSM,
// where no token key could ever reach the 2 HSMs the check asks for (as
// with CloudHSM, a one-HSM cluster must turn it off).
func availabilityCheck(hsms int) bool { return hsms >= 2 }

// benchConfig is the configuration of the benchmark's cluster: the
// built-in defaults, with the flags' shape on top.
func benchConfig(o benchOpts, hsms int) (*config.Config, error) {
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

// benchOne opens a cluster of hsms HSMs, sets it up for the op and
// measures it.
func benchOne(ctx context.Context, o benchOpts, hsms int, dir string, profile *os.File, progress, stderr io.Writer) (benchSummary, error) {
	s := benchSummary{Op: o.op, HSMs: hsms, Concurrency: o.concurrency, Transport: o.transport, Profile: o.profile}
	cfg, err := benchConfig(o, hsms)
	if err != nil {
		return s, err
	}
	if !availabilityCheck(hsms) {
		fmt.Fprintf(stderr, "hsmsh bench: note: hsms=%d runs without the key availability check: a token key cannot reach 2 HSMs in a one-HSM cluster\n", hsms)
	}
	env, err := commands.Open(cfg, dir)
	if err != nil {
		return s, err
	}
	defer func() {
		if err := env.Close(context.Background()); err != nil {
			fmt.Fprintf(stderr, "hsmsh bench: close: %v\n", err)
		}
	}()
	r := commands.NewRunner(env)
	newWorker, err := prepareBench(ctx, o.op, hsms, r, progress)
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

// benchOp runs one op and gives its result; an op of several commands
// gives the first that failed, or the last.
type benchOp func(ctx context.Context) commands.Result

// newBenchWorker makes worker i's op, and what releases the worker.
type newBenchWorker func(i int) (benchOp, func(), error)

// runLines runs setup command lines, stopping at the first that fails.
func runLines(ctx context.Context, r *commands.Runner, what string, lines ...string) (commands.Result, error) {
	var res commands.Result
	for _, line := range lines {
		res, _ = r.RunLine(ctx, line)
		if !res.OK() {
			return res, fmt.Errorf("setup: %s: %v", what, res.Data)
		}
	}
	return res, nil
}

// prepareBench sets the cluster up for op through the runner — activate,
// a crypto user, the keys the op needs — and returns how to make the
// workers' ops. Every op is a command line a user could type.
func prepareBench(ctx context.Context, op string, hsms int, r *commands.Runner, progress io.Writer) (newBenchWorker, error) {
	if _, err := runLines(ctx, r, "activate the cluster and create the crypto user "+benchUser,
		"cluster activate --password "+benchAdminPassword,
		"login --username admin --role admin --password "+benchAdminPassword,
		"user create --username "+benchUser+" --role crypto-user --password "+benchUserPassword,
		"logout",
		"login --username "+benchUser+" --role crypto-user --password "+benchUserPassword,
	); err != nil {
		return nil, err
	}
	// same gives every worker its own copy of one command's words.
	same := func(words ...string) newBenchWorker {
		return func(int) (benchOp, func(), error) {
			w := slices.Clone(words)
			return func(ctx context.Context) commands.Result { return r.Run(ctx, w) }, func() {}, nil
		}
	}
	sign := func(genLine, mech, hash string) (newBenchWorker, error) {
		res, err := runLines(ctx, r, "generate the signing key", genLine)
		if err != nil {
			return nil, err
		}
		ref, err := resultString(res, "private_key", "key-reference")
		if err != nil {
			return nil, fmt.Errorf("setup: %w", err)
		}
		data := make([]byte, 64)
		rand.Read(data)
		return same("crypto", "sign", mech, "--key-filter", "key-reference="+ref, "--hash-function", hash,
			"--data", base64.StdEncoding.EncodeToString(data)), nil
	}
	switch op {
	case "ecdsa-p256-sign":
		return sign("key generate-asymmetric-pair ec --curve secp256r1 --public-label bench-p256-pub --private-label bench-p256", "ecdsa", "sha256")
	case "ecdsa-p384-sign":
		return sign("key generate-asymmetric-pair ec --curve secp384r1 --public-label bench-p384-pub --private-label bench-p384", "ecdsa", "sha384")
	case "rsa2048-sign":
		return sign("key generate-asymmetric-pair rsa --modulus-size-bits 2048 --public-exponent 65537 --public-label bench-rsa-pub --private-label bench-rsa", "rsa-pkcs", "sha256")
	case "aes-token-gen":
		return counted(r, func(w, n int) []string {
			return []string{"key", "generate-symmetric", "aes", "--label", fmt.Sprintf("bench-aes-w%d-%d", w, n), "--key-length-bytes", "32"}
		}), nil
	case "ec-token-gen":
		return counted(r, func(w, n int) []string {
			return []string{"key", "generate-asymmetric-pair", "ec", "--curve", "secp256r1",
				"--public-label", fmt.Sprintf("bench-ec-w%d-%d-pub", w, n), "--private-label", fmt.Sprintf("bench-ec-w%d-%d", w, n)}
		}), nil
	case "key-list-10k":
		if err := createListKeys(ctx, r, hsms, progress); err != nil {
			return nil, err
		}
		return func(int) (benchOp, func(), error) {
			return func(ctx context.Context) commands.Result {
				return r.Run(ctx, []string{"key", "list", "--filter", "attr.label=" + listLabel(mrand.IntN(benchListKeys)), "--verbose"})
			}, func() {}, nil
		}, nil
	case "login":
		// Each worker logs in and out on a login session of its own: the
		// shell's Env holds one login per cluster.
		login := []string{"login", "--username", benchUser, "--role", "crypto-user", "--password", benchUserPassword}
		return func(int) (benchOp, func(), error) {
			own, release := r.Env.WithOwnSession()
			wr := commands.NewRunner(own)
			run := func(ctx context.Context) commands.Result {
				if res := wr.Run(ctx, login); !res.OK() {
					return res
				}
				return wr.Run(ctx, []string{"logout"})
			}
			return run, func() { release(context.Background()) }, nil
		}, nil
	}
	return nil, fmt.Errorf("op %q has no setup", op)
}

// counted gives each worker ops whose words depend on the worker and a
// count of its ops (unique labels).
func counted(r *commands.Runner, words func(w, n int) []string) newBenchWorker {
	return func(w int) (benchOp, func(), error) {
		n := 0
		return func(ctx context.Context) commands.Result {
			n++
			return r.Run(ctx, words(w, n))
		}, func() {}, nil
	}
}

func listLabel(i int) string { return fmt.Sprintf("bench-list-%05d", i) }

// createListKeys makes key-list-10k's keys through the runner, several at
// a time, then checks that a listing by label finds exactly one.
func createListKeys(ctx context.Context, r *commands.Runner, hsms int, progress io.Writer) error {
	var next, done atomic.Int64
	var once sync.Once
	var firstErr error
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stopProgress := startProgress(progress, func() string {
		return fmt.Sprintf(" setup key-list-10k  hsms=%d  %d/%d keys", hsms, done.Load(), benchListKeys)
	})
	var wg sync.WaitGroup
	for range benchSetupWorkers {
		wg.Go(func() {
			for {
				i := next.Add(1) - 1
				if i >= benchListKeys || ctx.Err() != nil {
					return
				}
				res := r.Run(ctx, []string{"key", "generate-symmetric", "aes", "--label", listLabel(int(i)), "--key-length-bytes", "32"})
				if !res.OK() {
					once.Do(func() { firstErr = fmt.Errorf("setup: create key %s: %v", listLabel(int(i)), res.Data) })
					cancel()
					return
				}
				done.Add(1)
			}
		})
	}
	wg.Wait()
	stopProgress()
	if firstErr != nil {
		return firstErr
	}
	if err := ctx.Err(); err != nil {
		return errors.New("interrupted during setup")
	}
	// A listing that comes back short would be measured as fast: check
	// that one by label finds its key. (Each creation's result was
	// checked above.)
	check := func(line string, want int) error {
		res, err := runLines(ctx, r, "check the listing", line)
		if err != nil {
			return err
		}
		v, err := resultValue(res, "total_key_count")
		if err != nil {
			return fmt.Errorf("setup: %w", err)
		}
		if n, ok := v.(float64); !ok || int(n) != want {
			return fmt.Errorf("setup: %s found %v keys of the %d created, want %d: the cluster does not list all its keys", line, v, benchListKeys, want)
		}
		return nil
	}
	return check("key list --filter attr.label="+listLabel(benchListKeys/2)+" --verbose", 1)
}

// resultValue reads a field of a command's result as its JSON shows it.
func resultValue(res commands.Result, path ...string) (any, error) {
	b, err := json.Marshal(res.Data)
	if err != nil {
		return nil, err
	}
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		return nil, err
	}
	for _, p := range path {
		m, ok := v.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("the result has no %s: %s", strings.Join(path, "."), b)
		}
		if v, ok = m[p]; !ok {
			return nil, fmt.Errorf("the result has no %s: %s", strings.Join(path, "."), b)
		}
	}
	return v, nil
}

func resultString(res commands.Result, path ...string) (string, error) {
	v, err := resultValue(res, path...)
	if err != nil {
		return "", err
	}
	s, ok := v.(string)
	if !ok || s == "" {
		return "", fmt.Errorf("the result's %s is %v, not a string", strings.Join(path, "."), v)
	}
	return s, nil
}

// measurement is the measured phase: concurrency workers run ops until
// the duration is up.
type measurement struct {
	duration    time.Duration
	concurrency int
	newWorker   newBenchWorker
	progress    io.Writer // nil: no progress line
	label       string
	stopped     func() // called as soon as the last worker is done
}

// benchErrorShare is the share of failed ops (in percent) past which a
// run stops: its figures would measure failures.
const benchErrorShare = 1

// run measures, and returns the latencies of the ops that succeeded, the
// number that failed and the time the phase took.
func (m measurement) run(ctx context.Context) (lat []time.Duration, failed int64, elapsed time.Duration, err error) {
	workers := make([]benchOp, m.concurrency)
	for i := range workers {
		op, release, err := m.newWorker(i)
		if err != nil {
			return nil, 0, 0, err
		}
		defer release()
		workers[i] = op
	}
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	var ok, attempts, errs atomic.Int64
	var aborted atomic.Bool
	var once sync.Once
	var firstErr string
	perWorker := make([][]time.Duration, m.concurrency)

	start := time.Now()
	deadline := start.Add(m.duration)
	stopProgress := startProgress(m.progress, func() string {
		el := time.Since(start)
		n := ok.Load()
		return fmt.Sprintf("%s  %.1fs/%s  %d ops  %.0f ops/s", m.label, min(el, m.duration).Seconds(), m.duration, n, float64(n)/el.Seconds())
	})
	var wg sync.WaitGroup
	for i, op := range workers {
		wg.Go(func() {
			l := make([]time.Duration, 0, 1<<14)
			defer func() { perWorker[i] = l }()
			for time.Now().Before(deadline) && runCtx.Err() == nil {
				t0 := time.Now()
				res := op(runCtx)
				d := time.Since(t0)
				if runCtx.Err() != nil {
					return // stopped midway: the op's outcome says nothing
				}
				n := attempts.Add(1)
				if !res.OK() {
					e := errs.Add(1)
					once.Do(func() { firstErr = fmt.Sprint(res.Data) })
					if n >= 100 && e*100 > benchErrorShare*n {
						aborted.Store(true)
						cancel()
						return
					}
					continue
				}
				ok.Add(1)
				l = append(l, d)
			}
		})
	}
	wg.Wait()
	elapsed = time.Since(start)
	if m.stopped != nil {
		m.stopped()
	}
	stopProgress()
	if ctx.Err() != nil {
		return nil, 0, 0, errors.New("interrupted")
	}
	n, e := attempts.Load(), errs.Load()
	if aborted.Load() || e*100 > benchErrorShare*n {
		return nil, e, elapsed, fmt.Errorf("%d of %d ops failed (more than %d%%); the first error: %s", e, n, benchErrorShare, firstErr)
	}
	if ok.Load() == 0 {
		return nil, e, elapsed, fmt.Errorf("no op completed in %s", m.duration)
	}
	total := 0
	for _, l := range perWorker {
		total += len(l)
	}
	lat = make([]time.Duration, 0, total)
	for _, l := range perWorker {
		lat = append(lat, l...)
	}
	return lat, e, elapsed, nil
}

// startProgress rewrites one line on w every benchTick with line(), until
// the function it returns is called, which clears the line. With w nil it
// does nothing.
func startProgress(w io.Writer, line func() string) (stop func()) {
	if w == nil {
		return func() {}
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(benchTick)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				fmt.Fprintf(w, "\r%s\x1b[K", line())
			}
		}
	})
	return func() {
		close(done)
		wg.Wait()
		fmt.Fprint(w, "\r\x1b[K")
	}
}
