package boltstore

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// registerMetrics registers the engine's metrics with reg (none if nil).
func (s *Store) registerMetrics(reg prometheus.Registerer) {
	if reg == nil {
		return
	}
	commitSeconds := prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "tincan_commit_seconds", Help: "Duration of one group commit (transaction and fsync).",
		Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
	})
	commitWrites := prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "tincan_commit_writes", Help: "Writes carried by one group commit.",
		Buckets: prometheus.ExponentialBuckets(1, 2, 11),
	})
	s.onBatch = func(n int, d time.Duration) {
		commitSeconds.Observe(d.Seconds())
		commitWrites.Observe(float64(n))
	}
	reg.MustRegister(commitSeconds, commitWrites,
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "tincan_messages_pruned_total", Help: "Retained messages deleted by pruning (acknowledged, expired, or of deleted rooms).",
		}, func() float64 { return float64(s.pruned.Load()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "tincan_members", Help: "Members of rooms."},
			func() float64 { n, _ := s.presence.Counts(); return float64(n) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "tincan_rooms", Help: "Rooms with members."},
			func() float64 { _, n := s.presence.Counts(); return float64(n) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "tincan_db_bytes", Help: "Size of the bbolt file."},
			func() float64 { return float64(s.fileSize()) }),
	)
}
