// Package proto holds the .proto files of scoped's two APIs and their
// generated Go code: scoped.v1, the supervisor API SaaS applications call,
// worker.v1, what the supervisor calls in a worker, and scoped.fleet.v1, what
// fleet nodes call on each other (bundles by digest). The generated files
// are committed; `make generate` rebuilds them with protoc.
package proto

//go:generate protoc -I . --plugin=protoc-gen-go=../bin/protoc-gen-go --plugin=protoc-gen-go-grpc=../bin/protoc-gen-go-grpc --go_out=paths=source_relative:. --go-grpc_out=paths=source_relative:. scoped/v1/scoped.proto worker/v1/worker.proto fleet/v1/bundles.proto
