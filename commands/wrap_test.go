package commands

import (
	"slices"
	"strings"
	"testing"

	"github.com/hsmsh/hsmsh/hsmcore"
)

// The flags of key wrap, key unwrap and crypto sign|verify ed25519* are
// those of CloudHSM CLI's Syntax blocks: the required ones in the usage
// line, the optional ones among the options.
func TestWrapAndEd25519Flags(t *testing.T) {
	tree := Default()
	tests := []struct {
		cmd      string
		required []string
		optional []string
		absent   []string
	}{
		{"key wrap aes-gcm", []string{"payload-filter", "wrapping-filter", "tag-length-bits"}, []string{"path", "wrapping-approval", "payload-approval", "aad"}, []string{"iv", "hash-function", "approval"}},
		{"key wrap cloudhsm-aes-gcm", []string{"payload-filter", "wrapping-filter", "tag-length-bits"}, []string{"aad"}, []string{"iv"}},
		{"key wrap aes-no-pad", []string{"payload-filter", "wrapping-filter"}, []string{"path"}, []string{"aad", "tag-length-bits", "mgf"}},
		{"key wrap rsa-aes", []string{"payload-filter", "wrapping-filter", "hash-function", "mgf"}, []string{"path"}, []string{"aad"}},
		{"key wrap rsa-oaep", []string{"payload-filter", "wrapping-filter", "hash-function", "mgf"}, nil, nil},
		{"key wrap rsa-pkcs", []string{"payload-filter", "wrapping-filter"}, nil, []string{"hash-function", "mgf"}},
		{"key unwrap aes-gcm", []string{"filter", "tag-length-bits", "iv", "key-type-class", "label"}, []string{"data", "data-path", "aad", "attributes", "share-crypto-users", "manage-key-quorum-value", "use-key-quorum-value", "session", "approval", "min-srv"}, nil},
		{"key unwrap cloudhsm-aes-gcm", []string{"filter", "tag-length-bits", "key-type-class", "label"}, []string{"aad"}, []string{"iv"}},
		{"key unwrap aes-pkcs5-pad", []string{"filter", "key-type-class", "label"}, []string{"data", "data-path"}, []string{"iv", "tag-length-bits"}},
		{"key unwrap rsa-aes", []string{"filter", "hash-function", "mgf", "key-type-class", "label"}, nil, nil},
		{"key unwrap rsa-pkcs", []string{"filter", "key-type-class", "label"}, nil, []string{"mgf"}},
		{"crypto sign ed25519", []string{"key-filter"}, []string{"data", "data-path", "approval"}, []string{"hash-function", "data-type"}},
		{"crypto sign ed25519ph", []string{"key-filter", "data-type", "hash-function"}, []string{"data", "data-path", "approval"}, nil},
		{"crypto verify ed25519", []string{"key-filter"}, []string{"data", "data-path", "signature", "signature-path"}, []string{"hash-function", "approval"}},
		{"crypto verify ed25519ph", []string{"key-filter", "data-type", "hash-function"}, []string{"signature", "signature-path"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.cmd, func(t *testing.T) {
			c, rest, err := tree.Find(strings.Fields(tt.cmd))
			if err != nil || len(rest) != 0 {
				t.Fatalf("Find: %v, rest %v", err, rest)
			}
			for _, name := range tt.required {
				if f := c.flag(name); f == nil || !f.Required {
					t.Errorf("--%s: %+v, want a required flag", name, f)
				}
			}
			for _, name := range tt.optional {
				if f := c.flag(name); f == nil || f.Required {
					t.Errorf("--%s: %+v, want an optional flag", name, f)
				}
			}
			for _, name := range tt.absent {
				if c.flag(name) != nil {
					t.Errorf("--%s is there; the page has no such flag", name)
				}
			}
		})
	}
	// Help and completion list every mechanism.
	for _, group := range [][]string{{"key", "wrap"}, {"key", "unwrap"}} {
		if got := tree.Children(group); !slices.Equal(got, slices.Sorted(slices.Values(wrapMechanisms))) {
			t.Errorf("%v: %v", group, got)
		}
	}
	for _, verb := range []string{"sign", "verify"} {
		got := tree.Children([]string{"crypto", verb})
		if !slices.Contains(got, "ed25519") || !slices.Contains(got, "ed25519ph") {
			t.Errorf("crypto %s: %v", verb, got)
		}
	}
}

func TestWrapParams(t *testing.T) {
	tests := []struct {
		mech, line string
		wantErr    string
	}{
		{mech: "aes-gcm", line: "--payload-filter a.b --wrapping-filter k --tag-length-bits 128 --aad 0x10"},
		{mech: "aes-gcm", line: "--payload-filter x --wrapping-filter k --tag-length-bits 128 --aad 10"},
		{mech: "aes-gcm", line: "--payload-filter x --wrapping-filter k --tag-length-bits 128 --aad 0x1", wantErr: `--aad "0x1" is not hex`},
		{mech: "aes-gcm", line: "--payload-filter x --wrapping-filter k --tag-length-bits 128 --aad 0x", wantErr: `--aad "0x" is not hex`},
		{mech: "rsa-oaep", line: "--payload-filter x --wrapping-filter k --hash-function sha256 --mgf mgf1-sha256"},
		{mech: "rsa-oaep", line: "--payload-filter x --wrapping-filter k --hash-function sha256 --mgf mgf1-sha384", wantErr: "--mgf mgf1-sha384 does not match --hash-function sha256"},
		{mech: "rsa-aes", line: "--payload-filter x --wrapping-filter k --hash-function sha256 --mgf sha256", wantErr: `--mgf: "sha256" is not one of`},
	}
	for _, tt := range tests {
		c := wrapCommand(tt.mech)
		a, err := c.parse(strings.Fields(tt.line))
		if err == nil {
			var params hsmcore.WrapParams
			params, err = wrapParams(tt.mech, a)
			if err == nil && tt.mech == "aes-gcm" && (len(params.AAD) != 1 || params.AAD[0] != 0x10 || params.TagLengthBits != 128) {
				t.Errorf("%s %s: params %+v", tt.mech, tt.line, params)
			}
		}
		switch {
		case tt.wantErr == "" && err != nil:
			t.Errorf("%s %s: %v", tt.mech, tt.line, err)
		case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
			t.Errorf("%s %s: err %v, want %q", tt.mech, tt.line, err, tt.wantErr)
		}
	}
}
