package authsession

import (
	"bytes"
	"crypto/cipher"
	"crypto/sha512"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
)

// Direction says which way an envelope travels. It is bound into the AAD, so
// a command cannot be reflected back to the client as an answer.
type Direction byte

const (
	ToHSM    Direction = 1
	ToClient Direction = 2
)

func (d Direction) String() string {
	switch d {
	case ToHSM:
		return "to HSM"
	case ToClient:
		return "to client"
	}
	return fmt.Sprintf("direction %d", byte(d))
}

// Envelope is one command or one answer.
type Envelope struct {
	EKT  []byte `json:"ekt"` // only on ToHSM envelopes
	Seq  uint64 `json:"seq"`
	Body []byte `json:"body"` // nonce ‖ GCM ciphertext; AAD binds direction, seq and SHA-384(EKT)
}

// Sealer seals and opens one session's envelopes under its session key
// and EKT, with the AES-GCM built once and the EKT's digest taken once:
// a session sends many commands, and building both for each cost more
// than sealing. (Go's AES-GCM keeps no state between calls, so one Sealer
// serves concurrent commands.)
type Sealer struct {
	g   cipher.AEAD
	ekt []byte
	sum [sha512.Size384]byte
}

// NewSealer makes the Sealer of the session whose key is sk and whose
// token is ekt.
func NewSealer(sk [32]byte, ekt []byte) (*Sealer, error) {
	if len(ekt) == 0 || len(ekt) > maxEKT {
		return nil, fmt.Errorf("session token (EKT) is %d bytes, want 1 to %d", len(ekt), maxEKT)
	}
	g, err := newGCM(sk[:])
	if err != nil {
		return nil, err
	}
	return &Sealer{g: g, ekt: bytes.Clone(ekt), sum: sha512.Sum384(ekt)}, nil
}

// EKT is the token the Sealer binds.
func (s *Sealer) EKT() []byte { return s.ekt }

// aadLen is the length of an envelope's AAD.
const aadLen = len(labelEnvelope) + 1 + 8 + sha512.Size384

// aad binds the direction, the sequence number and the session's EKT; all
// but the label are fixed length, so the layout is unambiguous.
// The caller's buf holds it, so that a command's AAD costs no allocation.
func (s *Sealer) aad(buf *[aadLen]byte, dir Direction, seq uint64) []byte {
	aad := append(buf[:0], labelEnvelope...)
	aad = append(aad, byte(dir))
	aad = binary.BigEndian.AppendUint64(aad, seq)
	return append(aad, s.sum[:]...)
}

func checkEnvelopeArgs(dir Direction, seq uint64) error {
	if dir != ToHSM && dir != ToClient {
		return fmt.Errorf("unknown %s", dir)
	}
	if seq == 0 {
		return errors.New("sequence number 0: sequences start at 1")
	}
	return nil
}

// Seal seals one command (dir ToHSM) or one answer (dir ToClient). Number
// commands from 1 upwards, and give an answer the seq of the command it
// answers, so that the client can pair them.
func (s *Sealer) Seal(dir Direction, seq uint64, plaintext []byte) (Envelope, error) {
	if err := checkEnvelopeArgs(dir, seq); err != nil {
		return Envelope{}, fmt.Errorf("sealing an envelope: %w", err)
	}
	var buf [aadLen]byte
	e := Envelope{Seq: seq, Body: s.g.Seal(nil, nil, plaintext, s.aad(&buf, dir, seq))}
	if dir == ToHSM {
		e.EKT = bytes.Clone(s.ekt)
	}
	return e, nil
}

// Open opens an envelope travelling in direction dir.
//
// Open does not check the sequence number against earlier ones: pass e.Seq
// to the session's Window after Open succeeds, never before, so that a
// forged envelope cannot move the window.
func (s *Sealer) Open(dir Direction, e Envelope) ([]byte, error) {
	if err := checkEnvelopeArgs(dir, e.Seq); err != nil {
		return nil, fmt.Errorf("opening an envelope: %w", err)
	}
	switch {
	case dir == ToHSM && !bytes.Equal(e.EKT, s.ekt):
		return nil, fmt.Errorf("%w (it carries a different session token from the one given)", ErrTampered)
	case dir == ToClient && len(e.EKT) != 0:
		return nil, errors.New("opening an envelope: an answer must not carry a session token")
	}
	if len(e.Body) < gcmOverLen {
		return nil, fmt.Errorf("%w (seq %d, %s, %d-byte body)", ErrTampered, e.Seq, dir, len(e.Body))
	}
	var buf [aadLen]byte
	pt, err := s.g.Open(nil, nil, e.Body, s.aad(&buf, dir, e.Seq))
	if err != nil {
		return nil, fmt.Errorf("%w (seq %d, %s, %d-byte body)", ErrTampered, e.Seq, dir, len(e.Body))
	}
	return pt, nil
}

