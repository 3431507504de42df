package boltstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path/filepath"
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
	id, err := appendID(s, context.Background(), store.Post{From: from, Fields: []byte(fields)})
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
			id, err := appendID(s, context.Background(), store.Post{From: a.Member, Fields: []byte(fmt.Sprintf(`"type":"x","i":%d`, i))})
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
			_, errs[i] = appendID(s, context.Background(), store.Post{From: a.Member, To: to, Fields: []byte(`"type":"x"`)})
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
			ids[i], errs[i] = appendID(s, context.Background(), store.Post{From: a.Member, Fields: []byte(`"type":"y"`)})
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

func TestReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "re.db")
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	a := mustJoin(t, s, "r")
	b := mustJoin(t, s, "r")
	id := mustAppend(t, s, a.Member, `"type":"x"`)
	keyed, err := appendID(s, context.Background(), store.Post{From: a.Member, IdempotencyKey: "k", Fields: []byte(`"type":"y"`)})
	if err != nil {
		t.Fatal(err)
	}
	s.Read(ctx0, b.Member, store.ReadRequest{After: id, Limit: 10, Acknowledge: true}) // b acknowledges id; Close writes it
	secret, err := s.Secret(context.Background(), "turn", 32)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()

	s = open(t, path, Options{})
	if m, err := s.Authenticate(ctx0, b.Token); err != nil || m != b.Member {
		t.Fatalf("token lost: %v %v", m, err)
	}
	msgs, cursor, err := s.Read(ctx0, b.Member, store.ReadRequest{After: 0, Limit: 10, Acknowledge: false})
	if err != nil || cursor != id || len(msgs) != 1 || msgs[0].ID != keyed || !bytes.Contains(msgs[0].Data, []byte(`"from":"`+a.ID+`"`)) {
		t.Fatalf("messages or acknowledgement lost: %v cursor %d %+v", err, cursor, msgs)
	}
	if again, err := appendID(s, context.Background(), store.Post{From: a.Member, IdempotencyKey: "k", Fields: []byte(`"type":"y"`)}); err != nil || again != keyed {
		t.Fatalf("idempotency key lost: %d %v, want %d", again, err, keyed)
	}
	again, _ := s.Secret(context.Background(), "turn", 32)
	if !bytes.Equal(secret, again) || len(secret) != 32 {
		t.Fatal("secret changed across reopen")
	}
	if next := mustAppend(t, s, a.Member, `"type":"x"`); next <= id {
		t.Fatalf("id %d repeated after reopen", next)
	}
}

