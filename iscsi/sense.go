package iscsi

// Sense data (SPC-4 §4.5): fixed format (response code 70h) by default,
// descriptor format (72h) when the control mode page's D_SENSE is set.

import (
	"encoding/binary"
	"errors"

	"vfa/array"
)

// SCSI status codes.
const (
	statusGood           = 0x00
	statusCheckCondition = 0x02
	statusConditionMet   = 0x04
	statusBusy           = 0x08
	statusResvConflict   = 0x18
	statusTaskSetFull    = 0x28
	statusTaskAborted    = 0x40
)

// Sense keys.
const (
	skNoSense        = 0x0
	skNotReady       = 0x2
	skMediumError    = 0x3
	skHardwareError  = 0x4
	skIllegalRequest = 0x5
	skUnitAttention  = 0x6
	skDataProtect    = 0x7
	skCopyAborted    = 0xa
	skAbortedCommand = 0xb
	skMiscompare     = 0xe
)

const maxSenseLen = 96

// senseCode is a sense key with its additional sense code and qualifier.
type senseCode struct{ key, asc, ascq byte }

var (
	scNone                = senseCode{skNoSense, 0x00, 0x00}
	scInvalidOpcode       = senseCode{skIllegalRequest, 0x20, 0x00}
	scLBAOutOfRange       = senseCode{skIllegalRequest, 0x21, 0x00}
	scInvalidFieldCDB     = senseCode{skIllegalRequest, 0x24, 0x00}
	scLUNotSupported      = senseCode{skIllegalRequest, 0x25, 0x00}
	scInvalidFieldParam   = senseCode{skIllegalRequest, 0x26, 0x00}
	scInvalidReleasePR    = senseCode{skIllegalRequest, 0x26, 0x04}
	scParamLen            = senseCode{skIllegalRequest, 0x1a, 0x00}
	scInvalidFieldIU      = senseCode{skIllegalRequest, 0x0e, 0x03}
	scSavingNotSupported  = senseCode{skIllegalRequest, 0x39, 0x00}
	scInsufficientRegRes  = senseCode{skIllegalRequest, 0x55, 0x04}
	scOperationInProgress = senseCode{skIllegalRequest, 0x00, 0x16}
	scTooManyTargetDescs  = senseCode{skIllegalRequest, 0x26, 0x06}
	scUnsupportedTgtDesc  = senseCode{skIllegalRequest, 0x26, 0x07}
	scTooManySegmentDescs = senseCode{skIllegalRequest, 0x26, 0x08}
	scUnsupportedSegDesc  = senseCode{skIllegalRequest, 0x26, 0x09}
	scCopyTargetUnreach   = senseCode{skCopyAborted, 0x0d, 0x02}
	scCopyAbortedNoSense  = senseCode{skCopyAborted, 0x00, 0x00}
	scCopyWriteProtected  = senseCode{skCopyAborted, 0x27, 0x02}
	scMiscompare          = senseCode{skMiscompare, 0x1d, 0x00}
	scSoftwareWP          = senseCode{skDataProtect, 0x27, 0x02}
	scSpaceAllocFailed    = senseCode{skDataProtect, 0x27, 0x07}
	scHostKeyUnavailable  = senseCode{skDataProtect, 0x74, 0x61}
	scNotReadyUnavailable = senseCode{skNotReady, 0x04, 0x0c}
	scUnrecoveredRead     = senseCode{skMediumError, 0x11, 0x00}
	scWriteError          = senseCode{skMediumError, 0x0c, 0x00}
	scInternalFailure     = senseCode{skHardwareError, 0x44, 0x00}
	scDataPhaseError      = senseCode{skAbortedCommand, 0x4b, 0x00}
	scInvalidTTT          = senseCode{skAbortedCommand, 0x4b, 0x01}
	scDataOffsetError     = senseCode{skAbortedCommand, 0x4b, 0x05}

	// Unit attentions.
	uaPowerOn             = senseCode{skUnitAttention, 0x29, 0x00}
	uaTargetReset         = senseCode{skUnitAttention, 0x29, 0x02}
	uaLUReset             = senseCode{skUnitAttention, 0x29, 0x03}
	uaModeChanged         = senseCode{skUnitAttention, 0x2a, 0x01}
	uaReservationsPreempt = senseCode{skUnitAttention, 0x2a, 0x03}
	uaReservationsRelease = senseCode{skUnitAttention, 0x2a, 0x04}
	uaRegistrationsPreemp = senseCode{skUnitAttention, 0x2a, 0x05}
	uaCapacityChanged     = senseCode{skUnitAttention, 0x2a, 0x09}
	uaReportedLUNsChanged = senseCode{skUnitAttention, 0x3f, 0x0e}
)

// senseExtra carries the optional parts of sense data.
type senseExtra struct {
	info      uint64
	infoValid bool
	// COMMAND-SPECIFIC INFORMATION (fixed format: 4 bytes; descriptor
	// format: a command-specific information descriptor), when non-zero.
	csi uint64
	// Sense-key specific field pointer.
	sksv     bool
	cdbField bool // C/D: the error is in the CDB (else parameter data)
	segment  bool // COPY ABORTED: SD, the pointer is into the segment descriptor csi names
	bitValid bool
	bit      byte
	field    uint16
}

