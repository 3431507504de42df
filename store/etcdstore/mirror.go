package etcdstore

import (
	"cmp"
	"context"
	"slices"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/tincan/tincan/store"
)

// mirror is this instance's copy of the state under the prefix (all but
// secrets), as of revision rev: loaded by one range read at Open, then fed
// by one watch of the whole prefix (watch.go), event by event in revision
// order, so that it is always exactly the state of one revision. Reads,
// authentication and the checks of every write are answered from it;
// writes go to etcd in transactions that compare what the mirror showed
// (see rooms.go), so a mirror a few milliseconds behind can make a write
// retry but never makes it wrong.
type mirror struct {
	keys layout

	mu        sync.RWMutex
	rev       int64
	advanced  chan struct{} // closed and replaced whenever rev grows
	rooms     map[string]*room
	tokens    map[[32]byte]store.Member
	slots     map[int]string // MaxRooms place -> room
	instances map[string]bool
	// Tombstones: the token hashes and the members that Kick or CloseRoom
	// removed, while their token keys last (a lease of the client timeout).
	tombHashes map[[32]byte]tomb
	tombs      map[store.Member]bool  // kicked (true) or closed with the room (false)
	outbox     map[string]outboxEntry // etcd key -> undelivered event
	outboxSeq  map[uint64]string      // seq -> etcd key
}

type tomb struct {
	m      store.Member
	kicked bool
}

type outboxEntry struct {
	key   string
	event store.Event
}

type room struct {
	infoRev int64 // mod revision of the info record
	info    roomInfo
	members map[string]*member
	entries []*entry          // ascending id
	byKey   map[string]*entry // etcd key -> entry
	idem    map[string]idemRecord
	// lastEntry is the newest entry's time this mirror saw (unix nanos):
	// the room's last activity with info.Active; kept when entries go.
	lastEntry  int64
	seqVersion int64 // of the room's seq key (keys.go; messages.go)
}

// lastJoin is the revision of the room's latest join.
func (r *room) lastJoin() int64 {
	if r.info.LastJoin != 0 {
		return r.info.LastJoin
	}
	return r.infoRev
}

type member struct {
	id     string
	joined int64 // create revision of the member record: the join order
	value  memberValue
	acked  uint64
	live   bool  // its live key exists
	lease  int64 // the live key's lease
	shared bool  // that lease is a restart's, shared by many members
	// lapsed: when this instance saw the live key go (or a reload found
	// it missing); zero while live.
	lapsed time.Time
	// listening: the instances with a listen key for the member.
	listening map[string]bool
}

// owns reports whether the member is the one an entry kept for the next
// joiner went to: the first member to join after the entry was made.
// Claim windows of successive joiners do not overlap (each starts at the
// join before it), so exactly one joiner ever owns a kept entry.
func (m *member) owns(e *entry) bool {
	rev := revisionOf(e.id)
	return m.value.claimFrom < rev && rev < m.joined
}

// for reports whether e is addressed to m.
func (m *member) isFor(e *entry) bool {
	if e.kept {
		return m.owns(e)
	}
	return slices.Contains(e.to, m.id)
}

type entry struct {
	id      uint64
	key     string
	created int64 // unix nanoseconds
	kept    bool  // no recipient when made: for the next joiner
	to      []string
	data    []byte // as delivered; never changed
}

type idemRecord struct {
	key     string // etcd key
	id      uint64 // the post's first
	n       int    // messages of the post
	created int64
	modRev  int64
}

func newMirror(keys layout) *mirror {
	return &mirror{
		keys:      keys,
		advanced:  make(chan struct{}),
		rooms:     map[string]*room{},
		tokens:    map[[32]byte]store.Member{},
		slots:     map[int]string{},
		instances: map[string]bool{},

		tombHashes: map[[32]byte]tomb{},
		tombs:      map[store.Member]bool{},
		outbox:     map[string]outboxEntry{},
		outboxSeq:  map[uint64]string{},
	}
}

