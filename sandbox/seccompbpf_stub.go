//go:build !(cgo && seccomp)

package sandbox

import "github.com/opencontainers/runc/libcontainer/configs"

func compileSeccomp(*configs.Seccomp) ([]byte, error) { return nil, ErrNoSeccomp }
