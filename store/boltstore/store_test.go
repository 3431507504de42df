package boltstore

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/tincan/tincan/store"
)

func open(t testing.TB, path string, opts Options) *Store {
	t.Helper()
	s, err := Open(path, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// ctx0 is the context of calls that the tests do not cancel.
var ctx0 = context.Background()

// appendID appends p and returns its id.
func appendID(s *Store, ctx context.Context, p store.Post) (uint64, error) {
	a, err := s.Append(ctx, p)
	return a.ID, err
}

func mustJoin(t testing.TB, s *Store, room string) store.Joined {
	t.Helper()
	j, err := s.Join(context.Background(), store.JoinRequest{Room: room})
	if err != nil {
		t.Fatal(err)
	}
	return j
}

func mustAppend(t testing.TB, s *Store, from store.Member, fields string) uint64 {
	t.Helper()
	id, err := appendID(s, context.Background(), store.Post{From: from, Messages: []store.Draft{{Fields: []byte(fields)}}})
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// clock is a settable time source for TTL tests.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func TestGroupCommit(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), "gc.db"), Options{Options: store.Options{Capacity: 2}})
	a := mustJoin(t, s, "r")
	mustJoin(t, s, "r")
	c0, w0 := s.Stats()
	const n = 400
	var wg sync.WaitGroup
	ids := make(chan uint64, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id, err := appendID(s, context.Background(), store.Post{From: a.Member, Messages: []store.Draft{{Fields: []byte(fmt.Sprintf(`"type":"x","i":%d`, i))}}})
			if err != nil {
				t.Error(err) // not Fatal: this is not the test's goroutine
				return
			}
			ids <- id
		}()
	}
	wg.Wait()
	close(ids)
	if len(ids) != n {
		t.Fatalf("%d of %d appends succeeded", len(ids), n)
	}
	seen := map[uint64]bool{}
	for id := range ids {
		if seen[id] {
			t.Fatalf("id %d given twice", id)
		}
		seen[id] = true
	}
	c1, w1 := s.Stats()
	if w1-w0 != n {
		t.Fatalf("%d writes counted, want %d", w1-w0, n)
	}
	// Concurrent writers must share fsyncs. How many depends on timing, so
	// only the principle is checked: fewer commits than writes.
	if c1-c0 >= n {
		t.Fatalf("%d commits for %d concurrent writes: no group commit", c1-c0, n)
	}
	t.Logf("%d writes in %d commits", n, c1-c0)
}

func TestBatchFailureIsolated(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), "iso.db"), Options{})
	a := mustJoin(t, s, "r")
	// A refusal (unknown peer) shares the transaction with good writes
	// without spoiling them.
	var wg sync.WaitGroup
	errs := make([]error, 50)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			to := ""
			if i%2 == 0 {
				to = "nobody"
			}
			_, errs[i] = appendID(s, context.Background(), store.Post{From: a.Member, Messages: []store.Draft{{To: to, Fields: []byte(`"type":"x"`)}}})
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if i%2 == 0 && !errors.Is(err, store.ErrUnknownPeer) || i%2 == 1 && err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
	}

	// A hard error breaks the shared transaction: every write of the batch
	// is then retried alone, and only the failing one fails. A first write
	// holds the loop until the others are queued, so that they share the
	// next batch.
	release, entered := make(chan struct{}), make(chan struct{})
	var releaseOnce sync.Once
	defer releaseOnce.Do(func() { close(release) }) // a failing test must not leave the loop stuck
	held := make(chan error, 1)
	go func() {
		held <- s.update(context.Background(), func(*bolt.Tx) error { close(entered); <-release; return nil })
	}()
	<-entered
	boom := errors.New("boom")
	const good = 10
	ids := make([]uint64, good)
	var failed error
	wg = sync.WaitGroup{}
	for i := range good + 1 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if i == good {
				failed = s.update(context.Background(), func(*bolt.Tx) error { return boom })
				return
			}
			ids[i], errs[i] = appendID(s, context.Background(), store.Post{From: a.Member, Messages: []store.Draft{{Fields: []byte(`"type":"y"`)}}})
		}()
	}
	for deadline := time.Now().Add(10 * time.Second); len(s.ops) < good+1; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("only %d writes queued", len(s.ops))
		}
	}
	commits, _ := s.Stats()
	releaseOnce.Do(func() { close(release) })
	wg.Wait()
	if err := <-held; err != nil {
		t.Fatal(err)
	}
	if !errors.Is(failed, boom) {
		t.Fatalf("the failing write returned %v", failed)
	}
	for i := range good {
		if errs[i] != nil || ids[i] == 0 {
			t.Fatalf("write %d beside the failing one: id %d, %v", i, ids[i], errs[i])
		}
	}
	if after, _ := s.Stats(); after-commits < good+1 {
		t.Fatalf("%d commits after the shared batch failed, want each of its %d writes alone", after-commits, good+1)
	}
}

