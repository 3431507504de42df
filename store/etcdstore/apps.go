package etcdstore

import (
	"cmp"
	"context"
	"errors"
	"slices"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/tincan/tincan/store"
)

// store.Apps on etcd: profiles live in the member records (keys.go), the
// rest is here.
//
// The outbox: with Options.Webhooks each change writes its events under
// P outbox/<room>/ in its own transaction, so that an event exists if and
// only if its change does. An event's seq is entryID of the transaction's
// revision and the event's index in it (its key's create revision), so
// seqs grow with the changes in a room and are never reused. Every
// instance mirrors the outbox; OutboxChanged fires on every instance whose
// watch brings new events. Delivered deletes the keys.
//
// The claim: one instance at a time delivers. ClaimOutbox puts P
// outbox-claim, if it does not exist, on a lease of claimTTL seconds that
// the holder keeps alive; another instance watches the key and tries again
// when it goes. The holder's lost channel is closed when its keep-alive
// fails (the lease is then gone or about to go), when the key is deleted
// or taken by another lease, on release and on Close. An instance that
// dies stops renewing: its lease lapses within claimTTL (later after a
// leader change, which renews every lease) and another instance takes
// over. A lease is not a lock: a holder cut off from etcd may still be
// delivering for a moment after its lease lapsed. So two instances may
// deliver one event; receivers deduplicate by webhook-id, as they must
// anyway for retries.
//
// Tombstones: Kick and CloseRoom do not delete the removed members' token
// keys but overwrite them with a tombstone (tombValue) on a fresh lease of
// the client timeout, in the removal's transaction. Every instance mirrors
// them: Authenticate of such a token and Read of such a member answer
// store.ErrKicked or store.ErrRoomClosed, everywhere, until the lease
// lapses (at least the client timeout; etcd only ever lengthens leases).
//
// Listening (Room's MemberInfo.Listening): an instance that holds a
// member (an open stream or long-poll) writes P room/<room>/listen/<id>/
// <instance> on its own instance lease, once, and deletes it when the
// member has not been held there for the client timeout. Listening is
// true while any instance has such a key, or this instance holds the
// member now. So it reads "listening now, or within the client timeout,
// on some instance", the contract's cluster reading; an instance that
// dies takes its keys with it within instanceTTL. The cost is two writes
// per member and listening instance per stretch of listening, none per
// long-poll.

// claimTTL is the lease of the outbox claim, in seconds.
const claimTTL = 3

// eventOp appends to ops the put of a webhook event, index-th of its
// transaction, when the store writes webhook events.
func (s *Store) eventOp(ops []clientv3.Op, index int, d store.EventData) []clientv3.Op {
	if !s.opts.Webhooks {
		return ops
	}
	v := outboxValue{
		Index: index, Type: d.Type, Time: d.Time.UnixNano(), ClientID: d.ClientID,
		Identity: d.Identity, Name: d.Name, Metadata: d.Metadata, Reason: d.Reason, Occupants: d.Occupants,
	}
	return append(ops, clientv3.OpPut(s.keys.outbox(d.Room, s.newName()), v.encode()))
}

func tombRefusal(kicked bool) error {
	if kicked {
		return store.ErrKicked
	}
	return store.ErrRoomClosed
}

// tombOfToken finds the tombstone a token hash has become.
func (mr *mirror) tombOfToken(hash [32]byte) (kicked, ok bool) {
	mr.mu.RLock()
	defer mr.mu.RUnlock()
	t, ok := mr.tombHashes[hash]
	return t.kicked, ok
}

// tombOf finds the tombstone of a removed member.
func (mr *mirror) tombOf(m store.Member) (kicked, ok bool) {
	mr.mu.RLock()
	defer mr.mu.RUnlock()
	kicked, ok = mr.tombs[m]
	return kicked, ok
}

// Outbox implements store.Store, from the mirror: oldest (lowest seq)
// first, across rooms as within each.
func (s *Store) Outbox(ctx context.Context, limit int) ([]store.Event, error) {
	if s.closed.Load() {
		return nil, store.ErrClosed
	}
	if !s.opts.Webhooks || limit <= 0 {
		return nil, nil
	}
	if err := s.ensureFresh(ctx); err != nil {
		return nil, err
	}
	return s.mirror.outboxEvents(limit), nil
}

