package etcdstore

import (
	"context"
	"errors"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/tincan/tincan/store"
)

// Append implements store.Store: the post's messages (and its
// idempotency key) are stored if the room's membership is still the one
// the recipients were taken from and the key is still unused, in one
// nested transaction of a group (groupcommit.go): posts that arrive while
// a transaction is in flight go to etcd together, each with its own
// comparison and outcome. A post with an Idempotency-Key that is
// repeated, on any instance, finds the key in its comparison and answers
// the first post's ids. With MaxRoomMessages the limit is decided inside
// the transaction too (see limit).
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

// posting is one attempt of an Append: what its part's build found in
// the mirror, for the caller to act on.
type posting struct {
	answer  store.Appended // without etcd: a repeat found in the mirror
	refusal *store.Error   // without etcd: a refusal, final once the mirror caught up
	fresh   bool           // the mirror it was found in held every change committed before the call
	to      [][]string     // each message's recipients
	index   int            // of its first entry in the group's revision
	seen    idemRecord     // the key's record if there is one, expired
}

func (s *Store) append(ctx context.Context, p store.Post) (store.Appended, error) {
	began := time.Now()
	synced := false // the mirror caught up since the call began
	for attempt := 0; ; attempt++ {
		var try posting
		r := s.group.do(ctx, p.From.Room, func(b *groupBatch) (*groupPart, error) {
			try = posting{fresh: s.freshSince(began)}
			return s.postPart(b, p, &try)
		})
		switch {
		case !r.sent && r.err != nil:
			if errors.Is(r.err, errClosedGroup) {
				return store.Appended{}, store.ErrClosed
			}
			return store.Appended{}, r.err
		case !r.sent && try.refusal != nil:
			// The refusal may be the mirror's delay only, unless the
			// mirror was known to hold everything from before the call.
			if synced || try.fresh {
				return store.Appended{}, try.refusal
			}
			synced = true
			if err := s.catchUp(ctx); err != nil {
				return store.Appended{}, err
			}
			continue
		case !r.sent:
			return try.answer, nil
		case r.err != nil:
			// With a key the transaction itself finds out whether an
			// earlier attempt was applied: it may be sent again.
			if s.again(ctx, attempt, p.IdempotencyKey != "", r.err) {
				continue
			}
			return store.Appended{}, r.err
		case r.resp.Succeeded:
			out := store.Appended{IDs: make([]uint64, len(p.Messages)), Recipients: store.Union(try.to)}
			for i := range out.IDs {
				out.IDs[i] = entryID(r.rev, try.index+i)
			}
			out.ID = out.IDs[0]
			return out, nil
		}
		if p.IdempotencyKey != "" && len(r.resp.Responses) > 0 {
			// Made meanwhile, on this instance or another: a repeat.
			if kvs := r.resp.Responses[0].GetResponseRange().Kvs; len(kvs) == 1 && kvs[0].ModRevision != try.seen.modRev {
				if created, index, n, ok := decodeIdem(kvs[0].Value); ok && !s.expired(created) {
					return store.Repeated(entryID(kvs[0].ModRevision, index), n), nil
				}
			}
		}
		// The comparison failed: the mirror was behind, and shows now
		// (the group waited for it) what changed. Try again.
		synced = true
	}
}

// postPart builds post p's part of group b from the mirror, or records in
// try what p is answered without etcd.
func (s *Store) postPart(b *groupBatch, p store.Post, try *posting) (*groupPart, error) {
	room, from := p.From.Room, p.From.ID
	server := from == store.ServerID // the application's post: the room is enough
	v := s.mirror.view(room)
	if server && !v.exists {
		try.refusal = store.Refusef(store.ErrNotFound, "no room %q", room)
		return nil, nil
	}
	if _, ok := v.find(from); !ok && !server {
		try.refusal = store.ErrUnauthorized
		return nil, nil
	}
	if p.IdempotencyKey != "" {
		if rec, ok := s.mirror.idemKey(room, from, p.IdempotencyKey); ok {
			if !s.expired(rec.created) {
				try.answer = store.Repeated(rec.id, rec.n) // whatever this post carries
				return nil, nil
			}
			try.seen = rec
		}
	}
	to, unknown := s.recipients(v, from, p.Messages)
	if unknown >= 0 {
		try.refusal = store.RefuseMessage(store.ErrUnknownPeer, unknown, "message %d: no peer %q in room %q", unknown, p.Messages[unknown].To, room)
		return nil, nil
	}
	try.to, try.index = to, b.index
	part := &groupPart{
		op:      "append",
		cmps:    []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(s.keys.info(room)), "=", v.infoRev)},
		entries: len(p.Messages),
	}
	if s.opts.MaxRoomMessages > 0 {
		cmp, err := s.limit(b, room, len(p.Messages), try)
		if cmp == nil || err != nil {
			return nil, err
		}
		part.cmps = append(part.cmps, *cmp)
		part.guard, part.guardOp = s.keys.seq(room), s.seqOp(room)
	}
	// One revision for the whole post: its messages take its ids in order
	// (entryID), from the group's next free index on.
	part.then = make([]clientv3.Op, 0, len(p.Messages)+1)
	for i, d := range p.Messages {
		op, n := s.entry(room, to[i], len(to[i]) == 0, b.index+i, postTail(from, d.Fields))
		part.then = append(part.then, op)
		part.bytes += n
	}
	if p.IdempotencyKey != "" {
		idemKey := s.keys.idem(room, from, p.IdempotencyKey)
		part.cmps = append(part.cmps, clientv3.Compare(clientv3.ModRevision(idemKey), "=", try.seen.modRev))
		part.then = append(part.then, clientv3.OpPut(idemKey, idemValue(s.opts.Now().UnixNano(), b.index, len(p.Messages))))
		part.orElse = append(part.orElse, clientv3.OpGet(idemKey))
		part.puts = append(part.puts, idemKey)
		part.bytes += len(idemKey) + 10
	}
	return part, nil
}

