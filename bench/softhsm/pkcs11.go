package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/asn1"
	"errors"
	"fmt"
	"math/big"
	mrand "math/rand/v2"
	"os"
	"strings"

	"github.com/miekg/pkcs11"
)

// pinEnv names the variable that carries the token's user PIN: never a
// flag, which ps would show.
const pinEnv = "SOFTHSM_BENCH_PIN"

// token is an initialised, logged-in PKCS#11 module and the slot of the
// token the benchmark uses.
type token struct {
	p    *pkcs11.Ctx
	slot uint
	main pkcs11.SessionHandle // the session that logged in and made the keys
}

// openToken loads the module at lib, finds the token labelled label and
// logs in as its user with the PIN from $SOFTHSM_BENCH_PIN.
func openToken(lib, label string) (*token, error) {
	pin := os.Getenv(pinEnv)
	if pin == "" {
		return nil, fmt.Errorf("no PIN: set %s to the token's user PIN", pinEnv)
	}
	p := pkcs11.New(lib)
	if p == nil {
		return nil, fmt.Errorf("cannot load the PKCS#11 module %s", lib)
	}
	if err := p.Initialize(); err != nil {
		p.Destroy()
		return nil, fmt.Errorf("C_Initialize: %w", err)
	}
	t := &token{p: p}
	slots, err := p.GetSlotList(true)
	if err != nil {
		t.close()
		return nil, fmt.Errorf("C_GetSlotList: %w", err)
	}
	found := false
	for _, s := range slots {
		info, err := p.GetTokenInfo(s)
		if err == nil && strings.TrimRight(info.Label, " ") == label {
			t.slot, found = s, true
			break
		}
	}
	if !found {
		t.close()
		return nil, fmt.Errorf("no token labelled %q among %d slots (SOFTHSM2_CONF=%s)", label, len(slots), os.Getenv("SOFTHSM2_CONF"))
	}
	if t.main, err = t.session(); err != nil {
		t.close()
		return nil, err
	}
	// One login covers every session of this application.
	if err := p.Login(t.main, pkcs11.CKU_USER, pin); err != nil {
		t.close()
		return nil, fmt.Errorf("C_Login: %w", err)
	}
	return t, nil
}

func (t *token) session() (pkcs11.SessionHandle, error) {
	s, err := t.p.OpenSession(t.slot, pkcs11.CKF_SERIAL_SESSION|pkcs11.CKF_RW_SESSION)
	if err != nil {
		return 0, fmt.Errorf("C_OpenSession: %w", err)
	}
	return s, nil
}

func (t *token) close() {
	t.p.CloseAllSessions(t.slot)
	t.p.Finalize()
	t.p.Destroy()
}

// p256 is the DER of the OID of the P-256 curve (prime256v1), for
// CKA_EC_PARAMS.
var p256 = []byte{0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07}

// ecKeyPair generates a P-256 key pair in the token (session objects: a
// signature costs the same either way) and checks that it signs: a
// signature it makes verifies with crypto/ecdsa under its public key.
func (t *token) ecKeyPair() (pkcs11.ObjectHandle, error) {
	pub, priv, err := t.p.GenerateKeyPair(t.main, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_EC_KEY_PAIR_GEN, nil)},
		[]*pkcs11.Attribute{
			pkcs11.NewAttribute(pkcs11.CKA_TOKEN, false),
			pkcs11.NewAttribute(pkcs11.CKA_VERIFY, true),
			pkcs11.NewAttribute(pkcs11.CKA_EC_PARAMS, p256),
			pkcs11.NewAttribute(pkcs11.CKA_LABEL, "bench-p256-pub"),
		},
		[]*pkcs11.Attribute{
			pkcs11.NewAttribute(pkcs11.CKA_TOKEN, false),
			pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, true),
			pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, true),
			pkcs11.NewAttribute(pkcs11.CKA_SIGN, true),
			pkcs11.NewAttribute(pkcs11.CKA_LABEL, "bench-p256"),
		})
	if err != nil {
		return 0, fmt.Errorf("C_GenerateKeyPair P-256: %w", err)
	}
	attrs, err := t.p.GetAttributeValue(t.main, pub, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_EC_POINT, nil)})
	if err != nil {
		return 0, fmt.Errorf("C_GetAttributeValue CKA_EC_POINT: %w", err)
	}
	var point []byte // CKA_EC_POINT is a DER OCTET STRING around the point
	if _, err := asn1.Unmarshal(attrs[0].Value, &point); err != nil {
		return 0, fmt.Errorf("CKA_EC_POINT: %w", err)
	}
	pubKey, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), point)
	if err != nil {
		return 0, fmt.Errorf("CKA_EC_POINT is not a P-256 point: %w", err)
	}
	data := make([]byte, 64)
	rand.Read(data)
	sig, err := t.sign(t.main, priv, data)
	if err != nil {
		return 0, err
	}
	if len(sig) != 64 {
		return 0, fmt.Errorf("SoftHSM2's P-256 signature has %d bytes, want 64 (r, s)", len(sig))
	}
	d := sha256.Sum256(data)
	r, s := new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])
	if !ecdsa.Verify(pubKey, d[:], r, s) {
		return 0, errors.New("SoftHSM2's P-256 signature does not verify")
	}
	return priv, nil
}

