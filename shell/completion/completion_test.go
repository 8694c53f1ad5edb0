package completion

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/hsmsh/hsmsh/commands"
)

type fakeSource struct{}

func (fakeSource) HSMIDs() []string    { return []string{"hsm-1", "hsm-2", "hsm-3"} }
func (fakeSource) Usernames() []string { return []string{"admin", "alice", "bob"} }
func (fakeSource) KeyLabels() []string { return []string{"payroll", "my key"} }
func (fakeSource) KeyRefs() []string   { return []string{"0x0000000000000007"} }
func (fakeSource) SettingNames() []string {
	return []string{"durability.create_object_minimum_nodes", "ui.theme"}
}

func texts(t *testing.T, c *Completer, line string) ([]string, int) {
	t.Helper()
	s, start := c.Complete(line)
	out := make([]string, len(s))
	for i, x := range s {
		out[i] = x.Text
	}
	return out, start
}

func TestComplete(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "pub.pem"), nil, 0o644)
	os.WriteFile(filepath.Join(dir, "priv.txt"), nil, 0o644)
	os.Mkdir(filepath.Join(dir, "pki"), 0o755)
	c := &Completer{Tree: commands.Default(), Source: fakeSource{}, Dir: dir}
	tests := []struct {
		line  string
		want  []string
		start int
	}{
		{"key gen", []string{"generate-asymmetric-pair", "generate-file", "generate-symmetric"}, 4},
		{"ke", []string{"key"}, 0},
		{"key generate-symmetric ", []string{"aes", "generic-secret"}, 23},
		{"key generate-asymmetric-pair ec --public-label p --private-label q --curve secp3", []string{"secp384r1"}, 75},
		{"key generate-symmetric aes --", []string{"--label", "--key-length-bytes", "--session", "--attributes", "--share-crypto-users", "--min-srv", "--use-key-quorum-value", "--manage-key-quorum-value"}, 27},
		{"key generate-symmetric aes --label x --k", []string{"--key-length-bytes"}, 37},
		{"lab hsm fail --hsm ", []string{"hsm-1", "hsm-2", "hsm-3"}, 19},
		{"lab hsm fail --hsm hsm-2", []string{"hsm-2"}, 19},
		{"login --username a", []string{"admin", "alice"}, 17},
		{"login --username alice --role ", []string{"admin", "crypto-user"}, 30},
		{"crypto sign ecdsa --hash-function sha5", []string{"sha512"}, 34},
		{"key delete --filter attr.label=p", []string{"attr.label=payroll"}, 20},
		{"key delete --filter attr.label=m", []string{"attr.label='my key'"}, 20},
		{"key import pem --path p", []string{"pki/", "priv.txt", "pub.pem"}, 22},
		{"key import pem --path pu", []string{"pub.pem"}, 22},
		{"config set dur", []string{"durability.create_object_minimum_nodes"}, 11},
		{"help key l", []string{"list"}, 9},
		{"h", []string{"help"}, 0},
	}
	for _, tt := range tests {
		got, start := texts(t, c, tt.line)
		if !reflect.DeepEqual(got, tt.want) || start != tt.start {
			t.Errorf("Complete(%q) = %q at %d; want %q at %d", tt.line, got, start, tt.want, tt.start)
		}
	}
}

type keyedSource struct{ fakeSource }

func (keyedSource) Keys() []KeyInfo {
	return []KeyInfo{
		{Ref: "0x01", Label: "aeskey", Class: "secret-key", Type: "aes"},
		{Ref: "0x02", Label: "pub", Class: "public-key", Type: "ec"},
		{Ref: "0x03", Label: "priv", Class: "private-key", Type: "ec"},
		{Ref: "0x04", Label: "rsapriv", Class: "private-key", Type: "rsa"},
	}
}
func (keyedSource) KeyLabels() []string { return []string{"aeskey", "pub", "priv", "rsapriv"} }
func (keyedSource) KeyRefs() []string   { return []string{"0x01", "0x02", "0x03", "0x04"} }

// crypto sign ecdsa is offered EC private keys only, not AES or public
// keys; a value given already is not offered again.
func TestCompleteKeyKinds(t *testing.T) {
	c := &Completer{Tree: commands.Default(), Source: keyedSource{}}
	got, _ := texts(t, c, "crypto sign ecdsa --key-filter attr.l")
	if want := []string{"attr.label=priv"}; !reflect.DeepEqual(got, want) {
		t.Errorf("sign ecdsa: %q, want %q", got, want)
	}
	got, _ = texts(t, c, "crypto verify ecdsa --key-filter key-")
	if want := []string{"key-reference=0x02"}; !reflect.DeepEqual(got, want) {
		t.Errorf("verify ecdsa: %q, want %q", got, want)
	}
	got, _ = texts(t, c, "key delete --filter attr.l")
	if len(got) != 4 {
		t.Errorf("key delete offers every label: %q", got)
	}
	got, _ = texts(t, c, "key delete --filter attr.label=priv attr.label=p")
	for _, g := range got {
		if g == "attr.label=priv" {
			t.Errorf("a value given already is offered again: %q", got)
		}
	}
}

func TestApplyAndCommonPrefix(t *testing.T) {
	tests := []struct {
		line          string
		cursor, start int
		text          string
		final         bool
		want          string
		wantPos       int
	}{
		{"key gen", 7, 4, "generate-file", true, "key generate-file ", 18},
		{"key gen aes", 7, 4, "generate-symmetric", true, "key generate-symmetric aes", 23},
		{"key genxyz", 7, 4, "generate-file", true, "key generate-file ", 18},
		{"key gen", 7, 4, "generate-", false, "key generate-", 13},
		{"--filter attr.", 14, 9, "attr.label=", true, "--filter attr.label=", 20},
		{"--path p", 8, 7, "pki/", true, "--path pki/", 11},
	}
	for _, tt := range tests {
		got, pos := Apply(tt.line, tt.cursor, tt.start, tt.text, tt.final)
		if got != tt.want || pos != tt.wantPos {
			t.Errorf("Apply(%q, %d, %d, %q) = %q, %d; want %q, %d", tt.line, tt.cursor, tt.start, tt.text, got, pos, tt.want, tt.wantPos)
		}
	}
	c := &Completer{Tree: commands.Default()}
	s, _ := c.Complete("key gen")
	if p := CommonPrefix(s); p != "generate-" {
		t.Errorf("CommonPrefix = %q", p)
	}
}

// The kind of key a crypto command offers labels for: Ed25519 keys are EC
// keys, so crypto sign ed25519 offers EC private keys, not every key.
func TestKeyKindOfEd25519(t *testing.T) {
	for _, tt := range []struct {
		path        []string
		class, kind string
	}{
		{[]string{"crypto", "sign", "ed25519"}, "private-key", "ec"},
		{[]string{"crypto", "verify", "ed25519ph"}, "public-key", "ec"},
		{[]string{"crypto", "sign", "ecdsa"}, "private-key", "ec"},
		{[]string{"crypto", "sign", "rsa-pkcs"}, "private-key", "rsa"},
		{[]string{"key", "wrap", "aes-gcm"}, "", ""},
	} {
		class, kind := keyKind(&commands.Command{Path: tt.path})
		if class != tt.class || kind != tt.kind {
			t.Errorf("%v: %q %q, want %q %q", tt.path, class, kind, tt.class, tt.kind)
		}
	}
}
