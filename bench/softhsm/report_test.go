package main

import (
	"strings"
	"testing"
	"time"
)

func TestSpread(t *testing.T) {
	tests := []struct {
		in            []float64
		lo, mid, high float64
	}{
		{[]float64{2}, 2, 2, 2},
		{[]float64{3, 1, 2}, 1, 2, 3},
		{[]float64{4, 1, 3, 2}, 1, 2.5, 4},
	}
	for _, tt := range tests {
		lo, mid, hi := spread(tt.in)
		if lo != tt.lo || mid != tt.mid || hi != tt.high {
			t.Errorf("spread(%v) = %v, %v, %v", tt.in, lo, mid, hi)
		}
	}
}

// A ratio is taken within each round, never across rounds; a round that
// lacks either side is left out.
func TestRowValues(t *testing.T) {
	r := row{num: "a", den: "b"}
	rounds := []round{{"a": 10, "b": 20}, {"a": 30, "b": 10}, {"a": 5}, {"b": 1}}
	got := r.values(rounds)
	if len(got) != 2 || got[0] != 0.5 || got[1] != 3 {
		t.Errorf("values = %v, want [0.5 3]", got)
	}
	abs := row{num: "a"}
	if got := abs.values(rounds); len(got) != 3 {
		t.Errorf("absolute values = %v", got)
	}
}

func TestRowFormatAndMet(t *testing.T) {
	for _, tt := range []struct {
		r    row
		x    float64
		text string
		met  string
	}{
		{row{num: "a", den: "b", limit: 1}, 0.374, "0.37", "**no**"},
		{row{num: "a", den: "b", limit: 1}, 1.2, "1.20", "**yes**"},
		{row{num: "a", den: "b", limit: 8, factor: true}, 9.04, "9.0×", "**yes**"},
		{row{num: "a", limit: 1500, unit: "/s"}, 1234.6, "1,235/s", "**no**"},
		{row{num: "a", limit: 5, atMost: true, unit: " ms"}, 0.27, "0.27 ms", "**yes**"},
		{row{num: "a", limit: 40, atMost: true, unit: " ms"}, 41, "41.00 ms", "**no**"},
		{row{num: "a", den: "b"}, 2, "2.00", "—"},
	} {
		if got := tt.r.format(tt.x); got != tt.text {
			t.Errorf("format(%v) = %q, want %q", tt.x, got, tt.text)
		}
		if got := tt.r.met(tt.x); got != tt.met {
			t.Errorf("met(%v) = %q, want %q", tt.x, got, tt.met)
		}
	}
}

func TestThousands(t *testing.T) {
	for x, want := range map[float64]string{0: "0", 999.4: "999", 1000: "1,000", 16250.6: "16,251", 1234567: "1,234,567"} {
		if got := thousands(x); got != want {
			t.Errorf("thousands(%v) = %q, want %q", x, got, want)
		}
	}
}

// Every target row of the issue is in the report, with its figures, or
// says it was not measured.
func TestWriteReport(t *testing.T) {
	rounds := []round{
		{"hsmsh.sign1": 6000, "soft.sign1": 16000, "hsmsh.login.p50_ms": 30},
		{"hsmsh.sign1": 7000, "soft.sign1": 14000, "hsmsh.login.p50_ms": 28},
	}
	var b strings.Builder
	writeReport(&b, compareOpts{transport: "direct", duration: 3 * time.Second}, rounds, map[string]string{"hsmsh login": "boom"})
	out := b.String()
	for _, want := range []string{
		"| P-256 sign, embedded default vs SoftHSM2 in-process, concurrency 1 | ≥ 1.0 | 0.38 | 0.44 | 0.50 | **no** |",
		"| login (argon2id + P-384 handshake), p50 | ≤ 40 ms | 28.00 ms | 29.00 ms | 30.00 ms | **yes** |",
		"| P-256 sign, remote (3 loopback servers) vs embedded default, concurrency 8 | ≥ 0.60 | not measured | | | |",
		"| SoftHSM2 P-256 sign, 1 thread (ops/s) | 14,000 | 15,000 | 16,000 |",
		"- hsmsh login: boom",
		"2 rounds, 3s per run",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
	if n := strings.Count(out, "\n| "); n != len(rows("direct"))+1+1+3 { // rows, two headers, three figures
		t.Errorf("%d table lines (header rows included):\n%s", n, out)
	}
}
