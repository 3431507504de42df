package handlers

import (
	"errors"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/tincan/tincan/store"
)

// readBatch is the most messages one read of the store returns.
const readBatch = 256

func (s *Server) handlePost() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		m, err := s.member(r, false)
		if err != nil {
			fail(w, err)
			return
		}
		s.post(w, r, m)
	})
}

// post stores the message or batch of r's body from m (a member, or
// store.ServerID for the admin API) and answers its id or ids.
func (s *Server) post(w http.ResponseWriter, r *http.Request, m store.Member) {
	key := r.Header.Get("Idempotency-Key")
	if len(key) > 64 {
		fail(w, errorf(400, "bad_request", "Idempotency-Key is longer than 64 characters"))
		return
	}
	body, err := readBody(w, r, s.cfg.MaxBody)
	if err != nil {
		fail(w, err)
		return
	}
	msgs, batch, err := parseBatch(body)
	if err != nil {
		fail(w, err)
		return
	}
	p := store.Post{From: m, IdempotencyKey: key, Messages: make([]store.Draft, len(msgs))}
	for i, msg := range msgs {
		p.Messages[i] = store.Draft{To: msg.to, Fields: msg.fields}
	}
	start := time.Now()
	a, err := s.store.Append(r.Context(), p)
	if err != nil {
		if !batch {
			err = aloneRefusal(err)
		}
		fail(w, err)
		return
	}
	s.metrics.appendSeconds.Observe(time.Since(start).Seconds())
	if !a.Repeat {
		s.metrics.stored.Add(float64(len(a.IDs)))
	}
	if !batch {
		writeJSON(w, http.StatusCreated, "application/json", append(strconv.AppendUint([]byte(`{"id":`), a.ID, 10), '}'))
		return
	}
	// A batch: {"ids":[…]}, in the order posted.
	b := []byte(`{"ids":[`)
	for i, id := range a.IDs {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendUint(b, id, 10)
	}
	writeJSON(w, http.StatusCreated, "application/json", append(b, "]}"...))
}

// handlePoll is the long-poll: it answers at once when there is something
// for the client after since, or waits for it.
func (s *Server) handlePoll() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		m, err := s.member(r, true)
		if err != nil {
			fail(w, err)
			return
		}
		since, err := parseCursor(query(r, "since"))
		if err != nil {
			fail(w, err)
			return
		}
		wait, err := parseWait(query(r, "wait"), s.cfg.DefaultWait, s.cfg.MaxWait)
		if err != nil {
			fail(w, err)
			return
		}
		release, ok := s.openListener(w, r, m)
		if !ok {
			return
		}
		defer release()
		defer s.store.Hold(m)()
		s.metrics.pollsWaiting.Inc()
		defer s.metrics.pollsWaiting.Dec()

		timeout := time.NewTimer(wait)
		defer timeout.Stop()
		// Subscribed before the first read: a message committed after the
		// read is announced on woken.
		woken := make(chan struct{}, 1)
		var recheck atomic.Bool // m was removed or got a new token
		defer s.store.Subscribe(m, func(upto uint64) {
			if upto == 0 {
				recheck.Store(true)
			}
			select {
			case woken <- struct{}{}:
			default: // a wake-up is pending already
			}
		})()
		for first := true; ; first = false {
			// The first read acknowledges the cursor the client sent.
			if recheck.Swap(false) {
				err = s.stillMember(r.Context(), m, bearer(r, true))
			}
			var msgs []store.Message
			if err == nil {
				msgs, _, err = s.store.Read(r.Context(), m, store.ReadRequest{After: since, Limit: readBatch, Acknowledge: first})
			}
			if data := farewellOf(err, m.Room); data != nil {
				// The application removed the member while it waited:
				// the answer is the last message it gets.
				writePollAnswer(w, []store.Message{{Data: data}}, since, s.cfg.StallTimeout)
				return
			}
			if err != nil {
				// ErrUnauthorized: the member left or was removed while
				// waiting, a 401 as for a poll made after that. Anything
				// else is the store's failure: a 500, its cause logged.
				fail(w, err)
				return
			}
			if len(msgs) > 0 {
				s.metrics.deliveredPoll.Add(float64(len(msgs)))
				writePollAnswer(w, msgs, msgs[len(msgs)-1].ID, s.cfg.StallTimeout)
				return
			}
			select {
			case <-woken:
				continue
			case <-timeout.C:
			case <-r.Context().Done():
			case <-s.streams.stopping():
			}
			writePollAnswer(w, nil, since, s.cfg.StallTimeout)
			return
		}
	})
}

// writePollAnswer writes {"messages":[…],"next":M} from the stored bytes.
// It can be large (readBatch messages of up to MaxBody each): the client
// must take each piece of it within stall (writePaced).
func writePollAnswer(w http.ResponseWriter, msgs []store.Message, next uint64, stall time.Duration) {
	n := len(`{"messages":[],"next":18446744073709551615}` + "\n")
	for _, m := range msgs {
		n += len(m.Data) + 1
	}
	b := append(make([]byte, 0, n), `{"messages":[`...)
	for i, m := range msgs {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, m.Data...)
	}
	b = append(b, `],"next":`...)
	b = strconv.AppendUint(b, next, 10)
	b = append(b, "}\n"...)
	setJSONHeader(w.Header(), "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(http.StatusOK)
	writePaced(w, b, stall)
}

// aloneRefusal is a store's refusal of a post of one message, not a
// batch: the store names the message by its index ("message 0: …", index
// 0), which only a batch has.
func aloneRefusal(err error) error {
	var se *store.Error
	if !errors.As(err, &se) || se.Index == nil {
		return err
	}
	alone := *se
	alone.Index = nil
	alone.Msg = strings.TrimPrefix(se.Msg, "message 0: ")
	return &alone
}
