package main

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"testing"

	"github.com/pierrec/lz4/v4"
)

const bs = 4096

func randomBlock(seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e37))
	b := make([]byte, bs)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// textBlock is compressible: a repeated phrase with a counter.
func textBlock(n int) []byte {
	var buf bytes.Buffer
	for i := 0; buf.Len() < bs; i++ {
		buf.WriteString("the quick brown fox jumps over the lazy dog ")
		buf.WriteByte(byte('0' + (i+n)%10))
	}
	return buf.Bytes()[:bs]
}

func lz4Size(t *testing.T, b []byte) int64 {
	t.Helper()
	var c lz4.Compressor
	dst := make([]byte, lz4.CompressBlockBound(len(b)))
	n, err := c.CompressBlock(b, dst)
	if err != nil {
		t.Fatal(err)
	}
	if n == 0 || n >= len(b) {
		return int64(len(b))
	}
	return int64(n)
}

func concat(bs ...[]byte) []byte { return bytes.Join(bs, nil) }

func TestAnalyze(t *testing.T) {
	zero := make([]byte, bs)
	a, b := randomBlock(1), randomBlock(2)
	txt := textBlock(0)
	txtLZ4 := lz4Size(t, txt)
	if txtLZ4 >= bs/2 {
		t.Fatalf("test data: text block should compress well, got %d", txtLZ4)
	}
	tests := []struct {
		name  string
		in    []byte
		want  Result
		dedup float64
		ceil  float64
	}{
		{
			name: "empty",
			in:   nil,
			want: Result{BlockBytes: bs},
		},
		{
			name: "all zero",
			in:   concat(zero, zero, zero),
			want: Result{BlockBytes: bs, LogicalBytes: 3 * bs, Blocks: 3, ZeroBlocks: 3},
		},
		{
			name: "random blocks duplicated, one zero",
			in:   concat(a, a, a, zero, b),
			want: Result{BlockBytes: bs, LogicalBytes: 5 * bs, Blocks: 5, ZeroBlocks: 1, UniqueBlocks: 2,
				LZ4Bytes: 4 * bs, UniqueLZ4Bytes: 2 * bs},
			dedup: 2.5,
			ceil:  2.5,
		},
		{
			name: "compressible duplicated",
			in:   concat(txt, txt, a),
			want: Result{BlockBytes: bs, LogicalBytes: 3 * bs, Blocks: 3, UniqueBlocks: 2,
				LZ4Bytes: 2*txtLZ4 + bs, UniqueLZ4Bytes: txtLZ4 + bs},
			dedup: 1.5,
			ceil:  float64(3*bs) / float64(txtLZ4+bs),
		},
		{
			// A short tail is padded with zeros: the same as the full block
			// when the missing bytes are zero anyway.
			name: "short tail is zero padded",
			in:   concat(a, a[:100]),
			want: Result{BlockBytes: bs, LogicalBytes: 2 * bs, Blocks: 2, UniqueBlocks: 2,
				LZ4Bytes: bs + lz4Size(t, concat(a[:100], zero[100:])), UniqueLZ4Bytes: bs + lz4Size(t, concat(a[:100], zero[100:]))},
		},
	}
	for _, tc := range tests {
		for _, workers := range []int{1, 3} {
			got, err := Analyze(bytes.NewReader(tc.in), Config{Workers: workers})
			if err != nil {
				t.Fatalf("%s: %v", tc.name, err)
			}
			if got != tc.want {
				t.Errorf("%s (workers=%d):\n got  %+v\n want %+v", tc.name, workers, got, tc.want)
			}
			if tc.dedup != 0 && got.DedupRatio() != tc.dedup {
				t.Errorf("%s: dedup ratio %v, want %v", tc.name, got.DedupRatio(), tc.dedup)
			}
			if tc.ceil != 0 && got.CeilingRatio() != tc.ceil {
				t.Errorf("%s: ceiling %v, want %v", tc.name, got.CeilingRatio(), tc.ceil)
			}
		}
	}
}

// TestAnalyzeManyChunks crosses many work units so that out-of-order
// completion is exercised: the result must not depend on the worker count.
func TestAnalyzeManyChunks(t *testing.T) {
	var in []byte
	for i := 0; i < 3*chunkBlocks+17; i++ {
		switch i % 4 {
		case 0:
			in = append(in, randomBlock(uint64(i%40))...) // 10 distinct, repeated
		case 1:
			in = append(in, make([]byte, bs)...)
		case 2:
			in = append(in, textBlock(i%7)...) // 7 distinct (mod 10 counters collapse)
		default:
			in = append(in, randomBlock(uint64(1000+i))...) // unique
		}
	}
	ref, err := Analyze(bytes.NewReader(in), Config{Workers: 1, HC: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range []int{2, 4, 8} {
		got, err := Analyze(bytes.NewReader(in), Config{Workers: w, HC: true})
		if err != nil {
			t.Fatal(err)
		}
		if got != ref {
			t.Fatalf("workers=%d: %+v, want %+v", w, got, ref)
		}
	}
	if ref.ZeroBlocks != int64((3*chunkBlocks+17+2)/4) {
		t.Errorf("zero blocks %d", ref.ZeroBlocks)
	}
	if ref.UniqueHCBytes == 0 || ref.UniqueHCBytes > ref.UniqueLZ4Bytes {
		t.Errorf("HC bytes %d should be in (0, %d]", ref.UniqueHCBytes, ref.UniqueLZ4Bytes)
	}
}

func TestAnalyzeLimits(t *testing.T) {
	in := bytes.Repeat(randomBlock(9), 10)
	_, err := Analyze(bytes.NewReader(in), Config{MaxBlocks: 5})
	if !errors.Is(err, ErrTooManyBlocks) {
		t.Fatalf("err = %v, want ErrTooManyBlocks", err)
	}
	if _, err := Analyze(bytes.NewReader(in), Config{BlockBytes: 100}); err == nil {
		t.Fatal("block size 100 accepted")
	}
}

func BenchmarkAnalyze(b *testing.B) {
	var in []byte
	for i := 0; i < 4*chunkBlocks; i++ {
		if i%2 == 0 {
			in = append(in, textBlock(i)...)
		} else {
			in = append(in, randomBlock(uint64(i))...)
		}
	}
	b.SetBytes(int64(len(in)))
	for b.Loop() {
		if _, err := Analyze(bytes.NewReader(in), Config{}); err != nil {
			b.Fatal(err)
		}
	}
}
