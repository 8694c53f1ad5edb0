package hsm

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"
)

// keyLog is the write-ahead log of one HSM's token-key changes (keys
// stored, keys deleted), in front of its bbolt store.
//
// Why: a bbolt commit writes the B-tree pages it touched at scattered
// offsets and syncs twice, about 1.3 ms on the disks hsmsh was measured
// on; appending to one file and calling fdatasync once costs about
// 0.2 ms. A key is acknowledged once its record is in the log and the
// log is synced, so an acknowledged key survives a crash exactly as
// before; callers that arrive while a sync is running share the next
// one (group commit). The records are folded into bbolt, in one
// transaction, when the store closes, when it opens after a crash, and
// when the log grows past checkpointBytes: then the log is set aside as
// keys.log.old, a new one takes the appends at once, and the old one is
// folded in the background and removed (recovery reads both, in order).
//
// Only key records go through the log, and every change of a key does
// (a store and a delete of the same key must stay in order); users,
// quorum state and secrets are rare and keep bbolt's own commits.
//
// The file is a header (keyLogMagic) and then frames: a little-endian
// uint32 payload length, the payload's CRC-32C, the payload. A payload
// is one op byte, a flags byte (flagLast marks a batch's last frame),
// the batch's number (8 bytes, big-endian), the key's reference (8
// bytes, big-endian) and, for a store, the record exactly as bbolt
// keeps it (material sealed under the master key), for a delete the
// tombstone's time (int64 ns). Batch numbers let recovery tell a torn
// last batch (never acknowledged; dropped, whatever order its pages
// reached the disk in) from damage to synced records (refused).
type keyLog struct {
	path string
	// fold writes ops into the bbolt store in one synced transaction.
	fold func(ops []logOp) error
	// checkpointBytes is the log size past which it is folded and
	// emptied (a field so that tests can make it small).
	checkpointBytes int64

	mu      sync.Mutex
	cur     *logBatch // frames waiting for the next write
	writing bool      // a caller is writing batches; others wait on theirs
	idle    *sync.Cond
	closed  bool
	// Gathering (see gather): the writer waits until target callers
	// wait, or for gatherDelay, whichever comes first; gathered is
	// closed at target.
	gathering bool
	target    int
	gathered  chan struct{}
	// inflight is the callers in append now; peak is how many have
	// been at once lately, the callers a writer can expect to come.
	inflight, peak int
	// failed is set when a sync failed: what reached the disk is then
	// unknown (Linux may drop the dirty pages and report the error only
	// once), so the log takes nothing more until the HSM is restarted.
	failed error

	// Owned by the caller that is writing (writing == true).
	f       *os.File
	size    int64   // bytes in f, the header included
	batch   uint64  // the last batch number written
	pending []logOp // synced ops not yet folded into bbolt
	buf     []byte  // frames being written, reused
	// folding is closed when the background fold of keys.log.old ends.
	folding chan struct{}

	// oldOps are keys.log.old's ops while a fold of them failed (under
	// mu): they are folded again before the log is set aside again.
	oldOps []logOp
}

// logBatch is ops that share one write and one fdatasync.
type logBatch struct {
	ops     []logOp
	callers int
	done    chan struct{}
	err     error
}

// logOp is one key change.
type logOp struct {
	ref   Ref
	del   bool
	at    int64  // a delete's tombstone time, ns since the epoch
	value []byte // a store's record, as bbolt keeps it
}

