package mgmt

import (
	"bytes"
	"encoding/csv"
	"strconv"
	"strings"
	"time"

	"vfa/array"
)

// Output. Every listing is a table of named columns, printed one of four ways:
//
//   - a table (the default): a title row, then one row per object; columns
//     are left-aligned and separated by two spaces; a multi-valued cell (a
//     host's IQNs) puts one value per line, the other columns of the extra
//     lines blank; an absent value is "-"; sizes are human ("1.5G", and
//     "12.34G" with two decimals in space reports), ratios "3.4 to 1",
//     fractions "88%", times "2006-01-02 15:04:05 UTC";
//   - --csv: the title row and rows as RFC 4180 comma-separated values with
//     raw values: sizes in bytes, ratios and fractions as decimals ("3.412",
//     "0.880"), multi-valued cells joined with "," (and so quoted), absent
//     values empty;
//   - --nvp: one "Title=value" line per cell (human values, multi-valued
//     cells joined with ","), a blank line between objects;
//   - --raw with a table or --nvp: raw values instead of human ones.
//
// --notitle drops the title row of a table or CSV. An empty listing prints
// nothing at all.

// cell is one value of a table.
type cell struct {
	lines []string // human form; several for a multi-valued cell
	raw   string   // machine form
	multi bool
}

const dash = "-"

// txt is a plain value; "" is absent.
func txt(s string) cell {
	if s == "" {
		return cell{lines: []string{dash}}
	}
	return cell{lines: []string{s}, raw: s}
}

// multi is a multi-valued cell.
func multi(items []string) cell {
	if len(items) == 0 {
		return cell{lines: []string{dash}, multi: true}
	}
	return cell{lines: append([]string(nil), items...), raw: strings.Join(items, ","), multi: true}
}

// num is an integer shown as is.
func num(n int64) cell {
	return cell{lines: []string{strconv.FormatInt(n, 10)}, raw: strconv.FormatInt(n, 10)}
}

// size is a volume size ("10G").
func size(n int64) cell {
	return cell{lines: []string{array.FormatSize(n)}, raw: strconv.FormatInt(n, 10)}
}

// space is an amount of space in a space report ("1.32T", "0.00").
func space(n int64) cell { return cell{lines: []string{formatSpace(n)}, raw: strconv.FormatInt(n, 10)} }

func formatSpace(n int64) string {
	units := []string{"", "K", "M", "G", "T", "P", "E"}
	v := float64(n)
	i := 0
	for v >= 1024 && i < len(units)-1 {
		v /= 1024
		i++
	}
	return strconv.FormatFloat(v, 'f', 2, 64) + units[i]
}

// ratio is a reduction ratio ("3.4 to 1"); 0 (nothing stored) shows as 1 to 1.
func ratio(r float64) cell {
	if r <= 0 {
		r = 1
	}
	return cell{lines: []string{strconv.FormatFloat(r, 'f', 1, 64) + " to 1"}, raw: strconv.FormatFloat(r, 'f', 3, 64)}
}

// percent is a fraction shown as a whole percentage ("88%").
func percent(f float64) cell {
	p := int64(f*100 + 0.5)
	return cell{lines: []string{strconv.FormatInt(p, 10) + "%"}, raw: strconv.FormatFloat(f, 'f', 3, 64)}
}

const timeLayout = "2006-01-02 15:04:05 MST"

// when is a point in time, shown in UTC; zero is absent.
func when(t time.Time) cell {
	if t.IsZero() {
		return txt("")
	}
	return txt(t.UTC().Format(timeLayout))
}

// table is a listing.
type table struct {
	cols []string
	rows [][]cell
}

func newTable(cols ...string) *table { return &table{cols: cols} }

func (t *table) add(cells ...cell) {
	if len(cells) != len(t.cols) {
		panic("mgmt: table row has the wrong number of cells")
	}
	t.rows = append(t.rows, cells)
}

// outOpts are the output options of a listing.
type outOpts struct{ csv, nvp, notitle, raw bool }

var outFlags = []flagSpec{
	{name: "csv", help: "print comma-separated values with raw numbers (bytes)"},
	{name: "nvp", help: "print Name=Value lines, a blank line between objects"},
	{name: "notitle", help: "leave out the title row"},
	{name: "raw", help: "print raw numbers (bytes) in a table or with --nvp"},
}

func outOptions(p *parsed) (outOpts, error) {
	o := outOpts{csv: p.has("csv"), nvp: p.has("nvp"), notitle: p.has("notitle"), raw: p.has("raw")}
	if o.csv && o.nvp {
		return o, usagef("--csv and --nvp cannot be combined")
	}
	return o, nil
}

func (c cell) rawOrDash() string {
	if c.raw == "" {
		return dash
	}
	return c.raw
}

// write renders the table into b.
func (t *table) write(b *bytes.Buffer, o outOpts) {
	if len(t.rows) == 0 {
		return
	}
	switch {
	case o.csv:
		w := csv.NewWriter(b)
		if !o.notitle {
			_ = w.Write(t.cols)
		}
		rec := make([]string, len(t.cols))
		for _, r := range t.rows {
			for i, c := range r {
				rec[i] = c.raw
			}
			_ = w.Write(rec)
		}
		w.Flush()
	case o.nvp:
		for ri, r := range t.rows {
			if ri > 0 {
				b.WriteByte('\n')
			}
			for i, c := range r {
				b.WriteString(t.cols[i])
				b.WriteByte('=')
				if o.raw {
					b.WriteString(c.raw)
				} else {
					b.WriteString(strings.Join(c.lines, ","))
				}
				b.WriteByte('\n')
			}
		}
	default:
		t.writeTable(b, o)
	}
}

func (t *table) writeTable(b *bytes.Buffer, o outOpts) {
	lines := func(c cell) []string {
		if o.raw && !c.multi {
			return []string{c.rawOrDash()}
		}
		return c.lines
	}
	width := make([]int, len(t.cols))
	if !o.notitle {
		for i, c := range t.cols {
			width[i] = len(c)
		}
	}
	for _, r := range t.rows {
		for i, c := range r {
			for _, l := range lines(c) {
				width[i] = max(width[i], len(l))
			}
		}
	}
	var line []byte
	emit := func(vals []string) {
		line = line[:0]
		for i, v := range vals {
			if i > 0 {
				line = append(line, ' ', ' ')
			}
			line = append(line, v...)
			if i < len(vals)-1 {
				for k := len(v); k < width[i]; k++ {
					line = append(line, ' ')
				}
			}
		}
		b.Write(bytes.TrimRight(line, " "))
		b.WriteByte('\n')
	}
	if !o.notitle {
		emit(t.cols)
	}
	vals := make([]string, len(t.cols))
	for _, r := range t.rows {
		height := 1
		for _, c := range r {
			height = max(height, len(lines(c)))
		}
		for h := 0; h < height; h++ {
			for i, c := range r {
				vals[i] = ""
				if ls := lines(c); h < len(ls) {
					vals[i] = ls[h]
				}
			}
			emit(vals)
		}
	}
}
