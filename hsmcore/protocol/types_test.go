package protocol

import "testing"

// A key-reference prints as CloudHSM CLI prints it, and reads back.
func TestRefString(t *testing.T) {
	tests := []struct {
		ref  Ref
		want string
	}{
		{0, "0x0000000000000000"},
		{0x1234, "0x0000000000001234"},
		{0xdeadbeefcafe0001, "0xdeadbeefcafe0001"},
		{^Ref(0), "0xffffffffffffffff"},
	}
	for _, tt := range tests {
		if got := tt.ref.String(); got != tt.want {
			t.Errorf("%d: %q, want %q", uint64(tt.ref), got, tt.want)
		}
		if back, err := ParseRef(tt.want); err != nil || back != tt.ref {
			t.Errorf("ParseRef(%q) = %v, %v", tt.want, back, err)
		}
	}
}
