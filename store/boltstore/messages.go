package boltstore

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/tincan/tincan/store"
)

// Append implements store.Store. The messages are on disk when it
// returns. A post's messages get consecutive ids (nothing else takes an id
// in the middle of a write), so its idempotency key keeps its first id and
// their number.
func (s *Store) Append(ctx context.Context, p store.Post) (store.Appended, error) {
	if len(p.Messages) == 0 || len(p.Messages) > store.MaxPost {
		return store.Appended{}, store.Refusef(store.ErrBadPost, "a post carries 1 to %d messages, not %d", store.MaxPost, len(p.Messages))
	}
	if strings.IndexByte(p.IdempotencyKey, 0) >= 0 {
		return store.Appended{}, store.Refusef(store.ErrBadPost, "an idempotency key holds no NUL byte")
	}
	var out store.Appended
	err := s.update(ctx, func(tx *bolt.Tx) error {
		out = store.Appended{}
		room := p.From.Room
		server := p.From.ID == store.ServerID // needs the room only
		peers, rb, err := s.membersForPost(tx, room, p.From.ID, server)
		if err != nil {
			return err
		}
		var idemKey string
		if p.IdempotencyKey != "" {
			idemKey = p.From.ID + "\x00" + p.IdempotencyKey
			if known, ok := s.idemInTx(room, idemKey); ok {
				// The first post's ids, whatever this one carries.
				out = store.Repeated(known.first, known.n)
				return nil
			}
		}
		to := make([][]string, len(p.Messages))
		for i, d := range p.Messages {
			if d.To == "" {
				to[i] = peers
				continue
			}
			if !slices.Contains(peers, d.To) {
				return store.RefuseMessage(store.ErrUnknownPeer, i, "message %d: no peer %q in room %q", i, d.To, room)
			}
			to[i] = []string{d.To}
		}
		if limit := s.opts.MaxRoomMessages; limit > 0 {
			// The count of every message still in the file is cheap; only
			// when it would pass the limit are those that nobody will
			// receive any more (acknowledged by their readers, not yet
			// pruned) left out of it.
			if n, _ := s.countsInTx(room); n+len(p.Messages) > limit {
				if rb == nil {
					rb = tx.Bucket(bucketRooms).Bucket([]byte(room))
				}
				if n = s.retainedInTx(tx, rb, room); n+len(p.Messages) > limit {
					return store.Refusef(store.ErrTooManyMessages, "room %q holds %d unacknowledged messages", room, n)
				}
			}
		}

		// Checks done; from here on, write.
		out.IDs = make([]uint64, len(p.Messages))
		// The first message carries the key (idem.go), unless it is too
		// long for a record.
		inRecord := idemKey != "" && len(idemKey) <= maxRecordKey
		for i, d := range p.Messages {
			size := len(`{"id":18446744073709551615,"from":,}`) + 2 + len(p.From.ID) + len(d.Fields)
			head := record{room: room, pending: len(to[i]) == 0, recipients: to[i]}
			if i == 0 && inRecord {
				head.key, head.keyN = idemKey, len(p.Messages)
			}
			id, err := s.appendRecord(tx, head, size, func(b []byte, id uint64) []byte {
				// {"id":ID,"from":"FROM",FIELDS}; %q's quoting, without fmt.
				b = strconv.AppendUint(append(b, `{"id":`...), id, 10)
				b = appendQuoted(append(b, `,"from":`...), p.From.ID)
				return append(append(append(b, ','), d.Fields...), '}')
			})
			if err != nil {
				return err
			}
			out.IDs[i] = id
		}
		out.ID = out.IDs[0]
		out.Recipients = store.Union(to)
		if post := (keyedPost{first: out.ID, n: len(out.IDs)}); inRecord {
			s.stageIdem(room, idemKey, post)
		} else if idemKey != "" {
			return s.putIdem(tx, room, idemKey, post, s.opts.Now())
		}
		return nil
	})
	if err != nil {
		return store.Appended{}, fmt.Errorf("append to %s: %w", p.From.Room, err)
	}
	return out, nil
}

// emit stores a server event (fields without braces and id) for recipients.
// An event nobody is there to receive is not stored.
func (s *Store) emit(tx *bolt.Tx, room string, recipients []string, fields []byte) error {
	if len(recipients) == 0 {
		return nil
	}
	_, err := s.appendRecord(tx, record{room: room, recipients: recipients}, 0, func(b []byte, id uint64) []byte {
		return fmt.Appendf(b, `{"id":%d,%s}`, id, fields)
	})
	return err
}

