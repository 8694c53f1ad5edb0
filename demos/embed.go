// Package demos holds the teaching batch files (*.hsm), built into the
// binary so that hsmsh demo NAME plays them from anywhere.
package demos

import "embed"

// Files are the demos, one NAME.hsm each at the top of the file system.
//
//go:embed *.hsm
var Files embed.FS
