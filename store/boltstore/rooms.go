package boltstore

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"
	"golang.org/x/crypto/bcrypt"

	"github.com/tincan/tincan/store"
)

type roomInfo struct {
	Password []byte `json:"pw,omitempty"` // bcrypt hash; empty: no password
	NextJoin uint64 `json:"nj"`           // join order counter
	// The room's messages have ids from First on: smaller ids in the file
	// with its name are left from an earlier room of that name, deleted
	// but not yet pruned (see orphans.go).
	First uint64 `json:"first,omitempty"`
	// Created and Active (the newest join or leave) are unix nanoseconds;
	// 0 in rooms made before they were kept. The newest message's time is
	// the index's (index.active): no write of info with every post.
	Created int64 `json:"created,omitempty"`
	Active  int64 `json:"active,omitempty"`
}

// memberRecord is stored in binary, because every post and every read
// decodes it:
//
//	token hash   32 bytes, sha256 of the token
//	join place    8 bytes, big-endian
//	acknowledged  8 bytes, big-endian: the highest id the member acknowledged
//	joined        8 bytes, unix nanoseconds of its first join
//	profile       uvarint length + identity, uvarint length + name, metadata (the rest)
//
// Records written before profiles have the first 48 bytes only: no
// profile, and an unknown (zero) join time. A record keeps its form when
// an acknowledgement rewrites it.
type memberRecord struct {
	Token  []byte // sha256 of the token
	Join   uint64 // place in join order
	Acked  uint64 // highest id the member acknowledged
	Joined int64  // unix nanoseconds; 0: unknown
	// ext is the encoded profile (profileBytes), decoded only when asked
	// for (profile): posts and reads need none of it.
	ext []byte
}

const oldMemberLen = 48

func (m memberRecord) encode() []byte {
	b := make([]byte, 0, oldMemberLen+8+len(m.ext))
	b = append(b, m.Token...)
	b = binary.BigEndian.AppendUint64(b, m.Join)
	b = binary.BigEndian.AppendUint64(b, m.Acked)
	if m.Joined == 0 && len(m.ext) == 0 {
		return b // a record from before profiles
	}
	b = binary.BigEndian.AppendUint64(b, uint64(m.Joined))
	return append(b, m.ext...)
}

// decodeMember reads a record; its slices alias v.
func decodeMember(v []byte) (memberRecord, bool) {
	if len(v) != oldMemberLen && len(v) < oldMemberLen+8 {
		return memberRecord{}, false
	}
	m := memberRecord{Token: v[:32], Join: binary.BigEndian.Uint64(v[32:]), Acked: binary.BigEndian.Uint64(v[40:])}
	if len(v) > oldMemberLen {
		m.Joined = int64(binary.BigEndian.Uint64(v[48:]))
		m.ext = v[56:]
	}
	return m, true
}

// profileBytes encodes a profile for memberRecord.ext.
func profileBytes(p store.Profile) []byte {
	b := binary.AppendUvarint(nil, uint64(len(p.Identity)))
	b = append(b, p.Identity...)
	b = binary.AppendUvarint(b, uint64(len(p.Name)))
	b = append(b, p.Name...)
	return append(b, p.Metadata...)
}

// profile decodes the member's profile, copied out of the record.
func (m memberRecord) profile() store.Profile {
	var p store.Profile
	b := m.ext
	field := func() string {
		n, k := binary.Uvarint(b)
		if k <= 0 || uint64(len(b)-k) < n {
			b = nil
			return ""
		}
		f := string(b[k : k+int(n)])
		b = b[k+int(n):]
		return f
	}
	p.Identity = field()
	p.Name = field()
	if len(b) > 0 {
		p.Metadata = clone(b)
	}
	return p
}

// identity is the member's Identity, without copying the rest.
func (m memberRecord) identity() []byte {
	n, k := binary.Uvarint(m.ext)
	if k <= 0 || uint64(len(m.ext)-k) < n {
		return nil
	}
	return m.ext[k : k+int(n)]
}

