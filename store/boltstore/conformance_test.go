package boltstore_test

import (
	"path/filepath"
	"testing"

	"github.com/tincan/tincan/store"
	"github.com/tincan/tincan/store/boltstore"
	"github.com/tincan/tincan/store/storetest"
)

// The bbolt engine keeps every promise of store.Store.
func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) storetest.Opener {
		path := filepath.Join(t.TempDir(), "conformance.db")
		return func(opts store.Options) (store.Store, error) {
			return boltstore.Open(path, boltstore.Options{Options: opts})
		}
	})
}