// appendRecord allocates the next id (global, so ids never repeat in a room,
// not even after it was deleted and made again) and stores the record head
// (all but its time of creation, set here, and its data), whose data
// appends to b (the record so far, with room for size bytes).
func (s *Store) appendRecord(tx *bolt.Tx, head record, size int, data func(b []byte, id uint64) []byte) (uint64, error) {
	id, err := tx.Bucket(bucketMeta).NextSequence()
	if err != nil {
		return 0, err
	}
	room, to, pending := head.room, head.recipients, head.pending
	created := s.opts.Now()
	head.created = created
	rec := data(head.header(size), id)
	msgs := tx.Bucket(bucketMsgs)
	msgs.FillPercent = 1 // keys only ever grow: fill pages, do not split them in half
	if err := msgs.Put(u64(id), rec); err != nil {
		return 0, err
	}
	s.staged.add(room, id, pending)
	s.afterCommit(func() { s.index.addAt(room, id, pending, rec, created.UnixNano()) })
	s.notifyAfterCommit(room, id, to...)
	return id, nil
}

// membersForPost checks that from may post to room and lists its peers
// in join order: from the directory, without opening the room's buckets
// (a fifth of the allocations of a post, BENCHMARKS §12.6), unless this
// transaction changed the room's members (membersChanged) or the post is
// the application's (which needs the room, with or without members); then
// from the disk, and rb is the room's bucket.
func (s *Store) membersForPost(tx *bolt.Tx, room, from string, server bool) (peers []string, rb *bolt.Bucket, err error) {
	if !server && !s.staged.members[room] {
		peers, member := s.dir.peers(room, from)
		if !member {
			return nil, nil, store.ErrUnauthorized
		}
		return peers, nil, nil
	}
	rb = tx.Bucket(bucketRooms).Bucket([]byte(room))
	if rb == nil && server {
		return nil, nil, store.Refusef(store.ErrNotFound, "no room %q", room)
	}
	if rb == nil {
		return nil, nil, store.ErrUnauthorized
	}
	if _, ok := readMember(rb, from); !ok && !server {
		return nil, nil, store.ErrUnauthorized
	}
	peers, err = peersOf(rb, from)
	return peers, rb, err
}

// retainedInTx counts the room's messages that someone will still
// receive, as the transaction being built sees them: kept for the next
// joiner, or addressed to a member who has not acknowledged them, and not
// past the message TTL.
func (s *Store) retainedInTx(tx *bolt.Tx, rb *bolt.Bucket, room string) int {
	oldest := s.opts.Now().Add(-s.opts.MessageTTL).UnixNano()
	msgs := tx.Bucket(bucketMsgs)
	n := 0
	for _, id := range s.idsInTx(room) {
		v, ok := viewRecord(msgs.Get(u64(id)))
		if !ok || v.created <= oldest {
			continue
		}
		retained := v.pending
		v.eachRecipient(func(to []byte) bool {
			acked, known := s.dir.acked(store.Member{Room: room, ID: string(to)})
			if !known { // joined in this very group commit, or gone
				_, known = readMember(rb, string(to))
			}
			retained = known && acked < id
			return !retained
		})
		if retained {
			n++
		}
	}
	return n
}

// idsInTx lists a room's messages as the transaction being built sees them.
func (s *Store) idsInTx(room string) []uint64 {
	return append(s.index.after(room, 0, 0), s.staged.ids[room]...)
}

func (s *Store) countsInTx(room string) (messages int, held bool) {
	n, h := s.index.counts(room)
	return n + len(s.staged.ids[room]), h || s.staged.held[room]
}

