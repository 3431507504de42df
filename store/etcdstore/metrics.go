package etcdstore

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the engine's: etcd round trips by operation, how far the
// mirror may be behind, lease renewals and lapses, members and rooms, and
// pruning.
type metrics struct {
	seconds       *prometheus.HistogramVec
	leaseRenewals prometheus.Counter
	leaseLapses   prometheus.Counter
	reloads       prometheus.Counter
	watchMoves    prometheus.Counter
	suspects      prometheus.Counter
	collectors    []prometheus.Collector
}

func newMetrics(s *Store, reg prometheus.Registerer) *metrics {
	m := &metrics{
		seconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "tincan_etcd_request_seconds",
			Help:    "Duration of one etcd round trip (a commit, for writes), by operation.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
		}, []string{"op"}),
		leaseRenewals: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tincan_etcd_lease_renewals_total", Help: "Member and instance leases renewed by this instance.",
		}),
		leaseLapses: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tincan_etcd_lease_lapses_total", Help: "Renewals that found their lease gone.",
		}),
		reloads: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tincan_etcd_reloads_total", Help: "Times the mirror was loaded again because its watch fell behind compaction.",
		}),
		watchMoves: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tincan_etcd_watch_moves_total", Help: "Times the watch did not follow the cluster and was opened again on another etcd member.",
		}),
		suspects: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tincan_etcd_member_silences_total", Help: "Times an etcd member left a request without an answer for the member timeout, and requests went to the others.",
		}),
	}
	m.collectors = []prometheus.Collector{m.seconds, m.leaseRenewals, m.leaseLapses, m.reloads, m.watchMoves, m.suspects,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "tincan_etcd_watch_lag_seconds",
			Help: "How long ago the mirror was last known to hold every change committed in etcd.",
		}, func() float64 { return s.staleness().Seconds() }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "tincan_etcd_revision", Help: "The etcd revision the mirror is at."},
			func() float64 { return float64(s.mirror.revision()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "tincan_messages_pruned_total", Help: "Retained messages deleted by this instance's pruning (acknowledged or expired).",
		}, func() float64 { return float64(s.pruned.Load()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "tincan_members", Help: "Members of rooms."},
			func() float64 { n, _ := s.mirror.counts(); return float64(n) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "tincan_rooms", Help: "Rooms with members."},
			func() float64 { _, n := s.mirror.counts(); return float64(n) }),
	}
	return m
}

// register registers the metrics with reg (none if nil).
func (m *metrics) register(reg prometheus.Registerer) {
	if reg != nil {
		reg.MustRegister(m.collectors...)
	}
}

// observe records an etcd round trip of op that began at start.
func (m *metrics) observe(op string, start time.Time) {
	m.seconds.WithLabelValues(op).Observe(time.Since(start).Seconds())
}