// wake is a notification owed to subscribers once a change is applied:
// the given members of room (every subscriber of room when all is set).
type wake struct {
	room string
	upto uint64
	ids  []string
	all  bool
}

// revision is the revision the mirror is at.
func (mr *mirror) revision() int64 {
	mr.mu.RLock()
	defer mr.mu.RUnlock()
	return mr.rev
}

// wait blocks until the mirror is at rev or later, or ctx ends; it
// reports whether the mirror got there.
func (mr *mirror) wait(ctx context.Context, rev int64) bool {
	for {
		mr.mu.RLock()
		at, ch := mr.rev, mr.advanced
		mr.mu.RUnlock()
		if at >= rev {
			return true
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return false
		}
	}
}

// advance moves the mirror to rev. Called with mu held.
func (mr *mirror) advance(rev int64) {
	if rev > mr.rev {
		mr.rev = rev
		close(mr.advanced)
		mr.advanced = make(chan struct{})
	}
}

// progress records that every change up to rev has been applied (a
// progress notification of the watch).
func (mr *mirror) progress(rev int64) {
	mr.mu.Lock()
	defer mr.mu.Unlock()
	mr.advance(rev)
}

// load replaces the whole mirror with kvs, the state at revision rev, and
// returns a room-wide wake for every room before or after (after a reload
// nobody knows what changed, and a reader woken for nothing reads nothing)
// and the members without a live key.
func (mr *mirror) load(kvs []*mvccpb.KeyValue, rev int64) (wakes []wake, lapsed []store.Member) {
	// Rooms and members first, so that what hangs on them finds them.
	order := func(kv *mvccpb.KeyValue) int {
		switch mr.keys.parse(kv.Key).kind {
		case kindInfo:
			return 0
		case kindMember:
			return 1
		}
		return 2
	}
	kvs = slices.Clone(kvs)
	slices.SortStableFunc(kvs, func(a, b *mvccpb.KeyValue) int { return cmp.Compare(order(a), order(b)) })

	mr.mu.Lock()
	defer mr.mu.Unlock()
	for name := range mr.rooms {
		wakes = append(wakes, wake{room: name, all: true})
	}
	mr.rooms = map[string]*room{}
	mr.tokens = map[[32]byte]store.Member{}
	mr.slots = map[int]string{}
	mr.instances = map[string]bool{}
	mr.tombHashes = map[[32]byte]tomb{}
	mr.tombs = map[store.Member]bool{}
	mr.outbox = map[string]outboxEntry{}
	mr.outboxSeq = map[uint64]string{}
	for _, kv := range kvs {
		mr.put(kv, nil)
	}
	now := time.Now()
	for name, r := range mr.rooms {
		slices.SortFunc(r.entries, func(a, b *entry) int { return cmp.Compare(a.id, b.id) })
		wakes = append(wakes, wake{room: name, all: true})
		for _, m := range r.members {
			if !m.live {
				m.lapsed = now
				lapsed = append(lapsed, store.Member{Room: name, ID: m.id})
			}
		}
	}
	mr.advance(rev)
	return wakes, lapsed
}

// apply applies one watch response's events (whole transactions, in
// revision order). It returns the wakes owed, the members whose live
// key went (their lease lapsed) and whether events came to the outbox.
func (mr *mirror) apply(events []*clientv3.Event) (wakes []wake, lapsed []store.Member, outboxed bool) {
	mr.mu.Lock()
	defer mr.mu.Unlock()
	var rev int64
	for _, ev := range events {
		if ev.Kv.ModRevision <= mr.rev {
			// Applied already: a watch that moved to another member
			// replays nothing it is not asked to, but etcd has sent old
			// events after such a move (etcd#20221).
			continue
		}
		rev = max(rev, ev.Kv.ModRevision)
		if ev.Type == clientv3.EventTypePut {
			if mr.put(ev.Kv, &wakes) == kindOutbox {
				outboxed = true
			}
		} else {
			mr.remove(ev.Kv, &wakes, &lapsed)
		}
	}
	mr.advance(rev)
	return wakes, lapsed, outboxed
}

