package boltstore

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"runtime"
	"slices"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/tincan/tincan/store"
)

// The directory's members in join order are what the disk says, after any
// mix of joins, leaves, kicks and closed rooms, and after a reopen: Append
// takes a post's recipients from there.
func TestDirectoryPeersMatchDisk(t *testing.T) {
	path := filepath.Join(t.TempDir(), "dir.db")
	s := open(t, path, Options{Options: store.Options{Capacity: 5}})
	rng := rand.New(rand.NewPCG(1, 2))
	var in []store.Member
	for i := range 300 {
		room := fmt.Sprintf("r%d", rng.IntN(6))
		switch op := rng.IntN(10); {
		case op < 5 || len(in) == 0:
			j, err := s.Join(ctx0, store.JoinRequest{Room: room})
			if err == nil {
				in = append(in, j.Member)
			}
		case op < 8:
			k := rng.IntN(len(in))
			if _, err := s.Leave(ctx0, in[k], store.ReasonLeft); err != nil {
				t.Fatal(err)
			}
			in = slices.Delete(in, k, k+1)
		case op < 9:
			k := rng.IntN(len(in))
			if err := s.Kick(ctx0, in[k]); err != nil {
				t.Fatal(err)
			}
			in = slices.Delete(in, k, k+1)
		default:
			if err := s.CloseRoom(ctx0, room); err != nil && !isNotFound(err) {
				t.Fatalf("step %d: %v", i, err)
			}
			in = slices.DeleteFunc(in, func(m store.Member) bool { return m.Room == room })
		}
	}
	wantSame := func(s *Store, when string) {
		t.Helper()
		for r := range 6 {
			room := fmt.Sprintf("r%d", r)
			var disk []string
			if err := s.db.View(func(tx *bolt.Tx) error {
				rb := tx.Bucket(bucketRooms).Bucket([]byte(room))
				if rb == nil {
					return nil
				}
				var err error
				disk, err = peersOf(rb, "")
				return err
			}); err != nil {
				t.Fatal(err)
			}
			mem, _ := s.dir.peers(room, "")
			if !slices.Equal(mem, disk) && !(len(mem) == 0 && len(disk) == 0) {
				t.Fatalf("%s, room %s: the directory lists %v, the disk %v", when, room, mem, disk)
			}
		}
	}
	wantSame(s, "after the mix")
	s.Close()
	wantSame(open(t, path, Options{Options: store.Options{Capacity: 5}}), "after a reopen")
}

func isNotFound(err error) bool { return errors.Is(err, store.ErrNotFound) }

// A join, or a leave, and a post to the same room committed in one
// transaction: the post goes to the members as the transaction left them
// before it, though the directory learns of the change only after the
// commit.
func TestPostSeesMembersChangedInItsTransaction(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), "tx.db"), Options{Options: store.Options{Capacity: 5}})
	a, b := mustJoin(t, s, "r"), mustJoin(t, s, "r")

	// inOneTransaction holds the commit loop in a transaction of its own
	// while first and then second are queued, so that the next transaction
	// takes both, in that order.
	inOneTransaction := func(first func(), second func() store.Appended) store.Appended {
		t.Helper()
		held, release := make(chan struct{}), make(chan struct{})
		go s.update(ctx0, func(*bolt.Tx) error { close(held); <-release; return nil })
		<-held
		done := make(chan struct{})
		go func() { defer close(done); first() }()
		eventuallyQueued(t, s, 1)
		out := make(chan store.Appended, 1)
		go func() { out <- second() }()
		eventuallyQueued(t, s, 2)
		close(release)
		<-done
		return <-out
	}
	post := func() store.Appended {
		got, err := s.Append(ctx0, store.Post{From: a.Member, Messages: []store.Draft{{Fields: []byte(`"type":"x"`)}}})
		if err != nil {
			t.Error(err)
		}
		return got
	}

	var c store.Joined
	got := inOneTransaction(func() { c = mustJoin(t, s, "r") }, post)
	if want := []string{b.ID, c.ID}; !slices.Equal(got.Recipients, want) {
		t.Fatalf("a post after a join in its transaction went to %v, want %v", got.Recipients, want)
	}
	got = inOneTransaction(func() {
		if _, err := s.Leave(ctx0, b.Member, store.ReasonLeft); err != nil {
			t.Error(err)
		}
	}, post)
	if want := []string{c.ID}; !slices.Equal(got.Recipients, want) {
		t.Fatalf("a post after a leave in its transaction went to %v, want %v", got.Recipients, want)
	}
}

// eventuallyQueued waits until n writes wait in s's queue.
func eventuallyQueued(t *testing.T, s *Store, n int) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); len(s.ops) < n; runtime.Gosched() {
		if time.Now().After(deadline) {
			t.Fatalf("%d writes queued after 30 s, want %d", len(s.ops), n)
		}
	}
}
