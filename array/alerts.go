package array

import (
	"sort"
	"sync"
	"time"

	"vfa/datapath"
)

// Alerts and events. Every data-path event is logged; warnings and worse
// open an alert (keyed by code and component) until a matching clear event
// or an explicit clear closes it.

// Alert is one open or closed alert.
type Alert struct {
	ID        uint64
	Time      time.Time
	Severity  datapath.Severity
	Code      string
	Component string
	Message   string
	Closed    time.Time // zero while open
	Count     int       // times raised while open
}

type alertBook struct {
	mu     sync.Mutex
	next   uint64
	open   map[string]*Alert // code/component -> alert
	closed []Alert
	events []datapath.Event // recent events, bounded
	subs   []func(Alert)
}

const (
	eventsLimit = 10000
	closedLimit = 1000
)

func (a *Array) onEvent(e datapath.Event) {
	lv := a.log.Info
	if e.Severity >= datapath.Warning {
		lv = a.log.Warn
	}
	lv("event", "code", e.Code, "component", e.Component, "msg", e.Message)
	b := &a.alerts
	b.mu.Lock()
	b.events = append(b.events, e)
	if len(b.events) > eventsLimit {
		b.events = append([]datapath.Event(nil), b.events[len(b.events)-eventsLimit/2:]...)
	}
	b.mu.Unlock()
	if e.Clear {
		a.clear(e.Code, e.Component)
		return
	}
	if e.Severity >= datapath.Warning {
		a.raise(Alert{Time: e.Time, Severity: e.Severity, Code: e.Code, Component: e.Component, Message: e.Message})
	}
}

// raise opens an alert (or counts a repeat of an open one).
func (a *Array) raise(al Alert) {
	b := &a.alerts
	b.mu.Lock()
	if b.open == nil {
		b.open = map[string]*Alert{}
	}
	key := al.Code + "/" + al.Component
	if cur, ok := b.open[key]; ok {
		cur.Count++
		cur.Message = al.Message
		b.mu.Unlock()
		return
	}
	b.next++
	al.ID = b.next
	if al.Time.IsZero() {
		al.Time = a.o.Now()
	}
	al.Count = 1
	b.open[key] = &al
	subs := append([]func(Alert){}, b.subs...)
	b.mu.Unlock()
	for _, f := range subs {
		f(al)
	}
}

// clear closes the open alert code/component, if any.
func (a *Array) clear(code, component string) {
	b := &a.alerts
	b.mu.Lock()
	key := code + "/" + component
	cur, ok := b.open[key]
	if !ok {
		b.mu.Unlock()
		return
	}
	delete(b.open, key)
	cur.Closed = a.o.Now()
	b.closed = append(b.closed, *cur)
	if len(b.closed) > closedLimit {
		b.closed = append([]Alert(nil), b.closed[len(b.closed)-closedLimit/2:]...)
	}
	c := *cur
	subs := append([]func(Alert){}, b.subs...)
	b.mu.Unlock()
	for _, f := range subs {
		f(c)
	}
}

// Alerts lists open alerts (and closed ones when all is set), newest first.
func (a *Array) Alerts(all bool) []Alert {
	b := &a.alerts
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []Alert
	for _, al := range b.open {
		out = append(out, *al)
	}
	if all {
		out = append(out, b.closed...)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID > out[j].ID })
	return out
}

// OnAlert registers f to be called when an alert opens or closes.
func (a *Array) OnAlert(f func(Alert)) {
	a.alerts.mu.Lock()
	a.alerts.subs = append(a.alerts.subs, f)
	a.alerts.mu.Unlock()
}

// Events returns recent events, oldest first.
func (a *Array) Events() []datapath.Event {
	b := &a.alerts
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]datapath.Event(nil), b.events...)
}

// changeHub fans out "something changed" notifications to front ends.
type changeHub struct {
	mu   sync.Mutex
	subs map[int]chan struct{}
	next int
}

func (h *changeHub) init() { h.subs = map[int]chan struct{}{} }

func (h *changeHub) notify() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, c := range h.subs {
		select {
		case c <- struct{}{}:
		default:
		}
	}
}

// Changes implements Frontend.
func (a *Array) Changes() (<-chan struct{}, func()) {
	h := &a.changes
	h.mu.Lock()
	defer h.mu.Unlock()
	id := h.next
	h.next++
	c := make(chan struct{}, 1)
	h.subs[id] = c
	return c, func() {
		h.mu.Lock()
		delete(h.subs, id)
		h.mu.Unlock()
	}
}
