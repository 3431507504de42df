package store

import (
	"slices"
	"sync"
)

// Notifier is the change notification of a Store: subscribers are members'
// live readers (event streams, long-polls), and the engine notifies after
// each commit. Engines embed one and call Notify once a change is visible
// to Read, never before: so a reader that subscribes, then reads, either
// sees the change in its read or is notified and reads again. Nothing is
// missed, and since a reader always reads after the last id it sent,
// nothing is sent twice.
//
// The zero Notifier is ready for use.
type Notifier struct {
	mu    sync.Mutex
	rooms map[string]map[string][]*subscription // room -> client id -> subscribers
}

type subscription struct{ f func(upto uint64) }

// Subscribe implements Store.Subscribe.
func (n *Notifier) Subscribe(m Member, f func(upto uint64)) (cancel func()) {
	sub := &subscription{f: f}
	n.mu.Lock()
	if n.rooms == nil {
		n.rooms = map[string]map[string][]*subscription{}
	}
	members := n.rooms[m.Room]
	if members == nil {
		members = map[string][]*subscription{}
		n.rooms[m.Room] = members
	}
	members[m.ID] = append(members[m.ID], sub)
	n.mu.Unlock()
	return func() { n.cancel(m, sub) }
}

func (n *Notifier) cancel(m Member, sub *subscription) {
	n.mu.Lock()
	defer n.mu.Unlock()
	members := n.rooms[m.Room]
	if rest := slices.DeleteFunc(members[m.ID], func(o *subscription) bool { return o == sub }); len(rest) > 0 {
		members[m.ID] = rest
	} else {
		delete(members, m.ID)
	}
	if len(members) == 0 {
		delete(n.rooms, m.Room)
	}
}

// Notify calls the subscribers of the given members of room with upto;
// with no ids, every subscriber in the room. Subscribers are called with
// the Notifier's lock held, which is what makes cancel final; they must
// not block.
func (n *Notifier) Notify(room string, upto uint64, ids ...string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	members := n.rooms[room]
	if len(ids) == 0 {
		for _, subs := range members {
			for _, sub := range subs {
				sub.f(upto)
			}
		}
		return
	}
	for _, id := range ids {
		for _, sub := range members[id] {
			sub.f(upto)
		}
	}
}
