//go:build shoal_pkgconfig

package shoal

// With -tags shoal_pkgconfig the compiler and linker flags of libshoal come
// from pkg-config (shoal.pc of an installed build; set PKG_CONFIG_PATH for
// a non-default prefix). See README.md.

// #cgo pkg-config: shoal
import "C"
