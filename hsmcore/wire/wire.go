// Package wire is the framing of hsmsh's client–HSM protocol: versioned,
// length-prefixed frames with request ids, so several requests can share
// one connection, and a size limit, so a peer cannot make the other side
// allocate without bound.
//
// A frame is a 12-byte header — magic "HS", version, kind, request id
// (uint32), payload length (uint32), all big-endian — then the payload.
package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Version is the protocol version this hsmsh speaks. 3: every call but
// the peer calls is a message of hsmcore/protocol/hsmsh.proto; version 2
// had the frames and key use in protocol buffers and the administration
// calls as JSON inside them, version 1 was JSON throughout. A peer of
// another version is told to run the same hsmsh on both sides rather
// than fed frames it cannot read.
const Version = 3

// HeaderSize is the size of a frame header.
const HeaderSize = 12

// MaxPayload is the default limit on a frame's payload.
const MaxPayload = 4 << 20

var magic = [2]byte{'H', 'S'}

// Kind says what a frame carries.
type Kind uint8

const (
	KindRequest  Kind = 1
	KindResponse Kind = 2
	KindError    Kind = 3 // the payload is a readable message
	KindPing     Kind = 4
	KindPong     Kind = 5
)

func (k Kind) valid() bool { return k >= KindRequest && k <= KindPong }

// Frame is one message.
type Frame struct {
	Kind    Kind
	ID      uint32
	Payload []byte
}

// Errors a reader reports; each says what the peer did wrong.
var (
	ErrNotHSMSH = errors.New("the peer does not speak the hsmsh protocol (bad magic): is the address an hsmsh serve port?")
	ErrTooLarge = errors.New("frame too large")
)

// VersionError is a peer speaking another protocol version.
type VersionError struct{ Peer uint8 }

func (e *VersionError) Error() string {
	return fmt.Sprintf("the peer speaks hsmsh protocol version %d and this hsmsh speaks %d: run the same hsmsh version on both sides", e.Peer, Version)
}

// Write writes one frame.
func Write(w io.Writer, f Frame) error {
	if len(f.Payload) > MaxPayload {
		return fmt.Errorf("%w: payload is %d bytes, the limit is %d", ErrTooLarge, len(f.Payload), MaxPayload)
	}
	if !f.Kind.valid() {
		return fmt.Errorf("frame kind %d is not valid", f.Kind)
	}
	buf := make([]byte, HeaderSize+len(f.Payload))
	copy(buf, magic[:])
	buf[2] = Version
	buf[3] = byte(f.Kind)
	binary.BigEndian.PutUint32(buf[4:8], f.ID)
	binary.BigEndian.PutUint32(buf[8:12], uint32(len(f.Payload)))
	copy(buf[HeaderSize:], f.Payload)
	_, err := w.Write(buf)
	return err
}

// Read reads one frame, refusing a payload larger than max (0: MaxPayload)
// before allocating it.
func Read(r io.Reader, max int) (Frame, error) {
	if max <= 0 {
		max = MaxPayload
	}
	var h [HeaderSize]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return Frame{}, fmt.Errorf("truncated frame header: %w", err)
		}
		return Frame{}, err
	}
	if h[0] != magic[0] || h[1] != magic[1] {
		return Frame{}, ErrNotHSMSH
	}
	if h[2] != Version {
		return Frame{}, &VersionError{Peer: h[2]}
	}
	f := Frame{Kind: Kind(h[3]), ID: binary.BigEndian.Uint32(h[4:8])}
	if !f.Kind.valid() {
		return Frame{}, fmt.Errorf("frame kind %d is not valid", h[3])
	}
	n := binary.BigEndian.Uint32(h[8:12])
	if uint64(n) > uint64(max) {
		return Frame{}, fmt.Errorf("%w: the peer announced %d bytes, the limit is %d", ErrTooLarge, n, max)
	}
	f.Payload = make([]byte, n)
	if _, err := io.ReadFull(r, f.Payload); err != nil {
		return Frame{}, fmt.Errorf("truncated frame payload (%d bytes announced): %w", n, err)
	}
	return f, nil
}