func TestPrune(t *testing.T) {
	clk := &clock{now: time.Unix(1_700_000_000, 0)}
	s := open(t, filepath.Join(t.TempDir(), "p.db"), Options{Options: store.Options{Capacity: 3, MessageTTL: time.Minute, Now: clk.Now}, OrphanSweep: time.Hour})
	ctx := context.Background()
	a := mustJoin(t, s, "r")
	b := mustJoin(t, s, "r")
	c := mustJoin(t, s, "r")
	id1 := mustAppend(t, s, a.Member, `"type":"one"`) // for b and c
	id2, err := appendID(s, ctx, store.Post{From: a.Member, IdempotencyKey: "k2", Fields: []byte(`"type":"two"`)})
	if err != nil {
		t.Fatal(err)
	}

	// b acknowledges id1; c has not: nothing goes.
	s.Read(ctx0, b.Member, store.ReadRequest{After: id1, Limit: 10, Acknowledge: true})
	if n, _ := s.Prune(ctx); n != 0 {
		t.Fatalf("pruned %d with c behind", n)
	}
	// c acknowledges id2: id1 is done for both (and the peer-joined events
	// before it, which b and c have acknowledged too).
	s.Read(ctx0, c.Member, store.ReadRequest{After: id2, Limit: 10, Acknowledge: true})
	if n, _ := s.Prune(ctx); n < 1 {
		t.Fatal("nothing pruned after every recipient acknowledged")
	}
	if msgs, _, _ := s.Read(ctx0, b.Member, store.ReadRequest{After: 0, Limit: 10, Acknowledge: false}); len(msgs) != 1 || msgs[0].ID != id2 {
		t.Fatalf("b should still have id2 only: %+v", msgs)
	}
	// TTL: id2 expires for b, who never acknowledged it.
	clk.add(2 * time.Minute)
	if msgs, _, _ := s.Read(ctx0, b.Member, store.ReadRequest{After: 0, Limit: 10, Acknowledge: false}); len(msgs) != 0 {
		t.Fatalf("expired message delivered: %+v", msgs)
	}
	if n, _ := s.Prune(ctx); n < 1 {
		t.Fatal("expired message not pruned")
	}
	// Its idempotency key expired with it: the same key makes a new message.
	if again, _ := appendID(s, ctx, store.Post{From: a.Member, IdempotencyKey: "k2", Fields: []byte(`"type":"two"`)}); again == id2 {
		t.Fatal("idempotency key outlived the message TTL")
	}
	// With nothing to delete, pruning writes nothing.
	s.Prune(ctx)
	commits, _ := s.Stats()
	if n, _ := s.Prune(ctx); n != 0 {
		t.Fatalf("second prune deleted %d", n)
	}
	if after, _ := s.Stats(); after != commits {
		t.Fatalf("a prune with nothing to delete made %d commits", after-commits)
	}
	// A recipient who left no longer holds a message back.
	id3 := mustAppend(t, s, a.Member, `"type":"three"`)
	if _, err := s.Leave(ctx, c.Member, store.ReasonLeft); err != nil {
		t.Fatal(err)
	}
	s.Read(ctx0, b.Member, store.ReadRequest{After: id3, Limit: 10, Acknowledge: true})
	if n, _ := s.Prune(ctx); n < 1 {
		t.Fatal("a message acknowledged by every remaining recipient was not pruned")
	}
	s.db.View(func(tx *bolt.Tx) error {
		if tx.Bucket(bucketMsgs).Get(u64(id3)) != nil {
			t.Errorf("message %d kept for a member who left", id3)
		}
		return nil
	})
	// The last member leaving deletes the room, its messages and their
	// idempotency keys: at once for readers, from the file at the next prune.
	if _, err := appendID(s, ctx, store.Post{From: a.Member, IdempotencyKey: "k", Fields: []byte(`"type":"x"`)}); err != nil {
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
	if n, err := s.Prune(ctx); err != nil || n < 1 {
		t.Fatalf("prune after the room's deletion deleted %d messages (%v)", n, err)
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
	if n, _ := s.Occupants(ctx0, "r"); n != 0 {
		t.Fatal("room survives its members")
	}
	if ms, _ := s.members(); len(ms) != 0 {
		t.Fatalf("members left: %v", ms)
	}
}

func TestMaxRoomMessages(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), "max.db"), Options{Options: store.Options{MaxRoomMessages: 1000}})
	a := mustJoin(t, s, "r")
	mustJoin(t, s, "r")
	for range 999 { // the peer-joined event counts too
		mustAppend(t, s, a.Member, `"type":"x"`)
	}
	_, err := appendID(s, context.Background(), store.Post{From: a.Member, Fields: []byte(`"type":"x"`)})
	if !errors.Is(err, store.ErrTooManyMessages) {
		t.Fatalf("message 1001: %v", err)
	}
}

// Joins that share a group commit must still respect the capacity.
func TestConcurrentJoinsRespectCapacity(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), "cap.db"), Options{Options: store.Options{Capacity: 2}})
	mustJoin(t, s, "r") // the room exists: the others race for the last seat
	const n = 50
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := s.Join(context.Background(), store.JoinRequest{Room: "r"})
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	joined := 0
	for err := range errs {
		switch {
		case err == nil:
			joined++
		case !errors.Is(err, store.ErrRoomFull):
			t.Fatalf("join: %v", err)
		}
	}
	if occupants, _ := s.Occupants(ctx0, "r"); joined != 1 || occupants != 2 {
		t.Fatalf("%d joins admitted, %d occupants; capacity is 2", joined, occupants)
	}
}
