package turn

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/pion/logging"
)

const (
	// levelTrace is the slog level of pion's Trace messages.
	levelTrace = slog.LevelDebug - 4
	// pionLogsPerSecond bounds pion's messages at warn and error level:
	// some are triggered by any unauthenticated packet (an unknown
	// comprehension-required attribute is logged as an error).
	pionLogsPerSecond = 20
)

// newSlogFactory adapts a *slog.Logger to pion's logging.LoggerFactory.
// pion's Info messages are per-request events (a refused permission, a
// packet from a peer without permission) and are logged at debug level;
// warnings and errors pass at pionLogsPerSecond at most.
func newSlogFactory(log *slog.Logger) slogFactory {
	return slogFactory{log: log, limit: &logLimiter{}}
}

type slogFactory struct {
	log   *slog.Logger
	limit *logLimiter
}

func (f slogFactory) NewLogger(scope string) logging.LeveledLogger {
	return slogLogger{log: f.log.With("pion", scope), limit: f.limit}
}

type slogLogger struct {
	log   *slog.Logger
	limit *logLimiter
}

// logf formats a message only when its level is enabled: pion logs every
// relayed packet at debug level.
func (l slogLogger) logf(level slog.Level, format string, args ...any) {
	ctx := context.Background()
	if !l.log.Enabled(ctx, level) {
		return
	}
	if level > slog.LevelInfo && l.limit != nil {
		ok, suppressed := l.limit.allow(time.Now())
		if suppressed > 0 {
			l.log.Warn("suppressed pion log messages", "count", suppressed)
		}
		if !ok {
			return
		}
	}
	l.log.Log(ctx, level, fmt.Sprintf(format, args...))
}

func (l slogLogger) Trace(msg string)                  { l.logf(levelTrace, "%s", msg) }
func (l slogLogger) Tracef(format string, args ...any) { l.logf(levelTrace, format, args...) }
func (l slogLogger) Debug(msg string)                  { l.logf(slog.LevelDebug, "%s", msg) }
func (l slogLogger) Debugf(format string, args ...any) { l.logf(slog.LevelDebug, format, args...) }
func (l slogLogger) Info(msg string)                   { l.logf(slog.LevelDebug, "%s", msg) }
func (l slogLogger) Infof(format string, args ...any)  { l.logf(slog.LevelDebug, format, args...) }
func (l slogLogger) Warn(msg string)                   { l.logf(slog.LevelWarn, "%s", msg) }
func (l slogLogger) Warnf(format string, args ...any)  { l.logf(slog.LevelWarn, format, args...) }
func (l slogLogger) Error(msg string)                  { l.logf(slog.LevelError, "%s", msg) }
func (l slogLogger) Errorf(format string, args ...any) { l.logf(slog.LevelError, format, args...) }

// logLimiter admits pionLogsPerSecond messages per one-second window.
type logLimiter struct {
	mu         sync.Mutex
	window     time.Time
	n          int
	suppressed int
}

// allow reports whether a message may be logged now, and how many were
// suppressed in the window that just ended (to be reported once).
func (l *logLimiter) allow(now time.Time) (ok bool, suppressedBefore int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.window) >= time.Second {
		suppressedBefore = l.suppressed
		l.window, l.n, l.suppressed = now, 0, 0
	}
	if l.n >= pionLogsPerSecond {
		l.suppressed++
		return false, suppressedBefore
	}
	l.n++
	return true, suppressedBefore
}
