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
