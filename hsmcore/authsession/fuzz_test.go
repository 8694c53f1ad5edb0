package authsession

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The seed corpora are under testdata/fuzz/<FuzzName>/. They are sealed
// under the fixed keys below, so the valid seeds open; regenerate them with
//
//	go test -run TestWriteFuzzCorpus -update-corpus ./hsmcore/authsession
var updateCorpus = flag.Bool("update-corpus", false, "rewrite the fuzz seed corpora under testdata/fuzz")

var (
	fuzzDomain  = DomainKey(sha256.Sum256([]byte("authsession fuzz domain")))
	fuzzForeign = DomainKey(sha256.Sum256([]byte("authsession fuzz foreign domain")))
	fuzzSK      = [32]byte(sha256.Sum256([]byte("authsession fuzz session key")))
	fuzzNow     = time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	fuzzExpires = time.Date(2099, 1, 1, 0, 0, 0, 0, time.UTC)
)

// FuzzOpenEKT checks that OpenEKT never panics, and that whatever it
// accepts names this domain, has not expired, and opens under no other
// domain key.
func FuzzOpenEKT(f *testing.F) {
	f.Fuzz(func(t *testing.T, ekt []byte) {
		sk, c, err := OpenEKT(fuzzDomain, ekt, fuzzNow)
		if err != nil {
			if sk != [32]byte{} || c != (Claims{}) {
				t.Fatal("a refused EKT returned a key or claims")
			}
			return
		}
		if c.Domain != fuzzDomain.ID() || !fuzzNow.Before(c.Expires) || checkClaims(c) != nil {
			t.Fatalf("accepted bad claims %+v", c)
		}
		if _, _, err := OpenEKT(fuzzForeign, ekt, fuzzNow); !errors.Is(err, ErrForeignDomain) {
			t.Fatalf("opened under a foreign domain key: %v", err)
		}
		if _, _, err := OpenEKT(fuzzDomain, ekt, c.Expires); !errors.Is(err, ErrExpired) {
			t.Fatalf("opened at its expiry: %v", err)
		}
	})
}

// FuzzOpenEnvelope checks that Open never panics, and that whatever it
// accepts stops opening when any one bit of its body changes.
func FuzzOpenEnvelope(f *testing.F) {
	f.Fuzz(func(t *testing.T, dir byte, seq uint64, ekt, envEKT, body []byte) {
		e := Envelope{EKT: envEKT, Seq: seq, Body: body}
		pt, err := Open(fuzzSK, Direction(dir), ekt, e)
		if err != nil {
			if pt != nil {
				t.Fatal("a refused envelope returned plaintext")
			}
			return
		}
		if Direction(dir) != ToHSM && Direction(dir) != ToClient || seq == 0 {
			t.Fatalf("opened an envelope with direction %d, seq %d", dir, seq)
		}
		for i := range body {
			e.Body = flip(body, i)
			if _, err := Open(fuzzSK, Direction(dir), ekt, e); !errors.Is(err, ErrTampered) {
				t.Fatalf("opened with byte %d of the body changed: %v", i, err)
			}
		}
	})
}