const (
	keyLogFile    = "keys.log"
	keyLogOldFile = "keys.log.old" // set aside, being folded into bbolt
	// keyLogMagic starts every key log; the digit is its format.
	keyLogMagic = "hsmsh key log 1\n"
	// maxLogPayload bounds one frame: the largest record (an ML-DSA-87
	// private key, sealed and encoded) is under 16 KiB, so a length
	// beyond this is damage, not a record.
	maxLogPayload = 1 << 20
	// defaultCheckpointBytes is a few thousand records: folding them
	// into bbolt takes tens of milliseconds, once every second or two of
	// the fastest key creation, and reopening after a crash reads at
	// most this much.
	defaultCheckpointBytes = 4 << 20

	opStore  = 1
	opDelete = 2
	flagLast = 1

	framePrefix = 1 + 1 + 8 + 8 // op, flags, batch, ref
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// readKeyLog reads the logs in dir, keys.log.old (set aside, perhaps
// not yet folded) and then keys.log: the ops of every complete batch. A
// previous process that stopped without folding them (a crash) left
// them. A torn last batch, the remains of a write a crash interrupted,
// was never acknowledged and is dropped. A damaged frame with other
// batches after it is not a crash's doing: the error says where, and the
// store refuses to open before it writes anything.
func readKeyLog(dir string) ([]logOp, error) {
	var all []logOp
	for _, name := range []string{keyLogOldFile, keyLogFile} {
		path := filepath.Join(dir, name)
		data, err := os.ReadFile(path)
		switch {
		case errors.Is(err, os.ErrNotExist):
			continue
		case err != nil:
			return nil, fmt.Errorf("read key log %s: %w", path, err)
		}
		ops, err := parseKeyLog(data)
		if err != nil {
			return nil, fmt.Errorf("key log %s: %w; it is left as it is: restore this HSM's folder from a copy, or move the file aside to start without the key changes it holds", path, err)
		}
		all = append(all, ops...)
	}
	return all, nil
}

// openKeyLog folds ops (readKeyLog's) into bbolt and leaves the log in
// dir empty and open for appending.
func openKeyLog(dir string, ops []logOp, fold func([]logOp) error) (*keyLog, error) {
	path := filepath.Join(dir, keyLogFile)
	l := &keyLog{path: path, fold: fold, checkpointBytes: defaultCheckpointBytes}
	l.idle = sync.NewCond(&l.mu)
	l.cur = newLogBatch()
	if len(ops) > 0 {
		if err := fold(ops); err != nil {
			return nil, fmt.Errorf("fold key log %s into the store: %w", path, err)
		}
	}
	if err := os.Remove(filepath.Join(dir, keyLogOldFile)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("remove the folded key log: %w", err)
	}
	// A fresh, empty log, on disk before any key is acknowledged from it.
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open key log %s: %w", path, err)
	}
	if err := resetLogFile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("reset key log %s: %w", path, err)
	}
	if err := syncDir(dir); err != nil {
		f.Close()
		return nil, err
	}
	l.f, l.size = f, int64(len(keyLogMagic))
	return l, nil
}

func newLogBatch() *logBatch { return &logBatch{done: make(chan struct{})} }

// resetLogFile empties f to its header, synced.
func resetLogFile(f *os.File) error {
	if err := f.Truncate(0); err != nil {
		return err
	}
	if _, err := f.WriteAt([]byte(keyLogMagic), 0); err != nil {
		return err
	}
	return f.Sync()
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync folder %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync folder %s: %w", dir, err)
	}
	return nil
}

// parseKeyLog reads a whole log: the ops of every complete batch, in
// order. An empty file is an empty log (a crash between its creation
// and its header's write).
func parseKeyLog(data []byte) ([]logOp, error) {
	if len(data) == 0 {
		return nil, nil
	}
	if !bytes.HasPrefix(data, []byte(keyLogMagic)) {
		if len(data) < len(keyLogMagic) && bytes.HasPrefix([]byte(keyLogMagic), data) {
			return nil, nil // its header's write was torn
		}
		return nil, errors.New("it is not an hsmsh key log (its header is wrong)")
	}
	var (
		ops      []logOp // of complete batches
		open     []logOp // of the batch being read
		batch    uint64  // the batch being read, 0 between batches
		complete uint64  // the last complete batch
	)
	off := len(keyLogMagic)
	for off < len(data) {
		f, n, err := parseFrame(data[off:])
		if err != nil {
			// Only the last batch can be torn: it was never synced, so
			// never acknowledged, and its pages may have reached the disk
			// in any order. Valid frames of any other batch after the
			// damage mean synced records were damaged.
			torn := complete + 1
			for _, later := range laterFrames(data[off+1:]) {
				if later != torn {
					return nil, fmt.Errorf("the record at byte %d is damaged (%v) and records of batch %d follow it", off, err, later)
				}
			}
			return ops, nil
		}
		switch {
		case batch == 0 && f.batch == complete+1:
			batch = f.batch
		case f.batch != batch:
			return nil, fmt.Errorf("the record at byte %d is of batch %d where batch %d was expected", off, f.batch, max(batch, complete+1))
		}
		open = append(open, f.op)
		if f.last {
			ops = append(ops, open...)
			open, complete, batch = open[:0], batch, 0
		}
		off += n
	}
	// A batch without its last frame is a torn tail too.
	return ops, nil
}

