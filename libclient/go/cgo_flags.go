//go:build !shoal_pkgconfig

package shoal

// How the package finds libshoal: by default it links -lshoal and takes
// the include and library directories from the environment (CGO_CFLAGS,
// CGO_LDFLAGS), which is what the CMake build and an install into a
// default prefix (/usr, /usr/local) need. Build with -tags shoal_pkgconfig
// to ask pkg-config (shoal.pc) instead; see README.md.

// #cgo LDFLAGS: -lshoal
import "C"
