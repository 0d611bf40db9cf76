package iscsi

import (
	"math/bits"
	"sync"
)

// bufPool hands out data buffers in power-of-two size classes from 4 KiB to
// 32 MiB. Buffers are carried as *[]byte so that Put does not allocate.
type bufPool struct {
	classes [poolClasses]sync.Pool
}

const (
	poolMinShift = 12 // 4 KiB
	poolClasses  = 14 // up to 32 MiB
)

func poolClass(n int) int {
	if n <= 1<<poolMinShift {
		return 0
	}
	return bits.Len(uint(n-1)) - poolMinShift
}

// get returns a buffer of length n (contents undefined).
func (p *bufPool) get(n int) *[]byte {
	c := poolClass(n)
	if c >= poolClasses {
		b := make([]byte, n)
		return &b
	}
	if v := p.classes[c].Get(); v != nil {
		b := v.(*[]byte)
		*b = (*b)[:n]
		return b
	}
	b := make([]byte, n, 1<<(c+poolMinShift))
	return &b
}

// put returns a buffer obtained from get.
func (p *bufPool) put(b *[]byte) {
	if b == nil {
		return
	}
	c := poolClass(cap(*b))
	if c >= poolClasses || cap(*b) != 1<<(c+poolMinShift) {
		return
	}
	p.classes[c].Put(b)
}
