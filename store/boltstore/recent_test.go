package boltstore

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/tincan/tincan/store"
)

// Reads give the same answers whether the newest records are in memory, on
// disk only, or some in each (a cache of a few records), and after the
// events that change or delete records: a joiner claiming pending
// messages, an acknowledgement, a prune.
func TestReadFromMemoryOrDisk(t *testing.T) {
	for _, tc := range []struct {
		name   string
		recent int
	}{
		{"memory", 0},  // the default, 16 MiB
		{"disk", -1},   // no cache
		{"mixed", 400}, // about three records
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			s := open(t, filepath.Join(t.TempDir(), "r.db"), Options{RecentBytes: tc.recent})
			a := mustJoin(t, s, "r")
			// Kept for the next joiner: claiming rewrites these records.
			pending := []uint64{mustAppend(t, s, a.Member, `"type":"p1"`), mustAppend(t, s, a.Member, `"type":"p2"`)}
			b := mustJoin(t, s, "r")
			var want []uint64
			want = append(want, pending...)
			for i := range 10 {
				want = append(want, mustAppend(t, s, a.Member, fmt.Sprintf(`"type":"m%d"`, i)))
			}
			// a sees only b's peer-joined event, never its own messages.
			if msgs, _, err := s.Read(ctx0, a.Member, store.ReadRequest{After: 0, Limit: 100, Acknowledge: false}); err != nil || len(msgs) != 1 {
				t.Fatalf("a reads %v %v, want its peer-joined event only", msgs, err)
			}

			ids := func(m store.Member, after uint64, limit int) []uint64 {
				t.Helper()
				msgs, _, err := s.Read(ctx0, m, store.ReadRequest{After: after, Limit: limit, Acknowledge: false})
				if err != nil {
					t.Fatal(err)
				}
				var out []uint64
				for _, msg := range msgs {
					if want := fmt.Sprintf(`{"id":%d,`, msg.ID); string(msg.Data[:len(want)]) != want {
						t.Fatalf("message %d reads %s", msg.ID, msg.Data)
					}
					out = append(out, msg.ID)
				}
				return out
			}
			if got := ids(b.Member, 0, 100); !slices.Equal(got, want) {
				t.Fatalf("b reads %v, want %v", got, want)
			}
			if got := ids(b.Member, want[4], 3); !slices.Equal(got, want[5:8]) {
				t.Fatalf("b reads after %d, 3 of them: %v, want %v", want[4], got, want[5:8])
			}

			// b acknowledges the first six; a prune deletes them.
			if _, _, err := s.Read(ctx0, b.Member, store.ReadRequest{After: want[5], Limit: 100, Acknowledge: true}); err != nil {
				t.Fatal(err)
			}
			if got := ids(b.Member, 0, 100); !slices.Equal(got, want[6:]) {
				t.Fatalf("after ack, b reads %v, want %v", got, want[6:])
			}
			if n, err := s.Prune(ctx); err != nil || n != 6 {
				t.Fatalf("prune deleted %d (%v), want 6", n, err)
			}
			if got := ids(b.Member, 0, 100); !slices.Equal(got, want[6:]) {
				t.Fatalf("after prune, b reads %v, want %v", got, want[6:])
			}
		})
	}
}

// The cache keeps the newest records within its limit, however many pass
// through it, and forgets deleted rooms.
func TestRecentCacheBounded(t *testing.T) {
	x := newIndex(1000)
	rec := make([]byte, 100)
	for id := uint64(1); id <= 10_000; id++ {
		room := fmt.Sprintf("r%d", id%7)
		x.add(room, id, false, rec)
		if id%500 == 0 {
			x.drop(room) // a room deleted: its records leave the cache
		}
	}
	c := &x.cache
	if c.bytes > 1000 || len(c.records) > 10 {
		t.Fatalf("cache holds %d records, %d bytes; limit 1000 bytes", len(c.records), c.bytes)
	}
	if n := len(c.order) - c.head; n > 2*len(c.records)+64 {
		t.Fatalf("eviction order holds %d ids for %d records", n, len(c.records))
	}
	if _, ok := c.get(10_000); ok {
		t.Fatal("the record of a deleted room is still cached")
	}
	if _, ok := c.get(9_999); !ok {
		t.Fatal("the newest record is not cached")
	}
}

