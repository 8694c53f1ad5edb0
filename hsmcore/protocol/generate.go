package protocol

// hsmsh.proto describes the protocol; pb/hsmsh.pb.go is generated from it.
//go:generate bash gen.sh
