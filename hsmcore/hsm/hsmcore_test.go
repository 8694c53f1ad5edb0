package hsm

import (
	"bytes"
	"context"
	"crypto"
	"crypto/sha256"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hsmsh/hsmsh/hsmcore/protocol"
)

func TestParseRef(t *testing.T) {
	tests := []struct {
		in      string
		want    Ref
		wantErr bool
	}{
		{"0x0000000000000001", 1, false},
		{"0X00000000001C0686", 0x1c0686, false},
		{"0x1c0686", 0x1c0686, false},
		{"1c0686", 0, true},
		{"0x", 0, true},
		{"0xzz", 0, true},
		{"0x00000000000000001", 0, true}, // 17 digits
	}
	for _, tt := range tests {
		got, err := ParseRef(tt.in)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("ParseRef(%q) = %v, %v; want %v, err %v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
	if s := Ref(0x1c0686).String(); s != "0x00000000001c0686" {
		t.Errorf("String() = %s", s)
	}
}

func TestNormalizeUsername(t *testing.T) {
	tests := []struct {
		in, want string
		wantErr  bool
	}{
		{"Alice_1", "alice_1", false},
		{"cu1", "cu1", false},
		{"", "", true},
		{"has space", "", true},
		{"dash-name", "", true},
		{strings.Repeat("a", 31), strings.Repeat("a", 31), false},
		{strings.Repeat("a", 32), "", true},
	}
	for _, tt := range tests {
		got, err := NormalizeUsername(tt.in)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("NormalizeUsername(%q) = %q, %v", tt.in, got, err)
		}
	}
}

func TestValidatePassword(t *testing.T) {
	for _, tt := range []struct {
		pw string
		ok bool
	}{{"123456", false}, {"1234567", true}, {strings.Repeat("x", 32), true}, {strings.Repeat("x", 33), false}} {
		if err := ValidatePassword(tt.pw); (err == nil) != tt.ok {
			t.Errorf("ValidatePassword(len %d) = %v", len(tt.pw), err)
		}
	}
}

func TestPasswordHash(t *testing.T) {
	h := hashPassword("correct horse")
	if strings.Contains(h, "correct horse") || !strings.HasPrefix(h, "$argon2id$") {
		t.Fatalf("hash %q leaks or is not argon2id", h)
	}
	if !checkPassword(h, "correct horse") {
		t.Error("right password refused")
	}
	for _, bad := range []string{"correct horsE", "", "correct horse "} {
		if checkPassword(h, bad) {
			t.Errorf("wrong password %q accepted", bad)
		}
	}
	if checkPassword("$argon2id$garbage", "x") {
		t.Error("malformed hash accepted")
	}
	if h2 := hashPassword("correct horse"); h2 == h {
		t.Error("two hashes of one password are equal: salt missing")
	}
}

func TestGenerateValidation(t *testing.T) {
	tests := []struct {
		name string
		spec KeySpec
		want string // substring of the error; "" for success
	}{
		{"aes16", KeySpec{Type: TypeAES, Label: "k", LengthBytes: 16}, ""},
		{"aes32", KeySpec{Type: TypeAES, Label: "k", LengthBytes: 32}, ""},
		{"aes7", KeySpec{Type: TypeAES, Label: "k", LengthBytes: 7}, "key-length-bytes 7"},
		{"generic", KeySpec{Type: TypeGenericSecret, Label: "k", LengthBytes: 64}, ""},
		{"generic0", KeySpec{Type: TypeGenericSecret, Label: "k", LengthBytes: 0}, "1 to 800"},
		{"label127", KeySpec{Type: TypeAES, Label: strings.Repeat("l", 127), LengthBytes: 16}, ""},
		{"label128", KeySpec{Type: TypeAES, Label: strings.Repeat("l", 128), LengthBytes: 16}, "limit is 127"},
		{"nolabel", KeySpec{Type: TypeAES, LengthBytes: 16}, "must not be empty"},
		{"ec256", KeySpec{Type: TypeEC, PublicLabel: "p", PrivateLabel: "q", Curve: "secp256r1"}, ""},
		{"prime256v1", KeySpec{Type: TypeEC, PublicLabel: "p", PrivateLabel: "q", Curve: "prime256v1"}, ""},
		{"k1", KeySpec{Type: TypeEC, PublicLabel: "p", PrivateLabel: "q", Curve: "secp256k1"}, "unsupported curve"},
		{"badcurve", KeySpec{Type: TypeEC, PublicLabel: "p", PrivateLabel: "q", Curve: "p999"}, "unknown curve"},
		{"rsa1024", KeySpec{Type: TypeRSA, PublicLabel: "p", PrivateLabel: "q", ModulusBits: 1024, Exponent: 65537}, "modulus-size-bits 1024"},
		{"rsaExp3", KeySpec{Type: TypeRSA, PublicLabel: "p", PrivateLabel: "q", ModulusBits: 2048, Exponent: 3}, "at least 65537"},
		{"rsaExpEven", KeySpec{Type: TypeRSA, PublicLabel: "p", PrivateLabel: "q", ModulusBits: 2048, Exponent: 65538}, "odd"},
		{"badattr", KeySpec{Type: TypeAES, Label: "k", LengthBytes: 16, Attributes: map[string]string{"colour": "red"}}, "unknown attribute"},
		{"readonly", KeySpec{Type: TypeAES, Label: "k", LengthBytes: 16, Attributes: map[string]string{"class": "x"}}, "read-only"},
		{"attrOK", KeySpec{Type: TypeAES, Label: "k", LengthBytes: 16, Attributes: map[string]string{"encrypt": "true", "extractable": "false"}}, ""},
		{"notbool", KeySpec{Type: TypeAES, Label: "k", LengthBytes: 16, Attributes: map[string]string{"encrypt": "maybe"}}, "true or false"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			recs, err := generate(tt.spec)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("generate: %v", err)
				}
				if len(recs) == 0 || len(recs[0].Material) == 0 {
					t.Fatal("no material")
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("generate error = %v; want it to contain %q", err, tt.want)
			}
		})
	}
}

