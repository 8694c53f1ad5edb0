package main

import (
	"fmt"
	"io"
	"maps"
	"math"
	"runtime"
	"slices"
	"strings"
	"time"
)

// row is one line of the report: a ratio of two figures of each round, or
// one figure (den ""), with its target.
type row struct {
	what, target string
	num, den     string  // figures' names; den "" for an absolute figure
	limit        float64 // the target's bound
	atMost       bool    // the target is ≤ limit (else ≥)
	unit         string  // of an absolute figure
	factor       bool    // print the ratio as N× rather than 0.NN
}

// rows are the speed issue's targets, then two side-by-side rows without
// a target.
func rows(transport string) []row {
	return []row{
		{what: "P-256 sign, embedded default vs SoftHSM2 in-process, concurrency 1", target: "≥ 1.0", num: "hsmsh.sign1", den: "soft.sign1", limit: 1},
		{what: "P-256 sign, embedded default vs SoftHSM2 in-process, concurrency 2", target: "≥ 1.0", num: "hsmsh.sign2", den: "soft.sign2", limit: 1},
		{what: "P-256 sign, in-process path (`--transport " + transport + "`) vs raw `crypto/ecdsa`, concurrency 2", target: "≥ 0.80", num: "hsmsh.inproc2", den: "hsmsh.inproc2.baseline", limit: 0.8},
		{what: "P-256 sign, remote (3 loopback servers) vs embedded default, concurrency 8", target: "≥ 0.60", num: "hsmsh.remote8", den: "hsmsh.embedded8", limit: 0.6},
		{what: "durable AES token keys on 3 HSMs, fsync on each, concurrency 8", target: "≥ 1,500/s", num: "hsmsh.aes8", limit: 1500, unit: "/s"},
		{what: "durable AES token keys, hsmsh (c=8) vs SoftHSM2 at its best thread count", target: "≥ 8×", num: "hsmsh.aes8", den: "soft.aes", limit: 8, factor: true},
		{what: "`key list --filter attr.label=X` among 100,000 keys × 3 HSMs", target: "≤ 5 ms", num: "hsmsh.keylist100k_ms", limit: 5, atMost: true, unit: " ms"},
		{what: "login (argon2id + P-384 handshake), p50", target: "≤ 40 ms", num: "hsmsh.login.p50_ms", limit: 40, atMost: true, unit: " ms"},
		{what: "P-256 sign, embedded default vs SoftHSM2 in-process, concurrency 8", target: "—", num: "hsmsh.sign8", den: "soft.sign8"},
		{what: "one key by label among 10,000: hsmsh `key-list-10k` (3 HSMs, verbose) vs SoftHSM2 C_FindObjects + attributes", target: "—", num: "hsmsh.find", den: "soft.find", factor: true},
	}
}

// figures are the raw figures, for the second table.
var figures = []struct{ name, what string }{
	{"soft.sign1", "SoftHSM2 P-256 sign, 1 thread (ops/s)"},
	{"hsmsh.sign1", "hsmsh P-256 sign, embedded default, c=1"},
	{"soft.sign2", "SoftHSM2 P-256 sign, 2 threads"},
	{"hsmsh.sign2", "hsmsh P-256 sign, embedded default, c=2"},
	{"hsmsh.inproc2", "hsmsh P-256 sign, in-process path, c=2"},
	{"hsmsh.inproc2.baseline", "raw crypto/ecdsa P-256 sign, c=2 (hsmsh bench's baseline)"},
	{"soft.sign8", "SoftHSM2 P-256 sign, 8 threads"},
	{"hsmsh.sign8", "hsmsh P-256 sign, embedded default, c=8"},
	{"hsmsh.embedded8", "hsmsh P-256 sign, embedded default, c=8, beside remote"},
	{"hsmsh.remote8", "hsmsh P-256 sign, remote (3 loopback servers), c=8"},
	{"soft.aes.t1", "SoftHSM2 AES-256 token keys, 1 thread"},
	{"soft.aes.t2", "SoftHSM2 AES-256 token keys, 2 threads"},
	{"soft.aes.t4", "SoftHSM2 AES-256 token keys, 4 threads"},
	{"soft.aes.t8", "SoftHSM2 AES-256 token keys, 8 threads"},
	{"soft.aes.t16", "SoftHSM2 AES-256 token keys, 16 threads"},
	{"soft.aes.t32", "SoftHSM2 AES-256 token keys, 32 threads"},
	{"soft.aes.t64", "SoftHSM2 AES-256 token keys, 64 threads"},
	{"soft.aes.best_threads", "SoftHSM2's best thread count for token keys"},
	{"hsmsh.aes8", "hsmsh durable AES-256 token keys, 3 HSMs, fsync, c=8"},
	{"soft.find", "SoftHSM2 find by label among 10,000 keys, 1 thread"},
	{"hsmsh.find", "hsmsh key-list-10k, c=1"},
	{"hsmsh.keylist100k_ms", "key list by label among 100,000 keys × 3 HSMs (ms, hsmcore benchmark)"},
	{"hsmsh.login.p50_ms", "hsmsh login p50 (ms)"},
	{"hsmsh.login", "hsmsh logins/s, c=1"},
}

