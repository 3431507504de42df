package handlers

import "sync"

// streamRegistry admits event streams, lists the open ones (for the
// heartbeat and for Drain) and knows whether the server is draining. Once
// drain has begun it admits no stream, and drain returns when every stream
// it admitted has closed.
//
// A stream is admitted first, before anything is set up for it, so that a
// refusal is still a plain HTTP answer; it is added to the open streams
// once it can be ended. Both push their own undoing onto the stream's
// cleanups.
type streamRegistry struct {
	mu       sync.Mutex
	draining chan struct{} // closed when drain begins
	open     map[*eventStream]struct{}
	admitted sync.WaitGroup // admitted streams not yet closed
}

func newStreamRegistry() *streamRegistry {
	return &streamRegistry{draining: make(chan struct{}), open: map[*eventStream]struct{}{}}
}

// admit counts st in, unless drain has begun; it reports whether it did.
// drain waits for an admitted stream until it closes.
func (r *streamRegistry) admit(st *eventStream) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.isDraining() {
		return false
	}
	r.admitted.Add(1)
	st.onClose(r.admitted.Done)
	return true
}

// add lists an admitted st among the open streams until it closes. When
// drain has begun meanwhile, st is ended at once.
func (r *streamRegistry) add(st *eventStream) {
	r.mu.Lock()
	r.open[st] = struct{}{}
	late := r.isDraining()
	r.mu.Unlock()
	st.onClose(func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		delete(r.open, st)
	})
	if late {
		st.end()
	}
}

// list returns the open streams.
func (r *streamRegistry) list() []*eventStream {
	r.mu.Lock()
	defer r.mu.Unlock()
	list := make([]*eventStream, 0, len(r.open))
	for st := range r.open {
		list = append(list, st)
	}
	return list
}

// drain refuses new streams from now on, ends the open ones and waits until
// every admitted stream has closed. first is true for the call that began
// the drain.
func (r *streamRegistry) drain() (first bool) {
	r.mu.Lock()
	first = !r.isDraining()
	if first {
		close(r.draining)
	}
	r.mu.Unlock()
	for _, st := range r.list() {
		st.end()
	}
	r.admitted.Wait()
	return first
}

// stopping is closed when drain begins.
func (r *streamRegistry) stopping() <-chan struct{} { return r.draining }

// isDraining reports whether drain has begun.
func (r *streamRegistry) isDraining() bool {
	select {
	case <-r.draining:
		return true
	default:
		return false
	}
}