func (m memberRecord) joinedAt() time.Time {
	if m.Joined == 0 {
		return time.Time{}
	}
	return time.Unix(0, m.Joined).UTC()
}

// Join implements store.Store.
func (s *Store) Join(ctx context.Context, req store.JoinRequest) (store.Joined, error) {
	if s.closed() {
		return store.Joined{}, store.ErrClosed
	}
	if len(req.Profile.Metadata) > 0 {
		// Compact, so that the entries and the event bodies that carry it
		// hold no line break; not JSON, it would break them (the handlers
		// check it first: this is the store's own guard).
		var buf bytes.Buffer
		if err := json.Compact(&buf, req.Profile.Metadata); err != nil {
			return store.Joined{}, store.Refusef(store.ErrBadPost, "the profile's metadata is not JSON: %v", err)
		}
		req.Profile.Metadata = buf.Bytes()
	}
	// Password hashing is slow on purpose: do it outside the commit loop,
	// then make sure in the transaction that the room is still as we saw it.
	for attempt := 0; ; attempt++ {
		var seen []byte // the room's password hash as read
		var exists, byIdentity bool
		err := s.db.View(func(tx *bolt.Tx) error {
			info, ok, err := readInfo(tx, req.Room)
			seen, exists = info.Password, ok
			if ok && req.Profile.Identity != "" {
				_, _, byIdentity = findIdentity(tx.Bucket(bucketRooms).Bucket([]byte(req.Room)), req.Profile.Identity)
			}
			return err
		})
		if err != nil {
			return store.Joined{}, fmt.Errorf("join %s: %w", req.Room, err)
		}
		var newHash []byte
		if !exists && req.Password != "" {
			newHash, err = bcrypt.GenerateFromPassword([]byte(req.Password), bcrypt.DefaultCost)
			if err != nil {
				return store.Joined{}, fmt.Errorf("hash password: %w", err)
			}
		}
		// A resume needs no password (the token, or the identity the
		// application vouched for, is the member's proof, checked again
		// in the transaction), and a missing one is refused as such:
		// neither costs a bcrypt comparison.
		resuming := s.resumes(req) || byIdentity
		passwordOK := len(seen) == 0 || resuming ||
			req.Password != "" && bcrypt.CompareHashAndPassword(seen, []byte(req.Password)) == nil

		var out store.Joined
		err = s.update(ctx, func(tx *bolt.Tx) error {
			var err error
			out, err = s.join(tx, req, seen, exists, newHash, passwordOK, resuming)
			return err
		})
		if errors.Is(err, errRoomChanged) && attempt < 3 {
			continue
		}
		if err != nil {
			return store.Joined{}, fmt.Errorf("join %s: %w", req.Room, err)
		}
		s.presence.Touch(out.Member)
		return out, nil
	}
}

// resumes reports whether req's token belongs to a member of req's room.
func (s *Store) resumes(req store.JoinRequest) bool {
	if req.Token == "" {
		return false
	}
	m, ok := s.dir.lookup(sha256.Sum256([]byte(req.Token)))
	return ok && m.Room == req.Room
}

// findIdentity finds the member of the room (rb, nil for none) whose
// profile has the given identity, as the transaction sees the room: a
// member who joined earlier in the same group commit is found.
func findIdentity(rb *bolt.Bucket, identity string) (id string, rec memberRecord, ok bool) {
	if rb == nil || identity == "" {
		return "", memberRecord{}, false
	}
	c := rb.Bucket(bucketMembers).Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		if r, valid := decodeMember(v); valid && string(r.identity()) == identity {
			return string(k), r, true
		}
	}
	return "", memberRecord{}, false
}

