package bench

import (
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hsmsh/hsmsh/commands"
)

func TestParseBenchArgs(t *testing.T) {
	def := options{op: "login", hsms: []int{3}, duration: 5 * time.Second, concurrency: 1, transport: "direct", profile: "none"}
	abs, _ := filepath.Abs("bd")
	with := func(f func(o *options)) options {
		o := def
		f(&o)
		return o
	}
	tests := []struct {
		name    string
		g       Options
		args    string
		want    options
		wantErr string
	}{
		{"defaults", Options{}, "--op login", def, ""},
		{"everything", Options{}, "--op ecdsa-p256-sign --hsms 1,2,3 --duration 2m --concurrency 256 --transport tls --profile hsm2m.medium --json",
			with(func(o *options) {
				o.op, o.hsms, o.duration, o.concurrency, o.transport, o.profile, o.json = "ecdsa-p256-sign", []int{1, 2, 3}, 2*time.Minute, 256, "tls", "hsm2m.medium", true
			}), ""},
		{"name=value", Options{}, "--op=aes-token-gen --hsms=2 --duration=1s --concurrency=8",
			with(func(o *options) {
				o.op, o.hsms, o.duration, o.concurrency = "aes-token-gen", []int{2}, time.Second, 8
			}), ""},
		{"data dir after", Options{}, "--op login --data-dir bd", with(func(o *options) { o.dataDir = abs }), ""},
		{"data dir before", Options{DataDir: "bd"}, "--op login", with(func(o *options) { o.dataDir = abs }), ""},
		{"ephemeral", Options{Ephemeral: true}, "--op login --ephemeral", def, ""},
		{"cpuprofile", Options{}, "--op login --cpuprofile cpu.out", with(func(o *options) { o.cpuprofile = "cpu.out" }), ""},
		{"help", Options{}, "--help", options{help: true}, ""},
		{"aes-gcm-1k is known", Options{}, "--op aes-gcm-1k", with(func(o *options) { o.op = "aes-gcm-1k" }), ""},

		{"no op", Options{}, "--hsms 2", def, "--op is required: one of ecdsa-p256-sign"},
		{"unknown op", Options{}, "--op frobnicate", def, `unknown op "frobnicate": use one of ecdsa-p256-sign, ecdsa-p384-sign, rsa2048-sign, aes-token-gen, ec-token-gen, key-list-10k, login`},
		{"op needs a value", Options{}, "--op --json", def, "--op needs a value"},
		{"bad duration", Options{}, "--op login --duration fast", def, `--duration "fast": a Go duration from 1s to 10m`},
		{"short duration", Options{}, "--op login --duration 999ms", def, "from 1s to 10m"},
		{"long duration", Options{}, "--op login --duration 11m", def, "from 1s to 10m"},
		{"concurrency 0", Options{}, "--op login --concurrency 0", def, `--concurrency "0": a whole number from 1 to 256`},
		{"concurrency 257", Options{}, "--op login --concurrency 257", def, "from 1 to 256"},
		{"concurrency word", Options{}, "--op login --concurrency two", def, "from 1 to 256"},
		{"hsms 0", Options{}, "--op login --hsms 0", def, `--hsms "0": HSM counts from 1 to 32`},
		{"hsms 33", Options{}, "--op login --hsms 1,33", def, "from 1 to 32"},
		{"hsms empty item", Options{}, "--op login --hsms 1,,2", def, "from 1 to 32"},
		{"hsms twice", Options{}, "--op login --hsms 2,2", def, "names 2 twice"},
		{"transport", Options{}, "--op login --transport udp", def, `--transport "udp": use direct`},
		{"profile", Options{}, "--op login --profile hsm9.huge", def, `--profile "hsm9.huge": use one of none, hsm1.medium, hsm2m.medium`},
		{"both data dir and ephemeral", Options{Ephemeral: true}, "--op login --data-dir bd", def, "--ephemeral and --data-dir exclude each other"},
		{"config", Options{ConfigPath: "x.toml"}, "--op login", def, "bench reads no config file"},
		{"unknown flag", Options{}, "--op login --verbose", def, `unknown flag "--verbose"`},
		{"stray word", Options{}, "--op login now", def, `unexpected "now"`},
		{"json takes no value", Options{}, "--op login --json=yes", def, "--json takes no value"},
		{"remote", Options{}, "--op login --remote --hsms 2", with(func(o *options) { o.transport, o.hsms = "remote", []int{2} }), ""},
		{"no baseline", Options{}, "--op login --no-baseline", with(func(o *options) { o.noBaseline = true }), ""},
		{"remote and transport", Options{}, "--op login --remote --transport tls", def, "--remote and --transport exclude each other"},
		{"transport and remote", Options{}, "--op login --transport direct --remote", def, "--remote and --transport exclude each other"},
		{"remote and profile", Options{}, "--op login --remote --profile hsm1.medium", def, "--remote and --profile exclude each other"},
		{"remote takes no value", Options{}, "--op login --remote=yes", def, "--remote takes no value"},
		{"cpuprofile with several counts", Options{}, "--op login --hsms 1,2 --cpuprofile c.out", def, "give one --hsms count"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseArgs(tt.g, strings.Fields(tt.args))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tt.wantErr)
				}
				if !errors.As(err, new(usageError)) {
					t.Errorf("err %v is not a usage error", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tt.want.help {
				if !got.help {
					t.Errorf("help not set")
				}
				return
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got  %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestPercentile(t *testing.T) {
	ms := func(ns ...int) []time.Duration {
		out := make([]time.Duration, len(ns))
		for i, n := range ns {
			out[i] = time.Duration(n) * time.Millisecond
		}
		return out
	}
	hundred := make([]time.Duration, 100)
	for i := range hundred {
		hundred[i] = time.Duration(i+1) * time.Millisecond
	}
	tests := []struct {
		name   string
		sorted []time.Duration
		p      float64
		want   time.Duration
	}{
		{"empty", nil, 50, 0},
		{"one", ms(7), 50, 7 * time.Millisecond},
		{"one p99", ms(7), 99, 7 * time.Millisecond},
		{"two p50", ms(1, 2), 50, time.Millisecond},
		{"two p99", ms(1, 2), 99, 2 * time.Millisecond},
		{"odd p50", ms(1, 2, 3), 50, 2 * time.Millisecond},
		{"hundred p50", hundred, 50, 50 * time.Millisecond},
		{"hundred p99", hundred, 99, 99 * time.Millisecond},
		{"hundred p100", hundred, 100, 100 * time.Millisecond},
		{"hundred tiny p", hundred, 0.001, time.Millisecond},
	}
	for _, tt := range tests {
		if got := percentile(tt.sorted, tt.p); got != tt.want {
			t.Errorf("%s: percentile(p%v) = %v, want %v", tt.name, tt.p, got, tt.want)
		}
	}
}

func TestSummarize(t *testing.T) {
	tests := []struct {
		name    string
		lat     []time.Duration
		elapsed time.Duration
		want    summary
	}{
		{"none", nil, time.Second, summary{Duration: 1}},
		{"unsorted", []time.Duration{3 * time.Millisecond, time.Millisecond, 2 * time.Millisecond, 1500 * time.Nanosecond},
			2 * time.Second, summary{Ops: 4, OpsPerSec: 2, P50: 1000, P99: 3000, Max: 3000, Duration: 2}},
		{"rounding", []time.Duration{1499 * time.Nanosecond, 1500 * time.Nanosecond, 2 * time.Microsecond},
			1234567 * time.Microsecond, summary{Ops: 3, OpsPerSec: 2.4, P50: 2, P99: 2, Max: 2, Duration: 1.235}},
	}
	for _, tt := range tests {
		var got summary
		summarize(&got, tt.lat, tt.elapsed)
		if got != tt.want {
			t.Errorf("%s: got %+v, want %+v", tt.name, got, tt.want)
		}
	}
}

// fakeWorkers makes workers whose ops fail when fail says so, counting
// the ops and the workers released.
func fakeWorkers(fail func(n int64) bool, ops, released *atomic.Int64) workerFactory {
	return func(int) (opFunc, func(), error) {
		return func(ctx context.Context) commands.Result {
				n := ops.Add(1)
				time.Sleep(100 * time.Microsecond)
				if fail(n) {
					return commands.Result{ErrorCode: 1, Data: "boom"}
				}
				return commands.Result{}
			}, func() {
				released.Add(1)
			}, nil
	}
}

func TestMeasurement(t *testing.T) {
	tests := []struct {
		name      string
		fail      func(n int64) bool
		wantErr   string
		wantFails bool
	}{
		{"all fine", func(int64) bool { return false }, "", false},
		{"a few failures are counted", func(n int64) bool { return n == 3 }, "", true},
		{"every op fails", func(int64) bool { return true }, "failed (more than 1%); the first error: boom", true},
		{"one in ten fails", func(n int64) bool { return n%10 == 0 }, "failed (more than 1%)", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var ops, released atomic.Int64
			m := measurement{duration: 200 * time.Millisecond, concurrency: 3, newWorker: fakeWorkers(tt.fail, &ops, &released)}
			lat, failed, elapsed, err := m.run(context.Background())
			if released.Load() != 3 {
				t.Errorf("%d workers released, want 3", released.Load())
			}
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if elapsed < m.duration {
				t.Errorf("elapsed %v, shorter than the duration", elapsed)
			}
			if int64(len(lat))+failed != ops.Load() {
				t.Errorf("%d latencies + %d failures, want the %d ops run", len(lat), failed, ops.Load())
			}
			if (failed > 0) != tt.wantFails {
				t.Errorf("failed = %d", failed)
			}
		})
	}
}

// Cancelling the run (Ctrl-C) stops it with "interrupted", not figures.
func TestMeasurementInterrupted(t *testing.T) {
	var ops, released atomic.Int64
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	m := measurement{duration: 10 * time.Second, concurrency: 2, newWorker: fakeWorkers(func(int64) bool { return false }, &ops, &released)}
	start := time.Now()
	if _, _, _, err := m.run(ctx); err == nil || err.Error() != "interrupted" {
		t.Fatalf("err = %v, want interrupted", err)
	}
	if time.Since(start) > 5*time.Second {
		t.Error("the run did not stop when cancelled")
	}
}

// The whole command, in memory, through the runner: hsmsh's figures, then
// the raw crypto baseline at the same concurrency and the ratio.
func TestMainSign(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a cluster for a second")
	}
	var out, errOut strings.Builder
	code := Main(strings.Fields("--op ecdsa-p256-sign --hsms 2 --duration 1s --concurrency 2 --transport direct --json"), &out, &errOut, Options{})
	if code != 0 {
		t.Fatalf("exit %d: %s%s", code, out.String(), errOut.String())
	}
	var got struct {
		ErrorCode int     `json:"error_code"`
		Data      summary `json:"data"`
	}
	if err := json.Unmarshal([]byte(out.String()), &got); err != nil {
		t.Fatalf("%v:\n%s", err, out.String())
	}
	d := got.Data
	if got.ErrorCode != 0 || d.Op != "ecdsa-p256-sign" || d.HSMs != 2 || d.Errors != 0 || d.Transport != "direct" || d.Concurrency != 2 {
		t.Errorf("output:\n%s", out.String())
	}
	if d.OpsPerSec <= 0 || d.Ops <= 0 {
		t.Errorf("no ops measured:\n%s", out.String())
	}
	if !strings.HasPrefix(d.Baseline, "crypto/ecdsa P-256") || d.BaselineOpsPerSec == nil || *d.BaselineOpsPerSec <= 0 || d.Ratio == nil {
		t.Fatalf("no baseline:\n%s", out.String())
	}
	if want := roundTo(d.OpsPerSec / *d.BaselineOpsPerSec, 3); *d.Ratio != want {
		t.Errorf("ratio %v, want %v", *d.Ratio, want)
	}
	if errOut.Len() != 0 {
		t.Errorf("stderr not empty (no terminal, no progress): %q", errOut.String())
	}
}

// An op without a baseline says n/a and why, in the table and as nulls in
// the JSON; --remote runs the cluster as servers on loopback TCP.
func TestMainRemoteNoBaseline(t *testing.T) {
	if testing.Short() {
		t.Skip("runs three servers for a second")
	}
	var out, errOut strings.Builder
	code := Main(strings.Fields("--op aes-token-gen --remote --duration 1s --concurrency 2"), &out, &errOut, Options{})
	if code != 0 {
		t.Fatalf("exit %d: %s%s", code, out.String(), errOut.String())
	}
	lines := strings.Split(out.String(), "\n")
	if len(lines) < 4 || !strings.HasPrefix(lines[0], "op ") || !strings.HasSuffix(lines[0], "errors") {
		t.Fatalf("table:\n%s", out.String())
	}
	if f := strings.Fields(lines[1]); len(f) != 11 || f[0] != "aes-token-gen" || f[1] != "3" || f[3] != "remote" || f[10] != "0" {
		t.Errorf("row %q", lines[1])
	}
	if !strings.Contains(out.String(), "baseline (same run, concurrency 2): n/a: its cryptography is a 32-byte random draw") {
		t.Errorf("no n/a baseline:\n%s", out.String())
	}
	if strings.Contains(out.String(), "hsmsh/baseline") {
		t.Errorf("a ratio without a baseline:\n%s", out.String())
	}
	if errOut.Len() != 0 {
		t.Errorf("stderr: %q", errOut.String())
	}

	out.Reset()
	if code := Main(strings.Fields("--op login --hsms 1 --duration 1s --json"), &out, &errOut, Options{}); code != 0 {
		t.Fatalf("exit %d: %s%s", code, out.String(), errOut.String())
	}
	for _, want := range []string{`"baseline": "n/a: a protocol`, `"baseline_ops_per_sec": null`, `"ratio": null`} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("JSON lacks %s:\n%s", want, out.String())
		}
	}
}