// Read implements store.Store. Acknowledgements reach the disk within
// AckFlush, one write for all of them: a long-poll acknowledges with every
// request, and a write each would double the writes per message.
func (s *Store) Read(_ context.Context, m store.Member, q store.ReadRequest) (msgs []store.Message, cursor uint64, err error) {
	if s.closed() {
		return nil, 0, store.ErrClosed
	}
	after, limit, ack := q.After, q.Limit, q.Acknowledge
	acked, ok := s.dir.acked(m)
	if !ok {
		return nil, 0, s.tombs.member(m)
	}
	cursor = max(after, acked)
	oldest := s.opts.Now().Add(-s.opts.MessageTTL).UnixNano()
	keep := func(id uint64, rec []byte, copyData bool) error {
		v, ok := viewRecord(rec)
		if !ok {
			return fmt.Errorf("message %d: %w", id, errBadRecord)
		}
		if data := v.data; v.created > oldest && v.addressedTo(m.ID) {
			if copyData {
				data = clone(data)
			}
			msgs = append(msgs, store.Message{ID: id, Data: data})
		}
		return nil
	}
	// Live delivery reads the newest messages, which the index keeps in
	// memory; the others come from the disk.
	bad := false
	complete := s.index.readRecent(m.Room, cursor, func(id uint64, rec []byte) bool {
		bad = keep(id, rec, false) != nil
		return !bad && len(msgs) < limit
	})
	if complete && !bad {
		return s.afterRead(m, after, acked, ack, msgs, cursor)
	}
	msgs = msgs[:0]
	// Only ids committed before the transaction begins: see index.go.
	ceiling := s.index.last(m.Room)
	err = s.db.View(func(tx *bolt.Tx) error {
		bucket := tx.Bucket(bucketMsgs)
		// The room's ids a chunk at a time: a deep backlog is not copied whole.
		for next := cursor; len(msgs) < limit && next < ceiling; {
			ids := s.index.after(m.Room, next, 4*limit)
			if len(ids) == 0 {
				break
			}
			for _, id := range ids {
				if id > ceiling || len(msgs) == limit {
					break
				}
				next = id
				if v := bucket.Get(u64(id)); v != nil { // else pruned meanwhile
					if err := keep(id, v, true); err != nil {
						return err
					}
				}
			}
			if ids[len(ids)-1] > ceiling {
				break
			}
		}
		return nil
	})
	if err != nil {
		return nil, 0, err
	}
	return s.afterRead(m, after, acked, ack, msgs, cursor)
}

func (s *Store) afterRead(m store.Member, after, acked uint64, ack bool, msgs []store.Message, cursor uint64) ([]store.Message, uint64, error) {
	if ack && after > acked {
		s.ack(m, after)
	}
	return msgs, cursor, nil
}

// ack records that m acknowledged upto. Reads take it into account at once;
// the disk follows within AckFlush, one write for all acknowledgements (a
// long-poll acknowledges with every request: a write each would double the
// writes per message). A crash can lose the last AckFlush of them: then a
// client that reconnects without a cursor may get those messages again; one
// that sends its cursor, as clients do, cannot.
func (s *Store) ack(m store.Member, upto uint64) {
	if !s.dir.ack(m, upto) {
		return
	}
	s.acksMu.Lock()
	defer s.acksMu.Unlock()
	s.unsaved[m] = max(s.unsaved[m], upto)
}

// flushAcks writes the acknowledgements not yet on disk.
func (s *Store) flushAcks(ctx context.Context) error {
	s.acksMu.Lock()
	batch := s.unsaved
	s.unsaved = map[store.Member]uint64{}
	s.acksMu.Unlock()
	if len(batch) == 0 {
		return nil
	}
	return s.update(ctx, func(tx *bolt.Tx) error {
		for m, upto := range batch {
			rb := tx.Bucket(bucketRooms).Bucket([]byte(m.Room))
			if rb == nil {
				continue
			}
			rec, ok := readMember(rb, m.ID)
			if !ok || rec.Acked >= upto {
				continue
			}
			rec.Acked = upto
			if err := rb.Bucket(bucketMembers).Put([]byte(m.ID), rec.encode()); err != nil {
				return err
			}
		}
		return nil
	})
}

func (s *Store) ackLoop() {
	t := time.NewTicker(s.opts.AckFlush)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			s.flushAcks(context.Background())
		case <-s.closing:
			return
		}
	}
}

func (s *Store) forgetAck(m store.Member) {
	s.acksMu.Lock()
	defer s.acksMu.Unlock()
	delete(s.unsaved, m)
}

// LastID is the highest message id handed out so far, in any room.
func (s *Store) LastID() uint64 {
	var n uint64
	_ = s.db.View(func(tx *bolt.Tx) error { n = tx.Bucket(bucketMeta).Sequence(); return nil })
	return n
}

