package keys

import "time"

// DefaultRotationInterval is how often the array key is rotated when nothing
// else (a device added, failed or removed) rotates it first.
const DefaultRotationInterval = 24 * time.Hour

// RotationDue reports whether a rotation is due at now, the last having been
// at lastRotation. An interval <= 0 means DefaultRotationInterval. A clock
// that went backwards (now before lastRotation) makes a rotation due, so a
// wrong clock cannot postpone rotation indefinitely.
func RotationDue(lastRotation, now time.Time, interval time.Duration) bool {
	if interval <= 0 {
		interval = DefaultRotationInterval
	}
	if now.Before(lastRotation) {
		return true
	}
	return now.Sub(lastRotation) >= interval
}
