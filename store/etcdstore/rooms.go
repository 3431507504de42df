package etcdstore

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"golang.org/x/crypto/bcrypt"

	"github.com/tincan/tincan/store"
)

// Joins and leaves. Each is one transaction (a nested one of a group,
// groupcommit.go, but for resumes) that compares the room
// record's mod revision with the one the mirror showed: every join and
// every leave rewrites the record, so the comparison holds only if the
// membership is still the one the transaction was built from. That makes
// the capacity exact (racing joins each see the room's count and all but
// one fail the comparison and start over), and the recipients of the
// peer-joined and peer-left events exact too.

// Join implements store.Store.
func (s *Store) Join(ctx context.Context, req store.JoinRequest) (store.Joined, error) {
	if s.closed.Load() {
		return store.Joined{}, store.ErrClosed
	}
	if strings.Contains(req.Room, "/") {
		return store.Joined{}, fmt.Errorf("join: room name %q: the etcd engine's keys do not allow a '/'", req.Room)
	}
	if len(req.Profile.Metadata) > 0 {
		// Compact, so that entries and event bodies hold no line break.
		var b bytes.Buffer
		if err := json.Compact(&b, req.Profile.Metadata); err != nil {
			return store.Joined{}, store.Refusef(store.ErrBadPost, "profile metadata is not JSON: %v", err)
		}
		req.Profile.Metadata = b.Bytes()
	}
	j := &joining{s: s, req: req, deadline: time.Now().Add(s.opts.RequestTimeout)}
	defer j.release()
	out, err := j.run(ctx)
	if err != nil {
		return store.Joined{}, s.failure(ctx, "join "+req.Room, err)
	}
	return out, nil
}

// joining is one Join across its attempts: what it made once (id, token,
// password hash, lease) is reused by the next attempt.
type joining struct {
	s        *Store
	req      store.JoinRequest
	deadline time.Time // of its etcd calls: the request timeout, plus the time spent on bcrypt

	id, token string
	hash      []byte // bcrypt hash of req.Password, for a room it makes
	checked   []byte // the room's password hash last checked against req.Password
	matches   bool   // and whether it matched
	lease     clientv3.LeaseID
	fresh     bool // granted by this join (else from the pool)
}

func (j *joining) run(ctx context.Context) (store.Joined, error) {
	s, req := j.s, j.req
	var tokenHash [32]byte
	if req.Token != "" {
		tokenHash = sha256.Sum256([]byte(req.Token))
	}
	synced := false // the mirror caught up since the call began
	sync := func() error {
		synced = true
		cctx, cancel := j.etcd(ctx)
		defer cancel()
		return s.catchUp(cctx)
	}
	for attempt := 0; ; attempt++ {
		v := s.mirror.view(req.Room)

		// An earlier attempt whose answer was lost (a leader lost while
		// it waited) may have been applied all the same: the member it
		// made is this join's own, not a stranger holding a seat.
		if j.id != "" {
			if mv, ok := v.find(j.id); ok && mv.token == sha256.Sum256([]byte(j.token)) {
				return j.admitted(v), nil
			}
		}

		// Resume: the token names a member of this very room.
		if req.Token != "" {
			m, known := s.mirror.lookup(tokenHash)
			if mv, ok := v.find(m.ID); known && ok && m.Room == req.Room && mv.token == tokenHash {
				out, done, err := j.resume(ctx, v, mv)
				if done || err != nil {
					if err != nil && j.again(ctx, attempt, true, err) {
						continue
					}
					return out, err
				}
				synced = true // the comparison failed: the mirror has caught up
				continue
			}
			if !known && !synced {
				if err := sync(); err != nil {
					return store.Joined{}, err
				}
				continue
			}
		}

		// Resume by identity: the application's token names a member of
		// this room. No catch-up is needed to find one that joined a
		// moment ago elsewhere: admit compares the room record, which
		// that join rewrote.
		if mv, ok := v.byIdentity(req.Profile.Identity); ok {
			out, done, err := j.resumeIdentity(ctx, v, mv)
			if done || err != nil {
				if err != nil && j.again(ctx, attempt, true, err) {
					continue
				}
				return out, err
			}
			synced = true
			continue
		}

		refusal, slot, err := j.check(v)
		if err != nil {
			return store.Joined{}, err
		}
		if refusal != nil {
			if !synced {
				if err := sync(); err != nil {
					return store.Joined{}, err
				}
				continue
			}
			return store.Joined{}, refusal
		}
		out, done, err := j.admit(ctx, v, slot)
		if err != nil {
			// Safe to send again: the transaction compares the room
			// record, which an applied first attempt changed, and the
			// next attempt finds that attempt's member (above).
			if j.again(ctx, attempt, true, err) {
				continue
			}
			return store.Joined{}, err
		}
		if done {
			return out, nil
		}
		synced = true
	}
}

