package quorum

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"
)

// now is the fixed clock of these tests.
var now = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// testKeys are generated once: RSA generation is slow, under -race most of all.
var testKeys = sync.OnceValue(func() map[string]crypto.Signer {
	must := func(k crypto.Signer, err error) crypto.Signer {
		if err != nil {
			panic(err)
		}
		return k
	}
	ec := func(c elliptic.Curve) crypto.Signer { return must(ecdsa.GenerateKey(c, rand.Reader)) }
	rsaKey := func(bits int) crypto.Signer { return must(rsa.GenerateKey(rand.Reader, bits)) }
	_, ed, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		panic(err)
	}
	return map[string]crypto.Signer{
		"admin1":  ec(elliptic.P256()),
		"admin2":  ec(elliptic.P384()),
		"admin3":  rsaKey(2048),
		"cu1":     ec(elliptic.P256()),
		"cu2":     ec(elliptic.P384()),
		"mallory": ec(elliptic.P256()), // never registered
		"rsa1024": rsaKey(1024),
		"p224":    ec(elliptic.P224()),
		"ed25519": ed,
	}
})

// testApprovers registers admin1-3 as admins and cu1-2 as crypto users.
func testApprovers() map[string]Approver {
	keys := testKeys()
	m := map[string]Approver{}
	for _, u := range []string{"admin1", "admin2", "admin3", "cu1", "cu2"} {
		role := "admin"
		if strings.HasPrefix(u, "cu") {
			role = "crypto-user"
		}
		m[u] = Approver{Username: u, Role: role, Key: keys[u].Public()}
	}
	return m
}

func newData(t *testing.T, service string) ApprovalData {
	t.Helper()
	a, err := NewApprovalData(service, "alice", "crypto-user", "cluster-1", "0x1234", "key delete --filter key-reference=0x1234", now, 10*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// signAs returns a base64 signature of f's digest by the named test key.
func signAs(t *testing.T, f TokenFile, key string) string {
	t.Helper()
	data, _ := base64.StdEncoding.DecodeString(f.ApprovalData)
	sig, err := SignDigest(testKeys()[key], Digest(data))
	if err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(sig)
}

// newToken makes a key-usage token signed by each named approver with their own key.
func newToken(t *testing.T, signers ...string) (TokenFile, ApprovalData) {
	t.Helper()
	a := newData(t, ServiceKeyUsage)
	f := NewTokenFile(a)
	for _, u := range signers {
		if err := AddSignature(&f, u, testKeys()[u]); err != nil {
			t.Fatal(err)
		}
	}
	return f, a
}

func wantErr(t *testing.T, err error, want string) {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want one containing %q", want)
	}
	if !strings.Contains(err.Error(), want) {
		t.Fatalf("error %q does not contain %q", err, want)
	}
}

func TestApprovalData(t *testing.T) {
	a := newData(t, ServiceKeyUsage)
	if len(a.Nonce) != 64 || a.Issued != now || a.Expires != now.Add(10*time.Minute) {
		t.Fatalf("unexpected approval data %+v", a)
	}
	if b := newData(t, ServiceKeyUsage); b.Nonce == a.Nonce {
		t.Fatal("two approvals share a nonce")
	}
	got, err := DecodeApprovalData(a.Encode())
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, a) {
		t.Fatalf("round trip: got %+v, want %+v", got, a)
	}

	fixed := ApprovalData{Format: "hsmsh-approval/1", Service: "user", Requester: "bob", Role: "admin", Cluster: "c",
		Nonce: strings.Repeat("ab", 32), Issued: now, Expires: now.Add(time.Hour)}
	const want = `{"format":"hsmsh-approval/1","service":"user","requester":"bob","role":"admin","cluster":"c","nonce":"` +
		`abababababababababababababababababababababababababababababababab","issued":"2026-03-01T12:00:00Z","expires":"2026-03-01T13:00:00Z"}`
	if string(fixed.Encode()) != want {
		t.Fatalf("Encode:\n got %s\nwant %s", fixed.Encode(), want)
	}

	bad := []struct {
		name, service, role, cluster, command string
		ttl                                   time.Duration
		want                                  string
	}{
		{"unknown service", "backup", "admin", "c", "", time.Minute, `service "backup" is not known`},
		{"unknown role", "user", "root", "c", "", time.Minute, `role "root" is not known`},
		{"no cluster", "user", "admin", "", "", time.Minute, "cluster is missing"},
		{"zero ttl", "user", "admin", "c", "", 0, "lifetime must be positive"},
		{"sub-second ttl", "user", "admin", "c", "", time.Millisecond, "is not after issued"},
		{"control characters", "user", "admin", "c", "user delete\x1b[2K", time.Minute, "command contains control or formatting characters"},
		{"bidi override", "user", "admin", "c", "user delete \u202ebob", time.Minute, "command contains control or formatting characters"},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewApprovalData(tc.service, "bob", tc.role, tc.cluster, "", tc.command, now, tc.ttl)
			wantErr(t, err, tc.want)
		})
	}

	decodeBad := []struct{ name, json, want string }{
		{"unknown format", strings.Replace(want, "hsmsh-approval/1", "other/9", 1), `format is "other/9"`},
		{"unknown field", strings.Replace(want, `"format"`, `"x":1,"format"`, 1), `unknown field "x"`},
		{"not canonical", strings.Replace(want, `,"service"`, ` ,"service"`, 1), "not in canonical form"},
		{"duplicate key", strings.Replace(want, `"service":"user"`, `"service":"user","service":"quorum"`, 1), "not in canonical form"},
		{"short nonce", strings.Replace(want, "abab", "", 1), "nonce must be"},
		{"missing requester", strings.Replace(want, `"requester":"bob",`, "", 1), "requester is missing"},
		{"trailing data", want + "{}", "after the JSON object"},
		{"not UTC", strings.Replace(want, "12:00:00Z", "13:00:00+01:00", 1), "not a UTC time"},
	}
	for _, tc := range decodeBad {
		t.Run(tc.name, func(t *testing.T) {
			_, err := DecodeApprovalData([]byte(tc.json))
			wantErr(t, err, tc.want)
		})
	}
}