// buildSense writes sense data into dst and returns its length.
func buildSense(dst []byte, desc bool, sc senseCode, x senseExtra) int {
	clear(dst[:min(len(dst), 40)]) // the longest we build: 8+12+12+8 bytes
	var sks [3]byte
	if x.sksv {
		sks[0] = 0x80
		if x.cdbField {
			sks[0] |= 0x40
		}
		if x.segment {
			sks[0] |= 0x20
		}
		if x.bitValid {
			sks[0] |= 0x08 | x.bit&7
		}
		binary.BigEndian.PutUint16(sks[1:], x.field)
	}
	if !desc {
		dst[0] = 0x70
		if x.infoValid {
			dst[0] |= 0x80
			binary.BigEndian.PutUint32(dst[3:7], uint32(x.info))
		}
		dst[2] = sc.key
		dst[7] = 10
		binary.BigEndian.PutUint32(dst[8:12], uint32(x.csi))
		dst[12] = sc.asc
		dst[13] = sc.ascq
		copy(dst[15:18], sks[:])
		return 18
	}
	dst[0] = 0x72
	dst[1] = sc.key
	dst[2] = sc.asc
	dst[3] = sc.ascq
	n := 8
	if x.infoValid {
		// Information descriptor.
		dst[n] = 0x00
		dst[n+1] = 0x0a
		dst[n+2] = 0x80
		binary.BigEndian.PutUint64(dst[n+4:n+12], x.info)
		n += 12
	}
	if x.csi != 0 {
		// Command-specific information descriptor.
		dst[n] = 0x01
		dst[n+1] = 0x0a
		binary.BigEndian.PutUint64(dst[n+4:n+12], x.csi)
		n += 12
	}
	if x.sksv {
		// Sense key specific descriptor.
		dst[n] = 0x02
		dst[n+1] = 0x06
		copy(dst[n+4:n+7], sks[:])
		n += 8
	}
	dst[7] = byte(n - 8)
	return n
}

// Task helpers that end a command with CHECK CONDITION.

func (t *task) check(sc senseCode, x senseExtra) {
	t.status = statusCheckCondition
	desc := t.lun != nil && t.lun.lu.dsense.Load()
	t.senseLen = buildSense(t.sense[2:], desc, sc, x)
	t.inLen = 0
}

func (t *task) fail(sc senseCode) { t.check(sc, senseExtra{}) }

// badCDB reports INVALID FIELD IN CDB pointing at byte idx (and bit, if
// bit >= 0) of the CDB.
func (t *task) badCDB(idx int, bit int) {
	x := senseExtra{sksv: true, cdbField: true, field: uint16(idx)}
	if bit >= 0 {
		x.bitValid, x.bit = true, byte(bit)
	}
	t.check(scInvalidFieldCDB, x)
}

// badParam reports INVALID FIELD IN PARAMETER LIST at byte idx.
func (t *task) badParam(idx int, bit int) {
	x := senseExtra{sksv: true, field: uint16(idx)}
	if bit >= 0 {
		x.bitValid, x.bit = true, byte(bit)
	}
	t.check(scInvalidFieldParam, x)
}

func (t *task) conflict() {
	t.status = statusResvConflict
	t.senseLen = 0
	t.inLen = 0
}

// senseForError maps an error from a BlockDevice to sense data:
//
//	array.ErrLocked     NOT READY, 04/0C LOGICAL UNIT NOT ACCESSIBLE,
//	                    TARGET PORT IN UNAVAILABLE STATE (the ALUA state
//	                    REPORT TARGET PORT GROUPS shows while locked)
//	array.ErrOutOfRange ILLEGAL REQUEST, 21/00 LBA OUT OF RANGE
//	array.ErrInvalid    ILLEGAL REQUEST, 24/00 INVALID FIELD IN CDB
//	array.ErrMedium     MEDIUM ERROR, 11/00 UNRECOVERED READ ERROR (reads)
//	                    or 0C/00 WRITE ERROR (writes)
//	array.ErrNoSpace    DATA PROTECT, 27/07 SPACE ALLOCATION FAILED WRITE
//	                    PROTECT
//	array.ErrHostKey    DATA PROTECT, 74/61 EXTERNAL DATA ENCRYPTION KEY
//	                    MANAGER ACCESS ERROR: the volume's host key could
//	                    not be had from the key manager (KMIP); initiators
//	                    do not retry DATA PROTECT, and nothing was
//	                    transferred
//	array.ErrGone       ILLEGAL REQUEST, 25/00 LOGICAL UNIT NOT SUPPORTED
//	anything else       HARDWARE ERROR, 44/00 INTERNAL TARGET FAILURE
//
// (A connection that went away, context.Canceled, also lands on the last
// line; its response is never sent.) EXTENDED COPY reports the same
// additional sense codes under COPY ABORTED (xcopy.go).
func senseForError(err error, write bool) senseCode {
	switch {
	case errors.Is(err, array.ErrLocked):
		return scNotReadyUnavailable
	case errors.Is(err, array.ErrOutOfRange):
		return scLBAOutOfRange
	case errors.Is(err, array.ErrInvalid):
		return scInvalidFieldCDB
	case errors.Is(err, array.ErrMedium):
		if write {
			return scWriteError
		}
		return scUnrecoveredRead
	case errors.Is(err, array.ErrNoSpace):
		return scSpaceAllocFailed
	case errors.Is(err, array.ErrHostKey):
		return scHostKeyUnavailable
	case errors.Is(err, array.ErrGone):
		return scLUNotSupported
	}
	return scInternalFailure
}

// deviceError ends the task with the sense data senseForError gives err.
func (t *task) deviceError(err error, write bool) { t.fail(senseForError(err, write)) }