// TestWriteFuzzCorpus rewrites the seed corpora when run with
// -update-corpus, and otherwise checks that the valid seeds still open.
func TestWriteFuzzCorpus(t *testing.T) {
	h, _, err := NewHello("fuzz-client", clientIdentity)
	if err != nil {
		t.Fatal(err)
	}
	claims := Claims{User: "fuzz", Role: "crypto-user", Expires: fuzzExpires}
	r, _, _, err := Accept(h, clientIdentity.Public(), "fuzz-hsm", hsmIdentity, fuzzDomain, claims)
	if err != nil {
		t.Fatal(err)
	}
	cmd, err := Seal(fuzzSK, ToHSM, 1, r.EKT, []byte("key list"))
	if err != nil {
		t.Fatal(err)
	}
	ans, err := Seal(fuzzSK, ToClient, 1, r.EKT, []byte("no keys"))
	if err != nil {
		t.Fatal(err)
	}
	v2 := bytes.Clone(r.EKT)
	v2[0] = 2

	ekts := map[string][]byte{
		"valid":      r.EKT,
		"empty":      {},
		"version-2":  v2,
		"truncated":  r.EKT[:len(r.EKT)/2],
		"header":     r.EKT[:1+gcmOverLen],
		"bit-flip":   flip(r.EKT, 40),
		"extra-byte": append(bytes.Clone(r.EKT), 0),
	}
	type envSeed struct {
		dir          Direction
		seq          uint64
		ekt, e, body []byte
	}
	envs := map[string]envSeed{
		"valid-command": {ToHSM, 1, r.EKT, cmd.EKT, cmd.Body},
		"valid-answer":  {ToClient, 1, r.EKT, nil, ans.Body},
		"seq-changed":   {ToHSM, 2, r.EKT, cmd.EKT, cmd.Body},
		"seq-zero":      {ToHSM, 0, r.EKT, cmd.EKT, cmd.Body},
		"reflected":     {ToClient, 1, r.EKT, nil, cmd.Body},
		"direction-3":   {3, 1, r.EKT, cmd.EKT, cmd.Body},
		"truncated":     {ToHSM, 1, r.EKT, cmd.EKT, cmd.Body[:20]},
		"empty":         {0, 0, nil, nil, nil},
	}

	if !*updateCorpus {
		// Check the checked-in valid seeds, which were sealed earlier.
		ekt := readSeed(t, "FuzzOpenEKT", "valid")
		if _, _, err := OpenEKT(fuzzDomain, ekt[0].([]byte), fuzzNow); err != nil {
			t.Errorf("FuzzOpenEKT/valid: %v", err)
		}
		for _, name := range []string{"valid-command", "valid-answer"} {
			v := readSeed(t, "FuzzOpenEnvelope", name)
			e := Envelope{EKT: v[3].([]byte), Seq: v[1].(uint64), Body: v[4].([]byte)}
			if _, err := Open(fuzzSK, Direction(v[0].(byte)), v[2].([]byte), e); err != nil {
				t.Errorf("FuzzOpenEnvelope/%s: %v", name, err)
			}
		}
		return
	}
	for name, b := range ekts {
		writeSeed(t, "FuzzOpenEKT", name, fmt.Sprintf("[]byte(%q)", b))
	}
	for name, s := range envs {
		writeSeed(t, "FuzzOpenEnvelope", name,
			fmt.Sprintf("byte(%q)", rune(s.dir)), fmt.Sprintf("uint64(%d)", s.seq),
			fmt.Sprintf("[]byte(%q)", s.ekt), fmt.Sprintf("[]byte(%q)", s.e), fmt.Sprintf("[]byte(%q)", s.body))
	}
}

func writeSeed(t *testing.T, fuzz, name string, values ...string) {
	t.Helper()
	dir := filepath.Join("testdata", "fuzz", fuzz)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	text := "go test fuzz v1\n"
	for _, v := range values {
		text += v + "\n"
	}
	if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
}

// readSeed reads back a seed file in the forms writeSeed writes: []byte,
// byte and uint64 literals.
func readSeed(t *testing.T, fuzz, name string) []any {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "fuzz", fuzz, name))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if lines[0] != "go test fuzz v1" {
		t.Fatalf("%s/%s: header %q", fuzz, name, lines[0])
	}
	var out []any
	for _, l := range lines[1:] {
		typ, lit, ok := strings.Cut(strings.TrimSuffix(l, ")"), "(")
		if !ok {
			t.Fatalf("%s/%s: line %q", fuzz, name, l)
		}
		var v any
		switch typ {
		case "[]byte":
			var s string
			s, err = strconv.Unquote(lit)
			v = []byte(s)
		case "byte":
			var s string
			s, err = strconv.Unquote(lit)
			v = byte([]rune(s)[0])
		case "uint64":
			v, err = strconv.ParseUint(lit, 10, 64)
		default:
			err = fmt.Errorf("unknown type %s", typ)
		}
		if err != nil {
			t.Fatalf("%s/%s: line %q: %v", fuzz, name, l, err)
		}
		out = append(out, v)
	}
	return out
}
