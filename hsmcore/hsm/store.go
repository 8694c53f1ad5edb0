package hsm

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hsmsh/hsmsh/hsmcore/protocol"
	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// store is where one HSM keeps its token keys and users. Writes return
// only once they are on disk (fsync), so an acknowledged key survives a
// crash. The embedded cluster with --ephemeral has no store at all.
type store interface {
	load() (*storeContents, error)
	putKeys(recs []*keyRecord) error
	deleteKey(ref Ref, at time.Time) error
	putUser(u *userRecord) error
	deleteUser(username string, at int64) error
	// putQuorum writes the quorum settings (if not nil) and tokens, and
	// drops the tokens named, in one transaction.
	putQuorum(settings *protocol.QuorumSettings, tokens []*protocol.Token, drop []string) error
	// putSecret stores one of the HSM's own secrets (its identity key, the
	// domain key, the domain's members), sealed under the master key.
	putSecret(name string, value []byte) error
	close() error
}

type storeContents struct {
	keys       []*keyRecord
	users      []*userRecord
	tombstones map[Ref]time.Time
	userTombs  map[string]int64
	quorum     *protocol.QuorumSettings
	tokens     []*protocol.Token
	secrets    map[string][]byte
}

var (
	bucketKeys       = []byte("keys")
	bucketUsers      = []byte("users")
	bucketTombstones = []byte("tombstones")
	bucketMeta       = []byte("meta")
	bucketUserTombs  = []byte("user-tombstones")
	bucketQuorum     = []byte("quorum") // "settings", and "token/NONCE"
	bucketSecrets    = []byte("secrets")
)

const (
	storeFile     = "keys.db"
	masterKeyFile = "master.key"
	storeFormat   = "1"
)

// boltStore keeps one HSM's state in a bbolt file, with secret key
// material sealed under the HSM's master key (AES-256-GCM).
type boltStore struct {
	path string
	db   *bolt.DB
	aead cipher.AEAD
	// log takes every key change first (keylog.go): one append and one
	// fdatasync per group of changes, folded into db now and then.
	log *keyLog
}

// storedKey is a key record as written: material sealed, never in clear.
type storedKey struct {
	keyRecord
	Sealed []byte `json:"sealed"`
}