// Pruning deletes records from the file, not only from what readers see:
// acknowledged ones, expired ones with their idempotency keys, those whose
// recipients left. A prune with nothing to delete makes no commit. A deleted
// room's messages and keys leave the index and the key map at once, and the
// file at the next prune. (What readers see is the conformance suite's.)
func TestPruneDeletesFromFile(t *testing.T) {
	clk := &clock{now: time.Unix(1_700_000_000, 0)}
	s := open(t, filepath.Join(t.TempDir(), "p.db"), Options{
		Options:     store.Options{Capacity: 3, MessageTTL: time.Minute, ClientTimeout: time.Hour, PruneEvery: time.Hour, Now: clk.Now},
		OrphanSweep: time.Hour, // Prune below deletes the orphans
	})
	ctx := context.Background()
	inFile := func(id uint64) (found bool) {
		s.db.View(func(tx *bolt.Tx) error {
			found = tx.Bucket(bucketMsgs).Get(u64(id)) != nil
			return nil
		})
		return found
	}
	keysInFile := func() int { return storedKeys(s) }
	prune := func() int {
		t.Helper()
		n, err := s.Prune(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	a := mustJoin(t, s, "r")
	b := mustJoin(t, s, "r")
	c := mustJoin(t, s, "r")
	id1 := mustAppend(t, s, a.Member, `"type":"one"`) // for b and c
	id2, err := appendID(s, ctx, store.Post{From: a.Member, IdempotencyKey: "k2", Messages: []store.Draft{{Fields: []byte(`"type":"two"`)}}})
	if err != nil {
		t.Fatal(err)
	}

	// Acknowledged by b and c: id1 leaves the file, id2 (b is behind) stays.
	s.Read(ctx0, b.Member, store.ReadRequest{After: id1, Limit: 10, Acknowledge: true})
	s.Read(ctx0, c.Member, store.ReadRequest{After: id2, Limit: 10, Acknowledge: true})
	if prune() < 1 || inFile(id1) || !inFile(id2) {
		t.Fatalf("after a prune, acknowledged id1 in the file: %v, id2 (b behind): %v", inFile(id1), inFile(id2))
	}
	// Expired: id2 and its idempotency key leave the file.
	clk.add(2 * time.Minute)
	if prune() < 1 || inFile(id2) {
		t.Fatal("expired message still in the file after a prune")
	}
	if n := keysInFile(); n != 0 {
		t.Fatalf("%d idempotency keys in the file after they expired and a prune ran", n)
	}
	// With nothing to delete, pruning writes nothing.
	prune()
	commits, _ := s.Stats()
	if n := prune(); n != 0 {
		t.Fatalf("second prune deleted %d", n)
	}
	if after, _ := s.Stats(); after != commits {
		t.Fatalf("a prune with nothing to delete made %d commits", after-commits)
	}
	// A recipient who left no longer holds a record in the file.
	id3 := mustAppend(t, s, a.Member, `"type":"three"`)
	if _, err := s.Leave(ctx, c.Member, store.ReasonLeft); err != nil {
		t.Fatal(err)
	}
	s.Read(ctx0, b.Member, store.ReadRequest{After: id3, Limit: 10, Acknowledge: true})
	if prune() < 1 || inFile(id3) {
		t.Fatalf("message %d kept in the file for a member who left", id3)
	}
	// The last member leaving deletes the room, its messages and their
	// idempotency keys: at once from the index and the key map, from the
	// file at the next prune.
	if _, err := appendID(s, ctx, store.Post{From: a.Member, IdempotencyKey: "k", Messages: []store.Draft{{Fields: []byte(`"type":"x"`)}}}); err != nil {
		t.Fatal(err)
	}
	s.Leave(ctx, a.Member, store.ReasonLeft)
	s.Leave(ctx, b.Member, store.ReasonLeft)
	if n := len(s.idem.rooms); n != 0 {
		t.Fatalf("%d idempotency keys survive their room", n)
	}
	if ids := s.index.after("r", 0, 0); len(ids) != 0 {
		t.Fatalf("messages %v survive their room in the index", ids)
	}
	if n := prune(); n < 1 {
		t.Fatalf("prune after the room's deletion deleted %d messages", n)
	}
	s.db.View(func(tx *bolt.Tx) error {
		if k, _ := tx.Bucket(bucketMsgs).Cursor().First(); k != nil {
			t.Errorf("message %x survives its room", k)
		}
		if k, _ := tx.Bucket(bucketIdem).Cursor().First(); k != nil {
			t.Errorf("idempotency key %x survives its room", k)
		}
		return nil
	})
	if ms, _ := s.members(); len(ms) != 0 {
		t.Fatalf("members left: %v", ms)
	}
}

// A second store on a file that one holds fails after a short wait, and
// says why, with the file's path.
func TestFileHeldByAnother(t *testing.T) {
	path := filepath.Join(t.TempDir(), "held.db")
	s := open(t, path, Options{})
	defer s.Close()
	_, err := Open(path, Options{})
	if err == nil || !strings.Contains(err.Error(), "another process holds this file") || !strings.Contains(err.Error(), path) {
		t.Fatalf("second Open: %v; want it to name the file and say another process holds it", err)
	}
}

// storedKeys counts the idempotency keys in s's file: in the idem bucket and
// in message records.
func storedKeys(s *Store) (n int) {
	s.db.View(func(tx *bolt.Tx) error {
		n = tx.Bucket(bucketIdem).Stats().KeyN
		return tx.Bucket(bucketMsgs).ForEach(func(_, v []byte) error {
			if r, ok := viewRecord(v); ok && r.key != nil {
				n++
			}
			return nil
		})
	})
	return n
}
