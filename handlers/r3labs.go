package handlers

import (
	"sync"

	"github.com/r3labs/sse/v2"
)

// The adapter to github.com/r3labs/sse/v2 (v2.10.0), which only formats and
// flushes frames here. What the library does, and so how it is used:
//
//   - Each r3labs stream has one goroutine that sends every event to each
//     subscriber's channel (64 slots) and blocks while one is full: one
//     stalled reader would stall everyone on its stream. So every
//     connection gets a stream of its own, fed with TryPublish, which never
//     blocks (it reports false when the stream's BufferSize is full).
//   - Its replay is an in-memory log that keeps every event for the life of
//     the stream and renumbers their ids; it also parses a Last-Event-ID
//     header itself, answering 400 to one that is not a number. Replay is
//     ours, from the store: AutoReplay is off, and the handler is given a
//     request without the client's headers.
//   - It takes the stream's name only from the ?stream= query parameter,
//     and answers 500 for an unknown stream (AutoStream off: streams are
//     made and removed by us) or for a ResponseWriter without Flush.
//   - Its handler waits for the request's context to end, then hands its
//     subscriber to the stream's goroutine; once the stream is removed
//     nothing takes it and that goroutine leaks for good. So a stream is
//     removed only after its ServeHTTP has returned.
//   - It changes the *Event it publishes: every publish takes a new one.
//   - A frame is written as "id:" (even when empty, which resets a
//     browser's lastEventId), "data:", "event:", "retry:" (these three
//     only with Data), then ": comment". An event with neither Data nor
//     Comment ends the client's connection: never publish one.
//   - It sends no heartbeat; a comment is the heartbeat (comments are not
//     kept in its log).
//   - It ignores write and flush errors: deadlineWriter notices them.
//   - Its OnSubscribe callback runs in a goroutine of its own after the
//     subscriber is registered; an event published before that reaches
//     nobody. subscriptions turns the callback into a channel.

// newEventServer returns the r3labs server of the event streams, which
// tells subs when each stream's connection is registered.
func newEventServer(subs *subscriptions) *sse.Server {
	srv := sse.NewWithCallback(func(id string, _ *sse.Subscriber) { subs.ready(id) }, nil)
	srv.AutoReplay = false // replay is ours, from the store
	srv.AutoStream = false
	srv.SplitData = true
	srv.BufferSize = 32
	srv.Headers = map[string]string{
		"Cache-Control":     "no-cache, no-transform",
		"X-Accel-Buffering": "no",
	}
	return srv
}

// subscriptions tells a stream when r3labs has registered its connection:
// events published to a stream before that are dropped.
type subscriptions struct{ m sync.Map } // stream id -> chan struct{}

// expect returns the channel closed once stream id's connection is
// registered. Call it before the stream is served.
func (s *subscriptions) expect(id string) <-chan struct{} {
	ch := make(chan struct{})
	s.m.Store(id, ch)
	return ch
}

// ready is r3labs' OnSubscribe callback.
func (s *subscriptions) ready(id string) {
	if ch, ok := s.m.LoadAndDelete(id); ok {
		close(ch.(chan struct{}))
	}
}

// forget drops what expect stored, for a stream that ended before it was
// registered.
func (s *subscriptions) forget(id string) { s.m.Delete(id) }