func (mr *mirror) room(name string, create bool) *room {
	r := mr.rooms[name]
	if r == nil && create {
		r = &room{members: map[string]*member{}, byKey: map[string]*entry{}, idem: map[string]idemRecord{}}
		mr.rooms[name] = r
	}
	return r
}

// put applies a new or changed key and returns its kind. Values that do
// not decode are left out: they were not written by this engine.
func (mr *mirror) put(kv *mvccpb.KeyValue, wakes *[]wake) kind {
	p := mr.keys.parse(kv.Key)

	owe := func(w wake) {
		if wakes != nil {
			*wakes = append(*wakes, w)
		}
	}
	switch p.kind {
	case kindInfo:
		if info, err := decodeInfo(kv.Value); err == nil {
			r := mr.room(p.room, true)
			r.info, r.infoRev = info, kv.ModRevision
		}
	case kindMember:
		v, ok := decodeMember(kv.Value)
		if !ok {
			return p.kind
		}
		r := mr.room(p.room, true)
		if old := r.members[p.id]; old != nil && old.joined == kv.CreateRevision {
			// Rewritten: a resume by identity (a new token, perhaps a new
			// profile). Its readers check their token again.
			changed := old.value.token != v.token
			old.value = v
			if changed {
				owe(wake{room: p.room, ids: []string{p.id}})
			}
			return p.kind
		}
		m := &member{id: p.id, joined: kv.CreateRevision, value: v}
		r.members[p.id] = m
		// What was kept for the next joiner is its own now.
		var upto uint64
		for _, e := range r.entries {
			if e.kept && m.owns(e) {
				upto = e.id
			}
		}
		if upto > 0 {
			owe(wake{room: p.room, upto: upto, ids: []string{p.id}})
		}
	case kindSeq:
		if r := mr.rooms[p.room]; r != nil {
			r.seqVersion = kv.Version
		}
	case kindAck:
		if m := mr.member(p.room, p.id); m != nil {
			m.acked = max(m.acked, decodeAck(kv.Value))
		}
	case kindLive:
		if m := mr.member(p.room, p.id); m != nil {
			m.live, m.lease, m.shared, m.lapsed = true, kv.Lease, string(kv.Value) == sharedLease, time.Time{}
		}
	case kindMsg:
		v, err := decodeMsg(kv.Value)
		if err != nil {
			return p.kind
		}
		r := mr.room(p.room, true)
		key := string(kv.Key)
		if _, ok := r.byKey[key]; ok {
			return p.kind // entries are never rewritten
		}
		r.lastEntry = max(r.lastEntry, v.created)
		e := &entry{id: entryID(kv.CreateRevision, v.index), key: key, created: v.created, kept: v.kept, to: v.recipients}
		e.data = deliver(e.id, v.tail)
		r.byKey[key] = e
		if n := len(r.entries); n == 0 || r.entries[n-1].id < e.id {
			r.entries = append(r.entries, e)
		} else {
			i, _ := slices.BinarySearchFunc(r.entries, e.id, func(x *entry, id uint64) int { return cmp.Compare(x.id, id) })
			r.entries = slices.Insert(r.entries, i, e)
		}
		if len(e.to) > 0 {
			owe(wake{room: p.room, upto: e.id, ids: e.to})
		}
	case kindIdem:
		if created, index, n, ok := decodeIdem(kv.Value); ok {
			mr.room(p.room, true).idem[p.id+"/"+p.rest] = idemRecord{
				key: string(kv.Key), id: entryID(kv.ModRevision, index), n: n, created: created, modRev: kv.ModRevision,
			}
		}
	case kindToken:
		if hash, ok := parseHash(p.rest); ok {
			if m, kicked, ok := decodeTomb(kv.Value); ok {
				delete(mr.tokens, hash)
				mr.tombHashes[hash] = tomb{m, kicked}
				mr.tombs[m] = kicked
			} else if room, id, ok := splitMember(kv.Value); ok {
				mr.tokens[hash] = store.Member{Room: room, ID: id}
			}
		}
	case kindListen:
		if m := mr.member(p.room, p.id); m != nil {
			if m.listening == nil {
				m.listening = map[string]bool{}
			}
			m.listening[p.rest] = true
		}
	case kindOutbox:
		if o, ok := decodeOutbox(kv.Value); ok {
			key := string(kv.Key)
			e := o.event(p.room, kv.CreateRevision)
			mr.outbox[key] = outboxEntry{key: key, event: e}
			mr.outboxSeq[e.Seq] = key
		}
	case kindSlot:
		if n, ok := parseSlot(p.rest); ok {
			mr.slots[n] = string(kv.Value)
		}
	case kindInstance:
		mr.instances[p.rest] = true
	}
	return p.kind
}