// etcd bounds an etcd call of the join.
func (j *joining) etcd(ctx context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithDeadline(ctx, j.deadline)
	return clientv3.WithRequireLeader(ctx), cancel
}

// again is Store.again within the join's deadline.
func (j *joining) again(ctx context.Context, attempt int, safe bool, err error) bool {
	ctx, cancel := j.etcd(ctx)
	defer cancel()
	return j.s.again(ctx, attempt, safe, err)
}

// check decides from the mirror's view whether the join is refused, and
// picks the place among MaxRooms a new room takes (-1 for none).
func (j *joining) check(v roomView) (refusal error, slot int, err error) {
	s, req := j.s, j.req
	defer func(start time.Time) { j.deadline = j.deadline.Add(time.Since(start)) }(time.Now()) // bcrypt's time is not etcd's
	if v.exists && len(v.info.Password) > 0 && req.Password == "" {
		return store.Refusef(store.ErrPasswordRequired, "room %q needs a password", req.Room), -1, nil
	}
	if v.exists && len(v.info.Password) > 0 && !j.passwordMatches(v.info.Password) {
		return store.Refusef(store.ErrBadPassword, "wrong password for room %q", req.Room), -1, nil
	}
	if len(v.members) >= s.opts.Capacity {
		return store.Refusef(store.ErrRoomFull, "room %q is full (%d of %d)", req.Room, len(v.members), s.opts.Capacity), -1, nil
	}
	slot = -1
	if !v.exists && s.opts.MaxRooms > 0 {
		free := s.mirror.freeSlots(s.opts.MaxRooms)
		if len(free) == 0 {
			return store.Refusef(store.ErrTooManyRooms, "the server holds its maximum of %d rooms", s.opts.MaxRooms), -1, nil
		}
		slot = free[mrand.IntN(len(free))] // racing makers of rooms rarely pick the same
	}
	if !v.exists && req.Password != "" && j.hash == nil {
		// Slow on purpose: done once, outside any transaction.
		if j.hash, err = bcrypt.GenerateFromPassword([]byte(req.Password), bcrypt.DefaultCost); err != nil {
			return nil, -1, fmt.Errorf("hash password: %w", err)
		}
	}
	return nil, slot, nil
}

// passwordMatches compares req.Password with a room's hash, once per hash.
func (j *joining) passwordMatches(hash []byte) bool {
	if string(hash) != string(j.checked) {
		j.checked = hash
		j.matches = bcrypt.CompareHashAndPassword(hash, []byte(j.req.Password)) == nil
	}
	return j.matches
}

