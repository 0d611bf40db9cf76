package mgmt

import (
	"context"
	"encoding/csv"
	"math"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"
)

// Space accounting as purearray list --space and purevol list --space show
// it, after a workload of unique, compressible, zero and duplicate data, a
// snapshot and overwrites: the columns add up and agree with each other and
// with what was written.

const (
	mib = 1 << 20
	// unit is the workload's unit of data (small: the data path is slow
	// under the race detector).
	unit = 256 << 10
)

// parseCSV reads a --csv listing into rows of column -> value.
func parseCSV(t *testing.T, text string) []map[string]string {
	t.Helper()
	recs, err := csv.NewReader(strings.NewReader(text)).ReadAll()
	if err != nil {
		t.Fatalf("csv: %v\n%s", err, text)
	}
	var out []map[string]string
	for _, r := range recs[1:] {
		m := map[string]string{}
		for i, c := range recs[0] {
			m[c] = r[i]
		}
		out = append(out, m)
	}
	return out
}

func num64(t *testing.T, row map[string]string, col string) int64 {
	t.Helper()
	n, err := strconv.ParseInt(row[col], 10, 64)
	if err != nil {
		t.Fatalf("column %s = %q: %v", col, row[col], err)
	}
	return n
}

func float(t *testing.T, row map[string]string, col string) float64 {
	t.Helper()
	f, err := strconv.ParseFloat(row[col], 64)
	if err != nil {
		t.Fatalf("column %s = %q: %v", col, row[col], err)
	}
	return f
}

// flush waits until every acknowledged write has left NVRAM for the SSDs
// (space reports count only flushed data). The array has no flush call of
// its own yet; shrinking a volume flushes everything pending first, so a
// scratch volume is shrunk.
func (h *harness) flush() {
	h.t.Helper()
	h.ok("purevol create --size 2M flush-scratch")
	h.ok("purevol setattr --size 1M --truncate flush-scratch")
	h.ok("purevol destroy flush-scratch")
	h.ok("purevol eradicate flush-scratch")
}

// write writes data to a volume at byte offset off in chunks.
func (h *harness) write(vol string, off int64, data []byte) {
	h.t.Helper()
	dev, err := h.a.Device(vol)
	if err != nil {
		h.t.Fatal(err)
	}
	const chunk = 256 << 10
	for len(data) > 0 {
		n := min(chunk, len(data))
		if err := dev.WriteAt(context.Background(), data[:n], uint64(off/512)); err != nil {
			h.t.Fatalf("write %s at %d: %v", vol, off, err)
		}
		data, off = data[n:], off+int64(n)
	}
}

