package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// compareOpts are compare's flags.
type compareOpts struct {
	hsmsh, lib, token, repo, transport, work string
	rounds                                   int
	duration                                 time.Duration
}

// A figure is one measurement of a round, by name: "soft.sign1" is
// SoftHSM2's P-256 sign at one thread, "hsmsh.sign1" hsmsh's at
// concurrency 1, and so on (see measurements).
type round map[string]float64

// step is one measurement: it runs a process and reads its figures into
// the round.
type step struct {
	name string // what the progress line says
	run  func(r round) error
}

// pair is two steps that are compared: they run one after the other,
// the first step first in rounds 1, 3, 5…, the second first in rounds 2,
// 4…, so that drift on a noisy machine does not favour one side. A pair
// with one step is a figure of its own.
type pair [2]step

func compareCommand(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("compare", flag.ContinueOnError)
	var o compareOpts
	fs.StringVar(&o.hsmsh, "hsmsh", "", "the hsmsh binary (required)")
	fs.StringVar(&o.lib, "lib", "/usr/lib/softhsm/libsofthsm2.so", "SoftHSM2's PKCS#11 module")
	fs.StringVar(&o.token, "token", "hsmsh-bench", "the label of SoftHSM2's token")
	fs.StringVar(&o.repo, "repo", "", "hsmsh's source tree, for hsmcore's key-list benchmark among 100,000 keys (\"\" skips that row)")
	fs.StringVar(&o.transport, "inprocess-transport", "direct", "hsmsh's in-process transport, held against raw crypto/ecdsa")
	fs.StringVar(&o.work, "work", "", "a folder for hsmsh's on-disk runs (default: a new temporary one)")
	fs.IntVar(&o.rounds, "rounds", 3, "rounds of alternating runs")
	fs.DurationVar(&o.duration, "duration", 3*time.Second, "each run's measured time")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if o.hsmsh == "" {
		return errors.New("--hsmsh BIN is required")
	}
	if o.rounds < 1 || o.duration < time.Second {
		return errors.New("--rounds at least 1, --duration at least 1s")
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	if o.work == "" {
		if o.work, err = os.MkdirTemp("", "softhsm-bench-"); err != nil {
			return err
		}
		defer os.RemoveAll(o.work)
	}
	// hsmcore's benchmark of a lookup among 100,000 keys × 3 HSMs is
	// compiled once.
	keyListBin := ""
	if o.repo != "" {
		keyListBin = filepath.Join(o.work, "hsmcore.test")
		fmt.Fprintln(stderr, "compiling hsmcore's benchmarks for the 100,000-key lookup ...")
		cmd := exec.Command("go", "test", "-c", "-o", keyListBin, "./hsmcore/hsm")
		cmd.Dir, cmd.Stderr = o.repo, stderr
		if err := cmd.Run(); err != nil {
			fmt.Fprintf(stderr, "cannot compile hsmcore's benchmarks (%v): the 100,000-key row is left out\n", err)
			keyListBin = ""
		}
	}
	rounds := make([]round, o.rounds)
	failures := map[string]string{} // figure → the first error
	for i := range rounds {
		r := round{}
		rounds[i] = r
		for _, p := range measurements(o, self, keyListBin, i) {
			order := []step{p[0], p[1]}
			if i%2 == 1 {
				order = []step{p[1], p[0]}
			}
			for _, s := range order {
				if s.run == nil {
					continue
				}
				fmt.Fprintf(stderr, "round %d/%d: %s ...", i+1, o.rounds, s.name)
				t0 := time.Now()
				if err := s.run(r); err != nil {
					fmt.Fprintf(stderr, " failed: %v\n", err)
					if _, ok := failures[s.name]; !ok {
						failures[s.name] = err.Error()
					}
					continue
				}
				fmt.Fprintf(stderr, " done (%.0fs)\n", time.Since(t0).Seconds())
			}
		}
	}
	writeReport(stdout, o, rounds, failures)
	return nil
}

// measurements are a round's steps, in pairs. The figures' names are
// those the report's rows read.
func measurements(o compareOpts, self, keyListBin string, i int) []pair {
	d := o.duration.String()
	soft := func(name, op string, threads int, extra ...string) func(r round) error {
		return func(r round) error {
			res, err := softRun(self, o, op, threads, extra...)
			if err != nil {
				return err
			}
			r[name] = res.OpsPerSec
			return nil
		}
	}
	hsmsh := func(name string, args ...string) func(r round) error {
		return func(r round) error {
			s, err := hsmshRun(o.hsmsh, append([]string{"bench", "--duration", d, "--json"}, args...)...)
			if err != nil {
				return err
			}
			r[name] = s.OpsPerSec
			r[name+".p50_ms"] = float64(s.P50) / 1000
			if s.BaselineOpsPerSec != nil {
				r[name+".baseline"] = *s.BaselineOpsPerSec
			}
			return nil
		}
	}
	sign := func(c int) pair {
		n := strconv.Itoa(c)
		return pair{
			{"SoftHSM2 P-256 sign, " + n + " thread(s)", soft("soft.sign"+n, "ecdsa-p256-sign", c)},
			{"hsmsh P-256 sign, embedded default, c=" + n, hsmsh("hsmsh.sign"+n, "--op", "ecdsa-p256-sign", "--concurrency", n, "--no-baseline")},
		}
	}
	aesDir := filepath.Join(o.work, fmt.Sprintf("aes-round-%d", i+1))
	ps := []pair{
		sign(1), sign(2),
		{
			{"hsmsh P-256 sign, --transport " + o.transport + ", c=2, and raw crypto/ecdsa c=2",
				hsmsh("hsmsh.inproc2", "--op", "ecdsa-p256-sign", "--concurrency", "2", "--transport", o.transport)},
			{},
		},
		sign(8),
		{
			{"hsmsh P-256 sign, remote (3 loopback servers), c=8", hsmsh("hsmsh.remote8", "--op", "ecdsa-p256-sign", "--concurrency", "8", "--remote", "--no-baseline")},
			{"hsmsh P-256 sign, embedded default, c=8 (again, beside remote)", hsmsh("hsmsh.embedded8", "--op", "ecdsa-p256-sign", "--concurrency", "8", "--no-baseline")},
		},
		{
			{"SoftHSM2 AES-256 token keys, threads doubled from 1 while it helps (up to 64)", func(r round) error {
				best := 0.0
				for th := 1; th <= 64; th *= 2 {
					res, err := softRun(self, o, "aes-token-gen", th)
					if err != nil {
						return err
					}
					r["soft.aes.t"+strconv.Itoa(th)] = res.OpsPerSec
					if res.OpsPerSec > best {
						best, r["soft.aes.best_threads"] = res.OpsPerSec, float64(th)
					} else if th >= 4 {
						break // more threads no longer help
					}
				}
				r["soft.aes"] = best
				return nil
			}},
			{"hsmsh durable AES-256 token keys, 3 HSMs on disk, c=8", func(r round) error {
				defer os.RemoveAll(aesDir)
				return hsmsh("hsmsh.aes8", "--op", "aes-token-gen", "--concurrency", "8", "--data-dir", aesDir)(r)
			}},
		},
		{
			{"SoftHSM2 key find by label among 10,000 keys", soft("soft.find", "key-find", 1, "--keys", "10000")},
			{"hsmsh key-list-10k (one key by label among 10,000, 3 HSMs)", hsmsh("hsmsh.find", "--op", "key-list-10k")},
		},
		{{"hsmsh login", hsmsh("hsmsh.login", "--op", "login")}, {}},
	}
	if keyListBin != "" {
		ps = append(ps, pair{{"hsmcore key list by label among 100,000 keys × 3 HSMs", func(r round) error {
			ms, err := keyList100k(keyListBin, o.repo)
			if err == nil {
				r["hsmsh.keylist100k_ms"] = ms
			}
			return err
		}}, {}})
	}
	return ps
}

// softRun runs this program's run command (a process of its own) and
// reads its result.
func softRun(self string, o compareOpts, op string, threads int, extra ...string) (result, error) {
	args := append([]string{"run", "--lib", o.lib, "--token", o.token, "--op", op, "--threads", strconv.Itoa(threads), "--duration", o.duration.String()}, extra...)
	var out, errOut bytes.Buffer
	cmd := exec.Command(self, args...)
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		return result{}, fmt.Errorf("%v: %s", err, strings.TrimSpace(errOut.String()))
	}
	var r result
	if err := json.Unmarshal(out.Bytes(), &r); err != nil {
		return r, fmt.Errorf("softhsm-bench run printed %q: %v", out.String(), err)
	}
	if r.Ops == 0 {
		return r, errors.New("no op completed")
	}
	return r, nil
}

