package handlers

import (
	"strconv"
	"unicode/utf8"
)

// maxBatch is the most messages one POST may carry.
const maxBatch = 64

// parseBatch validates a posted body: a JSON object (one message) or an
// array of 1..maxBatch objects (a batch), each validated exactly as
// parseMessage does. A refusal of an element names its index, in the
// detail and as the problem's index member; an empty array, one past
// maxBatch, or an element that is no object is bad_message. batch
// reports whether the body was an array, whose answer is {"ids":[…]}.
func parseBatch(body []byte) (msgs []message, batch bool, err error) {
	if !utf8.Valid(body) {
		return nil, false, errorf(400, "bad_json", "body is not valid UTF-8")
	}
	if !validJSON(body) {
		return nil, false, errorf(400, "bad_json", "body is not valid JSON")
	}
	i := skipSpace(body, 0)
	if body[i] != '[' {
		m, err := parseValidMessage(body)
		if err != nil {
			return nil, false, err
		}
		return []message{m}, false, nil
	}
	for i = skipSpace(body, i+1); body[i] != ']'; {
		end := valueEnd(body, i)
		if len(msgs) == maxBatch {
			return nil, true, errorf(400, "bad_message", "a batch holds at most %d messages", maxBatch)
		}
		index := len(msgs)
		m, err := parseValidMessage(body[i:end])
		if body[i] != '{' {
			err = errorf(400, "bad_message", "an element of a batch must be a JSON object")
		}
		if err != nil {
			if e, ok := err.(*apiError); ok {
				e.detail = "message " + strconv.Itoa(index) + ": " + e.detail
				e.index = &index
			}
			return nil, true, err
		}
		msgs = append(msgs, m)
		if i = skipSpace(body, end); body[i] == ',' {
			i = skipSpace(body, i+1)
		}
	}
	if len(msgs) == 0 {
		return nil, true, errorf(400, "bad_message", "a batch holds at least one message")
	}
	return msgs, true, nil
}
