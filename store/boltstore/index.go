package boltstore

import (
	"slices"
	"sync"
)

// index lists, per room, the ids of its committed messages. All messages
// live in one bucket keyed by their global id, so that a commit appends to
// the same few pages whatever the number of rooms; the index lets a read or
// a prune visit only its room's messages. It is rebuilt at Open.
//
// The index changes only after a commit (see Store.afterCommit): an id in it
// is on disk, so a read transaction begun after looking it up finds it.
//
// It also holds the delivery cache (cache.go), which changes with it,
// under the same lock.
type index struct {
	mu    sync.RWMutex
	rooms map[string]*roomIndex
	cache deliveryCache
	// newest is, per room, the time of its newest message (unix nanos),
	// for its last activity (Rooms): pruning does not lower it, deleting
	// the room drops it. Rebuilt at Open from the messages still there.
	newest map[string]int64
}

type roomIndex struct {
	ids  []uint64 // ascending
	held bool     // may hold messages kept for the next member who joins (until one claims them)
}

func newIndex(cacheBytes int) *index {
	return &index{rooms: map[string]*roomIndex{}, cache: newDeliveryCache(cacheBytes), newest: map[string]int64{}}
}

// readRecent calls visit with the room's messages after cursor, oldest
// first, while visit returns true. It reports false, having stopped early,
// when a message is not in memory: the caller then reads from the disk.
func (x *index) readRecent(room string, cursor uint64, visit func(id uint64, rec []byte) bool) (complete bool) {
	x.mu.RLock()
	defer x.mu.RUnlock()
	r := x.rooms[room]
	if r == nil {
		return true
	}
	i, _ := slices.BinarySearch(r.ids, cursor+1)
	for _, id := range r.ids[i:] {
		rec, ok := x.cache.get(id)
		if !ok {
			return false
		}
		if !visit(id, rec) {
			break
		}
	}
	return true
}

// after returns the room's ids greater than cursor, at most n of them
// (n = 0: all).
func (x *index) after(room string, cursor uint64, n int) []uint64 {
	x.mu.RLock()
	defer x.mu.RUnlock()
	r := x.rooms[room]
	if r == nil {
		return nil
	}
	i, _ := slices.BinarySearch(r.ids, cursor+1)
	ids := r.ids[i:]
	if n > 0 && len(ids) > n {
		ids = ids[:n]
	}
	return slices.Clone(ids)
}

// last is the room's highest id (0: none).
func (x *index) last(room string) uint64 {
	x.mu.RLock()
	defer x.mu.RUnlock()
	if r := x.rooms[room]; r != nil && len(r.ids) > 0 {
		return r.ids[len(r.ids)-1]
	}
	return 0
}

func (x *index) counts(room string) (messages int, held bool) {
	x.mu.RLock()
	defer x.mu.RUnlock()
	if r := x.rooms[room]; r != nil {
		return len(r.ids), r.held
	}
	return 0, false
}

// add lists a committed message; rec, when not nil, is its encoded record.
func (x *index) add(room string, id uint64, pending bool, rec []byte) {
	x.addAt(room, id, pending, rec, 0)
}

// addAt is add for a message created at (unix nanos).
func (x *index) addAt(room string, id uint64, pending bool, rec []byte, at int64) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if at > x.newest[room] {
		x.newest[room] = at
	}
	if rec != nil {
		x.cache.put(id, rec)
	}
	r := x.rooms[room]
	if r == nil {
		r = &roomIndex{}
		x.rooms[room] = r
	}
	// Ids are handed out in commit order, so this is an append.
	i, _ := slices.BinarySearch(r.ids, id)
	r.ids = slices.Insert(r.ids, i, id)
	r.held = r.held || pending
}

// remove forgets deleted ids (ascending). A room stays marked held: a later
// join looks and finds nothing, which is cheaper than knowing.
func (x *index) remove(room string, ids []uint64) {
	x.mu.Lock()
	defer x.mu.Unlock()
	r := x.rooms[room]
	if r == nil {
		return
	}
	r.ids = slices.DeleteFunc(r.ids, func(id uint64) bool {
		_, found := slices.BinarySearch(ids, id)
		return found
	})
	for _, id := range ids {
		x.cache.forget(id)
	}
	if len(r.ids) == 0 {
		delete(x.rooms, room)
	}
}

// claimed records that a joiner took the room's held messages, rewritten
// as recs (id -> new record).
func (x *index) claimed(room string, recs map[uint64][]byte) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if r := x.rooms[room]; r != nil {
		r.held = false
	}
	for id, rec := range recs {
		x.cache.replace(id, rec)
	}
}

// active is the time of the room's newest message (unix nanos; 0: none).
func (x *index) active(room string) int64 {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return x.newest[room]
}

func (x *index) drop(room string) {
	x.mu.Lock()
	defer x.mu.Unlock()
	delete(x.newest, room)
	if r := x.rooms[room]; r != nil {
		for _, id := range r.ids {
			x.cache.forget(id)
		}
	}
	delete(x.rooms, room)
}

func (x *index) roomNames() []string {
	x.mu.RLock()
	defer x.mu.RUnlock()
	names := make([]string, 0, len(x.rooms))
	for name := range x.rooms {
		names = append(names, name)
	}
	return names
}

// staged is what the transaction being built has added to the index but not
// yet committed: writes later in the same group commit must see it.
type staged struct {
	ids  map[string][]uint64
	held map[string]bool      // rooms given a message kept for the next joiner
	idem map[string]keyedPost // idempotency key -> its post
	// members: rooms whose members the transaction changed (a join, a
	// removal), which the directory does not show before the commit.
	members map[string]bool
}

func (st *staged) reset() {
	if st.ids == nil {
		st.ids, st.held, st.idem, st.members = map[string][]uint64{}, map[string]bool{}, map[string]keyedPost{}, map[string]bool{}
	}
	clear(st.ids)
	clear(st.held)
	clear(st.idem)
	clear(st.members)
}

func (st *staged) add(room string, id uint64, pending bool) {
	st.ids[room] = append(st.ids[room], id)
	st.held[room] = st.held[room] || pending
}