// hsmshSummary is what hsmsh bench --json reports of a run.
type hsmshSummary struct {
	OpsPerSec         float64  `json:"ops_per_sec"`
	P50               int64    `json:"p50_us"`
	Errors            int64    `json:"errors"`
	BaselineOpsPerSec *float64 `json:"baseline_ops_per_sec"`
}

func hsmshRun(bin string, args ...string) (hsmshSummary, error) {
	var out, errOut bytes.Buffer
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = &out, &errOut
	runErr := cmd.Run()
	var env struct {
		ErrorCode int             `json:"error_code"`
		Data      json.RawMessage `json:"data"`
	}
	var s hsmshSummary
	if err := json.Unmarshal(out.Bytes(), &env); err != nil || env.ErrorCode != 0 || runErr != nil {
		return s, fmt.Errorf("hsmsh %s: %v: %s%s", strings.Join(args, " "), runErr, strings.TrimSpace(out.String()), strings.TrimSpace(errOut.String()))
	}
	if err := json.Unmarshal(env.Data, &s); err != nil {
		return s, err
	}
	if s.OpsPerSec <= 0 {
		return s, fmt.Errorf("hsmsh %s: no op completed", strings.Join(args, " "))
	}
	return s, nil
}

var nsPerOp = regexp.MustCompile(`^BenchmarkKeyListByLabel/label\S*\s+\d+\s+([0-9.]+) ns/op`)

// keyList100k runs hsmcore's BenchmarkKeyListByLabel (key list --filter
// attr.label=X through the client library, among 100,000 keys on each of
// 3 HSMs) and returns its milliseconds per listing.
func keyList100k(bin, repo string) (float64, error) {
	var out bytes.Buffer
	cmd := exec.Command(bin, "-test.run", "^$", "-test.bench", "KeyListByLabel/label", "-test.benchtime", "20x")
	cmd.Dir = filepath.Join(repo, "hsmcore", "hsm")
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return 0, fmt.Errorf("%v: %s", err, out.String())
	}
	sc := bufio.NewScanner(&out)
	for sc.Scan() {
		if m := nsPerOp.FindStringSubmatch(sc.Text()); m != nil {
			ns, err := strconv.ParseFloat(m[1], 64)
			return ns / 1e6, err
		}
	}
	return 0, fmt.Errorf("no KeyListByLabel/label figure in: %s", out.String())
}
