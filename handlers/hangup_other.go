//go:build !linux

package handlers

func newHangups() hangups { return readHangups{} }
