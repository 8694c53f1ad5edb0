// Package client is the client library: the cluster a command uses. It
// routes each operation to an HSM, replicates new token keys (client-side
// sync), logs in and seals every session call, carries quorum tokens, and
// watches the HSMs for the panes. It holds no key material and decides
// nothing an HSM decides: it relays specs, wrapped blobs and public keys,
// and shows the HSMs' answers.
//
// It reaches HSMs only through their doors, as package protocol describes
// them: remote servers over nested TLS (package link), and in-process
// HSMs (Device) over an in-memory pipe or by calling their door. It never
// imports package hsm.
package client
