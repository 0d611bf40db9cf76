// Command reduction-ceiling computes the best data reduction that fixed-block
// deduplication plus LZ4 can reach on a file, offline, so the array's
// measured ratio can be compared against it.
//
// The file is cut into blocks of -bs bytes (4 KiB, the array's logical block;
// a short last block is padded with zeros, as it would be on a LUN). For each
// block:
//   - an all-zero block stores nothing (pattern removal);
//   - a block seen before stores nothing more (dedup, by BLAKE3-256);
//   - a new block stores its LZ4 block-format size (pierrec/lz4, the codec
//     the array uses), or the raw block when LZ4 does not shrink it.
//
// The ceiling ignores every cost the array pays on top (per-block metadata,
// encryption tags, parity, segment padding), so a real array stays below it.
// It also prints the ratios of each technique alone, the zero-block share,
// and optionally the same with LZ4 HC (-hc) for comparison.
//
// Invariant: the counts are independent of the worker count and of the order
// in which blocks are processed (a duplicate block always has the same LZ4
// size as its first occurrence).
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"sync"
	"time"

	"github.com/pierrec/lz4/v4"
	"github.com/zeebo/blake3"
)

// Config says how to analyze.
type Config struct {
	BlockBytes int   // block size; 4096 if zero
	Workers    int   // hashing/compressing goroutines; GOMAXPROCS if zero
	MaxBlocks  int64 // limit on the number of blocks read (bounds the dedup index); 1<<26 if zero
	HC         bool  // also compute the LZ4 HC (level 9) ceiling
}

// Result is what Analyze measured. Byte counts are int64.
type Result struct {
	BlockBytes     int   `json:"block_bytes"`
	LogicalBytes   int64 `json:"logical_bytes"` // blocks × block size (the padded file size)
	Blocks         int64 `json:"blocks"`
	ZeroBlocks     int64 `json:"zero_blocks"`
	UniqueBlocks   int64 `json:"unique_blocks"`    // distinct non-zero blocks
	LZ4Bytes       int64 `json:"lz4_bytes"`        // all non-zero blocks compressed (no dedup)
	UniqueLZ4Bytes int64 `json:"unique_lz4_bytes"` // distinct non-zero blocks compressed: the ceiling's physical size
	UniqueHCBytes  int64 `json:"unique_lz4hc_bytes,omitempty"`
}

// ratio returns logical/physical, or 0 when nothing would be stored.
func ratio(logical, physical int64) float64 {
	if physical == 0 {
		return 0
	}
	return float64(logical) / float64(physical)
}

// DedupRatio is zero removal + dedup, no compression.
func (r Result) DedupRatio() float64 {
	return ratio(r.LogicalBytes, r.UniqueBlocks*int64(r.BlockBytes))
}

// LZ4Ratio is zero removal + LZ4, no dedup.
func (r Result) LZ4Ratio() float64 { return ratio(r.LogicalBytes, r.LZ4Bytes) }

// CeilingRatio is zero removal + dedup + LZ4: the offline ceiling.
func (r Result) CeilingRatio() float64 { return ratio(r.LogicalBytes, r.UniqueLZ4Bytes) }

// CeilingHCRatio is the ceiling with LZ4 HC instead of fast LZ4 (0 unless Config.HC).
func (r Result) CeilingHCRatio() float64 { return ratio(r.LogicalBytes, r.UniqueHCBytes) }

// ErrTooManyBlocks means the input has more blocks than Config.MaxBlocks.
var ErrTooManyBlocks = errors.New("too many blocks")

const (
	chunkBlocks    = 256 // blocks per unit of work
	chunksInFlight = 4   // per worker
)

type blockInfo struct {
	zero  bool
	sum   [32]byte
	lz4   int32
	lz4hc int32
}

type chunk struct {
	buf   []byte
	n     int // valid blocks
	infos []blockInfo
}

