package authsession

import (
	"testing"
	"time"
)

// BenchmarkHandshake runs all three steps: NewHello, Accept and Finish.
// Identity and domain keys are long-term, so they are made outside the loop.
func BenchmarkHandshake(b *testing.B) {
	domain := mustDomain(b)
	for b.Loop() {
		handshake(b, domain)
	}
}

// BenchmarkSealOpen seals and opens one 1 KiB command: the symmetric cost
// per command on each side.
func BenchmarkSealOpen(b *testing.B) {
	domain := mustDomain(b)
	s := handshake(b, domain)
	msg := make([]byte, 1024)
	b.SetBytes(int64(len(msg)))
	var seq uint64
	for b.Loop() {
		seq++
		e, err := Seal(s.clientSK, ToHSM, seq, s.reply.EKT, msg)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := Open(s.hsmSK, ToHSM, s.reply.EKT, e); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkOpenEKT is the other cost an HSM pays on every command.
func BenchmarkOpenEKT(b *testing.B) {
	domain := mustDomain(b)
	s := handshake(b, domain)
	now := time.Now()
	for b.Loop() {
		if _, _, err := OpenEKT(domain, s.reply.EKT, now); err != nil {
			b.Fatal(err)
		}
	}
}
