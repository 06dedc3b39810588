package supervisor

import _ "embed"

// DefaultConfigTOML is the commented default configuration, embedded in
// the binary (`scoped config default` prints it).
//
//go:embed default.toml
var DefaultConfigTOML string
