package hsm

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"strings"
	"testing"

	"github.com/hsmsh/hsmsh/hsmcore/quorum"
)

// Token-sign MFA: a user registers an RSA public key with a signed
// registration token; from then on the right password alone logs in
// nowhere, on any HSM: the HSM's token must come back signed with the
// matching private key, in the same session. A wrong signature counts as
// a wrong password; a signature for another login's token is refused.
func TestMFATokenSign(t *testing.T) {
	e, cu := labCluster(t, 3, Durability{MinimumNodes: 1})
	ctx := context.Background()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKIXPublicKey(key.Public())
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	file, err := e.GenerateToken(ctx, cu, quorum.ServiceRegistration, nil, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := e.RegisterMFAKey(ctx, cu, pubPEM, signRegistration(t, file, key)); err != nil {
		t.Fatal(err)
	}
	if err := e.RegisterMFAKey(ctx, cu, pubPEM, signRegistration(t, file, key)); err == nil {
		t.Error("the registration token was accepted twice")
	}
	admin, err := e.Login(ctx, "admin", RoleAdmin, "adminpass")
	if err != nil {
		t.Fatal(err)
	}
	users, err := e.Users(ctx, admin)
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range users {
		if on := len(u.MFA) == 1 && u.MFA[0].Strategy == "token-sign" && u.MFA[0].Status == "enabled"; on != (u.Username == "cu1") {
			t.Errorf("user list: %s mfa %+v", u.Username, u.MFA)
		}
	}

	signWith := func(k crypto.Signer, seen *[][]byte) MFASigner {
		return func(tok []byte) ([]byte, error) {
			*seen = append(*seen, tok)
			return quorum.SignDigest(k, quorum.Digest(tok))
		}
	}
	// The password alone: refused, and not counted as a failure.
	for range MaxFailedLogins + 1 {
		if _, err := e.Login(ctx, "cu1", RoleCryptoUser, "cu1pass1"); !errors.Is(err, ErrMFARequired) {
			t.Fatalf("password alone: %v", err)
		}
	}
	// Password and signature, on each HSM in turn.
	var tokens [][]byte
	for range 3 {
		c, err := e.LoginMFA(ctx, "cu1", RoleCryptoUser, "cu1pass1", signWith(key, &tokens))
		if err != nil {
			t.Fatalf("MFA login: %v", err)
		}
		if _, err := e.GenerateKey(ctx, c, KeySpec{Type: TypeAES, Label: "mfa", LengthBytes: 16}); err != nil {
			t.Errorf("the MFA session does not work: %v", err)
		}
		if err := e.Logout(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	if len(tokens) != 3 || string(tokens[0]) == string(tokens[1]) {
		t.Errorf("tokens %x: want a fresh one per login", tokens)
	}
	// Another key's signature: a counted failure.
	other, _ := rsa.GenerateKey(rand.Reader, 2048)
	var ignored [][]byte
	_, err = e.LoginMFA(ctx, "cu1", RoleCryptoUser, "cu1pass1", signWith(other, &ignored))
	if !errors.Is(err, ErrBadCredentials) || !strings.Contains(err.Error(), "4 of 5 attempts left") {
		t.Errorf("a wrong MFA signature: %v", err)
	}
	// A signature of an earlier login's token: refused.
	old, _ := quorum.SignDigest(key, quorum.Digest(tokens[0]))
	_, err = e.LoginMFA(ctx, "cu1", RoleCryptoUser, "cu1pass1", func([]byte) ([]byte, error) { return old, nil })
	if !errors.Is(err, ErrBadCredentials) {
		t.Errorf("a replayed MFA signature: %v", err)
	}
	// A wrong password never reaches the MFA step.
	asked := 0
	_, err = e.LoginMFA(ctx, "cu1", RoleCryptoUser, "wrongpass", func([]byte) ([]byte, error) { asked++; return nil, nil })
	if !errors.Is(err, ErrBadCredentials) || asked != 0 {
		t.Errorf("a wrong password: %v, signer asked %d times", err, asked)
	}
	// An admin turns MFA off (a lost MFA key); the password alone works
	// again, and the right password resets the failures.
	if err := e.DeregisterMFA(ctx, admin, "cu1", RoleCryptoUser); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Login(ctx, "cu1", RoleCryptoUser, "cu1pass1"); err != nil {
		t.Errorf("after MFA was turned off: %v", err)
	}
	// A crypto user cannot turn off another user's MFA.
	if _, err := e.CreateUser(ctx, admin, "cu2", RoleCryptoUser, "cu2pass2"); err != nil {
		t.Fatal(err)
	}
	cu2, err := e.Login(ctx, "cu2", RoleCryptoUser, "cu2pass2")
	if err != nil {
		t.Fatal(err)
	}
	if err := e.DeregisterMFA(ctx, cu2, "cu1", RoleCryptoUser); !errors.Is(err, ErrPermission) {
		t.Errorf("cu2 turns off cu1's MFA: %v", err)
	}
}