// sign is one signature: the SHA-256 digest of data (taken here, as
// SoftHSM2's CKM_ECDSA signs a digest), signed with CKM_ECDSA.
func (t *token) sign(s pkcs11.SessionHandle, key pkcs11.ObjectHandle, data []byte) ([]byte, error) {
	d := sha256.Sum256(data)
	if err := t.p.SignInit(s, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_ECDSA, nil)}, key); err != nil {
		return nil, fmt.Errorf("C_SignInit: %w", err)
	}
	sig, err := t.p.Sign(s, d[:])
	if err != nil {
		return nil, fmt.Errorf("C_Sign: %w", err)
	}
	return sig, nil
}

// aesKey generates one AES-256 key, a token object (written to the
// token's folder) when token is true.
func (t *token) aesKey(s pkcs11.SessionHandle, label string, token bool) (pkcs11.ObjectHandle, error) {
	h, err := t.p.GenerateKey(s, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_AES_KEY_GEN, nil)},
		[]*pkcs11.Attribute{
			pkcs11.NewAttribute(pkcs11.CKA_TOKEN, token),
			pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, true),
			pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, true),
			pkcs11.NewAttribute(pkcs11.CKA_ENCRYPT, true),
			pkcs11.NewAttribute(pkcs11.CKA_DECRYPT, true),
			pkcs11.NewAttribute(pkcs11.CKA_VALUE_LEN, 32),
			pkcs11.NewAttribute(pkcs11.CKA_LABEL, label),
		})
	if err != nil {
		return 0, fmt.Errorf("C_GenerateKey AES-256: %w", err)
	}
	return h, nil
}

// findLabel finds the keys labelled label and reads the attributes a
// verbose listing shows (class, key type, length, label, id); it fails
// unless exactly one key has the label.
func (t *token) findLabel(s pkcs11.SessionHandle, label string) error {
	if err := t.p.FindObjectsInit(s, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_LABEL, label)}); err != nil {
		return fmt.Errorf("C_FindObjectsInit: %w", err)
	}
	hs, _, err := t.p.FindObjects(s, 2)
	if ferr := t.p.FindObjectsFinal(s); err == nil {
		err = ferr
	}
	if err != nil {
		return fmt.Errorf("C_FindObjects: %w", err)
	}
	if len(hs) != 1 {
		return fmt.Errorf("%d keys labelled %s, want 1", len(hs), label)
	}
	_, err = t.p.GetAttributeValue(s, hs[0], []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, nil),
		pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, nil),
		pkcs11.NewAttribute(pkcs11.CKA_VALUE_LEN, nil),
		pkcs11.NewAttribute(pkcs11.CKA_LABEL, nil),
		pkcs11.NewAttribute(pkcs11.CKA_ID, nil),
	})
	if err != nil {
		return fmt.Errorf("C_GetAttributeValue: %w", err)
	}
	return nil
}

// worker is one thread's op; it gets the count of ops it has run.
type worker func(n int) error

// prepare sets the token up for op and returns how to make each thread's
// worker (on a session of its own), and what to clean up after the run.
func (t *token) prepare(op string, keys int) (newWorker func(i int) (worker, error), cleanup func() error, err error) {
	data := make([]byte, 64)
	rand.Read(data)
	own := func(i int) (pkcs11.SessionHandle, error) { return t.session() }
	none := func() error { return nil }
	switch op {
	case "ecdsa-p256-sign":
		key, err := t.ecKeyPair()
		if err != nil {
			return nil, nil, err
		}
		return func(i int) (worker, error) {
			s, err := own(i)
			return func(int) error { _, err := t.sign(s, key, data); return err }, err
		}, none, nil
	case "aes-token-gen":
		var made []*[]pkcs11.ObjectHandle // each worker's keys
		newWorker = func(i int) (worker, error) {
			s, err := own(i)
			mine := new([]pkcs11.ObjectHandle)
			made = append(made, mine)
			return func(n int) error {
				h, err := t.aesKey(s, fmt.Sprintf("bench-aes-w%d-%d", i, n), true)
				if err == nil {
					*mine = append(*mine, h)
				}
				return err
			}, err
		}
		// The token keys are destroyed after the run (not timed), so that
		// each run starts on the same token.
		cleanup = func() error {
			for _, hs := range made {
				for _, h := range *hs {
					if err := t.p.DestroyObject(t.main, h); err != nil {
						return fmt.Errorf("C_DestroyObject: %w", err)
					}
				}
			}
			return nil
		}
		return newWorker, cleanup, nil
	case "key-find":
		// keys AES session keys with distinct labels; each op finds one
		// by label among them.
		for i := range keys {
			if _, err := t.aesKey(t.main, findLabel(i), false); err != nil {
				return nil, nil, err
			}
		}
		if err := t.findLabel(t.main, findLabel(keys/2)); err != nil {
			return nil, nil, fmt.Errorf("setup: %w", err)
		}
		return func(i int) (worker, error) {
			s, err := own(i)
			return func(int) error { return t.findLabel(s, findLabel(mrand.IntN(keys))) }, err
		}, none, nil
	}
	return nil, nil, fmt.Errorf("unknown op %q: use ecdsa-p256-sign, aes-token-gen or key-find", op)
}

func findLabel(i int) string { return fmt.Sprintf("bench-list-%05d", i) }