// join is Join's transaction. The caller checked the password outside
// it, against the room as seen then (seen, existed); resuming is what it
// assumed of the token or the identity.
func (s *Store) join(tx *bolt.Tx, req store.JoinRequest, seen []byte, existed bool, newHash []byte, passwordOK, resuming bool) (store.Joined, error) {
	rooms := tx.Bucket(bucketRooms)
	rb := rooms.Bucket([]byte(req.Room))
	info, exists, err := readInfo(tx, req.Room)
	if err != nil {
		return store.Joined{}, err
	}

	// Resume: the token names a member of this very room.
	if req.Token != "" && rb != nil {
		if m, ok := s.dir.lookup(sha256.Sum256([]byte(req.Token))); ok && m.Room == req.Room {
			if rec, ok := readMember(rb, m.ID); ok && subtle.ConstantTimeCompare(rec.Token, hashToken(req.Token)) == 1 {
				return s.resume(tx, rb, m, req.Token, rec.profile())
			}
		}
	}
	// Resume: the identity is a member's of this room. Its old token stops
	// working, and its readers are told so (upto 0).
	if id, rec, ok := findIdentity(rb, req.Profile.Identity); ok {
		m := store.Member{Room: req.Room, ID: id}
		token := newSecret(24)
		old := [32]byte(rec.Token) // a copy: rec aliases the transaction
		rec.Token, rec.ext = hashToken(token), profileBytes(req.Profile)
		if err := rb.Bucket(bucketMembers).Put([]byte(id), rec.encode()); err != nil {
			return store.Joined{}, err
		}
		s.afterCommit(func() { s.dir.retoken(old, [32]byte(rec.Token), m) })
		s.notifyAfterCommit(req.Room, 0, id)
		return s.resume(tx, rb, m, token, req.Profile)
	}

	if exists != existed || !bytes.Equal(info.Password, seen) || resuming && len(seen) > 0 {
		// The room changed, or the member the token named left since:
		// check the password again.
		return store.Joined{}, errRoomChanged
	}
	if !passwordOK && req.Password == "" {
		return store.Joined{}, store.Refusef(store.ErrPasswordRequired, "room %q needs a password", req.Room)
	}
	if !passwordOK {
		return store.Joined{}, store.Refusef(store.ErrBadPassword, "wrong password for room %q", req.Room)
	}
	var peers []memberEntry
	if rb != nil {
		// Count by iterating: Bucket.Stats reads committed pages only and
		// would miss members who joined earlier in this group commit.
		if peers, err = membersOf(rb, ""); err != nil {
			return store.Joined{}, err
		}
		if len(peers) >= s.opts.Capacity {
			return store.Joined{}, store.Refusef(store.ErrRoomFull, "room %q is full (%d of %d)", req.Room, len(peers), s.opts.Capacity)
		}
	}

	if rb == nil && s.opts.MaxRooms > 0 && roomCount(tx) >= uint64(s.opts.MaxRooms) {
		return store.Joined{}, store.Refusef(store.ErrTooManyRooms, "the server holds its maximum of %d rooms", s.opts.MaxRooms)
	}

	// Checks done; from here on, write.
	now := s.opts.Now()
	if rb == nil {
		if err := addRoomCount(tx, 1); err != nil {
			return store.Joined{}, err
		}
		if rb, err = rooms.CreateBucket([]byte(req.Room)); err != nil {
			return store.Joined{}, err
		}
		if _, err := rb.CreateBucket(bucketMembers); err != nil {
			return store.Joined{}, err
		}
		info = roomInfo{Password: newHash, First: tx.Bucket(bucketMeta).Sequence() + 1, Created: now.UnixNano()}
		if err := s.putEvent(tx, store.EventData{Type: store.EventRoomCreated, Time: now, Room: req.Room, Occupants: 1}); err != nil {
			return store.Joined{}, err
		}
	}
	id, token := newSecret(12), newSecret(24)
	info.NextJoin++
	info.Active = now.UnixNano()
	rec := memberRecord{Token: hashToken(token), Join: info.NextJoin, Joined: now.UnixNano()}
	if !isEmpty(req.Profile) {
		rec.ext = profileBytes(req.Profile)
	}
	if err := rb.Bucket(bucketMembers).Put([]byte(id), rec.encode()); err != nil {
		return store.Joined{}, err
	}
	s.membersChanged(req.Room, func() { s.dir.add(rec.Token, store.Member{Room: req.Room, ID: id}, 0) })
	if _, held := s.countsInTx(req.Room); held {
		if err := s.claimPending(tx, req.Room, id); err != nil {
			return store.Joined{}, err
		}
	}
	ids, profiles := splitMembers(peers)
	if err := s.emit(tx, req.Room, ids, store.PeerJoinedFields(id, req.Profile, false)); err != nil {
		return store.Joined{}, err
	}
	err = s.putEvent(tx, store.EventData{
		Type: store.EventMemberJoined, Time: now, Room: req.Room, ClientID: id,
		Profile: req.Profile, Occupants: len(peers) + 1,
	})
	if err != nil {
		return store.Joined{}, err
	}
	return store.Joined{Member: store.Member{Room: req.Room, ID: id}, Token: token, Peers: ids, Profiles: profiles}, writeInfo(rb, info)
}

