package etcdstore

import (
	"context"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/tincan/tincan/store"
)

// Append implements store.Store: one transaction that stores the post's
// messages (and its idempotency key) if the room's membership is still the
// one the recipients were taken from and the key is still unused. A post
// with an Idempotency-Key that is repeated, on any instance, finds the key
// in that transaction's comparison and answers the first post's ids.
func (s *Store) Append(ctx context.Context, p store.Post) (store.Appended, error) {
	if s.closed.Load() {
		return store.Appended{}, store.ErrClosed
	}
	if len(p.Messages) == 0 || len(p.Messages) > store.MaxPost {
		return store.Appended{}, store.Refusef(store.ErrBadPost, "a post carries 1 to %d messages, not %d", store.MaxPost, len(p.Messages))
	}
	octx, cancel := s.opContext(ctx)
	defer cancel()
	out, err := s.append(octx, p)
	if err != nil {
		return store.Appended{}, s.failure(ctx, "append to "+p.From.Room, err)
	}
	return out, nil
}

func (s *Store) append(ctx context.Context, p store.Post) (store.Appended, error) {
	room, from := p.From.Room, p.From.ID
	synced := false
	// refuse answers a refusal once the mirror has caught up (until then
	// the refusal may be the mirror's delay only); nil means: caught up
	// now, try again.
	refuse := func(r *store.Error) error {
		if synced {
			return r
		}
		synced = true
		return s.catchUp(ctx)
	}
	server := from == store.ServerID // the application's post: the room is enough
	for attempt := 0; ; attempt++ {
		v := s.mirror.view(room)
		if server && !v.exists {
			if err := refuse(store.Refusef(store.ErrNotFound, "no room %q", room)); err != nil {
				return store.Appended{}, err
			}
			continue
		}
		if _, ok := v.find(from); !ok && !server {
			if err := refuse(store.ErrUnauthorized); err != nil {
				return store.Appended{}, err
			}
			continue
		}
		var seen idemRecord // the key's record if there is one, expired
		if p.IdempotencyKey != "" {
			if rec, ok := s.mirror.idemKey(room, from, p.IdempotencyKey); ok {
				if !s.expired(rec.created) {
					return store.Repeated(rec.id, rec.n), nil // whatever this post carries
				}
				seen = rec
			}
		}
		to, unknown := s.recipients(v, from, p.Messages)
		if unknown >= 0 {
			r := store.RefuseMessage(store.ErrUnknownPeer, unknown, "message %d: no peer %q in room %q", unknown, p.Messages[unknown].To, room)
			if err := refuse(r); err != nil {
				return store.Appended{}, err
			}
			continue
		}
		if n := s.retained(room); s.opts.MaxRoomMessages > 0 && n+len(p.Messages) > s.opts.MaxRoomMessages {
			r := store.Refusef(store.ErrTooManyMessages, "room %q holds %d unacknowledged messages", room, n)
			if err := refuse(r); err != nil {
				return store.Appended{}, err
			}
			continue
		}

		cmps := []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(s.keys.info(room)), "=", v.infoRev)}
		// One revision for the whole post: its messages take its ids in
		// order (entryID), index 0 to len-1.
		ops := make([]clientv3.Op, 0, len(p.Messages)+1)
		for i, d := range p.Messages {
			ops = append(ops, s.entryOp(room, to[i], len(to[i]) == 0, i, postTail(from, d.Fields)))
		}
		var orElse []clientv3.Op
		idemKey := s.keys.idem(room, from, p.IdempotencyKey)
		if p.IdempotencyKey != "" {
			cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(idemKey), "=", seen.modRev))
			ops = append(ops, clientv3.OpPut(idemKey, idemValue(s.opts.Now().UnixNano(), 0, len(p.Messages))))
			orElse = append(orElse, clientv3.OpGet(idemKey))
		}
		start := time.Now()
		resp, err := s.client.Txn(ctx).If(cmps...).Then(ops...).Else(orElse...).Commit()
		s.metrics.observe("append", start)
		if err != nil {
			// With a key the transaction itself finds out whether an
			// earlier attempt was applied: it may be sent again.
			if s.again(ctx, attempt, p.IdempotencyKey != "", err) {
				continue
			}
			return store.Appended{}, err
		}
		s.settle(ctx, resp.Header.Revision, start)
		if resp.Succeeded {
			out := store.Appended{IDs: make([]uint64, len(p.Messages)), Recipients: store.Union(to)}
			for i := range out.IDs {
				out.IDs[i] = entryID(resp.Header.Revision, i)
			}
			out.ID = out.IDs[0]
			return out, nil
		}
		if p.IdempotencyKey != "" {
			// Made meanwhile, on this instance or another: a repeat.
			if kvs := resp.Responses[0].GetResponseRange().Kvs; len(kvs) == 1 && kvs[0].ModRevision != seen.modRev {
				if created, index, n, ok := decodeIdem(kvs[0].Value); ok && !s.expired(created) {
					return store.Repeated(entryID(kvs[0].ModRevision, index), n), nil
				}
			}
		}
		synced = true
	}
}

// recipients are, for each message of a post from from, the members it
// goes to; unknown is the place of the first message addressed to someone
// who is not another member of the room as v shows it (-1: none).
func (s *Store) recipients(v roomView, from string, msgs []store.Draft) (to [][]string, unknown int) {
	others := v.others(from)
	to = make([][]string, len(msgs))
	for i, d := range msgs {
		if d.To == "" {
			to[i] = others
			continue
		}
		if _, ok := v.find(d.To); !ok || d.To == from {
			return nil, i
		}
		to[i] = []string{d.To}
	}
	return to, -1
}

