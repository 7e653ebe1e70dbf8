package shoal

// #include <shoal/shoal.h>
import "C"

import (
	"fmt"
	"strings"
	"syscall"
)

// Error is a failure reported by libshoal: one of the SHOAL_E* codes of
// shoal/error.h (DESIGN.md section 7) or a system error (-errno).
//
// Compare with errors.Is against the sentinels (ErrNotFound, ...), which
// are *Error values themselves: two *Error match when their codes do. A
// system error also matches its syscall.Errno (errors.Is(err,
// syscall.ENOMEM)).
type Error struct {
	// Code is the libshoal return code: SHOAL_E* (below -30000) or -errno.
	Code int
	// Name is the code's symbolic name without the SHOAL_ prefix, as
	// shoal_errname() gives it: "ENOTFOUND", "ENOMEM", ...
	Name string
	// Message is shoal_strerror(Code): the cause and, where there is one,
	// the fix.
	Message string
	// Op is the call that failed ("put", "open", ...); empty in sentinels.
	Op string
	// Detail is libshoal's account of this failure (shoal_last_error: the
	// broker's message, the path that could not be opened), if any.
	Detail string

	cause error // an underlying error (a context's), for Unwrap
}

// Error formats the error as "shoal: OP: MESSAGE: DETAIL".
func (e *Error) Error() string {
	s := "shoal: "
	if e.Op != "" {
		s += e.Op + ": "
	}
	s += e.Message
	if e.Detail != "" {
		s += ": " + e.Detail
	}
	return s
}

// Is reports whether target is an *Error with the same code (a sentinel),
// or the syscall.Errno of a system error.
func (e *Error) Is(target error) bool {
	switch t := target.(type) {
	case *Error:
		return t.Code == e.Code
	case syscall.Errno:
		return e.Code < 0 && e.Code > -4096 && -e.Code == int(t)
	}
	return false
}

// Unwrap returns the error underneath, if any: Wait's timeout wraps the
// context's error, so errors.Is(err, context.DeadlineExceeded) holds too;
// a system error wraps its syscall.Errno, so errors.Is(err,
// fs.ErrNotExist) holds for a missing file.
func (e *Error) Unwrap() error { return e.cause }

// ConflictError is the error of a CAS whose expected version was not the
// key's: errors.Is(err, ErrConflict) holds, and Current is the version the
// key had (0: absent).
type ConflictError struct {
	// Current is the key's version when the CAS was refused; 0 if absent.
	Current uint64
	// Err is the underlying *Error (code SHOAL_ECONFLICT).
	Err *Error
}

// Error describes the conflict and the current version.
func (e *ConflictError) Error() string {
	return fmt.Sprintf("%s (current version %d)", e.Err.Error(), e.Current)
}

// Is reports whether target is ErrConflict.
func (e *ConflictError) Is(target error) bool { return e.Err.Is(target) }

// Unwrap returns the *Error.
func (e *ConflictError) Unwrap() error { return e.Err }

// BatchError is the error of a batch one of whose operations failed
// (a Delete of an absent key, a CAS conflict, a key too big): nothing of
// the batch was applied. Index is the operation's position in the batch,
// counting from 0, or -1 when no single operation is to blame (the
// connection failed). errors.Is sees through it to the cause.
type BatchError struct {
	// Index is the failing operation's index, or -1.
	Index int
	// Err is the cause, an *Error.
	Err error
}

// Error names the failing operation and the cause.
func (e *BatchError) Error() string {
	if e.Index < 0 {
		return e.Err.Error()
	}
	return fmt.Sprintf("%s (batch operation %d)", e.Err.Error(), e.Index)
}

// Unwrap returns the cause.
func (e *BatchError) Unwrap() error { return e.Err }

func sentinel(code C.int) *Error {
	return &Error{
		Code:    int(code),
		Name:    C.GoString(C.shoal_errname(code)),
		Message: C.GoString(C.shoal_strerror(code)),
	}
}

