package devsb

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

func sample() *Superblock {
	return &Superblock{
		Kind: KindSSD, Generation: 7, ArrayID: [16]byte{1, 2, 3}, DeviceID: [16]byte{9, 8, 7},
		Slot: 3, Devices: 8, AUSize: 1 << 20, Capacity: 1 << 30, Epoch: 0,
		Cur:   KeySlot{Gen: 2, Threshold: 6, Sealed: true, AKShare: bytes.Repeat([]byte{1}, 33), DEKPart: bytes.Repeat([]byte{2}, 41), WrappedMediaKey: bytes.Repeat([]byte{3}, 40)},
		Prev:  KeySlot{Gen: 1, Threshold: 6, AKShare: []byte{4}, DEKPart: []byte{5}, WrappedMediaKey: []byte{6}},
		Extra: []byte("x"),
	}
}

func TestRoundTrip(t *testing.T) {
	sb := sample()
	b, err := sb.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if len(b) != Size {
		t.Fatalf("len %d", len(b))
	}
	got, err := Unmarshal(b)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, sb) {
		t.Fatalf("got %+v\nwant %+v", got, sb)
	}
}

func TestRejects(t *testing.T) {
	b, _ := sample().Marshal()
	for _, tc := range []struct {
		name string
		mut  func([]byte)
		want error
	}{
		{"magic", func(b []byte) { b[0] = 'X' }, ErrBadMagic},
		{"version", func(b []byte) { b[8] = 9 }, ErrVersion},
		{"bitflip", func(b []byte) { b[100] ^= 1 }, ErrChecksum},
	} {
		c := bytes.Clone(b)
		tc.mut(c)
		if _, err := Unmarshal(c); !errors.Is(err, tc.want) {
			t.Errorf("%s: got %v want %v", tc.name, err, tc.want)
		}
	}
}

func TestReadPicksNewestAndSurvivesTornCopy(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "dev"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sb := sample()
	sb.Generation = 0
	for i := 0; i < 3; i++ {
		sb.Epoch = uint64(i)
		if err := Write(f, sb); err != nil {
			t.Fatal(err)
		}
	}
	got, err := Read(f)
	if err != nil || got.Generation != 3 || got.Epoch != 2 {
		t.Fatalf("got %+v %v", got, err)
	}
	// Tear the newest copy: the previous one must be returned.
	if _, err := f.WriteAt(make([]byte, 100), int64(3%Copies)*Size+50); err != nil {
		t.Fatal(err)
	}
	got, err = Read(f)
	if err != nil || got.Generation != 2 || got.Epoch != 1 {
		t.Fatalf("after tear: got %+v %v", got, err)
	}
	// Tear both: a clear error naming both copies.
	if _, err := f.WriteAt(make([]byte, 100), int64(2%Copies)*Size+50); err != nil {
		t.Fatal(err)
	}
	if _, err := Read(f); !errors.Is(err, ErrChecksum) {
		t.Fatalf("want checksum error, got %v", err)
	}
}

func FuzzUnmarshal(f *testing.F) {
	b, _ := sample().Marshal()
	f.Add(b)
	f.Add(make([]byte, Size))
	f.Fuzz(func(t *testing.T, data []byte) {
		if _, err := Unmarshal(data); err == nil && len(data) >= Size && !bytes.Equal(data[:8], magic[:]) {
			t.Fatal("accepted a copy without magic")
		}
		if len(data) < Size {
			data = append(data, make([]byte, Size-len(data))...)
		}
		sb, err := decodeFields(data[:Size])
		if err != nil {
			return
		}
		out, err := sb.Marshal()
		if err != nil {
			t.Fatalf("decoded superblock does not re-encode: %v", err)
		}
		if _, err := Unmarshal(out); err != nil {
			t.Fatalf("re-encoded superblock does not decode: %v", err)
		}
	})
}
