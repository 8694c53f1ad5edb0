// Package keywrap is the AES key wrap of RFC 3394 and its padded form of
// RFC 5649 (NIST SP 800-38F's KW and KWP), on crypto/aes. Go's standard
// library and golang.org/x/crypto have neither; both are short, fixed
// constructions, checked here against the RFCs' test vectors and against
// OpenSSL (id-aes*-wrap, id-aes*-wrap-pad) in the tests.
package keywrap

import (
	"crypto/aes"
	"crypto/subtle"
	"encoding/binary"
	"errors"
)

// DefaultIV is RFC 3394's initial value.
var DefaultIV = [8]byte{0xa6, 0xa6, 0xa6, 0xa6, 0xa6, 0xa6, 0xa6, 0xa6}

// kwpPrefix is RFC 5649's alternative initial value, before the length.
var kwpPrefix = [4]byte{0xa6, 0x59, 0x59, 0xa6}

// ErrUnwrap is a wrapped key that does not unwrap under the key given:
// the wrong key, or data that was altered.
var ErrUnwrap = errors.New("the wrapped key does not unwrap: wrong unwrapping key, or the data was altered")

// Wrap wraps plaintext (a multiple of 8 bytes, at least 16) under kek
// with RFC 3394 and the default initial value.
func Wrap(kek, plaintext []byte) ([]byte, error) {
	if len(plaintext) < 16 || len(plaintext)%8 != 0 {
		return nil, errors.New("AES key wrap without padding needs a multiple of 8 bytes, at least 16")
	}
	return wrap(kek, DefaultIV, plaintext)
}

// Unwrap reverses Wrap.
func Unwrap(kek, wrapped []byte) ([]byte, error) {
	iv, p, err := unwrap(kek, wrapped)
	if err != nil {
		return nil, err
	}
	if subtle.ConstantTimeCompare(iv[:], DefaultIV[:]) != 1 {
		clear(p)
		return nil, ErrUnwrap
	}
	return p, nil
}

// WrapPad wraps plaintext of any length from 1 byte with RFC 5649.
func WrapPad(kek, plaintext []byte) ([]byte, error) {
	if len(plaintext) == 0 || uint64(len(plaintext)) > 1<<32-1 {
		return nil, errors.New("AES key wrap with padding needs 1 byte to 4 GiB")
	}
	var iv [8]byte
	copy(iv[:], kwpPrefix[:])
	binary.BigEndian.PutUint32(iv[4:], uint32(len(plaintext)))
	padded := make([]byte, (len(plaintext)+7)/8*8)
	copy(padded, plaintext)
	defer clear(padded)
	if len(padded) == 8 {
		// One block: a single AES encryption of IV ‖ P.
		b, err := aes.NewCipher(kek)
		if err != nil {
			return nil, err
		}
		out := make([]byte, 16)
		copy(out, iv[:])
		copy(out[8:], padded)
		b.Encrypt(out, out)
		return out, nil
	}
	return wrap(kek, iv, padded)
}

// UnwrapPad reverses WrapPad.
func UnwrapPad(kek, wrapped []byte) ([]byte, error) {
	var iv [8]byte
	var p []byte
	if len(wrapped) == 16 {
		b, err := aes.NewCipher(kek)
		if err != nil {
			return nil, err
		}
		out := make([]byte, 16)
		b.Decrypt(out, wrapped)
		copy(iv[:], out[:8])
		p = out[8:]
	} else {
		var err error
		if iv, p, err = unwrap(kek, wrapped); err != nil {
			return nil, err
		}
	}
	n := int(binary.BigEndian.Uint32(iv[4:]))
	bad := subtle.ConstantTimeCompare(iv[:4], kwpPrefix[:]) != 1 || n > len(p) || n <= len(p)-8
	if !bad {
		for _, c := range p[n:] {
			bad = bad || c != 0
		}
	}
	if bad {
		clear(p)
		return nil, ErrUnwrap
	}
	return p[:n], nil
}

// wrap is RFC 3394 §2.2.1, the index-based form.
func wrap(kek []byte, iv [8]byte, p []byte) ([]byte, error) {
	b, err := aes.NewCipher(kek)
	if err != nil {
		return nil, err
	}
	n := len(p) / 8
	out := make([]byte, 8+len(p))
	copy(out[8:], p)
	a := iv
	var buf [16]byte
	for j := 0; j <= 5; j++ {
		for i := 1; i <= n; i++ {
			copy(buf[:8], a[:])
			copy(buf[8:], out[8*i:8*i+8])
			b.Encrypt(buf[:], buf[:])
			t := uint64(n*j + i)
			binary.BigEndian.PutUint64(a[:], binary.BigEndian.Uint64(buf[:8])^t)
			copy(out[8*i:8*i+8], buf[8:])
		}
	}
	copy(out[:8], a[:])
	clear(buf[:])
	return out, nil
}

// unwrap is RFC 3394 §2.2.2; the caller checks the initial value.
func unwrap(kek, c []byte) (iv [8]byte, p []byte, err error) {
	if len(c) < 24 || len(c)%8 != 0 {
		return iv, nil, ErrUnwrap
	}
	b, err := aes.NewCipher(kek)
	if err != nil {
		return iv, nil, err
	}
	n := len(c)/8 - 1
	p = make([]byte, 8*n)
	copy(p, c[8:])
	a := [8]byte(c[:8])
	var buf [16]byte
	for j := 5; j >= 0; j-- {
		for i := n; i >= 1; i-- {
			t := uint64(n*j + i)
			binary.BigEndian.PutUint64(buf[:8], binary.BigEndian.Uint64(a[:])^t)
			copy(buf[8:], p[8*(i-1):8*i])
			b.Decrypt(buf[:], buf[:])
			copy(a[:], buf[:8])
			copy(p[8*(i-1):8*i], buf[8:])
		}
	}
	clear(buf[:])
	return a, p, nil
}
