package shell

import (
	"context"
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
	def := benchOpts{op: "login", hsms: []int{3}, duration: 5 * time.Second, concurrency: 1, transport: "tls", profile: "none"}
	abs, _ := filepath.Abs("bd")
	with := func(f func(o *benchOpts)) benchOpts {
		o := def
		f(&o)
		return o
	}
	tests := []struct {
		name    string
		g       globals
		args    string
		want    benchOpts
		wantErr string
	}{
		{"defaults", globals{}, "--op login", def, ""},
		{"everything", globals{}, "--op ecdsa-p256-sign --hsms 1,2,3 --duration 2m --concurrency 256 --transport direct --profile hsm2m.medium --json",
			with(func(o *benchOpts) {
				o.op, o.hsms, o.duration, o.concurrency, o.transport, o.profile, o.json = "ecdsa-p256-sign", []int{1, 2, 3}, 2*time.Minute, 256, "direct", "hsm2m.medium", true
			}), ""},
		{"name=value", globals{}, "--op=aes-token-gen --hsms=2 --duration=1s --concurrency=8",
			with(func(o *benchOpts) {
				o.op, o.hsms, o.duration, o.concurrency = "aes-token-gen", []int{2}, time.Second, 8
			}), ""},
		{"data dir after", globals{}, "--op login --data-dir bd", with(func(o *benchOpts) { o.dataDir = abs }), ""},
		{"data dir before", globals{dataDir: "bd"}, "--op login", with(func(o *benchOpts) { o.dataDir = abs }), ""},
		{"ephemeral", globals{ephemeral: true}, "--op login --ephemeral", def, ""},
		{"cpuprofile", globals{}, "--op login --cpuprofile cpu.out", with(func(o *benchOpts) { o.cpuprofile = "cpu.out" }), ""},
		{"help", globals{}, "--help", benchOpts{help: true}, ""},
		{"aes-gcm-1k is known", globals{}, "--op aes-gcm-1k", with(func(o *benchOpts) { o.op = "aes-gcm-1k" }), ""},

		{"no op", globals{}, "--hsms 2", def, "--op is required: one of ecdsa-p256-sign"},
		{"unknown op", globals{}, "--op frobnicate", def, `unknown op "frobnicate": use one of ecdsa-p256-sign, ecdsa-p384-sign, rsa2048-sign, aes-token-gen, ec-token-gen, key-list-10k, login`},
		{"op needs a value", globals{}, "--op --json", def, "--op needs a value"},
		{"bad duration", globals{}, "--op login --duration fast", def, `--duration "fast": a Go duration from 1s to 10m`},
		{"short duration", globals{}, "--op login --duration 999ms", def, "from 1s to 10m"},
		{"long duration", globals{}, "--op login --duration 11m", def, "from 1s to 10m"},
		{"concurrency 0", globals{}, "--op login --concurrency 0", def, `--concurrency "0": a whole number from 1 to 256`},
		{"concurrency 257", globals{}, "--op login --concurrency 257", def, "from 1 to 256"},
		{"concurrency word", globals{}, "--op login --concurrency two", def, "from 1 to 256"},
		{"hsms 0", globals{}, "--op login --hsms 0", def, `--hsms "0": HSM counts from 1 to 32`},
		{"hsms 33", globals{}, "--op login --hsms 1,33", def, "from 1 to 32"},
		{"hsms empty item", globals{}, "--op login --hsms 1,,2", def, "from 1 to 32"},
		{"hsms twice", globals{}, "--op login --hsms 2,2", def, "names 2 twice"},
		{"transport", globals{}, "--op login --transport udp", def, `--transport "udp": use direct`},
		{"profile", globals{}, "--op login --profile hsm9.huge", def, `--profile "hsm9.huge": use one of none, hsm1.medium, hsm2m.medium`},
		{"both data dir and ephemeral", globals{ephemeral: true}, "--op login --data-dir bd", def, "--ephemeral and --data-dir exclude each other"},
		{"config", globals{configPath: "x.toml"}, "--op login", def, "bench reads no config file"},
		{"unknown flag", globals{}, "--op login --verbose", def, `unknown flag "--verbose"`},
		{"stray word", globals{}, "--op login now", def, `unexpected "now"`},
		{"json takes no value", globals{}, "--op login --json=yes", def, "--json takes no value"},
		{"cpuprofile with several counts", globals{}, "--op login --hsms 1,2 --cpuprofile c.out", def, "give one --hsms count"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseBenchArgs(tt.g, strings.Fields(tt.args))
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
		want    benchSummary
	}{
		{"none", nil, time.Second, benchSummary{Duration: 1}},
		{"unsorted", []time.Duration{3 * time.Millisecond, time.Millisecond, 2 * time.Millisecond, 1500 * time.Nanosecond},
			2 * time.Second, benchSummary{Ops: 4, OpsPerSec: 2, P50: 1000, P99: 3000, Max: 3000, Duration: 2}},
		{"rounding", []time.Duration{1499 * time.Nanosecond, 1500 * time.Nanosecond, 2 * time.Microsecond},
			1234567 * time.Microsecond, benchSummary{Ops: 3, OpsPerSec: 2.4, P50: 2, P99: 2, Max: 2, Duration: 1.235}},
	}
	for _, tt := range tests {
		var got benchSummary
		summarize(&got, tt.lat, tt.elapsed)
		if got != tt.want {
			t.Errorf("%s: got %+v, want %+v", tt.name, got, tt.want)
		}
	}
}

// fakeWorkers makes workers whose ops fail when fail says so, counting
// the ops and the workers released.
func fakeWorkers(fail func(n int64) bool, ops, released *atomic.Int64) newBenchWorker {
	return func(int) (benchOp, func(), error) {
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

// The whole command, in memory, through the runner.
func TestBenchCommand(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a cluster for a second")
	}
	var out, errOut strings.Builder
	code := benchCommand(globals{}, strings.Fields("--op ecdsa-p256-sign --hsms 2 --duration 1s --concurrency 2 --transport direct --json"), &out, &errOut)
	if code != 0 {
		t.Fatalf("exit %d: %s%s", code, out.String(), errOut.String())
	}
	for _, want := range []string{`"op": "ecdsa-p256-sign"`, `"hsms": 2`, `"errors": 0`, `"transport": "direct"`} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %s:\n%s", want, out.String())
		}
	}
	if errOut.Len() != 0 {
		t.Errorf("stderr not empty (no terminal, no progress): %q", errOut.String())
	}
}
