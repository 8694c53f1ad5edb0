// Package commands is hsmsh's command set: the CloudHSM-CLI-style command
// tree, its flag parsing and help, and the JSON results every command
// prints. It holds no terminal code; the shell, batch and single-command
// modes all run commands through a Runner.
package commands
