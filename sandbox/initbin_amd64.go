package sandbox

import _ "embed"

// scoped-init, the native launcher's init (cinit/init.c), built static by
// `make generate` with Debian 12's gcc and glibc (scripts/gencheck.sh).
//
//go:generate gcc -std=gnu11 -O2 -Wall -Werror -static -s -Wl,--build-id=none -o cinit/scoped-init.$GOARCH cinit/init.c
//go:embed cinit/scoped-init.amd64
var initELF []byte