// Seal seals one envelope under sk and ekt: NewSealer then Sealer.Seal,
// for a single use. ekt is the session's EKT; for an answer, pass the EKT
// of the request it answers.
func Seal(sk [32]byte, dir Direction, seq uint64, ekt []byte, plaintext []byte) (Envelope, error) {
	s, err := NewSealer(sk, ekt)
	if err != nil {
		return Envelope{}, fmt.Errorf("sealing an envelope: %w", err)
	}
	return s.Seal(dir, seq, plaintext)
}

// Open opens one envelope under sk and ekt: NewSealer then Sealer.Open.
// ekt is the EKT the session key came from: at the HSM, the envelope's own
// EKT, after OpenEKT; at the client, the EKT of the request the answer is
// for.
func Open(sk [32]byte, dir Direction, ekt []byte, e Envelope) ([]byte, error) {
	s, err := NewSealer(sk, ekt)
	if err != nil {
		return nil, fmt.Errorf("opening an envelope: %w", err)
	}
	return s.Open(dir, e)
}

// Lanes let one session have several commands in flight at once without
// giving up ordering. The top 16 bits of a sequence number name a lane and
// the low 48 bits count within it; a client sends at most one command at a
// time on each lane, and the HSM keeps a Window per lane. Within a lane a
// replay or a reordered envelope is still refused; across lanes there is
// no order to keep, because the client did not impose one. Since the lane
// is part of the sequence number, the AAD binds it like the rest.
const (
	MaxLanes  = 64 // lanes an HSM keeps a window for, per session
	laneShift = 48
	maxInLane = 1<<laneShift - 1
)

// LaneSeq is the sequence number of the n-th command (n ≥ 1) on a lane.
func LaneSeq(lane uint16, n uint64) (uint64, error) {
	if int(lane) >= MaxLanes {
		return 0, fmt.Errorf("lane %d: at most %d lanes", lane, MaxLanes)
	}
	if n == 0 || n > maxInLane {
		return 0, fmt.Errorf("command %d on lane %d: numbers run from 1 to %d", n, lane, uint64(maxInLane))
	}
	return uint64(lane)<<laneShift | n, nil
}

// LaneOf is the lane a sequence number belongs to.
func LaneOf(seq uint64) uint16 { return uint16(seq >> laneShift) }

// Window enforces a strictly increasing sequence per (session, HSM): a
// replay and a reordered (older) envelope are refused; gaps are allowed,
// since the client may send the commands in between to other HSMs of the
// cluster. It remembers which of the 64 numbers ending at the highest it
// has accepted, to tell a replay from a late arrival. The zero value is
// ready to use and safe for concurrent use.
type Window struct {
	mu   sync.Mutex
	last uint64 // highest accepted; 0 before the first
	seen uint64 // bit i: last-i was accepted
}

// Accept records seq, or refuses it with ErrReplay or ErrReorder. The first
// seq accepted must be ≥ 1.
func (w *Window) Accept(seq uint64) error {
	if seq == 0 {
		return errors.New("sequence number 0 refused: sequences start at 1")
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if seq > w.last {
		if d := seq - w.last; d < 64 {
			w.seen <<= d
		} else {
			w.seen = 0
		}
		w.seen |= 1
		w.last = seq
		return nil
	}
	if back := w.last - seq; back < 64 && w.seen&(1<<back) != 0 {
		return fmt.Errorf("%w: seq %d was already accepted (latest %d)", ErrReplay, seq, w.last)
	}
	return fmt.Errorf("%w: seq %d arrived after seq %d", ErrReorder, seq, w.last)
}