func TestTokenFileRoundTrip(t *testing.T) {
	for _, signers := range [][]string{nil, {"admin1"}, {"admin1", "admin3", "cu2"}} {
		t.Run(fmt.Sprint(len(signers)), func(t *testing.T) {
			f, a := newToken(t, signers...)
			b := f.Marshal()
			if !bytes.HasSuffix(b, []byte("}\n")) {
				t.Fatalf("Marshal lacks trailing newline: %q", b)
			}
			if len(signers) == 0 && !bytes.Contains(b, []byte(`"signatures": []`)) {
				t.Fatalf("empty signatures not marshalled as []: %s", b)
			}
			got, gotA, err := ParseTokenFile(b)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, f) || !reflect.DeepEqual(gotA, a) {
				t.Fatalf("round trip:\n got %+v %+v\nwant %+v %+v", got, gotA, f, a)
			}
		})
	}
	// A nil Signatures slice still marshals as [].
	f, _ := newToken(t)
	f.Signatures = nil
	if !bytes.Contains(f.Marshal(), []byte(`"signatures": []`)) {
		t.Fatal("nil signatures not marshalled as []")
	}
}

func TestRegistrationRoundTrip(t *testing.T) {
	a := newData(t, ServiceRegistration)
	rf := NewRegistrationFile(a)
	_, _, _, err := ParseRegistrationFile(rf.Marshal())
	wantErr(t, err, "not signed")

	for _, name := range []string{"admin1", "admin2", "admin3"} {
		t.Run(name, func(t *testing.T) {
			key := testKeys()[name]
			unsigned, _ := base64.StdEncoding.DecodeString(rf.Tokens[0].Unsigned)
			sig, err := SignDigest(key, unsigned)
			if err != nil {
				t.Fatal(err)
			}
			signed := rf
			signed.Tokens = []RegistrationToken{rf.Tokens[0]}
			signed.Tokens[0].Signed = base64.StdEncoding.EncodeToString(sig)
			gotF, gotA, gotSig, err := ParseRegistrationFile(signed.Marshal())
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(gotF, signed) || !reflect.DeepEqual(gotA, a) || !bytes.Equal(gotSig, sig) {
				t.Fatal("registration round trip changed the file")
			}
			if err := VerifySignature(key.Public(), Digest(gotA.Encode()), gotSig); err != nil {
				t.Fatal(err)
			}
		})
	}

	tokenData := NewRegistrationFile(newData(t, ServiceKeyUsage))
	tokenData.Tokens[0].Signed = "AAAA"
	_, _, _, err = ParseRegistrationFile(tokenData.Marshal())
	wantErr(t, err, `is for service "key-usage"`)

	two := rf
	two.Tokens = append([]RegistrationToken{}, rf.Tokens[0], rf.Tokens[0])
	_, _, _, err = ParseRegistrationFile(two.Marshal())
	wantErr(t, err, "has 2 tokens")

	bad := rf
	bad.Tokens = []RegistrationToken{rf.Tokens[0]}
	bad.Tokens[0].Signed = "not base64!"
	_, _, _, err = ParseRegistrationFile(bad.Marshal())
	wantErr(t, err, "signed is not valid base64")

	bad.Tokens[0].Signed = "AAAA"
	bad.Tokens[0].Unsigned = base64.StdEncoding.EncodeToString(make([]byte, 32))
	_, _, _, err = ParseRegistrationFile(bad.Marshal())
	wantErr(t, err, `"unsigned" is not the SHA-256 of approval_data`)
}