// Each baseline runs real crypto: its op succeeds, and the signatures it
// makes verify (checked here on fresh keys the same way).
func TestBaselines(t *testing.T) {
	for _, op := range opNames {
		b := baselineFor(op, "none")
		if b.what == "" {
			t.Errorf("%s: no description", op)
		}
		if b.newWorker == nil {
			if !strings.HasPrefix(b.what, "n/a: ") {
				t.Errorf("%s: no worker, yet %q", op, b.what)
			}
			continue
		}
		run, release, err := b.newWorker(0)
		if err != nil {
			t.Fatalf("%s: %v", op, err)
		}
		if res := run(context.Background()); !res.OK() {
			t.Errorf("%s: %v", op, res.Data)
		}
		release()
	}
	if b := baselineFor("ecdsa-p256-sign", "hsm1.medium"); b.newWorker != nil || !strings.HasPrefix(b.what, "n/a") {
		t.Errorf("a profile's run has a baseline: %q", b.what)
	}
}

// The baseline's figure is its ops over both halves' time.
func TestBaselineRunOpsPerSec(t *testing.T) {
	r := baselineRun{ops: 100, elapsed: 1500 * time.Millisecond}
	r.ops, r.elapsed = r.ops+200, r.elapsed+500*time.Millisecond
	if got := r.opsPerSec(); got != 150 {
		t.Errorf("opsPerSec = %v, want 150", got)
	}
	if got := (&baselineRun{}).opsPerSec(); got != 0 {
		t.Errorf("no run: %v", got)
	}
}

