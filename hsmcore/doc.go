// Package hsmcore is the HSM cluster: HSMs with their own users and key
// stores, the cryptography they perform, and the client-side logic that
// routes each operation to one HSM of the cluster and replicates new token
// keys to the others.
//
// The command layer talks to a cluster only through the Cluster interface,
// so the embedded cluster (in-process HSMs, the default) and a remote one
// (HSM servers over the network) are interchangeable. The package has no
// user-interface code: it reports facts and errors, never renders them.
package hsmcore