func TestVerify(t *testing.T) {
	twoAdmins := []Rule{{{Role: "admin", Min: 2}}}
	either := []Rule{{{Role: "admin", Min: 2}}, {{Role: "admin", Min: 1}, {Role: "crypto-user", Min: 2}}}
	type sig struct{ user, key string } // key signs as user
	cases := []struct {
		name  string
		sigs  []sig
		rules []Rule
		at    time.Time
		mod   func(*TokenFile, *ApprovalData)
		want  []string // signers, on success
		err   string
		isReq bool // error wraps ErrApprovalRequired
	}{
		{name: "2 of 3 admins", sigs: []sig{{"admin3", "admin3"}, {"admin1", "admin1"}}, rules: twoAdmins, want: []string{"admin1", "admin3"}},
		{name: "3 of 3 admins", sigs: []sig{{"admin2", "admin2"}, {"admin3", "admin3"}, {"admin1", "admin1"}}, rules: twoAdmins, want: []string{"admin1", "admin2", "admin3"}},
		{name: "one signature", sigs: []sig{{"admin1", "admin1"}}, rules: twoAdmins, err: `"2 admin" needs 1 more admin`, isReq: true},
		{name: "no signatures", rules: twoAdmins, err: "no signatures yet", isReq: true},
		{name: "unregistered signer", sigs: []sig{{"admin1", "admin1"}, {"mallory", "mallory"}}, rules: twoAdmins, err: `"mallory" is not a registered quorum approver`},
		{name: "forged as registered", sigs: []sig{{"admin1", "admin1"}, {"admin2", "mallory"}}, rules: twoAdmins, err: `signature by "admin2" is not valid for their registered key: signature does not verify`},
		{name: "same approver twice", sigs: []sig{{"admin1", "admin1"}, {"admin1", "admin1"}}, rules: twoAdmins, err: `"admin1" signed more than once`},
		{name: "expired", sigs: []sig{{"admin1", "admin1"}, {"admin2", "admin2"}}, rules: twoAdmins, at: now.Add(time.Hour), err: "expired at 2026-03-01T12:10:00Z (50m0s ago)"},
		{name: "expires exactly now", sigs: []sig{{"admin1", "admin1"}, {"admin2", "admin2"}}, rules: twoAdmins, at: now.Add(10 * time.Minute), err: "expired at"},
		{name: "issued in the future", sigs: []sig{{"admin1", "admin1"}, {"admin2", "admin2"}}, rules: twoAdmins, at: now.Add(-time.Hour), err: "in the future"},
		{name: "second alternative", sigs: []sig{{"cu1", "cu1"}, {"admin2", "admin2"}, {"cu2", "cu2"}}, rules: either, want: []string{"admin2", "cu1", "cu2"}},
		{name: "no alternative", sigs: []sig{{"cu1", "cu1"}, {"admin2", "admin2"}}, rules: either,
			err: `signed by admin2 (admin), cu1 (crypto-user), which meets no rule: "2 admin" needs 1 more admin; "1 admin + 2 crypto-user" needs 1 more crypto-user`, isReq: true},
		{name: "wrong role not counted", sigs: []sig{{"cu1", "cu1"}, {"cu2", "cu2"}}, rules: twoAdmins, err: `"2 admin" needs 2 more admin`, isReq: true},
		{name: "no rules", sigs: []sig{{"admin1", "admin1"}}, err: "no quorum rule is configured"},
		{name: "empty rule", sigs: []sig{{"admin1", "admin1"}}, rules: []Rule{{}}, err: "has no requirements"},
		{name: "zero minimum", sigs: []sig{{"admin1", "admin1"}}, rules: []Rule{{{Role: "admin", Min: 0}}}, err: "at least 1 signer"},
		{name: "role twice in a rule", sigs: []sig{{"admin1", "admin1"}}, rules: []Rule{{{Role: "admin", Min: 1}, {Role: "admin", Min: 1}}}, err: `names role "admin" twice`},
		{name: "truncated signature", sigs: []sig{{"admin1", "admin1"}, {"admin2", "admin2"}}, rules: twoAdmins,
			mod: func(f *TokenFile, _ *ApprovalData) {
				s, _ := base64.StdEncoding.DecodeString(f.Signatures[1].Signature)
				f.Signatures[1].Signature = base64.StdEncoding.EncodeToString(s[:len(s)-1])
			}, err: `signature by "admin2" is not valid for their registered key: signature does not verify`},
		{name: "approval data mismatch", sigs: []sig{{"admin1", "admin1"}, {"admin2", "admin2"}}, rules: twoAdmins,
			mod: func(_ *TokenFile, a *ApprovalData) { a.Requester = "eve" }, err: "does not match the token file"},
		{name: "registration token", sigs: []sig{{"admin1", "admin1"}, {"admin2", "admin2"}}, rules: twoAdmins,
			mod: func(f *TokenFile, a *ApprovalData) {
				a.Service = ServiceRegistration
				g := NewTokenFile(*a)
				g.Signatures = f.Signatures
				*f = g
			}, err: "registration token"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f, a := newToken(t)
			for _, s := range tc.sigs {
				f.Signatures = append(f.Signatures, Signature{Username: s.user, Signature: signAs(t, f, s.key)})
			}
			if tc.mod != nil {
				tc.mod(&f, &a)
			}
			at := now.Add(time.Minute)
			if !tc.at.IsZero() {
				at = tc.at
			}
			got, err := Verify(f, a, testApprovers(), tc.rules, at)
			if tc.err != "" {
				wantErr(t, err, tc.err)
				if errors.Is(err, ErrApprovalRequired) != tc.isReq {
					t.Fatalf("errors.Is(%v, ErrApprovalRequired) = %v, want %v", err, !tc.isReq, tc.isReq)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("signers %v, want %v", got, tc.want)
			}
		})
	}
}