func (mr *mirror) outboxEvents(limit int) []store.Event {
	mr.mu.RLock()
	seqs := make([]uint64, 0, len(mr.outboxSeq))
	for seq := range mr.outboxSeq {
		seqs = append(seqs, seq)
	}
	slices.Sort(seqs)
	seqs = seqs[:min(limit, len(seqs))]
	out := make([]store.Event, len(seqs))
	for i, seq := range seqs {
		out[i] = mr.outbox[mr.outboxSeq[seq]].event
	}
	mr.mu.RUnlock()
	return out
}

// outboxKeys finds the keys of events; missing lists the seqs unknown.
func (mr *mirror) outboxKeys(events []store.Event) (keys []string, missing []store.Event) {
	mr.mu.RLock()
	defer mr.mu.RUnlock()
	for _, e := range events {
		if k, ok := mr.outboxSeq[e.Seq]; ok {
			keys = append(keys, k)
		} else {
			missing = append(missing, e)
		}
	}
	return keys, missing
}

// Delivered implements store.Store. An event the mirror does not know may
// be one another instance wrote a moment ago: the mirror catches up before
// it is taken for delivered already.
func (s *Store) Delivered(ctx context.Context, events []store.Event) error {
	if s.closed.Load() {
		return store.ErrClosed
	}
	keys, missing := s.mirror.outboxKeys(events)
	if len(missing) > 0 {
		octx, cancel := s.opContext(ctx)
		err := s.catchUp(octx)
		cancel()
		if err != nil {
			return s.failure(ctx, "delivered", err)
		}
		more, _ := s.mirror.outboxKeys(missing)
		keys = append(keys, more...)
	}
	if _, err := s.deleteKeys(ctx, keys); err != nil {
		return err
	}
	return nil
}

// OutboxChanged implements store.Store: f is called after the watch
// brought new events to the mirror (whoever wrote them), and after the
// mirror was loaded again.
func (s *Store) OutboxChanged(f func()) (cancel func()) { return s.outboxWatchers.Add(f) }

// claims are the outbox claims this instance holds, released by Close.
type claims struct {
	mu   sync.Mutex
	held map[*claim]bool
}

type claim struct {
	s       *Store
	lease   clientv3.LeaseID
	cancel  context.CancelFunc
	done    chan struct{} // closed when the claim is over (lost)
	release sync.Once
}

// ClaimOutbox implements store.Store.
func (s *Store) ClaimOutbox(ctx context.Context) (lost <-chan struct{}, release func(), err error) {
	key := s.keys.claim()
	for attempt := 0; ; attempt++ {
		if s.closed.Load() {
			return nil, nil, store.ErrClosed
		}
		if err := ctx.Err(); err != nil {
			return nil, nil, err
		}
		c, rev, err := s.tryClaim(ctx)
		if err != nil {
			if !s.pause(ctx, min(100*time.Millisecond<<min(attempt, 3), time.Second)) {
				if s.closed.Load() {
					return nil, nil, store.ErrClosed
				}
				return nil, nil, ctx.Err()
			}
			continue
		}
		if c != nil {
			return c.done, c.give, nil
		}
		// Held by another: wait until its key goes (or, should the watch
		// stall, look again after a lease's time).
		wctx, cancel := context.WithTimeout(clientv3.WithRequireLeader(ctx), claimTTL*time.Second)
		stop := context.AfterFunc(s.ctx, cancel)
	watch:
		for resp := range s.client.Watch(wctx, key, clientv3.WithRev(rev+1)) {
			for _, ev := range resp.Events {
				if ev.Type == clientv3.EventTypeDelete {
					break watch
				}
			}
		}
		stop()
		cancel()
		attempt = 0
	}
}