// A room deleted just before a crash leaves its messages and keys in the
// file. After the restart they are not read, not even by a new room of the
// same name, and the next prune deletes them.
func TestDeletedRoomAcrossRestart(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "d.db")
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	a := mustJoin(t, s, "r")
	b := mustJoin(t, s, "r")
	for i := range 5 {
		if _, err := appendID(s, ctx, store.Post{From: a.Member, IdempotencyKey: fmt.Sprint("k", i), Messages: []store.Draft{{Fields: []byte(`"type":"old"`)}}}); err != nil {
			t.Fatal(err)
		}
	}
	s.Leave(ctx, a.Member, store.ReasonLeft)
	s.Leave(ctx, b.Member, store.ReasonLeft)
	s.Close() // no prune ran: the room's messages are still in the file

	s = open(t, path, Options{OrphanSweep: time.Hour}) // Prune below deletes them
	if got := len(s.orphans.msgs); got != 7 {          // 5 posts, peer-joined, peer-left
		t.Fatalf("found %d orphaned messages after the restart, want 7", got)
	}
	c := mustJoin(t, s, "r")
	d := mustJoin(t, s, "r")
	if msgs, _, err := s.Read(ctx0, d.Member, store.ReadRequest{After: 0, Limit: 100, Acknowledge: false}); err != nil || len(msgs) != 0 {
		t.Fatalf("the new room's second member reads %d messages (%v), want none of the old room's", len(msgs), err)
	}
	// The old keys are gone with their room: the same key makes a new message.
	id, err := appendID(s, ctx, store.Post{From: c.Member, IdempotencyKey: "k0", Messages: []store.Draft{{Fields: []byte(`"type":"new"`)}}})
	if err != nil {
		t.Fatal(err)
	}
	if msgs, _, _ := s.Read(ctx0, d.Member, store.ReadRequest{After: 0, Limit: 100, Acknowledge: false}); len(msgs) != 1 || msgs[0].ID != id {
		t.Fatalf("the new room reads %+v, want only message %d", msgs, id)
	}
	if n, err := s.Prune(ctx); err != nil || n != 7 {
		t.Fatalf("prune deleted %d (%v), want the 7 orphans", n, err)
	}
	if keys := storedKeys(s); keys != 1 {
		t.Fatalf("%d idempotency keys in the file, want the new room's one", keys)
	}
}

// The sweep deletes a deleted room's messages from the file by itself,
// without waiting for a prune.
func TestOrphanSweep(t *testing.T) {
	ctx := context.Background()
	s := open(t, filepath.Join(t.TempDir(), "o.db"), Options{OrphanSweep: 10 * time.Millisecond})
	a := mustJoin(t, s, "r")
	b := mustJoin(t, s, "r")
	for range 20 {
		mustAppend(t, s, a.Member, `"type":"x"`)
	}
	s.Leave(ctx, a.Member, store.ReasonLeft)
	s.Leave(ctx, b.Member, store.ReasonLeft)
	records := func() (n int) {
		s.db.View(func(tx *bolt.Tx) error {
			n = tx.Bucket(bucketMsgs).Stats().KeyN
			return nil
		})
		return n
	}
	// The sweep counts what it deleted once its commit returns: wait for
	// both.
	for deadline := time.Now().Add(10 * time.Second); records() > 0 || s.pruned.Load() < 22; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d records of a deleted room still in the file after 10 s of sweeps, %d counted pruned", records(), s.pruned.Load())
		}
	}
	if got := s.pruned.Load(); got != 22 { // 20 posts, peer-joined, peer-left
		t.Fatalf("pruned = %d, want 22", got)
	}
}
