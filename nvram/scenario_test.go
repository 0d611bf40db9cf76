package nvram

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// putRecord seals a record straight into the device file, to build crash
// images that are hard to reach through timing.
func putRecord(t *testing.T, f vfs.File, h header, payload []byte, tear bool) {
	t.Helper()
	b := make([]byte, spanOf(len(payload)))
	sealRecord(testAEAD(t, testKey(1)), b, h, payload, new([nonceLen]byte))
	if tear {
		b[headerLen+len(payload)/2] ^= 0xff // as if a later block never reached the disk
	}
	if _, err := f.WriteAt(b, testBase+h.off); err != nil {
		t.Fatal(err)
	}
}

// TestStaleEpoch: boot 1 crashed with records 8, 9, 10 in flight; 8 is torn,
// 9 and 10 made it. Boot 2 replays 1..7, writes a new 8 of the same size and
// crashes. The old 9 now sits exactly where the next record would be, with
// the right seq and offset, and it authenticates. It must not be replayed.
func TestStaleEpoch(t *testing.T) {
	const size = 64 << 10
	const n = 1000
	fs := vfs.NewMem()
	createDev(t, fs, size)
	f := openDev(t, fs, size)
	span := spanOf(n)
	for seq := uint64(1); seq <= 10; seq++ {
		durable := seq - 1
		if seq > 8 {
			durable = 7 // in the same unsynced batch as 8
		}
		h := header{kind: kindData, epoch: 1, seq: seq, off: int64(seq-1) * span, durable: durable}
		putRecord(t, f, h, pattern(n, byte(seq)), seq == 8)
	}

	// Boot 2.
	got, end, err := replayAll(t, testOptions(f, size, 2, 0), Position{Seq: 1})
	if err != nil || len(got) != 7 || end != (Position{Seq: 8, Off: 7 * span, Epoch: 1}) {
		t.Fatalf("boot 2 replay: %d records, end %+v, err %v", len(got), end, err)
	}
	l, err := Open(testOptions(f, size, 2, 0), Position{Seq: 1}, end)
	if err != nil {
		t.Fatal(err)
	}
	new8 := pattern(n, 88)
	seq, end8, err := l.Append(context.Background(), new8)
	if err != nil || seq != 8 || end8 != (Position{Seq: 9, Off: 8 * span, Epoch: 2}) {
		t.Fatalf("boot 2 append: seq %d end %+v err %v", seq, end8, err)
	}
	_ = l.Close() // crash before the next record

	// Boot 3: 1..7 and the new 8, not the stale 9 and 10.
	got, end, err = replayAll(t, testOptions(f, size, 3, 0), Position{Seq: 1})
	if err != nil || len(got) != 8 || !bytes.Equal(got[7].payload, new8) || end != end8 {
		t.Fatalf("boot 3 replay: %v, end %+v, err %v", got, end, err)
	}
	// From the checkpoint boot 2 could have stored after flushing 8: nothing.
	if got, end, err := replayAll(t, testOptions(f, size, 3, 0), end8); err != nil || len(got) != 0 || end != end8 {
		t.Fatalf("from checkpoint %+v: %v, end %+v, err %v", end8, got, end, err)
	}
	// Control: without the epoch in the position, the stale records would
	// come back. This is what the epoch rule prevents.
	noEpoch := end8
	noEpoch.Epoch = 1
	if got, _, _ := replayAll(t, testOptions(f, size, 3, 0), noEpoch); len(got) != 2 {
		t.Fatalf("control: expected the stale 9 and 10 to authenticate, got %v", got)
	}

	// Boot 3 writes a new 9; boot 4 sees 1..7, new 8, new 9, and not the
	// stale 10 behind it.
	l, err = Open(testOptions(f, size, 3, 0), Position{Seq: 1}, end)
	if err != nil {
		t.Fatal(err)
	}
	new9 := pattern(n, 99)
	if _, _, err := l.Append(context.Background(), new9); err != nil {
		t.Fatal(err)
	}
	_ = l.Close()
	got, _, err = replayAll(t, testOptions(f, size, 4, 0), Position{Seq: 1})
	if err != nil || len(got) != 9 || !bytes.Equal(got[7].payload, new8) || !bytes.Equal(got[8].payload, new9) {
		t.Fatalf("boot 4 replay: %v, err %v", got, err)
	}
}

// TestStaleWrapMarker: the same situation with a stale wrap marker where the
// next record would be. Following it would find an authentic stale record
// at offset 0.
func TestStaleWrapMarker(t *testing.T) {
	const size = 8192
	const n = 1000
	span := spanOf(n)
	fs := vfs.NewMem()
	createDev(t, fs, size)
	f := openDev(t, fs, size)
	// Boot 1: seq 20 at offSeq20 (torn), marker for 21 right after it, 21 at 0.
	off20 := size - span - 2*minSpan
	putRecord(t, f, header{kind: kindData, epoch: 1, seq: 20, off: off20, durable: 19}, pattern(n, 20), true)
	putRecord(t, f, header{kind: kindWrap, epoch: 1, seq: 21, off: off20 + span, durable: 19}, nil, false)
	putRecord(t, f, header{kind: kindData, epoch: 1, seq: 21, off: 0, durable: 19}, pattern(n, 21), false)
	ckpt := Position{Seq: 20, Off: off20, Epoch: 1}

	got, end, err := replayAll(t, testOptions(f, size, 2, 0), ckpt)
	if err != nil || len(got) != 0 || end != ckpt {
		t.Fatalf("boot 2 replay: %v, end %+v, err %v", got, end, err)
	}
	l, err := Open(testOptions(f, size, 2, 0), ckpt, end)
	if err != nil {
		t.Fatal(err)
	}
	new20 := pattern(n, 120)
	_, end20, err := l.Append(context.Background(), new20)
	if err != nil || end20.Off != off20+span {
		t.Fatalf("boot 2 append: end %+v err %v", end20, err)
	}
	_ = l.Close()
	got, end, err = replayAll(t, testOptions(f, size, 3, 0), ckpt)
	if err != nil || len(got) != 1 || !bytes.Equal(got[0].payload, new20) || end != end20 {
		t.Fatalf("boot 3 replay: %v, end %+v, err %v", got, end, err)
	}
	// Control: with the epoch lower bound gone, the stale marker and the
	// stale 21 would be followed.
	noEpoch := end20
	noEpoch.Epoch = 1
	if got, _, _ := replayAll(t, testOptions(f, size, 3, 0), noEpoch); len(got) != 1 || got[0].seq != 21 {
		t.Fatalf("control: expected the stale 21 behind the marker, got %v", got)
	}
}