// spread is the min, median and max of xs (the median of an even count
// is the mean of the middle two).
func spread(xs []float64) (lo, mid, hi float64) {
	s := slices.Sorted(slices.Values(xs))
	n := len(s)
	mid = s[n/2]
	if n%2 == 0 {
		mid = (s[n/2-1] + s[n/2]) / 2
	}
	return s[0], mid, s[n-1]
}

// values are a figure, or a ratio, over the rounds that measured it.
func (r row) values(rounds []round) []float64 {
	var out []float64
	for _, rd := range rounds {
		n, ok := rd[r.num]
		if !ok {
			continue
		}
		if r.den == "" {
			out = append(out, n)
			continue
		}
		if d, ok := rd[r.den]; ok && d > 0 {
			out = append(out, n/d)
		}
	}
	return out
}

func (r row) format(x float64) string {
	switch {
	case r.den == "" && r.unit == "/s":
		return fmt.Sprintf("%s/s", thousands(x))
	case r.den == "":
		return fmt.Sprintf("%.2f%s", x, r.unit)
	case r.factor:
		return fmt.Sprintf("%.1f×", x)
	}
	return fmt.Sprintf("%.2f", x)
}

func (r row) met(median float64) string {
	if r.limit == 0 {
		return "—"
	}
	if (r.atMost && median <= r.limit) || (!r.atMost && median >= r.limit) {
		return "**yes**"
	}
	return "**no**"
}

// thousands prints x rounded, with commas.
func thousands(x float64) string {
	s := fmt.Sprintf("%d", int64(math.Round(x)))
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}

func writeReport(w io.Writer, o compareOpts, rounds []round, failures map[string]string) {
	fmt.Fprintf(w, "Side by side, %s: %d rounds, %s per run, SoftHSM2 and hsmsh alternating; %d CPUs, %s/%s, %s.\n\n",
		time.Now().UTC().Format("2006-01-02 15:04 MST"), len(rounds), o.duration, runtime.NumCPU(), runtime.GOOS, runtime.GOARCH, runtime.Version())
	fmt.Fprintln(w, "| what | target | min | median | max | met (median)? |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|")
	for _, r := range rows(o.transport) {
		v := r.values(rounds)
		if len(v) == 0 {
			fmt.Fprintf(w, "| %s | %s | not measured | | | |\n", r.what, r.target)
			continue
		}
		lo, mid, hi := spread(v)
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s |\n", r.what, r.target, r.format(lo), r.format(mid), r.format(hi), r.met(mid))
	}
	fmt.Fprintln(w, "\nThe figures behind the ratios (ops/s unless noted):")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| figure | min | median | max |")
	fmt.Fprintln(w, "|---|---|---|---|")
	for _, f := range figures {
		var v []float64
		for _, rd := range rounds {
			if x, ok := rd[f.name]; ok {
				v = append(v, x)
			}
		}
		if len(v) == 0 {
			continue
		}
		lo, mid, hi := spread(v)
		p := thousands
		if strings.HasSuffix(f.name, "_ms") {
			p = func(x float64) string { return fmt.Sprintf("%.2f", x) }
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s |\n", f.what, p(lo), p(mid), p(hi))
	}
	if len(failures) > 0 {
		fmt.Fprintln(w, "\nFailed runs (the first error of each):")
		fmt.Fprintln(w)
		for _, k := range slices.Sorted(maps.Keys(failures)) {
			fmt.Fprintf(w, "- %s: %s\n", k, failures[k])
		}
	}
}
