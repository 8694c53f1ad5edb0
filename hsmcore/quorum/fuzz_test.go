package quorum

import (
	"bytes"
	"reflect"
	"testing"
)

// The seed corpora are under testdata/fuzz/<FuzzName>/: valid files, an
// empty object, truncated JSON and the like.

// FuzzParseTokenFile checks that ParseTokenFile never panics, that what it
// accepts survives Marshal and a second parse unchanged, and that Verify
// never panics on what it accepts.
func FuzzParseTokenFile(f *testing.F) {
	approvers := testApprovers()
	rules := []Rule{{{Role: "admin", Min: 2}}, {{Role: "admin", Min: 1}, {Role: "crypto-user", Min: 1}}}
	f.Fuzz(func(t *testing.T, b []byte) {
		// The digest check keeps mutated approval data from ever reaching
		// DecodeApprovalData, so also try the input as approval data.
		wrapped := TokenFile{Version: FileVersion, ApprovalData: b64(b), Token: b64(Digest(b))}
		if tf, a, err := ParseTokenFile(wrapped.Marshal()); err == nil {
			if !bytes.Equal(a.Encode(), b) {
				t.Fatalf("approval data accepted in a non-canonical form: %q", b)
			}
			_, _ = Verify(tf, a, approvers, rules, a.Issued)
		}

		tf, a, err := ParseTokenFile(b)
		if err != nil {
			return
		}
		_, _ = Verify(tf, a, approvers, rules, a.Issued)
		out := tf.Marshal()
		if len(out) > MaxFileSize {
			return // indenting can push a compact file near the limit over it
		}
		tf2, a2, err := ParseTokenFile(out)
		if err != nil {
			t.Fatalf("marshalled token does not parse: %v\n%s", err, out)
		}
		if !reflect.DeepEqual(tf, tf2) || !reflect.DeepEqual(a, a2) {
			t.Fatalf("token changed in Marshal round trip:\n%+v\n%+v", tf, tf2)
		}
	})
}

// FuzzParseRegistrationFile does the same for registration files.
func FuzzParseRegistrationFile(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		rf, a, sig, err := ParseRegistrationFile(b)
		if err != nil {
			return
		}
		out := rf.Marshal()
		if len(out) > MaxFileSize {
			return
		}
		rf2, a2, sig2, err := ParseRegistrationFile(out)
		if err != nil {
			t.Fatalf("marshalled registration does not parse: %v\n%s", err, out)
		}
		if !reflect.DeepEqual(rf, rf2) || !reflect.DeepEqual(a, a2) || string(sig) != string(sig2) {
			t.Fatalf("registration changed in Marshal round trip:\n%+v\n%+v", rf, rf2)
		}
	})
}
