package wire

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
)

func TestRoundTrip(t *testing.T) {
	for _, f := range []Frame{
		{Kind: KindRequest, ID: 1, Payload: []byte(`{"op":"sign"}`)},
		{Kind: KindResponse, ID: 0xffffffff, Payload: nil},
		{Kind: KindError, ID: 7, Payload: []byte("key not found")},
		{Kind: KindPing, ID: 2, Payload: bytes.Repeat([]byte{0}, 1000)},
	} {
		var buf bytes.Buffer
		if err := Write(&buf, f); err != nil {
			t.Fatal(err)
		}
		got, err := Read(&buf, 0)
		if err != nil {
			t.Fatal(err)
		}
		if got.Kind != f.Kind || got.ID != f.ID || !bytes.Equal(got.Payload, f.Payload) {
			t.Errorf("round trip: %+v != %+v", got, f)
		}
	}
}

func TestReadErrors(t *testing.T) {
	good := func() []byte {
		var buf bytes.Buffer
		Write(&buf, Frame{Kind: KindRequest, ID: 3, Payload: []byte("hello")})
		return buf.Bytes()
	}
	tests := []struct {
		name  string
		input []byte
		max   int
		want  string
		is    error
	}{
		{"empty", nil, 0, "EOF", io.EOF},
		{"short header", good()[:5], 0, "truncated frame header", nil},
		{"garbage", []byte("GET / HTTP/1.1\r\n\r\n"), 0, "bad magic", ErrNotHSMSH},
		{"tls hello", append([]byte{0x16, 0x03, 0x01}, make([]byte, 20)...), 0, "bad magic", ErrNotHSMSH},
		{"other version", append([]byte{'H', 'S', 9}, good()[3:]...), 0, "version 9", nil},
		{"version 1, JSON payloads", append([]byte{'H', 'S', 1}, good()[3:]...), 0, "version 1 and this hsmsh speaks 3", nil},
		{"version 2, administration calls in JSON", append([]byte{'H', 'S', 2}, good()[3:]...), 0, "version 2 and this hsmsh speaks 3", nil},
		{"bad kind", append([]byte{'H', 'S', Version, 99}, good()[4:]...), 0, "kind 99", nil},
		{"oversize", good(), 4, "announced 5 bytes, the limit is 4", ErrTooLarge},
		{"huge announce", append([]byte{'H', 'S', Version, 1, 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff}, 'x'), 0, "the limit is", ErrTooLarge},
		{"short payload", good()[:14], 0, "truncated frame payload", io.ErrUnexpectedEOF},
	}
	for _, tt := range tests {
		_, err := Read(bytes.NewReader(tt.input), tt.max)
		if err == nil || !strings.Contains(err.Error(), tt.want) || (tt.is != nil && !errors.Is(err, tt.is)) {
			t.Errorf("%s: err = %v, want %q", tt.name, err, tt.want)
		}
	}
	var ve *VersionError
	if _, err := Read(bytes.NewReader(append([]byte{'H', 'S', 7}, good()[3:]...)), 0); !errors.As(err, &ve) || ve.Peer != 7 {
		t.Errorf("version error: %v", err)
	}
	if err := Write(io.Discard, Frame{Kind: KindRequest, Payload: make([]byte, MaxPayload+1)}); !errors.Is(err, ErrTooLarge) {
		t.Errorf("oversize write: %v", err)
	}
}

// FuzzReadFrame feeds arbitrary bytes to the decoder: it must return a
// frame or an error, never panic or allocate past the limit, and a frame
// it returns must encode back to the bytes it read.
func FuzzReadFrame(f *testing.F) {
	var buf bytes.Buffer
	Write(&buf, Frame{Kind: KindRequest, ID: 1, Payload: []byte(`{"op":"list"}`)})
	f.Add(buf.Bytes())
	f.Add([]byte("HS"))
	f.Add([]byte{'H', 'S', Version, 2, 0, 0, 0, 0, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		fr, err := Read(bytes.NewReader(data), 1<<16)
		if err != nil {
			return
		}
		if len(fr.Payload) > 1<<16 {
			t.Fatalf("payload of %d bytes past the limit", len(fr.Payload))
		}
		var out bytes.Buffer
		if err := Write(&out, fr); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(out.Bytes(), data[:out.Len()]) {
			t.Fatalf("re-encoding differs")
		}
	})
}
