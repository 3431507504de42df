package store

import (
	"context"
	"encoding/binary"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Message is one delivered message: its id and the JSON object as sent.
type Message struct {
	ID   uint64
	Data []byte
}

// Post is a message from a member.
type Post struct {
	From           Member
	To             string // a client id; "" for every other member
	IdempotencyKey string // "" for none
	// Fields are the members of the posted JSON object, without braces and
	// without "id" and "from", e.g. `"type":"offer","sdp":"v=0..."`.
	Fields []byte
}

// Append stores a message and returns its id once it is on disk. Without a
// recipient it goes to every other current member, or, when there is none,
// to the next member who joins. A repeated idempotency key of the same sender
// returns the first id and stores nothing.
// Refusals: ErrUnauthorized (sender gone), ErrUnknownPeer, ErrTooManyMessages.
func (s *Store) Append(ctx context.Context, p Post) (uint64, error) {
	var id uint64
	err := s.update(ctx, func(tx *bolt.Tx) error {
		id = 0
		rb := tx.Bucket(bucketRooms).Bucket([]byte(p.From.Room))
		if rb == nil {
			return ErrUnauthorized
		}
		if _, ok := readMember(rb, p.From.ID); !ok {
			return ErrUnauthorized
		}
		var idemKey []byte
		if p.IdempotencyKey != "" {
			idemKey = []byte(p.From.ID + "\x00" + p.IdempotencyKey)
			if v := rb.Bucket(bucketIdem).Get(idemKey); len(v) >= 8 {
				id = binary.BigEndian.Uint64(v)
				return nil
			}
		}
		var to []string
		if p.To != "" {
			if _, ok := readMember(rb, p.To); !ok || p.To == p.From.ID {
				return refuse(ErrUnknownPeer, "no peer %q in room %q", p.To, p.From.Room)
			}
			to = []string{p.To}
		} else {
			peers, err := peersOf(rb, p.From.ID)
			if err != nil {
				return err
			}
			to = peers
		}
		info, _, err := readInfo(tx, p.From.Room)
		if err != nil {
			return err
		}
		if s.opts.MaxRoomMessages > 0 && info.Messages >= s.opts.MaxRoomMessages {
			return refuse(ErrTooManyMessages, "room %q holds %d undelivered messages", p.From.Room, info.Messages)
		}

		// Checks done; from here on, write.
		if id, err = s.appendRecord(rb, &info, to, len(to) == 0, func(id uint64) []byte {
			return fmt.Appendf(nil, `{"id":%d,"from":%q,%s}`, id, p.From.ID, p.Fields)
		}); err != nil {
			return err
		}
		if idemKey != nil {
			v := binary.BigEndian.AppendUint64(u64(id), uint64(s.opts.Now().UnixNano()))
			if err := rb.Bucket(bucketIdem).Put(idemKey, v); err != nil {
				return err
			}
		}
		return writeInfo(rb, info)
	})
	if err != nil {
		return 0, fmt.Errorf("append to %s: %w", p.From.Room, err)
	}
	return id, nil
}

// emit stores a server event (fields without braces and id) for recipients.
// An event nobody is there to receive is not stored.
func (s *Store) emit(rb *bolt.Bucket, info *roomInfo, recipients []string, fields []byte) error {
	if len(recipients) == 0 {
		return nil
	}
	_, err := s.appendRecord(rb, info, recipients, false, func(id uint64) []byte {
		return fmt.Appendf(nil, `{"id":%d,%s}`, id, fields)
	})
	return err
}

// appendRecord allocates the next id (global, so ids never repeat in a room,
// not even after it was deleted and made again) and stores the record.
func (s *Store) appendRecord(rb *bolt.Bucket, info *roomInfo, to []string, pending bool, data func(id uint64) []byte) (uint64, error) {
	id, err := rb.Tx().Bucket(bucketMeta).NextSequence()
	if err != nil {
		return 0, err
	}
	rec := record{created: s.opts.Now(), pending: pending, recipients: to, data: data(id)}
	if err := rb.Bucket(bucketMsgs).Put(u64(id), rec.encode()); err != nil {
		return 0, err
	}
	info.Messages++
	if pending {
		info.Pending++
	}
	return id, nil
}

// Read returns up to limit messages addressed to m with an id greater than
// after, oldest first, skipping those older than the message TTL. The cursor
// is where reading started: after, or the member's acknowledged id when that
// is larger (a member never again receives what it acknowledged). With ack,
// the read also acknowledges after: the client says it holds everything up
// to there. The acknowledgement is written without waiting for the disk.
// Refusals: ErrUnauthorized (the member is gone).
func (s *Store) Read(m Member, after uint64, limit int, ack bool) (msgs []Message, cursor uint64, err error) {
	var acked uint64
	err = s.db.View(func(tx *bolt.Tx) error {
		rb := tx.Bucket(bucketRooms).Bucket([]byte(m.Room))
		if rb == nil {
			return ErrUnauthorized
		}
		rec, ok := readMember(rb, m.ID)
		if !ok {
			return ErrUnauthorized
		}
		acked = max(rec.Acked, s.unsavedAck(m))
		cursor = max(after, acked)
		oldest := s.opts.Now().Add(-s.opts.MessageTTL)
		c := rb.Bucket(bucketMsgs).Cursor()
		for k, v := c.Seek(u64(cursor + 1)); k != nil && len(msgs) < limit; k, v = c.Next() {
			r, err := decodeRecord(v)
			if err != nil {
				return fmt.Errorf("message %x: %w", k, err)
			}
			if r.addressedTo(m.ID) && r.created.After(oldest) {
				msgs = append(msgs, Message{ID: binary.BigEndian.Uint64(k), Data: clone(r.data)})
			}
		}
		return nil
	})
	if err != nil {
		return nil, 0, err
	}
	if ack && after > acked {
		s.ack(m, after)
	}
	return msgs, cursor, nil
}

// ack records that m acknowledged upto. Reads take it into account at once;
// the disk follows with the next group commit, without the caller waiting.
func (s *Store) ack(m Member, upto uint64) {
	s.acksMu.Lock()
	if upto <= s.acks[m] {
		s.acksMu.Unlock()
		return
	}
	s.acks[m] = upto
	s.acksMu.Unlock()
	o := &op{err: make(chan error, 1), fn: func(tx *bolt.Tx) error {
		rb := tx.Bucket(bucketRooms).Bucket([]byte(m.Room))
		if rb == nil {
			return nil
		}
		rec, ok := readMember(rb, m.ID)
		if !ok || rec.Acked >= upto {
			return nil
		}
		rec.Acked = upto
		return putJSON(rb.Bucket(bucketMembers), []byte(m.ID), rec)
	}}
	select {
	case s.ops <- o:
	case <-s.closing:
	}
}

func (s *Store) unsavedAck(m Member) uint64 {
	s.acksMu.Lock()
	defer s.acksMu.Unlock()
	return s.acks[m]
}

func (s *Store) forgetAck(m Member) {
	s.acksMu.Lock()
	defer s.acksMu.Unlock()
	delete(s.acks, m)
}

// LastID is the highest message id handed out so far, in any room.
func (s *Store) LastID() uint64 {
	var n uint64
	_ = s.db.View(func(tx *bolt.Tx) error { n = tx.Bucket(bucketMeta).Sequence(); return nil })
	return n
}

// Prune deletes messages that nobody will receive any more: every recipient
// acknowledged them or left, or they are older than the message TTL; and
// idempotency keys older than the TTL. Rooms are pruned a few dozen per
// write, so pruning never holds up posts for long. It returns the number of
// messages deleted.
func (s *Store) Prune(ctx context.Context) (int, error) {
	const roomsPerWrite = 64
	var rooms []string
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketRooms).ForEachBucket(func(k []byte) error {
			rb := tx.Bucket(bucketRooms).Bucket(k)
			if k, _ := rb.Bucket(bucketMsgs).Cursor().First(); k == nil {
				if k, _ := rb.Bucket(bucketIdem).Cursor().First(); k == nil {
					return nil // nothing to prune
				}
			}
			rooms = append(rooms, string(k))
			return nil
		})
	})
	if err != nil {
		return 0, fmt.Errorf("prune: %w", err)
	}
	total := 0
	for len(rooms) > 0 {
		chunk := rooms[:min(roomsPerWrite, len(rooms))]
		rooms = rooms[len(chunk):]
		var n int
		err := s.update(ctx, func(tx *bolt.Tx) error {
			n = 0
			for _, room := range chunk {
				deleted, err := s.pruneRoom(tx, room)
				if err != nil {
					return fmt.Errorf("room %s: %w", room, err)
				}
				n += deleted
			}
			return nil
		})
		if err != nil {
			return total, fmt.Errorf("prune: %w", err)
		}
		total += n
	}
	return total, nil
}

