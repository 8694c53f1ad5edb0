package authsession

import (
	"bytes"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestEnvelopeRefusals(t *testing.T) {
	domain := mustDomain(t)
	s := handshake(t, domain)
	other := handshake(t, domain) // another session of the same cluster
	ekt := s.reply.EKT
	cmd, err := Seal(s.clientSK, ToHSM, 5, ekt, []byte("key generate aes256"))
	if err != nil {
		t.Fatal(err)
	}
	ans, err := Seal(s.hsmSK, ToClient, 5, ekt, []byte("key 17"))
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name string
		sk   [32]byte
		dir  Direction
		ekt  []byte
		e    Envelope
		is   error
		want string
	}{
		{"body bit flipped (nonce)", s.hsmSK, ToHSM, ekt, Envelope{ekt, 5, flip(cmd.Body, 0)}, ErrTampered, "altered"},
		{"body bit flipped (ciphertext)", s.hsmSK, ToHSM, ekt, Envelope{ekt, 5, flip(cmd.Body, 14)}, ErrTampered, "altered"},
		{"body bit flipped (tag)", s.hsmSK, ToHSM, ekt, Envelope{ekt, 5, flip(cmd.Body, len(cmd.Body)-1)}, ErrTampered, "altered"},
		{"seq changed", s.hsmSK, ToHSM, ekt, Envelope{ekt, 6, cmd.Body}, ErrTampered, "seq 6"},
		{"EKT changed in envelope only", s.hsmSK, ToHSM, ekt, Envelope{other.reply.EKT, 5, cmd.Body}, ErrTampered, "different session token"},
		{"spliced onto another session's EKT", other.hsmSK, ToHSM, other.reply.EKT, Envelope{other.reply.EKT, 5, cmd.Body}, ErrTampered, "another session key"},
		{"opened under another session key", other.hsmSK, ToHSM, ekt, cmd, ErrTampered, "another session key"},
		{"command reflected as an answer", s.clientSK, ToClient, ekt, Envelope{nil, 5, cmd.Body}, ErrTampered, "to client"},
		{"answer to another request", s.clientSK, ToClient, other.reply.EKT, ans, ErrTampered, "altered"},
		{"body truncated", s.hsmSK, ToHSM, ekt, Envelope{ekt, 5, cmd.Body[:27]}, ErrTampered, "27-byte body"},
		{"no body", s.hsmSK, ToHSM, ekt, Envelope{ekt, 5, nil}, ErrTampered, "0-byte body"},
		{"seq 0", s.hsmSK, ToHSM, ekt, Envelope{ekt, 0, cmd.Body}, nil, "sequences start at 1"},
		{"unknown direction", s.hsmSK, 3, ekt, cmd, nil, "unknown direction 3"},
		{"no EKT", s.hsmSK, ToHSM, nil, Envelope{nil, 5, cmd.Body}, nil, "EKT) is 0 bytes"},
		{"answer carrying an EKT", s.clientSK, ToClient, ekt, Envelope{ekt, 5, ans.Body}, nil, "must not carry"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pt, err := Open(tt.sk, tt.dir, tt.ekt, tt.e)
			if err == nil || pt != nil {
				t.Fatalf("opened: %q", pt)
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("got %v, want %v", err, tt.is)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not say %q", err, tt.want)
			}
			checkMessage(t, err)
		})
	}

	// The untouched envelopes still open: the refusals above are not noise.
	if _, err := Open(s.hsmSK, ToHSM, ekt, cmd); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(s.clientSK, ToClient, ekt, ans); err != nil {
		t.Fatal(err)
	}
}

func TestSealRefusesBadInput(t *testing.T) {
	var sk [32]byte
	for _, tt := range []struct {
		name string
		dir  Direction
		seq  uint64
		ekt  []byte
		want string
	}{
		{"direction 0", 0, 1, []byte{1}, "unknown direction 0"},
		{"seq 0", ToHSM, 0, []byte{1}, "start at 1"},
		{"no EKT", ToClient, 1, nil, "0 bytes"},
		{"huge EKT", ToHSM, 1, make([]byte, maxEKT+1), "1025 bytes"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Seal(sk, tt.dir, tt.seq, tt.ekt, []byte("x"))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want an error saying %q", err, tt.want)
			}
		})
	}
}

