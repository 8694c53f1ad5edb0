// Package testscripts holds hsmsh's end-to-end tests: txtar scripts that
// run the hsmsh binary the way a user does, and Go tests for what a script
// cannot express (killing a run mid-write, checking with openssl).
package testscripts
