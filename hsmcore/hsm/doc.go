// Package hsm is the HSM itself: the device behind the door. It holds the
// store, the users, the keys and their material, makes keys, signs,
// checks every caller's access and quorum approvals, keeps server-side
// sessions, seals backups, syncs with the other HSMs of its domain
// (peer calls, material wrapped under the domain key) and serves all of
// it over the network (Server) or in process (Rack, Device).
//
// Nothing reaches an HSM but through its door (Device.Serve, or Handler
// on a connection), whose calls and their classes are package protocol's
// table. The client library (package client) is never imported here, and
// cannot import this package: the protocol is the only way between them.
package hsm
