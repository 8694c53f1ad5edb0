package hsm

import (
	"bytes"
	"crypto/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// A store opened with another (valid) master key is refused with a message
// naming the master key, before anything is written: keys.db stays byte
// for byte as it was, and its own key still opens it afterwards.
func TestWrongMasterKeyLeavesStoreUntouched(t *testing.T) {
	key := func(r Ref) *keyRecord {
		return &keyRecord{Ref: r, Owner: "cu1", Material: bytes.Repeat([]byte{byte(r)}, 32)}
	}
	tests := []struct {
		name string
		fill func(t *testing.T, s *boltStore)
		// old drops the master-key check afterwards, as in a store
		// written before there was one.
		old      bool
		keys     int
		secrets  int
		wantWhat string // what the error says did not unseal
	}{
		{"key and secret", func(t *testing.T, s *boltStore) {
			storeMust(t, s.putKeys([]*keyRecord{key(1), key(2)}))
			storeMust(t, s.putSecret("identity", []byte("secret identity key")))
		}, false, 2, 1, "master-key check"},
		{"nothing sealed yet", func(*testing.T, *boltStore) {}, false, 0, 0, "master-key check"},
		{"users only", func(t *testing.T, s *boltStore) {
			storeMust(t, s.putUser(&userRecord{Username: "admin", Role: RoleAdmin, Hash: hashPassword("adminpass")}))
		}, false, 0, 0, "master-key check"},
		{"older store with keys", func(t *testing.T, s *boltStore) {
			storeMust(t, s.putKeys([]*keyRecord{key(7)}))
			storeMust(t, s.putSecret("identity", []byte("x")))
		}, true, 1, 1, "key 0x0000000000000007"},
		{"older store with a secret only", func(t *testing.T, s *boltStore) {
			storeMust(t, s.putSecret("domain", []byte("domain key")))
		}, true, 0, 1, `secret "domain"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "hsm-1")
			s, err := openBoltStore(dir)
			if err != nil {
				t.Fatal(err)
			}
			tt.fill(t, s)
			if tt.old {
				storeMust(t, s.db.Update(func(tx *bolt.Tx) error {
					return tx.Bucket(bucketMeta).Delete(metaMasterCheck)
				}))
			}
			storeMust(t, s.close())

			dbPath, keyPath := filepath.Join(dir, storeFile), filepath.Join(dir, masterKeyFile)
			before := storeFileBytes(t, dbPath)
			ownKey := storeFileBytes(t, keyPath)
			other := make([]byte, 32)
			rand.Read(other)
			storeMust(t, os.WriteFile(keyPath, other, 0o600))

			s2, err := openBoltStore(dir)
			if err == nil {
				s2.close()
				t.Fatal("a store opened with another master key")
			}
			for _, want := range []string{"master key " + keyPath, "does not open the HSM store " + dbPath, tt.wantWhat, "untouched", "master.key back"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q\nlacks %q", err, want)
				}
			}
			if after := storeFileBytes(t, dbPath); !bytes.Equal(after, before) {
				t.Errorf("keys.db changed (%d bytes before, %d after) although the master key was refused", len(before), len(after))
			}
			if got := storeFileBytes(t, keyPath); !bytes.Equal(got, other) {
				t.Error("master.key was changed")
			}

			// Its own key opens it, with everything in it.
			storeMust(t, os.WriteFile(keyPath, ownKey, 0o600))
			s3, err := openBoltStore(dir)
			if err != nil {
				t.Fatalf("with its own master key: %v", err)
			}
			defer s3.close()
			c, err := s3.load()
			if err != nil {
				t.Fatal(err)
			}
			if len(c.keys) != tt.keys || len(c.secrets) != tt.secrets {
				t.Errorf("loaded %d keys and %d secrets, want %d and %d", len(c.keys), len(c.secrets), tt.keys, tt.secrets)
			}
		})
	}
}

func storeMust(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func storeFileBytes(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
