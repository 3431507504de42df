package boltstore

import (
	"strconv"
	"testing"
)

// FuzzAppendQuoted holds appendQuoted's fast path to strconv.AppendQuote.
func FuzzAppendQuoted(f *testing.F) {
	for _, s := range []string{"", "server", "Sg22zEka9os0xTmD", "a-b_c", `q"uote`, `back\slash`, "tab\t", "del\x7f", "é", "\xff", "nul\x00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if got, want := string(appendQuoted([]byte("x"), s)), "x"+strconv.Quote(s); got != want {
			t.Fatalf("appendQuoted(%q) = %s, want %s", s, got, want)
		}
	})
}
