package keywrap

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os/exec"
	"strings"
	"testing"
)

func unhex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// The RFCs' own test vectors, both ways, and a flipped bit refused.
func TestVectors(t *testing.T) {
	for _, tt := range []struct {
		name             string
		pad              bool
		kek, key, wanted string
	}{
		{"RFC 3394 4.1, 128-bit KEK", false, "000102030405060708090A0B0C0D0E0F", "00112233445566778899AABBCCDDEEFF", "1FA68B0A8112B447 AEF34BD8FB5A7B82 9D3E862371D2CFE5"},
		{"RFC 3394 4.3, 256-bit KEK", false, "000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F", "00112233445566778899AABBCCDDEEFF", "64E8C3F9CE0F5BA2 63E9777905818A2A 93C8191E7D6E8AE7"},
		{"RFC 3394 4.6, 256-bit key", false, "000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F", "00112233445566778899AABBCCDDEEFF000102030405060708090A0B0C0D0E0F", "28C9F404C4B810F4 CBCCB35CFB87F826 3F5786E2D80ED326 CBC7F0E71A99F43B FB988B9B7A02DD21"},
		{"RFC 5649 6, 20 bytes", true, "5840df6e29b02af1ab493b705bf16ea1ae8338f4dcc176a8", "c37b7e6492584340bed12207808941155068f738", "138bdeaa9b8fa7fc61f97742e72248ee5ae6ae5360d1ae6a5f54f373fa543b6a"},
		{"RFC 5649 6, 7 bytes", true, "5840df6e29b02af1ab493b705bf16ea1ae8338f4dcc176a8", "466f7250617369", "afbeb0f07dfbf5419200f2ccb50bb24f"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			kek, key, want := unhex(t, tt.kek), unhex(t, tt.key), unhex(t, tt.wanted)
			wrapF, unwrapF := Wrap, Unwrap
			if tt.pad {
				wrapF, unwrapF = WrapPad, UnwrapPad
			}
			got, err := wrapF(kek, key)
			if err != nil || !bytes.Equal(got, want) {
				t.Fatalf("wrap = %x, %v; want %x", got, err, want)
			}
			back, err := unwrapF(kek, want)
			if err != nil || !bytes.Equal(back, key) {
				t.Fatalf("unwrap = %x, %v; want %x", back, err, key)
			}
			for i := range want {
				bad := bytes.Clone(want)
				bad[i] ^= 1
				if _, err := unwrapF(kek, bad); err != ErrUnwrap {
					t.Fatalf("byte %d flipped: %v, want ErrUnwrap", i, err)
				}
			}
			other := bytes.Clone(kek)
			other[0] ^= 1
			if _, err := unwrapF(other, want); err != ErrUnwrap {
				t.Errorf("another KEK: %v, want ErrUnwrap", err)
			}
		})
	}
}

func TestBadLengths(t *testing.T) {
	kek := make([]byte, 16)
	for _, n := range []int{0, 8, 15, 17} {
		if _, err := Wrap(kek, make([]byte, n)); err == nil {
			t.Errorf("Wrap took %d bytes", n)
		}
	}
	if _, err := WrapPad(kek, nil); err == nil {
		t.Error("WrapPad took nothing")
	}
	for _, n := range []int{0, 8, 16, 23, 25} {
		if _, err := Unwrap(kek, make([]byte, n)); err != ErrUnwrap {
			t.Errorf("Unwrap of %d bytes: %v", n, err)
		}
	}
}

// OpenSSL wraps what Go unwraps and the other way round, for every AES
// key size and payload lengths around the block edges.
func TestOpenSSL(t *testing.T) {
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Skip("openssl is not installed")
	}
	for _, kekLen := range []int{16, 24, 32} {
		for _, n := range []int{1, 7, 8, 9, 16, 24, 32, 33, 121} {
			kek, key := make([]byte, kekLen), make([]byte, n)
			rand.Read(kek)
			rand.Read(key)
			for _, pad := range []bool{false, true} {
				if !pad && (n < 16 || n%8 != 0) {
					continue
				}
				cipher := fmt.Sprintf("-id-aes%d-wrap", kekLen*8)
				wrapF, unwrapF := Wrap, Unwrap
				args := []string{"enc", cipher, "-K", hex.EncodeToString(kek), "-iv", "A6A6A6A6A6A6A6A6"}
				if pad {
					cipher += "-pad"
					wrapF, unwrapF = WrapPad, UnwrapPad
					args = []string{"enc", cipher, "-K", hex.EncodeToString(kek), "-iv", "A65959A6"}
				}
				ours, err := wrapF(kek, key)
				if err != nil {
					t.Fatal(err)
				}
				cmd := exec.Command("openssl", args...)
				cmd.Stdin = bytes.NewReader(key)
				theirs, err := cmd.Output()
				if err != nil {
					t.Fatalf("openssl %s: %v", cipher, err)
				}
				if !bytes.Equal(ours, theirs) {
					t.Fatalf("%s, %d bytes: ours %x, openssl %x", cipher, n, ours, theirs)
				}
				cmd = exec.Command("openssl", append(args, "-d")...)
				cmd.Stdin = bytes.NewReader(ours)
				plain, err := cmd.Output()
				if err != nil || !bytes.Equal(plain, key) {
					t.Fatalf("openssl %s -d of ours: %x, %v", cipher, plain, err)
				}
				back, err := unwrapF(kek, theirs)
				if err != nil || !bytes.Equal(back, key) {
					t.Fatalf("%s: unwrap of openssl's: %x, %v", cipher, back, err)
				}
			}
		}
	}
}