func (s *Store) pruneRoom(tx *bolt.Tx, room string) (int, error) {
	rb := tx.Bucket(bucketRooms).Bucket([]byte(room))
	if rb == nil {
		return 0, nil
	}
	info, _, err := readInfo(tx, room)
	if err != nil {
		return 0, err
	}
	acked := map[string]uint64{}
	err = rb.Bucket(bucketMembers).ForEach(func(k, _ []byte) error {
		rec, _ := readMember(rb, string(k))
		acked[string(k)] = rec.Acked
		return nil
	})
	if err != nil {
		return 0, err
	}
	oldest := s.opts.Now().Add(-s.opts.MessageTTL)
	var doomed [][]byte
	pending := 0
	err = rb.Bucket(bucketMsgs).ForEach(func(k, v []byte) error {
		r, err := decodeRecord(v)
		if err != nil {
			doomed = append(doomed, clone(k))
			return nil
		}
		id := binary.BigEndian.Uint64(k)
		done := !r.created.After(oldest) || (!r.pending && deliveredToAll(r.recipients, acked, id))
		if done {
			doomed = append(doomed, clone(k))
		} else if r.pending {
			pending++
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	for _, k := range doomed {
		if err := rb.Bucket(bucketMsgs).Delete(k); err != nil {
			return 0, err
		}
	}
	var staleKeys [][]byte
	idem := rb.Bucket(bucketIdem)
	err = idem.ForEach(func(k, v []byte) error {
		if len(v) >= 16 && time.Unix(0, int64(binary.BigEndian.Uint64(v[8:]))).Before(oldest) {
			staleKeys = append(staleKeys, clone(k))
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	for _, k := range staleKeys {
		if err := idem.Delete(k); err != nil {
			return 0, err
		}
	}
	if len(doomed) == 0 && len(staleKeys) == 0 {
		return 0, nil
	}
	info.Messages = max(0, info.Messages-len(doomed))
	info.Pending = pending
	return len(doomed), writeInfo(rb, info)
}

// deliveredToAll: every recipient has acknowledged id, or is no longer a member.
func deliveredToAll(recipients []string, acked map[string]uint64, id uint64) bool {
	for _, r := range recipients {
		if a, member := acked[r]; member && a < id {
			return false
		}
	}
	return true
}
