package boltstore

import (
	"context"
	"slices"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
)

// orphans are the messages and idempotency keys of deleted rooms, still in
// the file. Deleting a room drops them from the index and the key map at
// once, so nothing reads them, and a sweep every OrphanSweep deletes those
// of all rooms deleted meanwhile from the file together: ids that are close
// together share pages, so a page is rewritten once per sweep instead of
// once for each deleted room that had a message on it. Open finds the
// orphans a crash left: records of rooms that no longer exist, or older
// than their room's First.
type orphans struct {
	mu   sync.Mutex
	msgs []uint64
	keys []uint64 // ids under which idempotency keys are stored
}

func (o *orphans) add(msgs, keys []uint64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.msgs = append(o.msgs, msgs...)
	o.keys = append(o.keys, keys...)
}

func (o *orphans) take() (msgs, keys []uint64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	msgs, keys, o.msgs, o.keys = o.msgs, o.keys, nil, nil
	return msgs, keys
}

func (s *Store) orphanLoop() {
	t := time.NewTicker(s.opts.OrphanSweep)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			s.pruneOrphans(context.Background()) // what fails waits for the next sweep
		case <-s.closing:
			return
		}
	}
}

// pruneOrphans deletes the orphans from the file, a chunk of ids per write,
// and returns the number of messages deleted. What it could not delete
// waits for the next prune.
func (s *Store) pruneOrphans(ctx context.Context) (int, error) {
	const perWrite = 4096
	msgs, keys := s.orphans.take()
	slices.Sort(msgs) // neighbours on a page go in the same write
	slices.Sort(keys)
	deleted := 0
	for len(msgs) > 0 || len(keys) > 0 {
		m, k := msgs[:min(perWrite, len(msgs))], keys[:min(perWrite, len(keys))]
		var n int
		err := s.update(ctx, func(tx *bolt.Tx) error {
			n = 0
			for _, id := range m {
				b := tx.Bucket(bucketMsgs)
				if b.Get(u64(id)) == nil {
					continue // a prune deleted it first
				}
				if err := b.Delete(u64(id)); err != nil {
					return err
				}
				n++
			}
			for _, id := range k {
				if err := tx.Bucket(bucketIdem).Delete(u64(id)); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			s.orphans.add(msgs, keys)
			return deleted, err
		}
		deleted += n
		s.pruned.Add(uint64(n))
		msgs, keys = msgs[len(m):], keys[len(k):]
	}
	return deleted, nil
}

// roomFirsts maps every room to its First id, for Open to tell orphans.
func roomFirsts(tx *bolt.Tx) (map[string]uint64, error) {
	firsts := map[string]uint64{}
	err := tx.Bucket(bucketRooms).ForEachBucket(func(room []byte) error {
		info, _, err := readInfo(tx, string(room))
		firsts[string(room)] = info.First
		return err
	})
	return firsts, err
}

// orphaned reports whether message id, stored for room, is left from a
// deleted room.
func orphaned(firsts map[string]uint64, room string, id uint64) bool {
	first, ok := firsts[room]
	return !ok || id < first
}