// Analyze reads r to the end and returns its reduction figures.
func Analyze(r io.Reader, cfg Config) (Result, error) {
	if cfg.BlockBytes == 0 {
		cfg.BlockBytes = 4096
	}
	if cfg.BlockBytes < 512 || cfg.BlockBytes > 1<<20 {
		return Result{}, fmt.Errorf("reduction-ceiling: block size %d out of range [512, 1 MiB]", cfg.BlockBytes)
	}
	if cfg.Workers <= 0 {
		cfg.Workers = runtime.GOMAXPROCS(0)
	}
	if cfg.MaxBlocks <= 0 {
		cfg.MaxBlocks = 1 << 26
	}
	bs := cfg.BlockBytes
	nbuf := cfg.Workers * chunksInFlight
	free := make(chan *chunk, nbuf)
	for i := 0; i < nbuf; i++ {
		free <- &chunk{buf: make([]byte, chunkBlocks*bs), infos: make([]blockInfo, chunkBlocks)}
	}
	work := make(chan *chunk, nbuf)
	done := make(chan *chunk, nbuf)

	var wg sync.WaitGroup
	for w := 0; w < cfg.Workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var c lz4.Compressor
			var hc lz4.CompressorHC
			hc.Level = lz4.Level9
			dst := make([]byte, lz4.CompressBlockBound(bs))
			for ch := range work {
				for i := 0; i < ch.n; i++ {
					ch.infos[i] = measure(ch.buf[i*bs:(i+1)*bs], &c, &hc, cfg.HC, dst)
				}
				done <- ch
			}
		}()
	}

	// The reader fills chunks; a short last block is zero-padded.
	readErr := make(chan error, 1)
	go func() {
		defer close(work)
		var blocks int64
		for {
			ch := <-free
			n, err := io.ReadFull(r, ch.buf)
			if n > 0 {
				nb := (n + bs - 1) / bs
				clear(ch.buf[n : nb*bs])
				blocks += int64(nb)
				if blocks > cfg.MaxBlocks {
					readErr <- fmt.Errorf("reduction-ceiling: more than %d blocks: %w", cfg.MaxBlocks, ErrTooManyBlocks)
					return
				}
				ch.n = nb
				work <- ch
			} else {
				free <- ch
			}
			if err == io.EOF || err == io.ErrUnexpectedEOF {
				readErr <- nil
				return
			}
			if err != nil {
				readErr <- fmt.Errorf("reduction-ceiling: read: %w", err)
				return
			}
		}
	}()
	go func() { wg.Wait(); close(done) }()

	res := Result{BlockBytes: bs}
	seen := make(map[[32]byte]struct{})
	for ch := range done {
		for i := 0; i < ch.n; i++ {
			in := &ch.infos[i]
			res.Blocks++
			if in.zero {
				res.ZeroBlocks++
				continue
			}
			res.LZ4Bytes += int64(in.lz4)
			if _, ok := seen[in.sum]; ok {
				continue
			}
			seen[in.sum] = struct{}{}
			res.UniqueBlocks++
			res.UniqueLZ4Bytes += int64(in.lz4)
			res.UniqueHCBytes += int64(in.lz4hc)
		}
		ch.n = 0
		free <- ch
	}
	if err := <-readErr; err != nil {
		return Result{}, err
	}
	res.LogicalBytes = res.Blocks * int64(bs)
	return res, nil
}

// measure fingerprints and compresses one block.
func measure(b []byte, c *lz4.Compressor, hc *lz4.CompressorHC, withHC bool, dst []byte) blockInfo {
	if isZero(b) {
		return blockInfo{zero: true}
	}
	in := blockInfo{sum: blake3.Sum256(b), lz4: int32(len(b))}
	if n, err := c.CompressBlock(b, dst); err == nil && n > 0 && n < len(b) {
		in.lz4 = int32(n)
	}
	if withHC {
		in.lz4hc = int32(len(b))
		if n, err := hc.CompressBlock(b, dst); err == nil && n > 0 && n < len(b) {
			in.lz4hc = int32(n)
		}
	}
	return in
}

