package handlers

import "sync/atomic"

// pendingFrames counts the frames handed to a stream's r3labs goroutine
// and not yet flushed, so that frames published together (the messages of
// a batch POST, a backlog) leave in one write to the socket instead of one
// each. It serves the target of fewer syscalls per delivered message
// (BENCHMARKS.md, calls with candidates in one batch): r3labs flushes after
// every frame, and a flush that knows more frames follow at once can wait
// for the last of them.
//
// publish counts a frame in before handing it over (queued) and out again
// if r3labs refuses it (dropped); each flush asks flushNow. A flush that is
// not a frame's (the head, a heartbeat) takes one count early, which costs
// only a write sooner: whenever no counted frame is left, the flush writes.
type pendingFrames struct{ n atomic.Int64 }

func (p *pendingFrames) queued()  { p.n.Add(1) }
func (p *pendingFrames) dropped() { p.n.Add(-1) }

// flushed reports whether every frame counted in has been flushed.
func (p *pendingFrames) flushed() bool { return p.n.Load() <= 0 }

// flushNow counts one frame out and reports whether the flush must write
// now: no frame published after it is still on its way.
func (p *pendingFrames) flushNow() bool {
	for {
		n := p.n.Load()
		if n <= 0 {
			return true
		}
		if p.n.CompareAndSwap(n, n-1) {
			return n == 1
		}
	}
}