// resume tells the others that member mv is back. done is false when the
// room changed since v.
func (j *joining) resume(ctx context.Context, v roomView, mv memberView) (store.Joined, bool, error) {
	ctx, cancel := j.etcd(ctx)
	defer cancel()
	s, room := j.s, j.req.Room
	peers := v.others(mv.id)
	var ops []clientv3.Op
	if len(peers) > 0 {
		event := store.PeerJoinedFields(mv.id, mv.value.profile, true)
		ops = append(ops, s.entryOp(room, peers, false, 0, eventTail(event)))
	}
	start := time.Now()
	resp, err := s.client.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(s.keys.info(room)), "=", v.infoRev)).Then(ops...).Commit()
	s.metrics.observe("resume", start)
	if err != nil {
		return store.Joined{}, false, err
	}
	s.settle(ctx, resp.Header.Revision, start)
	if !resp.Succeeded {
		return store.Joined{}, false, nil
	}
	m := store.Member{Room: room, ID: mv.id}
	s.presence.Touch(m)
	return store.Joined{Member: m, Token: j.req.Token, Resumed: true, Peers: peers, Profiles: v.profiles(mv.id)}, true, nil
}

// resumeIdentity resumes member mv, whose identity the join's profile
// has: a fresh token in place of its old one (whose key goes, so that it
// authenticates nowhere; its readers are told by the watch), the profile
// the join brought, and a peer-joined entry with "resumed":true for the
// others. The room record is rewritten (its latest join kept), so that
// racing resumes of one member and joins are ordered by its comparison.
// done is false when the room changed since v.
func (j *joining) resumeIdentity(ctx context.Context, v roomView, mv memberView) (store.Joined, bool, error) {
	ctx, cancel := j.etcd(ctx)
	defer cancel()
	s, room := j.s, j.req.Room
	if j.token == "" {
		j.token = newSecret(24)
	}
	tokenHash := sha256.Sum256([]byte(j.token))
	info := v.info
	info.LastJoin = v.lastJoin
	info.Active = s.opts.Now().UnixNano()
	value := mv.value
	value.token, value.profile = tokenHash, j.req.Profile
	ops := []clientv3.Op{
		clientv3.OpPut(s.keys.info(room), encodeInfo(info)),
		clientv3.OpPut(s.keys.member(room, mv.id), value.encode()),
		clientv3.OpDelete(s.keys.token(mv.token)),
		clientv3.OpPut(s.keys.token(tokenHash), tokenValue(room, mv.id)),
	}
	peers := v.others(mv.id)
	if len(peers) > 0 {
		event := store.PeerJoinedFields(mv.id, value.profile, true)
		ops = append(ops, s.entryOp(room, peers, false, 0, eventTail(event)))
	}
	cmps := []clientv3.Cmp{
		clientv3.Compare(clientv3.ModRevision(s.keys.info(room)), "=", v.infoRev),
		clientv3.Compare(clientv3.CreateRevision(s.keys.member(room, mv.id)), "=", mv.joined),
	}
	start := time.Now()
	resp, err := s.client.Txn(ctx).If(cmps...).Then(ops...).Commit()
	s.metrics.observe("resume", start)
	if err != nil {
		return store.Joined{}, false, err
	}
	s.settle(ctx, resp.Header.Revision, start)
	if !resp.Succeeded {
		return store.Joined{}, false, nil
	}
	m := store.Member{Room: room, ID: mv.id}
	s.presence.Touch(m)
	return store.Joined{Member: m, Token: j.token, Resumed: true, Peers: peers, Profiles: v.profiles(mv.id)}, true, nil
}