func TestRuleString(t *testing.T) {
	for _, tc := range []struct {
		r    Rule
		want string
	}{
		{Rule{{"admin", 2}}, "2 admin"},
		{Rule{{"admin", 1}, {"crypto-user", 2}}, "1 admin + 2 crypto-user"},
		{Rule{}, "(empty rule)"},
	} {
		if got := tc.r.String(); got != tc.want {
			t.Errorf("%#v.String() = %q, want %q", tc.r, got, tc.want)
		}
	}
}

// TestTampered feeds altered token files through ParseTokenFile and then
// Verify, as the HSM would; each alteration must fail with a clear error.
func TestTampered(t *testing.T) {
	rules := []Rule{{{Role: "admin", Min: 2}}}
	// edit returns a signed token's JSON after applying fn to its generic form.
	edit := func(fn func(m map[string]any)) func(*testing.T) []byte {
		return func(t *testing.T) []byte {
			f, _ := newToken(t, "admin1", "admin2")
			var m map[string]any
			if err := json.Unmarshal(f.Marshal(), &m); err != nil {
				t.Fatal(err)
			}
			fn(m)
			b, _ := json.Marshal(m)
			return b
		}
	}
	// withData replaces the approval data and makes the token match it, as a
	// forger who knows the format would.
	withData := func(data string) func(m map[string]any) {
		return func(m map[string]any) {
			m["approval_data"] = base64.StdEncoding.EncodeToString([]byte(data))
			m["token"] = base64.StdEncoding.EncodeToString(Digest([]byte(data)))
		}
	}
	cases := []struct {
		name string
		file func(*testing.T) []byte
		err  string
	}{
		{"approval data changed", edit(func(m map[string]any) {
			raw, _ := base64.StdEncoding.DecodeString(m["approval_data"].(string))
			m["approval_data"] = base64.StdEncoding.EncodeToString(bytes.Replace(raw, []byte(`"alice"`), []byte(`"eve"`), 1))
		}), `"token" is not the SHA-256 of approval_data`},
		{"token changed", edit(func(m map[string]any) {
			m["token"] = base64.StdEncoding.EncodeToString(make([]byte, 32))
		}), `"token" is not the SHA-256 of approval_data`},
		{"version changed", edit(func(m map[string]any) { m["version"] = "1.0" }), `has version "1.0"; this hsmsh reads version "2.0"`},
		{"truncated signature base64", edit(func(m map[string]any) {
			s := m["signatures"].([]any)[0].(map[string]any)
			s["signature"] = s["signature"].(string)[:10]
		}), `signature by "admin1" is not valid base64`},
		{"bad base64 approval data", edit(func(m map[string]any) { m["approval_data"] = "%%%" }), "approval_data is not valid base64"},
		{"empty signature", edit(func(m map[string]any) {
			m["signatures"].([]any)[0].(map[string]any)["signature"] = ""
		}), `signature by "admin1" is empty`},
		{"signature without username", edit(func(m map[string]any) {
			m["signatures"].([]any)[0].(map[string]any)["username"] = ""
		}), "signature 1 has no username"},
		{"unknown field", edit(func(m map[string]any) { m["extra"] = true }), `unknown field "extra"`},
		{"unknown signature field", edit(func(m map[string]any) {
			m["signatures"].([]any)[0].(map[string]any)["alg"] = "none"
		}), `unknown field "alg"`},
		{"too many signatures", edit(func(m map[string]any) {
			var sigs []any
			for i := range MaxSignatures + 1 {
				sigs = append(sigs, map[string]any{"username": fmt.Sprint("u", i), "signature": "AAAA"})
			}
			m["signatures"] = sigs
		}), "has 65 signatures; at most 64 are allowed"},
		{"unknown approval format", edit(withData(`{"format":"cloudhsm/9","service":"user"}`)), `format is "cloudhsm/9"`},
		{"approval data not JSON", edit(withData(`not json`)), "approval data is not valid JSON"},
		{"huge file", func(*testing.T) []byte {
			return append([]byte(`{"version":"2.0","pad":"`), bytes.Repeat([]byte("A"), MaxFileSize)...)
		}, "the limit is 65536"},
		{"truncated JSON", func(t *testing.T) []byte {
			f, _ := newToken(t, "admin1")
			b := f.Marshal()
			return b[:len(b)/2]
		}, "not valid: unexpected EOF"},
		{"trailing data", func(t *testing.T) []byte {
			f, _ := newToken(t, "admin1")
			return append(f.Marshal(), "{}"...)
		}, "after the JSON object"},
		{"empty object", func(*testing.T) []byte { return []byte("{}") }, `has version ""`},
		// These parse; Verify must refuse them.
		{"signature bytes truncated", edit(func(m map[string]any) {
			s := m["signatures"].([]any)[1].(map[string]any)
			raw, _ := base64.StdEncoding.DecodeString(s["signature"].(string))
			s["signature"] = base64.StdEncoding.EncodeToString(raw[:len(raw)-4])
		}), `signature by "admin2" is not valid for their registered key: signature does not verify`},
		{"signature swapped", edit(func(m map[string]any) {
			s := m["signatures"].([]any)
			s[0].(map[string]any)["signature"], s[1].(map[string]any)["signature"] = s[1].(map[string]any)["signature"], s[0].(map[string]any)["signature"]
		}), `signature by "admin1" is not valid for their registered key`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f, a, err := ParseTokenFile(tc.file(t))
			if err == nil {
				_, err = Verify(f, a, testApprovers(), rules, now)
			}
			wantErr(t, err, tc.err)
		})
	}
}