func TestSealUsesFreshNonces(t *testing.T) {
	var sk [32]byte
	a, err := Seal(sk, ToHSM, 1, []byte("ekt"), []byte("same"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := Seal(sk, ToHSM, 1, []byte("ekt"), []byte("same"))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(a.Body, b.Body) {
		t.Fatal("sealing twice gave the same body")
	}
	if len(a.Body) != len("same")+gcmOverLen {
		t.Errorf("body is %d bytes", len(a.Body))
	}
}

// hsmServer is a minimal HSM of the cluster: it serves any session of its
// domain, with one Window per session.
type hsmServer struct {
	domain  DomainKey
	windows map[string]*Window
}

func (h *hsmServer) serve(e Envelope) ([]byte, error) {
	sk, c, err := OpenEKT(h.domain, e.EKT, time.Now())
	if err != nil {
		return nil, err
	}
	pt, err := Open(sk, ToHSM, e.EKT, e)
	if err != nil {
		return nil, err
	}
	w := h.windows[c.SessionID]
	if w == nil {
		w = new(Window)
		h.windows[c.SessionID] = w
	}
	if err := w.Accept(e.Seq); err != nil {
		return nil, err
	}
	return pt, nil
}

func TestReplayAndReorderAtHSM(t *testing.T) {
	domain := mustDomain(t)
	s := handshake(t, domain)
	hsm := &hsmServer{domain: domain, windows: map[string]*Window{}}
	var sent []Envelope
	for seq := uint64(1); seq <= 3; seq++ {
		e, err := Seal(s.clientSK, ToHSM, seq, s.reply.EKT, []byte("cmd"))
		if err != nil {
			t.Fatal(err)
		}
		sent = append(sent, e)
	}
	if _, err := hsm.serve(sent[0]); err != nil {
		t.Fatal(err)
	}
	if _, err := hsm.serve(sent[2]); err != nil { // seq 2 went to another HSM
		t.Fatal(err)
	}

	_, err := hsm.serve(sent[2])
	if !errors.Is(err, ErrReplay) || !strings.Contains(err.Error(), "seq 3 was already accepted") {
		t.Errorf("replay: got %v", err)
	}
	_, err = hsm.serve(sent[0])
	if !errors.Is(err, ErrReplay) {
		t.Errorf("replay of an older envelope: got %v", err)
	}
	_, err = hsm.serve(sent[1])
	if !errors.Is(err, ErrReorder) || !strings.Contains(err.Error(), "seq 2 arrived after seq 3") {
		t.Errorf("reorder: got %v", err)
	}

	// A forged envelope with a high seq must not move the window.
	forged := Envelope{EKT: s.reply.EKT, Seq: 1000, Body: flip(sent[2].Body, 20)}
	if _, err := hsm.serve(forged); !errors.Is(err, ErrTampered) {
		t.Fatalf("forged: got %v", err)
	}
	next, err := Seal(s.clientSK, ToHSM, 4, s.reply.EKT, []byte("cmd"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := hsm.serve(next); err != nil {
		t.Fatalf("seq 4 after a forged seq 1000: %v", err)
	}
}

func TestWindow(t *testing.T) {
	type step struct {
		seq  uint64
		want error // nil, ErrReplay, ErrReorder, or errSeqZero for a plain error
	}
	errSeqZero := errors.New("seq 0")
	tests := []struct {
		name  string
		steps []step
	}{
		{"in order", []step{{1, nil}, {2, nil}, {3, nil}}},
		{"gaps allowed", []step{{1, nil}, {5, nil}, {100, nil}}},
		{"first need not be 1", []step{{7, nil}, {8, nil}}},
		{"zero refused first", []step{{0, errSeqZero}, {1, nil}}},
		{"zero refused later", []step{{1, nil}, {0, errSeqZero}, {2, nil}}},
		{"replay of the latest", []step{{1, nil}, {1, ErrReplay}}},
		{"replay of an older one", []step{{1, nil}, {2, nil}, {3, nil}, {1, ErrReplay}}},
		{"older, never seen", []step{{1, nil}, {3, nil}, {2, ErrReorder}}},
		{"refusal does not move the window", []step{{5, nil}, {4, ErrReorder}, {4, ErrReorder}, {6, nil}}},
		{"replay 63 back is still known", []step{{1, nil}, {64, nil}, {1, ErrReplay}}},
		{"64 back is beyond memory", []step{{1, nil}, {65, nil}, {1, ErrReorder}}},
		{"big jump forgets the past", []step{{1, nil}, {2, nil}, {1000, nil}, {2, ErrReorder}, {1000, ErrReplay}}},
		{"largest seq", []step{{1, nil}, {^uint64(0), nil}, {^uint64(0), ErrReplay}, {2, ErrReorder}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var w Window
			for i, s := range tt.steps {
				err := w.Accept(s.seq)
				switch {
				case s.want == nil && err != nil:
					t.Fatalf("step %d seq %d: %v", i, s.seq, err)
				case s.want == errSeqZero:
					if err == nil || errors.Is(err, ErrReplay) || errors.Is(err, ErrReorder) {
						t.Fatalf("step %d seq 0: got %v", i, err)
					}
				case s.want != nil && !errors.Is(err, s.want):
					t.Fatalf("step %d seq %d: got %v, want %v", i, s.seq, err, s.want)
				}
			}
		})
	}
}

// TestWindowConcurrent lets many goroutines race to accept the same
// numbers: none may be accepted twice.
func TestWindowConcurrent(t *testing.T) {
	const n = 200
	var w Window
	var accepted [n + 1]atomic.Int32
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for seq := uint64(1); seq <= n; seq++ {
				if w.Accept(seq) == nil {
					accepted[seq].Add(1)
				}
			}
		})
	}
	wg.Wait()
	for seq := range accepted {
		if c := accepted[seq].Load(); c > 1 {
			t.Fatalf("seq %d accepted %d times", seq, c)
		}
	}
	if accepted[n].Load() != 1 {
		t.Fatalf("seq %d, the highest, was never accepted", n)
	}
	if err := w.Accept(n); !errors.Is(err, ErrReplay) {
		t.Fatalf("seq %d after the race: %v", n, err)
	}
}

func TestLaneSeq(t *testing.T) {
	for _, tt := range []struct {
		lane    uint16
		n       uint64
		wantErr string
	}{
		{0, 1, ""},
		{3, 42, ""},
		{MaxLanes - 1, 1<<48 - 1, ""},
		{MaxLanes, 1, "at most 64 lanes"},
		{0, 0, "numbers run from 1"},
		{1, 1 << 48, "numbers run from 1"},
	} {
		seq, err := LaneSeq(tt.lane, tt.n)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("LaneSeq(%d, %d) = %d, %v; want an error saying %q", tt.lane, tt.n, seq, err, tt.wantErr)
			}
			continue
		}
		if err != nil || LaneOf(seq) != tt.lane || seq&(1<<48-1) != tt.n {
			t.Errorf("LaneSeq(%d, %d) = %#x, %v", tt.lane, tt.n, seq, err)
		}
	}
	// A window per lane: lane 1 may run behind lane 2, but within a lane
	// order holds.
	a1, _ := LaneSeq(1, 5)
	b2, _ := LaneSeq(2, 1)
	a0, _ := LaneSeq(1, 4)
	var lanes [MaxLanes]Window
	if err := lanes[LaneOf(b2)].Accept(b2); err != nil {
		t.Fatal(err)
	}
	if err := lanes[LaneOf(a1)].Accept(a1); err != nil {
		t.Fatalf("lane 1 behind lane 2: %v", err)
	}
	if err := lanes[LaneOf(a0)].Accept(a0); !errors.Is(err, ErrReorder) {
		t.Errorf("an older command on the same lane: got %v, want ErrReorder", err)
	}
}
