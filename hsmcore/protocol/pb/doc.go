// Package pb holds the Go types protoc-gen-go generates from
// hsmcore/protocol/hsmsh.proto, the protocol's description. Only package
// protocol's codec and the rpc framing use it; the rest of hsmsh speaks
// protocol's own types.
package pb