// tryClaim makes this instance the claim's holder, if nobody holds it; c
// is nil when another does, as of revision rev.
func (s *Store) tryClaim(ctx context.Context) (c *claim, rev int64, err error) {
	octx, cancel := s.opContext(ctx)
	defer cancel()
	g, err := s.client.Grant(octx, claimTTL)
	if err != nil {
		return nil, 0, err
	}
	key := s.keys.claim()
	start := time.Now()
	resp, err := s.client.Txn(octx).
		If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
		Then(clientv3.OpPut(key, s.self, clientv3.WithLease(g.ID))).
		Commit()
	s.metrics.observe("claim", start)
	if err != nil || !resp.Succeeded {
		s.presence.revoke(g.ID)
		if err != nil {
			return nil, 0, err
		}
		return nil, resp.Header.Revision, nil
	}
	kctx, kcancel := context.WithCancel(s.ctx)
	ka, err := s.client.KeepAlive(kctx, g.ID)
	if err != nil {
		kcancel()
		s.presence.revoke(g.ID)
		return nil, 0, err
	}
	c = &claim{s: s, lease: g.ID, cancel: kcancel, done: make(chan struct{})}
	s.claims.mu.Lock()
	if s.claims.held == nil {
		s.claims.held = map[*claim]bool{}
	}
	s.claims.held[c] = true
	s.claims.mu.Unlock()
	s.wg.Add(1)
	go c.keep(kctx, ka, resp.Header.Revision)
	return c, resp.Header.Revision, nil
}

// keep follows the claim until it is lost or given up: the keep-alive
// stream ends (clientv3 closes it when the lease is gone, or has not been
// renewed for its TTL), or the key is deleted or taken over.
func (c *claim) keep(ctx context.Context, ka <-chan *clientv3.LeaseKeepAliveResponse, rev int64) {
	defer c.s.wg.Done()
	defer close(c.done)
	defer c.cancel()
	key := c.s.keys.claim()
	for ctx.Err() == nil {
		wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
		watch := c.s.client.Watch(wctx, key, clientv3.WithRev(rev+1))
		gone := false
	follow:
		for {
			select {
			case _, ok := <-ka:
				if !ok {
					cancel()
					return
				}
			case resp, ok := <-watch:
				if !ok || resp.Err() != nil {
					break follow
				}
				for _, ev := range resp.Events {
					rev = ev.Kv.ModRevision
					if ev.Type == clientv3.EventTypeDelete || clientv3.LeaseID(ev.Kv.Lease) != c.lease {
						gone = true
					}
				}
				if gone {
					cancel()
					return
				}
			case <-ctx.Done():
				cancel()
				return
			}
		}
		cancel()
		// The watch broke: is the key still ours?
		octx, ocancel := c.s.opContext(ctx)
		resp, err := c.s.client.Get(octx, key)
		ocancel()
		switch {
		case err != nil:
			if !c.s.pause(ctx, 200*time.Millisecond) {
				return
			}
		case len(resp.Kvs) == 0 || clientv3.LeaseID(resp.Kvs[0].Lease) != c.lease:
			return
		default:
			rev = resp.Header.Revision
		}
	}
}

// give releases the claim: its key goes at once with its lease.
func (c *claim) give() {
	c.release.Do(func() {
		c.cancel()
		<-c.done
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		c.s.client.Revoke(ctx, c.lease)
		cancel()
		c.s.claims.mu.Lock()
		delete(c.s.claims.held, c)
		c.s.claims.mu.Unlock()
	})
}

// releaseClaims gives up every claim this instance holds (Close).
func (s *Store) releaseClaims() {
	s.claims.mu.Lock()
	held := make([]*claim, 0, len(s.claims.held))
	for c := range s.claims.held {
		held = append(held, c)
	}
	s.claims.mu.Unlock()
	for _, c := range held {
		c.give()
	}
}

// Rooms implements store.Store, from the mirror. A limit of 0 or less
// lists every room after after.
func (s *Store) Rooms(ctx context.Context, after string, limit int) ([]store.RoomInfo, error) {
	if s.closed.Load() {
		return nil, store.ErrClosed
	}
	if err := s.ensureFresh(ctx); err != nil {
		return nil, err
	}
	return s.mirror.roomList(after, limit), nil
}

