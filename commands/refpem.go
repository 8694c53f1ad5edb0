package commands

import (
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"fmt"
	"math/big"

	"github.com/hsmsh/hsmsh/hsmcore"
)

// key generate-file --encoding reference-pem: a "fake PEM" private key
// file that names a private key in the HSM and holds none of its
// material, for the OpenSSL Dynamic Engine (CloudHSM's SSL/TLS offload).
//
// The CloudHSM CLI page (cloudhsm_cli-key-generate-file) documents the
// command, its flags and its result, not the file's fields. hsmsh follows
// the shape CloudHSM's fake PEM is documented and seen to have (ssl-offload
// pages, key_mgmt_util getCaviumPrivKey): a private key PEM of the key's
// own type that tools such as openssl read as a key, with the key's real
// public half, so that a certificate or CSR matches it, and the key's
// reference where the private half would be. The field layout is hsmsh's
// own, as AWS does not publish CloudHSM's:
//
//   - RSA: an "RSA PRIVATE KEY" block (PKCS #1 RSAPrivateKey): version 0,
//     the modulus and public exponent, the key reference as the private
//     exponent, and 0 for the primes, the CRT exponents and the
//     coefficient.
//   - EC: an "EC PRIVATE KEY" block (SEC 1 ECPrivateKey, RFC 5915):
//     version 1, the key reference as the private key (big-endian, padded
//     to the curve's size), the curve's OID and the public point.
//
// A 64-bit number is never a real RSA private exponent or EC private
// scalar, so the file cannot be mistaken for a usable key. The file is
// built here, in the client, from the reference and the public key the
// HSM gives out (key generate-file --encoding pem's): no private material
// leaves the HSM to make it.

var (
	oidRSAEncryption = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 1}
	oidECPublicKey   = asn1.ObjectIdentifier{1, 2, 840, 10045, 2, 1}
	oidEd25519       = asn1.ObjectIdentifier{1, 3, 101, 112}
)

// subjectPublicKeyInfo is RFC 5280's, read with its parameters raw: the
// curve is named by OID whether Go implements it or not.
type subjectPublicKeyInfo struct {
	Algorithm pkix.AlgorithmIdentifier
	PublicKey asn1.BitString
}

type pkcs1PublicKey struct {
	N *big.Int
	E *big.Int
}

// pkcs1PrivateKey is RFC 8017's RSAPrivateKey (two primes).
type pkcs1PrivateKey struct {
	Version int
	N       *big.Int
	E       *big.Int
	D       *big.Int
	P       *big.Int
	Q       *big.Int
	Dp      *big.Int
	Dq      *big.Int
	Qinv    *big.Int
}

// ecPrivateKey is RFC 5915's ECPrivateKey.
type ecPrivateKey struct {
	Version    int
	PrivateKey []byte
	Curve      asn1.ObjectIdentifier `asn1:"optional,explicit,tag:0"`
	PublicKey  asn1.BitString        `asn1:"optional,explicit,tag:1"`
}

// referable refuses a key that is not a private key, before the HSM is
// asked for its public half.
func referable(k hsmcore.Key) error {
	if k.Attrs.Class != "private-key" {
		return fmt.Errorf("key %s is not a private key (class %s): --encoding reference-pem writes a reference to a private key; use --encoding pem for a public key", k.Ref, k.Attrs.Class)
	}
	return nil
}

// referencePEM is the reference PEM of private key k, whose public key
// (as the HSM gives it, a PUBLIC KEY PEM) is pubPEM.
func referencePEM(k hsmcore.Key, pubPEM []byte) ([]byte, error) {
	if err := referable(k); err != nil {
		return nil, err
	}
	block, _ := pem.Decode(pubPEM)
	if block == nil || block.Type != "PUBLIC KEY" {
		return nil, fmt.Errorf("key %s: the HSM's public key is not a PUBLIC KEY PEM", k.Ref)
	}
	var spki subjectPublicKeyInfo
	if rest, err := asn1.Unmarshal(block.Bytes, &spki); err != nil || len(rest) != 0 {
		return nil, fmt.Errorf("key %s: the HSM's public key is unreadable: %v", k.Ref, err)
	}
	ref := new(big.Int).SetUint64(uint64(k.Ref))
	alg := spki.Algorithm.Algorithm
	switch {
	case alg.Equal(oidRSAEncryption):
		var pub pkcs1PublicKey
		if rest, err := asn1.Unmarshal(spki.PublicKey.RightAlign(), &pub); err != nil || len(rest) != 0 {
			return nil, fmt.Errorf("key %s: the HSM's RSA public key is unreadable: %v", k.Ref, err)
		}
		zero := new(big.Int)
		der, err := asn1.Marshal(pkcs1PrivateKey{N: pub.N, E: pub.E, D: ref, P: zero, Q: zero, Dp: zero, Dq: zero, Qinv: zero})
		if err != nil {
			return nil, err
		}
		return pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: der}), nil
	case alg.Equal(oidECPublicKey):
		var curve asn1.ObjectIdentifier
		if rest, err := asn1.Unmarshal(spki.Algorithm.Parameters.FullBytes, &curve); err != nil || len(rest) != 0 {
			return nil, fmt.Errorf("key %s: the HSM's EC public key names no curve: %v", k.Ref, err)
		}
		point := spki.PublicKey.RightAlign()
		if len(point) < 3 || point[0] != 4 || len(point)%2 != 1 {
			return nil, fmt.Errorf("key %s: the HSM's EC public key is not an uncompressed point", k.Ref)
		}
		// The private key octet string is as long as the curve's order
		// (RFC 5915); for the curves hsmsh has, the field's size.
		size := (len(point) - 1) / 2
		der, err := asn1.Marshal(ecPrivateKey{
			Version:    1,
			PrivateKey: ref.FillBytes(make([]byte, size)),
			Curve:      curve,
			PublicKey:  asn1.BitString{Bytes: point, BitLength: 8 * len(point)},
		})
		if err != nil {
			return nil, err
		}
		return pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), nil
	case alg.Equal(oidEd25519):
		return nil, fmt.Errorf("key %s is an Ed25519 key: --encoding reference-pem writes references to RSA and EC (ECDSA) private keys, the keys the OpenSSL Dynamic Engine uses; sign with crypto sign ed25519 instead", k.Ref)
	}
	return nil, fmt.Errorf("key %s (key-type %s): --encoding reference-pem writes references to RSA and EC private keys only", k.Ref, k.Attrs.KeyType)
}
