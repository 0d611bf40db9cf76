package iscsi

// Text key=value encoding (RFC 7143 §6.1): the data segment of Login and
// Text PDUs is a sequence of "key=value" strings, each followed by one NUL.
// Keys are at most 63 bytes of [A-Za-z0-9.+@_-]; values are UTF-8 text of at
// most maxTextValue bytes (CHAP binary values are the long ones).

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

const (
	maxTextKey   = 63
	maxTextValue = 8192
)

var errTextSyntax = errors.New("malformed text key=value")

type textKV struct {
	key, value string
}

// parseText splits b into key=value pairs. Empty strings between NULs are
// skipped; a missing final NUL is tolerated.
func parseText(b []byte) ([]textKV, error) {
	var kvs []textKV
	for len(b) > 0 {
		i := 0
		for i < len(b) && b[i] != 0 {
			i++
		}
		s := b[:i]
		if i < len(b) {
			b = b[i+1:]
		} else {
			b = nil
		}
		if len(s) == 0 {
			continue
		}
		eq := -1
		for j, c := range s {
			if c == '=' {
				eq = j
				break
			}
		}
		if eq <= 0 {
			return nil, fmt.Errorf("%w: %q", errTextSyntax, truncate(string(s), 64))
		}
		key, val := s[:eq], s[eq+1:]
		if len(key) > maxTextKey || !validKey(key) {
			return nil, fmt.Errorf("%w: bad key %q", errTextSyntax, truncate(string(key), 64))
		}
		if len(val) > maxTextValue {
			return nil, fmt.Errorf("%w: value of %s too long (%d bytes)", errTextSyntax, key, len(val))
		}
		kvs = append(kvs, textKV{string(key), string(val)})
	}
	return kvs, nil
}

func validKey(k []byte) bool {
	for _, c := range k {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case c == '.', c == '-', c == '+', c == '@', c == '_':
		default:
			return false
		}
	}
	return true
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}

// appendText appends key=value\0 to b.
func appendText(b []byte, key, value string) []byte {
	b = append(b, key...)
	b = append(b, '=')
	b = append(b, value...)
	return append(b, 0)
}

// Value helpers.

func parseBool(v string) (bool, bool) {
	switch v {
	case "Yes":
		return true, true
	case "No":
		return false, true
	}
	return false, false
}

func boolStr(b bool) string {
	if b {
		return "Yes"
	}
	return "No"
}

// parseNumber parses a decimal, 0x-hex or 0b-base64 numeric value
// (RFC 7143 §6.1: numerical values are decimal or hex; we accept decimal and
// hex).
func parseNumber(v string) (uint64, bool) {
	if len(v) == 0 || len(v) > 20 {
		return 0, false
	}
	if strings.HasPrefix(v, "0x") || strings.HasPrefix(v, "0X") {
		n, err := strconv.ParseUint(v[2:], 16, 64)
		return n, err == nil
	}
	n, err := strconv.ParseUint(v, 10, 64)
	return n, err == nil
}
