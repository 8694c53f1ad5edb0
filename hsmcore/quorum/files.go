package quorum

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
)

// RegistrationFile is the file a user signs to prove they hold the private
// key they register as a quorum approver:
//
//	{"version":"2.0","tokens":[{"approval_data":"<b64>","unsigned":"<b64 sha256(approval_data)>","signed":""}]}
type RegistrationFile struct {
	Version string              `json:"version"`
	Tokens  []RegistrationToken `json:"tokens"`
}

// RegistrationToken is the one token of a RegistrationFile. Signed is
// empty until the user fills in the base64 of their signature.
type RegistrationToken struct {
	ApprovalData string `json:"approval_data"`
	Unsigned     string `json:"unsigned"`
	Signed       string `json:"signed"`
}

// TokenFile is an operation token, which approvers sign in turn:
//
//	{"version":"2.0","approval_data":"<b64>","token":"<b64 sha256(approval_data)>","signatures":[]}
type TokenFile struct {
	Version      string      `json:"version"`
	ApprovalData string      `json:"approval_data"`
	Token        string      `json:"token"`
	Signatures   []Signature `json:"signatures"`
}

// Signature is one approver's base64 signature of a TokenFile's digest.
type Signature struct {
	Username  string `json:"username"`
	Signature string `json:"signature"`
}

// NewRegistrationFile makes an unsigned registration file for a.
func NewRegistrationFile(a ApprovalData) RegistrationFile {
	data := a.Encode()
	return RegistrationFile{Version: FileVersion, Tokens: []RegistrationToken{{
		ApprovalData: b64(data),
		Unsigned:     b64(Digest(data)),
	}}}
}

// Marshal returns the file as indented JSON with a trailing newline.
func (f RegistrationFile) Marshal() []byte {
	return marshal(f)
}

// ParseRegistrationFile reads a signed registration file: exactly one
// token, for the registration service, whose unsigned digest matches its
// approval data and whose signature is present. It returns the file, the
// decoded approval data and the signature, which the caller checks with
// VerifySignature against the public key being registered.
func ParseRegistrationFile(b []byte) (RegistrationFile, ApprovalData, []byte, error) {
	var f RegistrationFile
	if err := readFile("registration", b, &f); err != nil {
		return RegistrationFile{}, ApprovalData{}, nil, err
	}
	if err := checkVersion("registration", f.Version); err != nil {
		return RegistrationFile{}, ApprovalData{}, nil, err
	}
	if len(f.Tokens) != 1 {
		return RegistrationFile{}, ApprovalData{}, nil, fmt.Errorf("quorum registration file has %d tokens; it must have exactly 1", len(f.Tokens))
	}
	t := f.Tokens[0]
	a, err := decodeData("registration", t.ApprovalData, "unsigned", t.Unsigned)
	if err != nil {
		return RegistrationFile{}, ApprovalData{}, nil, err
	}
	if a.Service != ServiceRegistration {
		return RegistrationFile{}, ApprovalData{}, nil, fmt.Errorf("quorum registration file is for service %q; registration needs a token for service %q", a.Service, ServiceRegistration)
	}
	if t.Signed == "" {
		return RegistrationFile{}, ApprovalData{}, nil, errors.New(`quorum registration file is not signed: put the base64 of your signature of "unsigned" in "signed"`)
	}
	sig, err := unb64("registration file", "signed", t.Signed)
	if err != nil {
		return RegistrationFile{}, ApprovalData{}, nil, err
	}
	return f, a, sig, nil
}

// NewTokenFile makes an operation token with no signatures yet.
func NewTokenFile(a ApprovalData) TokenFile {
	data := a.Encode()
	return TokenFile{
		Version:      FileVersion,
		ApprovalData: b64(data),
		Token:        b64(Digest(data)),
		Signatures:   []Signature{},
	}
}

