package webhook

import (
	"testing"

	"go.uber.org/goleak"
)

// Every test stops what it started: Run's goroutines and requests end
// with its context.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
