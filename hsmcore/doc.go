// Package hsmcore is the HSM cluster as the command layer names it: the
// client library's names (Cluster, Key, KeySpec, OpenRemote, …, from
// package client) and the protocol's vocabulary, under one name. It never
// imports the device: HSMs run in this process only through package host
// (the embedded cluster, hsmsh serve), the one package that names both.
//
// The layout follows the HSM boundary: package hsm (the device) and
// package client (the client library) never import each other, and share
// only package protocol and the leaf packages (authsession, quorum,
// nestedtls, rpc, wire, pki, link, syncloop, profile, keywrap). TestLayout
// checks it.
package hsmcore