// openBoltStore opens (or creates) the store in dir. A store that cannot
// be read is reported with the file's name and left exactly as it is.
func openBoltStore(dir string) (s *boltStore, err error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create HSM folder %s: %w", dir, err)
	}
	path := filepath.Join(dir, storeFile)
	_, statErr := os.Stat(path)
	existed := statErr == nil
	master, err := loadMasterKey(filepath.Join(dir, masterKeyFile), existed)
	if err != nil {
		return nil, err
	}
	block, err := aes.NewCipher(master)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, masterKeyFile), err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	// bbolt panics on some kinds of corruption, and a damaged mapping can
	// fault; turn both into an error that names the file, not a crash.
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			err = corruptErr(path, fmt.Errorf("%v", r))
		}
	}()
	if existed {
		if err := checkBoltHeader(path); err != nil {
			return nil, err
		}
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 200 * time.Millisecond, InitialMmapSize: initialMmap})
	if err != nil {
		if errors.Is(err, bolterrors.ErrTimeout) {
			return nil, fmt.Errorf("%s is in use by another process", path)
		}
		return nil, corruptErr(path, err)
	}
	s = &boltStore{path: path, db: db, aead: aead}
	// The master key is checked before anything is written: the Update
	// below always commits (a new transaction id, the buckets added since
	// the first format, the master-key check), and a store opened with
	// the wrong key must stay byte for byte as it was, for its own key.
	if existed {
		if err := s.checkMasterKey(filepath.Join(dir, masterKeyFile)); err != nil {
			db.Close()
			return nil, err
		}
	}
	// The key log is read before anything is written too: a damaged one
	// leaves keys.db as it is.
	logged, err := readKeyLog(dir)
	if err != nil {
		db.Close()
		return nil, err
	}
	err = db.Update(func(tx *bolt.Tx) error {
		// Added after the first format: created in older stores too.
		for _, b := range [][]byte{bucketUserTombs, bucketQuorum, bucketSecrets} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		for _, b := range [][]byte{bucketKeys, bucketUsers, bucketTombstones, bucketMeta} {
			if tx.Bucket(b) == nil {
				if existed && tx.Bucket(bucketMeta) != nil {
					// A store we wrote always has every bucket.
					return fmt.Errorf("bucket %q is missing", b)
				}
				if _, err := tx.CreateBucket(b); err != nil {
					return err
				}
			}
		}
		meta := tx.Bucket(bucketMeta)
		if v := meta.Get([]byte("format")); v == nil {
			if err := meta.Put([]byte("format"), []byte(storeFormat)); err != nil {
				return err
			}
		} else if string(v) != storeFormat {
			return fmt.Errorf("store format %q is not one this hsmsh reads (%s)", v, storeFormat)
		}
		// Written once the key is known to be right (a new store, or one
		// checked above), so that even a store with nothing sealed in it
		// yet refuses another master key.
		if meta.Get(metaMasterCheck) == nil {
			return meta.Put(metaMasterCheck, s.sealWith(masterCheckPlain, metaMasterCheck))
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, corruptErr(path, err)
	}
	if s.log, err = openKeyLog(dir, logged, s.fold); err != nil {
		db.Close()
		return nil, err
	}
	return s, nil
}

// metaMasterCheck names, in the meta bucket, a known value sealed under
// the master key, which tells a wrong master key before anything is read
// or written.
var (
	metaMasterCheck  = []byte("master-check")
	masterCheckPlain = []byte("hsmsh master key check")
)

// checkMasterKey makes sure the master key opens this store, reading
// only. It unseals the master-key check, or, in a store from before it
// had one, the first key and the first secret: a wrong key opens none of
// them. Damage beyond that is for load to find.
func (s *boltStore) checkMasterKey(keyPath string) error {
	var what string
	err := s.db.View(func(tx *bolt.Tx) error {
		if meta := tx.Bucket(bucketMeta); meta != nil {
			if v := meta.Get(metaMasterCheck); v != nil {
				what = "its master-key check"
				pt, err := s.openWith(v, metaMasterCheck)
				if err == nil && !bytes.Equal(pt, masterCheckPlain) {
					err = errors.New("the master-key check holds the wrong value")
				}
				return err
			}
		}
		if b := tx.Bucket(bucketKeys); b != nil {
			// A record that does not parse is damage, not a wrong key:
			// load says where.
			var sk storedKey
			if k, v := b.Cursor().First(); k != nil && json.Unmarshal(v, &sk) == nil {
				what = "key " + sk.Ref.String()
				if _, err := s.unseal(sk.Ref, sk.Sealed); err != nil {
					return err
				}
			}
		}
		if b := tx.Bucket(bucketSecrets); b != nil {
			if k, v := b.Cursor().First(); k != nil {
				what = fmt.Sprintf("secret %q", k)
				if _, err := s.unsealSecret(string(k), v); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("master key %s does not open the HSM store %s (%s does not unseal: %v): it is not the key this store was sealed with. hsmsh has left both files untouched: put this store's own master.key back (from a backup), or move the folder aside to start that HSM empty", keyPath, s.path, what, err)
	}
	return nil
}

// checkBoltHeader refuses a file that is not a bbolt database before bbolt
// opens it read-write, so hsmsh never writes into somebody else's file.
func checkBoltHeader(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("open HSM store %s: %w", path, err)
	}
	defer f.Close()
	hdr := make([]byte, 32)
	n, _ := f.Read(hdr)
	if n == 0 {
		return nil // an empty file: bbolt initialises it
	}
	// bbolt's first page holds its meta; the magic sits at offset 16.
	if n < 24 || binary.LittleEndian.Uint32(hdr[16:20]) != boltMagic {
		return corruptErr(path, errors.New("not an hsmsh key store (bad header)"))
	}
	return checkBoltSize(f, path)
}

const boltMagic = 0xED0CDAED

// checkBoltSize refuses a store cut short. bbolt maps the file into memory
// and trusts its meta page; pages past the end of a truncated file would
// fault (SIGBUS) when read, killing the process instead of reporting.
func checkBoltSize(f *os.File, path string) error {
	st, err := f.Stat()
	if err != nil {
		return err
	}
	var best struct {
		txid, pages, pageSize uint64
		ok                    bool
	}
	// Two meta pages: at 0 and at one page size. Each: a 16-byte page
	// header, then magic, version, page size, flags, root (16 bytes),
	// freelist, high-water page id, txid, checksum (FNV-64a of the rest).
	meta := make([]byte, 16+64)
	for i := 0; i < 2; i++ {
		off := int64(0)
		if i == 1 {
			if !best.ok {
				break
			}
			off = int64(best.pageSize)
		}
		if _, err := f.ReadAt(meta, off); err != nil {
			continue
		}
		m := meta[16:]
		if binary.LittleEndian.Uint32(m[0:4]) != boltMagic {
			continue
		}
		h := fnv.New64a()
		h.Write(m[:56])
		if h.Sum64() != binary.LittleEndian.Uint64(m[56:64]) {
			continue
		}
		txid := binary.LittleEndian.Uint64(m[48:56])
		if !best.ok || txid > best.txid {
			best.txid, best.pages, best.pageSize, best.ok = txid, binary.LittleEndian.Uint64(m[40:48]), uint64(binary.LittleEndian.Uint32(m[8:12])), true
		}
	}
	if !best.ok {
		return corruptErr(path, errors.New("no valid meta page"))
	}
	if need := best.pages * best.pageSize; uint64(st.Size()) < need {
		return corruptErr(path, fmt.Errorf("the file is %d bytes but its pages need %d: it was cut short", st.Size(), need))
	}
	return nil
}

func corruptErr(path string, err error) error {
	return fmt.Errorf("HSM store %s is unreadable (%v); hsmsh has left it untouched: restore it from a backup, or move it aside to start that HSM empty", path, err)
}

// loadMasterKey reads the HSM's master key, making one for a new store.
// A store whose master key is gone cannot be unsealed, so a missing key
// for an existing store is an error, never a new key.
func loadMasterKey(path string, storeExists bool) ([]byte, error) {
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		if len(b) != 32 {
			return nil, fmt.Errorf("master key %s is %d bytes, not 32: the file is damaged; restore it from a backup", path, len(b))
		}
		return b, nil
	case !errors.Is(err, os.ErrNotExist):
		return nil, fmt.Errorf("read master key %s: %w", path, err)
	case storeExists:
		return nil, fmt.Errorf("master key %s is missing, so the HSM store beside it cannot be unsealed: restore the file from a backup", path)
	}
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return nil, err
	}
	if err := writeFileSync(path, key, 0o600); err != nil {
		return nil, fmt.Errorf("write master key: %w", err)
	}
	return key, nil
}

// writeFileSync writes a file atomically and durably: temp file, fsync,
// rename, fsync of the folder.
func writeFileSync(path string, data []byte, mode os.FileMode) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if err := f.Chmod(mode); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

func refKey(r Ref) []byte {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(r))
	return b[:]
}

