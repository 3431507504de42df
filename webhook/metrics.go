package webhook

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	pending   prometheus.Gauge
	delivered prometheus.Counter
	retries   prometheus.Counter
	dropped   prometheus.Counter
	latency   prometheus.Histogram
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		pending: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tincan_webhook_events_pending",
			Help: "Webhook events in the outbox that this instance knows of and has not delivered yet (0 while it does not hold the outbox).",
		}),
		delivered: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tincan_webhook_delivered_total",
			Help: "Webhook events the receiver answered with a 2xx.",
		}),
		retries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tincan_webhook_retries_total",
			Help: "Webhook attempts that repeat an earlier failed attempt of the same event.",
		}),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tincan_webhook_dropped_total",
			Help: "Webhook events given up: older than the maximum age, or answered 410 Gone.",
		}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "tincan_webhook_delivery_seconds",
			Help:    "From the change an event reports to the receiver's 2xx.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 3600, 21600, 86400},
		}),
	}
	if reg != nil {
		cs := []prometheus.Collector{m.pending, m.delivered, m.retries, m.dropped, m.latency}
		for i, c := range cs {
			if err := reg.Register(c); err != nil {
				for _, r := range cs[:i] {
					reg.Unregister(r)
				}
				return nil, err
			}
		}
	}
	return m, nil
}