func (mr *mirror) roomList(after string, limit int) []store.RoomInfo {
	mr.mu.RLock()
	defer mr.mu.RUnlock()
	names := make([]string, 0, len(mr.rooms))
	for name := range mr.rooms {
		if name > after {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	if limit > 0 {
		names = names[:min(limit, len(names))]
	}
	out := make([]store.RoomInfo, len(names))
	for i, name := range names {
		out[i] = mr.rooms[name].describe(name)
	}
	return out
}

// describe is a room as the admin API shows it. Called with mu held.
func (r *room) describe(name string) store.RoomInfo {
	created := r.info.Created
	active := max(r.info.Active, r.lastEntry, created)
	return store.RoomInfo{Name: name, Occupants: len(r.members), Created: unixTime(created), LastActive: unixTime(active)}
}

func unixTime(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n)
}

// Room implements store.Store, from the mirror (caught up before a room
// is said not to exist).
func (s *Store) Room(ctx context.Context, name string) (store.RoomInfo, []store.MemberInfo, error) {
	if s.closed.Load() {
		return store.RoomInfo{}, nil, store.ErrClosed
	}
	if err := s.ensureFresh(ctx); err != nil {
		return store.RoomInfo{}, nil, err
	}
	info, members, ok := s.mirror.describeRoom(name)
	if !ok {
		octx, cancel := s.opContext(ctx)
		err := s.catchUp(octx)
		cancel()
		if err != nil {
			return store.RoomInfo{}, nil, s.failure(ctx, "room", err)
		}
		if info, members, ok = s.mirror.describeRoom(name); !ok {
			return store.RoomInfo{}, nil, store.Refusef(store.ErrNotFound, "no room %q", name)
		}
	}
	for i := range members {
		members[i].Listening = members[i].Listening || s.presence.holding(store.Member{Room: name, ID: members[i].ID})
	}
	return info, members, nil
}

func (mr *mirror) describeRoom(name string) (store.RoomInfo, []store.MemberInfo, bool) {
	mr.mu.RLock()
	defer mr.mu.RUnlock()
	r := mr.rooms[name]
	if r == nil {
		return store.RoomInfo{}, nil, false
	}
	ms := make([]*member, 0, len(r.members))
	for _, m := range r.members {
		ms = append(ms, m)
	}
	slices.SortFunc(ms, func(a, b *member) int { return cmp.Compare(a.joined, b.joined) })
	out := make([]store.MemberInfo, len(ms))
	for i, m := range ms {
		out[i] = store.MemberInfo{ID: m.id, Profile: m.value.profile, Joined: unixTime(m.value.joined), Listening: len(m.listening) > 0}
	}
	return r.describe(name), out, true
}

// Kick implements store.Store: the removal of Leave, with reason kicked,
// whose token key becomes a tombstone.
func (s *Store) Kick(ctx context.Context, m store.Member) error {
	if s.closed.Load() {
		return store.ErrClosed
	}
	octx, cancel := s.opContext(ctx)
	defer cancel()
	lease, err := s.presence.grant(octx)
	if err != nil {
		return s.failure(ctx, "kick", err)
	}
	_, removed, err := s.leave(octx, m, removal{reason: store.ReasonKicked, tomb: lease})
	var refusal *store.Error
	if !removed && (err == nil || errors.As(err, &refusal)) {
		// Surely unused. (After another error the kick may have been
		// applied: the lease lapses by itself.)
		s.presence.revoke(lease)
	}
	if err != nil {
		return s.failure(ctx, "kick from "+m.Room, err)
	}
	return nil
}

// tombsPerTxn is how many tombstones CloseRoom puts in one nested
// transaction of its transaction: etcd limits the operations of each
// level (--max-txn-ops, 128 by default), not their sum.
const tombsPerTxn = 100

// CloseRoom implements store.Store: one transaction deletes the room's
// keys (members, entries, acknowledgements, idempotency keys), turns each
// member's token key into a tombstone, frees the room's place among
// MaxRooms and writes room.closed (reason "closed"; no member.left).
func (s *Store) CloseRoom(ctx context.Context, name string) error {
	if s.closed.Load() {
		return store.ErrClosed
	}
	octx, cancel := s.opContext(ctx)
	defer cancel()
	if err := s.closeRoom(octx, name); err != nil {
		return s.failure(ctx, "close room "+name, err)
	}
	return nil
}

func (s *Store) closeRoom(ctx context.Context, name string) error {
	var lease clientv3.LeaseID
	used := false
	defer func() {
		if !used {
			s.presence.revoke(lease)
		}
	}()
	synced := false
	for attempt := 0; ; attempt++ {
		v := s.mirror.view(name)
		if !v.exists {
			if used {
				return nil // an attempt that failed was applied after all
			}
			if synced {
				return store.Refusef(store.ErrNotFound, "no room %q", name)
			}
			synced = true
			if err := s.catchUp(ctx); err != nil {
				return err
			}
			continue
		}
		if lease == 0 {
			var err error
			if lease, err = s.presence.grant(ctx); err != nil {
				return err
			}
		}
		ops := []clientv3.Op{clientv3.OpDelete(s.keys.room(name), clientv3.WithPrefix())}
		for chunk := range chunks(v.members, tombsPerTxn) {
			tombs := make([]clientv3.Op, len(chunk))
			for i, m := range chunk {
				tombs[i] = clientv3.OpPut(s.keys.token(m.token), tombValue(false, name, m.id), clientv3.WithLease(lease))
			}
			ops = append(ops, clientv3.OpTxn(nil, tombs, nil))
		}
		if v.info.Slot != nil {
			ops = append(ops, clientv3.OpDelete(s.keys.slot(*v.info.Slot)))
		}
		ops = s.eventOp(ops, 0, store.EventData{Type: store.EventRoomClosed, Time: s.opts.Now(), Room: name, Reason: "closed"})
		start := time.Now()
		resp, err := s.client.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(s.keys.info(name)), "=", v.infoRev)).Then(ops...).Commit()
		s.metrics.observe("close", start)
		if err != nil {
			used = used || !notApplied(err) // perhaps applied: the lease lapses by itself
			if s.again(ctx, attempt, true, err) {
				continue
			}
			return err
		}
		s.settle(ctx, resp.Header.Revision, start)
		if resp.Succeeded {
			used = true
			for _, m := range v.members {
				if !m.shared {
					s.presence.revoke(clientv3.LeaseID(m.lease))
				}
				s.forget(store.Member{Room: name, ID: m.id})
			}
			return nil
		}
		synced = true
	}
}

