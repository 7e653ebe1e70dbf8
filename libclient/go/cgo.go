package shoal

// The helpers of shoalgo.h are compiled with the package, and setting
// CGO_CFLAGS (for the include path) drops cgo's default -O2: ask for it
// here so that the hot path is optimised however the flags are given.

// #cgo CFLAGS: -O2
import "C"
