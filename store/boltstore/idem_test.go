package boltstore

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/tincan/tincan/store"
)

// A key travels in its post's first record (issue 20). It outlives a
// message pruned early, also across a restart, until the TTL; then a prune
// forgets it. A key too long for a record keeps its own entry.
func TestKeyOutlivesItsMessage(t *testing.T) {
	clk := &clock{now: time.Unix(1_700_000_000, 0)}
	path := filepath.Join(t.TempDir(), "k.db")
	opts := Options{
		Options:     store.Options{MessageTTL: time.Minute, ClientTimeout: time.Hour, PruneEvery: time.Hour, Now: clk.Now},
		OrphanSweep: time.Hour,
	}
	s := open(t, path, opts)
	a, b := mustJoin(t, s, "r"), mustJoin(t, s, "r")
	post := func(key string, n int) store.Appended {
		t.Helper()
		drafts := make([]store.Draft, n)
		for i := range drafts {
			drafts[i] = store.Draft{Fields: []byte(`"type":"x"`)}
		}
		out, err := s.Append(ctx0, store.Post{From: a.Member, IdempotencyKey: key, Messages: drafts})
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	inFile := func(id uint64) (found bool) {
		s.db.View(func(tx *bolt.Tx) error { found = tx.Bucket(bucketMsgs).Get(u64(id)) != nil; return nil })
		return found
	}
	wantRepeat := func(key string, first uint64, n int, when string) {
		t.Helper()
		if r := post(key, n); !r.Repeat || r.ID != first || len(r.IDs) != n {
			t.Fatalf("%s: key %.8q answered %+v, want a repeat of %d (%d messages)", when, key, r, first, n)
		}
	}
	long := strings.Repeat("L", 300)
	k1, k2, kl := post("k1", 1), post("k2", 3), post(long, 1)
	if got := storedKeys(s); got != 3 {
		t.Fatalf("%d keys in the file, want 3", got)
	}
	wantRepeat("k2", k2.ID, 3, "before any prune")

	// b acknowledges everything: the messages go, their keys stay.
	if _, _, err := s.Read(ctx0, b.Member, store.ReadRequest{After: kl.ID, Limit: 10, Acknowledge: true}); err != nil {
		t.Fatal(err)
	}
	if n, err := s.Prune(ctx0); err != nil || n != 5 || inFile(k1.ID) || inFile(k2.ID) {
		t.Fatalf("prune deleted %d (%v), want the 5 acknowledged messages", n, err)
	}
	if got := storedKeys(s); got != 3 {
		t.Fatalf("%d keys in the file after their messages were pruned, want 3", got)
	}
	wantRepeat("k1", k1.ID, 1, "after the prune")
	wantRepeat("k2", k2.ID, 3, "after the prune")
	wantRepeat(long, kl.ID, 1, "after the prune")

	s.Close()
	s = open(t, path, opts)
	wantRepeat("k1", k1.ID, 1, "after a restart")
	wantRepeat("k2", k2.ID, 3, "after a restart")
	wantRepeat(long, kl.ID, 1, "after a restart")

	// Past the TTL a prune forgets them; the same key makes a new message.
	k3 := post("k3", 1) // still in its record when it expires
	clk.add(2 * time.Minute)
	if _, err := s.Prune(ctx0); err != nil {
		t.Fatal(err)
	}
	if got := storedKeys(s); got != 0 {
		t.Fatalf("%d keys in the file after they expired and a prune ran", got)
	}
	for _, key := range []string{"k1", "k3", long} {
		if r := post(key, 1); r.Repeat || r.ID == k1.ID || r.ID == k3.ID {
			t.Fatalf("an expired key %.8q answered %+v, want a new message", key, r)
		}
	}
}
