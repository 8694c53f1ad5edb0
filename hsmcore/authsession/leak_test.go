package authsession

import (
	"crypto/ecdh"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"strings"
	"testing"
	"time"
)

// secretForms returns the ways a secret could end up in a string.
func secretForms(name string, b []byte) map[string]string {
	h := hex.EncodeToString(b)
	return map[string]string{
		name + " hex":     h,
		name + " HEX":     strings.ToUpper(h),
		name + " base64":  base64.StdEncoding.EncodeToString(b),
		name + " raw":     string(b),
		name + " decimal": strings.Trim(fmt.Sprint(b), "[]"),
	}
}

// TestNoKeyMaterialInErrors drives every kind of failure and checks that no
// error text, however formatted, holds SK, the negotiated key, the domain
// key, an ephemeral ECDH private key or an identity private key.
func TestNoKeyMaterialInErrors(t *testing.T) {
	domain := mustDomain(t)
	s := handshake(t, domain)
	q2, err := ecdh.P384().NewPublicKey(s.reply.Q2)
	if err != nil {
		t.Fatal(err)
	}
	neg, err := negotiate(s.d1, q2, s.hello.Q1, s.reply.Q2)
	if err != nil {
		t.Fatal(err)
	}
	secrets := map[string]string{}
	for name, b := range map[string][]byte{
		"SK":              s.hsmSK[:],
		"negotiated key":  neg,
		"domain key":      domain[:],
		"d1":              s.d1.Bytes(),
		"client identity": mustBytes(t, clientIdentity),
		"HSM identity":    mustBytes(t, hsmIdentity),
	} {
		for k, v := range secretForms(name, b) {
			secrets[k] = v
		}
	}

	ekt := s.reply.EKT
	cmd, err := Seal(s.clientSK, ToHSM, 1, ekt, []byte("x"))
	if err != nil {
		t.Fatal(err)
	}
	badReply := *s.reply
	badReply.Q2 = s.hello.Q1
	forgedHello := *s.hello
	forgedHello.Q1 = s.reply.Q2
	var w Window
	w.Accept(2)
	foreign := mustDomain(t)

	var errs []error
	add := func(err error) {
		if err == nil {
			t.Fatalf("expected failure %d did not fail", len(errs))
		}
		errs = append(errs, err)
	}
	_, _, _, err = Accept(&forgedHello, clientIdentity.Public(), "hsm-a", hsmIdentity, domain, testClaims())
	add(err)
	_, err = Finish(s.hello, s.d1, &badReply, hsmIdentity.Public())
	add(err)
	_, _, err = OpenEKT(domain, ekt, s.claims.Expires.Add(time.Minute))
	add(err)
	_, _, err = OpenEKT(foreign, ekt, time.Now())
	add(err)
	_, _, err = OpenEKT(domain, append([]byte{9}, ekt[1:]...), time.Now())
	add(err)
	_, _, err = OpenEKT(domain, ekt[:20], time.Now())
	add(err)
	_, err = Open(s.hsmSK, ToHSM, ekt, Envelope{ekt, 1, flip(cmd.Body, 3)})
	add(err)
	_, err = Open(s.hsmSK, ToClient, ekt, Envelope{nil, 1, cmd.Body})
	add(err)
	_, err = Open(s.hsmSK, ToHSM, ekt, Envelope{ekt, 2, cmd.Body})
	add(err)
	add(w.Accept(2))
	add(w.Accept(1))

	for _, err := range errs {
		for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x"} {
			msg := fmt.Sprintf(verb, err)
			for what, secret := range secrets {
				if strings.Contains(msg, secret) {
					t.Errorf("%s in error text %s: %.80q...", what, verb, msg)
				}
			}
		}
	}
}

func mustBytes(t *testing.T, id *Identity) []byte {
	t.Helper()
	b, err := id.k.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestKeysDoNotPrint checks that printing a DomainKey or an Identity by
// mistake, with any verb, shows neither key.
func TestKeysDoNotPrint(t *testing.T) {
	domain := mustDomain(t)
	secrets := map[string]string{}
	for k, v := range secretForms("domain key", domain[:]) {
		secrets[k] = v
	}
	for k, v := range secretForms("identity", mustBytes(t, clientIdentity)) {
		secrets[k] = v
	}
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d", "%o", "%b", "%c", "%U"} {
		got := fmt.Sprintf(verb, domain)
		if got != "domain "+domain.ID() {
			t.Errorf("%s of a DomainKey = %q", verb, got)
		}
		for _, v := range []any{clientIdentity, *clientIdentity, struct{ K DomainKey }{domain}} {
			got += fmt.Sprintf(verb, v)
		}
		for what, secret := range secrets {
			if strings.Contains(got, secret) {
				t.Errorf("%s printed with %s", what, verb)
			}
		}
	}
}