func (mr *mirror) remove(kv *mvccpb.KeyValue, wakes *[]wake, lapsed *[]store.Member) {
	p := mr.keys.parse(kv.Key)
	switch p.kind {
	case kindInfo:
		delete(mr.rooms, p.room) // the room is deleted; its other keys go in the same transaction
	case kindMember:
		if r := mr.rooms[p.room]; r != nil {
			delete(r.members, p.id)
		}
		*wakes = append(*wakes, wake{room: p.room, ids: []string{p.id}}) // its readers end
	case kindLive:
		if m := mr.member(p.room, p.id); m != nil {
			m.live, m.lease, m.shared, m.lapsed = false, 0, false, time.Now()
			*lapsed = append(*lapsed, store.Member{Room: p.room, ID: p.id})
		}
	case kindMsg:
		r := mr.rooms[p.room]
		if r == nil {
			return
		}
		e, ok := r.byKey[string(kv.Key)]
		if !ok {
			return
		}
		delete(r.byKey, e.key)
		if i, found := slices.BinarySearchFunc(r.entries, e.id, func(x *entry, id uint64) int { return cmp.Compare(x.id, id) }); found {
			r.entries = slices.Delete(r.entries, i, i+1)
		}
	case kindIdem:
		if r := mr.rooms[p.room]; r != nil {
			delete(r.idem, p.id+"/"+p.rest)
		}
	case kindToken:
		if hash, ok := parseHash(p.rest); ok {
			delete(mr.tokens, hash)
			if t, ok := mr.tombHashes[hash]; ok {
				delete(mr.tombHashes, hash)
				delete(mr.tombs, t.m)
			}
		}
	case kindListen:
		if m := mr.member(p.room, p.id); m != nil {
			delete(m.listening, p.rest)
		}
	case kindOutbox:
		key := string(kv.Key)
		if e, ok := mr.outbox[key]; ok {
			delete(mr.outbox, key)
			delete(mr.outboxSeq, e.event.Seq)
		}
	case kindSlot:
		if n, ok := parseSlot(p.rest); ok {
			delete(mr.slots, n)
		}
	case kindInstance:
		delete(mr.instances, p.rest)
	}
}

func (mr *mirror) member(room, id string) *member {
	if r := mr.rooms[room]; r != nil {
		return r.members[id]
	}
	return nil
}

// roomView is a room as the mirror shows it at revision rev, copied out
// for a write to build its transaction from.
type roomView struct {
	rev      int64
	exists   bool
	infoRev  int64
	info     roomInfo
	lastJoin int64
	members  []memberView // in join order
}

type memberView struct {
	id     string
	joined int64
	token  [32]byte
	lease  int64
	live   bool
	shared bool
	value  memberValue // the whole record: claim window, join time, profile
}

// byIdentity finds the member whose profile has identity (not "").
func (v roomView) byIdentity(identity string) (memberView, bool) {
	for _, m := range v.members {
		if identity != "" && m.value.profile.Identity == identity {
			return m, true
		}
	}
	return memberView{}, false
}