// admit makes a new member. done is false when the room (or the place
// taken) changed since v.
func (j *joining) admit(ctx context.Context, v roomView, slot int) (store.Joined, bool, error) {
	ctx, cancel := j.etcd(ctx)
	defer cancel()
	s, room := j.s, j.req.Room
	if j.id == "" {
		j.id, j.token = newSecret(12), newSecret(24)
	}
	if j.lease == 0 {
		lease, fresh, err := s.presence.lease(ctx)
		if err != nil {
			return store.Joined{}, false, err
		}
		j.lease, j.fresh = lease, fresh
	}
	tokenHash := sha256.Sum256([]byte(j.token))
	now := s.opts.Now()
	info := roomInfo{Password: j.hash, Slot: nil, Created: now.UnixNano()}
	cmps := []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(s.keys.info(room)), "=", 0)}
	claimFrom := int64(0)
	if v.exists {
		info = v.info
		info.LastJoin = 0 // this join is the latest: the record's own revision
		claimFrom = v.lastJoin
		cmps = []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(s.keys.info(room)), "=", v.infoRev)}
	}
	info.Active = now.UnixNano()
	if slot >= 0 {
		info.Slot = &slot
		cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(s.keys.slot(slot)), "=", 0))
	}
	peers := v.others("")
	// Built in the group (groupcommit.go) that takes it, from its next
	// free index: the entry first, then the webhook events (so that seqs
	// and ids of one transaction differ).
	build := func(b *groupBatch) (*groupPart, error) {
		if s.mirror.changed(room, v) {
			return nil, nil // doomed: start over from the mirror as it is now
		}
		ops := []clientv3.Op{
			clientv3.OpPut(s.keys.info(room), encodeInfo(info)),
			// The member record before what hangs on it (the mirror applies in order).
			clientv3.OpPut(s.keys.member(room, j.id), memberValue{token: tokenHash, claimFrom: claimFrom, joined: now.UnixNano(), profile: j.req.Profile}.encode()),
			clientv3.OpPut(s.keys.ack(room, j.id), ackValue(0)),
			clientv3.OpPut(s.keys.token(tokenHash), tokenValue(room, j.id)),
			clientv3.OpPut(s.keys.live(room, j.id), "", clientv3.WithLease(j.lease)),
		}
		part := &groupPart{op: "join", cmps: cmps, entries: s.indexes(), exclusive: true, bytes: 512}
		if slot >= 0 {
			ops = append(ops, clientv3.OpPut(s.keys.slot(slot), room))
			part.puts = append(part.puts, s.keys.slot(slot))
		}
		if len(peers) > 0 {
			event := store.PeerJoinedFields(j.id, j.req.Profile, false)
			ops = append(ops, s.entryOp(room, peers, false, b.index, eventTail(event)))
		}
		if !v.exists {
			ops = s.eventOp(ops, b.index+1, store.EventData{Type: store.EventRoomCreated, Time: now, Room: room, Occupants: 1})
		}
		ops = s.eventOp(ops, b.index+2, store.EventData{Type: store.EventMemberJoined, Time: now, Room: room, ClientID: j.id, Profile: j.req.Profile, Occupants: len(peers) + 1})
		part.then = ops
		return part, nil
	}
	r := s.group.do(ctx, room, build)
	if errors.Is(r.err, errLeaseGone) {
		j.release() // its lease, or another part's, is gone: the next attempt takes another
		j.lease = 0
	}
	if r.err != nil {
		return store.Joined{}, false, groupErr(r.err)
	}
	if !r.sent || !r.resp.Succeeded {
		return store.Joined{}, false, nil
	}
	return j.admitted(v), true, nil
}

// admitted is the answer of a join whose member is in the room: v is the
// room before the join, or after it with the join's member in it.
func (j *joining) admitted(v roomView) store.Joined {
	m := store.Member{Room: j.req.Room, ID: j.id}
	j.s.presence.joined(m, j.fresh)
	j.lease = 0 // the member's now
	return store.Joined{Member: m, Token: j.token, Peers: v.others(j.id), Profiles: v.profiles(j.id)}
}

// release revokes the lease of a join that ends without its member (an
// error, a refusal): also when a transaction with it was sent. Such a
// transaction may still be waiting in a member that stopped (SIGSTOP, a
// paused VM) and be applied when it resumes, after the join was answered,
// in a room deleted and made anew meanwhile, whose only comparison is
// that the room does not exist: without its lease it fails as a whole
// (etcd refuses a put with a lease it does not know), and one applied
// already loses its live key and is reaped, rather than holding a seat
// nobody was given (the fault suite's 30-minute soak, StopLeader).
func (j *joining) release() {
	if j.lease != 0 {
		j.s.presence.revoke(j.lease)
	}
}

