package store

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
type index struct {
	mu    sync.RWMutex
	rooms map[string]*roomIndex
}

type roomIndex struct {
	ids     []uint64 // ascending
	pending int      // messages kept for the next member who joins
}

func newIndex() *index { return &index{rooms: map[string]*roomIndex{}} }

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

func (x *index) counts(room string) (messages, pending int) {
	x.mu.RLock()
	defer x.mu.RUnlock()
	if r := x.rooms[room]; r != nil {
		return len(r.ids), r.pending
	}
	return 0, 0
}

func (x *index) add(room string, id uint64, pending bool) {
	x.mu.Lock()
	defer x.mu.Unlock()
	r := x.rooms[room]
	if r == nil {
		r = &roomIndex{}
		x.rooms[room] = r
	}
	// Ids are handed out in commit order, so this is an append.
	i, _ := slices.BinarySearch(r.ids, id)
	r.ids = slices.Insert(r.ids, i, id)
	if pending {
		r.pending++
	}
}

// remove forgets deleted ids, of which pending were kept for a joiner.
func (x *index) remove(room string, ids []uint64, pending int) {
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
	r.pending = max(0, r.pending-pending)
	if len(r.ids) == 0 {
		delete(x.rooms, room)
	}
}

func (x *index) claimed(room string) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if r := x.rooms[room]; r != nil {
		r.pending = 0
	}
}

func (x *index) drop(room string) {
	x.mu.Lock()
	defer x.mu.Unlock()
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
	ids     map[string][]uint64
	pending map[string]int
	idem    map[string]uint64 // idempotency key -> id
}

func (st *staged) reset() {
	st.ids, st.pending, st.idem = map[string][]uint64{}, map[string]int{}, map[string]uint64{}
}

func (st *staged) add(room string, id uint64, pending bool) {
	st.ids[room] = append(st.ids[room], id)
	if pending {
		st.pending[room]++
	}
}
