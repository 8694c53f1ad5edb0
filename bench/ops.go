package bench

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/hsmsh/hsmsh/commands"
)

// opFunc runs one op and gives its result; an op of several commands
// gives the first that failed, or the last.
type opFunc func(ctx context.Context) commands.Result

// workerFactory makes worker i's op, and what releases the worker.
type workerFactory func(i int) (opFunc, func(), error)

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

// prepare sets the cluster up for op through the runner — activate,
// a crypto user, the keys the op needs — and returns how to make the
// workers' ops. Every op is a command line a user could type.
func prepare(ctx context.Context, op string, hsms int, r *commands.Runner, progress io.Writer) (workerFactory, error) {
	if _, err := runLines(ctx, r, "activate the cluster and create the crypto user "+userName,
		"cluster activate --password "+adminPassword,
		"login --username admin --role admin --password "+adminPassword,
		"user create --username "+userName+" --role crypto-user --password "+userPassword,
		"logout",
		"login --username "+userName+" --role crypto-user --password "+userPassword,
	); err != nil {
		return nil, err
	}
	// same gives every worker its own copy of one command's words.
	same := func(words ...string) workerFactory {
		return func(int) (opFunc, func(), error) {
			w := slices.Clone(words)
			return func(ctx context.Context) commands.Result { return r.Run(ctx, w) }, func() {}, nil
		}
	}
	sign := func(genLine, mech, hash string) (workerFactory, error) {
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
		return sign("key generate-asymmetric-pair ec --curve secp256r1 --public-label bench-p256-pub --private-label bench-p256 --public-attributes verify=true --private-attributes sign=true", "ecdsa", "sha256")
	case "ecdsa-p384-sign":
		return sign("key generate-asymmetric-pair ec --curve secp384r1 --public-label bench-p384-pub --private-label bench-p384 --public-attributes verify=true --private-attributes sign=true", "ecdsa", "sha384")
	case "rsa2048-sign":
		return sign("key generate-asymmetric-pair rsa --modulus-size-bits 2048 --public-exponent 65537 --public-label bench-rsa-pub --private-label bench-rsa --public-attributes verify=true --private-attributes sign=true", "rsa-pkcs", "sha256")
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
		return func(int) (opFunc, func(), error) {
			return func(ctx context.Context) commands.Result {
				return r.Run(ctx, []string{"key", "list", "--filter", "attr.label=" + listLabel(mrand.IntN(listKeys)), "--verbose"})
			}, func() {}, nil
		}, nil
	case "login":
		// Each worker logs in and out on a login session of its own: the
		// shell's Env holds one login per cluster.
		login := []string{"login", "--username", userName, "--role", "crypto-user", "--password", userPassword}
		return func(int) (opFunc, func(), error) {
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
func counted(r *commands.Runner, words func(w, n int) []string) workerFactory {
	return func(w int) (opFunc, func(), error) {
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
		return fmt.Sprintf(" setup key-list-10k  hsms=%d  %d/%d keys", hsms, done.Load(), listKeys)
	})
	var wg sync.WaitGroup
	for range setupWorkers {
		wg.Go(func() {
			for {
				i := next.Add(1) - 1
				if i >= listKeys || ctx.Err() != nil {
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
			return fmt.Errorf("setup: %s found %v keys of the %d created, want %d: the cluster does not list all its keys", line, v, listKeys, want)
		}
		return nil
	}
	return check("key list --filter attr.label="+listLabel(listKeys/2)+" --verbose", 1)
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
