package store

import (
	"sync"
	"time"
)

// Presence tracks, in the memory of one process, which members are alive,
// for an engine that decides timeouts in one place (one node). A member is
// alive while it holds a stream or poll open, and for the client timeout
// after its last request or its last stream's end.
type Presence struct {
	mu      sync.Mutex
	members map[Member]*liveness
	now     func() time.Time
}

type liveness struct {
	open int       // event streams and long-polls in progress
	last time.Time // last request, or last stream close
}

// NewPresence returns an empty tracker that reads the time from now.
func NewPresence(now func() time.Time) *Presence {
	return &Presence{members: map[Member]*liveness{}, now: now}
}

// Touch records a request by m; an unknown member starts being tracked.
func (p *Presence) Touch(m Member) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.get(m).last = p.now()
}

func (p *Presence) get(m Member) *liveness {
	l, ok := p.members[m]
	if !ok {
		l = &liveness{last: p.now()}
		p.members[m] = l
	}
	return l
}

// Hold records that m is listening until release is called.
func (p *Presence) Hold(m Member) (release func()) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.get(m).open++
	var once sync.Once
	return func() {
		once.Do(func() {
			p.mu.Lock()
			defer p.mu.Unlock()
			// A member that left while listening is gone: do not bring it back.
			if l, ok := p.members[m]; ok {
				l.open--
				l.last = p.now()
			}
		})
	}
}

// Forget stops tracking m: it left.
func (p *Presence) Forget(m Member) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.members, m)
}

// Silent lists members that have not listened for longer than timeout.
func (p *Presence) Silent(timeout time.Duration) []Member {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []Member
	cutoff := p.now().Add(-timeout)
	for m, l := range p.members {
		if l.silentSince(cutoff) {
			out = append(out, m)
		}
	}
	return out
}

// IsSilent reports whether m is tracked and has not listened for longer
// than timeout.
func (p *Presence) IsSilent(m Member, timeout time.Duration) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	l, ok := p.members[m]
	return ok && l.silentSince(p.now().Add(-timeout))
}

// silentSince: no stream or poll open, and nothing heard since cutoff.
func (l *liveness) silentSince(cutoff time.Time) bool { return l.open == 0 && l.last.Before(cutoff) }

// Counts reports the members tracked and their distinct rooms.
func (p *Presence) Counts() (members, rooms int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	seen := map[string]bool{}
	for m := range p.members {
		seen[m.Room] = true
	}
	return len(p.members), len(seen)
}