// Leave implements store.Store.
func (s *Store) Leave(ctx context.Context, m store.Member, reason store.Reason) (roomDeleted bool, err error) {
	if s.closed.Load() {
		return false, store.ErrClosed
	}
	octx, cancel := s.opContext(ctx)
	defer cancel()
	deleted, _, err := s.leave(octx, m, removal{reason: reason})
	if err != nil {
		return false, s.failure(ctx, "leave "+m.Room, err)
	}
	return deleted, nil
}

// removal says how leave removes a member.
type removal struct {
	reason store.Reason
	// silent: only if its live key is gone (its lease lapsed): the
	// removal for silence, which any instance may attempt and exactly one
	// makes.
	silent bool
	// tomb, for Kick: the member's token key becomes a tombstone on this
	// lease, and a member that is not there is store.ErrNotFound.
	tomb clientv3.LeaseID
}

// leave removes m. removed reports whether this call removed m.
func (s *Store) leave(ctx context.Context, m store.Member, how removal) (roomDeleted, removed bool, err error) {
	synced := how.silent // the removal for silence acts on the mirror's word
	maybe := false       // an attempt failed in a way that may have applied it
	for attempt := 0; ; attempt++ {
		v := s.mirror.view(m.Room)
		mv, ok := v.find(m.ID)
		if !ok && !synced {
			synced = true
			if err := s.catchUp(ctx); err != nil {
				return false, false, err
			}
			continue
		}
		if !ok && how.tomb != 0 {
			if maybe {
				return false, true, nil // gone: by this kick, as likely as not
			}
			return false, false, store.Refusef(store.ErrNotFound, "no member %q in room %q", m.ID, m.Room)
		}
		if !ok || (how.silent && mv.live) {
			s.forget(m)
			return false, false, nil
		}
		cmps := []clientv3.Cmp{
			clientv3.Compare(clientv3.ModRevision(s.keys.info(m.Room)), "=", v.infoRev),
			clientv3.Compare(clientv3.CreateRevision(s.keys.member(m.Room, m.ID)), "=", mv.joined),
		}
		if how.silent {
			cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(s.keys.live(m.Room, m.ID)), "=", 0))
		}
		// The token's key goes, or becomes the kicked member's tombstone.
		tokenOp := clientv3.OpDelete(s.keys.token(mv.token))
		if how.tomb != 0 {
			tokenOp = clientv3.OpPut(s.keys.token(mv.token), tombValue(true, m.Room, m.ID), clientv3.WithLease(how.tomb))
		}
		now := s.opts.Now()
		others := v.others(m.ID)
		// Built in the group (groupcommit.go) that takes it, from its
		// next free index.
		build := func(b *groupBatch) (*groupPart, error) {
			if s.mirror.changed(m.Room, v) {
				return nil, nil // doomed: start over from the mirror as it is now
			}
			part := &groupPart{op: "leave", cmps: cmps, entries: s.indexes(), exclusive: true, bytes: 512}
			var ops []clientv3.Op
			if len(others) == 0 {
				// The last member: the room goes, with everything in it.
				ops = []clientv3.Op{
					clientv3.OpDelete(s.keys.room(m.Room), clientv3.WithPrefix()),
					tokenOp,
				}
				if v.info.Slot != nil {
					ops = append(ops, clientv3.OpDelete(s.keys.slot(*v.info.Slot)))
					part.puts = append(part.puts, s.keys.slot(*v.info.Slot))
				}
			} else {
				info := v.info
				info.LastJoin = v.lastJoin
				info.Active = now.UnixNano()
				event := fmt.Appendf(nil, `"type":"peer-left","peer":%q,"reason":%q`, m.ID, how.reason)
				ops = []clientv3.Op{
					clientv3.OpDelete(s.keys.member(m.Room, m.ID)),
					clientv3.OpDelete(s.keys.ack(m.Room, m.ID)),
					clientv3.OpDelete(s.keys.live(m.Room, m.ID)),
					clientv3.OpDelete(s.keys.idems(m.Room, m.ID), clientv3.WithPrefix()),
					clientv3.OpDelete(s.keys.listens(m.Room, m.ID), clientv3.WithPrefix()),
					tokenOp,
					clientv3.OpPut(s.keys.info(m.Room), encodeInfo(info)),
					s.entryOp(m.Room, others, false, b.index, eventTail(event)),
				}
			}
			ops = s.eventOp(ops, b.index+1, store.EventData{Type: store.EventMemberLeft, Time: now, Room: m.Room, ClientID: m.ID,
				Profile: mv.value.profile, Reason: string(how.reason), Occupants: len(others)})
			if len(others) == 0 {
				ops = s.eventOp(ops, b.index+2, store.EventData{Type: store.EventRoomClosed, Time: now, Room: m.Room, Reason: "empty"})
			}
			part.then = ops
			return part, nil
		}
		r := s.group.do(ctx, m.Room, build)
		if r.err != nil {
			if r.sent && s.again(ctx, attempt, true, r.err) {
				maybe = maybe || !notApplied(r.err)
				continue
			}
			return false, false, groupErr(r.err)
		}
		if r.sent && r.resp.Succeeded {
			if !mv.shared {
				s.presence.revoke(clientv3.LeaseID(mv.lease))
			}
			s.forget(m)
			return len(others) == 0, true, nil
		}
		synced = true
	}
}