// resume answers a resume of m (profile p), and tells the others.
func (s *Store) resume(tx *bolt.Tx, rb *bolt.Bucket, m store.Member, token string, p store.Profile) (store.Joined, error) {
	peers, err := membersOf(rb, m.ID)
	if err != nil {
		return store.Joined{}, err
	}
	ids, profiles := splitMembers(peers)
	out := store.Joined{Member: m, Token: token, Resumed: true, Peers: ids, Profiles: profiles}
	return out, s.emit(tx, m.Room, ids, store.PeerJoinedFields(m.ID, p, true))
}

func isEmpty(p store.Profile) bool { return p.Identity == "" && p.Name == "" && len(p.Metadata) == 0 }

// claimPending hands every message kept for "the next member who joins" to id.
func (s *Store) claimPending(tx *bolt.Tx, room, id string) error {
	msgs := tx.Bucket(bucketMsgs)
	claimed := map[uint64][]byte{}
	for _, k := range s.idsInTx(room) {
		v := msgs.Get(u64(k))
		if view, ok := viewRecord(v); !ok || !view.pending {
			continue
		}
		r, err := decodeRecord(v)
		if err != nil {
			continue
		}
		r.pending, r.recipients = false, []string{id}
		rec := r.encode()
		if err := msgs.Put(u64(k), rec); err != nil {
			return err
		}
		claimed[k] = rec
	}
	delete(s.staged.held, room)
	s.afterCommit(func() { s.index.claimed(room, claimed) })
	if len(claimed) > 0 {
		// upto is the newest claimed id (0 would announce a removal).
		s.notifyAfterCommit(room, slices.Max(slices.Collect(maps.Keys(claimed))), id)
	}
	return nil
}

// Leave implements store.Store.
func (s *Store) Leave(ctx context.Context, m store.Member, reason store.Reason) (roomDeleted bool, err error) {
	err = s.update(ctx, func(tx *bolt.Tx) error {
		var err error
		_, roomDeleted, err = s.leave(tx, m.Room, []string{m.ID}, reason)
		return err
	})
	if err != nil {
		return false, fmt.Errorf("leave %s: %w", m.Room, err)
	}
	s.forget(m)
	return roomDeleted, nil
}

