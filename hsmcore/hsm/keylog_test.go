package hsm

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// crash closes a store as a killed process leaves it: the key log is not
// folded into bbolt, so the next open must recover from it.
func (s *boltStore) crash() {
	s.log.abandon()
	s.db.Close()
}

func testKey(ref Ref, label string) *keyRecord {
	return &keyRecord{
		Ref:      ref,
		Attrs:    Attributes{Label: label, Class: "secret-key", KeyType: "aes"},
		Owner:    "cu1",
		Created:  time.Unix(1700000000, int64(ref)).UTC(),
		Material: bytes.Repeat([]byte{byte(ref)}, 32),
	}
}

// TestKeyLogRecovers: what a store acknowledged before a crash (key log
// not folded) is what it loads after, stores and deletes in their order.
func TestKeyLogRecovers(t *testing.T) {
	type step struct {
		put []Ref
		del Ref
	}
	tests := []struct {
		name      string
		steps     []step
		wantKeys  []Ref
		wantTombs []Ref
	}{
		{"stores", []step{{put: []Ref{1, 2}}, {put: []Ref{3}}}, []Ref{1, 2, 3}, nil},
		{"store then delete", []step{{put: []Ref{1, 2}}, {del: 1}}, []Ref{2}, []Ref{1}},
		{"delete then store again", []step{{put: []Ref{7}}, {del: 7}, {put: []Ref{7}}}, []Ref{7}, nil},
		{"nothing", nil, nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			s, err := openBoltStore(dir)
			if err != nil {
				t.Fatal(err)
			}
			for _, st := range tt.steps {
				if st.put != nil {
					var recs []*keyRecord
					for _, r := range st.put {
						recs = append(recs, testKey(r, fmt.Sprint("k", r)))
					}
					if err := s.putKeys(recs); err != nil {
						t.Fatal(err)
					}
				} else if err := s.deleteKey(st.del, time.Unix(1800000000, 5)); err != nil {
					t.Fatal(err)
				}
			}
			s.crash()
			s, err = openBoltStore(dir)
			if err != nil {
				t.Fatalf("reopen after a crash: %v", err)
			}
			defer s.close()
			c, err := s.load()
			if err != nil {
				t.Fatal(err)
			}
			var got []Ref
			for _, k := range c.keys {
				got = append(got, k.Ref)
				if want := testKey(k.Ref, ""); !bytes.Equal(k.Material, want.Material) || k.Attrs.Label != fmt.Sprint("k", k.Ref) || !k.Created.Equal(want.Created) {
					t.Errorf("key %s came back as %+v", k.Ref, k)
				}
			}
			slices.Sort(got)
			if !slices.Equal(got, tt.wantKeys) {
				t.Errorf("keys after the crash: %v, want %v", got, tt.wantKeys)
			}
			var tombs []Ref
			for r, at := range c.tombstones {
				tombs = append(tombs, r)
				if at.UnixNano() != time.Unix(1800000000, 5).UnixNano() {
					t.Errorf("tombstone %s at %v", r, at)
				}
			}
			slices.Sort(tombs)
			if !slices.Equal(tombs, tt.wantTombs) {
				t.Errorf("tombstones after the crash: %v, want %v", tombs, tt.wantTombs)
			}
			// The recovery folded the log into bbolt and emptied it.
			if b, err := os.ReadFile(filepath.Join(dir, keyLogFile)); err != nil || string(b) != keyLogMagic {
				t.Errorf("key log after recovery: %q, %v; want only its header", b, err)
			}
		})
	}
}

