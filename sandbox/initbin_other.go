//go:build !amd64

package sandbox

// initELF is empty where no init is built: Start uses libcontainer.
var initELF []byte
