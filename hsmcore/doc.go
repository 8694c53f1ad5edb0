// Package hsmcore is where the command layer opens an HSM cluster: an
// embedded one (device HSMs of package hsm in this process, reached by the
// client library of package client through their doors only) or a remote
// one (HSM servers over nested TLS), and where hsmsh serve starts a
// server. It assembles; it decides nothing. The names the command layer
// uses (Cluster, Key, KeySpec, …) are the client library's and the
// protocol's, under this package's name.
//
// The layout follows the HSM boundary: package hsm (the device) and
// package client (the client library) never import each other, and share
// only package protocol and the leaf packages (authsession, quorum,
// nestedtls, rpc, wire, pki, link, syncloop, profile, keywrap). TestLayout
// checks it.
package hsmcore
