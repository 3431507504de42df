package store

// Helpers for engines building what Append answers.

// Repeated is the answer to a repeated idempotency key: the first post's
// n ids from first on, nothing stored. Both engines give a post's
// messages ids that follow each other, so its key keeps only the first
// and the count.
func Repeated(first uint64, n int) Appended {
	ids := make([]uint64, n)
	for i := range ids {
		ids[i] = first + uint64(i)
	}
	return Appended{ID: first, IDs: ids, Repeat: true}
}

// Union lists the members of lists, each once, in the order first seen:
// the Recipients of a post whose messages went to lists.
func Union(lists [][]string) []string {
	if len(lists) == 1 {
		return lists[0]
	}
	var out []string
	seen := map[string]bool{}
	for _, l := range lists {
		for _, m := range l {
			if !seen[m] {
				seen[m] = true
				out = append(out, m)
			}
		}
	}
	return out
}
