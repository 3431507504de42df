package boltstore

import (
	"context"
	"fmt"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/tincan/tincan/store"
)

// The admin operations of store.Apps: listing rooms, describing one,
// removing a member or a whole room. The webhook outbox is in outbox.go.

// Rooms implements store.Apps.
func (s *Store) Rooms(_ context.Context, after string, limit int) ([]store.RoomInfo, error) {
	if s.closed() {
		return nil, store.ErrClosed
	}
	var out []store.RoomInfo
	err := s.db.View(func(tx *bolt.Tx) error {
		rooms := tx.Bucket(bucketRooms)
		c := rooms.Cursor()
		k, _ := c.Seek([]byte(after))
		if k != nil && string(k) == after {
			k, _ = c.Next()
		}
		for ; k != nil && len(out) < limit; k, _ = c.Next() {
			rb := rooms.Bucket(k)
			if rb == nil {
				continue
			}
			info, err := s.roomInfoOf(tx, rb, string(k))
			if err != nil {
				return err
			}
			out = append(out, info)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("rooms: %w", err)
	}
	return out, nil
}

// roomInfoOf describes the room rb.
func (s *Store) roomInfoOf(tx *bolt.Tx, rb *bolt.Bucket, room string) (store.RoomInfo, error) {
	info, _, err := readInfo(tx, room)
	if err != nil {
		return store.RoomInfo{}, err
	}
	n := 0
	c := rb.Bucket(bucketMembers).Cursor()
	for k, _ := c.First(); k != nil; k, _ = c.Next() {
		n++
	}
	out := store.RoomInfo{Name: room, Occupants: n}
	if info.Created != 0 {
		out.Created = time.Unix(0, info.Created).UTC()
	}
	// The newest message is the index's: a post does not write info.
	if active := max(info.Created, info.Active, s.index.active(room)); active != 0 {
		out.LastActive = time.Unix(0, active).UTC()
	}
	return out, nil
}

// Room implements store.Apps.
func (s *Store) Room(_ context.Context, room string) (store.RoomInfo, []store.MemberInfo, error) {
	if s.closed() {
		return store.RoomInfo{}, nil, store.ErrClosed
	}
	var info store.RoomInfo
	var members []store.MemberInfo
	err := s.db.View(func(tx *bolt.Tx) error {
		rb := tx.Bucket(bucketRooms).Bucket([]byte(room))
		if rb == nil {
			return store.Refusef(store.ErrNotFound, "no room %q", room)
		}
		var err error
		if info, err = s.roomInfoOf(tx, rb, room); err != nil {
			return err
		}
		all, err := membersOf(rb, "")
		if err != nil {
			return err
		}
		for _, e := range all {
			members = append(members, store.MemberInfo{
				ID: e.id, Profile: e.rec.profile(), Joined: e.rec.joinedAt(),
				Listening: s.isListening(store.Member{Room: room, ID: e.id}),
			})
		}
		return nil
	})
	if err != nil {
		return store.RoomInfo{}, nil, fmt.Errorf("room %s: %w", room, err)
	}
	return info, members, nil
}

// Kick implements store.Apps.
func (s *Store) Kick(ctx context.Context, m store.Member) error {
	err := s.update(ctx, func(tx *bolt.Tx) error {
		rb := tx.Bucket(bucketRooms).Bucket([]byte(m.Room))
		if rb == nil {
			return store.Refusef(store.ErrNotFound, "no room %q", m.Room)
		}
		rec, ok := readMember(rb, m.ID)
		if !ok {
			return store.Refusef(store.ErrNotFound, "no member %q in room %q", m.ID, m.Room)
		}
		// Before leave's hooks: a reader woken by the removal finds the
		// tombstone.
		tokenHash := [32]byte(rec.Token)
		s.afterCommit(func() { s.tombs.add(store.ErrKicked, s.tombTime(), m, tokenHash) })
		_, _, err := s.leave(tx, m.Room, []string{m.ID}, store.ReasonKicked)
		return err
	})
	if err != nil {
		return fmt.Errorf("kick %s from %s: %w", m.ID, m.Room, err)
	}
	s.forget(m)
	return nil
}

// CloseRoom implements store.Apps: the members go with the room, in one
// commit, without peer-left events (nobody is left to read them) and
// without member.left events (room.closed says it of them all).
func (s *Store) CloseRoom(ctx context.Context, room string) error {
	var gone []store.Member
	err := s.update(ctx, func(tx *bolt.Tx) error {
		gone = gone[:0]
		rb := tx.Bucket(bucketRooms).Bucket([]byte(room))
		if rb == nil {
			return store.Refusef(store.ErrNotFound, "no room %q", room)
		}
		members, err := membersOf(rb, "")
		if err != nil {
			return err
		}
		until := s.tombTime()
		for _, e := range members {
			m := store.Member{Room: room, ID: e.id}
			tokenHash := [32]byte(e.rec.Token) // a copy: rec aliases the transaction
			s.membersChanged(room, func() {
				s.tombs.add(store.ErrRoomClosed, until, m, tokenHash)
				s.dir.remove(tokenHash, m)
			})
			s.notifyAfterCommit(room, 0, e.id)
			gone = append(gone, m)
		}
		err = s.putEvent(tx, store.EventData{Type: store.EventRoomClosed, Time: s.opts.Now(), Room: room, Reason: "closed"})
		if err != nil {
			return err
		}
		return s.deleteRoom(tx, room)
	})
	if err != nil {
		return fmt.Errorf("close room %s: %w", room, err)
	}
	for _, m := range gone {
		s.forget(m)
	}
	return nil
}

// tombTime is until when a tombstone made now is kept: the promise is
// the client timeout at least.
func (s *Store) tombTime() time.Time { return time.Now().Add(2 * s.opts.ClientTimeout) }

// tombstones remember, in memory only, the members that Kick and
// CloseRoom removed, by token hash and by member, so that their requests
// are refused as kicked or closed rather than as unknown. A restart
// forgets them (the promise allows it); the reaper sweeps those past
// their time.
type tombstones struct {
	mu      sync.Mutex
	tokens  map[[32]byte]tomb
	members map[store.Member]tomb
}

type tomb struct {
	err   *store.Error
	until time.Time
}

func newTombstones() tombstones {
	return tombstones{tokens: map[[32]byte]tomb{}, members: map[store.Member]tomb{}}
}

func (t *tombstones) add(err *store.Error, until time.Time, m store.Member, tokenHash [32]byte) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.tokens[tokenHash] = tomb{err, until}
	t.members[m] = tomb{err, until}
}

// token is the refusal for a token that names no member.
func (t *tombstones) token(hash [32]byte) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if tb, ok := t.tokens[hash]; ok {
		return tb.err
	}
	return store.ErrUnauthorized
}

// member is the refusal for a member that is none.
func (t *tombstones) member(m store.Member) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if tb, ok := t.members[m]; ok {
		return tb.err
	}
	return store.ErrUnauthorized
}

// sweep forgets the tombstones past their time.
func (t *tombstones) sweep(now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for k, tb := range t.tokens {
		if now.After(tb.until) {
			delete(t.tokens, k)
		}
	}
	for k, tb := range t.members {
		if now.After(tb.until) {
			delete(t.members, k)
		}
	}
}