// logFrame is one frame as read.
type logFrame struct {
	op    logOp
	batch uint64
	last  bool
}

// parseFrame reads the frame at the start of b and says how long it is.
func parseFrame(b []byte) (logFrame, int, error) {
	if len(b) < 8 {
		return logFrame{}, 0, io.ErrUnexpectedEOF
	}
	n := binary.LittleEndian.Uint32(b)
	if n < framePrefix || n > maxLogPayload {
		return logFrame{}, 0, fmt.Errorf("record length %d", n)
	}
	if uint64(len(b)-8) < uint64(n) {
		return logFrame{}, 0, io.ErrUnexpectedEOF
	}
	p := b[8 : 8+n]
	if crc32.Checksum(p, crcTable) != binary.LittleEndian.Uint32(b[4:]) {
		return logFrame{}, 0, errors.New("checksum mismatch")
	}
	f := logFrame{
		batch: binary.BigEndian.Uint64(p[2:10]),
		last:  p[1]&flagLast != 0,
		op:    logOp{ref: Ref(binary.BigEndian.Uint64(p[10:18]))},
	}
	if p[1]&^flagLast != 0 || f.batch == 0 {
		return logFrame{}, 0, fmt.Errorf("flags %#x, batch %d", p[1], f.batch)
	}
	rest := p[framePrefix:]
	switch p[0] {
	case opStore:
		f.op.value = bytes.Clone(rest)
	case opDelete:
		if len(rest) != 8 {
			return logFrame{}, 0, fmt.Errorf("delete record of %d bytes", len(p))
		}
		f.op.del, f.op.at = true, int64(binary.BigEndian.Uint64(rest))
	default:
		return logFrame{}, 0, fmt.Errorf("unknown op %d", p[0])
	}
	return f, 8 + int(n), nil
}

// laterFrames lists the batch of every whole, valid frame that starts
// anywhere in b.
func laterFrames(b []byte) []uint64 {
	var batches []uint64
	for i := range b {
		if f, _, err := parseFrame(b[i:]); err == nil {
			batches = append(batches, f.batch)
		}
	}
	return batches
}

// appendFrame appends op's frame, of batch, to b.
func appendFrame(b []byte, op logOp, batch uint64, last bool) []byte {
	var hdr [8]byte
	start := len(b)
	b = append(b, hdr[:]...)
	code, flags := byte(opStore), byte(0)
	if op.del {
		code = opDelete
	}
	if last {
		flags = flagLast
	}
	b = append(b, code, flags)
	b = binary.BigEndian.AppendUint64(b, batch)
	b = binary.BigEndian.AppendUint64(b, uint64(op.ref))
	if op.del {
		b = binary.BigEndian.AppendUint64(b, uint64(op.at))
	} else {
		b = append(b, op.value...)
	}
	p := b[start+8:]
	binary.LittleEndian.PutUint32(b[start:], uint32(len(p)))
	binary.LittleEndian.PutUint32(b[start+4:], crc32.Checksum(p, crcTable))
	return b
}