// indexes is how many of its group's indexes a join or a leave takes:
// one for its entry, and two for its webhook events (Options.Webhooks).
func (s *Store) indexes() int {
	if s.opts.Webhooks {
		return 3
	}
	return 1
}

// changed reports whether room's record is no longer the one v shows: a
// write built from v would fail its comparison.
func (mr *mirror) changed(room string, v roomView) bool {
	mr.mu.RLock()
	defer mr.mu.RUnlock()
	r := mr.rooms[room]
	if r == nil {
		return v.exists
	}
	return !v.exists || r.infoRev != v.infoRev
}

// forget drops what this instance holds for a member that is gone.
func (s *Store) forget(m store.Member) {
	s.acks.forget(m)
	s.presence.forget(m)
}

// Authenticate implements store.Store. A token the mirror does not know
// may be a member's that joined a moment ago on another instance: the
// mirror catches up before the token is refused.
func (s *Store) Authenticate(ctx context.Context, token string) (store.Member, error) {
	if s.closed.Load() {
		return store.Member{}, store.ErrClosed
	}
	began := time.Now()
	if err := s.ensureFresh(ctx); err != nil {
		return store.Member{}, err
	}
	hash := sha256.Sum256([]byte(token))
	fresh := s.freshSince(began) // then the mirror's no is final (messages.go)
	if m, ok := s.mirror.lookup(hash); ok {
		return m, nil
	}
	if fresh {
		return store.Member{}, s.unknownToken(hash)
	}
	octx, cancel := s.opContext(ctx)
	defer cancel()
	if err := s.catchUp(octx); err != nil {
		return store.Member{}, s.failure(ctx, "authenticate", err)
	}
	if m, ok := s.mirror.lookup(hash); ok {
		return m, nil
	}
	return store.Member{}, s.unknownToken(hash)
}

// unknownToken is the refusal of a token the mirror does not know.
func (s *Store) unknownToken(hash [32]byte) error {
	if kicked, ok := s.mirror.tombOfToken(hash); ok {
		return tombRefusal(kicked)
	}
	return store.ErrUnauthorized
}

// Occupants implements store.Store, from the mirror.
func (s *Store) Occupants(_ context.Context, room string) (int, error) {
	if s.closed.Load() {
		return 0, store.ErrClosed
	}
	return s.mirror.occupants(room), nil
}

func newSecret(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}