// TestCorruption flips one byte of a log of acknowledged records.
func TestCorruption(t *testing.T) {
	const size = 64 << 10
	const n = 100 // span 160: 4 bytes of padding
	for _, tc := range []struct {
		name    string
		seq     int // record to damage
		at      int // byte within the record
		replays int
		corrupt bool
		mask    byte // 0: 0x04
	}{
		{"ciphertext", 5, headerLen + 10, 4, true, 0},
		{"tag", 5, headerLen + n + 3, 4, true, 0},
		{"durable watermark", 5, 33, 4, true, 0},
		{"epoch raised", 5, 8, 4, true, 0},
		{"epoch lowered", 5, 8, 4, false, 0x01}, // below the previous record's: looks like a stale tail
		{"seq", 5, 16, 4, false, 0},
		{"magic", 5, 0, 4, false, 0},
		{"padding", 5, headerLen + n + tagLen + 1, 10, false, 0},
		{"last record", 10, headerLen + 10, 9, false, 0}, // nothing after it to tell
		{"first record", 1, headerLen, 0, true, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs := vfs.NewMem()
			createDev(t, fs, size)
			f := openDev(t, fs, size)
			l, err := Open(testOptions(f, size, 1, 0), Position{Seq: 1}, Position{Seq: 1})
			if err != nil {
				t.Fatal(err)
			}
			var want []rec
			for i := range 10 {
				p := pattern(n, byte(i))
				seq, end, err := l.Append(context.Background(), p)
				if err != nil {
					t.Fatal(err)
				}
				want = append(want, rec{seq, p, end})
			}
			_ = l.Close()
			b := make([]byte, 1)
			off := testBase + int64(tc.seq-1)*spanOf(n) + int64(tc.at)
			if _, err := f.ReadAt(b, off); err != nil {
				t.Fatal(err)
			}
			if tc.mask == 0 {
				tc.mask = 0x04
			}
			b[0] ^= tc.mask
			if _, err := f.WriteAt(b, off); err != nil {
				t.Fatal(err)
			}
			got, end, err := replayAll(t, testOptions(f, size, 2, 0), Position{Seq: 1})
			if errors.Is(err, ErrCorrupt) != tc.corrupt || (err != nil && !tc.corrupt) {
				t.Fatalf("err %v, want ErrCorrupt %v", err, tc.corrupt)
			}
			checkRecs(t, got, want[:tc.replays])
			wantEnd := Position{Seq: 1}
			if tc.replays > 0 {
				wantEnd = want[tc.replays-1].end
			}
			if end != wantEnd {
				t.Fatalf("end %+v, want %+v", end, wantEnd)
			}
		})
	}
}

// TestWrapManyTimes runs a small log around many laps with releases lagging
// behind, rebooting (close, replay from the released position, open with
// the next epoch) every few hundred records.
func TestWrapManyTimes(t *testing.T) {
	const size = 32 << 10
	const maxPayload = 2000
	rng := rand.New(rand.NewPCG(1, 2))
	fs := vfs.NewMem()
	createDev(t, fs, size)
	f := openDev(t, fs, size)
	released, at := Position{Seq: 1}, Position{Seq: 1}
	var unreleased []rec
	laps, markers := 0, 0
	epoch := uint32(0)
	for boot := 0; boot < 12; boot++ {
		epoch++
		got, end, err := replayAll(t, testOptions(f, size, epoch, maxPayload), released)
		if err != nil {
			t.Fatalf("boot %d: %v", boot, err)
		}
		checkRecs(t, got, unreleased)
		if end != at {
			t.Fatalf("boot %d: end %+v, want %+v", boot, end, at)
		}
		l, err := Open(testOptions(f, size, epoch, maxPayload), released, end)
		if err != nil {
			t.Fatal(err)
		}
		for range 400 {
			p := pattern(rng.IntN(maxPayload+1), byte(rng.Uint32()))
			// Release the oldest records while the log is more than
			// three-quarters full, or at random.
			for len(unreleased) > 0 && (l.Stats().UsedBytes > size*3/4 || rng.IntN(4) == 0) {
				released = unreleased[0].end
				unreleased = unreleased[1:]
				if err := l.Release(released); err != nil {
					t.Fatal(err)
				}
			}
			prev := l.Stats().Next
			seq, end, err := l.Append(context.Background(), p)
			if err != nil {
				t.Fatal(err)
			}
			if end.Off < prev.Off || end.Off == spanOf(len(p)) && prev.Off != 0 {
				laps++
				if size-prev.Off >= minSpan {
					markers++
				}
			}
			unreleased = append(unreleased, rec{seq, p, end})
			at = end
		}
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if laps < 50 || markers < 25 || laps-markers < 3 {
		t.Fatalf("only %d laps (%d with a wrap marker)", laps, markers)
	}
	t.Logf("%d laps, %d with a wrap marker", laps, markers)
}