// append writes ops to the log and returns once they are on disk, or
// with the error that kept them off it.
func (l *keyLog) append(ops []logOp) error {
	for _, op := range ops {
		if !op.del && len(op.value)+framePrefix > maxLogPayload {
			return fmt.Errorf("key %s: its record is %d bytes, more than a key log record holds", op.ref, len(op.value))
		}
	}
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return errors.New("the key store is closed")
	}
	if l.failed != nil {
		err := l.failed
		l.mu.Unlock()
		return err
	}
	mine := l.cur
	mine.ops = append(mine.ops, ops...)
	mine.callers++
	l.inflight++
	l.peak = max(l.peak, l.inflight)
	defer func() {
		l.mu.Lock()
		l.inflight--
		l.mu.Unlock()
	}()
	if l.writing {
		// The writer takes this batch when its current sync ends, or
		// when it has gathered enough.
		if l.gathering && mine.callers >= l.target {
			l.gathering = false
			close(l.gathered)
		}
		l.mu.Unlock()
		<-mine.done
		return mine.err
	}
	// Become the writer: write batches until none is waiting.
	l.writing = true
	l.gather()
	most := 0
	for len(l.cur.ops) > 0 {
		b := l.cur
		l.cur = newLogBatch()
		l.mu.Unlock()
		err := l.write(b)
		l.mu.Lock()
		most = max(most, b.callers)
		b.err = err
		close(b.done)
	}
	l.writing = false
	if most < l.peak {
		// Fewer callers came together than before: expect one fewer
		// next time, so that a writer never waits long for callers
		// who left.
		l.peak--
	}
	l.idle.Broadcast()
	l.mu.Unlock()
	return mine.err
}

// gatherDelay bounds how long a writer waits for more callers before it
// syncs. An fdatasync costs about 0.3 ms here and, on a virtual
// machine, CPU too; at concurrency 8 on 3 HSMs, gathering doubled the
// keys per sync and raised durable key creation by about a third
// (BENCHMARKS.md).
const gatherDelay = 600 * time.Microsecond

// gather holds a new writer (l.mu held, released while waiting) until
// as many callers wait as have lately been in append at once, or
// gatherDelay passes: callers that arrive close together then share a
// sync instead of lining up for one each. A lone caller never waits.
func (l *keyLog) gather() {
	if l.peak < 2 || l.cur.callers >= l.peak {
		return
	}
	l.gathering, l.target, l.gathered = true, l.peak, make(chan struct{})
	ch := l.gathered
	l.mu.Unlock()
	t := time.NewTimer(gatherDelay)
	select {
	case <-ch:
	case <-t.C:
	}
	t.Stop()
	l.mu.Lock()
	l.gathering = false
}

// write puts one batch on disk; only the writer calls it.
func (l *keyLog) write(b *logBatch) error {
	if err := l.failedErr(); err != nil {
		return err
	}
	l.batch++
	l.buf = l.buf[:0]
	for i, op := range b.ops {
		l.buf = appendFrame(l.buf, op, l.batch, i == len(b.ops)-1)
	}
	if _, err := l.f.WriteAt(l.buf, l.size); err != nil {
		// Nothing was acknowledged from the part written: cut it off,
		// so that the next batch starts on a frame boundary (a full disk
		// can recover; the next write goes to the same offset anyway).
		l.f.Truncate(l.size)
		l.batch-- // numbers stay consecutive: the next batch takes this one's
		return fmt.Errorf("write key log %s: %w", l.path, err)
	}
	if err := syscall.Fdatasync(int(l.f.Fd())); err != nil {
		err = fmt.Errorf("sync key log %s: %w; the HSM takes no more keys until it is restarted", l.path, err)
		l.mu.Lock()
		l.failed = err
		l.mu.Unlock()
		return err
	}
	l.size += int64(len(l.buf))
	l.pending = append(l.pending, b.ops...)
	if l.size >= l.checkpointBytes {
		// A failed rotation loses nothing (the logs still hold every
		// record); it is tried again after the next batch.
		l.rotate()
	}
	return nil
}