// profiles lists the profiles of the members but id, in join order (the
// order of others).
func (v roomView) profiles(id string) []store.Profile {
	out := make([]store.Profile, 0, len(v.members))
	for _, m := range v.members {
		if m.id != id {
			out = append(out, m.value.profile)
		}
	}
	return out
}

func (v roomView) find(id string) (memberView, bool) {
	for _, m := range v.members {
		if m.id == id {
			return m, true
		}
	}
	return memberView{}, false
}

// others lists the members but id, in join order.
func (v roomView) others(id string) []string {
	out := make([]string, 0, len(v.members))
	for _, m := range v.members {
		if m.id != id {
			out = append(out, m.id)
		}
	}
	return out
}

func (mr *mirror) view(name string) roomView {
	mr.mu.RLock()
	defer mr.mu.RUnlock()
	v := roomView{rev: mr.rev}
	r := mr.rooms[name]
	if r == nil {
		return v
	}
	v.exists, v.infoRev, v.info, v.lastJoin = true, r.infoRev, r.info, r.lastJoin()
	for _, m := range r.members {
		v.members = append(v.members, memberView{id: m.id, joined: m.joined, token: m.value.token, lease: m.lease, live: m.live, shared: m.shared, value: m.value})
	}
	slices.SortFunc(v.members, func(a, b memberView) int { return cmp.Compare(a.joined, b.joined) })
	return v
}

// idemKey finds an idempotency key of member id in room.
func (mr *mirror) idemKey(room, id, key string) (idemRecord, bool) {
	mr.mu.RLock()
	defer mr.mu.RUnlock()
	if r := mr.rooms[room]; r != nil {
		rec, ok := r.idem[id+"/"+key]
		return rec, ok
	}
	return idemRecord{}, false
}

// lookup finds the member a token hash belongs to.
func (mr *mirror) lookup(hash [32]byte) (store.Member, bool) {
	mr.mu.RLock()
	defer mr.mu.RUnlock()
	m, ok := mr.tokens[hash]
	if ok && mr.member(m.Room, m.ID) == nil {
		return store.Member{}, false
	}
	return m, ok
}

// read returns up to limit entries for m after its cursor, max(after,
// acknowledged, unsaved), made after oldest (unix nanoseconds). ok is
// false when m is not a member.
func (mr *mirror) read(m store.Member, after, unsaved uint64, oldest int64, limit int) (msgs []store.Message, cursor, acked uint64, ok bool) {
	mr.mu.RLock()
	defer mr.mu.RUnlock()
	r := mr.rooms[m.Room]
	if r == nil {
		return nil, 0, 0, false
	}
	mm := r.members[m.ID]
	if mm == nil {
		return nil, 0, 0, false
	}
	acked = max(mm.acked, unsaved)
	cursor = max(after, acked)
	i, _ := slices.BinarySearchFunc(r.entries, cursor+1, func(x *entry, id uint64) int { return cmp.Compare(x.id, id) })
	for _, e := range r.entries[i:] {
		if len(msgs) == limit {
			break
		}
		if e.created > oldest && mm.isFor(e) {
			msgs = append(msgs, store.Message{ID: e.id, Data: e.data})
		}
	}
	return msgs, cursor, acked, true
}

// acked is m's acknowledgement as the mirror shows it.
func (mr *mirror) acked(m store.Member) (joined int64, acked uint64, ok bool) {
	mr.mu.RLock()
	defer mr.mu.RUnlock()
	if mm := mr.member(m.Room, m.ID); mm != nil {
		return mm.joined, mm.acked, true
	}
	return 0, 0, false
}

// occupants is the number of members of a room.
func (mr *mirror) occupants(room string) int {
	mr.mu.RLock()
	defer mr.mu.RUnlock()
	if r := mr.rooms[room]; r != nil {
		return len(r.members)
	}
	return 0
}

// freeSlots lists the places among the first n that no room holds.
func (mr *mirror) freeSlots(n int) []int {
	mr.mu.RLock()
	defer mr.mu.RUnlock()
	var free []int
	for i := range n {
		if _, taken := mr.slots[i]; !taken {
			free = append(free, i)
		}
	}
	return free
}

