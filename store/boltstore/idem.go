package boltstore

import (
	"encoding/binary"
	"strconv"
	"strings"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
)

// An idempotency key is stored in the record of its post's first message
// (record.go), so that a keyed post touches no other page than its
// messages': a bucket of its own was a second B-tree leaf to read, copy
// and write in every commit, a fifth of the bytes the hot path allocated
// (issue 20). A map in memory, rebuilt at Open from the records and the
// idem bucket, finds them.
//
// Keys live for the message TTL, longer than their message when it is
// pruned early (a retry may come after the recipients acknowledged): a
// record pruned before its key expired leaves the key in the idem bucket
// (keyOutlives), under the message's id, so that they append to it as
// messages do to msgs. So does a key too long for a record. An entry is
//
//	key    big-endian message id
//	value  unix nanos, room \x00 client id \x00 idempotency key
//
// Keys go with their room.

// idemKeys maps room -> client id \x00 key -> the post it keyed.
type idemKeys struct {
	mu    sync.Mutex
	rooms map[string]map[string]keyedPost
}

// keyedPost is what an idempotency key answers: the post's first id and
// the number of its messages, whose ids follow the first.
type keyedPost struct {
	first uint64
	n     int
}

func newIdemKeys() *idemKeys { return &idemKeys{rooms: map[string]map[string]keyedPost{}} }

func (k *idemKeys) get(room, key string) (keyedPost, bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	p, ok := k.rooms[room][key]
	return p, ok
}

func (k *idemKeys) set(room, key string, p keyedPost) {
	k.mu.Lock()
	defer k.mu.Unlock()
	keys := k.rooms[room]
	if keys == nil {
		keys = map[string]keyedPost{}
		k.rooms[room] = keys
	}
	keys[key] = p
}

// forgetIf forgets key if it still answers p.
func (k *idemKeys) forgetIf(room, key string, p keyedPost) {
	if got, ok := k.get(room, key); ok && got == p {
		k.forget(room, key)
	}
}

func (k *idemKeys) forget(room, key string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	delete(k.rooms[room], key)
	if len(k.rooms[room]) == 0 {
		delete(k.rooms, room)
	}
}

// ids lists the message ids under which a room's keys are stored.
func (k *idemKeys) ids(room string) []uint64 {
	k.mu.Lock()
	defer k.mu.Unlock()
	ids := make([]uint64, 0, len(k.rooms[room]))
	for _, p := range k.rooms[room] {
		ids = append(ids, p.first)
	}
	return ids
}

func (k *idemKeys) dropRoom(room string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	delete(k.rooms, room)
}

// idemEntry splits a stored value: unix nanos, then room \x00 client id
// \x00 key, and for a post of several messages \x00 their number in
// decimal (keys hold no NUL byte: Append refuses them).
func idemEntry(v []byte) (created time.Time, room, key string, n int, ok bool) {
	if len(v) < 8 {
		return time.Time{}, "", "", 0, false
	}
	room, rest, ok := strings.Cut(string(v[8:]), "\x00")
	client, rest, ok2 := strings.Cut(rest, "\x00")
	key, count, several := strings.Cut(rest, "\x00")
	n = 1
	if several {
		var err error
		if n, err = strconv.Atoi(count); err != nil || n < 1 {
			return time.Time{}, "", "", 0, false
		}
	}
	return time.Unix(0, int64(binary.BigEndian.Uint64(v))), room, client + "\x00" + key, n, ok && ok2
}

// idemInTx finds a key as the transaction being built sees it.
func (s *Store) idemInTx(room, key string) (keyedPost, bool) {
	if len(s.staged.idem) == 0 {
		return s.idem.get(room, key)
	}
	if p, ok := s.staged.idem[room+"\x00"+key]; ok {
		return p, true
	}
	return s.idem.get(room, key)
}

// putIdem stores key (client id \x00 idempotency key), made at created, in
// the idem bucket for the post p.
func (s *Store) putIdem(tx *bolt.Tx, room, key string, p keyedPost, created time.Time) error {
	v := binary.BigEndian.AppendUint64(nil, uint64(created.UnixNano()))
	v = append(append(append(v, room...), 0), key...)
	if p.n > 1 {
		v = strconv.AppendInt(append(v, 0), int64(p.n), 10)
	}
	b := tx.Bucket(bucketIdem)
	b.FillPercent = 1 // keys only ever grow
	if err := b.Put(u64(p.first), v); err != nil {
		return err
	}
	s.stageIdem(room, key, p)
	return nil
}

// stageIdem makes key known for p to the rest of the transaction, and to
// everyone once it committed.
func (s *Store) stageIdem(room, key string, p keyedPost) {
	s.staged.idem[room+"\x00"+key] = p
	s.afterCommit(func() { s.idem.set(room, key, p) })
}

// keyOutlives is called for the record r of message id being deleted, which
// carries a key: a key still within the TTL moves to the idem bucket, an
// expired one is forgotten.
func (s *Store) keyOutlives(tx *bolt.Tx, room string, id uint64, r recordView) error {
	key, p, created := string(r.key), keyedPost{first: id, n: r.keyN}, time.Unix(0, r.created)
	if !s.expired(created) {
		return s.putIdem(tx, room, key, p, created)
	}
	s.afterCommit(func() { s.idem.forgetIf(room, key, p) })
	return nil
}

// roomKeysInTx lists the ids under which a room's keys are stored, as the
// transaction being built sees them, and forgets the staged ones: the room
// is being deleted.
func (s *Store) roomKeysInTx(room string) []uint64 {
	ids := s.idem.ids(room)
	for full, p := range s.staged.idem {
		if strings.HasPrefix(full, room+"\x00") {
			ids = append(ids, p.first)
			delete(s.staged.idem, full)
		}
	}
	return ids
}

// pruneIdempotencyKeys deletes keys older than the message TTL: a retry
// later than that would find its message gone anyway. Keys are in id order,
// which is commit order, so the stale ones come first.
func (s *Store) pruneIdempotencyKeys(tx *bolt.Tx) error {
	c := tx.Bucket(bucketIdem).Cursor()
	type roomKey struct{ room, key string }
	var gone []roomKey
	for k, v := c.First(); k != nil; k, v = c.First() {
		created, room, key, _, ok := idemEntry(v)
		if ok && !s.expired(created) {
			break
		}
		if ok {
			gone = append(gone, roomKey{room, key})
		}
		if err := c.Delete(); err != nil {
			return err
		}
	}
	if len(gone) > 0 {
		s.afterCommit(func() {
			for _, g := range gone {
				s.idem.forget(g.room, g.key)
			}
		})
	}
	return nil
}

// staleIdempotencyKeys reports whether the oldest key has expired.
func (s *Store) staleIdempotencyKeys(tx *bolt.Tx) bool {
	_, v := tx.Bucket(bucketIdem).Cursor().First()
	created, _, _, _, ok := idemEntry(v)
	return ok && s.expired(created)
}

func (s *Store) expired(created time.Time) bool {
	return created.Before(s.opts.Now().Add(-s.opts.MessageTTL))
}
