package bench

import (
	"sync"
	"time"
)

// ledger accounts for every bench message of one room: registered when it is
// posted, struck off when it arrives. One still outstanding when its sender
// gives up waiting is lost; arriving after that, it is late (and stays lost).
type ledger struct {
	mu      sync.Mutex
	next    uint64
	pending map[uint64]time.Time // seq -> when its post started
	lost    map[uint64]bool
}

func newLedger() *ledger { return &ledger{pending: map[uint64]time.Time{}} }

// arrival says what became of a message that arrived.
type arrival int

const (
	arrivedOK         arrival = iota
	arrivedLate               // after it was counted lost
	arrivedDuplicate          // it had arrived already
	arrivedUnexpected         // nobody sent it
)

// send registers a message about to be posted and returns its seq.
func (l *ledger) send(now time.Time) uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.next++
	l.pending[l.next] = now
	return l.next
}

// cancel forgets a message whose post failed: it is not expected.
func (l *ledger) cancel(seq uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.pending, seq)
}

// arrive strikes off seq and returns when it was sent.
func (l *ledger) arrive(seq uint64) (time.Time, arrival) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if sent, ok := l.pending[seq]; ok {
		delete(l.pending, seq)
		return sent, arrivedOK
	}
	switch {
	case l.lost[seq]:
		delete(l.lost, seq)
		return time.Time{}, arrivedLate
	case seq >= 1 && seq <= l.next:
		return time.Time{}, arrivedDuplicate
	default:
		return time.Time{}, arrivedUnexpected
	}
}

// expire counts every message still outstanding as lost.
func (l *ledger) expire() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := len(l.pending)
	if n == 0 {
		return 0
	}
	if l.lost == nil {
		l.lost = map[uint64]bool{}
	}
	for seq := range l.pending {
		l.lost[seq] = true
		delete(l.pending, seq)
	}
	return n
}

// outstanding is the number of messages posted and not yet arrived.
func (l *ledger) outstanding() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.pending)
}
