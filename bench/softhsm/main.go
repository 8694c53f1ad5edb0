// Command softhsm-bench runs hsmsh bench's operations against SoftHSM2
// through PKCS#11, and compares the two side by side.
//
//	softhsm-bench run --lib LIB --token LABEL --op OP [--threads N] [--duration D] [--keys N]
//
// measures one operation on SoftHSM2 and prints one JSON object
// (ops/s, p50). The ops: ecdsa-p256-sign (CKM_ECDSA over a SHA-256
// digest, a P-256 key of the token's), aes-token-gen (C_GenerateKey of an
// AES-256 token object, written to the token's folder; the keys are
// destroyed after the run), key-find (C_FindObjects by CKA_LABEL among
// --keys AES keys, and C_GetAttributeValue of the one found).
//
//	softhsm-bench compare --hsmsh BIN --lib LIB --token LABEL [--rounds 3] [--duration 3s] [--repo DIR]
//	                      [--inprocess-transport direct] [--work DIR]
//
// runs the same operations against SoftHSM2 (this program's run, as a
// process of its own) and hsmsh (hsmsh bench --json), alternately, for
// --rounds rounds, and prints the min, median and max of each ratio of
// the speed issue's targets as a markdown table. The token's user PIN
// comes from $SOFTHSM_BENCH_PIN, never from a flag.
//
// This is a separate module, built with cgo, so that hsmsh itself stays
// pure Go: run.sh beside this file installs SoftHSM2, makes a throwaway
// token and runs compare.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"sync"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: softhsm-bench run|compare [flags] (softhsm-bench run -h, softhsm-bench compare -h)")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "run":
		err = runCommand(os.Args[2:], os.Stdout)
	case "compare":
		err = compareCommand(os.Args[2:], os.Stdout, os.Stderr)
	default:
		fmt.Fprintf(os.Stderr, "softhsm-bench: unknown command %q: use run or compare\n", os.Args[1])
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "softhsm-bench: %v\n", err)
		os.Exit(1)
	}
}

// result is one measurement on SoftHSM2.
type result struct {
	Target    string  `json:"target"`
	Op        string  `json:"op"`
	Threads   int     `json:"threads"`
	OpsPerSec float64 `json:"ops_per_sec"`
	P50       int64   `json:"p50_us"`
	Ops       int     `json:"ops"`
	Duration  float64 `json:"duration_s"`
}

func runCommand(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	lib := fs.String("lib", "/usr/lib/softhsm/libsofthsm2.so", "the PKCS#11 module")
	label := fs.String("token", "hsmsh-bench", "the token's label")
	op := fs.String("op", "", "ecdsa-p256-sign, aes-token-gen or key-find")
	threads := fs.Int("threads", 1, "threads, each on a session of its own")
	duration := fs.Duration("duration", 3*time.Second, "how long to measure")
	keys := fs.Int("keys", 10000, "key-find: how many keys to find among")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *threads < 1 || *threads > 256 || *keys < 1 || *duration <= 0 {
		return fmt.Errorf("--threads 1 to 256, --keys and --duration positive")
	}
	t, err := openToken(*lib, *label)
	if err != nil {
		return err
	}
	defer t.close()
	newWorker, cleanup, err := t.prepare(*op, *keys)
	if err != nil {
		return err
	}
	r, err := measure(*threads, *duration, newWorker)
	if cerr := cleanup(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	r.Target, r.Op = "softhsm2", *op
	return json.NewEncoder(stdout).Encode(r)
}

// measure runs threads workers for d and returns the figures; any failed
// op fails the run.
func measure(threads int, d time.Duration, newWorker func(i int) (worker, error)) (result, error) {
	workers := make([]worker, threads)
	for i := range workers {
		w, err := newWorker(i)
		if err != nil {
			return result{}, err
		}
		workers[i] = w
	}
	lat := make([][]time.Duration, threads)
	errs := make([]error, threads)
	var wg sync.WaitGroup
	start := time.Now()
	deadline := start.Add(d)
	for i, w := range workers {
		wg.Go(func() {
			for n := 1; time.Now().Before(deadline); n++ {
				t0 := time.Now()
				if err := w(n); err != nil {
					errs[i] = err
					return
				}
				lat[i] = append(lat[i], time.Since(t0))
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	for _, err := range errs {
		if err != nil {
			return result{}, err
		}
	}
	all := slices.Concat(lat...)
	slices.Sort(all)
	r := result{Threads: threads, Ops: len(all), Duration: math.Round(elapsed.Seconds()*1000) / 1000}
	if len(all) > 0 {
		r.OpsPerSec = math.Round(float64(len(all))/elapsed.Seconds()*10) / 10
		r.P50 = all[(len(all)+1)/2-1].Round(time.Microsecond).Microseconds()
	}
	return r, nil
}
