package handlers

import (
	"sync"
	"time"

	"github.com/tincan/tincan/store"
)

// hub wakes the readers of a room (SSE feeders and long-polls) after a commit.
// A reader takes the room's channel *before* reading the store; a writer
// closes it *after* committing. So a reader either sees the new message in its
// read or is woken to read again: nothing is missed, and since every read
// starts after the last id sent, nothing is sent twice.
type hub struct {
	mu    sync.Mutex
	rooms map[string]chan struct{}
}

func newHub() *hub { return &hub{rooms: map[string]chan struct{}{}} }

// wait returns a channel that is closed at the next wake of room.
func (h *hub) wait(room string) <-chan struct{} {
	h.mu.Lock()
	defer h.mu.Unlock()
	ch, ok := h.rooms[room]
	if !ok {
		ch = make(chan struct{})
		h.rooms[room] = ch
	}
	return ch
}

// wake tells every reader of room to read again.
func (h *hub) wake(room string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if ch, ok := h.rooms[room]; ok {
		close(ch)
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
		l := p.get(m)
		l.open--
		l.last = p.now()
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
		if l.open == 0 && l.last.Before(cutoff) {
			out = append(out, m)
		}
	}
	return out
}

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