func TestAESKCV(t *testing.T) {
	// The KCV of the all-zero AES-128 key is the first 3 bytes of
	// AES(0^128, 0^128) = 66e94bd4ef8a2c3b884cfa59ca342b2e.
	if got := secretKCV(TypeAES, make([]byte, 16)); got != "0x66e94b" {
		t.Errorf("KCV = %s, want 0x66e94b", got)
	}
}

func TestSignVerify(t *testing.T) {
	ec, err := generate(KeySpec{Type: TypeEC, PublicLabel: "p", PrivateLabel: "q", Curve: "secp384r1"})
	if err != nil {
		t.Fatal(err)
	}
	rsaRecs, err := generate(KeySpec{Type: TypeRSA, PublicLabel: "p", PrivateLabel: "q", ModulusBits: 2048, Exponent: 65537})
	if err != nil {
		t.Fatal(err)
	}
	data := []byte("the quick brown fox")
	sum := sha256.Sum256(data)
	tests := []struct {
		name      string
		pub, priv *keyRecord
		req       SignRequest
		sigLen    int
	}{
		{"ecdsa-sha256", ec[0], ec[1], SignRequest{Mechanism: MechECDSA, Hash: crypto.SHA256, Data: data}, 96},
		{"ecdsa-sha512", ec[0], ec[1], SignRequest{Mechanism: MechECDSA, Hash: crypto.SHA512, Data: data}, 96},
		{"ecdsa-digest", ec[0], ec[1], SignRequest{Mechanism: MechECDSA, Hash: crypto.SHA256, Data: sum[:], Digest: true}, 96},
		{"rsa-pkcs-sha1", rsaRecs[0], rsaRecs[1], SignRequest{Mechanism: MechRSAPKCS, Hash: crypto.SHA1, Data: data}, 256},
		{"rsa-pkcs-sha256", rsaRecs[0], rsaRecs[1], SignRequest{Mechanism: MechRSAPKCS, Hash: crypto.SHA256, Data: data}, 256},
		{"rsa-pss-sha384", rsaRecs[0], rsaRecs[1], SignRequest{Mechanism: MechRSAPKCSPS, Hash: crypto.SHA384, Data: data}, 256},
		{"rsa-pss-salt", rsaRecs[0], rsaRecs[1], SignRequest{Mechanism: MechRSAPKCSPS, Hash: crypto.SHA256, Data: data, SaltLength: 20}, 256},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sig, err := sign(tt.priv, tt.req)
			if err != nil {
				t.Fatal(err)
			}
			if len(sig) != tt.sigLen {
				t.Errorf("signature is %d bytes, want %d", len(sig), tt.sigLen)
			}
			if err := verify(tt.pub, tt.req, sig); err != nil {
				t.Errorf("verify with public key: %v", err)
			}
			if err := verify(tt.priv, tt.req, sig); err != nil {
				t.Errorf("verify with private key's public half: %v", err)
			}
			bad := append([]byte(nil), sig...)
			bad[len(bad)/2] ^= 1
			if err := verify(tt.pub, tt.req, bad); !errors.Is(err, ErrBadSignature) {
				t.Errorf("tampered signature: %v", err)
			}
			other := tt.req
			other.Data = []byte("another message")
			if other.Digest {
				s := sha256.Sum256(other.Data)
				other.Data = s[:]
			}
			if err := verify(tt.pub, other, sig); !errors.Is(err, ErrBadSignature) {
				t.Errorf("other data: %v", err)
			}
		})
	}
	if _, err := sign(ec[0], SignRequest{Mechanism: MechECDSA, Hash: crypto.SHA256, Data: data}); err == nil {
		t.Error("signing with a public key succeeded")
	}
	if _, err := sign(ec[1], SignRequest{Mechanism: MechRSAPKCS, Hash: crypto.SHA256, Data: data}); err == nil {
		t.Error("rsa mechanism on an ec key succeeded")
	}
	if _, err := sign(ec[1], SignRequest{Mechanism: MechECDSA, Hash: crypto.SHA256, Data: data[:5], Digest: true}); err == nil {
		t.Error("short digest accepted")
	}
}