// writeTestLog appends batches of ops to a fresh log in dir, as a store
// would, and leaves it unfolded. It returns the file's bytes and the
// offset where each batch starts.
func writeTestLog(t *testing.T, dir string, batches [][]logOp) ([]byte, []int) {
	t.Helper()
	l, err := openKeyLog(dir, nil, func([]logOp) error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	var starts []int
	for _, b := range batches {
		starts = append(starts, int(l.size))
		if err := l.append(b); err != nil {
			t.Fatal(err)
		}
	}
	l.abandon()
	data, err := os.ReadFile(filepath.Join(dir, keyLogFile))
	if err != nil {
		t.Fatal(err)
	}
	return data, starts
}

func storeOps(refs ...Ref) []logOp {
	var ops []logOp
	for _, r := range refs {
		ops = append(ops, logOp{ref: r, value: []byte(fmt.Sprintf(`{"ref":%d,"pad":"%s"}`, r, strings.Repeat("x", int(r%64)*7)))})
	}
	return ops
}

func refsOf(ops []logOp) []Ref {
	var out []Ref
	for _, op := range ops {
		out = append(out, op.ref)
	}
	return out
}

// TestKeyLogTornTail: a crash can leave the last batch (never synced, so
// never acknowledged) cut anywhere, or with its pages written out of
// order; recovery keeps every earlier batch and drops that one.
func TestKeyLogTornTail(t *testing.T) {
	batches := [][]logOp{storeOps(1, 2), {{ref: 1, del: true, at: 99}}, storeOps(3, 4, 5)}
	data, starts := writeTestLog(t, t.TempDir(), batches)
	last := starts[2]
	want := append(append([]logOp{}, batches[0]...), batches[1]...)

	damaged := map[string][]byte{}
	for cut := last; cut < len(data); cut++ {
		damaged[fmt.Sprintf("cut at %d", cut)] = data[:cut]
	}
	zeroFirst := bytes.Clone(data)
	_, n, err := parseFrame(data[last:])
	if err != nil {
		t.Fatal(err)
	}
	clear(zeroFirst[last : last+n])
	damaged["first frame of the last batch never written"] = zeroFirst
	damaged["zeros after the last batch's first frame"] = append(bytes.Clone(data[:last+n]), make([]byte, 4096)...)
	damaged["zeros after a whole log"] = append(bytes.Clone(data), make([]byte, 4096)...)

	for name, b := range damaged {
		t.Run(name, func(t *testing.T) {
			got, err := parseKeyLog(b)
			if err != nil {
				t.Fatalf("a torn tail was refused: %v", err)
			}
			w := want
			if name == "zeros after a whole log" {
				w = append(append([]logOp{}, want...), batches[2]...)
			}
			if !slices.Equal(refsOf(got), refsOf(w)) {
				t.Errorf("recovered %v, want %v", refsOf(got), refsOf(w))
			}
		})
	}
}

// TestKeyLogDamageRefused: damage to a synced batch, with later batches
// after it, is not a crash's doing: the store refuses to open, says
// where, and leaves every file exactly as it was.
func TestKeyLogDamageRefused(t *testing.T) {
	tests := []struct {
		name   string
		damage func(data []byte, starts []int) []byte
		want   string
	}{
		{"a byte flipped in the first batch", func(d []byte, s []int) []byte {
			d = bytes.Clone(d)
			d[s[0]+20] ^= 0x40
			return d
		}, "damaged"},
		{"a frame of the first batch zeroed", func(d []byte, s []int) []byte {
			d = bytes.Clone(d)
			clear(d[s[0] : s[0]+12])
			return d
		}, "damaged"},
		{"not a key log", func(d []byte, s []int) []byte {
			return append([]byte("some other file\n"), d[len(keyLogMagic):]...)
		}, "not an hsmsh key log"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			s, err := openBoltStore(dir)
			if err != nil {
				t.Fatal(err)
			}
			for r := Ref(1); r <= 3; r++ {
				if err := s.putKeys([]*keyRecord{testKey(r, "x")}); err != nil {
					t.Fatal(err)
				}
			}
			starts := []int{len(keyLogMagic)}
			s.crash()
			path := filepath.Join(dir, keyLogFile)
			data, _ := os.ReadFile(path)
			bad := tt.damage(data, starts)
			if err := os.WriteFile(path, bad, 0o600); err != nil {
				t.Fatal(err)
			}
			dbBefore := storeFileBytes(t, filepath.Join(dir, storeFile))
			_, err = openBoltStore(dir)
			if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), path) {
				t.Fatalf("open with a damaged key log: %v; want an error naming %s and saying %q", err, path, tt.want)
			}
			if got, _ := os.ReadFile(path); !bytes.Equal(got, bad) {
				t.Error("the damaged key log was changed")
			}
			if got := storeFileBytes(t, filepath.Join(dir, storeFile)); !bytes.Equal(got, dbBefore) {
				t.Error("keys.db was changed although the key log was refused")
			}
		})
	}
}

