package handlers

import (
	"errors"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// deadlineWriter gives every write to the network a deadline, so that no
// write blocks for longer than the stall timeout, and can evict the reader:
// then every write fails at once.
type deadlineWriter struct {
	http.ResponseWriter
	rc      *http.ResponseController
	timeout time.Duration
	evicted atomic.Bool
	armed   bool // a deadline is set for the frame being written
	once    sync.Once
	failed  func(stalled bool) // called once, at the first failed write
	frames  pendingFrames      // published and not yet flushed (coalesce.go)

	mu       sync.Mutex // orders evict and release
	released bool       // the handler is done with the ResponseWriter
}

func (d *deadlineWriter) Write(p []byte) (int, error) {
	if d.evicted.Load() {
		return 0, errEvicted
	}
	d.arm()
	n, err := d.ResponseWriter.Write(p)
	d.check(err)
	return n, err
}

// Flush sends the frame and then lifts the deadline: an idle stream must not
// be cut for having sent nothing (HTTP/2 resets a stream when its deadline
// passes, write or not).
func (d *deadlineWriter) Flush() {
	if d.evicted.Load() || !d.frames.flushNow() {
		return // evicted; or a frame published after this one will flush both
	}
	d.arm()
	err := d.rc.Flush()
	d.check(err)
	if err == nil && !d.evicted.Load() {
		d.rc.SetWriteDeadline(time.Time{})
		d.armed = false
	}
}

// arm sets the deadline once per frame (r3labs writes a frame in several
// pieces). Only the stream's writing goroutine calls it.
func (d *deadlineWriter) arm() {
	if !d.armed {
		d.rc.SetWriteDeadline(time.Now().Add(d.timeout))
		d.armed = true
	}
}

// check ends the stream at the first failed write: net/http keeps the error,
// so every later frame would be lost.
func (d *deadlineWriter) check(err error) {
	if err != nil {
		d.fail(errors.Is(err, os.ErrDeadlineExceeded))
	}
}

// fail marks the writer failed and reports it, once.
func (d *deadlineWriter) fail(stalled bool) {
	d.evicted.Store(true)
	d.once.Do(func() { d.failed(stalled) })
}

// evict unblocks a write stuck on a full TCP buffer and fails later ones.
// Any goroutine may call it, at any time.
func (d *deadlineWriter) evict() {
	d.evicted.Store(true)
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.released {
		d.rc.SetWriteDeadline(time.Now())
	}
}

// release is called when the writing is over, before the handler returns:
// an HTTP/2 ResponseWriter must not be used after that, so a later evict
// leaves it alone.
func (d *deadlineWriter) release() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.released = true
}

func (d *deadlineWriter) Unwrap() http.ResponseWriter { return d.ResponseWriter }

var errEvicted = errors.New("reader evicted")
