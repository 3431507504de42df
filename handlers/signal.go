package handlers

import (
	"slices"
	"sync"
	"time"

	"github.com/tincan/tincan/store"
)

// hub wakes readers (event streams and long-polls) after a commit. A reader
// takes its channel (a stream: registers itself) *before* reading the store;
// a writer wakes it *after* committing. So a reader either sees the new
// message in its read or is woken to read again: nothing is missed, and
// since every read starts after the last id sent, nothing is sent twice. A
// post wakes only its recipients; joins and leaves wake the whole room.
type hub struct {
	mu      sync.Mutex
	rooms   map[string]map[string]chan struct{}  // room -> client id -> channel
	streams map[string]map[string][]*eventStream // room -> client id -> open streams
}

func newHub() *hub {
	return &hub{rooms: map[string]map[string]chan struct{}{}, streams: map[string]map[string][]*eventStream{}}
}

// listen kicks st at every wake of m until unlisten.
func (h *hub) listen(m store.Member, st *eventStream) {
	h.mu.Lock()
	defer h.mu.Unlock()
	members := h.streams[m.Room]
	if members == nil {
		members = map[string][]*eventStream{}
		h.streams[m.Room] = members
	}
	members[m.ID] = append(members[m.ID], st)
}

func (h *hub) unlisten(m store.Member, st *eventStream) {
	h.mu.Lock()
	defer h.mu.Unlock()
	members := h.streams[m.Room]
	if rest := slices.DeleteFunc(members[m.ID], func(o *eventStream) bool { return o == st }); len(rest) > 0 {
		members[m.ID] = rest
	} else {
		delete(members, m.ID)
	}
	if len(members) == 0 {
		delete(h.streams, m.Room)
	}
}

// wait returns a channel that is closed at the next wake of m.
func (h *hub) wait(m store.Member) <-chan struct{} {
	h.mu.Lock()
	defer h.mu.Unlock()
	members := h.rooms[m.Room]
	if members == nil {
		members = map[string]chan struct{}{}
		h.rooms[m.Room] = members
	}
	ch, ok := members[m.ID]
	if !ok {
		ch = make(chan struct{})
		members[m.ID] = ch
	}
	return ch
}

// wake tells the readers of the given members of room to read again; with
// no ids, every reader of the room.
func (h *hub) wake(room string, ids ...string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	members := h.rooms[room]
	if len(ids) == 0 {
		for _, streams := range h.streams[room] {
			for _, st := range streams {
				st.kick()
			}
		}
		for _, ch := range members {
			close(ch)
		}
		delete(h.rooms, room)
		return
	}
	for _, id := range ids {
		for _, st := range h.streams[room][id] {
			st.kick()
		}
		if ch, ok := members[id]; ok {
			close(ch)
			delete(members, id)
		}
	}
	if len(members) == 0 {
		delete(h.rooms, room)
	}
}

// presence tracks, in memory, which members are listening, to remove those
// who went silent. After a restart every member starts afresh: it gets the
// whole client timeout to come back.
type presence struct {
	mu      sync.Mutex
	members map[store.Member]*liveness
	now     func() time.Time
}

type liveness struct {
	open int       // event streams and long-polls in progress
	last time.Time // last request, or last stream close
}

func newPresence(now func() time.Time) *presence {
	return &presence{members: map[store.Member]*liveness{}, now: now}
}

// touch records a request by m.
func (p *presence) touch(m store.Member) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.get(m).last = p.now()
}

func (p *presence) get(m store.Member) *liveness {
	l, ok := p.members[m]
	if !ok {
		l = &liveness{last: p.now()}
		p.members[m] = l
	}
	return l
}

// open records that m is listening until the returned func is called.
func (p *presence) open(m store.Member) (closed func()) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.get(m).open++
	return func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		// A member that left while listening is gone: do not bring it back.
		if l, ok := p.members[m]; ok {
			l.open--
			l.last = p.now()
		}
	}
}

func (p *presence) forget(m store.Member) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.members, m)
}

// silent lists members that have not listened for longer than timeout.
func (p *presence) silent(timeout time.Duration) []store.Member {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []store.Member
	cutoff := p.now().Add(-timeout)
	for m, l := range p.members {
		if l.silentSince(cutoff) {
			out = append(out, m)
		}
	}
	return out
}

// isSilent reports whether m has not listened for longer than timeout.
func (p *presence) isSilent(m store.Member, timeout time.Duration) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	l, ok := p.members[m]
	return ok && l.silentSince(p.now().Add(-timeout))
}

// silentSince: no stream or poll open, and nothing heard since cutoff.
func (l *liveness) silentSince(cutoff time.Time) bool { return l.open == 0 && l.last.Before(cutoff) }

// counts reports members and distinct rooms, for metrics.
func (p *presence) counts() (members, rooms int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	seen := map[string]bool{}
	for m := range p.members {
		seen[m.Room] = true
	}
	return len(p.members), len(seen)
}
