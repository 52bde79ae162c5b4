//go:build !cgo

package softhsmtest

const cgoBuilt = false