func TestKeys(t *testing.T) {
	keys := testKeys()
	for _, name := range []string{"admin1", "admin2", "admin3"} {
		t.Run("allowed "+name, func(t *testing.T) {
			key := keys[name]
			text, err := EncodePublicKey(key.Public())
			if err != nil {
				t.Fatal(err)
			}
			pub, err := ParsePublicKey([]byte(text))
			if err != nil {
				t.Fatal(err)
			}
			if !pub.(interface{ Equal(crypto.PublicKey) bool }).Equal(key.Public()) {
				t.Fatal("public key changed in round trip")
			}
			// Every private key encoding openssl writes.
			der, _ := x509.MarshalPKCS8PrivateKey(key)
			encodings := map[string][]byte{"PRIVATE KEY": der}
			switch k := key.(type) {
			case *rsa.PrivateKey:
				encodings["RSA PRIVATE KEY"] = x509.MarshalPKCS1PrivateKey(k)
			case *ecdsa.PrivateKey:
				encodings["EC PRIVATE KEY"], _ = x509.MarshalECPrivateKey(k)
			}
			for typ, der := range encodings {
				priv, err := ParsePrivateKey(pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}))
				if err != nil {
					t.Fatalf("%s: %v", typ, err)
				}
				d := Digest([]byte("x"))
				sig, err := SignDigest(priv, d)
				if err != nil {
					t.Fatal(err)
				}
				if err := VerifySignature(pub, d, sig); err != nil {
					t.Fatalf("%s: %v", typ, err)
				}
			}
		})
	}

	for _, tc := range []struct{ name, want string }{
		{"ed25519", "approver key is Ed25519, which is not allowed; allowed: RSA of at least 2048 bits, ECDSA P-256 or ECDSA P-384"},
		{"rsa1024", "approver key is RSA-1024, which is too small; allowed:"},
		{"p224", "approver key is ECDSA P-224, which is not allowed"},
	} {
		t.Run("refused "+tc.name, func(t *testing.T) {
			key := keys[tc.name]
			der, err := x509.MarshalPKIXPublicKey(key.Public())
			if err != nil {
				t.Fatal(err)
			}
			_, err = ParsePublicKey(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
			wantErr(t, err, tc.want)
			_, err = EncodePublicKey(key.Public())
			wantErr(t, err, tc.want)
			priv, _ := x509.MarshalPKCS8PrivateKey(key)
			_, err = ParsePrivateKey(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: priv}))
			wantErr(t, err, tc.want)
			_, err = SignDigest(key, Digest(nil))
			wantErr(t, err, tc.want)
			err = VerifySignature(key.Public(), Digest(nil), []byte{1})
			wantErr(t, err, tc.want)
			// A token approved with such a key is refused too.
			f, a := newToken(t, "admin1")
			f.Signatures = append(f.Signatures, Signature{Username: "weak", Signature: "AAAA"})
			approvers := testApprovers()
			approvers["weak"] = Approver{Username: "weak", Role: "admin", Key: key.Public()}
			_, err = Verify(f, a, approvers, []Rule{{{Role: "admin", Min: 2}}}, now)
			wantErr(t, err, tc.want)
		})
	}

	pubDER, _ := x509.MarshalPKIXPublicKey(keys["admin1"].Public())
	privDER, _ := x509.MarshalPKCS8PrivateKey(keys["admin1"])
	ecDER, _ := x509.MarshalECPrivateKey(keys["admin1"].(*ecdsa.PrivateKey))
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})
	privPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: privDER})
	for _, tc := range []struct {
		name string
		pem  []byte
		pub  bool // ParsePublicKey, else ParsePrivateKey
		want string
	}{
		{"no PEM", []byte("hello"), true, "no PEM data found"},
		{"private key as public", privPEM, true, `PEM block is "PRIVATE KEY", want "PUBLIC KEY"; this is a private key`},
		{"corrupt public", pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: []byte{1, 2}}), true, "reading public key"},
		{"public key as private", pubPEM, false, `PEM block is "PUBLIC KEY"; want "PRIVATE KEY"`},
		{"no private PEM", []byte("hello"), false, "no private key PEM block found"},
		{"encrypted PKCS#8", pem.EncodeToMemory(&pem.Block{Type: "ENCRYPTED PRIVATE KEY", Bytes: []byte{1}}), false, "private key is encrypted"},
		{"encrypted legacy", pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Headers: map[string]string{"Proc-Type": "4,ENCRYPTED", "DEK-Info": "AES-128-CBC,00"}, Bytes: []byte{1}}), false, "private key is encrypted"},
		{"PKCS#1 label on PKCS#8", pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: privDER}), false, "reading rsa private key"},
		// openssl ecparam -genkey writes the parameters first.
		{"EC parameters first", append(pem.EncodeToMemory(&pem.Block{Type: "EC PARAMETERS", Bytes: []byte{6, 8, 42, 134, 72, 206, 61, 3, 1, 7}}),
			pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: ecDER})...), false, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var err error
			if tc.pub {
				_, err = ParsePublicKey(tc.pem)
			} else {
				_, err = ParsePrivateKey(tc.pem)
			}
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			wantErr(t, err, tc.want)
			// Key material must never appear in an error.
			if strings.Contains(err.Error(), base64.StdEncoding.EncodeToString(privDER)[:16]) {
				t.Fatal("error quotes the private key")
			}
		})
	}

	pub := keys["admin1"].Public()
	wantErr(t, VerifySignature(pub, []byte("short"), []byte{1}), "digest is 5 bytes")
	wantErr(t, VerifySignature(pub, Digest(nil), nil), "signature is empty")
	wantErr(t, VerifySignature(nil, Digest(nil), []byte{1}), "no approver key given")
	_, err := SignDigest(keys["admin1"], []byte("short"))
	wantErr(t, err, "digest is 5 bytes")
	_, err = SignDigest(nil, Digest(nil))
	wantErr(t, err, "no signing key")
}

func TestAddSignature(t *testing.T) {
	f, _ := newToken(t, "admin1")
	wantErr(t, AddSignature(&f, "admin1", testKeys()["admin2"]), `"admin1" has already signed`)
	wantErr(t, AddSignature(&f, "", testKeys()["admin2"]), "username is required")
	wantErr(t, AddSignature(&f, "weak", testKeys()["p224"]), "ECDSA P-224, which is not allowed")

	altered := f
	altered.Token = base64.StdEncoding.EncodeToString(make([]byte, 32))
	wantErr(t, AddSignature(&altered, "admin2", testKeys()["admin2"]), "not the SHA-256 of approval_data")

	full := f
	full.Signatures = make([]Signature, MaxSignatures)
	wantErr(t, AddSignature(&full, "admin2", testKeys()["admin2"]), "already has 64 signatures")

	if err := AddSignature(&f, "admin2", testKeys()["admin2"]); err != nil {
		t.Fatal(err)
	}
	if len(f.Signatures) != 2 || f.Signatures[1].Username != "admin2" {
		t.Fatalf("signatures %+v", f.Signatures)
	}
}