// ParseTokenFile reads an operation token strictly and checks that it is
// self-consistent: the token is the digest of the approval data and each
// signature is well-formed base64. Whether the signatures are valid, and
// enough, is for Verify.
func ParseTokenFile(b []byte) (TokenFile, ApprovalData, error) {
	var f TokenFile
	if err := readFile("token", b, &f); err != nil {
		return TokenFile{}, ApprovalData{}, err
	}
	if err := checkVersion("token", f.Version); err != nil {
		return TokenFile{}, ApprovalData{}, err
	}
	a, err := decodeData("token", f.ApprovalData, "token", f.Token)
	if err != nil {
		return TokenFile{}, ApprovalData{}, err
	}
	if len(f.Signatures) > MaxSignatures {
		return TokenFile{}, ApprovalData{}, fmt.Errorf("quorum token file has %d signatures; at most %d are allowed", len(f.Signatures), MaxSignatures)
	}
	for i, s := range f.Signatures {
		if s.Username == "" {
			return TokenFile{}, ApprovalData{}, fmt.Errorf("quorum token file: signature %d has no username", i+1)
		}
		if s.Signature == "" {
			return TokenFile{}, ApprovalData{}, fmt.Errorf("quorum token file: signature by %q is empty", s.Username)
		}
		if _, err := unb64("token file", fmt.Sprintf("signature by %q", s.Username), s.Signature); err != nil {
			return TokenFile{}, ApprovalData{}, err
		}
	}
	if f.Signatures == nil {
		f.Signatures = []Signature{}
	}
	return f, a, nil
}

// Marshal returns the file as indented JSON with a trailing newline, with
// "signatures" as [] rather than null when there are none.
func (f TokenFile) Marshal() []byte {
	if f.Signatures == nil {
		f.Signatures = []Signature{}
	}
	return marshal(f)
}

func marshal(v any) []byte {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		panic("quorum: encoding token file: " + err.Error()) // only strings: cannot happen
	}
	return append(b, '\n')
}

// readFile applies the size limit and strict JSON decoding shared by both
// file kinds.
func readFile(kind string, b []byte, v any) error {
	if len(b) > MaxFileSize {
		return fmt.Errorf("quorum %s file is %d bytes; the limit is %d, so this is not a token file", kind, len(b), MaxFileSize)
	}
	if err := decodeStrict(b, v); err != nil {
		return fmt.Errorf("quorum %s file is not valid: %w", kind, err)
	}
	return nil
}

func checkVersion(kind, v string) error {
	if v != FileVersion {
		return fmt.Errorf("quorum %s file has version %q; this hsmsh reads version %q (generate a new token)", kind, v, FileVersion)
	}
	return nil
}

// decodeData decodes a file's approval data and checks that the digest
// field next to it (named digestField) is its SHA-256, so an edit to
// either is caught before anyone signs or verifies.
func decodeData(kind, data, digestField, digest string) (ApprovalData, error) {
	where := "quorum " + kind + " file"
	raw, err := unb64(kind+" file", "approval_data", data)
	if err != nil {
		return ApprovalData{}, err
	}
	if len(raw) == 0 {
		return ApprovalData{}, fmt.Errorf("%s has no approval_data", where)
	}
	d, err := unb64(kind+" file", digestField, digest)
	if err != nil {
		return ApprovalData{}, err
	}
	if !bytes.Equal(d, Digest(raw)) {
		return ApprovalData{}, fmt.Errorf("%s: %q is not the SHA-256 of approval_data; the file was altered, generate a new token", where, digestField)
	}
	a, err := DecodeApprovalData(raw)
	if err != nil {
		return ApprovalData{}, fmt.Errorf("%s: %w", where, err)
	}
	return a, nil
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

// unb64 decodes standard base64 strictly (no stray padding bits), so each
// value has a single encoding.
func unb64(where, field, s string) ([]byte, error) {
	b, err := base64.StdEncoding.Strict().DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("quorum %s: %s is not valid base64: %w", where, field, err)
	}
	return b, nil
}