// otherInstances is the number of running instances but self.
func (mr *mirror) otherInstances(self string) int {
	mr.mu.RLock()
	defer mr.mu.RUnlock()
	n := len(mr.instances)
	if mr.instances[self] {
		n--
	}
	return n
}

// memberRef names a member with its join revision, which a transaction
// compares to make sure it is the same member still.
type memberRef struct {
	store.Member
	joined int64
	lease  int64
	live   bool
	shared bool
	lapsed time.Time // see member
}

// members lists every member; only the silent ones (no live key) with
// silentOnly.
func (mr *mirror) members(silentOnly bool) []memberRef {
	mr.mu.RLock()
	defer mr.mu.RUnlock()
	var out []memberRef
	for name, r := range mr.rooms {
		for _, m := range r.members {
			if !silentOnly || !m.live {
				out = append(out, memberRef{Member: store.Member{Room: name, ID: m.id}, joined: m.joined, lease: m.lease, live: m.live, shared: m.shared, lapsed: m.lapsed})
			}
		}
	}
	return out
}

// presence is m's membership and live key as the mirror shows it.
func (mr *mirror) presence(m store.Member) (memberRef, bool) {
	mr.mu.RLock()
	defer mr.mu.RUnlock()
	mm := mr.member(m.Room, m.ID)
	if mm == nil {
		return memberRef{}, false
	}
	return memberRef{Member: m, joined: mm.joined, lease: mm.lease, live: mm.live, shared: mm.shared, lapsed: mm.lapsed}, true
}

// prunable lists the keys of entries that nobody will receive any more
// (every recipient acknowledged them or left; or they were made at oldest
// or before), and of idempotency keys made at oldest or before.
func (mr *mirror) prunable(oldest int64) (entries, idem []string) {
	mr.mu.RLock()
	defer mr.mu.RUnlock()
	acked := func(m *member) uint64 { return m.acked }
	for _, r := range mr.rooms {
		lastJoin := r.lastJoin()
		for _, e := range r.entries {
			if e.created <= oldest || r.delivered(e, lastJoin, acked) {
				entries = append(entries, e.key)
			}
		}
		for _, rec := range r.idem {
			if rec.created <= oldest {
				idem = append(idem, rec.key)
			}
		}
	}
	return entries, idem
}

// retained is the number of a room's entries that someone will still
// receive: made after oldest, and not acknowledged by every recipient (as
// the mirror shows it, or as unsaved says).
func (mr *mirror) retained(name string, oldest int64, unsaved func(store.Member) uint64) int {
	mr.mu.RLock()
	defer mr.mu.RUnlock()
	r := mr.rooms[name]
	if r == nil {
		return 0
	}
	acked := func(m *member) uint64 { return max(m.acked, unsaved(store.Member{Room: name, ID: m.id})) }
	lastJoin, n := r.lastJoin(), 0
	for _, e := range r.entries {
		if e.created > oldest && !r.delivered(e, lastJoin, acked) {
			n++
		}
	}
	return n
}

// delivered reports whether every recipient of e acknowledged it or left.
// An entry kept for the next joiner has a recipient once someone joined
// after it: that joiner, a member still or not.
func (r *room) delivered(e *entry, lastJoin int64, acked func(*member) uint64) bool {
	if e.kept {
		if lastJoin < revisionOf(e.id) {
			return false // nobody joined since: still kept
		}
		for _, m := range r.members {
			if m.owns(e) {
				return acked(m) >= e.id
			}
		}
		return true // its owner left
	}
	for _, id := range e.to {
		if m := r.members[id]; m != nil && acked(m) < e.id {
			return false
		}
	}
	return true
}

// counts reports the members and rooms, for the metrics.
func (mr *mirror) counts() (members, rooms int) {
	mr.mu.RLock()
	defer mr.mu.RUnlock()
	for _, r := range mr.rooms {
		members += len(r.members)
	}
	return members, len(mr.rooms)
}