func (s *boltStore) seal(rec *keyRecord) []byte {
	nonce := make([]byte, s.aead.NonceSize(), s.aead.NonceSize()+len(rec.Material)+s.aead.Overhead())
	if _, err := rand.Read(nonce); err != nil {
		panic("hsmcore: crypto/rand failed: " + err.Error())
	}
	// The reference is the associated data: sealed material moved onto
	// another key's record does not open.
	return s.aead.Seal(nonce, nonce, rec.Material, refKey(rec.Ref))
}

func (s *boltStore) unseal(ref Ref, sealed []byte) ([]byte, error) {
	n := s.aead.NonceSize()
	if len(sealed) < n {
		return nil, errors.New("sealed material is truncated")
	}
	return s.aead.Open(nil, sealed[:n], sealed[n:], refKey(ref))
}

func (s *boltStore) load() (c *storeContents, err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			err = corruptErr(s.path, fmt.Errorf("%v", r))
		}
	}()
	c = &storeContents{tombstones: map[Ref]time.Time{}, userTombs: map[string]int64{}, secrets: map[string][]byte{}}
	err = s.db.View(func(tx *bolt.Tx) error {
		err := tx.Bucket(bucketKeys).ForEach(func(k, v []byte) error {
			var sk storedKey
			if err := json.Unmarshal(v, &sk); err != nil {
				return fmt.Errorf("key record %x: %w", k, err)
			}
			if len(k) != 8 || Ref(binary.BigEndian.Uint64(k)) != sk.Ref {
				return fmt.Errorf("key record %x does not match its reference %s", k, sk.Ref)
			}
			m, err := s.unseal(sk.Ref, sk.Sealed)
			if err != nil {
				return fmt.Errorf("key %s: material does not unseal under this HSM's master key: %w", sk.Ref, err)
			}
			rec := sk.keyRecord
			rec.Material = m
			c.keys = append(c.keys, &rec)
			return nil
		})
		if err != nil {
			return err
		}
		err = tx.Bucket(bucketUsers).ForEach(func(k, v []byte) error {
			var u userRecord
			if err := json.Unmarshal(v, &u); err != nil {
				return fmt.Errorf("user record %q: %w", k, err)
			}
			c.users = append(c.users, &u)
			return nil
		})
		if err != nil {
			return err
		}
		err = tx.Bucket(bucketUserTombs).ForEach(func(k, v []byte) error {
			t, err := strconv.ParseInt(string(v), 10, 64)
			if err != nil {
				return fmt.Errorf("user tombstone %q: %w", k, err)
			}
			c.userTombs[string(k)] = t
			return nil
		})
		if err != nil {
			return err
		}
		err = tx.Bucket(bucketSecrets).ForEach(func(k, v []byte) error {
			pt, err := s.unsealSecret(string(k), v)
			if err != nil {
				return fmt.Errorf("secret %q does not unseal under this HSM's master key: %w", k, err)
			}
			c.secrets[string(k)] = pt
			return nil
		})
		if err != nil {
			return err
		}
		err = tx.Bucket(bucketQuorum).ForEach(func(k, v []byte) error {
			if string(k) == "settings" {
				c.quorum = &protocol.QuorumSettings{}
				if err := json.Unmarshal(v, c.quorum); err != nil {
					return fmt.Errorf("quorum settings: %w", err)
				}
				return nil
			}
			var t protocol.Token
			if err := json.Unmarshal(v, &t); err != nil {
				return fmt.Errorf("quorum token %q: %w", k, err)
			}
			c.tokens = append(c.tokens, &t)
			return nil
		})
		if err != nil {
			return err
		}
		return tx.Bucket(bucketTombstones).ForEach(func(k, v []byte) error {
			if len(k) != 8 {
				return fmt.Errorf("tombstone %x is malformed", k)
			}
			t, err := strconv.ParseInt(string(v), 10, 64)
			if err != nil {
				return fmt.Errorf("tombstone %x: %w", k, err)
			}
			c.tombstones[Ref(binary.BigEndian.Uint64(k))] = time.Unix(0, t)
			return nil
		})
	})
	if err != nil {
		return nil, corruptErr(s.path, err)
	}
	return c, nil
}

