// Package protocol is what the HSM (package hsm) and the client library
// (package client) share, and all they share: the table of calls an HSM
// serves with who may make each (table.go), the messages of those calls,
// the error codes that cross the wire, and the vocabulary both speak
// (references, roles, attributes, key specs, events).
package protocol
