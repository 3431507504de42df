package store

import "sync"

// Watchers is a set of functions to call when something happens, for an
// engine's OutboxChanged. The zero value is ready to use.
type Watchers struct {
	mu   sync.Mutex
	next int
	fs   map[int]func()
}

// Add registers f; after cancel returns, f is not called again.
func (w *Watchers) Add(f func()) (cancel func()) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.fs == nil {
		w.fs = map[int]func(){}
	}
	id := w.next
	w.next++
	w.fs[id] = f
	return func() {
		w.mu.Lock()
		defer w.mu.Unlock()
		delete(w.fs, id)
	}
}

// Notify calls every registered function, with the lock held so that a
// cancel is final. The functions must not block.
func (w *Watchers) Notify() {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, f := range w.fs {
		f()
	}
}
