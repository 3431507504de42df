package handlers

import "time"

// deliveryLinger is how long a stream's delivery goroutine waits for the
// next kick before it ends. It serves issue 20's target of half the CPU per
// delivered message: a goroutine started per kick grows its stack again for
// every message (runtime.copystack was ~5 % of the server's instructions
// per message, BENCHMARKS §10), while a conversation kicks its streams every
// few milliseconds. An idle stream still holds no goroutine of ours once
// the linger has passed (issue 4's cheap idle streams).
const deliveryLinger = time.Second

// linger waits up to deliveryLinger for kick to hand this goroutine the
// next delivery. It reports false when the goroutine should end: the
// linger passed, or the stream is ending.
//
// The hand-over is an unbuffered send, so it happens only while this
// goroutine is blocked here; a kick that finds no goroutine waiting starts
// one. Either way the kick that took pending from 0 to 1 gives the
// delivery to exactly one goroutine, and the others only linger.
func (st *eventStream) linger(t *time.Timer) bool {
	t.Reset(deliveryLinger)
	select {
	case <-st.handover:
		return true
	case <-t.C:
	case <-st.ctx.Done():
	}
	return false
}

// startDelivery gives the delivery to a lingering goroutine, or to a new one.
func (st *eventStream) startDelivery() {
	select {
	case st.handover <- struct{}{}:
	default:
		st.deliveries.Add(1)
		go st.run()
	}
}
