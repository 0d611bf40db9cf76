package array

import (
	"fmt"
	"strconv"
	"strings"
)

// ParseSize reads a size as Purity writes it: an integer with an optional
// suffix S (512-byte sectors, also the unit when there is no suffix), K, M,
// G, T or P (powers of 2). "10G" is 10 GiB.
func ParseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	if t == "" {
		return 0, fmt.Errorf("size %q is empty", s)
	}
	mult := int64(512)
	switch c := strings.ToUpper(t[len(t)-1:]); c {
	case "S":
		t = t[:len(t)-1]
	case "K":
		mult, t = 1<<10, t[:len(t)-1]
	case "M":
		mult, t = 1<<20, t[:len(t)-1]
	case "G":
		mult, t = 1<<30, t[:len(t)-1]
	case "T":
		mult, t = 1<<40, t[:len(t)-1]
	case "P":
		mult, t = 1<<50, t[:len(t)-1]
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("size %q is not a positive integer with an optional S, K, M, G, T or P suffix", s)
	}
	if n > (1<<62)/mult {
		return 0, fmt.Errorf("size %q is too large", s)
	}
	return n * mult, nil
}

// FormatSize writes bytes the way Purity lists them: the largest unit that
// keeps a value of at least 1, with up to two decimals ("1.5G", "512K", "0").
func FormatSize(n int64) string {
	if n == 0 {
		return "0"
	}
	units := []string{"", "K", "M", "G", "T", "P"}
	v := float64(n)
	i := 0
	for v >= 1024 && i < len(units)-1 {
		v /= 1024
		i++
	}
	out := strconv.FormatFloat(v, 'f', 2, 64)
	out = strings.TrimRight(strings.TrimRight(out, "0"), ".")
	return out + units[i]
}