// TestKeyLogCheckpoint: past checkpointBytes the log is folded into
// bbolt and emptied, and nothing is lost across it.
func TestKeyLogCheckpoint(t *testing.T) {
	dir := t.TempDir()
	s, err := openBoltStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	s.log.checkpointBytes = 2 << 10
	const n = 60
	for r := Ref(1); r <= n; r++ {
		if err := s.putKeys([]*keyRecord{testKey(r, "x")}); err != nil {
			t.Fatal(err)
		}
	}
	s.crash()
	// Most of the keys went to bbolt by the folds of logs set aside; the
	// log holds only what came after the last.
	data, err := os.ReadFile(filepath.Join(dir, keyLogFile))
	if err != nil {
		t.Fatal(err)
	}
	if ops, err := parseKeyLog(data); err != nil || len(ops) >= n/2 {
		t.Errorf("the key log still holds %d of %d ops (%v): it was not set aside and folded", len(ops), n, err)
	}
	if _, err := os.Stat(filepath.Join(dir, keyLogOldFile)); !os.IsNotExist(err) {
		t.Errorf("keys.log.old is still there once its fold ended: %v", err)
	}
	s, err = openBoltStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.close()
	c, err := s.load()
	if err != nil {
		t.Fatal(err)
	}
	if len(c.keys) != n {
		t.Errorf("%d keys after checkpoints and a crash, want %d", len(c.keys), n)
	}
}

