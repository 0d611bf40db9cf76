package iscsi

import (
	"bytes"
	"errors"
	"slices"
	"testing"
)

func TestParseText(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []textKV
		err  bool
	}{
		{"", nil, false},
		{"A=1\x00", []textKV{{"A", "1"}}, false},
		{"A=1\x00B=\x00", []textKV{{"A", "1"}, {"B", ""}}, false},
		{"A=1\x00\x00\x00B=x=y\x00", []textKV{{"A", "1"}, {"B", "x=y"}}, false},
		{"NoNul=1", []textKV{{"NoNul", "1"}}, false},
		{"X-com.example.k_1=v\x00", []textKV{{"X-com.example.k_1", "v"}}, false},
		{"=1\x00", nil, true},
		{"novalue\x00", nil, true},
		{"bad key=1\x00", nil, true},
		{string(bytes.Repeat([]byte("k"), 64)) + "=1\x00", nil, true},
		{"K=" + string(bytes.Repeat([]byte("v"), maxTextValue+1)), nil, true},
	} {
		got, err := parseText([]byte(tc.in))
		if (err != nil) != tc.err {
			t.Errorf("%q: err %v", tc.in, err)
			continue
		}
		if err != nil && !errors.Is(err, errTextSyntax) {
			t.Errorf("%q: %v is not errTextSyntax", tc.in, err)
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("%q: %v, want %v", tc.in, got, tc.want)
		}
	}
}

func TestParseNumber(t *testing.T) {
	for _, tc := range []struct {
		in string
		v  uint64
		ok bool
	}{
		{"0", 0, true}, {"262144", 262144, true}, {"0x10", 16, true}, {"0X1f", 31, true},
		{"", 0, false}, {"-1", 0, false}, {"1e3", 0, false}, {"0x", 0, false},
		{"99999999999999999999999", 0, false},
	} {
		v, ok := parseNumber(tc.in)
		if v != tc.v || ok != tc.ok {
			t.Errorf("parseNumber(%q) = %d %v", tc.in, v, ok)
		}
	}
}

// FuzzParseText checks that what parses re-encodes and parses the same.
func FuzzParseText(f *testing.F) {
	f.Add([]byte("InitiatorName=iqn.x\x00SessionType=Normal\x00"))
	f.Add([]byte("CHAP_C=0x0123\x00"))
	f.Fuzz(func(t *testing.T, b []byte) {
		kvs, err := parseText(b)
		if err != nil {
			return
		}
		var again []byte
		for _, kv := range kvs {
			again = appendText(again, kv.key, kv.value)
		}
		kvs2, err := parseText(again)
		if err != nil || !slices.Equal(kvs, kvs2) {
			t.Fatalf("re-parse: %v %v %v", err, kvs, kvs2)
		}
	})
}
