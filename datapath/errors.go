package datapath

import (
	"errors"
	"time"
)

// Errors a caller must act on. The array maps them onto its front-end errors.
var (
	ErrLocked       = errors.New("array is locked")
	ErrOutOfRange   = errors.New("I/O beyond the end of the volume")
	ErrInvalid      = errors.New("invalid request")
	ErrMedium       = errors.New("stored data could not be read back intact")
	ErrNoSpace      = errors.New("no space left on the array")
	ErrHostKey      = errors.New("host key unavailable")
	ErrNotFound     = errors.New("no such volume")
	ErrExists       = errors.New("name already in use")
	ErrClosed       = errors.New("data path is closed")
	ErrDestroyed    = errors.New("volume is destroyed")
	ErrNotDestroyed = errors.New("volume is not destroyed")
)

// LockedError says why the array could not unlock. errors.Is(err, ErrLocked).
type LockedError struct {
	Reason string
	Err    error
}

func (e *LockedError) Error() string { return "array is locked: " + e.Reason }
func (e *LockedError) Unwrap() []error {
	if e.Err == nil {
		return []error{ErrLocked}
	}
	return []error{ErrLocked, e.Err}
}

// Severity of an event.
type Severity int

const (
	Info Severity = iota
	Warning
	Critical
)

func (s Severity) String() string {
	switch s {
	case Warning:
		return "warning"
	case Critical:
		return "critical"
	}
	return "info"
}

// Event is something the array should record, and raise as an alert when
// Severity > Info. Code is stable (for clearing and for phone home).
type Event struct {
	Time      time.Time
	Severity  Severity
	Code      string // e.g. "device.missing", "device.repaired", "keys.rotated"
	Component string // e.g. "ssd03", "nvram0", "keys"
	Message   string
	Clear     bool // the condition Code/Component ended
}
