package nestedtls

import (
	"context"
	"crypto/tls"
	"net"
	"testing"
)

// BenchmarkHandshake compares a nested handshake (both layers) with the
// outer layer alone, over loopback TCP, with pki init's ECDSA P-256
// certificates. Reported as handshakes/s.
func BenchmarkHandshake(b *testing.B) {
	f := filesFor(b, b.TempDir())
	sc, err := LoadServer(f)
	if err != nil {
		b.Fatal(err)
	}
	cc, err := LoadClient(f)
	if err != nil {
		b.Fatal(err)
	}
	for _, mode := range []string{"nested", "outer-only"} {
		b.Run(mode, func(b *testing.B) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			defer ln.Close()
			go func() {
				for {
					raw, err := ln.Accept()
					if err != nil {
						return
					}
					go func() {
						defer raw.Close()
						if mode == "nested" {
							if c, err := Handshake(context.Background(), raw, sc); err == nil {
								c.Close()
							}
							return
						}
						s := tls.Server(raw, &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{sc.Certificate}, ClientAuth: tls.RequireAnyClientCert})
						s.Handshake()
						s.Read(make([]byte, 1))
					}()
				}
			}()
			ctx := context.Background()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if mode == "nested" {
					c, _, err := Dial(ctx, ln.Addr().String(), cc)
					if err != nil {
						b.Fatal(err)
					}
					c.Close()
					continue
				}
				raw, err := net.Dial("tcp", ln.Addr().String())
				if err != nil {
					b.Fatal(err)
				}
				c := tls.Client(raw, &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{cc.Certificate}, InsecureSkipVerify: true})
				if err := c.Handshake(); err != nil {
					b.Fatal(err)
				}
				c.Close()
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "handshakes/s")
		})
	}
}
