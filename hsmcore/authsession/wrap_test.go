package authsession

import (
	"errors"
	"strings"
	"testing"
)

func TestWrapDomain(t *testing.T) {
	domain := mustDomain(t)
	sender, receiver, other := mustIdentity(), mustIdentity(), mustIdentity()
	w, err := WrapDomain(domain, "hsm-1", sender, receiver.Public())
	if err != nil {
		t.Fatal(err)
	}
	got, err := UnwrapDomain(w, receiver, sender.Public())
	if err != nil || got != domain {
		t.Fatalf("unwrap: %v, same key %v", err, got == domain)
	}
	cases := []struct {
		name string
		edit func(w WrappedDomain) (*WrappedDomain, *Identity, *Identity)
		want string
	}{
		{"another receiver", func(w WrappedDomain) (*WrappedDomain, *Identity, *Identity) { return &w, other, sender }, "made for another HSM"},
		{"signed by another HSM", func(w WrappedDomain) (*WrappedDomain, *Identity, *Identity) { return &w, receiver, other }, "not signed by the HSM it names"},
		{"ciphertext altered", func(w WrappedDomain) (*WrappedDomain, *Identity, *Identity) {
			w.Ciphertext = append([]byte{}, w.Ciphertext...)
			w.Ciphertext[20] ^= 1
			return &w, receiver, sender
		}, "not signed by the HSM it names"},
		{"sender renamed", func(w WrappedDomain) (*WrappedDomain, *Identity, *Identity) {
			w.From = "hsm-9"
			return &w, receiver, sender
		}, "not signed"},
		{"nil", func(w WrappedDomain) (*WrappedDomain, *Identity, *Identity) { return nil, receiver, sender }, "no wrapped domain key"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			w2, recv, send := tc.edit(*w)
			_, err := UnwrapDomain(w2, recv, send.Public())
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
		})
	}
	// A signature check that passes cannot be fooled into another key's
	// ciphertext: re-signing by the real sender is what it takes.
	if _, err := UnwrapDomain(w, receiver, other.Public()); !errors.Is(err, ErrWrapSignature) {
		t.Errorf("wrong sender key: %v", err)
	}
}
