package handlers

import (
	"strconv"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	requests       *prometheus.CounterVec
	byCode         sync.Map // status code -> prometheus.Counter of requests
	streams        prometheus.Gauge
	pollsWaiting   prometheus.Gauge
	stored         prometheus.Counter
	deliveredSSE   prometheus.Counter
	deliveredPoll  prometheus.Counter
	evicted        prometheus.Counter
	appendSeconds  prometheus.Histogram
	guessesFailed  prometheus.Counter
	guessesRefused prometheus.Counter

	joinTokensRefused prometheus.Counter // bad_jwt
	adminKeysRefused  prometheus.Counter // a wrong admin key
}

func newMetrics(reg *prometheus.Registry) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tincan_http_requests_total", Help: "HTTP requests by status code.",
		}, []string{"code"}),
		streams: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tincan_streams_open", Help: "Open SSE event streams.",
		}),
		pollsWaiting: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tincan_polls_waiting", Help: "Long-polls in progress.",
		}),
		stored: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tincan_messages_stored_total", Help: "Messages posted and committed to disk.",
		}),

		evicted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tincan_streams_evicted_total", Help: "SSE streams closed because their reader stopped reading.",
		}),
		appendSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "tincan_append_seconds", Help: "Time from a post reaching the store to its commit on disk.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
		}),
	}
	delivered := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tincan_messages_delivered_total", Help: "Messages handed to clients, by transport.",
	}, []string{"transport"})
	m.deliveredSSE = delivered.WithLabelValues("sse") // resolved once: counted per delivery
	m.deliveredPoll = delivered.WithLabelValues("poll")
	guesses := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tincan_password_guesses_total", Help: "Joins with a wrong room password (failed), and joins refused before any password check for too many of those (refused).",
	}, []string{"outcome"})
	m.guessesFailed = guesses.WithLabelValues("failed")
	m.guessesRefused = guesses.WithLabelValues("refused")
	refused := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tincan_auth_refused_total", Help: "Join tokens refused (join_token: bad_jwt) and wrong admin keys (admin_key).",
	}, []string{"credential"})
	m.joinTokensRefused = refused.WithLabelValues("join_token")
	m.adminKeysRefused = refused.WithLabelValues("admin_key")
	reg.MustRegister(refused)
	// The store registers its own: commits, pruning, members, its size.
	reg.MustRegister(m.requests, m.streams, m.pollsWaiting, m.stored, delivered, m.evicted, m.appendSeconds, guesses)
	return m
}

// request counts a request answered with code. The counter of each code is
// looked up once: a label lookup on every request costs an allocation.
func (m *metrics) request(code int) {
	if c, ok := m.byCode.Load(code); ok {
		c.(prometheus.Counter).Inc()
		return
	}
	c, _ := m.byCode.LoadOrStore(code, m.requests.WithLabelValues(strconv.Itoa(code)))
	c.(prometheus.Counter).Inc()
}