// putKeys writes records to the key log, and returns once they are on
// disk; concurrent calls share one fdatasync.
func (s *boltStore) putKeys(recs []*keyRecord) error {
	ops := make([]logOp, len(recs))
	for i, rec := range recs {
		v, err := json.Marshal(storedKey{keyRecord: *rec, Sealed: s.seal(rec)})
		if err != nil {
			return err
		}
		ops[i] = logOp{ref: rec.Ref, value: v}
	}
	return s.log.append(ops)
}

// deleteKey removes a key and leaves a tombstone, so server-side sync can
// tell a deleted key from one not yet replicated. It goes through the
// key log too, so that it stays in order with the key's stores.
func (s *boltStore) deleteKey(ref Ref, at time.Time) error {
	return s.log.append([]logOp{{ref: ref, del: true, at: at.UnixNano()}})
}

// fold writes the key log's ops into bbolt, in order, in one synced
// transaction.
func (s *boltStore) fold(ops []logOp) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		keys, tombs := tx.Bucket(bucketKeys), tx.Bucket(bucketTombstones)
		for _, op := range ops {
			k := refKey(op.ref)
			if op.del {
				if err := keys.Delete(k); err != nil {
					return err
				}
				if err := tombs.Put(k, []byte(strconv.FormatInt(op.at, 10))); err != nil {
					return err
				}
				continue
			}
			if err := keys.Put(k, op.value); err != nil {
				return err
			}
			if err := tombs.Delete(k); err != nil {
				return err
			}
		}
		return nil
	})
}

