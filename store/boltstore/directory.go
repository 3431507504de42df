package boltstore

import (
	"cmp"
	"slices"
	"sync"

	bolt "go.etcd.io/bbolt"

	"github.com/tincan/tincan/store"
)

// directory holds every member in memory: its token hash and the highest id
// it acknowledged. Authenticating a request and checking a reader are the
// most frequent questions the store answers, and answering them here needs
// no read transaction. Like the index, it is loaded at Open and changed only
// after a commit (see Store.afterCommit), so it never knows a member that is
// not on disk.
type directory struct {
	mu      sync.RWMutex
	tokens  map[[32]byte]store.Member
	members map[store.Member]uint64 // -> highest acknowledged id, saved or not
	// rooms: each room's members in join order, as peersOf reads them
	// from the disk. Append takes a post's recipients from here, unless
	// the transaction it is in changed the room's members (staged).
	rooms map[string][]string
}

func newDirectory() *directory {
	return &directory{tokens: map[[32]byte]store.Member{}, members: map[store.Member]uint64{}, rooms: map[string][]string{}}
}

// load reads every member from the disk.
func (d *directory) load(tx *bolt.Tx) error {
	rooms := tx.Bucket(bucketRooms)
	return rooms.ForEachBucket(func(room []byte) error {
		var members []memberEntry
		err := rooms.Bucket(room).Bucket(bucketMembers).ForEach(func(id, v []byte) error {
			if rec, ok := decodeMember(v); ok {
				members = append(members, memberEntry{string(id), rec})
			}
			return nil
		})
		slices.SortFunc(members, func(a, b memberEntry) int { return cmp.Compare(a.rec.Join, b.rec.Join) })
		for _, e := range members {
			d.add(e.rec.Token, store.Member{Room: string(room), ID: e.id}, e.rec.Acked)
		}
		return err
	})
}

// add adds m, the latest member of its room to join.
func (d *directory) add(tokenHash []byte, m store.Member, acked uint64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.tokens[[32]byte(tokenHash)] = m
	d.members[m] = acked
	d.rooms[m.Room] = append(d.rooms[m.Room], m.ID)
}

func (d *directory) remove(tokenHash [32]byte, m store.Member) {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.tokens, tokenHash)
	delete(d.members, m)
	ids := slices.DeleteFunc(d.rooms[m.Room], func(id string) bool { return id == m.ID }) // never handed out: peers copies
	if len(ids) == 0 {
		delete(d.rooms, m.Room)
	} else {
		d.rooms[m.Room] = ids
	}
}

// peers lists the members of room but except, in join order, and
// reports whether except is one of them.
func (d *directory) peers(room, except string) (peers []string, member bool) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	all := d.rooms[room]
	peers = make([]string, 0, max(len(all)-1, 0))
	for _, id := range all {
		if id == except {
			member = true
		} else {
			peers = append(peers, id)
		}
	}
	return peers, member
}

// retoken gives m the token hash new in place of old.
func (d *directory) retoken(old, new [32]byte, m store.Member) {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.tokens, old)
	d.tokens[new] = m
}

func (d *directory) lookup(tokenHash [32]byte) (store.Member, bool) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	m, ok := d.tokens[tokenHash]
	return m, ok
}

// acked reports the highest id m acknowledged, and whether m is a member.
func (d *directory) acked(m store.Member) (uint64, bool) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	a, ok := d.members[m]
	return a, ok
}

// ack raises m's acknowledged id to upto; it reports whether it did.
func (d *directory) ack(m store.Member, upto uint64) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	a, ok := d.members[m]
	if !ok || upto <= a {
		return false
	}
	d.members[m] = upto
	return true
}
