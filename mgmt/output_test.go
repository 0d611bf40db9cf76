package mgmt

import (
	"bytes"
	"testing"
	"time"
)

func TestTableFormats(t *testing.T) {
	tb := newTable("Name", "Size", "IQN", "Ratio")
	tb.add(txt("host-one"), size(3<<30), multi([]string{"iqn.a", "iqn.bbbbbbb"}), ratio(3.44))
	tb.add(txt("h2"), size(1536<<20), multi(nil), ratio(0))
	for _, tc := range []struct {
		name string
		o    outOpts
		want string
	}{
		{"table", outOpts{}, "" +
			"Name      Size  IQN          Ratio\n" +
			"host-one  3G    iqn.a        3.4 to 1\n" +
			"                iqn.bbbbbbb\n" +
			"h2        1.5G  -            1.0 to 1\n"},
		{"notitle", outOpts{notitle: true}, "" +
			"host-one  3G    iqn.a        3.4 to 1\n" +
			"                iqn.bbbbbbb\n" +
			"h2        1.5G  -            1.0 to 1\n"},
		{"raw", outOpts{raw: true}, "" +
			"Name      Size        IQN          Ratio\n" +
			"host-one  3221225472  iqn.a        3.440\n" +
			"                      iqn.bbbbbbb\n" +
			"h2        1610612736  -            1.000\n"},
		{"csv", outOpts{csv: true}, "" +
			"Name,Size,IQN,Ratio\n" +
			"host-one,3221225472,\"iqn.a,iqn.bbbbbbb\",3.440\n" +
			"h2,1610612736,,1.000\n"},
		{"csv notitle", outOpts{csv: true, notitle: true}, "" +
			"host-one,3221225472,\"iqn.a,iqn.bbbbbbb\",3.440\n" +
			"h2,1610612736,,1.000\n"},
		{"nvp", outOpts{nvp: true}, "" +
			"Name=host-one\nSize=3G\nIQN=iqn.a,iqn.bbbbbbb\nRatio=3.4 to 1\n\n" +
			"Name=h2\nSize=1.5G\nIQN=-\nRatio=1.0 to 1\n"},
		{"nvp raw", outOpts{nvp: true, raw: true}, "" +
			"Name=host-one\nSize=3221225472\nIQN=iqn.a,iqn.bbbbbbb\nRatio=3.440\n\n" +
			"Name=h2\nSize=1610612736\nIQN=\nRatio=1.000\n"},
	} {
		var b bytes.Buffer
		tb.write(&b, tc.o)
		if b.String() != tc.want {
			t.Errorf("%s:\n%s\nwant:\n%s", tc.name, b.String(), tc.want)
		}
	}
	var b bytes.Buffer
	newTable("Name").write(&b, outOpts{})
	if b.Len() != 0 {
		t.Errorf("an empty table printed %q", b.String())
	}
}

func TestCells(t *testing.T) {
	for _, tc := range []struct {
		c     cell
		human string
		raw   string
	}{
		{space(0), "0.00", "0"},
		{space(1023), "1023.00", "1023"},
		{space(1536), "1.50K", "1536"},
		{space(5<<40 + 1<<39), "5.50T", "6047313952768"},
		{percent(0.875), "88%", "0.875"},
		{percent(1), "100%", "1.000"},
		{ratio(12.345), "12.3 to 1", "12.345"},
		{num(42), "42", "42"},
		{when(time.Date(2025, 1, 2, 3, 4, 5, 0, time.FixedZone("X", 3600))), "2025-01-02 02:04:05 UTC", "2025-01-02 02:04:05 UTC"},
		{when(time.Time{}), "-", ""},
		{txt(""), "-", ""},
	} {
		if tc.c.lines[0] != tc.human || tc.c.raw != tc.raw {
			t.Errorf("cell %q/%q, want %q/%q", tc.c.lines[0], tc.c.raw, tc.human, tc.raw)
		}
	}
	if got := formatHMS(25*3600 + 61); got != "25:01:01" {
		t.Errorf("formatHMS %q", got)
	}
}

func TestSentence(t *testing.T) {
	for in, want := range map[string]string{
		"volume does not exist": "Volume does not exist.",
		"Already a sentence.":   "Already a sentence.",
		"usage: purevol VOL...": "Usage: purevol VOL...",
		"  ":                    "Failed.",
		"élan":                  "Élan.",
	} {
		if got := sentence(in); got != want {
			t.Errorf("sentence(%q) = %q, want %q", in, got, want)
		}
	}
}