// retained is the number of room's entries someone will still receive,
// counting the acknowledgements not yet written; 0 without a limit.
func (s *Store) retained(room string) int {
	if s.opts.MaxRoomMessages <= 0 {
		return 0
	}
	return s.mirror.retained(room, s.opts.Now().Add(-s.opts.MessageTTL).UnixNano(), s.acks.get)
}

// entryOp stores an entry for room: a message or a server event whose
// delivered form ends with tail, index-th of its transaction.
func (s *Store) entryOp(room string, to []string, kept bool, index int, tail []byte) clientv3.Op {
	v := msgValue{created: s.opts.Now().UnixNano(), index: index, kept: kept, recipients: to, tail: tail}
	return clientv3.OpPut(s.keys.msg(room, s.newName()), v.encode())
}

// expired reports whether something made at created (unix nanoseconds)
// is older than the message TTL.
func (s *Store) expired(created int64) bool {
	return created <= s.opts.Now().Add(-s.opts.MessageTTL).UnixNano()
}

// Read implements store.Store, from the mirror.
func (s *Store) Read(ctx context.Context, m store.Member, q store.ReadRequest) ([]store.Message, uint64, error) {
	if s.closed.Load() {
		return nil, 0, store.ErrClosed
	}
	if err := s.ensureFresh(ctx); err != nil {
		return nil, 0, err
	}
	oldest := s.opts.Now().Add(-s.opts.MessageTTL).UnixNano()
	msgs, cursor, acked, ok := s.mirror.read(m, q.After, s.acks.get(m), oldest, q.Limit)
	if !ok {
		// Perhaps a member that joined a moment ago on another instance.
		octx, cancel := s.opContext(ctx)
		err := s.catchUp(octx)
		cancel()
		if err != nil {
			return nil, 0, s.failure(ctx, "read", err)
		}
		if msgs, cursor, acked, ok = s.mirror.read(m, q.After, s.acks.get(m), oldest, q.Limit); !ok {
			if kicked, ok := s.mirror.tombOf(m); ok {
				return nil, 0, tombRefusal(kicked)
			}
			return nil, 0, store.ErrUnauthorized
		}
	}
	if q.Acknowledge && q.After > acked {
		s.acks.add(m, q.After)
	}
	return msgs, cursor, nil
}

// acks are the acknowledgements this instance received and has not yet
// seen in the mirror: Read honours them at once, flushAcks writes them
// every AckFlush, all in one transaction.
type acks struct {
	mu      sync.Mutex
	unsaved map[store.Member]uint64
}

func (a *acks) get(m store.Member) uint64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.unsaved[m]
}

func (a *acks) add(m store.Member, upto uint64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.unsaved[m] = max(a.unsaved[m], upto)
}

func (a *acks) forget(m store.Member) {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.unsaved, m)
}

func (a *acks) snapshot() map[store.Member]uint64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make(map[store.Member]uint64, len(a.unsaved))
	for m, upto := range a.unsaved {
		out[m] = upto
	}
	return out
}

// saved drops the acknowledgements written (unless a later one came).
func (a *acks) saved(batch map[store.Member]uint64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for m, upto := range batch {
		if a.unsaved[m] <= upto {
			delete(a.unsaved, m)
		}
	}
}

// flushAcks writes the pending acknowledgements: one transaction of
// nested transactions, each raising one member's acknowledged id if the
// member is still the same and its id is lower (fixed-width values compare
// as numbers), so that instances flushing at once never lower one.
func (s *Store) flushAcks(ctx context.Context) error {
	batch := s.acks.snapshot()
	if len(batch) == 0 {
		return nil
	}
	const perTxn = 64 // well under etcd's default of 128 operations per transaction
	var ops []clientv3.Op
	var rev int64
	start := time.Now()
	commit := func() error {
		if len(ops) == 0 {
			return nil
		}
		octx, cancel := s.opContext(ctx)
		defer cancel()
		for attempt := 0; ; attempt++ {
			t := time.Now()
			resp, err := s.client.Txn(octx).Then(ops...).Commit()
			s.metrics.observe("ack", t)
			if err == nil {
				rev, ops = resp.Header.Revision, ops[:0]
				return nil
			}
			if !s.again(octx, attempt, true, err) {
				return s.failure(ctx, "acknowledge", err)
			}
		}
	}
	for m, upto := range batch {
		joined, acked, ok := s.mirror.acked(m)
		if !ok || acked >= upto {
			continue
		}
		ack := s.keys.ack(m.Room, m.ID)
		ops = append(ops, clientv3.OpTxn(
			[]clientv3.Cmp{
				clientv3.Compare(clientv3.CreateRevision(s.keys.member(m.Room, m.ID)), "=", joined),
				clientv3.Compare(clientv3.Value(ack), "<", ackValue(upto)),
			},
			[]clientv3.Op{clientv3.OpPut(ack, ackValue(upto))}, nil))
		if len(ops) == perTxn {
			if err := commit(); err != nil {
				return err
			}
		}
	}
	if err := commit(); err != nil {
		return err
	}
	if rev != 0 {
		s.settle(ctx, rev, start)
	}
	s.acks.saved(batch)
	return nil
}

func (s *Store) ackLoop() {
	defer s.wg.Done()
	t := time.NewTicker(s.opts.AckFlush)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			if err := s.flushAcks(s.ctx); err != nil && s.ctx.Err() == nil {
				s.log.Warn("write acknowledgements", "err", err)
			}
		case <-s.ctx.Done():
			return
		}
	}
}
