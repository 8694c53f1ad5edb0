package hsm

import (
	"encoding/base64"
	"fmt"
	"strings"
	"testing"
	"time"
)

// A stored hash whose algorithm, version, parameters, salt or key are not
// exactly hashPassword's is refused by validHash and matches no password
// in checkPassword, quickly, without a panic, and without running argon2
// (whose cost the hash would choose: p=0 panics, m=4 GiB allocates it).
func TestCraftedHashesRefused(t *testing.T) {
	b64 := func(n int) string { return base64.RawStdEncoding.EncodeToString(make([]byte, n)) }
	salt, key := b64(16), b64(32)
	phc := func(alg, ver, params, salt, key string) string {
		return fmt.Sprintf("$%s$%s$%s$%s$%s", alg, ver, params, salt, key)
	}
	good := hashPassword("correct horse")
	parts := strings.Split(good, "$")
	tests := []struct {
		name string
		hash string
		want string // in validHash's error
	}{
		{"parallelism 0 (argon2 panics)", phc("argon2id", "v=19", "m=19456,t=2,p=0", salt, key), "parameters"},
		{"4 GiB of memory", phc("argon2id", "v=19", "m=4194304,t=2,p=1", salt, key), "parameters"},
		{"largest memory", phc("argon2id", "v=19", "m=4294967295,t=2,p=1", salt, key), "parameters"},
		{"time 0 (argon2 panics)", phc("argon2id", "v=19", "m=19456,t=0,p=1", salt, key), "parameters"},
		{"endless time", phc("argon2id", "v=19", "m=19456,t=4294967295,p=1", salt, key), "parameters"},
		{"255 threads", phc("argon2id", "v=19", "m=19456,t=2,p=255", salt, key), "parameters"},
		{"cheaper memory", phc("argon2id", "v=19", "m=8,t=1,p=1", salt, key), "parameters"},
		{"same costs, other spelling", phc("argon2id", "v=19", "m=019456,t=2,p=1", salt, key), "parameters"},
		{"same costs, other order", phc("argon2id", "v=19", "t=2,m=19456,p=1", salt, key), "parameters"},
		{"trailing parameter", phc("argon2id", "v=19", "m=19456,t=2,p=1,keyid=x", salt, key), "parameters"},
		{"version 16", phc("argon2id", "v=16", "m=19456,t=2,p=1", salt, key), "version"},
		{"no version", "$argon2id$m=19456,t=2,p=1$" + salt + "$" + key, "not of the form"},
		{"argon2i", phc("argon2i", "v=19", "m=19456,t=2,p=1", salt, key), "algorithm"},
		{"bcrypt", "$2b$12$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW", "not of the form"},
		{"short salt", phc("argon2id", "v=19", "m=19456,t=2,p=1", b64(8), key), "salt is 8 bytes"},
		{"no salt", phc("argon2id", "v=19", "m=19456,t=2,p=1", "", key), "salt is 0 bytes"},
		{"long salt", phc("argon2id", "v=19", "m=19456,t=2,p=1", b64(1<<16), key), "salt is 65536 bytes"},
		{"short key", phc("argon2id", "v=19", "m=19456,t=2,p=1", salt, b64(16)), "key is 16 bytes"},
		{"no key", phc("argon2id", "v=19", "m=19456,t=2,p=1", salt, ""), "key is 0 bytes"},
		{"huge key (its length is argon2's output size)", phc("argon2id", "v=19", "m=19456,t=2,p=1", salt, b64(1<<20)), "key is 1048576 bytes"},
		{"salt not base64", phc("argon2id", "v=19", "m=19456,t=2,p=1", "!!!!", key), "salt is not base64"},
		{"padded salt", phc("argon2id", "v=19", "m=19456,t=2,p=1", salt+"==", key), "salt is not base64"},
		{"key not base64", phc("argon2id", "v=19", "m=19456,t=2,p=1", salt, "%%%"), "key is not base64"},
		{"extra field", good + "$x", "not of the form"},
		{"leading text", "x" + good, "not of the form"},
		{"garbage", "$argon2id$garbage", "not of the form"},
		{"empty", "", "not of the form"},
		{"megabyte of dollars", strings.Repeat("$", 1<<20), "not of the form"},
		{"good but for the version", strings.Join([]string{"", parts[1], "v=20", parts[3], parts[4], parts[5]}, "$"), "version"},
	}
	calls := 0
	defer func(f func([]byte, []byte, uint32, uint32, uint8, uint32) []byte) { idKey = f }(idKey)
	idKey = func(pw, salt []byte, time, memory uint32, threads uint8, keyLen uint32) []byte {
		calls++
		panic(fmt.Sprintf("argon2 ran with t=%d m=%d p=%d on a refused hash", time, memory, threads))
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			calls = 0
			err := validHash(tt.hash)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("validHash = %v, want an error saying %q", err, tt.want)
			}
			if err != nil && len(err.Error()) > 300 {
				t.Errorf("validHash's message is %d bytes: it quotes too much of the hash", len(err.Error()))
			}
			start := time.Now()
			ok := func() (ok bool) {
				defer func() {
					if r := recover(); r != nil {
						t.Errorf("checkPassword panicked: %v", r)
					}
				}()
				return checkPassword(tt.hash, "correct horse")
			}()
			if ok {
				t.Error("checkPassword accepted a refused hash")
			}
			if calls != 0 {
				t.Errorf("argon2 ran %d times on a refused hash", calls)
			}
			if took := time.Since(start); took > time.Second {
				t.Errorf("refusing took %v", took)
			}
		})
	}
}

// hashPassword's own hashes pass validHash and still check.
func TestHashPasswordIsValid(t *testing.T) {
	for _, pw := range []string{"correct horse", "p@ss wörd 1", strings.Repeat("x", 32)} {
		h := hashPassword(pw)
		if err := validHash(h); err != nil {
			t.Errorf("validHash(hashPassword(%q)) = %v", pw, err)
		}
		if !checkPassword(h, pw) {
			t.Errorf("checkPassword refused the right password %q", pw)
		}
		if checkPassword(h, pw+"!") {
			t.Errorf("checkPassword accepted a wrong password for %q", pw)
		}
	}
}
