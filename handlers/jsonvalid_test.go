package handlers

import (
	"encoding/json"
	"strings"
	"testing"
)

// FuzzValidJSON holds validJSON to encoding/json.Valid on any input.
func FuzzValidJSON(f *testing.F) {
	for _, s := range []string{
		``, ` `, `{}`, `[]`, `{"a":1}`, `{"a":[1,2,{"b":null}],"c":"d\u00e9\n"}`, `[1,]`, `{"a":1,}`, `{,}`, `{"a"}`, `{"a":}`,
		`"\u12"`, `"\uZZZZ"`, `"\x"`, "\"a\tb\"", `-0.5e+10`, `01`, `-`, `1.`, `1e`, `.5`, `1E-3`, `true`, `tru`, `nul`, `false `,
		`[1] [2]`, `"abc`, `{"a":1}}`, "\xff", `"\ud800"`, ` {"type" : "x" } `, `[[[[]]]]`, `[[[[]]]`, `{"a":{"b":{"c":[true,false,null]}}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if got, want := validJSON(b), json.Valid(b); got != want {
			t.Fatalf("validJSON(%q) = %v, json.Valid says %v", b, got, want)
		}
	})
}

// The nesting limit is encoding/json's: 10,000 levels pass, 10,001 do not.
func TestValidJSONDepth(t *testing.T) {
	for _, depth := range []int{9999, 10000, 10001, 20000} {
		for _, open := range []string{"[", `{"a":`} {
			close := map[string]string{"[": "]", `{"a":`: "}"}[open]
			b := []byte(strings.Repeat(open, depth) + "1" + strings.Repeat(close, depth))
			if got, want := validJSON(b), json.Valid(b); got != want {
				t.Errorf("depth %d of %s: validJSON %v, json.Valid %v", depth, open, got, want)
			}
		}
	}
}

// BenchmarkValidJSON: the pingpong body, checked by validJSON and by
// json.Valid.
func BenchmarkValidJSON(b *testing.B) {
	body := []byte(benchBody)
	b.Run("validJSON", func(b *testing.B) {
		b.SetBytes(int64(len(body)))
		for b.Loop() {
			validJSON(body)
		}
	})
	b.Run("json.Valid", func(b *testing.B) {
		b.SetBytes(int64(len(body)))
		for b.Loop() {
			json.Valid(body)
		}
	})
}