// Sentinel errors, one per SHOAL_E* code of shoal/error.h (kept in sync by
// TestSentinelsCoverErrorMap). Test with errors.Is.
var (
	// ErrNotFound means the key is absent (SHOAL_ENOTFOUND).
	ErrNotFound = sentinel(C.SHOAL_ENOTFOUND)
	// ErrConflict means a CAS found another version (SHOAL_ECONFLICT); the
	// error is a *ConflictError carrying the current version.
	ErrConflict = sentinel(C.SHOAL_ECONFLICT)
	// ErrNoSpace means the store is full (SHOAL_ENOSPC).
	ErrNoSpace = sentinel(C.SHOAL_ENOSPC)
	// ErrTooBig means a key is longer than KeyMax() or a value longer
	// than Client.ValueMax() (SHOAL_ETOOBIG).
	ErrTooBig = sentinel(C.SHOAL_ETOOBIG)
	// ErrCorrupt means the shared segment is corrupt (SHOAL_ECORRUPT).
	ErrCorrupt = sentinel(C.SHOAL_ECORRUPT)
	// ErrVersion means a format or protocol version mismatch
	// (SHOAL_EVERSION).
	ErrVersion = sentinel(C.SHOAL_EVERSION)
	// ErrClosed means the client is closed, or a Tx or Batch was used
	// after its function returned (SHOAL_ECLOSED).
	ErrClosed = sentinel(C.SHOAL_ECLOSED)
	// ErrForked means a handle was used after fork() (SHOAL_EFORKED).
	ErrForked = sentinel(C.SHOAL_EFORKED)
	// ErrProtocol means a malformed or unexpected message (SHOAL_EPROTOCOL).
	ErrProtocol = sentinel(C.SHOAL_EPROTOCOL)
	// ErrDenied means the broker does not allow this uid/gid, or the
	// socket's or the store's modes keep this process out (SHOAL_EDENIED).
	ErrDenied = sentinel(C.SHOAL_EDENIED)
	// ErrTimeout means a reply, or a Wait, timed out (SHOAL_ETIMEOUT).
	ErrTimeout = sentinel(C.SHOAL_ETIMEOUT)
	// ErrInvalid means an invalid argument, e.g. a bad store name
	// (SHOAL_EINVAL).
	ErrInvalid = sentinel(C.SHOAL_EINVAL)
	// ErrLocked means the store already has a writer (SHOAL_ELOCKED).
	ErrLocked = sentinel(C.SHOAL_ELOCKED)
	// ErrNoReaders means all reader slots of the store are taken
	// (SHOAL_ENOREADERS).
	ErrNoReaders = sentinel(C.SHOAL_ENOREADERS)
	// ErrNoSection means a read outside a read section
	// (SHOAL_ENOSECTION); the Go API always reads inside one.
	ErrNoSection = sentinel(C.SHOAL_ENOSECTION)
	// ErrBusy means a reader still holds a snapshot (SHOAL_EBUSY).
	ErrBusy = sentinel(C.SHOAL_EBUSY)
	// ErrUnavailable means no broker is listening, or the connection broke
	// with a write's reply outstanding: it may or may not have been
	// applied (SHOAL_EUNAVAIL).
	ErrUnavailable = sentinel(C.SHOAL_EUNAVAIL)
	// ErrNotRegular means HashFile, Tail or Follow was given something
	// other than a regular file: a directory, FIFO, socket or device
	// (SHOAL_ENOTREG).
	ErrNotRegular = sentinel(C.SHOAL_ENOTREG)
	// ErrChanged means a file changed (was truncated or rewritten) while
	// it was being hashed; retry once it is quiet (SHOAL_ECHANGED).
	ErrChanged = sentinel(C.SHOAL_ECHANGED)
)

// sentinels lists every sentinel, for errorFor and the tests.
var sentinels = []*Error{
	ErrNotFound, ErrConflict, ErrNoSpace, ErrTooBig, ErrCorrupt, ErrVersion,
	ErrClosed, ErrForked, ErrProtocol, ErrDenied, ErrTimeout, ErrInvalid,
	ErrLocked, ErrNoReaders, ErrNoSection, ErrBusy, ErrUnavailable,
	ErrNotRegular, ErrChanged,
}

// newError makes the *Error of code for op. A system error (-errno)
// wraps its syscall.Errno, so that errors.Is also matches what the Errno
// matches: errors.Is(err, fs.ErrNotExist) for -ENOENT, fs.ErrPermission
// for -EACCES.
func newError(code int, op, detail string) *Error {
	for _, s := range sentinels {
		if s.Code == code {
			// the broker's text may repeat the message: say it once
			detail = strings.TrimPrefix(strings.TrimPrefix(detail, s.Message), ": ")
			return &Error{Code: code, Name: s.Name, Message: s.Message, Op: op, Detail: detail}
		}
	}
	c := C.int(code)
	e := &Error{
		Code:    code,
		Name:    C.GoString(C.shoal_errname(c)),
		Message: C.GoString(C.shoal_strerror(c)),
		Op:      op,
		Detail:  detail,
	}
	if code < 0 && code > -4096 {
		e.cause = syscall.Errno(-code)
	}
	return e
}

// errName is shoal_errname(code), for the tests (which can not use cgo).
func errName(code int) string { return C.GoString(C.shoal_errname(C.int(code))) }

// errBase is SHOAL__EBASE: codes are errBase - 1, errBase - 2, ...
const errBase = int(C.SHOAL__EBASE)