func TestParseImport(t *testing.T) {
	ec, _ := generate(KeySpec{Type: TypeEC, PublicLabel: "p", PrivateLabel: "q", Curve: "secp256r1"})
	pemBytes, err := publicPEM(ec[0])
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		spec ImportSpec
		want string
	}{
		{"ok", ImportSpec{PEM: pemBytes, Label: "imp", Class: "ec-public"}, ""},
		{"wrongclass", ImportSpec{PEM: pemBytes, Label: "imp", Class: "rsa-public"}, "use --key-type-class ec-public"},
		{"garbage", ImportSpec{PEM: []byte("hello"), Label: "imp", Class: "ec-public"}, "no PEM block"},
		{"private", ImportSpec{PEM: []byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"), Label: "imp", Class: "ec-public"}, "never imported"},
		{"huge", ImportSpec{PEM: bytes.Repeat([]byte("A"), protocol.MaxImportPEM+1), Label: "imp", Class: "ec-public"}, "at most"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec, err := parseImport(tt.spec)
			if tt.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				if rec.Attrs.CheckValue != ec[0].Attrs.CheckValue || rec.Attrs.Curve != "secp256r1" {
					t.Errorf("imported attrs %+v", rec.Attrs)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
		})
	}
}

// newTestCluster opens a cluster, activates it and logs in a crypto user.
func newTestCluster(t *testing.T, dir string, n int) (*Embedded, Caller, Caller) {
	t.Helper()
	e, err := OpenEmbedded(Options{ID: "test", HSMs: n, DataDir: dir, Durability: Durability{MinimumNodes: 1, AvailabilityCheck: n > 1}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	if _, err := e.Users(context.Background(), Caller{}); err != nil {
		t.Fatal(err)
	}
	admin, cu := activate(t, e)
	return e, admin, cu
}

// activate activates a new cluster, logs the admin in, and creates and
// logs in the crypto user cu1.
func activate(t testing.TB, e *Embedded) (admin, cu Caller) {
	t.Helper()
	ctx := context.Background()
	if err := e.Activate(ctx, "adminpass"); err != nil {
		t.Fatal(err)
	}
	admin, err := e.Login(ctx, "admin", RoleAdmin, "adminpass")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.CreateUser(ctx, admin, "cu1", RoleCryptoUser, "cu1pass1"); err != nil {
		t.Fatal(err)
	}
	cu, err = e.Login(ctx, "cu1", RoleCryptoUser, "cu1pass1")
	if err != nil {
		t.Fatal(err)
	}
	return admin, cu
}

func TestClusterKeysReplicatedAndPersisted(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	e, _, cu := newTestCluster(t, dir, 3)
	keys, err := e.GenerateKey(ctx, cu, KeySpec{Type: TypeEC, PublicLabel: "pub", PrivateLabel: "priv", Curve: "secp256r1"})
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if k.Info.ClusterCoverage != CoverageFull || len(k.Info.HSMCoverage) != 3 {
			t.Errorf("key %s coverage %+v", k.Ref, k.Info)
		}
		for id, ok := range k.Info.HSMCoverage {
			if !ok {
				t.Errorf("%s lacks %s", id, k.Ref)
			}
		}
	}
	req := SignRequest{Ref: keys[1].Ref, Mechanism: MechECDSA, Hash: crypto.SHA256, Data: []byte("x")}
	// Sign several times: round-robin spreads the calls over every HSM.
	for i := 0; i < 6; i++ {
		if _, err := e.Sign(ctx, cu, req); err != nil {
			t.Fatalf("sign %d: %v", i, err)
		}
	}
	e.Close()

	e2, err := OpenEmbedded(Options{ID: "test", HSMs: 3, DataDir: dir, Durability: Durability{MinimumNodes: 1}})
	if err != nil {
		t.Fatal(err)
	}
	defer e2.Close()
	cu2, err := e2.Login(ctx, "cu1", RoleCryptoUser, "cu1pass1")
	if err != nil {
		t.Fatal(err)
	}
	got, err := e2.Keys(ctx, cu2, Filter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Ref != min(keys[0].Ref, keys[1].Ref) {
		t.Fatalf("after reopen: %d keys", len(got))
	}
	sig, err := e2.Sign(ctx, cu2, req)
	if err != nil {
		t.Fatal(err)
	}
	if err := e2.Verify(ctx, cu2, SignRequest{Ref: keys[0].Ref, Mechanism: MechECDSA, Hash: crypto.SHA256, Data: []byte("x")}, sig); err != nil {
		t.Fatal(err)
	}
	// No key material in clear on disk.
	pemBytes, _ := e2.PublicKeyPEM(ctx, cu2, keys[1].Ref)
	if len(pemBytes) == 0 {
		t.Fatal("no public key")
	}
}

func TestAccessControl(t *testing.T) {
	ctx := context.Background()
	e, admin, cu1 := newTestCluster(t, "", 2)
	if _, err := e.CreateUser(ctx, admin, "cu2", RoleCryptoUser, "cu2pass2"); err != nil {
		t.Fatal(err)
	}
	cu2, err := e.Login(ctx, "cu2", RoleCryptoUser, "cu2pass2")
	if err != nil {
		t.Fatal(err)
	}
	keys, err := e.GenerateKey(ctx, cu1, KeySpec{Type: TypeEC, PublicLabel: "pub", PrivateLabel: "priv", Curve: "secp256r1"})
	if err != nil {
		t.Fatal(err)
	}
	priv := keys[1].Ref
	sreq := SignRequest{Ref: priv, Mechanism: MechECDSA, Hash: crypto.SHA256, Data: []byte("x")}
	if _, err := e.Sign(ctx, cu2, sreq); !errors.Is(err, ErrKeyNotFound) {
		t.Errorf("cu2 signed with cu1's key: %v", err)
	}
	if _, err := e.Sign(ctx, admin, sreq); !errors.Is(err, ErrPermission) {
		t.Errorf("admin signed with a CU key: %v", err)
	}
	if err := e.DeleteKey(ctx, cu2, priv); err == nil {
		t.Error("cu2 deleted cu1's key")
	}
	if _, err := e.GenerateKey(ctx, admin, KeySpec{Type: TypeAES, Label: "a", LengthBytes: 16}); !errors.Is(err, ErrPermission) {
		t.Errorf("admin generated a key: %v", err)
	}
	// cu2 sees the public key (public keys are visible to all CUs) only.
	visible, _ := e.Keys(ctx, cu2, Filter{})
	if len(visible) != 1 || visible[0].Attrs.Class != ClassPublic {
		t.Errorf("cu2 sees %d keys", len(visible))
	}
	if _, err := e.ShareKey(ctx, cu1, priv, "cu2", true); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Sign(ctx, cu2, sreq); err != nil {
		t.Errorf("cu2 cannot sign with a shared key: %v", err)
	}
	if err := e.DeleteUser(ctx, admin, "cu1", RoleCryptoUser); err == nil || !strings.Contains(err.Error(), "owns keys") {
		t.Errorf("deleting a key owner: %v", err)
	}
	if _, err := e.ShareKey(ctx, cu1, priv, "cu2", false); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Sign(ctx, cu2, sreq); err == nil {
		t.Error("cu2 signed after unshare")
	}
	if err := e.Logout(ctx, cu2); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Keys(ctx, cu2, Filter{}); !errors.Is(err, ErrNotLoggedIn) {
		t.Errorf("logged-out session still works: %v", err)
	}
}

func TestLockout(t *testing.T) {
	ctx := context.Background()
	e, admin, _ := newTestCluster(t, "", 3)
	for i := 1; i <= MaxFailedLogins; i++ {
		_, err := e.Login(ctx, "cu1", RoleCryptoUser, "wrongpass")
		if !errors.Is(err, ErrBadCredentials) {
			t.Fatalf("attempt %d: %v", i, err)
		}
	}
	if _, err := e.Login(ctx, "cu1", RoleCryptoUser, "cu1pass1"); !errors.Is(err, ErrLocked) {
		t.Fatalf("right password on a locked user: %v", err)
	}
	users, _ := e.Users(ctx, admin)
	for _, u := range users {
		if u.Username == "cu1" && u.Locked != "true" {
			t.Errorf("user list says locked=%s", u.Locked)
		}
	}
	if err := e.ChangePassword(ctx, admin, "cu1", RoleCryptoUser, "newpass1"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Login(ctx, "cu1", RoleCryptoUser, "newpass1"); err != nil {
		t.Fatalf("after unlock: %v", err)
	}
}

func TestSessionKeys(t *testing.T) {
	ctx := context.Background()
	e, _, cu := newTestCluster(t, "", 3)
	keys, err := e.GenerateKey(ctx, cu, KeySpec{Type: TypeAES, Label: "s", LengthBytes: 16, Session: true})
	if err != nil {
		t.Fatal(err)
	}
	held := 0
	for _, ok := range keys[0].Info.HSMCoverage {
		if ok {
			held++
		}
	}
	if held != 1 || !keys[0].Session {
		t.Fatalf("session key on %d HSMs", held)
	}
	other, err := e.Login(ctx, "cu1", RoleCryptoUser, "cu1pass1")
	if err != nil {
		t.Fatal(err)
	}
	if ks, _ := e.Keys(ctx, other, Filter{}); len(ks) != 0 {
		t.Errorf("another login sees %d session keys", len(ks))
	}
	if err := e.Logout(ctx, cu); err != nil {
		t.Fatal(err)
	}
	for _, h := range devices(e) {
		if h.Has(keys[0].Ref) {
			t.Errorf("%s still holds the session key after logout", h.ID())
		}
	}
}

func TestCorruptStoreUntouched(t *testing.T) {
	dir := t.TempDir()
	e, err := OpenEmbedded(Options{ID: "c", HSMs: 2, DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	e.Close()
	path := filepath.Join(dir, "hsm-2", storeFile)
	garbage := bytes.Repeat([]byte("not a database "), 600)
	if err := os.WriteFile(path, garbage, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = OpenEmbedded(Options{ID: "c", HSMs: 2, DataDir: dir})
	if err == nil || !strings.Contains(err.Error(), path) {
		t.Fatalf("open corrupt store: %v", err)
	}
	after, _ := os.ReadFile(path)
	if !bytes.Equal(after, garbage) {
		t.Error("the corrupt store was modified")
	}
	// The lock is released after the failed open.
	if l, err := lockDir(dir); err != nil {
		t.Errorf("lock left held: %v", err)
	} else {
		l.release()
	}
}

func TestDataDirInUse(t *testing.T) {
	dir := t.TempDir()
	e, err := OpenEmbedded(Options{ID: "c", HSMs: 1, DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	_, err = OpenEmbedded(Options{ID: "c", HSMs: 1, DataDir: dir})
	if err == nil || !strings.Contains(err.Error(), "in use by process") {
		t.Fatalf("second open: %v", err)
	}
}

func TestFilePermissions(t *testing.T) {
	dir := t.TempDir()
	e, err := OpenEmbedded(Options{ID: "c", HSMs: 1, DataDir: filepath.Join(dir, "d")})
	if err != nil {
		t.Fatal(err)
	}
	e.Close()
	for path, want := range map[string]os.FileMode{
		filepath.Join(dir, "d"):                         0o700,
		filepath.Join(dir, "d", "hsm-1"):                0o700,
		filepath.Join(dir, "d", "hsm-1", storeFile):     0o600,
		filepath.Join(dir, "d", "hsm-1", masterKeyFile): 0o600,
	} {
		st, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if got := st.Mode().Perm(); got != want {
			t.Errorf("%s: mode %o, want %o", path, got, want)
		}
	}
}

func TestTruncatedStoreRefused(t *testing.T) {
	dir := t.TempDir()
	e, _, cu := newTestCluster(t, dir, 2)
	for i := 0; i < 20; i++ {
		if _, err := e.GenerateKey(context.Background(), cu, KeySpec{Type: TypeAES, Label: "k", LengthBytes: 32}); err != nil {
			t.Fatal(err)
		}
	}
	e.Close()
	path := filepath.Join(dir, "hsm-1", storeFile)
	for _, size := range []int64{8192, 100} {
		if err := os.Truncate(path, size); err != nil {
			t.Fatal(err)
		}
		before, _ := os.ReadFile(path)
		_, err := OpenEmbedded(Options{ID: "test", HSMs: 2, DataDir: dir})
		if err == nil || !strings.Contains(err.Error(), path) {
			t.Fatalf("size %d: open = %v", size, err)
		}
		if after, _ := os.ReadFile(path); !bytes.Equal(before, after) {
			t.Errorf("size %d: the store was modified", size)
		}
	}
}

func TestDeletedUserLosesSharedKeys(t *testing.T) {
	ctx := context.Background()
	e, admin, cu1 := newTestCluster(t, "", 2)
	e.CreateUser(ctx, admin, "cu2", RoleCryptoUser, "cu2pass2")
	keys, err := e.GenerateKey(ctx, cu1, KeySpec{Type: TypeEC, PublicLabel: "p", PrivateLabel: "q", Curve: "secp256r1", ShareWith: []string{"cu2"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.DeleteUser(ctx, admin, "cu2", RoleCryptoUser); err != nil {
		t.Fatal(err)
	}
	if _, err := e.CreateUser(ctx, admin, "cu2", RoleCryptoUser, "newcu2pass"); err != nil {
		t.Fatal(err)
	}
	cu2, err := e.Login(ctx, "cu2", RoleCryptoUser, "newcu2pass")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.Sign(ctx, cu2, SignRequest{Ref: keys[1].Ref, Mechanism: MechECDSA, Hash: crypto.SHA256, Data: []byte("x")}); err == nil {
		t.Error("a new user with a deleted user's name inherited a shared key")
	}
	ks, _ := e.Keys(ctx, cu1, Filter{Ref: &keys[1].Ref})
	if len(ks) != 1 || len(ks[0].Info.SharedUsers) != 0 {
		t.Errorf("shared users after delete: %+v", ks)
	}
}

// Get agrees with Map for every attribute of real keys.
func TestAttributesGet(t *testing.T) {
	for _, spec := range []KeySpec{
		{Type: TypeAES, Label: "a", LengthBytes: 32},
		{Type: TypeEC, Curve: "secp256r1", PublicLabel: "p", PrivateLabel: "k"},
	} {
		recs, err := generate(spec)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range recs {
			m := r.Attrs.Map()
			for _, name := range AttributeNames() {
				got, ok := r.Attrs.Get(name)
				want, wantOK := m[name]
				if got != want || ok != wantOK {
					t.Errorf("%s %s: Get = %q, %v; Map = %q, %v", r.Attrs.Class, name, got, ok, want, wantOK)
				}
			}
		}
	}
	if _, ok := (&Attributes{}).Get("no-such"); ok {
		t.Error("an unknown attribute was found")
	}
}