// limit decides MaxRoomMessages for a post of n messages to room inside
// its transaction, so that posts racing on several instances cannot take
// the room past it. Every group that posts to a room rewrites the room's
// seq key once (seqOp), and carries at most idsPerRevision entries; so
// when the mirror counts retained entries at seq version V, a post that
// finds the version at most V+k when it commits knows that at most
// k*idsPerRevision entries came meanwhile. It compares for the largest k
// that still leaves room for its own n (and for what the group's parts
// before it add): far from the limit, racing posts do not conflict; near
// it, they are ordered one by one. It answers the comparison; or nil with
// try.refusal set (the room is full as the mirror shows it), or nil and
// errNextGroup (it fits only without the group's other posts to room).
func (s *Store) limit(b *groupBatch, room string, n int, try *posting) (*clientv3.Cmp, error) {
	limit := s.opts.MaxRoomMessages
	// The version first: entries counted after it was read are counted
	// twice at worst (in held, and among those that came since). Every
	// entry the mirror holds bounds those retained from above, at no cost:
	// only near the limit are they counted one by one (which takes a
	// quarter of an instance's CPU under pingpong when done per post).
	version, held := s.mirror.seqVersion(room)
	pending := b.pending[s.keys.seq(room)]
	if held+pending+n > limit {
		held = s.mirror.retained(room, s.opts.Now().Add(-s.opts.MessageTTL).UnixNano(), s.acks.get)
	}
	if held+n > limit {
		try.refusal = store.Refusef(store.ErrTooManyMessages, "room %q holds %d unacknowledged messages", room, held)
		return nil, nil
	}
	if held+pending+n > limit {
		return nil, errNextGroup
	}
	k := int64((limit - held - pending - n) / idsPerRevision)
	cmp := clientv3.Compare(clientv3.Version(s.keys.seq(room)), "<", version+k+1)
	return &cmp, nil
}

// seqOp rewrites room's seq key, if the room still exists, so that a
// group whose posts all failed because the room went leaves no key.
func (s *Store) seqOp(room string) clientv3.Op {
	return clientv3.OpTxn(
		[]clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(s.keys.info(room)), ">", 0)},
		[]clientv3.Op{clientv3.OpPut(s.keys.seq(room), "")}, nil)
}

// seqVersion is the version of room's seq key as the mirror shows it,
// and the number of the room's entries it holds.
func (mr *mirror) seqVersion(room string) (version int64, entries int) {
	mr.mu.RLock()
	defer mr.mu.RUnlock()
	if r := mr.rooms[room]; r != nil {
		return r.seqVersion, len(r.entries)
	}
	return 0, 0
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

// entryOp stores an entry for room: a message or a server event whose
// delivered form ends with tail, index-th of its transaction.
func (s *Store) entryOp(room string, to []string, kept bool, index int, tail []byte) clientv3.Op {
	op, _ := s.entry(room, to, kept, index, tail)
	return op
}

// entry is entryOp, and the bytes of its key and value.
func (s *Store) entry(room string, to []string, kept bool, index int, tail []byte) (clientv3.Op, int) {
	v := msgValue{created: s.opts.Now().UnixNano(), index: index, kept: kept, recipients: to, tail: tail}
	key, value := s.keys.msg(room, s.newName()), v.encode()
	return clientv3.OpPut(key, value), len(key) + len(value)
}

// expired reports whether something made at created (unix nanoseconds)
// is older than the message TTL.
func (s *Store) expired(created int64) bool {
	return created <= s.opts.Now().Add(-s.opts.MessageTTL).UnixNano()
}

// freshSince reports whether the mirror is known to hold every change
// committed before t: then a refusal found in it after this call is
// final, with no catch-up (a round trip) first. Under load the instance's
// own writes keep it so (settle).
func (s *Store) freshSince(t time.Time) bool { return s.freshAt.Load() >= t.UnixNano() }

// Read implements store.Store, from the mirror.
func (s *Store) Read(ctx context.Context, m store.Member, q store.ReadRequest) ([]store.Message, uint64, error) {
	began := time.Now()
	if s.closed.Load() {
		return nil, 0, store.ErrClosed
	}
	if err := s.ensureFresh(ctx); err != nil {
		return nil, 0, err
	}
	oldest := s.opts.Now().Add(-s.opts.MessageTTL).UnixNano()
	fresh := s.freshSince(began)
	msgs, cursor, acked, ok := s.mirror.read(m, q.After, s.acks.get(m), oldest, q.Limit)
	if !ok && !fresh {
		// Perhaps a member that joined a moment ago on another instance.
		octx, cancel := s.opContext(ctx)
		err := s.catchUp(octx)
		cancel()
		if err != nil {
			return nil, 0, s.failure(ctx, "read", err)
		}
		msgs, cursor, acked, ok = s.mirror.read(m, q.After, s.acks.get(m), oldest, q.Limit)
	}
	if !ok {
		if kicked, ok := s.mirror.tombOf(m); ok {
			return nil, 0, tombRefusal(kicked)
		}
		return nil, 0, store.ErrUnauthorized
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
