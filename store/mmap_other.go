//go:build !linux

package store

const mmapFlags = 0