// leave removes the members ids of room in tx, those that are members:
// the others get a peer-left event for each, or the room is deleted when
// none is left. Those leaving together get no peer-left of each other
// (they are gone, nobody reads it), so that many leaving at once cost
// one event each, not one per pair. It returns the ids removed. With
// webhooks, each removal writes member.left (occupants counting down as
// if they left one after the other), and the room's deletion room.closed.
func (s *Store) leave(tx *bolt.Tx, room string, ids []string, reason store.Reason) (removed []string, roomDeleted bool, err error) {
	rb := tx.Bucket(bucketRooms).Bucket([]byte(room))
	if rb == nil {
		return nil, false, nil
	}
	var profiles []store.Profile
	for _, id := range ids {
		rec, ok := readMember(rb, id)
		if !ok {
			continue
		}
		m := store.Member{Room: room, ID: id}
		tokenHash := [32]byte(rec.Token) // a copy: rec aliases the transaction
		if s.opts.Webhooks {
			profiles = append(profiles, rec.profile())
		}
		s.membersChanged(room, func() { s.dir.remove(tokenHash, m) })
		s.notifyAfterCommit(room, 0, id) // its readers end
		if err := rb.Bucket(bucketMembers).Delete([]byte(id)); err != nil {
			return nil, false, err
		}
		removed = append(removed, id)
	}
	if len(removed) == 0 {
		return nil, false, nil
	}
	peers, err := peersOf(rb, "")
	if err != nil {
		return nil, false, err
	}
	now := s.opts.Now()
	if s.opts.Webhooks {
		for i, id := range removed {
			err := s.putEvent(tx, store.EventData{
				Type: store.EventMemberLeft, Time: now, Room: room, ClientID: id, Profile: profiles[i],
				Reason: string(reason), Occupants: len(peers) + len(removed) - i - 1,
			})
			if err != nil {
				return nil, false, err
			}
		}
	}
	if len(peers) == 0 {
		if err := s.putEvent(tx, store.EventData{Type: store.EventRoomClosed, Time: now, Room: room, Reason: "empty"}); err != nil {
			return nil, false, err
		}
		return removed, true, s.deleteRoom(tx, room)
	}
	for _, id := range removed {
		event := fmt.Appendf(nil, `"type":"peer-left","peer":%q,"reason":%q`, id, reason)
		if err := s.emit(tx, room, peers, event); err != nil {
			return nil, false, err
		}
	}
	info, _, err := readInfo(tx, room)
	if err != nil {
		return nil, false, err
	}
	info.Active = now.UnixNano()
	return removed, false, writeInfo(rb, info)
}

// forget drops what is kept in memory of a member that left, once its
// leave has committed.
func (s *Store) forget(m store.Member) {
	s.forgetAck(m)
	s.presence.Forget(m)
}

// deleteRoom deletes an empty room. Its messages and idempotency keys are
// gone for readers and writers at once, and from the file at the next
// prune: deleting them here would rewrite every page they are scattered
// over, in the commit of the last member's leave (see orphans.go).
func (s *Store) deleteRoom(tx *bolt.Tx, room string) error {
	if err := addRoomCount(tx, -1); err != nil {
		return err
	}
	msgs, keys := s.idsInTx(room), s.roomKeysInTx(room)
	delete(s.staged.ids, room)
	delete(s.staged.held, room)
	s.afterCommit(func() {
		s.index.drop(room)
		s.idem.dropRoom(room)
		s.orphans.add(msgs, keys)
	})
	return tx.Bucket(bucketRooms).DeleteBucket([]byte(room))
}

// Authenticate implements store.Store.
func (s *Store) Authenticate(_ context.Context, token string) (store.Member, error) {
	if s.closed() {
		return store.Member{}, store.ErrClosed
	}
	hash := sha256.Sum256([]byte(token))
	if m, ok := s.dir.lookup(hash); ok {
		return m, nil
	}
	return store.Member{}, s.tombs.token(hash)
}

// Occupants implements store.Store.
func (s *Store) Occupants(_ context.Context, room string) (int, error) {
	if s.closed() {
		return 0, store.ErrClosed
	}
	var n int
	err := s.db.View(func(tx *bolt.Tx) error {
		if rb := tx.Bucket(bucketRooms).Bucket([]byte(room)); rb != nil {
			n = rb.Bucket(bucketMembers).Stats().KeyN
		}
		return nil
	})
	return n, err
}