func isZero(b []byte) bool {
	for len(b) >= 8 {
		if b[0]|b[1]|b[2]|b[3]|b[4]|b[5]|b[6]|b[7] != 0 {
			return false
		}
		b = b[8:]
	}
	for _, x := range b {
		if x != 0 {
			return false
		}
	}
	return true
}

func main() {
	var cfg Config
	asJSON := flag.Bool("json", false, "print one JSON object instead of a table")
	flag.IntVar(&cfg.BlockBytes, "bs", 4096, "block size in bytes")
	flag.IntVar(&cfg.Workers, "workers", 0, "goroutines hashing and compressing (0: GOMAXPROCS)")
	flag.Int64Var(&cfg.MaxBlocks, "max-blocks", 1<<26, "refuse inputs with more blocks (the dedup index holds ~80 bytes per unique block)")
	flag.BoolVar(&cfg.HC, "hc", false, "also compute the ceiling with LZ4 HC level 9 (slow)")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "usage: reduction-ceiling [flags] FILE (- for stdin)\n"+
			"Offline ceiling of zero removal + fixed-block dedup + LZ4 for FILE.\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() != 1 {
		flag.Usage()
		os.Exit(2)
	}
	name := flag.Arg(0)
	in := os.Stdin
	if name != "-" {
		f, err := os.Open(name)
		if err != nil {
			fmt.Fprintf(os.Stderr, "reduction-ceiling: %v\n", err)
			os.Exit(1)
		}
		defer f.Close()
		in = f
	}
	t0 := time.Now()
	res, err := Analyze(in, cfg)
	if err != nil {
		fmt.Fprintf(os.Stderr, "%v\n", err)
		os.Exit(1)
	}
	el := time.Since(t0)
	if *asJSON {
		out := struct {
			File string `json:"file"`
			Result
			Dedup     float64 `json:"ratio_dedup"`
			LZ4       float64 `json:"ratio_lz4"`
			Ceiling   float64 `json:"ratio_ceiling"`
			CeilingHC float64 `json:"ratio_ceiling_lz4hc,omitempty"`
		}{name, res, res.DedupRatio(), res.LZ4Ratio(), res.CeilingRatio(), res.CeilingHCRatio()}
		enc := json.NewEncoder(os.Stdout)
		if err := enc.Encode(out); err != nil {
			fmt.Fprintf(os.Stderr, "reduction-ceiling: %v\n", err)
			os.Exit(1)
		}
		return
	}
	pct := func(a, b int64) float64 {
		if b == 0 {
			return 0
		}
		return 100 * float64(a) / float64(b)
	}
	fmt.Printf("file             %s\n", name)
	fmt.Printf("logical          %d bytes, %d blocks of %d\n", res.LogicalBytes, res.Blocks, res.BlockBytes)
	fmt.Printf("zero blocks      %d (%.1f %%)\n", res.ZeroBlocks, pct(res.ZeroBlocks, res.Blocks))
	fmt.Printf("unique blocks    %d (%.1f %% of non-zero)\n", res.UniqueBlocks, pct(res.UniqueBlocks, res.Blocks-res.ZeroBlocks))
	fmt.Printf("physical         %d bytes (unique blocks after LZ4)\n", res.UniqueLZ4Bytes)
	fmt.Printf("ratio dedup      %.2f : 1   (zero removal + %d-byte dedup)\n", res.DedupRatio(), res.BlockBytes)
	fmt.Printf("ratio lz4        %.2f : 1   (zero removal + LZ4 per block)\n", res.LZ4Ratio())
	fmt.Printf("ratio ceiling    %.2f : 1   (zero removal + dedup + LZ4)\n", res.CeilingRatio())
	if cfg.HC {
		fmt.Printf("ratio ceiling hc %.2f : 1   (zero removal + dedup + LZ4 HC9)\n", res.CeilingHCRatio())
	}
	mb := float64(res.LogicalBytes) / 1e6
	fmt.Printf("analyzed in      %.1f s (%.0f MB/s)\n", el.Seconds(), mb/el.Seconds())
}