// rotate sets the log aside as keys.log.old, for a background fold into
// bbolt, and starts a new keys.log; only the writer calls it. While a
// fold still runs the log simply grows; a fold that failed is tried
// again first, here.
func (l *keyLog) rotate() {
	if l.folding != nil {
		select {
		case <-l.folding:
			l.folding = nil
		default:
			return
		}
	}
	dir := filepath.Dir(l.path)
	old := filepath.Join(dir, keyLogOldFile)
	l.mu.Lock()
	retry := l.oldOps
	l.mu.Unlock()
	if retry != nil {
		if err := l.fold(retry); err != nil {
			return
		}
		if err := os.Remove(old); err != nil && !errors.Is(err, os.ErrNotExist) {
			return
		}
		l.mu.Lock()
		l.oldOps = nil
		l.mu.Unlock()
	}
	if err := os.Rename(l.path, old); err != nil {
		return
	}
	f, err := os.OpenFile(l.path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err == nil {
		if err = resetLogFile(f); err == nil {
			err = syncDir(dir)
		}
		if err != nil {
			f.Close()
		}
	}
	if err != nil {
		// Keep appending to the file we have, under its own name again.
		os.Rename(old, l.path)
		return
	}
	l.f.Close()
	l.f, l.size, l.batch = f, int64(len(keyLogMagic)), 0
	ops := l.pending
	l.pending = nil
	done := make(chan struct{})
	l.folding = done
	go func() {
		defer close(done)
		err := l.fold(ops)
		if err == nil {
			if err = os.Remove(old); err == nil {
				err = syncDir(dir)
			}
		}
		if err != nil {
			l.mu.Lock()
			l.oldOps = ops
			l.mu.Unlock()
		}
	}()
}

// waitFold waits for a background fold, and folds again what a failed
// one left; close and abandon call it, once no one writes.
func (l *keyLog) waitFold() error {
	if l.folding != nil {
		<-l.folding
		l.folding = nil
	}
	l.mu.Lock()
	retry := l.oldOps
	l.mu.Unlock()
	if retry == nil {
		return nil
	}
	if err := l.fold(retry); err != nil {
		return fmt.Errorf("fold %s into the store: %w", keyLogOldFile, err)
	}
	l.mu.Lock()
	l.oldOps = nil
	l.mu.Unlock()
	return os.Remove(filepath.Join(filepath.Dir(l.path), keyLogOldFile))
}

func (l *keyLog) failedErr() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.failed
}

// checkpoint folds the synced records into bbolt and empties the log;
// close calls it, once no one writes and no fold runs. A crash
// between the fold and the truncation replays records bbolt already
// has, which changes nothing: each op sets its key's whole state, and
// they are replayed in order.
func (l *keyLog) checkpoint() error {
	if len(l.pending) == 0 {
		return nil
	}
	if err := l.fold(l.pending); err != nil {
		return err
	}
	if err := resetLogFile(l.f); err != nil {
		err = fmt.Errorf("empty key log %s: %w; the HSM takes no more keys until it is restarted", l.path, err)
		l.mu.Lock()
		l.failed = err
		l.mu.Unlock()
		return err
	}
	l.size, l.batch = int64(len(keyLogMagic)), 0
	l.pending = nil
	return nil
}

// close waits for the writer, folds what the log holds into bbolt and
// closes the file; the empty log stays, for the next open.
func (l *keyLog) close() error {
	l.mu.Lock()
	for l.writing {
		l.idle.Wait()
	}
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	failed := l.failed
	l.mu.Unlock()
	err := l.waitFold()
	if failed == nil && err == nil {
		err = l.checkpoint()
	}
	if cerr := l.f.Close(); err == nil {
		err = cerr
	}
	return err
}

// abandon closes the file without folding it, as a crash would leave
// it; tests use it to reopen a store that stopped without closing.
func (l *keyLog) abandon() {
	l.mu.Lock()
	for l.writing {
		l.idle.Wait()
	}
	l.closed = true
	l.mu.Unlock()
	if l.folding != nil {
		<-l.folding // a background fold is bbolt's business, not the log's
	}
	l.f.Close()
}
