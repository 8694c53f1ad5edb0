package bench

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"fmt"
	"sync"

	"github.com/hsmsh/hsmsh/commands"
)

// baseline is the raw Go crypto an op is held against: what it is, and
// how to make its workers (nil where there is none, what then says why).
type baseline struct {
	what      string
	newWorker workerFactory
}

// baselineFor is op's baseline: the one primitive that is the op's
// cryptographic work, run bare by Go's crypto packages on the same data,
// or "n/a" with the reason. profile is bench's --profile: a profile paces
// the HSMs on purpose, so a ratio to raw crypto would say nothing.
func baselineFor(op, profile string) baseline {
	if profile != "none" {
		return baseline{what: "n/a: --profile " + profile + " paces the HSMs to a model's rates on purpose"}
	}
	data := make([]byte, 64) // what the sign ops sign: 64 bytes
	rand.Read(data)
	switch op {
	case "ecdsa-p256-sign":
		return baseline{"crypto/ecdsa P-256 SignASN1 of the SHA-256 digest of 64 bytes", primitive(func() (func() error, error) {
			k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			return func() error {
				d := sha256.Sum256(data)
				_, err := ecdsa.SignASN1(rand.Reader, k, d[:])
				return err
			}, err
		})}
	case "ecdsa-p384-sign":
		return baseline{"crypto/ecdsa P-384 SignASN1 of the SHA-384 digest of 64 bytes", primitive(func() (func() error, error) {
			k, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
			return func() error {
				d := sha512.Sum384(data)
				_, err := ecdsa.SignASN1(rand.Reader, k, d[:])
				return err
			}, err
		})}
	case "rsa2048-sign":
		return baseline{"crypto/rsa 2048-bit SignPKCS1v15 of the SHA-256 digest of 64 bytes", primitive(func() (func() error, error) {
			k, err := rsa.GenerateKey(rand.Reader, 2048)
			return func() error {
				d := sha256.Sum256(data)
				_, err := rsa.SignPKCS1v15(nil, k, crypto.SHA256, d[:])
				return err
			}, err
		})}
	case "ec-token-gen":
		return baseline{"crypto/ecdsa P-256 GenerateKey (the key generation only: no wrapping, storage or replication)", primitive(func() (func() error, error) {
			return func() error {
				_, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
				return err
			}, nil
		})}
	case "aes-token-gen":
		return baseline{what: "n/a: its cryptography is a 32-byte random draw; the cost is wrapping, storing and replicating it (compare with SoftHSM2: bench/softhsm)"}
	case "key-list-10k":
		return baseline{what: "n/a: a lookup, no cryptography"}
	case "login":
		return baseline{what: "n/a: a protocol (argon2id on each HSM, an authenticated P-384 handshake per HSM), not one primitive; its target is a p50"}
	}
	return baseline{what: fmt.Sprintf("n/a: no baseline for op %q", op)}
}

// primitive makes workers for a baseline: setup runs once, when the
// first worker is made (e.g. to make the one key every worker signs
// with, as hsmsh's workers share one), and every worker then runs the
// primitive it returns.
func primitive(setup func() (func() error, error)) workerFactory {
	once := sync.OnceValues(setup)
	return func(int) (opFunc, func(), error) {
		f, err := once()
		if err != nil {
			return nil, nil, fmt.Errorf("baseline setup: %w", err)
		}
		return func(context.Context) commands.Result {
			if err := f(); err != nil {
				return commands.Result{ErrorCode: 1, Data: err.Error()}
			}
			return commands.Result{}
		}, func() {}, nil
	}
}