func TestSpaceAddsUp(t *testing.T) {
	h := newHarness(t)
	h.ok("purevol create --size 64M alpha beta")
	rng := rand.New(rand.NewPCG(1, 2))
	random := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		return b
	}
	unique := random(4 * unit)
	text := []byte(strings.Repeat("the quick brown fox jumps over the lazy dog; ", 2*unit/45+1)[:2*unit])
	h.write("alpha", 0, unique)                  // 4 units incompressible
	h.write("alpha", 8*mib, text)                // 2 units compressible
	h.write("alpha", 16*mib, make([]byte, unit)) // 1 unit of zeros
	h.write("beta", 0, unique[unit:2*unit])      // 1 unit duplicate of alpha's
	h.ok("purevol snap --suffix before alpha")
	h.write("alpha", 0, random(unit)) // overwrite: the snapshot keeps the old unit
	h.restart()
	h.flush()

	arr := parseCSV(t, h.ok("purearray list --space --csv"))
	if len(arr) != 1 {
		t.Fatalf("%d array rows", len(arr))
	}
	a := arr[0]
	capacity, vols, snaps, shared, system, total := num64(t, a, "Capacity"), num64(t, a, "Volumes"),
		num64(t, a, "Snapshots"), num64(t, a, "Shared Space"), num64(t, a, "System"), num64(t, a, "Total")
	t.Logf("capacity %d volumes %d snapshots %d shared %d system %d total %d, DR %s, TR %s, thin %s",
		capacity, vols, snaps, shared, system, total, a["Data Reduction"], a["Total Reduction"], a["Thin Provisioning"])
	if vols+snaps+shared+system != total {
		t.Errorf("volumes %d + snapshots %d + shared %d + system %d = %d, total says %d", vols, snaps, shared, system, vols+snaps+shared+system, total)
	}
	if total <= 0 || total > capacity {
		t.Errorf("total %d outside (0, capacity %d]", total, capacity)
	}
	if system < 0 {
		t.Errorf("system %d", system)
	}
	// The overwritten unit of random data is held by the snapshot only.
	if snaps < unit {
		t.Errorf("snapshots %d < %d: the overwritten random data is not accounted to the snapshot", snaps, unit)
	}
	// beta's unit is a duplicate of a unit alpha still shows.
	if shared < unit {
		t.Errorf("shared %d < %d: the duplicated unit is not shared", shared, unit)
	}
	// alpha shows 2 units of its first random data (one was overwritten,
	// one is shared with beta) plus 1 unit of new random data that only it
	// holds; the text compresses to little.
	if vols < 3*unit || vols >= 3*unit+unit/2 {
		t.Errorf("volumes %d: want the 3 units of unique random data alpha alone shows, plus the compressed text", vols)
	}
	// Reductions: logical written is every mapped block of the volumes and
	// the snapshot (alpha: 7 units frozen + 1 new; beta 1); provisioned is
	// 128 MiB; the volumes show 7 + 1 units.
	uniq := float64(vols + snaps + shared)
	if dr, want := float(t, a, "Data Reduction"), 9*unit/uniq; math.Abs(dr-want) > 0.001 {
		t.Errorf("data reduction %.3f, want 9 units / unique = %.3f", dr, want)
	}
	if tr, want := float(t, a, "Total Reduction"), 128*mib/uniq; math.Abs(tr-want) > 0.001 {
		t.Errorf("total reduction %.3f, want 128 MiB / unique = %.3f", tr, want)
	}
	if thin, want := float(t, a, "Thin Provisioning"), 1-8.0*unit/(128*mib); math.Abs(thin-want) > 0.001 {
		t.Errorf("thin provisioning %.3f, want %.3f", thin, want)
	}
	if p := float(t, a, "Parity"); p != 1 {
		t.Errorf("parity %v with every device present", p)
	}

	// Per volume: the Volume column adds up to the array's Volumes.
	var sum int64
	for _, v := range parseCSV(t, h.ok("purevol list --space --csv")) {
		sum += num64(t, v, "Volume")
		size := num64(t, v, "Size")
		if size != 64*mib {
			t.Errorf("%s size %d", v["Name"], size)
		}
		wantThin := map[string]float64{"alpha": 1 - 7.0*unit/(64*mib), "beta": 1 - 1.0*unit/(64*mib)}[v["Name"]]
		if thin := float(t, v, "Thin Provisioning"); math.Abs(thin-wantThin) > 0.001 {
			t.Errorf("%s thin provisioning %.3f, want %.3f", v["Name"], thin, wantThin)
		}
		// alpha's snapshot keeps the overwritten unit alive: all of the
		// array's Snapshots; beta has no snapshot.
		wantSnaps := map[string]int64{"alpha": snaps, "beta": 0}[v["Name"]]
		if vs := num64(t, v, "Snapshots"); vs != wantSnaps {
			t.Errorf("%s: snapshots %d, want %d", v["Name"], vs, wantSnaps)
		}
		if num64(t, v, "Total") != num64(t, v, "Volume")+num64(t, v, "Snapshots") {
			t.Errorf("%s: total %q != volume %q + snapshots %q", v["Name"], v["Total"], v["Volume"], v["Snapshots"])
		}
	}
	if sum != vols {
		t.Errorf("volumes' Volume column sums to %d, the array says %d", sum, vols)
	}

	// The table shows the same numbers in human form.
	out := h.ok("purearray list --space")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "Name      Capacity  Parity  Thin Provisioning  Data Reduction  Total Reduction  Volumes") {
		t.Fatalf("table:\n%s", out)
	}
	if !strings.Contains(lines[1], formatSpace(total)) || !strings.Contains(lines[1], " to 1") || !strings.Contains(lines[1], "100%") {
		t.Fatalf("table row %q (total %s)", lines[1], formatSpace(total))
	}
}