// holding reports whether this instance holds m now.
func (p *presence) holding(m store.Member) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	l := p.local[m]
	return l != nil && l.open > 0
}

// listenLoop keeps this instance's listen keys: one for each member it
// holds or held within the client timeout, none for others. Until Close.
func (p *presence) listenLoop() {
	defer p.s.wg.Done()
	t := time.NewTicker(p.tick())
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-p.s.ctx.Done():
			return
		}
		if err := p.syncListening(); err != nil && p.s.ctx.Err() == nil {
			p.s.log.Debug("listen keys", "err", err)
		}
	}
}

func (p *presence) syncListening() error {
	s := p.s
	now := time.Now()
	want := map[store.Member]bool{}
	p.mu.Lock()
	for m, l := range p.local {
		if l.open > 0 {
			l.listened = now
		}
		if !l.listened.IsZero() && now.Sub(l.listened) < s.opts.ClientTimeout {
			want[m] = true
		}
	}
	p.mu.Unlock()
	have := s.mirror.listening(s.self)
	lease := clientv3.LeaseID(p.instance.Load())
	var ops []clientv3.Op
	for m := range want {
		if have[m] || lease == 0 {
			continue
		}
		ref, ok := s.mirror.presence(m)
		if !ok {
			continue
		}
		ops = append(ops, clientv3.OpTxn(
			[]clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(s.keys.member(m.Room, m.ID)), "=", ref.joined)},
			[]clientv3.Op{clientv3.OpPut(s.keys.listen(m.Room, m.ID, s.self), "", clientv3.WithLease(lease))}, nil))
	}
	for m := range have {
		if !want[m] {
			ops = append(ops, clientv3.OpDelete(s.keys.listen(m.Room, m.ID, s.self)))
		}
	}
	if len(ops) == 0 {
		return nil
	}
	start := time.Now()
	var rev int64
	for chunk := range chunks(ops, 64) {
		ctx, cancel := s.opContext(s.ctx)
		t := time.Now()
		resp, err := s.client.Txn(ctx).Then(chunk...).Commit()
		cancel()
		s.metrics.observe("listen", t)
		if err != nil {
			return err
		}
		rev = resp.Header.Revision
	}
	s.settle(s.ctx, rev, start)
	return nil
}

// listening lists the members with a listen key of instance inst.
func (mr *mirror) listening(inst string) map[store.Member]bool {
	mr.mu.RLock()
	defer mr.mu.RUnlock()
	out := map[store.Member]bool{}
	for name, r := range mr.rooms {
		for _, m := range r.members {
			if m.listening[inst] {
				out[store.Member{Room: name, ID: m.id}] = true
			}
		}
	}
	return out
}