// The ratio is hsmsh's figure over the baseline's, and absent without one.
func TestSetBaseline(t *testing.T) {
	s := summary{OpsPerSec: 5000}
	s.setBaseline("x", 20000)
	if s.BaselineOpsPerSec == nil || *s.BaselineOpsPerSec != 20000 || s.Ratio == nil || *s.Ratio != 0.25 || s.Baseline != "x" {
		t.Errorf("%+v", s)
	}
	n := summary{OpsPerSec: 5000}
	n.setBaseline("n/a: none", 0)
	if n.BaselineOpsPerSec != nil || n.Ratio != nil || n.Baseline != "n/a: none" {
		t.Errorf("%+v", n)
	}
}

// The human table keeps hsmsh's columns as they were, then says what the
// baseline is and gives each row's ratio.
func TestWriteTable(t *testing.T) {
	rows := []summary{
		{Op: "ecdsa-p256-sign", HSMs: 1, Concurrency: 2, Transport: "tls", Profile: "none", OpsPerSec: 7000, Ops: 7000},
		{Op: "ecdsa-p256-sign", HSMs: 3, Concurrency: 2, Transport: "tls", Profile: "none", OpsPerSec: 5000, Ops: 5000},
	}
	for i := range rows {
		rows[i].setBaseline("crypto/ecdsa P-256", 20000)
	}
	var b strings.Builder
	writeTable(&b, rows)
	want := `op               hsms  concurrency  transport  profile  ops/s   p50 µs  p99 µs  max µs  ops   errors
ecdsa-p256-sign  1     2            tls        none     7000.0  0       0       0       7000  0
ecdsa-p256-sign  3     2            tls        none     5000.0  0       0       0       5000  0

baseline (same run, concurrency 2): crypto/ecdsa P-256
op               hsms  hsmsh ops/s  baseline ops/s  hsmsh/baseline
ecdsa-p256-sign  1     7000.0       20000.0         0.350
ecdsa-p256-sign  3     5000.0       20000.0         0.250
`
	if b.String() != want {
		t.Errorf("got\n%s\nwant\n%s", b.String(), want)
	}
}
