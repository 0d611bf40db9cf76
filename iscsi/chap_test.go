package iscsi

import (
	"bytes"
	"crypto/md5"
	"testing"
)

func TestCHAPResponse(t *testing.T) {
	id, secret, chal := byte(0x2a), "secret-0123456", []byte{1, 2, 3, 4, 5}
	want := md5.Sum(append(append([]byte{id}, secret...), chal...))
	got := chapResponse(id, secret, chal)
	if got != want {
		t.Fatalf("response %x, want %x", got, want)
	}
	if !chapVerify(id, secret, chal, want[:]) {
		t.Fatal("verify rejected the right response")
	}
	for _, bad := range [][]byte{want[:15], append(want[:], 0), make([]byte, 16)} {
		if chapVerify(id, secret, chal, bad) {
			t.Fatalf("verify accepted %x", bad)
		}
	}
	if chapVerify(id+1, secret, chal, want[:]) {
		t.Fatal("verify ignored the identifier")
	}
}

func TestDecodeBinary(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []byte
	}{
		{"0x0102ff", []byte{1, 2, 0xff}},
		{"0XABC", []byte{0x0a, 0xbc}},
		{"0bAQL/", []byte{1, 2, 0xff}},
		{"0bAQL", []byte{1, 2}},
	} {
		got, err := decodeBinary(tc.in)
		if err != nil || !bytes.Equal(got, tc.want) {
			t.Errorf("decodeBinary(%q) = %x %v", tc.in, got, err)
		}
	}
	for _, in := range []string{"", "0x", "12", "0xzz", "0b!!", "0x" + string(bytes.Repeat([]byte("00"), chapMaxBinary+1))} {
		if _, err := decodeBinary(in); err == nil {
			t.Errorf("decodeBinary(%q) accepted", in)
		}
	}
	if got := encodeHex([]byte{0xab, 1}); got != "0xAB01" {
		t.Errorf("encodeHex %s", got)
	}
}