// members lists every member of every room, for the presence tracker to
// start from after a restart.
func (s *Store) members() ([]store.Member, error) {
	var out []store.Member
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketRooms).ForEachBucket(func(room []byte) error {
			rb := tx.Bucket(bucketRooms).Bucket(room)
			return rb.Bucket(bucketMembers).ForEach(func(id, _ []byte) error {
				out = append(out, store.Member{Room: string(room), ID: string(id)})
				return nil
			})
		})
	})
	return out, err
}

var keyRoomCount = []byte("rooms")

// roomCount is the number of rooms, kept in meta so that a limit check
// need not walk the rooms bucket.
func roomCount(tx *bolt.Tx) uint64 {
	v := tx.Bucket(bucketMeta).Get(keyRoomCount)
	if len(v) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(v)
}

func addRoomCount(tx *bolt.Tx, delta int) error {
	n := int64(roomCount(tx)) + int64(delta)
	return tx.Bucket(bucketMeta).Put(keyRoomCount, u64(uint64(max(n, 0))))
}

func readInfo(tx *bolt.Tx, room string) (roomInfo, bool, error) {
	var info roomInfo
	rb := tx.Bucket(bucketRooms).Bucket([]byte(room))
	if rb == nil {
		return info, false, nil
	}
	if err := json.Unmarshal(rb.Get(keyInfo), &info); err != nil {
		return info, true, fmt.Errorf("room %s info: %w", room, err)
	}
	return info, true, nil
}

func writeInfo(rb *bolt.Bucket, info roomInfo) error { return putJSON(rb, keyInfo, info) }

func readMember(rb *bolt.Bucket, id string) (memberRecord, bool) {
	return decodeMember(rb.Bucket(bucketMembers).Get([]byte(id)))
}

// peersOf lists the room's members except one, in join order.
func peersOf(rb *bolt.Bucket, except string) ([]string, error) {
	type entry struct {
		id   string
		join uint64
	}
	var all []entry
	err := rb.Bucket(bucketMembers).ForEach(func(k, v []byte) error {
		rec, ok := decodeMember(v)
		if !ok {
			return fmt.Errorf("member %s: corrupt record", k)
		}
		if string(k) != except {
			all = append(all, entry{string(k), rec.Join})
		}
		return nil
	})
	if len(all) > 1 { // a room of two has one peer: nothing to sort
		slices.SortFunc(all, func(a, b entry) int { return cmp.Compare(a.join, b.join) })
	}
	ids := make([]string, len(all))
	for i, e := range all {
		ids[i] = e.id
	}
	return ids, err
}

// memberEntry is a member as membersOf lists it; rec aliases the
// transaction.
type memberEntry struct {
	id  string
	rec memberRecord
}

// membersOf lists the room's members except one, in join order.
func membersOf(rb *bolt.Bucket, except string) ([]memberEntry, error) {
	var all []memberEntry
	err := rb.Bucket(bucketMembers).ForEach(func(k, v []byte) error {
		rec, ok := decodeMember(v)
		if !ok {
			return fmt.Errorf("member %s: corrupt record", k)
		}
		if string(k) != except {
			all = append(all, memberEntry{string(k), rec})
		}
		return nil
	})
	slices.SortFunc(all, func(a, b memberEntry) int { return cmp.Compare(a.rec.Join, b.rec.Join) })
	return all, err
}

// splitMembers is the ids and the profiles of members.
func splitMembers(members []memberEntry) (ids []string, profiles []store.Profile) {
	if len(members) == 0 {
		return nil, nil
	}
	ids, profiles = make([]string, len(members)), make([]store.Profile, len(members))
	for i, e := range members {
		ids[i], profiles[i] = e.id, e.rec.profile()
	}
	return ids, profiles
}

func putJSON(b *bolt.Bucket, key []byte, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return b.Put(key, data)
}