func (s *boltStore) putUser(u *userRecord) error {
	v, err := json.Marshal(u)
	if err != nil {
		return err
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		if err := tx.Bucket(bucketUserTombs).Delete([]byte(u.Username)); err != nil {
			return err
		}
		return tx.Bucket(bucketUsers).Put([]byte(u.Username), v)
	})
}

func (s *boltStore) deleteUser(username string, at int64) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		if err := tx.Bucket(bucketUserTombs).Put([]byte(username), []byte(strconv.FormatInt(at, 10))); err != nil {
			return err
		}
		return tx.Bucket(bucketUsers).Delete([]byte(username))
	})
}

func (s *boltStore) putQuorum(settings *protocol.QuorumSettings, tokens []*protocol.Token, drop []string) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketQuorum)
		if settings != nil {
			v, err := json.Marshal(settings)
			if err != nil {
				return err
			}
			if err := b.Put([]byte("settings"), v); err != nil {
				return err
			}
		}
		for _, t := range tokens {
			v, err := json.Marshal(t)
			if err != nil {
				return err
			}
			if err := b.Put([]byte("token/"+t.Nonce), v); err != nil {
				return err
			}
		}
		for _, n := range drop {
			if err := b.Delete([]byte("token/" + n)); err != nil {
				return err
			}
		}
		return nil
	})
}

func (s *boltStore) putSecret(name string, value []byte) error {
	sealed := s.sealWith(value, []byte("secret/"+name))
	return s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketSecrets).Put([]byte(name), sealed)
	})
}

func (s *boltStore) unsealSecret(name string, sealed []byte) ([]byte, error) {
	return s.openWith(sealed, []byte("secret/"+name))
}

// sealWith seals value under the master key with a fresh nonce, bound to
// ad (the value's name), so that a sealed value moved elsewhere does not
// open.
func (s *boltStore) sealWith(value, ad []byte) []byte {
	nonce := make([]byte, s.aead.NonceSize(), s.aead.NonceSize()+len(value)+s.aead.Overhead())
	if _, err := rand.Read(nonce); err != nil {
		panic("hsmcore: crypto/rand failed: " + err.Error())
	}
	return s.aead.Seal(nonce, nonce, value, ad)
}

// openWith opens what sealWith sealed with the same ad.
func (s *boltStore) openWith(sealed, ad []byte) ([]byte, error) {
	n := s.aead.NonceSize()
	if len(sealed) < n {
		return nil, errors.New("the sealed value is truncated")
	}
	return s.aead.Open(nil, sealed[:n], sealed[n:], ad)
}

func (s *boltStore) close() error {
	err := s.log.close()
	if cerr := s.db.Close(); err == nil {
		err = cerr
	}
	return err
}

// dirLock holds a cluster's data folder for one process, so two hsmsh
// processes never write the same stores.
type dirLock struct{ f *os.File }

const lockFile = "LOCK"

// lockDir takes the folder's lock or says which process holds it.
func lockDir(dir string) (*dirLock, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create data folder %s: %w", dir, err)
	}
	path := filepath.Join(dir, lockFile)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open lock %s: %w", path, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		b := make([]byte, 32)
		n, _ := f.ReadAt(b, 0)
		f.Close()
		pid := strings.TrimSpace(string(b[:n]))
		if pid == "" {
			pid = "unknown"
		}
		return nil, fmt.Errorf("data folder %s is in use by process %s (another hsmsh): close it, or use another --data-dir or --ephemeral", dir, pid)
	}
	if err := f.Truncate(0); err == nil {
		f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return &dirLock{f: f}, nil
}

func (l *dirLock) release() {
	if l == nil || l.f == nil {
		return
	}
	// Emptying the file first means a stale pid is never shown.
	l.f.Truncate(0)
	syscall.Flock(int(l.f.Fd()), syscall.LOCK_UN)
	l.f.Close()
}

// initialMmap is the address space bbolt maps at open: growing the file
// within it needs no remap. A remap copies every page a transaction has
// in hand, and the key log's folds of thousands of records grew the file
// (and remapped it) often enough to cost several per cent of durable key
// creation (measured: about 3.5% at concurrency 8). It is address
// space, not memory: pages are read as used. With it bbolt grows the
// file in its 16 MiB steps from the start, so a new keys.db shows 16 MiB
// to ls but holds a few blocks on disk (it is sparse; du tells).
const initialMmap = 256 << 20
