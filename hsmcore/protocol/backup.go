package protocol

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"golang.org/x/crypto/argon2"
)

// BackupFormat names the backup file format; it changes with the layout.
const BackupFormat = "hsmsh-backup/1"

// Limits that keep a damaged or hostile file from costing much.
const (
	maxBackupHeader = 4 << 10
	maxBackupFile   = 1 << 30
)

// ErrBackup is a backup file that does not open: a wrong password, or a
// file that was altered or damaged.
var ErrBackup = errors.New("the backup does not open: wrong backup password, or the file was altered or damaged")

// BackupInfo is a backup's clear header.
type BackupInfo struct {
	Format  string    `json:"format"`
	Cluster string    `json:"cluster"`
	HSM     string    `json:"hsm"`    // the HSM it was taken from
	Domain  string    `json:"domain"` // the domain key's public id
	Created time.Time `json:"created"`
	Keys    int       `json:"keys"`
	Users   int       `json:"users"`
	// The password's key derivation, argon2id.
	Salt    []byte `json:"salt"`
	Time    uint32 `json:"kdf_time"`
	Memory  uint32 `json:"kdf_memory_kib"`
	Threads uint8  `json:"kdf_threads"`
}

// BackupArgs asks an HSM for a backup: the key is derived from the
// password by the client, so the password never leaves it.
type BackupArgs struct {
	Cluster string     `json:"cluster"`
	Info    BackupInfo `json:"info"` // the KDF fields, filled by the client
	Key     []byte     `json:"key"`
	// Approval is the quorum service's, when its value is above 1.
	Approval *Approval `json:"approval,omitempty"`
}

// BackupKDF are the argon2id parameters of new backups: OWASP's minimum.
var BackupKDF = struct {
	Time, Memory uint32
	Threads      uint8
}{2, 19 * 1024, 1}

// BackupKey derives a backup's key from its password, on the client:
// the password never leaves it.
func BackupKey(password string, info BackupInfo) []byte {
	return argon2.IDKey([]byte(password), info.Salt, info.Time, info.Memory, info.Threads, 32)
}

// ReadBackupInfo reads a backup's clear header, checking its shape only;
// the header is authenticated when the backup is opened.
func ReadBackupInfo(file []byte) (BackupInfo, error) {
	var info BackupInfo
	if len(file) > maxBackupFile {
		return info, fmt.Errorf("the backup is %d bytes, more than the %d a backup may be", len(file), maxBackupFile)
	}
	i := bytes.IndexByte(file, '\n')
	if i < 0 || i > maxBackupHeader {
		return info, errors.New("not an hsmsh backup: no header line")
	}
	dec := json.NewDecoder(bytes.NewReader(file[:i]))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&info); err != nil {
		return info, fmt.Errorf("not an hsmsh backup: its header: %v", err)
	}
	switch {
	case info.Format != BackupFormat:
		return info, fmt.Errorf("backup format %q: this hsmsh reads %q", info.Format, BackupFormat)
	case len(info.Salt) < 16 || info.Time == 0 || info.Time > 10 || info.Memory < 8*1024 || info.Memory > 1<<20 || info.Threads == 0:
		return info, errors.New("the backup's key derivation parameters are out of range: the header was altered")
	}
	return info, nil
}

// WrappedKey is a key (or a user record) on its way between HSMs or
// clusters, sealed under a key derived from the domain key.
type WrappedKey struct {
	Domain string `json:"domain"` // the domain whose key wrapped it
	Ref    Ref    `json:"ref,omitempty"`
	User   string `json:"user,omitempty"` // a sealed user record, for user replicate
	Body   []byte `json:"body"`           // nonce ‖ GCM(the record's JSON), AAD label ‖ domain ‖ ref
}