// TestKeyLogOldThenNew: a crash while a log set aside (keys.log.old)
// was being folded leaves two logs; recovery applies the old one first.
func TestKeyLogOldThenNew(t *testing.T) {
	dir := t.TempDir()
	s, err := openBoltStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	for r := Ref(1); r <= 2; r++ {
		if err := s.putKeys([]*keyRecord{testKey(r, fmt.Sprint("k", r))}); err != nil {
			t.Fatal(err)
		}
	}
	s.crash()
	// What the first log holds is set aside, as rotate does, and a new
	// log deletes key 1 and stores key 3.
	if err := os.Rename(filepath.Join(dir, keyLogFile), filepath.Join(dir, keyLogOldFile)); err != nil {
		t.Fatal(err)
	}
	s, err = openBoltStoreWithoutRecovery(t, dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.deleteKey(1, time.Unix(1800000000, 5)); err != nil {
		t.Fatal(err)
	}
	if err := s.putKeys([]*keyRecord{testKey(3, "k3")}); err != nil {
		t.Fatal(err)
	}
	s.crash()
	s, err = openBoltStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.close()
	c, err := s.load()
	if err != nil {
		t.Fatal(err)
	}
	var got []Ref
	for _, k := range c.keys {
		got = append(got, k.Ref)
	}
	slices.Sort(got)
	if !slices.Equal(got, []Ref{2, 3}) || c.tombstones[1].IsZero() {
		t.Errorf("after recovering keys.log.old then keys.log: keys %v, tombstones %v; want keys [2 3] and key 1 deleted", got, c.tombstones)
	}
	if _, err := os.Stat(filepath.Join(dir, keyLogOldFile)); !os.IsNotExist(err) {
		t.Errorf("keys.log.old is still there after recovery: %v", err)
	}
}

// openBoltStoreWithoutRecovery opens the store in dir with a fresh key
// log, leaving keys.log.old unread: the state just after a rotation.
func openBoltStoreWithoutRecovery(t *testing.T, dir string) (*boltStore, error) {
	t.Helper()
	old := filepath.Join(dir, keyLogOldFile)
	hidden := filepath.Join(t.TempDir(), "old")
	if err := os.Rename(old, hidden); err != nil {
		return nil, err
	}
	s, err := openBoltStore(dir)
	if err != nil {
		return nil, err
	}
	return s, os.Rename(hidden, old)
}

// TestKeyLogConcurrent: callers that append at once share syncs, and
// every acknowledged op is in the log, each caller's in its order.
func TestKeyLogConcurrent(t *testing.T) {
	dir := t.TempDir()
	l, err := openKeyLog(dir, nil, func([]logOp) error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	const callers, each = 16, 40
	var wg sync.WaitGroup
	for c := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				ref := Ref(c*1000 + i + 1)
				if err := l.append(storeOps(ref)); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	batches := l.batch
	l.abandon()
	data, err := os.ReadFile(filepath.Join(dir, keyLogFile))
	if err != nil {
		t.Fatal(err)
	}
	ops, err := parseKeyLog(data)
	if err != nil {
		t.Fatal(err)
	}
	if len(ops) != callers*each {
		t.Fatalf("%d ops in the log, want %d", len(ops), callers*each)
	}
	next := map[int]int{}
	for _, op := range ops {
		c, i := int(op.ref-1)/1000, int(op.ref-1)%1000
		if i != next[c] {
			t.Fatalf("caller %d's op %d came before its op %d", c, i, next[c])
		}
		next[c]++
	}
	// Group commit: callers that wait while a sync runs share the next.
	if batches > uint64(len(ops))*3/4 {
		t.Errorf("%d ops took %d syncs: callers did not share them", len(ops), batches)
	}
	t.Logf("%d ops in %d batches", len(ops), batches)
}

// TestKeyLogWriteError: a failed write (a full disk) fails its batch
// with the log's name, and the next batch is written at the same place
// once it can be: only a failed sync stops the log.
func TestKeyLogWriteError(t *testing.T) {
	full, err := os.OpenFile("/dev/full", os.O_WRONLY, 0)
	if err != nil {
		t.Skip("no /dev/full here")
	}
	dir := t.TempDir()
	l, err := openKeyLog(dir, nil, func([]logOp) error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	good := l.f
	l.f = full
	err = l.append(storeOps(1))
	if err == nil || !strings.Contains(err.Error(), "write key log") {
		t.Fatalf("append to a full disk: %v", err)
	}
	if l.failed != nil {
		t.Fatalf("a failed write stopped the log: %v", l.failed)
	}
	l.f = good
	full.Close()
	if err := l.append(storeOps(2)); err != nil {
		t.Fatalf("append once the disk has room: %v", err)
	}
	l.abandon()
	data, _ := os.ReadFile(filepath.Join(dir, keyLogFile))
	ops, err := parseKeyLog(data)
	if err != nil || !slices.Equal(refsOf(ops), []Ref{2}) {
		t.Fatalf("log after the failed write: %v, %v; want only key 2", refsOf(ops), err)
	}
}

// BenchmarkKeyLogAppend measures one durable append (write and
// fdatasync) with 1 and 8 callers sharing syncs.
func BenchmarkKeyLogAppend(b *testing.B) {
	for _, conc := range []int{1, 8} {
		b.Run(fmt.Sprintf("callers=%d", conc), func(b *testing.B) {
			l, err := openKeyLog(b.TempDir(), nil, func([]logOp) error { return nil })
			if err != nil {
				b.Fatal(err)
			}
			defer l.abandon()
			op := storeOps(700)
			b.SetParallelism(conc)
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if err := l.append(op); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

// FuzzParseKeyLog: whatever a key log file holds, reading it answers
// ops or an error, never a panic, and what it answers is exactly what
// writing those ops gives back.
func FuzzParseKeyLog(f *testing.F) {
	dir := f.TempDir()
	data, _ := writeTestLogF(f, dir, [][]logOp{storeOps(1, 2), {{ref: 1, del: true, at: 5}}})
	f.Add(data)
	f.Add(data[:len(data)-3])
	f.Add([]byte(keyLogMagic))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		ops, err := parseKeyLog(b)
		if err != nil {
			return
		}
		// Re-encoding what was read, one batch, reads back the same.
		again := []byte(keyLogMagic)
		for i, op := range ops {
			again = appendFrame(again, op, 1, i == len(ops)-1)
		}
		back, err := parseKeyLog(again)
		if err != nil || len(back) != len(ops) {
			t.Fatalf("re-read %d ops: %d, %v", len(ops), len(back), err)
		}
		for i := range ops {
			if back[i].ref != ops[i].ref || back[i].del != ops[i].del || back[i].at != ops[i].at || !bytes.Equal(back[i].value, ops[i].value) {
				t.Fatalf("op %d changed: %+v, then %+v", i, ops[i], back[i])
			}
		}
	})
}

// writeTestLogF is writeTestLog for a fuzz target's seed.
func writeTestLogF(f *testing.F, dir string, batches [][]logOp) ([]byte, error) {
	l, err := openKeyLog(dir, nil, func([]logOp) error { return nil })
	if err != nil {
		f.Fatal(err)
	}
	for _, b := range batches {
		if err := l.append(b); err != nil {
			f.Fatal(err)
		}
	}
	l.abandon()
	return os.ReadFile(filepath.Join(dir, keyLogFile))
}