// Prune implements store.Store. It decides in a read transaction and
// writes only where there is something to delete, a few dozen rooms per
// write, so pruning never holds up posts for long and an idle server does
// not fsync for nothing. (A message once prunable stays so: acknowledgements
// only grow, members only leave, time only passes.)
func (s *Store) Prune(ctx context.Context) (int, error) {
	if s.closed() {
		return 0, store.ErrClosed
	}
	const roomsPerWrite = 64
	if err := s.flushAcks(ctx); err != nil {
		return 0, fmt.Errorf("prune: %w", err)
	}
	total, err := s.pruneOrphans(ctx)
	if err != nil {
		return total, fmt.Errorf("prune: %w", err)
	}
	type roomIDs struct {
		room string
		ids  []uint64
	}
	var doomed []roomIDs
	var staleKeys bool
	err = s.db.View(func(tx *bolt.Tx) error {
		for _, room := range s.index.roomNames() {
			ids, err := s.prunable(tx, room)
			if err != nil {
				return fmt.Errorf("room %s: %w", room, err)
			}
			if len(ids) > 0 {
				doomed = append(doomed, roomIDs{room, ids})
			}
		}
		staleKeys = s.staleIdempotencyKeys(tx)
		return nil
	})
	if err != nil {
		return total, fmt.Errorf("prune: %w", err)
	}
	for len(doomed) > 0 {
		chunk := doomed[:min(roomsPerWrite, len(doomed))]
		doomed = doomed[len(chunk):]
		var n int
		err := s.update(ctx, func(tx *bolt.Tx) error {
			n = 0
			for _, r := range chunk {
				deleted, err := s.deleteMessages(tx, r.room, r.ids)
				if err != nil {
					return fmt.Errorf("room %s: %w", r.room, err)
				}
				n += deleted
			}
			return nil
		})
		if err != nil {
			return total, fmt.Errorf("prune: %w", err)
		}
		total += n
		s.pruned.Add(uint64(n))
	}
	if staleKeys {
		if err := s.update(ctx, s.pruneIdempotencyKeys); err != nil {
			return total, fmt.Errorf("prune: %w", err)
		}
	}
	return total, nil
}

// prunable lists the room's messages that nobody will receive any more.
func (s *Store) prunable(tx *bolt.Tx, room string) ([]uint64, error) {
	acked := map[string]uint64{}
	if rb := tx.Bucket(bucketRooms).Bucket([]byte(room)); rb != nil {
		err := rb.Bucket(bucketMembers).ForEach(func(k, v []byte) error {
			rec, _ := decodeMember(v)
			acked[string(k)] = rec.Acked
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	oldest := s.opts.Now().Add(-s.opts.MessageTTL).UnixNano()
	msgs := tx.Bucket(bucketMsgs)
	var doomed []uint64
	for _, id := range s.index.after(room, 0, 0) {
		v := msgs.Get(u64(id))
		if v == nil {
			continue
		}
		r, ok := viewRecord(v)
		if !ok || r.created <= oldest || (!r.pending && deliveredToAll(r, acked, id)) {
			doomed = append(doomed, id)
		}
	}
	return doomed, nil
}

// deleteMessages deletes a room's messages (those still there).
func (s *Store) deleteMessages(tx *bolt.Tx, room string, ids []uint64) (int, error) {
	msgs := tx.Bucket(bucketMsgs)
	var deleted []uint64
	for _, id := range ids {
		v := msgs.Get(u64(id))
		if v == nil {
			continue
		}
		if r, ok := viewRecord(v); ok && r.key != nil {
			if err := s.keyOutlives(tx, room, id, r); err != nil {
				return 0, err
			}
		}
		if err := msgs.Delete(u64(id)); err != nil {
			return 0, err
		}
		deleted = append(deleted, id)
	}
	if len(deleted) > 0 {
		s.afterCommit(func() { s.index.remove(room, deleted) })
	}
	return len(deleted), nil
}

// deliveredToAll: every recipient has acknowledged id, or is no longer a member.
func deliveredToAll(r recordView, acked map[string]uint64, id uint64) bool {
	all := true
	r.eachRecipient(func(to []byte) bool {
		a, member := acked[string(to)]
		all = !member || a >= id
		return all
	})
	return all
}
